"""Faults during training, on real processes: what the fault table of docs/faults-and-errors.md says happens, measured."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import (REPO, assert_resumed, processes_tagged, progress_iterations, read_results, small_tmpfs,
                      run_train, subprocess_env, tiny_experiment, train_command, trial_dirs, wait_until_gone, write_yaml)


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
    (iterations while it restarts sample nothing). The replacement samples again, with the learner's weights
    (tests/weights_callback.py compares the checksum of the weights each runner sampled with to the learner's
    at the iteration's start; marlkit's RunnersStartWithLearnerWeights makes the first iteration's match too)."""
    # Paced iterations (>= 0.3 s): the run outlasts the restart (~5 s), and the trial cannot run far ahead of the
    # driver's progress.csv the kill waits for (unpaced, ~0.1 s each, it had done 91 of 100 when 3 were logged).
    iterations = 60
    experiment = tiny_experiment(stop={"training_iteration": iterations},
                                 config={"num_env_runners": 1, "callbacks": "weights_callback.PacedRunnerWeightsMatch"})
    if env == "bucket_brigade":
        experiment.update(env="bucket_brigade")
        experiment["config"]["env_config"] = {"scenario": "default", "max_nights": 25}
    config = write_yaml(tmp_path / "exp.yaml", {"killed": experiment})
    tag = uuid.uuid4().hex
    process = subprocess.Popen(train_command("-f", str(config), "--local-dir", str(tmp_path), temp_dir=ray_temp_dir),
                               cwd=REPO, env={**subprocess_env(), "MARLKIT_TEST_TAG": tag,
                                              "PYTHONPATH": str(REPO / "tests")},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Ray titles a busy actor's process ray::<class>.<method>
    (runner,) = wait_for(lambda: [pid for pid in processes_tagged(tag)
                                  if process_title(pid).startswith("ray::BatchedEnvRunner")], process, 300,
                         "the env runner's start")
    wait_for(lambda: any(len(progress_iterations(t)) >= 3 for t in trial_dirs(tmp_path / "killed")),
             process, 300, "3 logged iterations")  # training is under way (not a fixed sleep: under load
    # the runner may still be inside the trial's set-up after many seconds, and its loss there fails the trial)
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
    after = [r for r in results if r["training_iteration"] > max(idle, default=restarted["training_iteration"])]
    assert len(after) >= 5, f"too few iterations after the restart to see the replacement work: {idle}"
    assert all(r["num_env_steps_sampled_this_iter"] > 0 for r in after)  # the only runner: the replacement samples
    assert [r["runner_weights_match"] for r in after] == [1] * len(after)  # ... with the learner's weights
    assert 0 not in [r["runner_weights_match"] for r in results]  # -1 only while no runner was healthy
    print(f"{env}: restart counted at iteration {restarted['training_iteration']}, "
          f"{restarted['timestamp'] - killed_at:.0f} s after the kill; {len(idle)} iterations without samples")
    assert not wait_until_gone(tag), "processes left running after train.py ended"


def checkpoint_iterations(trial: Path) -> dict[str, int]:
    from marlkit.checkpoints import load_algorithm_state

    return {c.name: load_algorithm_state(c)["training_iteration"] for c in sorted(trial.glob("checkpoint_*"))}


def test_resume_after_the_driver_was_killed_and_checkpoints_were_truncated(tmp_path, ray_temp_dir):
    """SIGKILL of train.py after a few checkpoints: every process of its Ray instance ends on its own. All but the
    two oldest checkpoints are then truncated, so --resume cannot load the one Tune recorded: it continues the
    trial from the newest readable one (not from iteration 1), with a warning line per bad one. The result files
    then hold each iteration once: the killed run's rows up to that checkpoint, the resumed run's after it.
    (With intact checkpoints, resuming from the one Tune recorded is test_train's SIGINT test.)"""
    stop = 40
    # Iterations of at least 0.5 s: without it the trial runs ahead of the driver's bookkeeping and may be done
    # before the driver logged a handful of rows.
    experiment = tiny_experiment(stop={"training_iteration": stop}, checkpoint_freq=3,
                                 config={"num_env_runners": 1, "min_time_s_per_iteration": 0.5})
    config = write_yaml(tmp_path / "exp.yaml", {"killed-driver": experiment})
    results = tmp_path / "results"
    tag = uuid.uuid4().hex
    process = subprocess.Popen(train_command("-f", str(config), "--local-dir", str(results), temp_dir=ray_temp_dir),
                               cwd=REPO, env={**subprocess_env(), "MARLKIT_TEST_TAG": tag}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # (whole rows only: the driver may be writing the next one)
    trial = wait_for(lambda: next((t for t in (results / "killed-driver").glob("PPO_*") if (t / "result.json").exists()
                                   and (t / "result.json").read_text().count("\n") >= 10), None),
                     process, 300, "10 logged iterations")
    process.kill()
    process.communicate()
    killed_at = time.monotonic()
    logged_before = [r["training_iteration"] for r in read_results(trial)]
    saved = checkpoint_iterations(trial)
    assert len(saved) >= 3 and logged_before[-1] < stop, f"not killed mid-run: {logged_before}, {saved}"
    for name in list(saved)[2:]:
        (trial / name / "algorithm_state.pkl").write_bytes((trial / name / "algorithm_state.pkl").read_bytes()[:999])

    resume = run_train("-f", str(config), "--local-dir", str(results), "--resume", temp_dir=ray_temp_dir,
                       env={"MARLKIT_TEST_TAG": tag + "-resume"})
    assert resume.returncode == 0, resume.stdout[-3000:]
    assert not wait_until_gone(tag, seconds=max(1.0, 90 - (time.monotonic() - killed_at))), \
        "processes of the killed driver's Ray instance still ran 90 s after the kill"
    gone_after = time.monotonic() - killed_at
    assert not wait_until_gone(tag + "-resume"), "processes left running after the resumed train.py ended"
    assert trial_dirs(results / "killed-driver") == [trial]

    rows = read_results(trial)
    assert [r["training_iteration"] for r in rows] == list(range(1, stop + 1))
    assert progress_iterations(trial) == list(range(1, stop + 1))
    lifetime = [r["num_env_steps_sampled_lifetime"] for r in rows]
    assert lifetime == sorted(set(lifetime)), "the step counter went back: a row of the abandoned run was kept"
    resumed_from = next(r["training_iteration"] for r in rows if r["pid"] != rows[0]["pid"]) - 1
    assert resumed_from == list(saved.values())[1], (resumed_from, saved)
    warnings = [line for line in resume.stdout.splitlines() if "warning: " in line]
    assert warnings and all("algorithm_state.pkl is truncated or corrupt" in w for w in warnings), warnings
    assert f"using the previous readable checkpoint, {trial / list(saved)[1]}" in warnings[0]
    print(f"driver killed with {len(logged_before)} rows logged and {len(saved)} checkpoints "
          f"(iterations {list(saved.values())}); resumed from iteration {resumed_from}, re-ran "
          f"{logged_before[-1] - resumed_from} logged iterations; the killed run's processes were gone within "
          f"{gone_after:.0f} s")


def test_resume_continues_from_checkpoints_tune_had_not_recorded(tmp_path, ray_temp_dir):
    """Tune writes its experiment state at the start and then at most every 10 s, so train.py killed in its first
    seconds leaves checkpoints on disk that the state does not name (TUNE_GLOBAL_CHECKPOINT_S=3600 stretches that
    window over the whole run). --resume continues from the newest of them, not from iteration 1, and numbers its
    new checkpoints after them (none is written over)."""
    stop = 12
    experiment = tiny_experiment(stop={"training_iteration": stop}, checkpoint_freq=2,
                                 config={"min_time_s_per_iteration": 0.5})
    config = write_yaml(tmp_path / "exp.yaml", {"early-kill": experiment})
    results = tmp_path / "results"
    tag = uuid.uuid4().hex
    process = subprocess.Popen(train_command("-f", str(config), "--local-dir", str(results), temp_dir=ray_temp_dir),
                               cwd=REPO, env={**subprocess_env(), "MARLKIT_TEST_TAG": tag,
                                              "TUNE_GLOBAL_CHECKPOINT_S": "3600"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trial = wait_for(lambda: next((t for t in (results / "early-kill").glob("PPO_*")
                                   if len(list(t.glob("checkpoint_*/algorithm_state.pkl"))) >= 3), None),
                     process, 300, "3 checkpoints")
    process.kill()
    process.communicate()
    # The killed driver's Ray processes end on their own within a minute (test above); killed here, by tag, to save
    # that minute.
    wait_until_gone(tag, seconds=0)
    saved = checkpoint_iterations(trial)
    assert len(saved) >= 3 and max(saved.values()) < stop, saved

    resume = run_train("-f", str(config), "--local-dir", str(results), "--resume", temp_dir=ray_temp_dir,
                       env={"MARLKIT_TEST_TAG": tag + "-resume"})
    assert resume.returncode == 0, resume.stdout[-3000:]
    assert not wait_until_gone(tag + "-resume"), "processes left running after the resumed train.py ended"
    newest = max(saved, key=saved.get)
    assert f"resuming from {trial / newest}: Tune's experiment state records no checkpoint of this trial" \
        in resume.stdout, resume.stdout[-3000:]
    # Tune's driver writes result rows to the trial folder with its state, so the killed run left none: every row is
    # the resumed run's, from the iteration after the checkpoint on, its step counter continuing the checkpoint's.
    rows = read_results(trial)
    assert [r["training_iteration"] for r in rows] == list(range(saved[newest] + 1, stop + 1)), (saved, rows[0])
    assert rows[0]["num_env_steps_sampled_lifetime"] >= (saved[newest] + 1) * experiment["config"]["train_batch_size"]
    after = checkpoint_iterations(trial)
    assert {name: after[name] for name in saved} == saved, "a checkpoint of the killed run was written over"
    assert sorted(set(after) - set(saved)) and all(name > newest for name in set(after) - set(saved))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: room for about 15 checkpoints of the tiny experiment, then no space left."""
    with small_tmpfs(tmp_path / "small-disk", "3m") as mount_point:
        yield mount_point


def test_disk_full_while_checkpointing(small_disk, tmp_path, ray_temp_dir):
    """Checkpoints every iteration onto a disk that fills up: train.py ends with one line (exit 1) that names the
    full disk and the newest checkpoint; every checkpoint folder left loads (the half-written one is removed), and
    once there is space again, training continues from the newest with the --restore the line names."""
    config = write_yaml(tmp_path / "exp.yaml", {"full-disk": tiny_experiment(
        stop={"training_iteration": 1000}, checkpoint_freq=1)})
    results = small_disk / "results"
    tag = uuid.uuid4().hex
    run = run_train("-f", str(config), "--local-dir", str(results), temp_dir=ray_temp_dir,
                    env={"MARLKIT_TEST_TAG": tag})
    assert not wait_until_gone(tag), "processes left running after train.py ended"
    assert run.returncode == 1, run.stderr[-3000:]
    last_line = run.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: full-disk: the disk of --local-dir {results} is full"), last_line
    (trial,) = trial_dirs(results / "full-disk")
    saved = checkpoint_iterations(trial)  # raises on any checkpoint that does not load
    for iterations in ([r["training_iteration"] for r in read_results(trial)], progress_iterations(trial)):
        # whole rows only (a row the full disk cut off is removed), in order
        assert iterations == list(range(1, len(iterations) + 1)), iterations
    assert len(saved) >= 3 and list(saved.values()) == list(range(1, len(saved) + 1)), saved
    newest = trial / max(saved)
    assert f"(newest: {newest})" in last_line
    continue_with = re.search(r"then (?:continue with --resume|continue from a checkpoint with --restore (\S+))",
                              last_line)
    assert continue_with, last_line

    first_pid = next((r["pid"] for r in read_results(trial)), None)  # under load the disk may fill before a row

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = ["--resume"] if continue_with[1] is None else ["--restore", continue_with[1]]
    assert continue_with[1] in (None, str(newest))
    run = run_train("-f", str(config), "--local-dir", str(results), "--stop",
                    f"{{training_iteration: {saved[newest.name] + 2}}}", *resumed, temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = trial_dirs(results / "full-disk")
    if continue_with[1] is None:
        rows = read_results(trial)
        assert trials == [trial] and rows[-1]["training_iteration"] == saved[newest.name] + 2
        assert_resumed(rows, saved[newest.name], first_pid)
    else:
        (continued,) = set(trials) - {trial}
        assert [r["training_iteration"] for r in read_results(continued)] == [saved[newest.name] + 1,
                                                                             saved[newest.name] + 2]
    print(f"disk full after {len(saved)} checkpoints; continued with {' '.join(resumed)}")


# An RLlib callbacks module (on PYTHONPATH) that makes every checkpoint save fail, as on a full disk, from iteration
# $FAIL_SAVES_FROM on: the failure comes while the algorithm writes its state, before Tune copies it into the trial
# folder.
FAILING_SAVES = """
import errno
import os

from ray.rllib.callbacks.callbacks import RLlibCallback


class FailingSaves(RLlibCallback):
    def on_train_result(self, *, algorithm, result, **kwargs):
        if algorithm.iteration >= int(os.environ.get("FAIL_SAVES_FROM", "1000000")):  # (already this result's)
            def no_space(checkpoint_dir):
                raise OSError(errno.ENOSPC, "No space left on device (test)")
            algorithm.save_checkpoint = no_space
"""


def test_resume_after_a_failed_save_trains_to_the_stop(tmp_path, ray_temp_dir, monkeypatch):
    """A save that fails mid-run (here the third, before anything reached the trial folder) ends the run with the
    earlier checkpoints intact. --resume with a later --stop then trains on to that stop: Tune's experiment state
    held a STOP for the trial, queued while its save was in flight, that used to end the resumed trial right after
    its first new checkpoint."""
    (tmp_path / "failing_saves.py").write_text(FAILING_SAVES)
    monkeypatch.syspath_prepend(tmp_path)  # (the checkpoints' pickled config names the module)
    config = write_yaml(tmp_path / "exp.yaml", {"failed-save": tiny_experiment(
        stop={"training_iteration": 8}, checkpoint_freq=1, config={"callbacks": "failing_saves.FailingSaves"})})
    results = tmp_path / "results"
    env = {"PYTHONPATH": str(tmp_path)}
    run = run_train("-f", str(config), "--local-dir", str(results), temp_dir=ray_temp_dir,
                    env={**env, "FAIL_SAVES_FROM": "3"})
    assert run.returncode == 1 and "No space left on device (test)" in run.stdout, run.stdout[-3000:]
    (trial,) = trial_dirs(results / "failed-save")
    assert checkpoint_iterations(trial) == {"checkpoint_000000": 1, "checkpoint_000001": 2}
    first_pid = read_results(trial)[0]["pid"]

    run = run_train("-f", str(config), "--local-dir", str(results), "--resume", "--stop", "{training_iteration: 5}",
                    temp_dir=ray_temp_dir, env=env)
    assert run.returncode == 0, run.stdout[-3000:]
    rows = read_results(trial)
    assert rows[-1]["training_iteration"] == 5, [r["training_iteration"] for r in rows]
    assert_resumed(rows, 2, first_pid)
    assert list(checkpoint_iterations(trial).values()) == [1, 2, 3, 4, 5]
