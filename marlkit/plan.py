"""What an experiment's trials run with beyond what its file says, decided from the validated experiment:

- the sampler: the batched env runner (marlkit/batched_runner.py) for envs that step many games per call, unless the
  experiment needs RLlib's stock sampler (`stock_sampler_reason`, said in a note); RLlib's stock sampler otherwise;
- the env's torch device (`env_config.device`): "cuda" where the sampling process has a GPU, for envs that simulate
  on torch (else the env's default, the CPU);
- `restart_failed_sub_environments` on for envs that drive a process of their own (a game that may crash);
- the policies of each trial (`multiagent`), built when Tune resolves the trial's env_config (a grid over n_agents
  changes agent ids and spaces), each with the default model its observations need (marlkit/default_models.py: a
  note says which); a centralised critic too large for this machine's memory is refused here, before Ray starts.

A setting the experiment gives itself always wins. `planned_config` is what `marlkit.launch` hands Tune.

Example:
    >>> from marlkit.spec import load_experiments
    >>> (experiment,) = load_experiments("config/vmas-navigation-ppo.yaml")
    >>> make_plan(experiment).settings["env_runner_cls"].__name__
    'BatchedEnvRunner'
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ray import tune
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.serialization import deserialize_type
from ray.tune.utils import merge_dicts

from envs import env_entry
from envs.errors import ConfigError
from marlkit import models
from marlkit.algorithms import BATCHED_SAMPLING
from marlkit.batched_runner import BatchedEnvRunner
from marlkit.default_models import apply_default_models
from marlkit.mappo import check_critic_memory
from marlkit.rllib_settings import config_variants
from marlkit.spec import Experiment
from marlkit.stock_runner import StockEnvRunner


@dataclass(frozen=True)
class Plan:
    settings: dict  # RLlib settings deep-merged over the experiment's config
    notes: tuple[str, ...]  # what the user is told at start-up
    models: tuple[str, ...] = ()  # model/ files chosen as default models, registered at launch


def make_plan(experiment: Experiment) -> Plan:
    config, entry = experiment.config, env_entry(experiment.env)
    settings, notes = {}, []
    if "env_runner_cls" not in config:
        reason = stock_sampler_reason(experiment.run, config) if entry and entry.create_batch else "not batched"
        settings["env_runner_cls"] = StockEnvRunner if reason else BatchedEnvRunner
        team_key = experiment.policy_layout.team_key if experiment.policy_layout is not None else None
        if reason and team_key:
            raise ConfigError(f"{experiment.name}.config.multiagent.{team_key} trains on whole game steps, which only "
                              f"the batched env runner records, and {_stock_sampler_cause(experiment, reason)}; "
                              f"remove what needs it, or multiagent.{team_key}")
        if reason and entry and entry.create_batch:
            notes.append(f"{experiment.name}: {reason} get RLlib's stock sampler (the batched env runner does not run "
                         f"them); sampling is slower")
    env_config = config.get("env_config")
    if entry and entry.torch_device and isinstance(env_config, dict) and "device" not in env_config \
            and _samples_on_a_gpu(config):
        settings["env_config"] = {"device": "cuda"}
    if entry and entry.own_process and "restart_failed_sub_environments" not in config:
        settings["restart_failed_sub_environments"] = True
    chosen = set()
    if experiment.policy_layout is not None:
        settings["multiagent"] = tune.sample_from(TrialPolicies(experiment))
        chosen = _check_policies(experiment, notes)
    return Plan(settings, tuple(notes), tuple(sorted(chosen)))


def planned_config(experiment: Experiment) -> dict:
    """The experiment's RLlib config with the plan's settings merged in (a new dict)."""
    return merge_dicts(experiment.config, make_plan(experiment).settings)


class TrialPolicies:
    """Tune `sample_from` hook: the trial's `multiagent` dict, for the agents and spaces of one instance of the env
    made with the trial's resolved env_config, each policy with its default model where it needs one."""

    def __init__(self, experiment: Experiment):
        self.entry = env_entry(experiment.env)
        self.layout = experiment.policy_layout

    def __call__(self, spec) -> dict:
        config = spec["config"] if "config" in spec else spec  # Ray 2.60 passes {"config": ...}
        env = self.entry.make(self.entry.single_env_config(config.get("env_config") or {}))
        runner = config.get("env_runner_cls")
        try:
            multiagent = self.layout.rllib_multiagent(
                env, env_state=isinstance(runner, type) and issubclass(runner, BatchedEnvRunner))
        finally:
            env.close()
        apply_default_models(multiagent["policies"], config.get("model") or {})
        return multiagent


def _check_policies(experiment: Experiment, notes: list[str]) -> set[str]:
    """The default models of every grid point's policies (from the loader's env probe), each said in a note and its
    keyword arguments checked, and a centralised critic's memory; returns the model/ files chosen."""
    chosen = set()
    for variant, multiagent in zip(config_variants(experiment.config), experiment.grid_policies):
        model = variant.get("model") or {}
        policies = {pid: copy.copy(spec) for pid, spec in multiagent["policies"].items()}
        for pid, (name, why) in apply_default_models(policies, model).items():
            note = (f"{experiment.name}: policy '{pid}' {why}; it gets model/{name}.py (set custom_model or "
                    f"conv_filters in config.model or in its multiagent.policies.<id>.config.model to choose another)")
            if note not in notes:
                notes.append(note)
            kwargs = {**model, **policies[pid].config["model"]}.get("custom_model_config") or {}
            models.check_model_kwargs(name, models.load_model(name),
                                      {key: value for key, value in kwargs.items() if key != "critic_hiddens"})
            chosen.add(name)
        if experiment.policy_layout.critic == "centralized":
            check_critic_memory(experiment.name, variant, multiagent)
    return chosen


def stock_sampler_reason(run: str, config: dict) -> str | None:
    """Why an experiment cannot use the batched env runner, whose batches are PPO's (GAE advantages) or DQN's and
    SAC's (replayed transitions): another algorithm or PPO with `use_gae: false`, user callbacks with per-episode
    hooks, attention nets over past states (use_attention) or LSTMs fed previous actions/rewards, in any grid point;
    None when it can."""
    if run not in BATCHED_SAMPLING:
        return f"{run} experiments"
    if run == "PPO" and config.get("use_gae") is False:
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


def _stock_sampler_cause(experiment: Experiment, reason: str) -> str:
    if reason == "not batched":
        return f"env '{experiment.env}' is not a batched env (envs/batched.py)"
    return f"{reason} get RLlib's stock sampler"


def _samples_on_a_gpu(config: dict) -> bool:
    """Whether the process that samples has a GPU: the env runners with num_gpus_per_env_runner > 0, or the trial's
    own process (num_env_runners 0) with num_gpus > 0 (a grid over num_env_runners keeps the CPU)."""
    runners = config.get("num_env_runners", 0)
    gpus = config.get("num_gpus_per_env_runner", 0) if runners else config.get("num_gpus", 0)
    return isinstance(gpus, (int, float)) and gpus > 0 and not isinstance(runners, dict)
