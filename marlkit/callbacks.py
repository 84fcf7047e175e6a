"""RLlib callbacks every experiment gets."""

from __future__ import annotations

import time

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


class RestoreCheckpoint(RLlibCallback):
    """Loads `checkpoint` into every new algorithm (train.py --restore); `restore_callback` sets the path."""

    checkpoint: str = ""

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        algorithm.restore(self.checkpoint)


def restore_callback(checkpoint: str) -> type:
    """A RestoreCheckpoint subclass bound to one checkpoint (RLlib's old stack takes callback classes only)."""
    return type("RestoreCheckpointFrom", (RestoreCheckpoint,), {"checkpoint": checkpoint})
