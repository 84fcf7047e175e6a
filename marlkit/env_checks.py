"""An experiment's RLlib settings checked against its env, before Ray starts: one instance of the env per grid point
gives the agents and spaces that the policies, their models and the action spaces an algorithm takes are checked
against. The loader (marlkit/spec.py) calls `check_env_and_models`; what is decided from those agents and spaces (the
default model of a policy, a centralised critic's memory) is the run-time plan's (marlkit/plan.py).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import gymnasium
from ray.rllib.models.catalog import MODEL_DEFAULTS

from envs import FLAT_ACTIONS, env_entry
from envs.checker import env_problems
from envs.games import GameCopies
from envs.errors import ConfigError, closest
from marlkit import models
from marlkit.algorithms import ACTION_SPACES, action_space_problem
from marlkit.policies import PolicyLayout, ScriptedPolicy
from marlkit.rllib_settings import check_with_rllib, config_variants


def sync_batched_num_envs(name: str, config: dict) -> None:
    """Keeps env_config.num_envs and num_envs_per_env_runner equal for envs that step many games per call (the games
    of one env runner)."""
    env_config = config.setdefault("env_config", {})
    if not isinstance(env_config, dict):
        return
    in_env, per_runner = env_config.get("num_envs"), config.get("num_envs_per_env_runner")
    if isinstance(in_env, dict) or isinstance(per_runner, dict):
        raise ConfigError(f"{name}.config: grid_search over num_envs is not supported for env '{config['env']}'")
    for setting, value in (("env_config.num_envs", in_env), ("num_envs_per_env_runner", per_runner)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name}.config.{setting} must be a whole number >= 1 (games per env runner), got {value!r}")
    if in_env is not None and per_runner is not None and in_env != per_runner:
        raise ConfigError(
            f"{name}.config: env_config.num_envs ({in_env}) and num_envs_per_env_runner ({per_runner}) differ; "
            f"env '{config['env']}' simulates all of a runner's envs together, so set one of them"
        )
    env_config["num_envs"] = config["num_envs_per_env_runner"] = in_env or per_runner or 1



def check_env_and_models(name: str, run: str, env: str, entry, config: dict,
                         notes: list[str]) -> tuple[PolicyLayout | None, set, tuple[dict, ...]]:
    """Checks every grid point's models and env settings against one instance of the env (its agents and spaces).

    Returns: the policy layout; every custom model the experiment's file names, to register before training; per
    grid point, RLlib's `multiagent` dict for the agents and spaces found (empty for a Gymnasium env). `entry` is the
    env's `EnvEntry`, None for a Gymnasium env."""
    layout = PolicyLayout.parse(config.get("multiagent"), entry.policy_group, run) if entry else None
    if entry is None and "multiagent" in config:
        raise ConfigError(f"{name}.config.multiagent: env '{env}' is a single-agent Gymnasium env")
    centralized = layout is not None and layout.critic == "centralized"
    if centralized:
        _check_centralized_critic(name, run, config)
    if layout is not None and layout.mixer:
        _check_mixer(name, run, config, layout.mixer)
    model_names, grid_policies = set(), []
    if entry is not None:
        _flatten_multi_discrete_actions(name, run, entry, config, notes)
    for variant in config_variants(config):
        model = variant.get("model") or {}
        _check_model(name, model, centralized)
        if entry is None:
            model_names |= models.used_model_names(model)
            check_with_rllib(name, run, variant, None)
            continue
        env_config = variant.get("env_config") or {}
        try:
            entry.check(env_config)
            probe = entry.make(entry.single_env_config(env_config))  # only its agents and spaces are read
        except ConfigError as error:
            raise ConfigError(f"{name}.config.env_config: {error}") from None
        except Exception as error:  # noqa: BLE001: the env's own check of its settings, in its words
            raise ConfigError(f"{name}.config.env_config: env '{env}' refused these settings: "
                              f"{env_error_message(error)}") from None
        try:
            if entry.checked_at_load and not grid_policies:
                _check_env_once(name, shown_env(env, env_config), probe.batch)
            multiagent = layout.rllib_multiagent(probe)
        finally:
            probe.close()
        _check_action_spaces(name, run, multiagent["policies"])
        for pid, spec in multiagent["policies"].items():
            if "model" in (spec.config or {}):
                _check_model(f"{name}.config.multiagent.policies.{pid}", {**model, **spec.config["model"]},
                             centralized)
        model_names |= models.used_model_names(model, multiagent["policies"])
        check_with_rllib(name, run, variant, multiagent)
        grid_policies.append(multiagent)
    return layout, model_names, tuple(grid_policies)


def _check_env_once(name: str, env: str, batch) -> None:
    """envs/checker.py on a user's env: an episode of random actions, every problem found on a line of its own."""
    problems = env_problems(batch, env)
    if problems:
        raise ConfigError(f"{name}.env: the env does not follow its API ({len(problems)} problem(s)):\n  "
                          + "\n  ".join(problems))


def shown_env(env: str, env_config: dict) -> str:
    """The env as the checker names it: `pettingzoo` with the module it runs."""
    inner = env_config.get("env") if isinstance(env_config, dict) else None
    return f"{env}: {inner}" if isinstance(inner, str) else env


def env_check_lines(experiment) -> tuple[bool, list[str]]:
    """`train.py --check-env`: (whether it passed, what to print) for the env of an experiment's first grid point,
    whatever its kind (a registry env, a user's, a gymnasium id)."""
    env_config = config_variants(experiment.config)[0].get("env_config") or {}
    entry = env_entry(experiment.env)
    if entry is None:
        batch = GameCopies(lambda: gymnasium.make(experiment.env, **env_config))
    elif entry.create_batch:
        batch = entry.batch(entry.single_env_config(env_config))
    else:
        batch = GameCopies(lambda: entry.make(entry.single_env_config(env_config)))
    try:
        problems = env_problems(batch, shown_env(experiment.env, env_config))
    finally:
        batch.close()
    if problems:
        return False, [f"{experiment.name}: {problem}" for problem in problems]
    return True, [f"{experiment.name}: env '{shown_env(experiment.env, env_config)}' passed the env check (spaces, "
                  f"reset, step, an episode's end)"]


def _flatten_multi_discrete_actions(name: str, run: str, entry, config: dict, notes: list[str]) -> None:
    """Sets env_config.flat_actions for an algorithm that cannot act in the MultiDiscrete spaces of a batched env
    (DQN, SAC), unless the experiment sets it itself."""
    env_config = config.get("env_config", {})
    if run not in ACTION_SPACES or not entry.create_batch or not isinstance(env_config, dict) \
            or FLAT_ACTIONS in env_config:
        return
    try:
        entry.check(env_config)
        probe = entry.create_batch(entry.single_env_config(config_variants(config)[0].get("env_config") or {}))
    except Exception:  # noqa: BLE001: the checks of every grid point that follow name the problem
        return
    try:
        spaces = [space for space in probe.action_spaces.values() if isinstance(space, gymnasium.spaces.MultiDiscrete)]
    finally:
        probe.close()
    if spaces:
        config["env_config"] = {**env_config, FLAT_ACTIONS: True}
        notes.append(f"{name}: {run} acts in one Discrete space, so the env's MultiDiscrete actions ({spaces[0]}) are "
                     f"offered as Discrete({int(spaces[0].nvec.prod())}), one action per combination "
                     f"(env_config.{FLAT_ACTIONS}: true)")


def _check_action_spaces(name: str, run: str, policies: dict) -> None:
    for pid, spec in policies.items():
        if spec.policy_class is ScriptedPolicy:
            continue
        problem = action_space_problem(run, spec.action_space)
        if problem:
            raise ConfigError(f"{name}: {problem} (policy '{pid}'); choose that kind of actions in config.env_config "
                              f"where the env offers it, or another algorithm (PPO, APPO and IMPALA take any)")


def env_error_message(error: BaseException) -> str:
    """An env constructor's error in one line; a bare `assert` (VMAS scenarios) is shown as its source line."""
    message = " ".join(str(error).split())
    if not message and error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        message = f"`{frame.line}` failed ({Path(frame.filename).name}:{frame.lineno})"
    return f"{type(error).__name__}: {message}"


def _check_centralized_critic(name: str, run: str, config: dict) -> None:
    """`multiagent.critic: centralized` is PPO with GAE and a value loss (MAPPO, marlkit/mappo.py) or SAC with
    centralised twin critics of feed-forward actors (MASAC, marlkit/masac.py)."""
    if run not in ("PPO", "SAC"):
        raise ConfigError(f"{name}.config.multiagent.critic: centralized is built for PPO (MAPPO) and SAC (MASAC), not "
                          f"{run}; use one of them or remove the key")
    for key in ("use_critic", "use_gae"):
        if run == "PPO" and config.get(key) is False:
            raise ConfigError(f"{name}.config.{key}: false does not go with multiagent.critic: centralized, whose "
                              f"critic gives GAE's values; remove one of them")
    if run == "SAC":
        _check_feed_forward(name, config, "the actors of MASAC", "multiagent.critic: centralized")


def _check_feed_forward(name: str, config: dict, who: str, key: str) -> None:
    """Replayed game steps (marlkit/team.py) carry no recurrent state."""
    for variant in config_variants(config):
        model = variant.get("model") or {}
        for setting in ("use_lstm", "use_attention"):
            if model.get(setting):
                raise ConfigError(f"{name}.config.model.{setting}: {who} are feed-forward networks (replayed game "
                                  f"steps carry no recurrent state); remove {setting} or {key}")


def _check_mixer(name: str, run: str, config: dict, mixer: str) -> None:
    """`multiagent.mixer` mixes DQN's Q-values of feed-forward agent networks (marlkit/mixers.py)."""
    if run != "DQN":
        raise ConfigError(f"{name}.config.multiagent.mixer: {mixer} mixes the Q-values of value-based agents "
                          f"(run: DQN), not {run}'s; use run: DQN or remove the key")
    _check_feed_forward(name, config, "the agents of a mixer", "the mixer")
    for variant in config_variants(config):
        if (variant.get("num_atoms") or 1) > 1:
            raise ConfigError(f"{name}.config.num_atoms: a mixer mixes expected Q-values, not distributions; set "
                              f"num_atoms: 1 or remove the mixer")


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
