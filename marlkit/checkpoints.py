"""Finding and opening training checkpoints (`<experiment>/<trial>/checkpoint_<N>/`)."""

from __future__ import annotations

import pickle
from pathlib import Path

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.utils.checkpoints import get_checkpoint_info

from marlkit.errors import ConfigError

STATE_FILES = ("algorithm_state.pkl", "rllib_checkpoint.json")


def is_checkpoint(folder: Path) -> bool:
    return any((folder / name).exists() for name in STATE_FILES)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the newest `checkpoint_*` of a trial folder."""
    folder = Path(path).expanduser().resolve()
    if not folder.exists():
        raise ConfigError(f"checkpoint {path} does not exist; pass a checkpoint_* folder or a trial folder")
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {path} is a file; pass a checkpoint_* folder or a trial folder")
    if is_checkpoint(folder):
        return folder
    checkpoints = sorted(p for p in folder.glob("checkpoint_*") if p.is_dir() and is_checkpoint(p))
    if not checkpoints:
        raise ConfigError(
            f"{path} is neither a checkpoint nor a trial folder with checkpoints "
            f"(train with --checkpoint-freq N or --checkpoint-at-end)"
        )
    return checkpoints[-1]


def load_algorithm_state(checkpoint: Path) -> dict:
    """The pickled algorithm state of a checkpoint (its `config`, `algorithm_class`, policy states)."""
    try:
        info = get_checkpoint_info(str(checkpoint))
        return Algorithm._checkpoint_info_to_algorithm_state(info)
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, FileNotFoundError, AttributeError) as error:
        raise ConfigError(
            f"checkpoint {checkpoint} is truncated or corrupt ({type(error).__name__}: {error}); "
            f"use another checkpoint_* folder"
        ) from None


def check_run(checkpoint: Path, state: dict, run: str | None) -> str:
    """The checkpoint's algorithm name; ConfigError if `run` names another."""
    algorithm = state["algorithm_class"].__name__
    if run is not None and run != algorithm:
        raise ConfigError(f"--run {run} does not match checkpoint {checkpoint}, which holds a {algorithm} algorithm")
    return algorithm


def restore_for_evaluation(checkpoint: Path, state: dict, env: str | None, overrides: dict, num_workers: int,
                           num_gpus: float):
    """Rebuilds the checkpoint's algorithm with evaluation settings and loads its weights (needs Ray started).

    `env` and `overrides` (RLlib settings; `env_config` is merged key by key) change what the policies are
    evaluated on. Training-only parts are dropped: user callbacks, evaluation runs, the `--restore` hook.
    """
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from envs import ENVS
    from marlkit import launch, models, spec

    config = state["config"].copy(copy_frozen=False)
    env = env or config.env
    if env not in ENVS:
        raise ConfigError(f"--env: unknown env '{env}'; registered envs: {', '.join(ENVS)}")
    env_config = ENVS[env].single_env_config({**config.env_config, **overrides.pop("env_config", {})})
    if overrides:
        translated, _ = spec.translate_config("--config", state["algorithm_class"].__name__, overrides)
        config.update_from_dict(translated)
    ENVS[env].check_config(env_config)
    config.environment(env=env, env_config=env_config)
    config.env_runners(num_env_runners=num_workers, num_envs_per_env_runner=1)
    config.resources(num_gpus=num_gpus)
    config.callbacks(RLlibCallback)
    config.evaluation(evaluation_interval=None, evaluation_num_env_runners=0)
    launch.register_envs()
    models.register_models(spec.custom_model_names(config.to_dict()) | _policy_model_names(config))
    try:
        algorithm = config.build_algo()
    except Exception as error:  # user model and env code fails in its own ways; --debug shows the traceback
        raise ConfigError(
            f"cannot rebuild the algorithm of {checkpoint}: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    try:
        algorithm.restore(str(checkpoint))
    except (RuntimeError, ValueError, KeyError) as error:  # torch's state-dict and optimizer mismatches
        algorithm.stop()
        raise ConfigError(
            f"the weights in {checkpoint} do not fit the model built now (was its model/ file changed?): "
            f"{str(error).splitlines()[0]}"
        ) from None
    return algorithm


def _policy_model_names(config) -> set[str]:
    names = set()
    for policy in (config.policies or {}).values():
        model = (getattr(policy, "config", None) or {}).get("model") or {}
        if model.get("custom_model"):
            names.add(model["custom_model"])
    return names
