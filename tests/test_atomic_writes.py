"""Every file writer of the project is atomic: interrupted half-way, it leaves the previous file (or none) and no
half-written file or staging leftover."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from marlkit import checkpoints, rollout
from marlkit.files import atomic_write, write_json
from marlkit.video import VideoWriter


class Interrupted(BaseException):
    """Stands for Ctrl-C or a full disk half-way through a write."""


def interrupt_after_some_bytes(path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])
    raise Interrupted


def only(folder) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def test_results_json_and_plots_keep_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"runs": 1})
    with pytest.raises(Interrupted):
        atomic_write(path, lambda staging: interrupt_after_some_bytes(staging, b'{"runs": 2, "more": "..."}'))
    assert path.read_text() == '{\n "runs": 1\n}\n' and only(tmp_path) == ["results.json"]


def test_rollout_files_appear_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "rollouts" / "episodes.pkl"
    episode = rollout.EpisodeRecord(index=0, steps=[{"obs": np.zeros(3)}] * 10)
    monkeypatch.setattr(pickle, "dump", lambda data, file, protocol: interrupt_after_some_bytes(file.name, b"x" * 100))
    with pytest.raises(Interrupted):
        rollout.write_rollout(path, [episode])
    assert only(path.parent) == []
    monkeypatch.undo()
    rollout.write_rollout(path, [episode])
    assert len(pickle.loads(path.read_bytes())[0]) == 10 and only(path.parent) == ["episodes.pkl"]


def test_a_video_interrupted_while_recording_leaves_no_file(tmp_path):
    with pytest.raises(Interrupted):
        with VideoWriter(tmp_path / "episode.webm", fps=10) as video:
            video.add(np.zeros((64, 64, 3), np.uint8))
            raise Interrupted
    assert only(tmp_path) == []


def test_a_local_mode_checkpoint_interrupted_while_saving_leaves_the_previous_ones(tmp_path):
    class Algorithm:
        def __init__(self, fail: bool):
            self.fail = fail

        def save(self, folder: str) -> None:
            Path(folder).mkdir()
            (Path(folder) / "algorithm_state.pkl").write_bytes(b"half")
            if self.fail:
                raise Interrupted

    checkpoints.save_atomically(Algorithm(fail=False), tmp_path, 1, keep=None)
    with pytest.raises(Interrupted):
        checkpoints.save_atomically(Algorithm(fail=True), tmp_path, 2, keep=None)
    assert only(tmp_path) == ["checkpoint_000001"]
