"""RLlib's stock old-stack env runner (`RolloutWorker`), which closes its envs when its own construction fails.

Why: an env runner whose policy or model cannot be built (a model that raises, an image size with no default CNN)
fails in its constructor after it made its envs, and nobody closes them. A Unity game's env serves gRPC from a
thread that waits for Python forever, and Python joins that thread at exit, so the runner process (and its game)
lived on, orphaned, long after train.py had ended. spec.py sets this class as `env_runner_cls` of every experiment
that samples through RLlib's stock sampler; the batched env runner (marlkit/batched_runner.py) builds on it.
"""

from __future__ import annotations

from ray.rllib.evaluation.rollout_worker import RolloutWorker


class StockEnvRunner(RolloutWorker):
    """`RolloutWorker` that closes the envs it made when its constructor fails, then re-raises the error."""

    def __init__(self, **kwargs):
        try:
            super().__init__(**kwargs)
        except BaseException:
            self.close_envs()
            raise

    def close_envs(self) -> None:
        """Closes every sub-env (RLlib's vectorised wrapper when it was built, else the first env)."""
        vector_env, env = getattr(self, "async_env", None), getattr(self, "env", None)
        if vector_env is not None:
            vector_env.stop()
        elif env is not None:
            env.close()
