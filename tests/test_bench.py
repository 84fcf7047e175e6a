"""The benchmarks under bench/, run tiny: every measurement runs and the last line is the documented JSON."""

from __future__ import annotations

import json

from conftest import run_script

VMAS_KEYS = {"raw_vmas_fps", "ours_sample_fps", "naive_rllib_sample_fps", "ours_train_fps", "benchmarl_train_fps",
             "ours_return", "benchmarl_return"}
IPPO_KEYS = {"benchmarl_ippo_train_fps", "benchmarl_ippo_return"}


def test_vmas_benchmark_tiny_run(ray_temp_dir):
    result = run_script(
        "bench/vmas.py", "--num-envs", "6", "--frames-per-batch", "600", "--train-frames", "1200",
        "--minibatch-size", "200", "--sample-iters", "1", "--naive-steps", "1", "--seeds", "2",
        temp_dir=ray_temp_dir, timeout=600,
    )
    assert result.returncode == 0
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == VMAS_KEYS | IPPO_KEYS
    for key in figures:
        if key.endswith("_fps"):
            assert figures[key] > 0, key
    # 100 steps per world in a 600-frame batch: every world ends an episode each batch; navigation returns are
    # per-agent sums of shaped rewards, finite and far below the goal bonus at 1,200 frames.
    for key in ("ours_return", "benchmarl_return", "benchmarl_ippo_return"):
        assert -50 < figures[key] < 50, key
    table = result.stdout
    for label in ("a. raw VMAS", "b. marlkit batched runner", "c. naive MultiAgentEnv", "d. marlkit PPO",
                  "d. BenchMARL MAPPO", "d. BenchMARL IPPO"):
        assert label in table
    assert table.count("(seeds: ") == 3


def test_vmas_benchmark_rejects_bad_arguments():
    result = run_script("bench/vmas.py", "--num-envs", "7", "--frames-per-batch", "600")
    assert result.returncode == 2
    assert "--frames-per-batch 600 must be a multiple of --num-envs 7" in result.stderr
    result = run_script("bench/vmas.py", "--benchmarl-algorithms", "mappo,qmix")
    assert result.returncode == 2
    assert "--benchmarl-algorithms: choose from mappo, ippo (got mappo,qmix)" in result.stderr
