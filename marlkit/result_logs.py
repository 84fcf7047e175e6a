"""The per-trial result files (`result.json`, `progress.csv`, TensorBoard events, W&B runs): Tune's logger
callbacks, with one row per training iteration even when a trial re-runs iterations.

A trial restored from a checkpoint (`train.py --resume` after the driver died, or Tune's retry after a failure with
`max_failures`) re-runs the iterations after that checkpoint. Tune's own loggers append the re-run rows after the
old ones, so an iteration appears twice. Here the old rows of re-run iterations are dropped (the file rewritten
atomically) before the first re-run row is written: the files keep the run that went on.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

from marlkit.files import atomic_write

ITERATION = "training_iteration"


class _OneRowPerIteration:
    """Mixin for Tune's JSON and CSV loggers; subclasses name their file and how to split it into rows.

    When a trial's first result in this process arrives (a new run, a resume) or an iteration comes again (a retry),
    the file keeps only whole rows of earlier iterations. Rows a killed driver left half-written go too.
    """

    file_name: str

    def __init__(self):
        super().__init__()
        self._last_iteration: dict = {}

    @staticmethod
    def _split(text: str) -> tuple[str, list[tuple[str, int | None]]]:
        """(header, [(row text, its iteration, or None for a row that is not whole)]) of the file's text."""
        raise NotImplementedError

    def _keep_rows_before(self, trial, iteration: int) -> None:
        # Both copies: Tune writes into a driver staging folder and, on resume, first copies the trial folder's
        # file (storage) over it; the two are the same folder in --local-mode.
        for folder in dict.fromkeys([trial.path, trial.local_path]):
            path = Path(folder, self.file_name)
            text = path.read_text() if path.exists() else ""
            header, rows = self._split(text)
            kept = [row for row, number in rows if number is not None and number < iteration]
            if len(kept) == len(rows) and text.endswith("\n") or not text:
                continue
            self.log_trial_end(trial)  # closes Tune's append handle; the next row reopens the rewritten file
            atomic_write(path, lambda staging: staging.write_text(header + "".join(kept)))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        number = result.get(ITERATION)
        if number is not None and number <= self._last_iteration.get(trial, float("inf")):
            self._keep_rows_before(trial, number)
        super().log_trial_result(iteration, trial, result)
        if number is not None:
            self._last_iteration[trial] = number


class ResultJsonLogger(_OneRowPerIteration, JsonLoggerCallback):
    """`result.json`: one JSON result per line."""

    file_name = "result.json"

    @staticmethod
    def _split(text):
        rows = []
        for line in text.splitlines(keepends=True):
            try:
                rows.append((line, json.loads(line).get(ITERATION) if line.endswith("\n") else None))
            except ValueError:
                rows.append((line, None))
        return "", rows


class ProgressCsvLogger(_OneRowPerIteration, CSVLoggerCallback):
    """`progress.csv`: a header of flattened result keys, then one row per result."""

    file_name = "progress.csv"

    @staticmethod
    def _split(text):
        (header, *rows) = list(csv.reader(io.StringIO(text))) or [[]]
        column = header.index(ITERATION) if ITERATION in header else None
        if not text.endswith("\n"):  # the last line was cut off
            if rows:
                rows[-1] = []
            else:
                header = []

        def line(fields: list[str]) -> str:
            out = io.StringIO()
            csv.writer(out).writerow(fields)
            return out.getvalue()

        def iteration(fields: list[str]) -> int | None:
            whole = column is not None and len(fields) == len(header)
            return int(fields[column]) if whole and fields[column].isdigit() else None

        return (line(header) if header else ""), [(line(fields), iteration(fields)) for fields in rows]


def cut_partial_rows(trial_dir: Path) -> None:
    """Cuts a row that a full disk left half-written off the end of the trial's result files (Tune copies them into
    the results folder without a temporary file). Cutting needs no free space."""
    for name in (ResultJsonLogger.file_name, ProgressCsvLogger.file_name):
        path = trial_dir / name
        if path.exists() and (text := path.read_bytes()) and not text.endswith(b"\n"):
            os.truncate(path, text.rfind(b"\n") + 1)


class TrialFolderWandbCallback(WandbLoggerCallback):
    """Ray's W&B callback, writing each trial's W&B run straight into the trial's results folder.

    Ray's own callback writes into the Ray session's staging copy of the trial folder, which Tune copies to the
    results folder when the experiment ends, possibly before W&B flushed the run: the copy can miss the run data.
    """

    def log_trial_start(self, trial) -> None:
        self.kwargs["dir"] = trial.path
        super().log_trial_start(trial)


def logger_callbacks(wandb: dict | None, project: str = "marlkit") -> list:
    """The JSON and CSV loggers above, Tune's TensorBoard logger, plus W&B with `wandb` settings (the YAML's
    `wandb` block)."""
    callbacks = [ResultJsonLogger(), ProgressCsvLogger(), TBXLoggerCallback()]
    if wandb is not None:
        settings = dict(wandb)
        settings.setdefault("project", project)
        no_key = not (settings.get("api_key") or settings.get("api_key_file") or os.environ.get("WANDB_API_KEY"))
        if settings.get("mode") in ("offline", "disabled") and no_key:
            settings["api_key"] = "offline"  # Ray's callback insists on a key even when nothing is uploaded
        callbacks.append(TrialFolderWandbCallback(**settings))
    return callbacks
