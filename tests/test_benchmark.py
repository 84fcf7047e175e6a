"""benchmark.py end to end: a tiny real suite on Ray Tune, its results files and plots, resume, retries, speed
comparison and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pytest

from conftest import FLAKY_MODEL, REPO, ray_session_folder, run_in_process, run_script, small_tmpfs
from test_cli_errors import assert_one_line_error

TINY = ["--levels", "level_1_basic", "--seeds", "2", "--timesteps", "400", "--eval-episodes", "2",
        "--config", "{num_env_runners: 0, num_envs_per_env_runner: 4, train_batch_size: 200, minibatch_size: 100, num_epochs: 1}"]
RUN_KEYS = {"number", "total", "arch", "level", "seed", "status", "command", "env", "trial_dir", "error", "checkpoint",
            "duration_s", "train", "evaluation", "speed", "machine", "placement"}


def run_benchmark(*args: str, temp_dir: Path, env: dict | None = None):
    return run_script("benchmark.py", *args, temp_dir=temp_dir, env=env, timeout=900)


def load(folder: Path, name: str = "benchmark_results.json") -> dict:
    return json.loads((folder / name).read_text())


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """2 architectures x 1 level x 2 seeds, a few hundred env steps each, two runs at a time."""
    output = tmp_path_factory.mktemp("bench") / "suite"
    with ray_session_folder() as temp_dir:
        run = run_benchmark("--architectures", "fcnet,lstm", *TINY, "--max-parallel", "2", "--output-dir", str(output),
                            temp_dir=temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    return output, run


def test_results_json_holds_every_run(suite):
    output, run = suite
    document = load(output)
    assert document["max_timesteps"] == 400 and document["start_time"]
    assert document["suite"]["architectures"] == ["fcnet", "lstm"] and document["suite"]["seeds"] == 2
    runs = document["runs"]
    assert sorted(runs) == ["level_1_basic-fcnet-seed0", "level_1_basic-fcnet-seed1",
                            "level_1_basic-lstm-seed0", "level_1_basic-lstm-seed1"]
    assert sorted(r["number"] for r in runs.values()) == [1, 2, 3, 4] and {r["total"] for r in runs.values()} == {4}
    for record in runs.values():
        assert set(record) == RUN_KEYS, set(record) ^ RUN_KEYS
        assert record["status"] == "finished" and record["error"] is None and record["env"] == "vmas"
        assert record["train"]["env_steps"] == 400 and [s for s, _ in record["train"]["curve"]] == [200, 400]
        assert len(record["evaluation"]["returns"]) == 2
        assert record["speed"]["env_steps_per_s"] > 0 and record["speed"]["learn_time_ms"] > 0
        assert record["machine"]["cpu_cores"] >= 1 and record["machine"]["ray_nodes"] == 1
        assert Path(record["checkpoint"]).is_dir() and record["duration_s"] > 0
        assert record["command"].startswith("python train.py -f config/benchmark/level_1_basic.yaml --config ")
        assert f"--seed {record['seed']}" in record["command"]
    assert re.search(r"^level_1_basic +lstm +2/2 +-?[0-9.]+ +-?[0-9.]+ +[0-9.]+$", run.stdout, re.MULTILINE)


def test_marl_eval_json_has_the_documented_shape(suite):
    output, _ = suite
    data = load(output, "marl_eval.json")
    assert list(data) == ["vmas"] and list(data["vmas"]) == ["level_1_basic"]
    assert sorted(data["vmas"]["level_1_basic"]) == ["fcnet", "lstm"]
    seed = data["vmas"]["level_1_basic"]["lstm"]["seed_1"]
    assert sorted(seed) == ["absolute_metrics", "step_0", "step_1"]
    assert seed["step_1"]["step_count"] == 400 and len(seed["step_1"]["return"]) == 1
    assert seed["absolute_metrics"]["return"] == load(output)["runs"]["level_1_basic-lstm-seed1"]["evaluation"]["returns"]


def test_plots_are_images(suite):
    output, _ = suite
    for name in ("learning_curves.png", "final_returns.png", "speed.png"):
        image = cv2.imread(str(output / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 10, name


def test_rerun_skips_finished_runs_and_skip_training_reevaluates(suite, ray_temp_dir):
    output, _ = suite
    before = load(output)
    run = run_benchmark("--architectures", "fcnet,lstm", *TINY, "--output-dir", str(output), temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "benchmark: 4 of 4 runs finished before; 0 to run" in run.stdout
    assert load(output)["runs"] == before["runs"] and len(list((output / "tune").glob("attempt_*"))) == 1
    run = run_benchmark("--architectures", "fcnet,lstm", *TINY, "--output-dir", str(output), "--skip-training",
                        temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count(" evaluated: mean ") == 4
    # Deterministic actions, fixed env seeds: the restored checkpoints play exactly the episodes of the trials.
    for run_id, record in load(output)["runs"].items():
        assert record["evaluation"]["returns"] == pytest.approx(before["runs"][run_id]["evaluation"]["returns"], abs=1e-5)


def test_compare_speed_across_result_folders(suite, tmp_path):
    output, _ = suite
    other = tmp_path / "other-machine"
    other.mkdir()
    document = load(output)
    for record in document["runs"].values():
        record["speed"]["env_steps_per_s"] *= 2
        record["machine"]["host"] = "bigbox"
    (other / "benchmark_results.json").write_text(json.dumps(document))
    run = run_script("benchmark.py", "--compare-speed", str(output), str(other), "--output-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[1] other-machine (bigbox: " in run.stdout
    lines = [line for line in run.stdout.splitlines() if line.startswith("level_1_basic ")]
    assert len(lines) == 2 and all(line.rstrip().endswith("(2.00x)") for line in lines)
    assert cv2.imread(str(tmp_path / "speed_comparison.png")) is not None


def test_a_different_suite_is_refused(suite):
    output, _ = suite
    run = run_benchmark("--architectures", "fcnet", *TINY, "--output-dir", str(output), temp_dir=None)
    assert_one_line_error(run, "holds results of a different suite (architectures differ)", "--force")


def test_a_failed_run_is_recorded_and_retried(tmp_path, ray_temp_dir):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "flaky.py").write_text(FLAKY_MODEL)
    marker = tmp_path / "fail"
    marker.touch()
    env = {"MARLKIT_MODEL_DIR": str(model_dir), "FLAKY_MARKER": str(marker)}
    args = ["--architectures", "flaky", *TINY, "--seeds", "1", "--output-dir", str(tmp_path / "out")]
    run = run_benchmark(*args, temp_dir=ray_temp_dir, env=env)
    assert run.returncode == 1
    (record,) = load(tmp_path / "out")["runs"].values()
    assert record["status"] == "failed" and "flaky model: the marker file is there" in record["error"]
    marker.unlink()
    run = run_benchmark(*args, temp_dir=ray_temp_dir, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "benchmark: 0 of 1 runs finished before; 1 to run" in run.stdout
    (record,) = load(tmp_path / "out")["runs"].values()
    assert record["status"] == "finished" and record["error"] is None and len(record["evaluation"]["returns"]) == 2
    run = run_benchmark("--architectures", "fcnet", *TINY, "--seeds", "1", "--output-dir", str(tmp_path / "out"),
                        "--with-benchmarl", "--force", "--wandb", "offline", temp_dir=ray_temp_dir)  # another suite
    assert run.returncode == 0, run.stderr[-3000:]
    record, reference = load(tmp_path / "out")["runs"].values()
    assert record["arch"] == "fcnet" and record["status"] == "finished"
    (wandb_run,) = Path(record["trial_dir"]).rglob("offline-run-*")  # the run's W&B log, offline
    assert list(wandb_run.glob("*.wandb"))
    # BenchMARL's MAPPO on the same level with the same batch settings, beside ours.
    assert set(reference) == RUN_KEYS and reference["arch"] == "benchmarl_mappo" and reference["status"] == "finished"
    assert [steps for steps, _ in reference["train"]["curve"]] == [200, 400] and reference["train"]["env_steps"] == 400
    assert len(reference["evaluation"]["returns"]) == 2 and reference["speed"]["env_steps_per_s"] > 0
    assert "benchmarl_mappo" in load(tmp_path / "out", "marl_eval.json")["vmas"]["level_1_basic"]
    assert not list((tmp_path / "out" / "tune").rglob("*flaky*"))  # the discarded suite's trials are gone


@pytest.mark.parametrize("args, message", [
    (["--levels", "level_9"], "available: level_1_basic, level_2_easy, level_3_medium, level_4_hard, level_5_expert"),
    (["--architectures", "fcnett"], "unknown architecture 'fcnett' (did you mean 'fcnet'?); available (files in model/): "),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["--levels", "config/no-such-level.yaml"], "--levels: config/no-such-level.yaml does not exist; pass a level name "
                                                "or an experiment YAML"),
    (["--compare-speed", str(REPO)], "holds no benchmark_results.json"),
])
def test_bad_input(args, message, tmp_path, capsys):
    run = run_in_process(capsys, "benchmark.py", *args, "--output-dir", str(tmp_path))
    assert_one_line_error(run, message)
    assert not (tmp_path / "benchmark_results.json").exists()


def test_every_shipped_architecture_trains_on_every_level(tmp_path, ray_temp_dir):
    """One short iteration of each (level, architecture): 5 levels x fcnet, lstm, attention."""
    run = run_benchmark("--architectures", "fcnet,lstm,attention", "--levels", "all", "--seeds", "1", "--timesteps", "1",
                        "--eval-episodes", "1", "--max-parallel", "2", "--output-dir", str(tmp_path), "--config",
                        "{num_env_runners: 0, num_envs_per_env_runner: 2, train_batch_size: 100, minibatch_size: 50, "
                        "num_epochs: 1}", temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = load(tmp_path)["runs"]
    assert len(runs) == 15 and {r["status"] for r in runs.values()} == {"finished"}
    assert {r["level"] for r in runs.values()} == {"level_1_basic", "level_2_easy", "level_3_medium", "level_4_hard",
                                                   "level_5_expert"}
    assert {r["env"] for r in runs.values()} == {"vmas", "bucket_brigade"}
    for record in runs.values():
        assert len(record["evaluation"]["returns"]) == 1 and record["train"]["iterations"] == 1
    tag = runs["level_4_hard-attention-seed0"]
    assert tag["train"]["score_metric"] == "env_runners/policy_reward_mean/predator"
    assert runs["level_5_expert-lstm-seed0"]["train"]["curriculum_stage"] == 0


def test_a_level_of_another_algorithm_given_by_its_file_runs_each_architecture(tmp_path, ray_temp_dir):
    """A level given by its path: the shipped QMIX config (DQN whose team's Q is mixed, marlkit/mixers.py) with the
    fcnet architecture as its agents' Q-network, trained, evaluated and recorded like the PPO levels."""
    run = run_benchmark("--architectures", "fcnet", "--levels", "config/vmas-balance-qmix.yaml", "--seeds", "1",
                        "--timesteps", "256", "--eval-episodes", "1", "--output-dir", str(tmp_path), "--config",
                        "{env_config: {num_envs: 4, max_steps: 25}, rollout_fragment_length: 16, train_batch_size: 32, "
                        "num_steps_sampled_before_learning_starts: 0, min_sample_timesteps_per_iteration: 128}",
                        temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = load(tmp_path)["runs"].values()
    assert record["level"] == "config/vmas-balance-qmix.yaml" and record["status"] == "finished", record
    assert record["command"].startswith("python train.py -f config/vmas-balance-qmix.yaml --config ")
    assert record["train"]["env_steps"] >= 256 and len(record["evaluation"]["returns"]) == 1
    (trial,) = [path for path in (tmp_path / "tune").rglob("result.json")]
    learner = json.loads(trial.read_text().splitlines()[-1])["info"]["learner"]
    assert set(learner) == {"shared"} and "mean_q_team" in learner["shared"]["learner_stats"]


HEAVY_MODEL = '''
import torch
from torch import nn
from ray.rllib.models.torch.fcnet import FullyConnectedNetwork


class CustomModel(FullyConnectedNetwork):
    """RLlib's MLP with 8 MB of weights nothing trains: its checkpoint does not fit on a 2 MiB disk."""

    def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        self.ballast = nn.Parameter(torch.zeros(2_000_000), requires_grad=False)
'''


def test_a_trial_whose_checkpoint_cannot_be_written_leaves_no_half_written_one(tmp_path, ray_temp_dir):
    """The suite's trials checkpoint as train.py's do (marlkit/checkpoints.py): a save that fails half-way (the disk
    of the trials' folder fills up) removes what it had written, and the run is recorded as failed."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "heavy.py").write_text(HEAVY_MODEL)
    output = tmp_path / "out"
    with small_tmpfs(output / "tune", "2m"):
        run = run_benchmark("--architectures", "heavy", *TINY, "--seeds", "1", "--output-dir", str(output),
                            temp_dir=ray_temp_dir, env={"MARLKIT_MODEL_DIR": str(model_dir)})
        assert run.returncode == 1, run.stderr[-3000:]
        (record,) = load(output)["runs"].values()
        assert record["status"] == "failed" and "No space left on device" in record["error"], record["error"]
        (trial,) = [d for d in (output / "tune").glob("attempt_1_PPO/*") if d.is_dir()]
        assert (trial / "result.json").stat().st_size > 0  # the trial trained; only its checkpoint did not fit
        assert not list(trial.glob("checkpoint_*")), "a half-written checkpoint was left"
