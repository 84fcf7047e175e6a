"""Faults during training, on real processes: what the README's fault table says happens, measured."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import (REPO, processes_tagged, read_results, subprocess_env, tiny_experiment, train_command,
                      trial_dirs, wait_until_gone, write_yaml)


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def wait_for(condition, process: subprocess.Popen, seconds: float, what: str):
    """Polls `condition()` until it is truthy; fails with train.py's output if train.py ended first or time ran out."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not happen; train.py said:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.2)
    return value


@pytest.mark.parametrize("env", ["vmas", "bucket_brigade"])
def test_a_killed_env_runner_is_replaced_and_training_goes_on(env, tmp_path, ray_temp_dir):
    """SIGKILL of the only env runner mid-training: Ray restarts it (RLlib's default restart_failed_env_runners),
    RLlib syncs the new one's weights, the trial reaches its stop iteration, and the result rows count the restart
    (iterations while it restarts sample nothing)."""
    iterations = 100  # tiny iterations (~0.2 s): the run outlasts the restart (~10 s)
    experiment = tiny_experiment(stop={"training_iteration": iterations}, config={"num_env_runners": 1})
    if env == "bucket_brigade":
        experiment.update(env="bucket_brigade")
        experiment["config"]["env_config"] = {"scenario": "default", "max_nights": 25}
    config = write_yaml(tmp_path / "exp.yaml", {"killed": experiment})
    tag = uuid.uuid4().hex
    process = subprocess.Popen(train_command("-f", str(config), "--local-dir", str(tmp_path), temp_dir=ray_temp_dir),
                               cwd=REPO, env={**subprocess_env(), "MARLKIT_TEST_TAG": tag}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # Ray titles a busy actor's process ray::<class>.<method>
    (runner,) = wait_for(lambda: [pid for pid in processes_tagged(tag)
                                  if process_title(pid).startswith("ray::BatchedEnvRunner")], process, 300,
                         "the env runner's start")
    time.sleep(8)  # training is under way
    os.kill(runner, signal.SIGKILL)
    killed_at = time.time()
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    (trial,) = trial_dirs(tmp_path / "killed")
    results = read_results(trial)
    assert [r["training_iteration"] for r in results] == list(range(1, iterations + 1))
    assert results[-1]["num_remote_worker_restarts"] >= 1 and results[-1]["num_healthy_workers"] == 1
    restarted = next(r for r in results if r["num_remote_worker_restarts"] >= 1)
    assert 1 < restarted["training_iteration"] < iterations, "the runner was not killed mid-training"
    idle = [r["training_iteration"] for r in results if r["num_env_steps_sampled_this_iter"] == 0]
    print(f"{env}: restart counted at iteration {restarted['training_iteration']}, "
          f"{restarted['timestamp'] - killed_at:.0f} s after the kill; {len(idle)} iterations without samples")
    assert not wait_until_gone(tag), "processes left running after train.py ended"
