"""Starting Ray and running validated experiments with Tune (`--local-mode` runs them in this process instead:
marlkit/local_mode.py; the checks made before either: marlkit/preflight.py).

Trials write Tune's layout: `<local-dir>/<experiment>/<trial>/` holding `params.json`, `result.json`, `progress.csv`,
TensorBoard events and `checkpoint_000000`-style folders (numbered in save order).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from ray.rllib.algorithms.callbacks import make_multi_callbacks
from ray.rllib.utils.serialization import deserialize_type
from ray.tune.registry import register_env
from ray.tune.search.variant_generator import generate_variants
from ray.tune.utils import flatten_dict

from envs import ENVS
from marlkit import models
from marlkit.callbacks import (
    Curriculum, EnvStepsPerSecond, EvaluationVideos, RayPlacement, RestoreCheckpoint, RunnersStartWithLearnerWeights,
    bound_callback,
)
from marlkit.checkpoints import with_safe_checkpoints
from envs.errors import ConfigError
from marlkit.errors import RunFailure, exception_line
from marlkit.files import write_json
from marlkit.result_logs import cut_partial_rows, logger_callbacks
from marlkit.plan import make_plan, planned_config
from marlkit.algorithms import algorithm_class
from marlkit.preflight import newest_checkpoints, restart_advice, truncated_experiment_state
from marlkit.spec import Experiment

RETURN_METRIC = "env_runners/episode_return_mean"
PROGRESS_COLUMNS = {
    "training_iteration": "iter",
    "num_env_steps_sampled_lifetime": "env steps",
    RETURN_METRIC: "return mean",
    "env_steps_per_s": "env steps/s",
    "time_total_s": "time (s)",
}
NODE_WAIT_S = 120
FULL_DISK_BYTES = 16 * 2**20  # less is left once a write failed for want of space


@dataclass
class RayOptions:
    """How to reach or start Ray (the --ray-* and --temp-dir flags)."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    num_nodes: int | None = None
    object_store_memory: int | None = None
    temp_dir: str | None = None


def start_ray(options: RayOptions) -> dict:
    """Connects to (address) or starts a Ray instance, waits for `num_nodes`, prints and returns its resources."""
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address:
        if options.num_cpus is not None or options.num_gpus is not None or options.object_store_memory is not None:
            raise ConfigError("--ray-num-cpus/--ray-num-gpus/--ray-object-store-memory start a new Ray; drop them with --ray-address")
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    else:
        ray.init(
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
            object_store_memory=options.object_store_memory,
            _temp_dir=str(Path(options.temp_dir).resolve()) if options.temp_dir else None,
            include_dashboard=False,
        )
    nodes = _alive_nodes()
    if options.num_nodes:
        deadline = time.monotonic() + NODE_WAIT_S
        while len(nodes) < options.num_nodes and time.monotonic() < deadline:
            time.sleep(1)
            nodes = _alive_nodes()
        if len(nodes) < options.num_nodes:
            raise ConfigError(
                f"--ray-num-nodes {options.num_nodes}: only {len(nodes)} Ray node(s) joined within {NODE_WAIT_S} s"
            )
    resources = ray.cluster_resources()
    print(
        f"Ray {ray.__version__} at {ray.get_runtime_context().gcs_address}: {len(nodes)} node(s), "
        f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs",
        flush=True,
    )
    for node in nodes:
        print(f"  node {node['NodeManagerHostname']} ({node['NodeManagerAddress']}, id {node['NodeID'][:8]}): "
              f"{node['Resources'].get('CPU', 0):g} CPUs, {node['Resources'].get('GPU', 0):g} GPUs", flush=True)
    return resources


def _alive_nodes() -> list:
    return [node for node in ray.nodes() if node.get("Alive")]


def register_envs() -> None:
    """Registers every env creator of `envs.ENVS` with Ray, for env runners on any node."""
    for name, entry in ENVS.items():
        register_env(name, entry)


def register_components(experiments: list[Experiment]) -> None:
    """Registers the env creators and custom models (the experiments' own and their default models) with Ray so
    remote env runners and nodes find them."""
    register_envs()
    models.register_models(set().union(*(set(e.custom_models) | set(make_plan(e).models) for e in experiments)))


def trial_param_space(experiment: Experiment, restore: str | None) -> dict:
    config = planned_config(experiment)
    callbacks = [EnvStepsPerSecond, RayPlacement, RunnersStartWithLearnerWeights]
    if restore:
        callbacks.append(bound_callback(RestoreCheckpoint, checkpoint=restore))
    if experiment.evaluation_videos:
        callbacks.append(bound_callback(EvaluationVideos, episodes=experiment.evaluation_videos))
    if experiment.curriculum:
        callbacks.append(bound_callback(Curriculum, metric=experiment.curriculum["metric"],
                                        stages=tuple(experiment.curriculum["stages"])))
    user_callbacks = config.pop("callbacks", None)
    if user_callbacks is not None:
        callbacks.append(deserialize_type(user_callbacks, error=True) if isinstance(user_callbacks, str) else user_callbacks)
    config["callbacks"] = callbacks[0] if len(callbacks) == 1 else make_multi_callbacks(callbacks)
    return config


class StopCriteria(tune.Callback):
    """Gives every trial the experiment's stop criteria (the YAML's with --stop over them). Tune restores a resumed
    trial with the criteria it started with, so without this a --stop given with --resume would be ignored."""

    def __init__(self, stop: dict):
        self.stop = flatten_dict(dict(stop), delimiter="/")

    def on_step_begin(self, iteration, trials, **info):
        for trial in trials:
            trial.stopping_criterion = dict(self.stop)


def tune_run(algorithm: type, param_space: dict, *, name: str, storage: Path, stop: dict,
             checkpoint_config: tune.CheckpointConfig, callbacks: list, reporter,
             tune_config: tune.TuneConfig | None = None, max_failures: int = 0) -> tune.Tuner:
    """The Tune run of train.py's experiments and of the benchmark suite: trials of `algorithm` (an RLlib algorithm
    class) whose checkpoints are never used half-written (`with_safe_checkpoints`), results under
    `<storage>/<name>/`."""
    return tune.Tuner(
        with_safe_checkpoints(algorithm),
        param_space=param_space,
        tune_config=tune_config or tune.TuneConfig(),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), stop=stop, checkpoint_config=checkpoint_config,
            failure_config=tune.FailureConfig(max_failures=max_failures), callbacks=callbacks,
            progress_reporter=reporter, verbose=1,
        ),
    )


def run_tune(experiment: Experiment, storage: Path, restore: str | None, resume: bool) -> bool:
    """Runs one experiment with Tune; True when every trial finished without error."""
    param_space = trial_param_space(experiment, restore)
    experiment_dir = storage / experiment.name
    if resume:
        forget_pending_decisions(experiment_dir)
        tuner = tune.Tuner.restore(
            str(experiment_dir), trainable=with_safe_checkpoints(algorithm_class(experiment.run)),
            resume_unfinished=True, resume_errored=True, param_space=param_space,
        )
        run_config = tuner._local_tuner.get_run_config()  # no public way to add a callback to a restored run
        run_config.callbacks = [*(c for c in run_config.callbacks or [] if not isinstance(c, StopCriteria)),
                                StopCriteria(experiment.stop)]  # (an earlier resume's is in the saved state)
    else:
        tuner = tune_run(
            algorithm_class(experiment.run), param_space, name=experiment.name, storage=storage, stop=experiment.stop,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=experiment.keep_checkpoints_num,
                checkpoint_score_attribute=experiment.checkpoint_score_attr,
                checkpoint_frequency=experiment.checkpoint_freq,
                checkpoint_at_end=experiment.checkpoint_at_end,
            ),
            callbacks=logger_callbacks(experiment.wandb, experiment.name),
            reporter=tune.CLIReporter(metric_columns=PROGRESS_COLUMNS, max_report_frequency=10),
            tune_config=tune.TuneConfig(num_samples=experiment.num_samples, scheduler=experiment.build_scheduler()),
            max_failures=experiment.max_failures,
        )
    handler_before = signal.getsignal(signal.SIGINT)
    try:
        results = tuner.fit()
    except Exception as error:  # Tune fails in its own ways when it cannot write its state files
        if disk_full(storage):
            raise RunFailure(no_space_left(storage, experiment)) from error
        raise
    # Tune swaps in its own SIGINT handler for the run and puts ours back only when a Ctrl-C (or SIGUSR1) stopped
    # it early; the trials then look TERMINATED although they did not reach their stop criteria.
    interrupted = signal.getsignal(signal.SIGINT) is handler_before and not os.getenv("TUNE_DISABLE_SIGINT_HANDLER")
    runner_errors = None
    for result in results:
        if result.error is not None:
            error = str(result.error)
            if "env_runner_group.py" in error and runner_errors is None:
                runner_errors = env_runner_creation_errors()
            if "env_runner_group.py" in error and runner_errors:
                print(f"trial {result.path} failed: an env runner could not be built: {runner_errors[-1]}")
            else:
                print(f"trial {result.path} failed: {exception_line(error)}")
    if results.errors and disk_full(storage):
        raise RunFailure(no_space_left(storage, experiment))
    if interrupted:
        print(f"{experiment.name}: interrupted; continue with: train.py -f <this file> --resume --local-dir {storage}")
    return not results.errors and not interrupted


def forget_pending_decisions(experiment_dir: Path) -> None:
    """Drops the trial decisions that Tune's experiment state saved while they waited on a checkpoint in flight.

    Tune holds a trial's next decision (continue, stop) until the save it started has finished, and saves these in its
    experiment state with everything else. A trial that failed mid-save (a full disk, a lost node) leaves a STOP
    there; restored by --resume, it stops the trial after its first checkpoint of the new run, long before its stop
    criteria. The trials of a resumed run start anew, so no decision of the old run applies to them.
    """
    state_file = max(experiment_dir.glob("experiment_state-*.json"))  # the one Tune resumes from (checked to parse)
    state = json.loads(state_file.read_text())
    runner = state.get("runner_data", {})
    if runner.get("_cached_trial_decisions") or runner.get("_queued_trial_decisions"):
        runner["_cached_trial_decisions"], runner["_queued_trial_decisions"] = {}, {}
        write_json(state_file, state)


def disk_full(folder: Path) -> bool:
    return shutil.disk_usage(folder).free < FULL_DISK_BYTES


def no_space_left(storage: Path, experiment: Experiment) -> str:
    """The line train.py ends with when the disk filled up; first cuts the rows it left half-written."""
    experiment_dir = storage / experiment.name
    for trial in experiment_dir.iterdir():
        if trial.is_dir():
            cut_partial_rows(trial)
    kept = newest_checkpoints(experiment_dir)
    then = (f"{restart_advice(experiment_dir)} (Tune's experiment state is truncated)"
            if truncated_experiment_state(experiment_dir) else "continue with --resume")
    return (f"{experiment.name}: the disk of --local-dir {storage} is full ({shutil.disk_usage(storage).free} bytes "
            f"free); the checkpoints saved before are intact (newest: {', '.join(map(str, kept)) or 'none'}). Free "
            f"space (or keep fewer with --keep-checkpoints-num), then {then}")


def env_runner_creation_errors() -> list[str]:
    """The exception lines of env runners that died in their constructor, from Ray's actor table.

    RLlib restarts failed env runners by default, so when none could be built it goes on and fails at its next step
    (`IndexError` in `get_spaces`); the runner's own error is only in the runner's log. Ray 2.60 keeps it as the
    actor's death cause. `ray.util.state` would read it through the dashboard, which train.py does not start; the
    GCS table below is what that API reads.
    """
    from ray._private import state

    errors = []
    for actor in state.actors().values():
        cause = str(actor.get("DeathCause", ""))
        if actor.get("State") == "DEAD" and "creation task" in cause and (
                actor.get("ActorClassName", "").endswith("EnvRunner") or actor.get("ActorClassName") == "RolloutWorker"):
            errors.append(exception_line(cause.replace("\\n", "\n").replace('\\"', '"')))
    return errors


def first_trial_config(experiment: Experiment) -> dict:
    """The resolved RLlib config of the experiment's first trial (its first grid point), as Tune would pass it."""
    ((_, variant), *_) = generate_variants({"config": trial_param_space(experiment, None)})
    return variant["config"]


def build_algorithm(run: str, config: dict):
    """An RLlib Algorithm of `run` for one resolved trial config, built in this process (no Tune)."""
    return algorithm_class(run).get_default_config().update_from_dict(config).build_algo()
