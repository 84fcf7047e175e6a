"""The optional blocks of an experiment that are more than a value: `curriculum`, `scheduler` (Tune's trial
schedulers, PBT's mutations) and `wandb`; each checked at load time with one-line errors naming the key."""

from __future__ import annotations

import inspect

from ray import tune

from envs.batched import BatchedEnv
from envs.errors import ConfigError, closest
from marlkit.rllib_settings import config_variants

SCHEDULERS = {
    "fifo": tune.schedulers.FIFOScheduler,
    "asha": tune.schedulers.ASHAScheduler,
    "hyperband": tune.schedulers.HyperBandScheduler,
    "median_stopping": tune.schedulers.MedianStoppingRule,
    "pbt": tune.schedulers.PopulationBasedTraining,
}
PBT_DISTRIBUTIONS = {"uniform": tune.uniform, "loguniform": tune.loguniform, "choice": tune.choice}
WANDB_MODES = ("online", "offline", "disabled")


def build_scheduler(name: str, block: dict | None):
    """The Tune scheduler object of experiment `name`'s (checked) `scheduler` block, or None."""
    if not block:
        return None
    kwargs = dict(block)
    scheduler_class = SCHEDULERS[kwargs.pop("type")]
    if "hyperparam_mutations" in kwargs:
        kwargs["hyperparam_mutations"] = {
            key: _pbt_distribution(name, key, value) for key, value in kwargs["hyperparam_mutations"].items()
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


def check_curriculum(name: str, block, config: dict) -> dict | None:
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
        grid = grid_search_path(stage["env_config"])
        if grid is not None:
            raise ConfigError(f"{where}.stages[{index}].env_config.{grid}: a stage sets fixed values; grid_search "
                              f"belongs in config.env_config (each trial then runs the whole curriculum)")
        stages.append({"env_config": dict(stage["env_config"]), **({} if last else {"until": float(until)})})
    env_config = config.setdefault("env_config", {})
    if not isinstance(env_config, dict):
        raise ConfigError(f"{name}.config.env_config must be a mapping to use a curriculum")
    env_config.update(stages[0]["env_config"])
    return {"metric": str(block.get("metric", "env_runners/episode_return_mean")), "stages": stages}


def grid_search_path(node, path: str = "") -> str | None:
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
        found = grid_search_path(value, f"{path}{key}" if str(key).startswith("[") or not path else f"{path}.{key}")
        if found is not None:
            return found
    return None


def check_curriculum_tasks(name: str, entry, config: dict, curriculum: dict) -> None:
    """Every stage's env_config must be settable on a running env (its set_task)."""
    probe = entry.make(entry.single_env_config(config_variants(config)[0].get("env_config") or {}))
    try:
        env = getattr(probe, "batch", probe)  # a batched env behind RLlib's adapter
        if getattr(type(env), "set_task", BatchedEnv.set_task) is BatchedEnv.set_task:
            raise ConfigError(f"{name}.curriculum: env '{config['env']}' has no task parameters that change while it "
                              f"runs (no set_task)")
        for index, stage in enumerate(curriculum["stages"]):
            try:
                probe.set_task(stage["env_config"])
            except ValueError as error:
                raise ConfigError(f"{name}.curriculum.stages[{index}].env_config: {error}") from None
    finally:
        probe.close()


def check_scheduler(name: str, block) -> dict | None:
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


def check_wandb(name: str, block) -> dict | None:
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
