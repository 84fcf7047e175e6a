"""RLlib's settings in an experiment's `config`: classic key names translated to Ray 2.60's, every value checked
against the type of RLlib's own default for it, and RLlib's own validation of each grid point, all before Ray starts.

Example:
    >>> translate_config("exp", "PPO", {"num_workers": 2, "lr": 0.001})
    ({'num_env_runners': 2, 'lr': 0.001}, ['exp.config.num_workers is called num_env_runners in Ray 2.60; using it as num_env_runners'])
"""

from __future__ import annotations

from ray.tune.search.variant_generator import generate_variants

from envs.errors import ConfigError, closest
from marlkit.algorithms import algorithm_class

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
    "learning_starts": "num_steps_sampled_before_learning_starts",
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

# Classic top-level replay keys -> their place in `replay_buffer_config`, where Ray 2.60's old stack reads them.
REPLAY_KEYS = {"buffer_size": "capacity", "prioritized_replay_alpha": "prioritized_replay_alpha",
               "prioritized_replay_beta": "prioritized_replay_beta", "prioritized_replay_eps": "prioritized_replay_eps",
               "worker_side_prioritization": "worker_side_prioritization"}
PRIORITIZED, UNIFORM = "MultiAgentPrioritizedReplayBuffer", "MultiAgentReplayBuffer"
# RLlib's default for a key it deprecated; such keys are left out with a note, except the few RLlib 2.60 still reads,
# which take the type given here.
PLACEHOLDER = -1
LIVE_PLACEHOLDERS = {"simple_optimizer": False, "use_critic": True}


def translate_config(name: str, run: str, config: dict, overrides: bool = False) -> tuple[dict, list[str]]:
    """Renames old keys, then rejects keys this Ray version does not know (with the closest known key); moves
    classic replay keys into `replay_buffer_config` and gives replay algorithms a buffer of the old stack; leaves out
    deprecated keys RLlib ignores; defaults `num_gpus` to 0 for every algorithm. With `overrides` (an
    evaluation_config, rollout.py's --config), only what `config` itself says is translated: nothing is defaulted."""
    defaults = algorithm_class(run).get_default_config().to_dict()
    known = set(defaults) | set(RLLIB_ALIASES) | {"multiagent"}
    known -= set(RENAMED_CONFIG_KEYS)
    notes = []
    translated = {}
    if not overrides:
        config = _old_stack_replay(name, run, config, defaults.get("replay_buffer_config"), notes)
    for key, value in config.items():
        if defaults.get(key) == PLACEHOLDER and key not in LIVE_PLACEHOLDERS and key not in RENAMED_CONFIG_KEYS:
            notes.append(f"{name}.config.{key} is deprecated in Ray 2.60, which ignores it; leaving it out")
            continue
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
    if defaults.get("num_gpus", 0) and "num_gpus" not in translated and not overrides:
        translated["num_gpus"] = 0
        notes.append(f"{name}.config.num_gpus: RLlib's default for {run} is {defaults['num_gpus']}; this project's "
                     f"is 0 for every algorithm (set num_gpus to train on a GPU)")
    framework = translated.get("framework", "torch")
    if framework != "torch":
        raise ConfigError(f"{name}.config.framework: only 'torch' is installed, got '{framework}'")
    if isinstance(translated.get("evaluation_config"), dict):
        evaluation, eval_notes = translate_config(f"{name}.config.evaluation_config", run,
                                                 translated["evaluation_config"], overrides=True)
        for key in OLD_STACK_ONLY:
            evaluation.pop(key, None)
        translated["evaluation_config"] = evaluation
        notes += eval_notes
    return translated, notes


def _old_stack_replay(name: str, run: str, config: dict, default_buffer, notes: list[str]) -> dict:
    """`config` with the classic replay keys moved into `replay_buffer_config` and, for an algorithm whose default
    buffer is one of the new API stack's (DQN, SAC), the old stack's prioritized multi-agent buffer with the same
    capacity and priorities (a new dict)."""
    classic = [key for key in (*REPLAY_KEYS, "prioritized_replay") if key in config]
    if not isinstance(default_buffer, dict):
        if classic:
            raise ConfigError(f"{name}.config.{classic[0]} is a replay setting, and {run} replays no experience")
        return config
    config = dict(config)
    buffer = config.get("replay_buffer_config", {})
    if not isinstance(buffer, dict):
        return config  # check_values names the type it must have
    buffer = dict(buffer)
    for key in classic:
        value = config.pop(key)
        if key == "prioritized_replay":
            buffer["type"] = PRIORITIZED if value else UNIFORM
            notes.append(f"{name}.config.prioritized_replay is replay_buffer_config.type in Ray 2.60; using "
                         f"type: {buffer['type']}")
        else:
            buffer[REPLAY_KEYS[key]] = value
            notes.append(f"{name}.config.{key} is replay_buffer_config.{REPLAY_KEYS[key]} in Ray 2.60; using it there")
    buffer_type = buffer.get("type", default_buffer.get("type"))
    if isinstance(buffer_type, str) and "Episode" in buffer_type:
        if "type" in buffer:
            raise ConfigError(f"{name}.config.replay_buffer_config.type: {buffer_type} is a buffer of RLlib's new API "
                              f"stack; this project trains on the old one: use {PRIORITIZED} or {UNIFORM}")
        buffer = {"type": PRIORITIZED, "capacity": default_buffer.get("capacity", 50_000),
                  "prioritized_replay_alpha": default_buffer.get("alpha", 0.6),
                  "prioritized_replay_beta": default_buffer.get("beta", 0.4), "prioritized_replay_eps": 1e-6, **buffer}
    config["replay_buffer_config"] = buffer
    return config


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
    defaults = {**algorithm_class(run).get_default_config().to_dict(), **LIVE_PLACEHOLDERS}
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


def check_with_rllib(name: str, run: str, variant: dict, multiagent: dict | None) -> None:
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
