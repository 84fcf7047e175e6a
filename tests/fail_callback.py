"""A user callback for the resume test: a trial fails in its 2nd iteration, after the 1st was checkpointed, while the
file that FAIL_IN_SECOND_ITERATION names exists (so `--resume` runs, started without it, go on)."""

import os

from ray.rllib.callbacks.callbacks import RLlibCallback


class FailInSecondIteration(RLlibCallback):
    def on_train_result(self, *, algorithm, result, **kwargs) -> None:
        marker = os.environ.get("FAIL_IN_SECOND_ITERATION")
        if result["training_iteration"] == 2 and marker and os.path.exists(marker):
            raise RuntimeError(f"test failure in iteration 2 ({marker} exists)")
