"""What is checked before anything trains, once Ray runs where the check needs the cluster: that the cluster can
place a trial (CPUs, GPUs, custom resources), that `--restore` names a checkpoint the experiment can load, that
`--resume` finds a Tune experiment to continue, and that output folders can be written. Each problem is a
`ConfigError` (one line, exit code 2)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ray import tune

from envs.errors import ConfigError
from marlkit.checkpoints import is_checkpoint, load_algorithm_state, trial_checkpoints
from marlkit.team import TEAM
from marlkit.rllib_settings import config_variants
from marlkit.spec import Experiment


def trial_demand(variant: dict, local_mode: bool) -> dict[str, tuple[float, str, str]]:
    """What one trial of a resolved config asks of the cluster: {resource: (amount, the keys that set it, what to
    change)}. The learner of the old API stack is the main process (`num_gpus`, IMPALA's and APPO's too); env runners
    add theirs each (none in --local-mode, where they run in the driver)."""
    runners = 0 if local_mode else variant.get("num_env_runners", 0) or 0
    demand = {
        "CPU": ((variant.get("num_cpus_for_main_process", 1) or 0) + runners * (variant.get("num_cpus_per_env_runner", 1) or 0),
                "1 + num_env_runners x num_cpus_per_env_runner", "lower num_env_runners or add --ray-num-cpus"),
        "GPU": ((variant.get("num_gpus", 0) or 0) + runners * (variant.get("num_gpus_per_env_runner", 0) or 0),
                "num_gpus, num_gpus_per_env_runner", "set num_gpus: 0 or run where there is a GPU"),
    }
    for key, count in (("custom_resources_for_main_process", 1), ("custom_resources_per_env_runner", runners)):
        for name, amount in (variant.get(key) or {}).items():
            total, keys, remedy = demand.get(name, (0, "", "change them or start Ray with it (ray start --resources)"))
            demand[name] = (total + count * amount, f"{keys}, {key}" if keys else key, remedy)
    return demand


def check_resources(experiment: Experiment, resources: dict, local_mode: bool) -> None:
    """Fails fast where a trial could never be placed (Tune would otherwise keep it PENDING forever, saying only that
    no node type can fulfil the request)."""
    for variant in config_variants(experiment.config):
        for name, (amount, keys, remedy) in trial_demand(variant, local_mode).items():
            if amount > resources.get(name, 0):
                unit = {"CPU": "CPUs", "GPU": "GPU(s)"}.get(name, f"of the custom resource '{name}'")
                raise ConfigError(f"{experiment.name}: a trial needs {amount:g} {unit} ({keys}) but the Ray cluster "
                                  f"has {resources.get(name, 0):g}; {remedy}")


def check_checkpoint(path: str, experiment: Experiment | None = None) -> str:
    """Absolute path of an RLlib checkpoint folder, or ConfigError; with `experiment`, also that the checkpoint's
    critics (centralised or per agent, marlkit/mappo.py) and mixer (marlkit/mixers.py) are the experiment's, whose
    weights it must load."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--restore {path}: no such folder; pass a checkpoint_* folder of a trial")
    if not is_checkpoint(folder):  # asked before RLlib's reader, which logs a warning of its own first
        raise ConfigError(f"--restore {path} is not an RLlib checkpoint (no algorithm_state file); pass a checkpoint_* folder")
    states = load_algorithm_state(folder).get("worker", {}).get("policy_states", {})
    layout = experiment.policy_layout if experiment else None
    if layout is not None:
        teams = [(state.get("policy_spec") or {}).get("config", {}).get(TEAM) or {} for state in states.values()]
        trained_with = next((team["mixer"] for team in teams if team.get("mixer")), None)
        if trained_with != layout.mixer:
            trained = f"a {trained_with} mixer" if trained_with else "no mixer"
            wanted = (f"{experiment.name}.config.multiagent.mixer is {layout.mixer}" if layout.mixer
                      else f"{experiment.name} has no multiagent.mixer")
            raise ConfigError(f"--restore {path}: its policies were trained with {trained}, but {wanted}; restore it "
                              f"into an experiment with the same mixer, or train from scratch")
        centralized = any(team.get("critic") == "centralized" for team in teams) or any(
            key.startswith("central_critic.") for state in states.values() for key in (state.get("weights") or {}))
        if centralized != (layout.critic == "centralized"):
            trained = "a centralised critic" if centralized else "per-agent critics (decentralized)"
            raise ConfigError(
                f"--restore {path}: its policies were trained with {trained}, but {experiment.name}.config.multiagent."
                f"critic is {layout.critic}; restore it into an experiment with the same critic, or train from scratch")
    return str(folder)


def check_writable(folder: str | Path) -> Path:
    folder = Path(folder).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"--local-dir {folder} cannot be written ({error.strerror}); choose another folder") from None
    return folder


def check_resumable(experiment: Experiment, storage: Path) -> None:
    experiment_dir = storage / experiment.name
    if not tune.Tuner.can_restore(str(experiment_dir)):
        raise ConfigError(f"--resume: {experiment_dir} holds no Tune experiment to continue; run without --resume")
    broken = truncated_experiment_state(experiment_dir)
    if broken:
        # Tune would log the error and start every trial over from iteration 1.
        raise ConfigError(f"--resume: Tune's experiment state {broken} is truncated (written while the disk was "
                          f"full?); instead {restart_advice(experiment_dir)}")


def truncated_experiment_state(experiment_dir: Path) -> Path | None:
    """The newest `experiment_state-*.json`, which Tune resumes from, when it does not parse (Tune copies it into
    the results folder without a temporary file)."""
    state = max(experiment_dir.glob("experiment_state-*.json"), default=None)
    if state is None:
        return None
    try:
        json.loads(state.read_text())
    except ValueError:
        return state
    return None


def restart_advice(experiment_dir: Path) -> str:
    kept = newest_checkpoints(experiment_dir)
    return f"continue from a checkpoint with --restore {kept[0]}" if kept else "start over without --resume"


def newest_checkpoints(experiment_dir: Path) -> list[Path]:
    """The newest checkpoint of each trial of the experiment that has one."""
    return [checkpoints[-1] for trial in sorted(experiment_dir.iterdir())
            if trial.is_dir() and (checkpoints := trial_checkpoints(trial))]
