"""The architecture benchmark suite: every (level, architecture, seed) as a Tune trial, then its evaluation.

A *level* is an experiment YAML in `config/benchmark/` named by its file name, or any one-experiment YAML given by
its path, such as `config/vmas-balance-qmix.yaml` (its algorithm is the level's: PPO, DQN with a mixer, SAC, ...;
its `checkpoint_score_attr` is the level's score); an *architecture* is a model file in `model/`. Run `i` of the
suite trains level L with `model.custom_model: <arch>` and `seed: s` until `timesteps` env steps, then plays
`eval_episodes` deterministic episodes on the level's final task (the last curriculum stage) inside the same trial.

Everything lands in the output folder, written atomically after every finished run:

    benchmark_results.json   the suite definition, and per run its status, training metrics and curve, evaluation
                             returns, speed, machine and the train.py command that reproduces its training
    marl_eval.json           environment -> task -> algorithm -> seed_<s> -> step_<i> / absolute_metrics, the input
                             format of the marl-eval / BenchMARL plotting tools
    learning_curves.png, final_returns.png, speed.png
    tune/                    the Tune experiment (trial folders with result.json, checkpoints)

Example:
    >>> from marlkit.benchmark import Suite
    >>> suite = Suite(architectures=["fcnet", "lstm"], levels=["level_1_basic"], seeds=2, timesteps=100_000)
    >>> [run.run_id for run in suite.runs()]
    ['level_1_basic-fcnet-seed0', 'level_1_basic-fcnet-seed1', 'level_1_basic-lstm-seed0', 'level_1_basic-lstm-seed1']
"""

from __future__ import annotations

import json
import shlex
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune
from ray.rllib.algorithms.callbacks import make_multi_callbacks
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.tune.utils import merge_dicts

from marlkit import models, spec
from marlkit.algorithms import algorithm_class
from marlkit.callbacks import bound_callback
from envs.errors import ConfigError, closest
from marlkit.errors import exception_line
from marlkit.benchmark_results import DEFAULT_SCORE, RESULTS_FILE, Results, training_record

LEVEL_DIR = Path(__file__).resolve().parent.parent / "config" / "benchmark"
REFERENCE = "benchmarl_mappo"  # the architecture name of BenchMARL's MAPPO runs (--with-benchmarl)


def available_levels() -> list[str]:
    return sorted(p.stem for p in LEVEL_DIR.glob("*.yaml"))


def given_by_path(level: str) -> bool:
    """Whether `--levels` named a level by its YAML's path (ending in .yaml or .yml) rather than by name."""
    return level.endswith((".yaml", ".yml"))


def level_file(level: str) -> Path:
    """A level's YAML: a path as given, else config/benchmark/<level>.yaml."""
    return Path(level) if given_by_path(level) else LEVEL_DIR / f"{level}.yaml"


def level_name(level: str) -> str:
    return Path(level).stem


@dataclass(frozen=True)
class Run:
    number: int  # 1-based, in suite order
    level: str
    arch: str
    seed: int

    @property
    def run_id(self) -> str:
        return f"{level_name(self.level)}-{self.arch}-seed{self.seed}"


@dataclass
class Suite:
    """What a suite runs; two result folders of the same Suite can be resumed and compared."""

    architectures: list[str]
    levels: list[str]
    seeds: int
    timesteps: int
    eval_episodes: int = 10
    config: dict = field(default_factory=dict)  # RLlib settings merged over every level's (--config)
    with_benchmarl: bool = False  # BenchMARL MAPPO runs (architecture REFERENCE) on the VMAS levels

    def check(self) -> None:
        """ConfigError for unknown levels or architectures, no seeds or no timesteps."""
        for level in self.levels:
            if given_by_path(level):
                if not Path(level).is_file():
                    raise ConfigError(f"--levels: {level} does not exist; pass a level name or an experiment YAML")
                if len(spec.read_yaml(level) or {}) != 1:
                    raise ConfigError(f"--levels: {level} must hold one experiment (a level)")
            elif level not in available_levels():
                raise ConfigError(f"--levels: unknown level '{level}'{closest(level, available_levels())}; "
                                  f"available: {', '.join(available_levels())}")
        for arch in self.architectures:
            if arch not in models.available_models():
                raise ConfigError(f"--architectures: unknown architecture '{arch}'"
                                  f"{closest(arch, models.available_models())}; available (files in model/): "
                                  f"{', '.join(models.available_models())}")
        if not self.levels or not self.architectures:
            raise ConfigError("--levels and --architectures each need at least one name")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if self.timesteps < 1:
            raise ConfigError(f"--timesteps must be at least 1, got {self.timesteps}")
        if self.eval_episodes < 1:
            raise ConfigError(f"--eval-episodes must be at least 1, got {self.eval_episodes}")

    def runs(self) -> list[Run]:
        combos = []
        for level in self.levels:
            archs = self.architectures + ([REFERENCE] if self.with_benchmarl and level_env(level) == "vmas" else [])
            combos += [(level, arch, seed) for arch in archs for seed in range(self.seeds)]
        return [Run(number, *combo) for number, combo in enumerate(combos, start=1)]

    def experiment(self, run: Run) -> spec.Experiment:
        """The level's experiment with this run's architecture, seed and the suite's overrides (validated)."""
        model = {} if run.arch == REFERENCE else {"model": {"custom_model": run.arch}}
        overrides = merge_dicts(self.config, {**model, "seed": run.seed})
        (experiment,) = spec.load_experiments(level_file(run.level), overrides)
        return experiment

    def train_command(self, run: Run) -> str:
        """The command that trains this run the same way (train.py; without the final evaluation)."""
        if run.arch == REFERENCE:
            return shlex.join(["python", "benchmark.py", "--levels", run.level, "--seeds", str(run.seed + 1),
                               "--timesteps", str(self.timesteps), "--with-benchmarl", "--config", json.dumps(self.config)])
        overrides = merge_dicts(self.config, {"model": {"custom_model": run.arch}})
        return shlex.join([
            "python", "train.py", "-f", _relative(level_file(run.level)), "--config", json.dumps(overrides),
            "--seed", str(run.seed), "--stop", json.dumps({"num_env_steps_sampled_lifetime": self.timesteps}),
        ])


def level_env(level: str) -> str:
    """The env of a level file (read without validating it)."""
    (body,) = spec.read_yaml(level_file(level)).values()
    return body.get("env", "")


def _relative(path: Path) -> str:
    """A path as the repository's commands write it (relative to its root where it lies inside)."""
    try:
        return str(path.resolve().relative_to(LEVEL_DIR.parent.parent))
    except ValueError:
        return str(path.resolve())


def score_of(experiment: spec.Experiment) -> str:
    """The level's score metric: its checkpoint_score_attr, else the episode return."""
    return experiment.checkpoint_score_attr or DEFAULT_SCORE


def evaluation_settings(experiment: spec.Experiment, episodes: int):
    """Deterministic episodes on the level's final task (its last curriculum stage, if any)."""
    from marlkit.rollout import RolloutSettings

    env_config = dict(experiment.config.get("env_config") or {})
    if experiment.curriculum:
        env_config.update(experiment.curriculum["stages"][-1]["env_config"])
    return RolloutSettings(env=experiment.env, env_config=env_config, episodes=episodes, explore=False, seed=1_000_000)


def episode_score(episode, score: str) -> float:
    """An evaluation episode's value of the level's score: a policy's return for per-policy scores, else the total."""
    prefix = "env_runners/policy_reward_mean/"
    if score.startswith(prefix):
        return episode.policy_returns.get(score[len(prefix):], 0.0)
    return sum(episode.agent_returns.values())


def evaluate(worker, settings, score: str) -> list[float]:
    from marlkit.rollout import run_episodes

    return [episode_score(e, score) for e in run_episodes(worker, settings, list(range(settings.episodes)))]


class FinalEvaluation(RLlibCallback):
    """After the result that reaches `timesteps`, plays the evaluation episodes on the trial's local env runner and
    adds `evaluation_returns` (one score per episode) to that result. Settings come through `bound_callback`."""

    timesteps: int = 0
    settings = None
    score: str = DEFAULT_SCORE

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        if result.get("num_env_steps_sampled_lifetime", 0) >= self.timesteps:
            result["evaluation_returns"] = evaluate(algorithm.env_runner, self.settings, self.score)


def run_config(suite: Suite, experiment: spec.Experiment) -> dict:
    """The resolved RLlib config of one run's experiment, with the final evaluation added to its callbacks."""
    from marlkit.launch import first_trial_config

    config = first_trial_config(experiment)
    evaluation = bound_callback(FinalEvaluation, timesteps=suite.timesteps, score=score_of(experiment),
                                settings=evaluation_settings(experiment, suite.eval_episodes))
    config["callbacks"] = make_multi_callbacks([config["callbacks"], evaluation])
    return config


def benchmark_trainable(algorithm_class: type, configs: dict) -> type:
    """A Tune trainable that is `algorithm_class` built from `configs[trial_config["benchmark_run"]]`.

    The Tune search space is just the run id, so trial names and params.json say which run a trial is, while each
    run keeps its level's own env, policies and resources.
    """

    class BenchmarkRun(algorithm_class):
        _configs = configs

        def __init__(self, config=None, **kwargs):
            super().__init__(config=self._configs[config["benchmark_run"]], **kwargs)

        @classmethod
        def default_resource_request(cls, config):
            run_id = config["benchmark_run"] if isinstance(config, dict) else config.get("benchmark_run")
            return super().default_resource_request(cls._configs[run_id])

    BenchmarkRun.__name__ = BenchmarkRun.__qualname__ = f"Benchmark{algorithm_class.__name__}"
    return BenchmarkRun


class RecordRuns(tune.Callback):
    """Writes each run's record into the results as soon as its trial finished or failed."""

    def __init__(self, results: Results, scores: dict):
        self.results = results
        self.scores = scores  # run id -> score metric
        self.rows: dict[str, list] = {}
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.rows[trial.trial_id] = []
        self.started[trial.trial_id] = time.monotonic()
        self.results.update(trial.config["benchmark_run"], status="running", trial_dir=trial.path)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.rows.setdefault(trial.trial_id, []).append(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, "finished", error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        # Tune writes the trial's error.txt after this call; run_suite puts the exception line in when fit() returns.
        self._record(trial, "failed", error=f"see {Path(trial.path) / 'error.txt'}")

    def _record(self, trial, status: str, error: str | None) -> None:
        run_id = trial.config["benchmark_run"]
        rows = self.rows.get(trial.trial_id) or []
        fields = training_record(rows, self.scores[run_id]) if rows else {}
        checkpoints = sorted(Path(trial.path).glob("checkpoint_*"))
        duration = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        self.results.update(run_id, status=status, error=error, trial_dir=trial.path, duration_s=round(duration, 1),
                            checkpoint=str(checkpoints[-1]) if checkpoints else None, **fields)


def run_suite(suite: Suite, output_dir: Path, max_parallel: int, force: bool, wandb: str | None = None) -> bool:
    """Trains and evaluates every unfinished run of the suite; True when all runs are finished.

    Finished runs (in the folder's benchmark_results.json) are skipped; failed and interrupted ones start over.
    """
    from marlkit.launch import PROGRESS_COLUMNS, register_components, tune_run
    from marlkit.result_logs import logger_callbacks

    runs = suite.runs()
    experiments = {run.run_id: suite.experiment(run) for run in runs}
    results = Results(output_dir, suite)
    results.load_or_start(force)
    for run in runs:
        results.document["runs"][run.run_id]["env"] = experiments[run.run_id].env
    todo = [run for run in runs if run.run_id not in results.finished()]
    print(f"benchmark: {len(runs) - len(todo)} of {len(runs)} runs finished before; {len(todo)} to run "
          f"(at most {max_parallel} at once); results in {output_dir}", flush=True)
    if not todo:
        results.save()
        return True
    register_components([experiments[run.run_id] for run in todo])
    by_algorithm: dict[str, list[Run]] = {}
    for run in todo:
        if run.arch == REFERENCE:
            continue
        by_algorithm.setdefault(experiments[run.run_id].run, []).append(run)
    attempt = len(list((output_dir / "tune").glob("attempt_*"))) + 1
    wandb_settings = {"mode": wandb} if wandb else None
    for algorithm, group in by_algorithm.items():
        configs = {run.run_id: run_config(suite, experiments[run.run_id]) for run in group}
        tuner = tune_run(
            benchmark_trainable(algorithm_class(algorithm), configs),
            {"benchmark_run": tune.grid_search([run.run_id for run in group])},
            name=f"attempt_{attempt}_{algorithm}",
            storage=output_dir / "tune",
            stop={"num_env_steps_sampled_lifetime": suite.timesteps},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            callbacks=[RecordRuns(results, {r.run_id: score_of(experiments[r.run_id]) for r in group}),
                       *logger_callbacks(wandb_settings, f"benchmark-{output_dir.name}")],
            reporter=tune.CLIReporter(metric_columns=PROGRESS_COLUMNS, parameter_columns=["benchmark_run"],
                                      max_report_frequency=30, max_column_length=40),
            tune_config=tune.TuneConfig(max_concurrent_trials=max_parallel),
        )
        for result in tuner.fit():
            if result.error is not None:  # a trial that failed before its first result has no config here: its path
                (run_id,) = [i for i, r in results.document["runs"].items() if r.get("trial_dir") == result.path]
                results.update(run_id, status="failed", error=exception_line(str(result.error)))
    for run in todo:  # a run Tune never started (interrupted suite) stays pending; a crash mid-run becomes failed
        if results.document["runs"][run.run_id]["status"] == "running":
            results.update(run.run_id, status="failed", error="interrupted before the run finished")
    for run in [run for run in todo if run.arch == REFERENCE]:
        run_reference(results, suite, run, experiments[run.run_id])
    return len(results.finished()) == len(runs)


def run_reference(results: Results, suite: Suite, run: Run, experiment: spec.Experiment) -> None:
    """One BenchMARL MAPPO run in this process (marlkit/benchmarl_reference.py), recorded like the others."""
    from marlkit import benchmarl_reference

    print(f"benchmark: {run.run_id}: BenchMARL MAPPO, {suite.timesteps:,} env steps", flush=True)
    results.update(run.run_id, status="running")
    started = time.monotonic()
    try:
        fields = benchmarl_reference.run_mappo(experiment, score_of(experiment), suite.timesteps, suite.eval_episodes,
                                               run.seed)
    except Exception as error:  # recorded like a failed trial; the suite goes on
        results.update(run.run_id, status="failed", error=f"{type(error).__name__}: {error}",
                       duration_s=round(time.monotonic() - started, 1))
        return
    results.update(run.run_id, status="finished", error=None, duration_s=round(time.monotonic() - started, 1),
                   trial_dir=None, checkpoint=None, **fields)


def evaluate_checkpoints(suite: Suite, output_dir: Path) -> bool:
    """--skip-training: evaluates every finished run's checkpoint again (in this process) and updates the results."""
    from marlkit import checkpoints
    from marlkit.rollout import restore_for_evaluation

    results = Results(output_dir, suite)
    if not results.path.exists():
        raise ConfigError(f"--skip-training: {output_dir} holds no {RESULTS_FILE}; train the suite first")
    results.load_or_start(force=False)
    done = True
    for run in suite.runs():
        record = results.document["runs"][run.run_id]
        if run.arch == REFERENCE:
            print(f"benchmark: {run.run_id} is a BenchMARL run (no RLlib checkpoint); its evaluation stays", flush=True)
            continue
        if record["status"] != "finished" or not record.get("checkpoint") or not Path(record["checkpoint"]).is_dir():
            print(f"benchmark: {run.run_id} has no checkpoint ({record['status']}); not evaluated", flush=True)
            done = False
            continue
        experiment = suite.experiment(run)
        checkpoint = Path(record["checkpoint"])
        algorithm = restore_for_evaluation(
            checkpoint, checkpoints.load_algorithm_state(checkpoint), None, {}, num_workers=0, num_gpus=0)
        try:
            returns = evaluate(algorithm.env_runner, evaluation_settings(experiment, suite.eval_episodes),
                               score_of(experiment))
        finally:
            algorithm.stop()
        results.update(run.run_id, evaluation={"returns": returns, "mean": statistics.fmean(returns)})
        print(f"benchmark: {run.run_id} evaluated: mean {statistics.fmean(returns):.4g} over {len(returns)} episodes",
              flush=True)
    return done


