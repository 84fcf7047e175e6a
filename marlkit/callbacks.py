"""RLlib callbacks every experiment gets."""

from __future__ import annotations

import functools
import os
import platform
import socket
import time
from pathlib import Path

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.tune.utils import flatten_dict


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


def machine_info() -> dict:
    """The machine a trial's learner runs on: host, CPU model and cores, GPUs, and the Ray cluster's node count."""
    import torch

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    # Strings, not lists: Tune's TensorBoard logger would try to plot a list.
    return {"host": socket.gethostname(), "cpu_model": cpu_model, "cpu_cores": os.cpu_count(), "gpus": ", ".join(gpus),
            "ray_nodes": sum(1 for node in ray.nodes() if node.get("Alive"))}


class RunnersStartWithLearnerWeights(RLlibCallback):
    """Gives the remote env runners the learner's weights before the first sample. RLlib builds each runner's
    policies with their own initial weights and syncs them only after the first update, so the first batch was
    sampled with weights other than those trained on it (tests/weights_callback.py measures it)."""

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        if algorithm.env_runner_group is not None and algorithm.env_runner_group.num_remote_env_runners():
            algorithm.env_runner_group.sync_weights()


class RayPlacement(RLlibCallback):
    """Adds where the trial ran to every result: `placement`, the Ray node of the learner and of each remote env
    runner (`{"learner": "1887bb9e", "env_runners": "1887bb9e,5c01d2aa"}`, short node ids as train.py prints them),
    and `machine` (`machine_info()` of the learner's machine), so runs on different machines can be compared.
    """

    def __init__(self):
        super().__init__()
        self._placement = {}
        self._machine = {}

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        runners = algorithm.env_runner_group.foreach_env_runner(_this_node, local_env_runner=False)
        self._placement = {"learner": _this_node(), "env_runners": ",".join(runners)}
        self._machine = machine_info()
        print(f"placement: learner on Ray node {self._placement['learner']}, env runners on "
              f"{', '.join(runners) or 'the learner node (none remote)'}", flush=True)

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        result["placement"] = dict(self._placement)
        result["machine"] = dict(self._machine)


class Curriculum(RLlibCallback):
    """Moves the envs through the experiment's curriculum stages (YAML `curriculum`); set `metric` and `stages` with
    `bound_callback`. Adds `curriculum_stage` (0-based) to every result.

    The envs start at stage 0 (spec.py merges it into env_config). After a result whose `metric` reached the stage's
    `until`, the next stage's env_config goes to every env of every env runner (training and evaluation) through the
    env's `set_task`; the episodes running then finish under the new parameters (with VMAS navigation's shaping, their
    next step's reward is the difference between the old and the new shaping). A restored or restarted trial starts
    again at stage 0 and moves on as soon as the metric allows.
    """

    metric: str = "env_runners/episode_return_mean"
    stages: tuple = ()

    def __init__(self):
        super().__init__()
        self.stage = 0

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        value = flatten_dict(result, delimiter="/").get(self.metric)
        if self.stage < len(self.stages) - 1 and value is not None and value >= self.stages[self.stage]["until"]:
            self.stage += 1
            task = self.stages[self.stage]["env_config"]
            groups = [algorithm.env_runner_group, getattr(algorithm, "eval_env_runner_group", None)]
            for group in filter(None, groups):
                group.foreach_env_runner(functools.partial(_set_task, task=task))
            print(f"curriculum: {self.metric} = {value:.4g} reached {self.stages[self.stage - 1]['until']:g}; "
                  f"stage {self.stage}: {task}", flush=True)
        result["curriculum_stage"] = self.stage


def _set_task(runner, task: dict) -> None:
    if runner.env is not None:  # a trial's local runner may hold no env
        runner.env.set_task(task)


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
