"""Experiment YAML: the classic Tune/RLlib experiment file, validated before Ray starts.

One or more experiments per file, each under its name; the keys an experiment may hold are declared once, with what
each does, in `ExperimentKeys` below:

    my-experiment:                  # experiment name: results go to <local-dir>/my-experiment/<trial>/
      run: PPO
      env: vmas
      stop: {training_iteration: 100}
      checkpoint_freq: 10
      config:                       # RLlib settings (marlkit/rllib_settings.py); {grid_search: [...]} works anywhere
        env_config: {scenario: navigation, n_agents: 3}
        num_workers: 2              # renamed keys of older Ray versions are translated
        multiagent: {policies: shared}   # see marlkit.policies
        model: {custom_model: fcnet, custom_model_config: {hiddens: [64, 64]}}

The loader checks the keys' types (the schema), RLlib's settings, and the env and models against one instance of the
env per grid point (its agents and spaces). What a trial runs with beyond the file (its sampler, the env's device) is
decided later, by marlkit/plan.py.

Example:
    >>> from marlkit.spec import load_experiments
    >>> [e.name for e in load_experiments("config/vmas-navigation-ppo.yaml")]
    ['vmas-navigation-ppo']
"""

from __future__ import annotations

import copy
import traceback
from pathlib import Path
from typing import Annotated, Any

import gymnasium
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray.rllib.algorithms.registry import ALGORITHMS
from ray.rllib.models.catalog import MODEL_DEFAULTS
from ray.tune.utils import merge_dicts

from envs import ENVS, FLAT_ACTIONS
from envs.errors import ConfigError, closest
from marlkit import models
from marlkit.algorithms import ACTION_SPACES, action_space_problem, refusal
from marlkit.default_models import IMAGE_MODEL, apply_default_models
from marlkit.experiment_blocks import (
    build_scheduler, check_curriculum, check_curriculum_tasks, check_scheduler, check_wandb,
)
from marlkit.mappo import check_critic_memory
from marlkit.policies import PolicyLayout, ScriptedPolicy
from marlkit.rllib_settings import (
    OLD_STACK_ONLY, RENAMED_CONFIG_KEYS, check_values, check_with_rllib, config_variants, translate_config,
)

STOP_RENAMES = {
    "episode_reward_mean": "env_runners/episode_return_mean",
    "episode_return_mean": "env_runners/episode_return_mean",
    "episode_reward_max": "env_runners/episode_return_max",
    "episode_len_mean": "env_runners/episode_len_mean",
}

WholeNumber = Annotated[int, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]


def key(default, doc: str, expect: str | None = None):
    """A declared experiment key: its default, what it does, and (optionally) what a wrong value is told to be."""
    return Field(default, description=doc, json_schema_extra={"expect": expect} if expect else None)


class ExperimentKeys(BaseModel):
    """The keys of one experiment in a YAML file, with their types and defaults (strict: 1 is not true, "5" not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run: str | None = key(None, "RLlib algorithm: PPO, APPO, IMPALA, DQN, SAC, ... (required)",
                          expect="an RLlib algorithm name such as PPO")
    env: str | None = key(None, "a name from envs/__init__.py (vmas, bucket_brigade, unity) or a Gymnasium id such as "
                                "CartPole-v1 (required; config.env works too)", expect="an env name such as vmas")
    stop: dict[str, float] | None = key(None, "stopping criteria, result metric -> threshold; the first reached stops "
                                              "the trial, e.g. {training_iteration: 100, env_runners/episode_return_mean: 50}; "
                                              "old metric names (episode_reward_mean) are translated",
                                        expect="a mapping of result metrics to thresholds, e.g. {training_iteration: 100}")
    config: dict | None = key(None, "RLlib settings (marlkit/rllib_settings.py), plus multiagent (marlkit/policies.py)",
                              expect="a mapping of RLlib settings")
    checkpoint_freq: WholeNumber = key(0, "checkpoint every N training iterations (0: never)")
    checkpoint_at_end: bool = key(False, "checkpoint when the trial ends")
    keep_checkpoints_num: Count | None = key(None, "keep the newest N checkpoints (the best N with checkpoint_score_attr)")
    checkpoint_score_attr: str | None = key(None, "the result metric that ranks checkpoints for keep_checkpoints_num")
    num_samples: Count = key(1, "repeats of the whole grid (grid_search points x num_samples trials)")
    max_failures: WholeNumber = key(0, "restarts of a trial after an error, from its last checkpoint")
    scheduler: dict | None = key(None, "a Tune scheduler: {type: fifo | asha | hyperband | median_stopping | pbt, ...its "
                                       "arguments}; all but fifo need metric and mode (max or min)")
    wandb: bool | dict | None = key(None, "Weights & Biases logging: true, or {project, mode: online | offline | "
                                          "disabled, group, tags, ...}",
                                    expect="a mapping (project, mode, group, tags, ...) or true")
    local_dir: str | None = key(None, "results folder (train.py --local-dir overrides it; default ./results)")
    restore: str | None = key(None, "a checkpoint folder every trial starts from (train.py --restore overrides it)")
    curriculum: dict | None = key(None, "env_config stages that follow one another as a metric improves: {metric: "
                                        "env_runners/episode_return_mean, stages: [{env_config: {...}, until: 2.0}, "
                                        "..., {env_config: {...}}]} (envs with set_task)")


EXPERIMENT_KEYS = tuple(ExperimentKeys.model_fields)


class Experiment(ExperimentKeys):
    """One validated experiment: its keys, defaults filled in, plus what the loader derived from them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    policy_layout: PolicyLayout | None = None  # None for single-agent (Gymnasium) envs
    evaluation_videos: int = 0  # videos recorded after each evaluation (config.evaluation_config.record_video)
    custom_models: tuple[str, ...] = ()  # model/ files its policies use (defaults included), registered at launch
    notes: tuple[str, ...] = ()  # translations applied, shown to the user

    def build_scheduler(self):
        """The Tune scheduler object of the `scheduler` block, or None."""
        return build_scheduler(self.name, self.scheduler)


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


def load_experiments(path: str | Path, config_overrides: dict | None = None,
                     overrides: dict | None = None) -> list[Experiment]:
    """Reads and validates every experiment in a YAML file.

    Args:
        path: the experiment YAML file.
        config_overrides: RLlib settings deep-merged over every experiment's `config` before validation
            (train.py --config), e.g. {"num_env_runners": 4, "env_config": {"n_agents": 5}}.
        overrides: experiment keys set over every experiment's before validation (train.py's flags); `stop` and
            `wandb` are merged over the file's, e.g. {"checkpoint_freq": 5, "stop": {"training_iteration": 8}}.
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
        body = _with_overrides(body, overrides or {})
        try:
            experiments.append(parse_experiment(str(name), body))
        except ConfigError as error:
            raise ConfigError(f"{path}: {located(str(name), str(error))}") from None
    return experiments


def _with_overrides(body: dict, overrides: dict) -> dict:
    body = dict(body)
    for name, value in overrides.items():
        merged = name in ("stop", "wandb") and isinstance(body.get(name), dict) and isinstance(value, dict)
        body[name] = {**body[name], **value} if merged else value
    return body


def located(name: str, message: str) -> str:
    """`message` starting with the experiment's key path (`name.` + key path), as every loader error does."""
    if message.startswith(f"{name}.") or message.startswith(f"{name}:"):
        return message
    return f"{name}.{message}" if message.startswith("config.") else f"{name}: {message}"


def check_keys(name: str, body: dict) -> ExperimentKeys:
    """The experiment's keys checked against `ExperimentKeys`; the first problem as a one-line ConfigError."""
    try:
        return ExperimentKeys.model_validate(body)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        field = str(problem["loc"][0])
        if problem["type"] == "extra_forbidden":
            raise ConfigError(f"{name}.{field} is not an experiment key{closest(field, EXPERIMENT_KEYS)}; "
                              f"known: {', '.join(EXPERIMENT_KEYS)}") from None
        given = body.get(field)
        # Past the key, a location names an entry of the given mapping (stop.<metric>), or else the member of a
        # union type pydantic tried (wandb.bool), which the user never wrote.
        loc = [part for part in problem["loc"][1:] if isinstance(given, dict) and part in given]
        where = ".".join(str(part) for part in [field, *loc])
        declared = ExperimentKeys.model_fields[field]
        expect = (declared.json_schema_extra or {}).get("expect") if not loc else None
        bound = next((m.ge for m in declared.metadata if hasattr(m, "ge")), None)
        expect = expect or {"bool_type": "true or false", "float_type": "a number", "string_type": "a string",
                            "dict_type": "a mapping"}.get(problem["type"]) or f"a whole number >= {bound}"
        raise ConfigError(f"{name}.{where} must be {expect}, got {problem['input']!r}") from None


def parse_experiment(name: str, body: dict) -> Experiment:
    keys = check_keys(name, body)
    config = copy.deepcopy(keys.config or {})
    evaluation_videos = _pop_record_video(name, config)
    run = _check_run(name, keys.run)
    env = _check_env(name, keys.env or config.pop("env", None))
    config, notes = translate_config(name, run, config)
    check_values(name, run, config)
    config["env"] = env
    config.update(OLD_STACK_ONLY)
    entry = ENVS.get(env)
    if entry and entry.create_batch:
        _sync_batched_num_envs(name, config)
    if entry and entry.absolute_paths and isinstance(config.get("env_config"), dict):
        config["env_config"] = entry.absolute_paths(config["env_config"])
    curriculum = check_curriculum(name, keys.curriculum, config)
    layout, model_names = _check_env_and_models(name, run, env, config, notes)
    if curriculum:
        if entry is None:
            raise ConfigError(f"{name}.curriculum needs an env of this project ({', '.join(ENVS)}), not '{env}'")
        check_curriculum_tasks(name, entry, config, curriculum)
    experiment = Experiment.model_construct(**{
        **dict(keys),
        "name": name,
        "run": run,
        "env": env,
        "config": config,
        "stop": {STOP_RENAMES.get(metric, metric): value for metric, value in (keys.stop or {}).items()},
        "scheduler": check_scheduler(name, keys.scheduler),
        "wandb": check_wandb(name, keys.wandb),
        "curriculum": curriculum,
        "policy_layout": layout,
        "evaluation_videos": evaluation_videos,
        "custom_models": tuple(sorted(model_names)),
        "notes": tuple(notes),
    })
    experiment.build_scheduler()  # catches bad distributions now, not after Ray started
    return experiment


def _sync_batched_num_envs(name: str, config: dict) -> None:
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


def _check_run(name: str, run: str | None) -> str:
    if not run:
        raise ConfigError(f"{name}.run is required: the RLlib algorithm, one of {', '.join(sorted(ALGORITHMS))}")
    if run not in ALGORITHMS:
        raise ConfigError(
            f"{name}.run: unknown algorithm '{run}'{closest(run, ALGORITHMS)}; known: {', '.join(sorted(ALGORITHMS))}"
        )
    refused = refusal(name, run)
    if refused:
        raise ConfigError(refused)
    return run


def _check_env(name: str, env) -> str:
    """The experiment's env, from its `env` key or config.env (which the schema does not type)."""
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
            multiagent = layout.rllib_multiagent(probe)
        finally:
            probe.close()
        _check_action_spaces(name, run, multiagent["policies"])
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
            check_critic_memory(name, variant, multiagent)
        check_with_rllib(name, run, variant, multiagent)
    return layout, model_names


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
    """`multiagent.critic: centralized` is PPO with GAE and a value loss (marlkit/mappo.py)."""
    if run != "PPO":
        raise ConfigError(f"{name}.config.multiagent.critic: centralized is built for PPO (MAPPO), not {run}; "
                          f"use run: PPO or remove the key")
    for key in ("use_critic", "use_gae"):
        if config.get(key) is False:
            raise ConfigError(f"{name}.config.{key}: false does not go with multiagent.critic: centralized, whose "
                              f"critic gives GAE's values; remove one of them")


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
