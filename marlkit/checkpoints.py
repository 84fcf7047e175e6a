"""Finding and opening training checkpoints (`<experiment>/<trial>/checkpoint_<N>/`)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.utils.checkpoints import get_checkpoint_info

from envs.errors import ConfigError

STATE_FILES = ("algorithm_state.pkl", "rllib_checkpoint.json")


def is_checkpoint(folder: Path) -> bool:
    return any((folder / name).exists() for name in STATE_FILES)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the newest readable `checkpoint_*` of a trial folder (a warning line for
    each newer one that is truncated or corrupt)."""
    folder = Path(path).expanduser().resolve()
    if not folder.exists():
        raise ConfigError(f"checkpoint {path} does not exist; pass a checkpoint_* folder or a trial folder")
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {path} is a file; pass a checkpoint_* folder or a trial folder")
    if is_checkpoint(folder):
        return folder
    checkpoints = trial_checkpoints(folder)
    if not checkpoints:
        raise ConfigError(
            f"{path} is neither a checkpoint nor a trial folder with checkpoints "
            f"(train with --checkpoint-freq N or --checkpoint-at-end)"
        )
    return newest_readable(checkpoints)


def trial_checkpoints(trial_dir: Path) -> list[Path]:
    """The `checkpoint_*` folders of a trial folder, oldest first."""
    return sorted(p for p in trial_dir.glob("checkpoint_*") if p.is_dir() and is_checkpoint(p))


def newest_readable(checkpoints: list[Path]) -> Path:
    """The newest of `checkpoints` (sorted oldest first) whose state loads; prints a warning line for each newer
    one that does not, and raises the newest one's error when none loads."""
    errors = []
    for checkpoint in reversed(checkpoints):
        try:
            load_algorithm_state(checkpoint)
        except CorruptCheckpoint as error:
            errors.append(error)
            continue
        for error in errors:
            print(f"warning: {error.problem}; using the previous readable checkpoint, {checkpoint}", flush=True)
        return checkpoint
    raise errors[0]


class SafeCheckpoints:
    """Mixin for an RLlib algorithm class: its checkpoints are never used half-written, and a resumed trial loses at
    most the iterations since its newest checkpoint on disk.

    - restore of one of the trial's own checkpoints (Tune's --resume, a retry after a failure) loads the trial's
      newest readable checkpoint on disk, which may be newer than the one Tune's experiment state recorded (train.py
      killed between a checkpoint and Tune's next write of its state), with a line saying so and a warning line for
      each unreadable newer one; with none readable, the trial fails naming the bad file instead of loading half a
      state. Another trial's checkpoint (PBT) loads as Tune picked it, or the newest readable one before it;
    - a resumed trial for which Tune recorded no checkpoint at all (train.py killed in its first seconds) starts,
      before its first iteration, from its newest readable checkpoint on disk instead of from scratch;
    - new checkpoints are numbered after the newest on disk, so that none is written over;
    - a save that fails (a full disk) removes the checkpoint folder it had started to write.

    A module-level class, so that Ray pickles it by reference: trial actors run this module's code.
    """

    def restore(self, checkpoint_path):
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)  # a Tune _TrainingResult
        folder = Path(getattr(checkpoint, "path", checkpoint)).resolve()
        if not _on_local_disk(checkpoint) or not folder.is_dir():
            return super().restore(checkpoint_path)  # remote storage: RLlib reads it as it is
        own = self._own_checkpoints()
        if folder in own:
            return self._resume(own, folder, checkpoint_path)
        readable = newest_readable([p for p in trial_checkpoints(folder.parent) if p.name <= folder.name])
        # A path, not Tune's result: the other checkpoint's own state sets the iteration counters.
        return super().restore(checkpoint_path if readable == folder else str(readable))

    def step(self):
        if self.iteration == 0 and (own := self._own_checkpoints()):  # resumed, but Tune recorded no checkpoint
            self._resume(own)
        return super().step()

    def _resume(self, own: list[Path], recorded: Path | None = None, recorded_result=None):
        """Restores the newest readable of the trial's own checkpoints; `recorded`: the one Tune's experiment state
        named (`recorded_result`, Tune's result for it, carries its time and step totals)."""
        readable = newest_readable(own)
        if recorded is None:
            print(f"resuming from {readable}: Tune's experiment state records no checkpoint of this trial (train.py "
                  f"stopped before writing it)", flush=True)
        elif readable.name > recorded.name:
            print(f"resuming from {readable}, newer than the checkpoint Tune's experiment state records "
                  f"({recorded.name})", flush=True)
        self._storage.current_checkpoint_index = checkpoint_index(own[-1])
        # A path, not Tune's result: the checkpoint's own state sets the iteration counters.
        return super().restore(recorded_result if readable == recorded else str(readable))

    def _own_checkpoints(self) -> list[Path]:
        """The checkpoint folders of this trial on local disk, oldest first."""
        storage = self._storage
        if storage is None or storage.storage_filesystem.type_name != "local":
            return []
        return [p.resolve() for p in trial_checkpoints(Path(storage.trial_fs_path))]

    def save(self, checkpoint_dir=None):
        storage = self._storage
        newest_before = storage.current_checkpoint_index if storage is not None else None
        try:
            return super().save(checkpoint_dir)
        except OSError:
            # Tune moves on to the new checkpoint's index just before copying it into the trial folder: a save that
            # failed earlier (while the algorithm wrote its state) left the trial folder alone, and the folder at the
            # current index is then the newest good checkpoint.
            started_writing = storage is not None and storage.current_checkpoint_index != newest_before
            if started_writing and storage.storage_filesystem.type_name == "local":
                shutil.rmtree(storage.checkpoint_fs_path, ignore_errors=True)
            raise


def save_atomically(algorithm, trial_dir: Path, index: int, keep: int | None) -> Path:
    """Writes checkpoint_<index> of an algorithm trained outside Tune (--local-mode) atomically (into a temp folder,
    then renamed) and prunes the oldest beyond `keep`. (Tune's trials save through `SafeCheckpoints`.)"""
    final = trial_dir / f"checkpoint_{index:06d}"
    staging = trial_dir / f".{final.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        algorithm.save(str(staging))
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted save left (nothing once renamed)
    if keep:
        for old in sorted(trial_dir.glob("checkpoint_*"))[:-keep]:
            shutil.rmtree(old)
    return final


def checkpoint_index(folder: Path) -> int:
    """N of a `checkpoint_<N>` folder."""
    return int(folder.name.rsplit("_", 1)[1])


def with_safe_checkpoints(algorithm: type) -> type:
    """`algorithm` (an RLlib algorithm class) with `SafeCheckpoints`, under the same name (Tune names trials and
    matches resumed experiments by it)."""
    return type(algorithm.__name__, (SafeCheckpoints, algorithm), {})


def _on_local_disk(checkpoint) -> bool:
    return getattr(getattr(checkpoint, "filesystem", None), "type_name", "local") == "local"


def _checkpoint_files(checkpoint: Path) -> list[Path]:
    """The files RLlib's old-stack checkpoint loader reads, in the order it reads them."""
    return [checkpoint / "rllib_checkpoint.json", checkpoint / "algorithm_state.pkl",
            *sorted(checkpoint.glob("policies/*/rllib_checkpoint.json")),
            *sorted(checkpoint.glob("policies/*/policy_state.pkl"))]


def _unreadable_file(checkpoint: Path) -> Path | None:
    for file in _checkpoint_files(checkpoint):
        try:
            with open(file, "rb") as handle:
                json.load(handle) if file.suffix == ".json" else pickle.load(handle)
        except Exception:  # noqa: BLE001 (any failure to read it back is what is looked for)
            return file
    return None


class CorruptCheckpoint(ConfigError):
    """A checkpoint file that is missing, truncated or corrupt; `problem` names it."""

    def __init__(self, problem: str):
        super().__init__(f"{problem}; use another checkpoint_* folder")
        self.problem = problem


def load_algorithm_state(checkpoint: Path) -> dict:
    """The pickled algorithm state of a checkpoint (its `config`, `algorithm_class`, policy states); ConfigError
    naming the file when one is missing, truncated or corrupt, so that no half-loaded state is ever used, or the
    module when the state names one that cannot be imported."""
    try:
        info = get_checkpoint_info(str(checkpoint))
        return Algorithm._checkpoint_info_to_algorithm_state(info)
    except ModuleNotFoundError as error:  # the saved config names a class of the user's (a callback, an env) by module
        raise ConfigError(f"checkpoint {checkpoint} needs the module '{error.name}', which Python cannot import here "
                          f"(a callback or other class of the run that saved it); put its folder on PYTHONPATH") from None
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, FileNotFoundError, AttributeError) as error:
        bad = _unreadable_file(checkpoint)
        where = (f"checkpoint {checkpoint} cannot be read" if bad is None else f"{bad} is missing" if not bad.exists()
                 else f"{bad} is truncated or corrupt")
        raise CorruptCheckpoint(f"{where} ({type(error).__name__}: {error})") from None


def check_run(checkpoint: Path, state: dict, run: str | None) -> str:
    """The checkpoint's algorithm name; ConfigError if `run` names another."""
    algorithm = state["algorithm_class"].__name__
    if run is not None and run != algorithm:
        raise ConfigError(f"--run {run} does not match checkpoint {checkpoint}, which holds a {algorithm} algorithm")
    return algorithm
