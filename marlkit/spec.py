"""Experiment YAML: the classic Tune/RLlib experiment file, validated before Ray starts.

One or more experiments per file:

    my-experiment:                  # experiment name: results go to <local-dir>/my-experiment/<trial>/
      run: PPO                      # RLlib algorithm
      env: vmas                     # a name from envs.ENVS (or a Gymnasium id)
      stop: {training_iteration: 100, env_runners/episode_return_mean: 50}
      checkpoint_freq: 10           # checkpoint every N iterations (0: never)
      checkpoint_at_end: true
      keep_checkpoints_num: 3       # keep the newest N (or the best N with checkpoint_score_attr)
      checkpoint_score_attr: env_runners/episode_return_mean
      num_samples: 1                # repeats of the whole grid
      max_failures: 0               # trial restarts after an error
      scheduler: {type: asha, metric: env_runners/episode_return_mean, mode: max, grace_period: 10}
      wandb: {project: my-project, mode: offline}
      curriculum:                   # task parameters that change as the policy improves (envs with set_task)
        metric: env_runners/episode_return_mean       # the default
        stages:                     # env_config overrides; the next stage starts once metric >= until
          - {env_config: {pos_shaping_factor: 1.0}, until: 2.0}
          - {env_config: {pos_shaping_factor: 0.0}}
      config:                       # RLlib settings; {grid_search: [...]} works anywhere
        env_config: {scenario: navigation, n_agents: 3}
        num_workers: 2              # renamed keys of older Ray versions are translated
        multiagent: {policies: shared}   # see marlkit.policies
        model: {custom_model: fcnet, custom_model_config: {hiddens: [64, 64]}}

Example:
    >>> from marlkit.spec import load_experiments
    >>> [e.name for e in load_experiments("config/vmas-navigation-ppo.yaml")]
    ['vmas-navigation-ppo']
"""

from __future__ import annotations

import copy
import inspect
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import yaml
from ray import tune
from ray.rllib.algorithms.registry import ALGORITHMS
from ray.rllib.models.catalog import MODEL_DEFAULTS
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.serialization import deserialize_type
from ray.tune.search.variant_generator import generate_variants
from ray.tune.utils import merge_dicts

from envs import ENVS
from marlkit import models
from marlkit.batched_runner import BatchedEnvRunner
from marlkit.errors import ConfigError, closest
from marlkit.mappo import joint_input_size
from marlkit.default_models import IMAGE_MODEL, apply_default_models
from marlkit.policies import PolicyLayout
from marlkit.stock_runner import StockEnvRunner

# Experiment keys and what each does (the module docstring shows them in use).
EXPERIMENT_KEYS = {
    "run": "RLlib algorithm name",
    "env": "environment name",
    "stop": "stopping criteria: result metric -> threshold",
    "config": "RLlib algorithm settings",
    "checkpoint_freq": "checkpoint every N training iterations",
    "checkpoint_at_end": "checkpoint when the trial ends",
    "keep_checkpoints_num": "number of checkpoints to keep",
    "checkpoint_score_attr": "metric that ranks checkpoints for keep_checkpoints_num",
    "num_samples": "repeats of the search space",
    "max_failures": "trial restarts after errors",
    "scheduler": "Tune trial scheduler block",
    "wandb": "Weights & Biases logging block",
    "local_dir": "results folder (the --local-dir flag overrides it)",
    "restore": "checkpoint to start the trials from",
    "curriculum": "env_config stages that follow as a metric improves",
}

# Old RLlib config keys -> their Ray 2.60 names; translated with a note so existing YAML files keep working.
RENAMED_CONFIG_KEYS = {
    "num_workers": "num_env_runners",
    "num_envs_per_worker": "num_envs_per_env_runner",
    "sgd_minibatch_size": "minibatch_size",
    "num_sgd_iter": "num_epochs",
    "num_cpus_per_worker": "num_cpus_per_env_runner",
    "num_gpus_per_worker": "num_gpus_per_env_runner",
    "custom_resources_per_worker": "custom_resources_per_env_runner",
    "evaluation_num_workers": "evaluation_num_env_runners",
    "num_cpus_for_driver": "num_cpus_for_main_process",
    "ignore_worker_failures": "ignore_env_runner_failures",
    "recreate_failed_workers": "restart_failed_env_runners",
    "num_consecutive_worker_failures_tolerance": "num_consecutive_env_runner_failures_tolerance",
    "metrics_smoothing_episodes": "metrics_num_episodes_for_smoothing",
    "min_iter_time_s": "min_time_s_per_iteration",
    "min_time_s_per_reporting": "min_time_s_per_iteration",
    "timesteps_per_iteration": "min_sample_timesteps_per_iteration",
    "min_sample_timesteps_per_reporting": "min_sample_timesteps_per_iteration",
    "min_train_timesteps_per_reporting": "min_train_timesteps_per_iteration",
    "evaluation_num_episodes": "evaluation_duration",
    "collect_metrics_timeout": "metrics_episode_collection_timeout_s",
}
# Keys Ray 2.60 dropped with no direct replacement.
REMOVED_CONFIG_KEYS = {
    "horizon": "set the episode length in env_config (VMAS: max_steps)",
    "soft_horizon": "let the env truncate episodes",
    "no_done_at_end": "let the env truncate episodes",
    "monitor": "record videos with rollout.py --monitor",
    "record_env": "record videos with rollout.py --monitor",
    "sample_async": "use APPO or IMPALA for asynchronous sampling",
}
# Keys RLlib's own old-style dicts spell differently from its attribute names.
RLLIB_ALIASES = ("callbacks", "framework", "lambda", "input", "create_env_on_driver", "custom_eval_function")
OLD_STACK_ONLY = {"enable_rl_module_and_learner": False, "enable_env_runner_and_connector_v2": False}

STOP_RENAMES = {
    "episode_reward_mean": "env_runners/episode_return_mean",
    "episode_return_mean": "env_runners/episode_return_mean",
    "episode_reward_max": "env_runners/episode_return_max",
    "episode_len_mean": "env_runners/episode_len_mean",
}

SCHEDULERS = {
    "fifo": tune.schedulers.FIFOScheduler,
    "asha": tune.schedulers.ASHAScheduler,
    "hyperband": tune.schedulers.HyperBandScheduler,
    "median_stopping": tune.schedulers.MedianStoppingRule,
    "pbt": tune.schedulers.PopulationBasedTraining,
}
PBT_DISTRIBUTIONS = {"uniform": tune.uniform, "loguniform": tune.loguniform, "choice": tune.choice}
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class Experiment:
    """One validated experiment of a YAML file."""

    name: str
    run: str
    env: str
    config: dict  # RLlib config dict, renamed keys translated, `env` set, may hold grid_search
    stop: dict
    policy_layout: PolicyLayout | None  # None for single-agent (Gymnasium) envs
    checkpoint_freq: int = 0
    checkpoint_at_end: bool = False
    keep_checkpoints_num: int | None = None
    checkpoint_score_attr: str | None = None
    num_samples: int = 1
    max_failures: int = 0
    scheduler: dict | None = None
    wandb: dict | None = None
    local_dir: str | None = None
    restore: str | None = None
    evaluation_videos: int = 0  # videos recorded after each evaluation (evaluation_config.record_video)
    curriculum: dict | None = None  # {"metric": str, "stages": [{"env_config": {...}, "until": float}, ...]}
    custom_models: tuple[str, ...] = ()  # model/ files its policies use (defaults included), registered at launch
    notes: tuple[str, ...] = ()  # translations applied, shown to the user

    def build_scheduler(self):
        """The Tune scheduler object of the `scheduler` block, or None."""
        if not self.scheduler:
            return None
        kwargs = dict(self.scheduler)
        scheduler_class = SCHEDULERS[kwargs.pop("type")]
        if "hyperparam_mutations" in kwargs:
            kwargs["hyperparam_mutations"] = {
                key: _pbt_distribution(self.name, key, value) for key, value in kwargs["hyperparam_mutations"].items()
            }
        return scheduler_class(**kwargs)


def _pbt_distribution(experiment: str, key: str, value):
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in PBT_DISTRIBUTIONS:
        kind, bounds = next(iter(value.items()))
        return PBT_DISTRIBUTIONS[kind](bounds) if kind == "choice" else PBT_DISTRIBUTIONS[kind](*bounds)
    raise ConfigError(
        f"{experiment}.scheduler.hyperparam_mutations.{key} must be a list of values or one of "
        f"{{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}, {{choice: [...]}}"
    )


def read_yaml(path: str | Path) -> Any:
    """Parses a YAML file; a missing file or a syntax error is a ConfigError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (the shipped ones are in config/)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None


def load_experiments(path: str | Path, config_overrides: dict | None = None) -> list[Experiment]:
    """Reads and validates every experiment in a YAML file.

    Args:
        path: the experiment YAML file.
        config_overrides: RLlib settings deep-merged over every experiment's `config` before validation
            (train.py --config), e.g. {"num_env_runners": 4, "env_config": {"n_agents": 5}}.
    """
    document = read_yaml(path)
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"{path} must map experiment names to experiments (name: {{run: ..., env: ..., config: ...}})")
    flat_keys = [k for k in document if k in EXPERIMENT_KEYS]
    if flat_keys:
        raise ConfigError(
            f"{path}: top-level key '{flat_keys[0]}' belongs inside an experiment; nest the experiment under a name "
            f"(my-experiment: {{run: ..., env: ...}})"
        )
    # In Ray 2.60 names, so that an old name in the overrides replaces the YAML's setting instead of clashing with it.
    config_overrides = {RENAMED_CONFIG_KEYS.get(key, key): value for key, value in (config_overrides or {}).items()}
    experiments = []
    for name, body in document.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"{path}: top-level key '{name}' must be an experiment name mapping to {{run, env, stop, config, ...}}"
                f"{closest(name, EXPERIMENT_KEYS)}"
            )
        if config_overrides:
            body = dict(body, config=merge_dicts(body.get("config") or {}, config_overrides))
        try:
            experiments.append(parse_experiment(str(name), body))
        except ConfigError as error:
            raise ConfigError(f"{path}: {located(str(name), str(error))}") from None
    return experiments


def located(name: str, message: str) -> str:
    """`message` starting with the experiment's key path (`name.` + key path), as every loader error does."""
    if message.startswith(f"{name}.") or message.startswith(f"{name}:"):
        return message
    return f"{name}.{message}" if message.startswith("config.") else f"{name}: {message}"


def parse_experiment(name: str, body: dict) -> Experiment:
    for key in body:
        if key not in EXPERIMENT_KEYS:
            raise ConfigError(
                f"{name}.{key} is not an experiment key{closest(key, EXPERIMENT_KEYS)}; "
                f"known: {', '.join(EXPERIMENT_KEYS)}"
            )
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{name}.config must be a mapping of RLlib settings")
    config = copy.deepcopy(config)
    evaluation_videos = _pop_record_video(name, config)
    run = _check_run(name, body.get("run"))
    env = body.get("env", config.pop("env", None))
    env = _check_env(name, env)
    config, notes = translate_config(name, run, config)
    check_values(name, run, config)
    config["env"] = env
    config.update(OLD_STACK_ONLY)
    entry = ENVS.get(env)
    if entry and entry.create_batch:
        _sync_batched_num_envs(name, run, config, notes)
    config.setdefault("env_runner_cls", StockEnvRunner)
    if entry and entry.torch_device:
        _default_env_device(config)
    if entry and entry.own_process:
        config.setdefault("restart_failed_sub_environments", True)
    if entry and entry.absolute_paths and isinstance(config.get("env_config"), dict):
        config["env_config"] = entry.absolute_paths(config["env_config"])
    curriculum = _check_curriculum(name, body.get("curriculum"), config)
    layout, model_names = _check_env_and_models(name, run, env, config, notes)
    if curriculum:
        if entry is None:
            raise ConfigError(f"{name}.curriculum needs an env of this project ({', '.join(ENVS)}), not '{env}'")
        _check_curriculum_tasks(name, entry, config, curriculum)
    experiment = Experiment(
        name=name,
        run=run,
        env=env,
        config=config,
        stop=check_stop(name, body.get("stop") or {}),
        policy_layout=layout,
        checkpoint_freq=_non_negative_int(name, "checkpoint_freq", body.get("checkpoint_freq", 0)),
        checkpoint_at_end=bool(body.get("checkpoint_at_end", False)),
        keep_checkpoints_num=_optional_positive_int(name, "keep_checkpoints_num", body.get("keep_checkpoints_num")),
        checkpoint_score_attr=body.get("checkpoint_score_attr"),
        num_samples=_optional_positive_int(name, "num_samples", body.get("num_samples")) or 1,
        max_failures=_non_negative_int(name, "max_failures", body.get("max_failures", 0)),
        scheduler=_check_scheduler(name, body.get("scheduler")),
        wandb=_check_wandb(name, body.get("wandb")),
        local_dir=body.get("local_dir"),
        restore=body.get("restore"),
        evaluation_videos=evaluation_videos,
        curriculum=curriculum,
        custom_models=tuple(sorted(model_names)),
        notes=tuple(notes),
    )
    experiment.build_scheduler()  # catches bad distributions now, not after Ray started
    return experiment


def algorithm_class(run: str) -> type:
    """The RLlib Algorithm class of a `run` name."""
    return ALGORITHMS[run]()[0]


def _pop_record_video(name: str, config: dict) -> int:
    """Takes our `evaluation_config.record_video` (true or a number of episodes) out of the RLlib settings."""
    evaluation = config.get("evaluation_config")
    if not isinstance(evaluation, dict) or "record_video" not in evaluation:
        return 0
    value = evaluation.pop("record_video")
    episodes = int(value) if isinstance(value, (bool, int)) and value >= 0 else -1
    if episodes < 0:
        raise ConfigError(f"{name}.config.evaluation_config.record_video must be true/false or a number of episodes")
    if episodes and not config.get("evaluation_interval"):
        raise ConfigError(f"{name}.config.evaluation_config.record_video needs evaluation_interval (e.g. 10)")
    return episodes


def _check_run(name: str, run) -> str:
    if run is not None and not isinstance(run, str):
        raise ConfigError(f"{name}.run must be an RLlib algorithm name such as PPO, got {run!r}")
    if not run:
        raise ConfigError(f"{name}.run is required: the RLlib algorithm, one of {', '.join(sorted(ALGORITHMS))}")
    if run not in ALGORITHMS:
        raise ConfigError(
            f"{name}.run: unknown algorithm '{run}'{closest(run, ALGORITHMS)}; known: {', '.join(sorted(ALGORITHMS))}"
        )
    return run


def _check_env(name: str, env) -> str:
    if env is not None and not isinstance(env, str):
        raise ConfigError(f"{name}.env must be an env name such as vmas, got {env!r}")
    if not env:
        raise ConfigError(f"{name}.env is required; registered envs: {', '.join(ENVS)}")
    if env not in ENVS and env not in gymnasium.registry:
        raise ConfigError(
            f"{name}.env: unknown env '{env}'{closest(env, ENVS)}; registered envs: {', '.join(ENVS)} "
            f"(or a Gymnasium id such as CartPole-v1)"
        )
    return env


def translate_config(name: str, run: str, config: dict) -> tuple[dict, list[str]]:
    """Renames old keys, then rejects keys this Ray version does not know (with the closest known key)."""
    known = set(algorithm_class(run).get_default_config().to_dict()) | set(RLLIB_ALIASES) | {"multiagent"}
    known -= set(RENAMED_CONFIG_KEYS)
    notes = []
    translated = {}
    for key, value in config.items():
        if key in RENAMED_CONFIG_KEYS:
            new = RENAMED_CONFIG_KEYS[key]
            if new in config:
                raise ConfigError(f"{name}.config has both '{key}' and its new name '{new}'; keep '{new}'")
            notes.append(f"{name}.config.{key} is called {new} in Ray 2.60; using it as {new}")
            key = new
        elif key in REMOVED_CONFIG_KEYS:
            raise ConfigError(f"{name}.config.{key} no longer exists in Ray 2.60: {REMOVED_CONFIG_KEYS[key]}")
        elif key not in known:
            raise ConfigError(f"{name}.config.{key} is not an RLlib {run} setting in Ray 2.60{closest(key, known)}")
        translated[key] = value
    for key, value in OLD_STACK_ONLY.items():
        if translated.get(key, value) != value:
            raise ConfigError(
                f"{name}.config.{key}: this project trains on RLlib's old API stack (TorchModelV2 custom models); "
                f"remove the key"
            )
    framework = translated.get("framework", "torch")
    if framework != "torch":
        raise ConfigError(f"{name}.config.framework: only 'torch' is installed, got '{framework}'")
    if isinstance(translated.get("evaluation_config"), dict):
        evaluation, eval_notes = translate_config(f"{name}.config.evaluation_config", run, translated["evaluation_config"])
        for key in OLD_STACK_ONLY:
            evaluation.pop(key, None)
        translated["evaluation_config"] = evaluation
        notes += eval_notes
    return translated, notes


def _sync_batched_num_envs(name: str, run: str, config: dict, notes: list[str]) -> None:
    """Keeps env_config.num_envs and num_envs_per_env_runner equal for envs that step many games per call, and picks
    the batched env runner unless the experiment needs RLlib's stock sampler (`stock_sampler_reason`)."""
    env_config = config.setdefault("env_config", {})
    if not isinstance(env_config, dict):
        return
    in_env, per_runner = env_config.get("num_envs"), config.get("num_envs_per_env_runner")
    if isinstance(in_env, dict) or isinstance(per_runner, dict):
        raise ConfigError(f"{name}.config: grid_search over num_envs is not supported for env '{config['env']}'")
    for key, value in (("env_config.num_envs", in_env), ("num_envs_per_env_runner", per_runner)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name}.config.{key} must be a whole number >= 1 (games per env runner), got {value!r}")
    if in_env is not None and per_runner is not None and in_env != per_runner:
        raise ConfigError(
            f"{name}.config: env_config.num_envs ({in_env}) and num_envs_per_env_runner ({per_runner}) differ; "
            f"env '{config['env']}' simulates all of a runner's envs together, so set one of them"
        )
    count = in_env or per_runner or 1
    env_config["num_envs"] = config["num_envs_per_env_runner"] = count
    if "env_runner_cls" in config:
        return
    reason = stock_sampler_reason(run, config)
    if reason:
        notes.append(f"{name}: {reason} get RLlib's stock sampler (the batched env runner does not run them); "
                     f"sampling is slower")
    else:
        config["env_runner_cls"] = BatchedEnvRunner


def stock_sampler_reason(run: str, config: dict) -> str | None:
    """Why an experiment cannot use the batched env runner, whose batches are PPO's (GAE advantages, no next
    observations): another algorithm or `use_gae: false`, user callbacks with per-episode hooks, attention nets over
    past states (use_attention) or LSTMs fed previous actions/rewards, in any grid point; None when it can."""
    if run != "PPO":
        return f"{run} experiments"
    if config.get("use_gae") is False:
        return "use_gae: false"
    hooks = _per_episode_hooks(config["callbacks"]) if "callbacks" in config else ()
    if hooks:
        return f"user callbacks with per-episode hooks ({', '.join(hooks)})"
    for variant in config_variants(config):
        model = variant.get("model") or {}
        if model.get("use_attention"):
            return "use_attention models"
        if model.get("lstm_use_prev_action") or model.get("lstm_use_prev_reward"):
            return "LSTMs fed previous actions or rewards"
    return None


# Callback hooks only RLlib's stock sampler calls (the batched env runner calls on_sample_end; the algorithm's own
# hooks, e.g. on_train_result, run whatever samples).
PER_EPISODE_HOOKS = ("on_episode_created", "on_episode_start", "on_episode_step", "on_episode_end",
                     "on_postprocess_trajectory", "on_environment_created", "on_sub_environment_created")


def _per_episode_hooks(callbacks) -> tuple[str, ...]:
    """The per-episode hooks a `callbacks` class (or its import path) overrides; all of them when it cannot be
    imported here (train.py then names the import error)."""
    try:
        callback_class = deserialize_type(callbacks, error=True) if isinstance(callbacks, str) else callbacks
    except Exception:  # noqa: BLE001: reported where the callbacks are set up
        return PER_EPISODE_HOOKS
    if not (isinstance(callback_class, type) and issubclass(callback_class, RLlibCallback)):
        return PER_EPISODE_HOOKS
    return tuple(hook for hook in PER_EPISODE_HOOKS
                 if getattr(callback_class, hook, None) is not getattr(RLlibCallback, hook))


def _default_env_device(config: dict) -> None:
    """env_config.device defaults to "cuda" where the process that samples has a GPU: the env runners with
    num_gpus_per_env_runner > 0, or the trial's own process (num_env_runners 0) with num_gpus > 0; else "cpu"."""
    env_config = config.get("env_config")
    if not isinstance(env_config, dict) or "device" in env_config:
        return
    runners = config.get("num_env_runners", 0)
    gpus = config.get("num_gpus_per_env_runner", 0) if runners else config.get("num_gpus", 0)
    if isinstance(gpus, (int, float)) and gpus > 0 and not isinstance(runners, dict):  # a grid keeps "cpu"
        env_config["device"] = "cuda"


def config_variants(config: dict) -> list[dict]:
    """Every grid point of `config` (random search distributions are sampled once)."""
    return [variant["config"] for _, variant in generate_variants({"config": config})]


# RLlib settings whose value is a count: the smallest value that makes sense, and what is counted.
COUNTS = {"num_env_runners": (0, "env runner processes"), "num_envs_per_env_runner": (1, "games per env runner"),
          "train_batch_size": (1, "env steps per iteration"), "minibatch_size": (1, "rows per gradient step"),
          "num_epochs": (1, "passes over each batch"), "evaluation_num_env_runners": (0, "evaluation env runners"),
          "num_learners": (0, "learner processes"), "evaluation_interval": (1, "iterations between evaluations")}
FRACTIONS = ("gamma", "lambda")  # between 0 and 1
NON_NEGATIVE = ("lr", "entropy_coeff", "vf_loss_coeff", "kl_coeff", "clip_param", "vf_clip_param", "grad_clip",
                "num_gpus", "num_cpus_per_env_runner", "num_gpus_per_env_runner")
# RLlib settings that take more than their default's type: a number or a schedule [[timestep, value], ...], or "auto".
SCHEDULES = ("lr", "entropy_coeff")
AUTO = ("rollout_fragment_length", "evaluation_duration")


def check_values(name: str, run: str, config: dict) -> None:
    """Every grid point's RLlib settings have the type of RLlib's default for them (numbers, true/false, strings,
    mappings, lists) and counts and rates a sensible value: a one-line error naming the key, never a traceback in
    RLlib later. grid_search must hold a non-empty list."""
    _check_grid_searches(f"{name}.config", config)
    defaults = algorithm_class(run).get_default_config().to_dict()
    for variant in config_variants(config):
        for key, value in variant.items():
            problem = _value_problem(key, value, defaults.get(key))
            if problem:
                raise ConfigError(f"{name}.config.{key} must be {problem}, got {value!r}")


def _check_grid_searches(where: str, node) -> None:
    if isinstance(node, dict):
        if "grid_search" in node:
            values = node["grid_search"]
            if len(node) != 1 or not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: grid_search takes a non-empty list of values as the key's only entry, "
                                  f"e.g. {{grid_search: [0.001, 0.0001]}}; got {node!r}")
            for index, value in enumerate(values):
                _check_grid_searches(f"{where}.grid_search[{index}]", value)
        for key, value in node.items():
            _check_grid_searches(f"{where}.{key}", value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_grid_searches(f"{where}[{index}]", value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_problem(key: str, value, default) -> str | None:
    """What `value` of RLlib setting `key` must be instead (None when it is fine)."""
    if value is None and default is None:
        return None  # RLlib's "not set"
    if key in SCHEDULES and isinstance(value, list):
        if all(isinstance(point, list) and len(point) == 2 and all(map(_is_number, point)) for point in value):
            return None
        return "a number or a schedule [[timestep, value], ...]"
    if key in AUTO and (value == "auto" or _is_number(value) and value >= 1):
        return None
    if key in COUNTS:
        minimum, counted = COUNTS[key]
        whole = _is_number(value) and float(value).is_integer()
        return None if whole and value >= minimum else f"a whole number >= {minimum} ({counted})"
    if key in FRACTIONS:
        return None if _is_number(value) and 0 <= value <= 1 else "a number between 0 and 1"
    if key in NON_NEGATIVE:
        return None if _is_number(value) and value >= 0 else "a number >= 0"
    if default is None:
        return None  # several types are fine
    for kinds, label in ((bool, "true or false"), ((int, float), "a number"), (str, "a string"),
                         (dict, "a mapping"), ((list, tuple), "a list")):
        if isinstance(default, kinds):
            ok = _is_number(value) if label == "a number" else isinstance(value, kinds)
            return None if ok else label
    return None


def _check_env_and_models(name: str, run: str, env: str, config: dict,
                          notes: list[str]) -> tuple[PolicyLayout | None, set]:
    """Checks every grid point's models and env settings against one instance of the env (its agents and spaces);
    returns the policy layout and every custom model the experiment's policies use (the defaults chosen per policy
    by marlkit/default_models.py included), to register before training."""
    entry = ENVS.get(env)
    layout = PolicyLayout.parse(config.get("multiagent"), entry.policy_group) if entry else None
    if entry is None and "multiagent" in config:
        raise ConfigError(f"{name}.config.multiagent: env '{env}' is a single-agent Gymnasium env")
    centralized = layout is not None and layout.critic == "centralized"
    if centralized:
        _check_centralized_critic(name, run, config)
    model_names = set()
    for variant in config_variants(config):
        model = variant.get("model") or {}
        _check_model(name, model, centralized)
        if entry is None:
            model_names |= models.used_model_names(model)
            _check_with_rllib(name, run, variant, None)
            continue
        env_config = variant.get("env_config") or {}
        try:
            entry.check_config(env_config)
            probe = entry.create(entry.single_env_config(env_config))  # only its agents and spaces are read
        except ConfigError as error:
            raise ConfigError(f"{name}.config.env_config: {error}") from None
        except Exception as error:  # noqa: BLE001: the env's own check of its settings, in its words
            raise ConfigError(f"{name}.config.env_config: env '{env}' refused these settings: "
                              f"{env_error_message(error)}") from None
        try:
            multiagent = layout.rllib_multiagent(probe)
        finally:
            probe.close()
        for pid, shapes in apply_default_models(multiagent["policies"], model).items():
            note = (f"{name}: policy '{pid}' sees images of shape {', '.join(map(str, shapes))}, which RLlib's default "
                    f"CNN has no filters for; it gets model/{IMAGE_MODEL}.py (set custom_model or conv_filters in "
                    f"config.model or in its multiagent.policies.<id>.config.model to choose another)")
            if note not in notes:
                notes.append(note)
        for pid, spec in multiagent["policies"].items():
            if "model" in (spec.config or {}):
                _check_model(f"{name}.config.multiagent.policies.{pid}", {**model, **spec.config["model"]},
                             centralized)
        model_names |= models.used_model_names(model, multiagent["policies"])
        if centralized:
            _check_critic_memory(name, variant, multiagent)
        _check_with_rllib(name, run, variant, multiagent)
    return layout, model_names


def _check_with_rllib(name: str, run: str, variant: dict, multiagent: dict | None) -> None:
    """RLlib's own validation of one grid point (what the trial's algorithm would refuse when it is built, such as a
    minibatch_size larger than train_batch_size), as a one-line error before Ray starts."""
    settings = {key: value for key, value in variant.items() if key != "multiagent"}
    try:
        config = algorithm_class(run).get_default_config().update_from_dict(settings)
        if multiagent is not None:
            config.multi_agent(**multiagent)
        config.validate()
    except Exception as error:  # noqa: BLE001: RLlib's checks raise ValueError, TypeError, KeyError and others
        message = " ".join(str(error).split()).split(" To suppress all validation errors")[0]  # not a YAML setting
        raise ConfigError(f"{name}.config: RLlib refuses these settings: {type(error).__name__}: {message}") from None


def env_error_message(error: BaseException) -> str:
    """An env constructor's error in one line; a bare `assert` (VMAS scenarios) is shown as its source line."""
    message = " ".join(str(error).split())
    if not message and error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        message = f"`{frame.line}` failed ({Path(frame.filename).name}:{frame.lineno})"
    return f"{type(error).__name__}: {message}"


def _check_centralized_critic(name: str, run: str, config: dict) -> None:
    """`multiagent.critic: centralized` is PPO with GAE and a value loss (marlkit/mappo.py)."""
    if run != "PPO":
        raise ConfigError(f"{name}.config.multiagent.critic: centralized is built for PPO (MAPPO), not {run}; "
                          f"use run: PPO or remove the key")
    for key in ("use_critic", "use_gae"):
        if config.get(key) is False:
            raise ConfigError(f"{name}.config.{key}: false does not go with multiagent.critic: centralized, whose "
                              f"critic gives GAE's values; remove one of them")


def _check_critic_memory(name: str, variant: dict, multiagent: dict) -> None:
    """Refuses a centralised critic whose training columns (the joint input on every agent row, marlkit/mappo.py)
    would take more than a quarter of this machine's memory."""
    for pid, policy in multiagent["policies"].items():
        layout = policy.config.get("central_critic")
        if not layout:
            continue
        joint = joint_input_size(len(layout["agents"]), layout["width"])
        rows = int(variant.get("train_batch_size") or 4000) * len(layout["own"])
        needed = rows * (joint + 2 * len(layout["own"])) * 4
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > memory / 4:
            raise ConfigError(
                f"{name}.config.multiagent.critic: the centralised critic of policy '{pid}' reads "
                f"{len(layout['agents'])} agents x {layout['width'] + 1} inputs; its training columns for "
                f"train_batch_size {variant.get('train_batch_size')} would take {needed / 2**30:.1f} GiB, more "
                f"than a quarter of this machine's {memory / 2**30:.1f} GiB; lower train_batch_size, or use "
                f"critic: decentralized")


def _check_model(name: str, model: dict, centralized: bool = False) -> None:
    if not isinstance(model, dict):
        raise ConfigError(f"{name}.config.model must be a mapping of RLlib model settings")
    for key in model:
        if key not in MODEL_DEFAULTS:
            raise ConfigError(f"{name}.config.model.{key} is not an RLlib model setting{closest(key, MODEL_DEFAULTS)}")
    custom_config = model.get("custom_model_config") or {}
    if not isinstance(custom_config, dict):
        raise ConfigError(f"{name}.config.model.custom_model_config must be a mapping of the model's keyword "
                          f"arguments, got {custom_config!r}")
    custom_config = dict(custom_config)
    if "critic_hiddens" in custom_config:
        hiddens = custom_config.pop("critic_hiddens")
        where = f"{name}.config.model.custom_model_config.critic_hiddens"
        if not centralized:
            raise ConfigError(f"{where} sizes a centralised critic; it needs config.multiagent.critic: centralized")
        if not isinstance(hiddens, list) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                                                    for h in hiddens):
            raise ConfigError(f"{where} must be a list of layer sizes such as [256, 256], got {hiddens!r}")
    custom = model.get("custom_model")
    if custom is None:
        return
    if not isinstance(custom, str):
        raise ConfigError(f"{name}.config.model.custom_model must be a file name in model/, e.g. fcnet")
    model_class = models.load_model(custom)
    models.check_model_kwargs(custom, model_class, custom_config)


def check_stop(name: str, stop) -> dict:
    """Validates stopping criteria (metric -> number), translating old metric names."""
    if not isinstance(stop, dict):
        raise ConfigError(f"{name}.stop must map result metrics to thresholds, e.g. {{training_iteration: 100}}")
    checked = {}
    for key, value in stop.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}.stop.{key} must be a number, got {value!r}")
        checked[STOP_RENAMES.get(key, key)] = value
    return checked


def _non_negative_int(name: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}.{key} must be a whole number >= 0, got {value!r}")
    return value


def _optional_positive_int(name: str, key: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}.{key} must be a whole number >= 1, got {value!r}")
    return value


def _check_curriculum(name: str, block, config: dict) -> dict | None:
    """Validates the curriculum block and starts the env at its first stage (config.env_config updated)."""
    if block is None:
        return None
    where = f"{name}.curriculum"
    if not isinstance(block, dict) or not isinstance(block.get("stages"), list) or len(block["stages"]) < 2:
        raise ConfigError(f"{where} must be a mapping with at least two stages: "
                          f"{{stages: [{{env_config: {{...}}, until: 1.0}}, {{env_config: {{...}}}}]}}")
    for key in block:
        if key not in ("metric", "stages"):
            raise ConfigError(f"{where}.{key} is not a curriculum key{closest(key, ['metric', 'stages'])}; known: metric, stages")
    stages = []
    for index, stage in enumerate(block["stages"]):
        last = index == len(block["stages"]) - 1
        if not isinstance(stage, dict) or not isinstance(stage.get("env_config"), dict) or set(stage) - {"env_config", "until"}:
            raise ConfigError(f"{where}.stages[{index}] must be {{env_config: {{...}}{'' if last else ', until: <number>'}}}")
        until = stage.get("until")
        if not last and (isinstance(until, bool) or not isinstance(until, (int, float))):
            raise ConfigError(f"{where}.stages[{index}].until must be the metric value that ends the stage, got {until!r}")
        if last and until is not None:
            raise ConfigError(f"{where}.stages[{index}] is the last stage; it has no 'until'")
        grid = _grid_search_path(stage["env_config"])
        if grid is not None:
            raise ConfigError(f"{where}.stages[{index}].env_config.{grid}: a stage sets fixed values; grid_search "
                              f"belongs in config.env_config (each trial then runs the whole curriculum)")
        stages.append({"env_config": dict(stage["env_config"]), **({} if last else {"until": float(until)})})
    env_config = config.setdefault("env_config", {})
    if not isinstance(env_config, dict):
        raise ConfigError(f"{name}.config.env_config must be a mapping to use a curriculum")
    env_config.update(stages[0]["env_config"])
    return {"metric": str(block.get("metric", "env_runners/episode_return_mean")), "stages": stages}


def _grid_search_path(node, path: str = "") -> str | None:
    """The key path of the first grid_search inside `node`, or None."""
    if isinstance(node, dict):
        if "grid_search" in node:
            return path or "grid_search"
        items = node.items()
    elif isinstance(node, list):
        items = ((f"[{index}]", value) for index, value in enumerate(node))
    else:
        return None
    for key, value in items:
        found = _grid_search_path(value, f"{path}{key}" if str(key).startswith("[") or not path else f"{path}.{key}")
        if found is not None:
            return found
    return None


def _check_curriculum_tasks(name: str, entry, config: dict, curriculum: dict) -> None:
    """Every stage's env_config must be settable on a running env (its set_task)."""
    probe = entry.create(entry.single_env_config(config_variants(config)[0].get("env_config") or {}))
    try:
        if not hasattr(probe, "set_task"):
            raise ConfigError(f"{name}.curriculum: env '{config['env']}' has no task parameters that change while it "
                              f"runs (no set_task)")
        for index, stage in enumerate(curriculum["stages"]):
            try:
                probe.set_task(stage["env_config"])
            except ValueError as error:
                raise ConfigError(f"{name}.curriculum.stages[{index}].env_config: {error}") from None
    finally:
        probe.close()


def _check_scheduler(name: str, block) -> dict | None:
    if block is None:
        return None
    if not isinstance(block, dict) or "type" not in block:
        raise ConfigError(f"{name}.scheduler needs `type`: one of {', '.join(SCHEDULERS)}")
    kind = block["type"]
    if kind not in SCHEDULERS:
        raise ConfigError(f"{name}.scheduler.type: unknown scheduler '{kind}'{closest(kind, SCHEDULERS)}; known: {', '.join(SCHEDULERS)}")
    accepted = [p for p in inspect.signature(SCHEDULERS[kind].__init__).parameters if p != "self"]
    for key in block:
        if key != "type" and key not in accepted:
            raise ConfigError(f"{name}.scheduler.{key} is not a {kind} setting{closest(key, accepted)}; it takes: {', '.join(accepted)}")
    if kind != "fifo" and not (block.get("metric") and block.get("mode") in ("min", "max")):
        raise ConfigError(f"{name}.scheduler: {kind} needs `metric` (e.g. env_runners/episode_return_mean) and `mode` (max or min)")
    return dict(block)


def _check_wandb(name: str, block) -> dict | None:
    if block is None or block is False:
        return None
    if block is True:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{name}.wandb must be a mapping (project, mode, group, tags, ...) or true")
    mode = block.get("mode", "online")
    if mode not in WANDB_MODES:
        raise ConfigError(f"{name}.wandb.mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
    return dict(block)
