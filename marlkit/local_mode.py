"""`--local-mode`: every trial of an experiment one after another in the driver process, for pdb and breakpoints.

No remote env runners: envs, models and callbacks all run here. Results and checkpoints land where Tune would put
them (`<local-dir>/<experiment>/<trial>/`), through Tune's own logger callbacks.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

from ray.tune.search.variant_generator import format_vars, generate_variants
from ray.tune.utils import flatten_dict

from envs.errors import ConfigError, closest
from marlkit.checkpoints import save_atomically
from marlkit.launch import PROGRESS_COLUMNS, build_algorithm, trial_param_space
from marlkit.result_logs import logger_callbacks
from marlkit.spec import Experiment


class LocalTrial:
    """The part of Tune's `Trial` that Tune's logger callbacks read, for trials run in the driver process."""

    def __init__(self, trial_id: str, config: dict, local_path: Path, evaluated_params: dict, experiment_dir_name: str):
        self.trial_id = trial_id
        self.config = config
        self.local_path = self.path = str(local_path)
        self.evaluated_params = evaluated_params
        self.experiment_dir_name = experiment_dir_name
        self.checkpoint = None

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return Path(self.local_path).name


def _stop_reached(experiment: Experiment, result: dict) -> bool:
    """Tune's rule: any stop criterion reached (or the algorithm says done); an unknown metric is an error."""
    if result.get("done"):
        return True
    flat = flatten_dict(result, delimiter="/")
    for key in experiment.stop:
        if key not in flat:
            raise ConfigError(f"{experiment.name}.stop.{key} is not a result metric{closest(key, flat)}")
    return any(flat[key] >= threshold for key, threshold in experiment.stop.items())


def run_local(experiment: Experiment, storage: Path, restore: str | None) -> bool:
    """Runs every trial of the experiment one after another in this process, for pdb and breakpoints.

    No remote env runners: envs, models and callbacks all run here. Results and checkpoints land where Tune
    would put them. Schedulers need Tune and are ignored here; keep_checkpoints_num keeps the newest.
    """
    if experiment.scheduler:
        print(f"--local-mode: {experiment.name}.scheduler is ignored (trials run one after another)")
    param_space = trial_param_space(experiment, restore)
    samples = [v for _ in range(experiment.num_samples) for v in generate_variants({"config": param_space})]
    run_id = uuid.uuid4().hex[:5]
    callbacks = logger_callbacks(experiment.wandb, experiment.name)
    for callback in callbacks:
        callback.setup()
    trials = []
    for index, (resolved_vars, spec) in enumerate(samples):
        config = dict(spec["config"], num_env_runners=0, evaluation_num_env_runners=0)
        trial_id = f"{run_id}_{index:05d}"
        grid_vars = {path: value for path, value in resolved_vars.items() if "multiagent" not in path}
        tag = format_vars(grid_vars)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        name = f"{experiment.run}_{experiment.env}_{trial_id}_{index}{'_' + tag if tag else ''}_{stamp}"
        trial = LocalTrial(trial_id, config, storage / experiment.name / name, grid_vars, experiment.name)
        trial.init_local_path()
        trials.append(trial)
        _train_in_process(experiment, trial, callbacks)
    for callback in callbacks:
        callback.on_experiment_end(trials=trials)
    return True


def _train_in_process(experiment: Experiment, trial: LocalTrial, callbacks: list) -> None:
    algorithm = build_algorithm(experiment.run, trial.config)
    # Outside Tune an algorithm logs to a temporary folder; point it at the trial folder (evaluation videos).
    algorithm._logdir = trial.path
    for callback in callbacks:
        callback.log_trial_start(trial)
    print(f"--local-mode: trial {trial} (in this process, pid {os.getpid()})", flush=True)
    trial_dir = Path(trial.local_path)
    saved = 0
    failed = True
    try:
        while True:
            result = algorithm.train()
            result.update(trial_id=trial.trial_id, experiment_tag=str(trial))
            for callback in callbacks:
                callback.log_trial_result(result["training_iteration"], trial, result)
            flat = flatten_dict(result, delimiter="/")
            print("  " + "  ".join(f"{label}={flat.get(key, float('nan')):.6g}" for key, label in PROGRESS_COLUMNS.items()), flush=True)
            done = _stop_reached(experiment, result)
            if experiment.checkpoint_freq and result["training_iteration"] % experiment.checkpoint_freq == 0:
                save_atomically(algorithm, trial_dir, saved, experiment.keep_checkpoints_num)
                saved += 1
            elif done and experiment.checkpoint_at_end:
                save_atomically(algorithm, trial_dir, saved, experiment.keep_checkpoints_num)
            if done:
                break
        failed = False
    finally:
        for callback in callbacks:
            callback.log_trial_end(trial, failed=failed)
        algorithm.stop()
