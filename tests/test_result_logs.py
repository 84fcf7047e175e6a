"""The result files keep one row per training iteration when a trial re-runs iterations (resume, retry)."""

from __future__ import annotations

import csv
import json

import pytest

from marlkit.local_mode import LocalTrial
from marlkit.result_logs import ProgressCsvLogger, ResultJsonLogger


def rows_of(logger_class, trial_dir) -> list[int]:
    if logger_class is ResultJsonLogger:
        return [json.loads(line)["training_iteration"] for line in (trial_dir / "result.json").read_text().splitlines()]
    with open(trial_dir / "progress.csv", newline="") as file:
        return [int(row["training_iteration"]) for row in csv.DictReader(file)]


def log(logger, trial, iterations) -> None:
    for number in iterations:
        logger.log_trial_result(number, trial, {"training_iteration": number, "return": number / 10, "nested": {"x": 1}})


@pytest.fixture
def trial(tmp_path):
    trial = LocalTrial("t0", {}, tmp_path / "trial", {}, "exp")
    trial.init_local_path()
    return trial


@pytest.mark.parametrize("logger_class", [ResultJsonLogger, ProgressCsvLogger])
def test_a_retried_iteration_replaces_the_rows_from_it_on(logger_class, trial, tmp_path):
    logger = logger_class()
    log(logger, trial, [1, 2, 3, 4, 5])
    log(logger, trial, [3, 4])  # Tune's retry after a failure restored the checkpoint of iteration 2
    logger.log_trial_end(trial)
    assert rows_of(logger_class, tmp_path / "trial") == [1, 2, 3, 4]


@pytest.mark.parametrize("logger_class", [ResultJsonLogger, ProgressCsvLogger])
def test_a_resumed_trial_drops_the_rows_it_re_runs_and_a_half_written_row(logger_class, trial, tmp_path):
    first = logger_class()
    log(first, trial, [1, 2, 3, 4, 5])
    first.log_trial_end(trial)
    path = tmp_path / "trial" / logger_class.file_name
    path.write_text(path.read_text() + path.read_text().splitlines(keepends=True)[-1][:9])  # the driver was killed

    resumed = logger_class()  # a new driver process
    log(resumed, trial, [4, 5, 6])
    resumed.log_trial_end(trial)
    assert rows_of(logger_class, tmp_path / "trial") == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("logger_class", [ResultJsonLogger, ProgressCsvLogger])
def test_a_resumed_trial_keeps_every_row_before_its_first_new_iteration(logger_class, trial, tmp_path):
    first = logger_class()
    log(first, trial, [1, 2, 3])
    first.log_trial_end(trial)
    before = (tmp_path / "trial" / logger_class.file_name).read_text()
    resumed = logger_class()
    log(resumed, trial, [4])
    resumed.log_trial_end(trial)
    after = (tmp_path / "trial" / logger_class.file_name).read_text()
    assert after.startswith(before) and rows_of(logger_class, tmp_path / "trial") == [1, 2, 3, 4]
