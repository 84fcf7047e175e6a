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
env per grid point (its agents and spaces). What a trial runs with beyond the file (its sampler, the env's device,
default models) is decided later, by marlkit/plan.py.

Example:
    >>> from marlkit.spec import load_experiments
    >>> [e.name for e in load_experiments("config/vmas-navigation-ppo.yaml")]
    ['vmas-navigation-ppo']
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

import gymnasium
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray.rllib.algorithms.registry import ALGORITHMS
from ray.tune.utils import merge_dicts

from envs import ENVS, env_entry
from envs.errors import ConfigError, closest
from marlkit.algorithms import refusal
from marlkit.env_checks import check_env_and_models, sync_batched_num_envs
from marlkit.experiment_blocks import (
    build_scheduler, check_curriculum, check_curriculum_tasks, check_scheduler, check_wandb,
)
from marlkit.policies import PolicyLayout
from marlkit.rllib_settings import OLD_STACK_ONLY, RENAMED_CONFIG_KEYS, check_values, translate_config

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
    custom_models: tuple[str, ...] = ()  # model/ files the experiment names, registered at launch
    grid_policies: tuple[dict, ...] = ()  # per grid point: RLlib's `multiagent` dict for the env's agents and spaces
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
    entry = env_entry(env)
    if entry and entry.create_batch:
        sync_batched_num_envs(name, config)
    if entry and entry.absolute_paths and isinstance(config.get("env_config"), dict):
        config["env_config"] = entry.absolute_paths(config["env_config"])
    curriculum = check_curriculum(name, keys.curriculum, config)
    layout, model_names, grid_policies = check_env_and_models(name, run, env, entry, config, notes)
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
        "grid_policies": grid_policies,
        "notes": tuple(notes),
    })
    experiment.build_scheduler()  # catches bad distributions now, not after Ray started
    return experiment


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
    if env.endswith(".py"):
        env = str(Path(env).resolve())  # trials run in their own folder; rollouts from anywhere
    try:
        known = env_entry(env) is not None or env in gymnasium.registry
    except ConfigError as error:
        raise ConfigError(f"{name}.{error}") from None
    if not known:
        raise ConfigError(
            f"{name}.env: unknown env '{env}'{closest(env, [*ENVS, *gymnasium.registry])}; registered envs: "
            f"{', '.join(ENVS)} (or a Gymnasium id such as CartPole-v1, an env's file or its class's dotted path)"
        )
    return env
