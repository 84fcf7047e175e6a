"""RLlib callbacks every experiment gets."""

from __future__ import annotations

import time
from pathlib import Path

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback


class EnvStepsPerSecond(RLlibCallback):
    """Adds `env_steps_per_s` to every result: env steps sampled this iteration over the iteration's wall time.

    The wall time covers sampling and learning, so this is end-to-end training throughput; the split between the
    two is in `timers/sample_time_ms` and `timers/learn_time_ms`.
    """

    def __init__(self):
        super().__init__()
        self._last_time = None

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        self._last_time = time.perf_counter()

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        now = time.perf_counter()
        elapsed = now - (self._last_time or now)
        self._last_time = now
        steps = result.get("num_env_steps_sampled_this_iter", 0)
        result["env_steps_per_s"] = steps / elapsed if elapsed > 0 else 0.0


def _this_node(_runner=None) -> str:
    """The short (8 hex digits) id of the Ray node this runs on, as train.py prints the cluster's nodes."""
    return ray.get_runtime_context().get_node_id()[:8]


class RayPlacement(RLlibCallback):
    """Adds `placement` to every result: the Ray node of the trial's learner and of each remote env runner
    (`{"learner": "1887bb9e", "env_runners": "1887bb9e,5c01d2aa"}`, short node ids as train.py prints them).

    Multi-node runs (Slurm) show where their work ran.
    """

    def __init__(self):
        super().__init__()
        self._placement = {}

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        runners = algorithm.env_runner_group.foreach_env_runner(_this_node, local_env_runner=False)
        self._placement = {"learner": _this_node(), "env_runners": ",".join(runners)}
        print(f"placement: learner on Ray node {self._placement['learner']}, env runners on "
              f"{', '.join(runners) or 'the learner node (none remote)'}", flush=True)

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        result["placement"] = dict(self._placement)


class RestoreCheckpoint(RLlibCallback):
    """Loads `checkpoint` into every new algorithm (train.py --restore); set it with `bound_callback`."""

    checkpoint: str = ""

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        algorithm.restore(self.checkpoint)


def bound_callback(callback_class: type, **settings) -> type:
    """A subclass of `callback_class` with `settings` as class attributes: RLlib's old stack takes callback classes,
    not instances, so per-run settings (a checkpoint path, a number of episodes) travel this way."""
    return type(f"{callback_class.__name__}Bound", (callback_class,), settings)


class EvaluationVideos(RLlibCallback):
    """Records `episodes` videos after every evaluation into `<trial>/videos/iteration_<N>/` (YAML:
    `evaluation_config: {record_video: true}` or a number of episodes); set `episodes` with `bound_callback`.

    The episodes run with the same machinery as rollout.py, on the trainable's own env runner and policies, with the
    evaluation settings' env_config and exploration.
    """

    episodes: int = 1

    def on_evaluate_end(self, *, algorithm, **kwargs) -> None:
        from marlkit.rollout import RolloutSettings, run_episodes

        evaluation = algorithm.evaluation_config
        iteration = algorithm.iteration + 1  # evaluation runs inside the step that will report this iteration
        folder = trial_folder(algorithm) / "videos" / f"iteration_{iteration:06d}"
        settings = RolloutSettings(
            env=evaluation.env, env_config=dict(evaluation.env_config), episodes=self.episodes,
            explore=bool(evaluation.explore), video_dir=str(folder),
        )
        run_episodes(algorithm.env_runner, settings, list(range(self.episodes)))


def trial_folder(algorithm) -> Path:
    """The trial's folder in the results directory (Tune's storage), or the algorithm's log folder outside Tune."""
    storage = getattr(algorithm, "_storage", None)
    return Path(storage.trial_fs_path if storage else algorithm.logdir)
