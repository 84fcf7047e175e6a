"""A user callback for the env-runner fault test: whether every remote env runner samples with the learner's
current weights, reported in each iteration's result row."""

import hashlib
import time

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback


def weights_checksum(weights: dict) -> str:
    """A digest of policy id -> {name: array} weights, independent of dict order."""
    digest = hashlib.sha256()
    for policy_id in sorted(weights):
        for name in sorted(weights[policy_id]):
            digest.update(f"{policy_id}/{name}".encode())
            digest.update(np.ascontiguousarray(weights[policy_id][name]).tobytes())
    return digest.hexdigest()


class RunnerWeightsMatch(RLlibCallback):
    """`runner_weights_match` in each result: 1 when every healthy remote env runner sampled this iteration with the
    learner's weights of the iteration's start (those the last update left, which RLlib synced to the runners, a
    restarted one included), 0 when one sampled with others, -1 when no remote runner sampled.

    Each runner keeps the checksum of the weights it sampled with (`on_sample_end` runs in the runner); the learner's
    are taken after each update, for the next iteration.
    """

    def __init__(self):
        super().__init__()
        self.learner_checksum = None

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        self.learner_checksum = weights_checksum(algorithm.env_runner.get_weights())

    def on_sample_end(self, *, env_runner=None, worker=None, samples=None, **kwargs) -> None:
        runner = env_runner or worker
        runner.sampled_with = weights_checksum(runner.get_weights())

    def on_train_result(self, *, algorithm, result, **kwargs) -> None:
        sampled = algorithm.env_runner_group.foreach_env_runner(
            lambda runner: getattr(runner, "sampled_with", None), local_env_runner=False)
        algorithm.env_runner_group.foreach_env_runner(
            lambda runner: setattr(runner, "sampled_with", None), local_env_runner=False)
        sampled = [checksum for checksum in sampled if checksum is not None]
        result["runner_weights_match"] = -1 if not sampled else int(all(c == self.learner_checksum for c in sampled))
        self.learner_checksum = weights_checksum(algorithm.env_runner.get_weights())


class PacedRunnerWeightsMatch(RunnerWeightsMatch):
    """RunnerWeightsMatch with iterations of at least `PACE_S` (a sleep in the trial after each result): a run of
    tiny iterations then outlasts an env runner's restart, and the trial cannot run far ahead of the driver's
    progress.csv. (RLlib's min_time_s_per_iteration would instead repeat training steps within an iteration, so the
    runner's later samples would not use the weights of the iteration's start.)"""

    PACE_S = 0.3

    def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
        super().on_algorithm_init(algorithm=algorithm, **kwargs)
        self.iteration_started = time.monotonic()

    def on_train_result(self, *, algorithm, result, **kwargs) -> None:
        super().on_train_result(algorithm=algorithm, result=result, **kwargs)
        time.sleep(max(0.0, self.iteration_started + self.PACE_S - time.monotonic()))
        self.iteration_started = time.monotonic()
