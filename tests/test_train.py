"""train.py end to end: real Ray, real RLlib, real VMAS and Bucket Brigade, tiny runs."""

from __future__ import annotations

import csv
import json
import pickle
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from ray._private.accelerators import get_accelerator_manager_for_resource
from ray._private.utils import get_num_cpus

from conftest import (
    REPO, assert_resumed, finish_script, ray_session_folder, read_results, run_train, start_script, subprocess_env,
    tiny_experiment, train_command, trial_dirs, wait_until_gone, write_yaml,
)
from marlkit.checkpoints import load_algorithm_state


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The shipped default experiment, cut to two iterations, with Tune and one remote env runner."""
    results = tmp_path_factory.mktemp("default")
    with ray_session_folder() as temp_dir:
        run = run_train(
            "-f", "config/vmas-navigation-ppo.yaml", "--stop", "{training_iteration: 2}", "--checkpoint-freq", "1",
            "--local-dir", str(results), temp_dir=temp_dir,
        )
    return run, results / "vmas-navigation-ppo"


def test_default_experiment_writes_tune_layout(default_run):
    run, experiment_dir = default_run
    assert run.returncode == 0, run.stderr[-2000:]
    # what Ray detects on this machine (cgroup limits included), not this machine kind's 2 CPUs and no GPU
    cpus, gpus = get_num_cpus(), get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
    assert "Ray 2.60.0 at " in run.stdout and f"1 node(s), {cpus} CPUs, {gpus} GPUs" in run.stdout
    (trial,) = trial_dirs(experiment_dir)
    assert trial.name.startswith("PPO_vmas_")
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == ["checkpoint_000000", "checkpoint_000001"]
    assert (trial / "checkpoint_000001" / "algorithm_state.pkl").exists()
    assert list(trial.glob("events.out.tfevents.*")), "no TensorBoard events"
    params = json.loads((trial / "params.json").read_text())
    assert params["env"] == "vmas" and params["env_config"]["scenario"] == "navigation"
    assert params["model"]["custom_model"] == "fcnet"
    assert params["num_env_runners"] == 1  # the env and the model were built in a remote env runner
    rows = list(csv.DictReader((trial / "progress.csv").open()))
    assert [int(r["training_iteration"]) for r in rows] == [1, 2]
    assert all(float(r["env_steps_per_s"]) > 0 for r in rows)
    results = read_results(trial)
    assert results[-1]["num_env_steps_sampled_lifetime"] == 4000
    assert set(results[-1]["env_runners"]["policy_reward_mean"]) == {"shared"}


def test_restore_starts_from_a_checkpoint(default_run, tmp_path, ray_temp_dir):
    _, experiment_dir = default_run
    (trial,) = trial_dirs(experiment_dir)
    run = run_train(
        "-f", "config/vmas-navigation-ppo.yaml", "--restore", str(trial / "checkpoint_000001"),
        "--stop", "{training_iteration: 3}", "--local-dir", str(tmp_path), temp_dir=ray_temp_dir,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (restored,) = trial_dirs(tmp_path / "vmas-navigation-ppo")
    results = read_results(restored)
    assert [r["training_iteration"] for r in results] == [3]
    assert results[0]["num_env_steps_sampled_lifetime"] == 6000


def test_resume_continues_an_interrupted_experiment(tmp_path, ray_temp_dir):
    """Ctrl-C stops train.py and every process it started; --resume continues the trial with one row per iteration."""
    config = write_yaml(tmp_path / "exp.yaml", {"resume-me": tiny_experiment(
        stop={"training_iteration": 8}, checkpoint_freq=1, config={"num_env_runners": 1})})
    results = tmp_path / "results"
    tag = uuid.uuid4().hex
    process = subprocess.Popen(
        train_command("-f", str(config), "--local-dir", str(results), temp_dir=ray_temp_dir),
        cwd=REPO, env={**subprocess_env(), "MARLKIT_TEST_TAG": tag}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(results.glob("resume-me/*/checkpoint_000001")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output[-3000:]
    assert not wait_until_gone(tag), "processes left running after Ctrl-C"
    (trial,) = trial_dirs(results / "resume-me")
    before = read_results(trial)
    interrupted_at = before[-1]["training_iteration"]
    assert 2 <= interrupted_at < 6
    newest = max(trial.glob("checkpoint_*"))
    checkpointed_at = load_algorithm_state(newest)["training_iteration"]

    # --stop with --resume applies to the resumed trial (Tune restores the criteria it started with: 8)
    run = run_train("-f", str(config), "--local-dir", str(results), "--resume", "--stop", "{training_iteration: 6}",
                    temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-2000:]
    assert trial_dirs(results / "resume-me") == [trial]
    rows = read_results(trial)
    iterations = [r["training_iteration"] for r in rows]
    assert iterations == [1, 2, 3, 4, 5, 6], f"resume started over, repeated rows or missed --stop: {iterations}"
    assert_resumed(rows, checkpointed_at, before[0]["pid"])
    assert rows[checkpointed_at]["num_env_steps_sampled_lifetime"] > before[checkpointed_at - 1][
        "num_env_steps_sampled_lifetime"]

    # Tune's state file cut short (a full disk): --resume refuses, where Tune would start the trial over.
    state = max((results / "resume-me").glob("experiment_state-*.json"))
    state.write_text(state.read_text()[:100])
    run = run_train("-f", str(config), "--local-dir", str(results), "--resume", temp_dir=ray_temp_dir)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: --resume: Tune's experiment state {state} is truncated (written while the disk was full?); instead "
        f"continue from a checkpoint with --restore {max(trial.glob('checkpoint_*'))}")


def test_local_mode_runs_everything_in_the_driver(tmp_path, ray_temp_dir):
    config = write_yaml(tmp_path / "exp.yaml", {"local": tiny_experiment(
        checkpoint_at_end=True, config={"callbacks": "pid_callback.RecordEpisodePid", "num_env_runners": 1},
    )})
    pid_file = tmp_path / "pids"
    env = dict(subprocess_env(), EPISODE_PID_FILE=str(pid_file), PYTHONPATH=str(REPO / "tests"))
    process = subprocess.run(
        train_command("-f", str(config), "--local-dir", str(tmp_path / "results"), "--local-mode", temp_dir=ray_temp_dir),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    episode_pids = set(pid_file.read_text().split())
    assert len(episode_pids) == 1
    assert f"pid {episode_pids.pop()})" in process.stdout  # the driver printed its own pid
    (trial,) = trial_dirs(tmp_path / "results" / "local")
    assert trial.name.startswith("PPO_vmas_")
    assert [p.name for p in trial.glob("checkpoint_*")] == ["checkpoint_000000"]
    assert [r["training_iteration"] for r in read_results(trial)] == [1, 2]
    assert (trial / "progress.csv").exists() and list(trial.glob("events.out.tfevents.*"))
    assert json.loads((trial / "params.json").read_text())["num_env_runners"] == 0


@pytest.fixture(scope="module")
def several_experiments(tmp_path_factory) -> Path:
    """One train.py run (one process and Ray start) of four experiments, one after another: the shipped grid
    config and the shipped balance config, each cut to 1 iteration, a tiny experiment with per-agent policies
    logging to W&B offline, and a curriculum on remote envs. Returns (the results folder, train.py's stdout)."""
    root = tmp_path_factory.mktemp("several")
    experiments = {}
    for name in ("vmas-navigation-grid", "vmas-balance-ppo"):
        shipped = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
        shipped[name]["stop"] = {"training_iteration": 1}
        experiments.update(shipped)
    experiments["per-agent"] = tiny_experiment(config={"multiagent": {"policies": "per_agent"}},
                                               wandb={"project": "marl-test", "mode": "offline"})
    experiments["staged"] = tiny_experiment(stop={"training_iteration": 4}, curriculum={"stages": [
        {"env_config": {"pos_shaping_factor": 1.0}, "until": -1e9},  # reached by any return: one stage per iteration
        {"env_config": {"pos_shaping_factor": 0.5}, "until": -1e9},
        # the last stage leaves nothing to earn or lose (no shaping, final reward or collision penalty): returns are 0
        {"env_config": {"pos_shaping_factor": 0.0, "final_reward": 0.0, "agent_collision_penalty": 0.0}},
    ]}, config={"num_env_runners": 1, "metrics_num_episodes_for_smoothing": 8})  # 8 episodes per iteration
    with ray_session_folder() as temp_dir:
        run = run_train("-f", str(write_yaml(root / "exp.yaml", experiments)), "--local-dir", str(root / "results"),
                        temp_dir=temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "results", run.stdout


def test_grid_search_makes_one_trial_per_point(several_experiments):
    trials = trial_dirs(several_experiments[0] / "vmas-navigation-grid")
    points = {(p["lr"], p["env_config"]["n_agents"]) for p in (json.loads((t / "params.json").read_text()) for t in trials)}
    assert points == {(0.0003, 2), (0.0003, 4), (0.001, 2), (0.001, 4)}
    for trial in trials:
        n_agents = json.loads((trial / "params.json").read_text())["env_config"]["n_agents"]
        (result,) = read_results(trial)
        assert result["info"]["num_agent_steps_sampled"] == n_agents * result["num_env_steps_sampled_lifetime"]


def test_balance_config_trains(several_experiments):
    (trial,) = trial_dirs(several_experiments[0] / "vmas-balance-ppo")
    (result,) = read_results(trial)
    assert result["num_env_steps_sampled_lifetime"] > 0


def test_per_agent_policies_and_wandb_offline(several_experiments):
    (trial,) = trial_dirs(several_experiments[0] / "per-agent")
    assert set(read_results(trial)[-1]["env_runners"]["policy_reward_mean"]) == {"agent_0", "agent_1"}
    runs = list(trial.rglob("offline-run-*"))
    assert runs, "no offline W&B run in the trial folder"
    assert list(runs[0].glob("*.wandb")), "the offline W&B run has no data file"
    assert not list(trial_dirs(several_experiments[0] / "vmas-balance-ppo")[0].rglob("offline-run-*"))  # its own only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runs_on_an_existing_cluster_given_its_address(tmp_path, ray_temp_dir):
    port = free_port()
    env = dict(subprocess_env(), RAY_AUTH_MODE="token")
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         f"--temp-dir={ray_temp_dir}", "--include-dashboard=false"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        config = write_yaml(tmp_path / "exp.yaml", {"remote": tiny_experiment(stop={"training_iteration": 1})})
        run = subprocess.run(
            train_command("-f", str(config), "--local-dir", str(tmp_path / "results"),
                          "--ray-address", f"127.0.0.1:{port}", "--ray-num-nodes", "1"),
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f":{port}: 1 node(s), 2 CPUs, 0 GPUs" in run.stdout  # it joined the cluster instead of starting one
        (trial,) = trial_dirs(tmp_path / "results" / "remote")
        assert read_results(trial)[-1]["training_iteration"] == 1
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)


def test_bucket_brigade_configs_train_and_roll_out(tmp_path, ray_temp_dir):
    """Both shipped Bucket Brigade configs, as written but for their stop, in one train.py run (one Ray start)."""
    trained = {"bucket-brigade-ppo": ["learner"], "bucket-brigade-selfplay": ["shared"]}
    # self-play: 4 nights an iteration and games last >= 12 nights, so 4 iterations to see finished games
    iterations = {"bucket-brigade-ppo": 2, "bucket-brigade-selfplay": 4}
    experiments = {}
    for config in trained:
        shipped = yaml.safe_load((REPO / "config" / f"{config}.yaml").read_text())
        shipped[config]["stop"] = {"training_iteration": iterations[config]}
        experiments.update(shipped)
    run = run_train("-f", str(write_yaml(tmp_path / "exp.yaml", experiments)), "--checkpoint-at-end",
                    "--local-dir", str(tmp_path), temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-2000:]
    rollouts = {}
    for config in trained:
        (trial,) = trial_dirs(tmp_path / config)
        results = read_results(trial)
        assert len(results) == iterations[config], config
        # train_batch_size 4000 (self-play: 1000) over 256 games: fragments of 16 (4) nights, 4,096 (1,024) env
        # steps; restart rows of finished games do not count, so the batched runner steps on until then and
        # overshoots by less than one step of all games.
        batch = 4096 if config == "bucket-brigade-ppo" else 1024
        lifetime = [0] + [r["num_env_steps_sampled_lifetime"] for r in results]
        assert all(batch <= now - before < batch + 256 for before, now in zip(lifetime, lifetime[1:])), lifetime
        assert sorted(results[-1]["info"]["learner"]) == trained[config]  # scripted opponents are never trained
        assert sorted(results[-1]["env_runners"]["policy_reward_mean"]) == (
            ["firefighter", "learner", "random"] if config == "bucket-brigade-ppo" else ["shared"])
        # The two rollouts at once: each is mostly process start-up (imports, Ray).
        rollouts[config] = start_script("rollout.py", str(trial), "--run", "PPO", "--episodes", "2",
                                        "--num-workers", "0", "--num-gpus", "0", "--out", str(tmp_path / f"{config}.pkl"),
                                        temp_dir=ray_temp_dir / config)
    for config, process in rollouts.items():
        rollout = finish_script(process)
        assert rollout.returncode == 0, rollout.stderr[-2000:]
        with open(tmp_path / f"{config}.pkl", "rb") as file:
            episodes = pickle.load(file)
        assert len(episodes) == 2 and all(13 <= len(steps) <= 100 for steps in episodes)  # min_nights 12, max 100


def test_curriculum_changes_the_task_of_remote_envs(several_experiments):
    results_dir, stdout = several_experiments
    assert "curriculum: env_runners/episode_return_mean = " in stdout and "stage 2: {'pos_shaping_factor': 0.0" in stdout
    (trial,) = trial_dirs(results_dir / "staged")
    results = read_results(trial)
    assert [r["curriculum_stage"] for r in results] == [1, 2, 2, 2]
    assert results[0]["env_runners"]["episode_return_mean"] != 0
    # Episodes that began before stage 2 still earn its last shaping difference; the next ones earn nothing.
    assert results[3]["env_runners"]["episode_return_mean"] == 0  # sampled by the remote runner
    assert json.loads((trial / "params.json").read_text())["env_config"]["pos_shaping_factor"] == 1.0
