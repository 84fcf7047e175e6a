"""rollout.py on real checkpoints of tiny real trainings: rollout files, videos, summary, seeding, bad input."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (REPO, finish_script, ray_session_folder, require_system_part, run_in_process, run_script,
                      start_script, tiny_experiment, trial_dirs, write_yaml, xvfb_missing)
from marlkit import models
from marlkit.checkpoints import resolve_checkpoint
from envs.errors import ConfigError
from marlkit.rollout import check_render
from marlkit.video import virtual_display
from test_cli_errors import assert_one_line_error

MAX_STEPS = 25
AGENTS = ["agent_0", "agent_1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model folder of its own (MARLKIT_MODEL_DIR), so tests can remove or change the model file afterwards."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(REPO / "model" / "fcnet.py", folder / "mlp.py")
    return folder


@pytest.fixture(scope="module")
def trial(tmp_path_factory, model_dir):
    """A trial folder with checkpoint_000000 and checkpoint_000001 from a two-iteration training."""
    root = tmp_path_factory.mktemp("trained")
    experiment = tiny_experiment(checkpoint_freq=1)
    experiment["config"]["model"]["custom_model"] = "mlp"
    config = write_yaml(root / "exp.yaml", {"rollout-test": experiment})
    with ray_session_folder() as temp_dir:
        run = run_script("train.py", "-f", str(config), "--local-dir", str(root / "results"), temp_dir=temp_dir,
                         env={"MARLKIT_MODEL_DIR": str(model_dir)})
    assert run.returncode == 0, run.stderr[-3000:]
    (folder,) = trial_dirs(root / "results" / "rollout-test")
    return folder


def start_rollout(*args, model_dir, temp_dir):
    return start_script("rollout.py", *map(str, args), temp_dir=temp_dir, env={"MARLKIT_MODEL_DIR": str(model_dir)})


def run_rollout(*args, model_dir, temp_dir):
    return finish_script(start_rollout(*args, model_dir=model_dir, temp_dir=temp_dir))


def load(path: Path) -> list:
    with open(path, "rb") as file:
        return pickle.load(file)


def printed_returns(stdout: str) -> list[float]:
    return [float(m) for m in re.findall(r"^episode \d+: length \d+, return (\S+) ", stdout, re.M)]


def test_rollout_file_has_every_step_of_every_episode(trial, model_dir, ray_temp_dir):
    checkpoint = trial / "checkpoint_000001"
    run = run_rollout(checkpoint, "--run", "PPO", "--episodes", 2, "--seed", 0, model_dir=model_dir,
                      temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    episodes = load(checkpoint / "rollout")
    assert len(episodes) == 2 and [len(e) for e in episodes] == [MAX_STEPS, MAX_STEPS]
    for episode in episodes:
        for obs, action, next_obs, reward, terminated, truncated in episode:
            assert sorted(obs) == sorted(action) == sorted(next_obs) == sorted(reward) == AGENTS
            assert obs["agent_0"].shape == (18,) and np.asarray(action["agent_0"]).shape == (2,)
            assert sorted(terminated) == sorted(truncated) == sorted(AGENTS + ["__all__"])
        assert episode[-1][5]["__all__"] is True and not any(step[5]["__all__"] for step in episode[:-1])
        assert all(np.array_equal(a[2]["agent_1"], b[0]["agent_1"]) for a, b in zip(episode, episode[1:]))
    file_returns = [sum(r for step in episode for r in step[3].values()) for episode in episodes]
    assert printed_returns(run.stdout) == pytest.approx(file_returns, rel=1e-5)
    assert "return policy shared" in run.stdout


def test_same_seed_same_rollout_even_when_exploring(trial, model_dir, ray_temp_dir, tmp_path):
    seeds = {"a": 3, "b": 3, "c": 4}
    started = {name: start_rollout(trial, "--explore", "--seed", seed, "--out", tmp_path / name, model_dir=model_dir,
                                   temp_dir=ray_temp_dir / name) for name, seed in seeds.items()}  # all three at once
    for process in started.values():
        run = finish_script(process)
        assert run.returncode == 0, run.stderr[-3000:]
    first, second = load(tmp_path / "a"), load(tmp_path / "b")
    for step_a, step_b in zip(first[0], second[0], strict=True):
        for part_a, part_b in zip(step_a[:4], step_b[:4]):
            assert all(np.array_equal(part_a[agent], part_b[agent]) for agent in AGENTS)
    assert not np.array_equal(load(tmp_path / "c")[0][0][0]["agent_0"], first[0][0][0]["agent_0"])


def test_trial_folder_means_its_newest_checkpoint_and_save_info(trial, model_dir, ray_temp_dir, tmp_path):
    run = run_rollout(trial, "--save-info", "--steps", 30, "--episodes", 5, "--out", tmp_path / "r",
                      model_dir=model_dir, temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "checkpoint_000001" in run.stdout
    episodes = load(tmp_path / "r")
    assert [len(e) for e in episodes] == [MAX_STEPS, 5]  # --steps 30 ends the second episode early
    info = episodes[0][0][6]
    assert sorted(info) == AGENTS and "pos_rew" in info["agent_0"]


def test_monitor_records_one_video_per_episode(trial, model_dir, ray_temp_dir):
    checkpoint = trial / "checkpoint_000000"
    run = run_rollout(checkpoint, "--monitor", "--episodes", 2, "--num-workers", 1, model_dir=model_dir,
                      temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    videos = sorted((checkpoint / "monitor").glob("*.mp4"))
    assert [v.name for v in videos] == ["episode_000000.mp4", "episode_000001.mp4"]
    assert not list((checkpoint / "monitor").glob(".*"))  # no temporary files left
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        assert len(frames) == MAX_STEPS
        assert all(frame.std() > 5 for frame in frames), "blank frame"
    assert len(load(checkpoint / "rollout")) == 2


@pytest.mark.parametrize("episodes", ["0", "-2"])
def test_episodes_must_be_positive(trial, episodes):
    assert_one_line_error(run_script("rollout.py", str(trial), "--episodes", episodes), "--episodes must be at least 1")


def test_missing_path_and_folder_without_checkpoints(tmp_path, capsys):
    assert_one_line_error(run_in_process(capsys, "rollout.py", str(tmp_path / "gone")), "does not exist")
    assert_one_line_error(run_in_process(capsys, "rollout.py", str(tmp_path)),
                          "is neither a checkpoint nor a trial folder")


def test_run_must_match_the_checkpoint(trial, capsys):
    assert_one_line_error(run_in_process(capsys, "rollout.py", str(trial), "--run", "APPO"),
                          "--run APPO does not match", "holds a PPO algorithm")


def test_truncated_checkpoint(trial, model_dir, tmp_path, capsys, monkeypatch):
    """Refused before Ray starts (run_in_process asserts that ray.init is never called)."""
    broken = tmp_path / "checkpoint_000009"
    shutil.copytree(trial / "checkpoint_000001", broken)
    state = broken / "algorithm_state.pkl"
    state.write_bytes(state.read_bytes()[:1000])
    assert_one_line_error(run_in_process(capsys, "rollout.py", str(broken)), f"{state} is truncated or corrupt")
    monkeypatch.setattr(models, "MODEL_DIR", model_dir)  # the trial's custom_model lives there (MARLKIT_MODEL_DIR)
    train = run_in_process(capsys, "train.py", "-f", str(trial.parents[2] / "exp.yaml"), "--restore", str(broken),
                           "--local-dir", str(tmp_path))
    assert_one_line_error(train, f"{state} is truncated or corrupt")


def test_trial_folder_whose_newest_checkpoint_is_truncated(trial, tmp_path, capsys):
    copy = shutil.copytree(trial, tmp_path / trial.name)
    (policy_state,) = (copy / "checkpoint_000001").glob("policies/*/policy_state.pkl")
    policy_state.write_bytes(policy_state.read_bytes()[:500])
    assert resolve_checkpoint(copy) == copy / "checkpoint_000000"
    assert capsys.readouterr().out == (
        f"warning: {policy_state} is truncated or corrupt (UnpicklingError: pickle data was truncated); "
        f"using the previous readable checkpoint, {copy / 'checkpoint_000000'}\n")
    (copy / "checkpoint_000000" / "rllib_checkpoint.json").write_text("{")
    with pytest.raises(ConfigError, match=f"^{policy_state} is truncated or corrupt"):
        resolve_checkpoint(copy)


def test_model_file_gone_or_changed(trial, model_dir, tmp_path, ray_temp_dir):
    empty = tmp_path / "no-models"
    empty.mkdir()
    changed = tmp_path / "changed"
    changed.mkdir()
    source = (model_dir / "mlp.py").read_text()
    (changed / "mlp.py").write_text(source.replace(
        "self.value_head = nn.Linear(out_size, 1)",
        "self.value_head = nn.Sequential(nn.Linear(out_size, 8), nn.Linear(8, 1))",
    ))
    gone = start_rollout(trial, model_dir=empty, temp_dir=ray_temp_dir / "gone")  # both at once
    different = start_rollout(trial, model_dir=changed, temp_dir=ray_temp_dir / "changed")
    assert_one_line_error(finish_script(gone), "custom_model 'mlp'", "model/ has: nothing")
    assert_one_line_error(finish_script(different), "do not fit the model built now")


class NoPicturesEnv:
    """A stand-in env whose renderer fails, as one without an RGB renderer would."""

    def render(self):
        raise RuntimeError("no renderer")


def test_env_that_cannot_render_says_why():
    with pytest.raises(ConfigError, match="the env cannot render video frames: RuntimeError: no renderer"):
        check_render(NoPicturesEnv())


def test_virtual_display_is_started_and_stopped(monkeypatch):
    require_system_part(xvfb_missing())
    monkeypatch.delenv("DISPLAY", raising=False)
    with virtual_display(needed=True) as display:
        assert os.environ["DISPLAY"].startswith(":")
        pid = display.proc.pid
        assert Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}").exists(), "Xvfb still running"
    assert "DISPLAY" not in os.environ
    with virtual_display(needed=False) as nothing:
        assert nothing is None


@pytest.mark.parametrize("mode", ["tune", "local"])
def test_evaluation_videos_during_training(tmp_path, ray_temp_dir, mode):
    experiment = tiny_experiment(stop={"training_iteration": 2}, config={
        "evaluation_interval": 2, "evaluation_duration": 1,
        "evaluation_config": {"record_video": True, "explore": False},
    })
    config = write_yaml(tmp_path / "exp.yaml", {"eval-video": experiment})
    flags = ["--local-mode"] if mode == "local" else []
    run = run_script("train.py", "-f", str(config), "--local-dir", str(tmp_path / "results"), *flags,
                     temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    (folder,) = trial_dirs(tmp_path / "results" / "eval-video")
    videos = list((folder / "videos").rglob("*.mp4"))
    assert [v.relative_to(folder).as_posix() for v in videos] == ["videos/iteration_000002/episode_000000.mp4"]
    capture = cv2.VideoCapture(str(videos[0]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == MAX_STEPS
