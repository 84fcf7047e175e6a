"""The benchmarks under bench/, run tiny: every measurement runs, the last line is the documented JSON, and the
speed ratios docs/performance.md claims hold in direction."""

from __future__ import annotations

import json

import pytest

from conftest import run_script

pytestmark = pytest.mark.serial  # speed ratios: measured with the machine to themselves

VMAS_KEYS = {"raw_vmas_fps", "ours_sample_fps", "naive_rllib_sample_fps", "ours_train_fps", "benchmarl_train_fps",
             "ours_return", "benchmarl_return", "ours_mappo_train_fps", "ours_mappo_return"}
RECURRENT_KEYS = {"lstm_stock_train_fps", "lstm_batched_train_fps", "fcnet_batched_train_fps"}
IPPO_KEYS = {"benchmarl_ippo_train_fps", "benchmarl_ippo_return"}
RECURRENT_LABELS = ("f. level 1, LSTM PPO, stock RLlib sampler", "f. level 1, LSTM PPO, batched runner",
                    "f. level 1, MLP PPO, batched runner")
BUCKET_BRIGADE_KEYS = {
    *(f"{run}_{unit}_steps_per_s" for run in ("rust_batched", "rust_one_game", "reference")
      for unit in ("env", "agent")),
    "rust_batched_vs_reference", "rust_batched_vs_one_game", "core_agent_steps_per_s", "stock_num_envs",
    "stock_sample_agent_steps_per_s", "batched_sample_agent_steps_per_s_8", "batched_sample_agent_steps_per_s_32",
    "batched_sample_agent_steps_per_s", "batched_best_num_envs", "stock_train_agent_steps_per_s",
    "batched_train_agent_steps_per_s", "train_iterations", "train_batch_size", "batched_vs_stock_sample",
    "batched_vs_stock_train",
}


def test_vmas_benchmark_tiny_run(ray_temp_dir):
    result = run_script(
        "bench/vmas.py", "--num-envs", "6", "--frames-per-batch", "600", "--train-frames", "1200",
        "--minibatch-size", "200", "--sample-iters", "1", "--naive-steps", "1", "--seeds", "2",
        "--recurrent-iters", "1", "--recurrent-batch-size", "64",
        temp_dir=ray_temp_dir, timeout=600,
    )
    assert result.returncode == 0
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == VMAS_KEYS | RECURRENT_KEYS | IPPO_KEYS
    for key in figures:
        if key.endswith("_fps"):
            assert figures[key] > 0, key
    # The directions docs/performance.md claims, with loose margins at these tiny sizes on a loaded 2-core machine (seen
    # there: batched sampling 5.9x and 17x the per-agent MultiAgentEnv at 6 worlds, the LSTM with the batched runner
    # 3.1x and 1.6x the stock sampler; at the documented sizes 4.4x and 3.8x).
    assert figures["ours_sample_fps"] >= 2 * figures["naive_rllib_sample_fps"], figures
    assert figures["lstm_batched_train_fps"] >= 1.2 * figures["lstm_stock_train_fps"], figures
    # 100 steps per world in a 600-frame batch: every world ends an episode each batch; navigation returns are
    # per-agent sums of shaped rewards, finite and far below the goal bonus at 1,200 frames.
    for key in ("ours_return", "ours_mappo_return", "benchmarl_return", "benchmarl_ippo_return"):
        assert -50 < figures[key] < 50, key
    table = result.stdout
    for label in ("a. raw VMAS", "b. marlkit batched runner", "c. naive MultiAgentEnv", "d. marlkit PPO, per-agent",
                  "d. marlkit MAPPO, centralised critic", "d. BenchMARL MAPPO", "d. BenchMARL IPPO", *RECURRENT_LABELS):
        assert label in table
    assert table.count("(seeds: ") == 4
    assert "ours_mappo_train / benchmarl_train = " in table
    assert "targets: LSTM batched >= 3x stock: " in table


def test_vmas_benchmark_only_recurrent_rows(ray_temp_dir):
    """--only-recurrent: the recurrent rows alone; the main comparison's figures are null."""
    result = run_script("bench/vmas.py", "--only-recurrent", "--recurrent-iters", "1", "--recurrent-batch-size", "64",
                        temp_dir=ray_temp_dir, timeout=300)
    assert result.returncode == 0
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == VMAS_KEYS | RECURRENT_KEYS
    assert all(figures[key] is None for key in VMAS_KEYS)
    assert all(figures[key] > 0 for key in RECURRENT_KEYS)
    assert all(label in result.stdout for label in RECURRENT_LABELS)
    assert "a. raw VMAS" not in result.stdout


def test_bucket_brigade_benchmark_tiny_run(ray_temp_dir):
    """Every row, and --learning on one scenario: a few seconds of training, then the learner and every scripted
    agent scored in its seat on the same 2,000 games."""
    result = run_script(
        "bench/bucket_brigade.py", "--seconds", "0.1", "--num-envs", "64", "--reference-envs", "4",
        "--games-per-runner", "8,32", "--sample-seconds", "0.2", "--train-iters", "1", "--train-batch-size", "128",
        "--learning", "--scenarios", "greedy_neighbor", "--minutes", "0.05",
        temp_dir=ray_temp_dir, timeout=300,
    )
    assert result.returncode == 0
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    learning = figures.pop("learning")["greedy_neighbor"]
    assert set(learning) == {"learner", "best_heuristic", "best_heuristic_name", "random", "rest", "agent_steps",
                             "wall_s", "heuristics"}
    assert sorted(learning["heuristics"]) == ["coordinator", "firefighter", "free_rider", "hero", "liar", "pool",
                                              "random", "rest"]
    best = learning["best_heuristic_name"]
    assert learning["best_heuristic"] == learning["heuristics"][best] == max(learning["heuristics"].values())
    assert 3 <= learning["wall_s"] < 60 and learning["agent_steps"] > 0 and 50 < learning["learner"] < 110
    assert f"learner - best scripted ({best}) = " in result.stdout
    assert set(figures) == BUCKET_BRIGADE_KEYS
    for key, value in figures.items():
        assert value > 0, key
    # The directions docs/performance.md claims, with loose margins at these tiny sizes (seen here: the Rust core 201x the
    # numpy reference and 22x one game per call, batched sampling 21x the stock sampler; the documented sizes: over
    # 100x for each).
    assert figures["rust_batched_vs_reference"] >= 10 and figures["rust_batched_vs_one_game"] >= 3, figures
    assert figures["batched_vs_stock_sample"] >= 3, figures
    assert figures["batched_best_num_envs"] in (8, 32)
    assert figures["batched_sample_agent_steps_per_s"] == max(figures["batched_sample_agent_steps_per_s_8"],
                                                              figures["batched_sample_agent_steps_per_s_32"])
    assert figures["core_agent_steps_per_s"] == figures["rust_batched_agent_steps_per_s"]
    assert (figures["train_iterations"], figures["train_batch_size"], figures["stock_num_envs"]) == (1, 128, 8)
    table, best = result.stdout, figures["batched_best_num_envs"]
    for label in ("a. Rust core, 64 games per call", "b. Rust core, 1 game per call", "c. numpy reference, 4 games",
                  "d. stock RLlib sampler, 8 games (sampling)", "e. batched runner, 8 games (sampling)",
                  "e. batched runner, 32 games (sampling)", f"e. batched runner, best: {best} games (sampling)",
                  "f. PPO, stock RLlib sampler, 8 games (train)", f"f. PPO, batched runner, {best} games (train)",
                  "batched / stock sampling = ", "batched / stock PPO end to end = ",
                  "targets: batched sampling >= 100x stock: "):
        assert label in table, label


def test_bucket_brigade_benchmark_rejects_bad_arguments():
    result = run_script("bench/bucket_brigade.py", "--games-per-runner", "8,many")
    assert result.returncode == 2
    assert "--games-per-runner takes whole numbers" in result.stderr


def test_vmas_benchmark_rejects_bad_arguments():
    result = run_script("bench/vmas.py", "--num-envs", "7", "--frames-per-batch", "600")
    assert result.returncode == 2
    assert "--frames-per-batch 600 must be a multiple of --num-envs 7" in result.stderr
    result = run_script("bench/vmas.py", "--benchmarl-algorithms", "mappo,qmix")
    assert result.returncode == 2
    assert "--benchmarl-algorithms: choose from mappo, ippo (got mappo,qmix)" in result.stderr
    result = run_script("bench/vmas.py", "--only-recurrent", "--recurrent-iters", "0")
    assert result.returncode == 2
    assert "--only-recurrent needs --recurrent-iters >= 1" in result.stderr


def test_algorithms_benchmark_tiny_run(ray_temp_dir):
    """Each algorithm sampled both ways and trained, and BenchMARL's counterpart trained on the same frames."""
    result = run_script("bench/algorithms.py", "--num-envs", "32", "--fragment", "5", "--sample-iters", "2",
                        "--train-frames", "320", "--seeds", "1", "--minibatch-frames", "40", "--replay-batch", "16",
                        "--optimizer-steps", "2", temp_dir=ray_temp_dir)
    assert result.returncode == 0
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    algorithms = ("ppo", "dqn", "sac")
    ours = {f"{a}_{figure}" for a in algorithms for figure in ("batched_sample_fps", "stock_sample_fps", "train_fps", "return")}
    assert set(figures) == ours | {f"benchmarl_{a}_{figure}" for a in algorithms for figure in ("train_fps", "return")}
    assert all(figures[f"{prefix}{algorithm}_train_fps"] > 0 for algorithm in algorithms for prefix in ("", "benchmarl_"))
    # The direction docs/algorithms.md claims, with a loose margin at 32 worlds (seen here: 5.3x DQN, 6.1x SAC; at
    # 200 worlds 17.8x and 25.2x).
    for algorithm in algorithms:
        assert figures[f"{algorithm}_batched_sample_fps"] >= 2 * figures[f"{algorithm}_stock_sample_fps"], figures
    for label in ("marlkit PPO", "marlkit DQN", "marlkit SAC", "BenchMARL IPPO", "BenchMARL IQL", "BenchMARL ISAC",
                  "DQN / BenchMARL IQL train = "):
        assert label in result.stdout, label
    # equal frames: 2 batches of 160 frames each, both frameworks (BenchMARL's runs print theirs)
    assert "marlkit DQN seed 0: 320 frames" in result.stdout and "BenchMARL IQL seed 0: 320 frames" in result.stdout

