"""Shared helpers: run train.py as users do (a subprocess with its own Ray) and check it left nothing running."""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# Ray starts its workers (trials, env runners, and the games they start) at nice 15, below every process of the tests
# that run beside them (`make test` runs two test files at once): a Unity trial then took minutes to start while
# another test's driver or in-process env kept the cores busy. At the same niceness they share the cores fairly.
os.environ["RAY_worker_niceness"] = "0"

# `make test` runs two test files at once (pytest-xdist --dist loadfile --no-loadscope-reorder), handing files out
# in collection order: the longest start first, so that none of them is left to run alone at the end.
LONGEST_FILES_FIRST = ("test_slurm.py", "test_unity.py", "test_train.py", "test_benchmark.py", "test_faults.py",
                       "test_algorithms.py", "test_rollout.py", "test_mappo.py", "test_user_envs.py", "test_learning.py",
                       "test_teams.py")


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


def require_system_part(missing: str | None) -> None:
    """Skips the test, saying why, when a system part it needs (Xvfb, Slurm) is `missing` (a reason; None when it is
    there), except under CI (CI=true), where `make test` installs them as root: there the test fails, so that CI
    cannot pass by skipping them."""
    if missing is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, yet {missing}: `make test` must install it on CI machines", pytrace=False)
    pytest.skip(missing)


def xvfb_missing() -> str | None:
    return None if shutil.which("Xvfb") else "Xvfb is not installed (`make setup` installs it where it runs as root)"


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (Ray's processes name their session folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def processes_tagged(tag: str) -> list[int]:
    """PIDs whose environment holds MARLKIT_TEST_TAG=`tag`: everything a command started with that variable set
    (Ray's daemons and workers, game processes, Xvfb) inherits it, whatever its process title says."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"MARLKIT_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def wait_until_gone(tag: str, seconds: float = 30) -> list[int]:
    """Waits up to `seconds` for the processes tagged `tag` to end; kills and returns those still there."""
    deadline = time.monotonic() + seconds
    while (left := processes_tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    return left


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str):
    """A tmpfs of `size` (e.g. "3m") mounted at `mount_point` (created) for the block: a disk that fills up."""
    require_system_part(None if os.geteuid() == 0 else "mounting a small tmpfs needs root")
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@contextlib.contextmanager
def ray_session_folder():
    """A short, unique Ray session folder; afterwards no process may still use it (a few seconds' grace for Ray's
    own shutdown), and it is removed."""
    folder = Path(f"/tmp/rt-{uuid.uuid4().hex[:8]}")
    try:
        yield folder
    finally:
        deadline = time.monotonic() + 10
        while (leftovers := [p for p in processes_mentioning(str(folder)) if p != os.getpid()]) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leftovers:
            os.kill(pid, 9)
        shutil.rmtree(folder, ignore_errors=True)
    assert not leftovers, f"processes left running from {folder}: {leftovers}"


@pytest.fixture
def ray_temp_dir():
    with ray_session_folder() as folder:
        yield folder


def script_command(script: str, *args: str, temp_dir: Path | None = None) -> list[str]:
    """The command line of train.py, rollout.py or benchmark.py with this Python (and Ray's session folder)."""
    command = [sys.executable, str(REPO / script), *args]
    if temp_dir is not None:
        command += ["--temp-dir", str(temp_dir)]
    return command


def train_command(*args: str, temp_dir: Path | None = None) -> list[str]:
    return script_command("train.py", *args, temp_dir=temp_dir)


def subprocess_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_SILENT="true")
    env.pop("RAY_ADDRESS", None)
    return env


def start_script(script: str, *args: str, temp_dir: Path | None = None,
                 env: dict | None = None) -> subprocess.Popen:
    """Starts train.py, rollout.py or benchmark.py as a user would; `finish_script` waits for it. Several at once
    overlap their start-up (imports, Ray), most of a tiny run's time."""
    return subprocess.Popen(script_command(script, *args, temp_dir=temp_dir), cwd=REPO,
                            env={**subprocess_env(), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish_script(process: subprocess.Popen, timeout: int = 600) -> subprocess.CompletedProcess:
    """Waits for a started script; prints the output's tail for failing tests."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    print(stdout[-4000:], stderr[-4000:], sep="\n")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_script(script: str, *args: str, temp_dir: Path | None = None, timeout: int = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs train.py, rollout.py or benchmark.py as a user would; prints the output's tail for failing tests."""
    return finish_script(start_script(script, *args, temp_dir=temp_dir, env=env), timeout)


def run_train(*args: str, temp_dir: Path | None = None, timeout: int = 600,
              env: dict | None = None) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, temp_dir=temp_dir, timeout=timeout, env=env)


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def tiny_experiment(**overrides) -> dict:
    """A small but real VMAS navigation PPO experiment (about a second per iteration on 2 cores)."""
    config = {
        "env_config": {"scenario": "navigation", "n_agents": 2, "max_steps": 25},
        "num_env_runners": 0,
        "num_envs_per_env_runner": 4,
        "train_batch_size": 200,
        "minibatch_size": 100,
        "num_epochs": 1,
        "model": {"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}},
    }
    config.update(overrides.pop("config", {}))
    experiment = {"run": "PPO", "env": "vmas", "stop": {"training_iteration": 2}, "config": config}
    experiment.update(overrides)
    return experiment


def trial_dirs(experiment_dir: Path) -> list[Path]:
    return sorted(p for p in experiment_dir.iterdir() if p.is_dir() and (p / "params.json").exists())


def progress_iterations(trial_dir: Path) -> list[int]:
    """The training_iteration column of the trial's progress.csv ([] before its first row)."""
    path = trial_dir / "progress.csv"
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return [int(row["training_iteration"]) for row in csv.DictReader(file) if row.get("training_iteration")]


def read_results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def assert_resumed(rows: list[dict], checkpointed: int, first_pid: int | None) -> None:
    """`rows` (a trial's result rows after a resume) continue the first run (process id `first_pid`; None when it
    logged no row) from its checkpoint of iteration `checkpointed`. Rows of re-run iterations replace the old ones, so
    iterations 1..N alone cannot tell a resume from a restart: the first run's rows come first, none after the
    checkpoint, and every row after them is the resumed process's, starting with the checkpoint's iteration + 1."""
    first = [r for r in rows if r["pid"] == first_pid]
    later = rows[len(first):]
    assert [r["training_iteration"] for r in first] == list(range(1, len(first) + 1)) and len(first) <= checkpointed, \
        f"the first run's rows are not iterations 1..{checkpointed} at most, in order: {rows}"
    assert later, f"nothing ran after the checkpoint of iteration {checkpointed}"
    assert [r["training_iteration"] for r in later] == list(range(checkpointed + 1, checkpointed + 1 + len(later))), \
        f"the resumed run did not start right after the checkpoint of iteration {checkpointed}: {rows}"
    assert len({r["pid"] for r in later}) == 1, f"the rows after iteration {checkpointed} are not one process's: {rows}"


# A model file (for MARLKIT_MODEL_DIR) whose trials fail while the file named by $FLAKY_MARKER exists.
FLAKY_MODEL = '''
import os

import gymnasium as gym
from torch import nn
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2


class CustomModel(TorchModelV2, nn.Module):
    """Fails to build while the file $FLAKY_MARKER exists."""

    def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        TorchModelV2.__init__(self, obs_space, action_space, num_outputs, model_config, name)
        nn.Module.__init__(self)
        if os.path.exists(os.environ["FLAKY_MARKER"]):
            raise RuntimeError("flaky model: the marker file is there")
        self.policy = nn.Linear(gym.spaces.flatdim(obs_space), num_outputs)
        self.value = nn.Linear(gym.spaces.flatdim(obs_space), 1)

    def forward(self, input_dict, state, seq_lens):
        obs = input_dict["obs_flat"].float()
        self._value = self.value(obs).squeeze(1)
        return self.policy(obs), state

    def value_function(self):
        return self._value
'''


def run_in_process(capsys, script: str, *args: str) -> subprocess.CompletedProcess:
    """A script's entry point (`run_cli(<script>.main)`) in this process: exit code and output as `run_script` gives
    them, without a Python start per case. Bad input must be refused before Ray starts: it must not start here."""
    import ray
    from marlkit.cli import run_cli
    main = importlib.import_module(script.removesuffix(".py")).main
    # run_cli leaves Ray before printing its line, so whether Ray started is seen at ray.init, not afterwards
    with mock.patch.object(ray, "init", wraps=ray.init) as ray_init, pytest.raises(SystemExit) as exit_:
        run_cli(main, list(args))
    assert not ray_init.called, f"{script} started Ray before refusing the input"
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_.value.code, out, err)


def train_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    return run_in_process(capsys, "train.py", *args)
