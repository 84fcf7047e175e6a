"""A user callback for the env-runner fault test: whether every remote env runner samples with the learner's
current weights, reported in each iteration's result row."""

import hashlib

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
    """`runner_weights_match` in each result: 1 when every healthy remote env runner's weights equal the local
    (learner's) copy after the iteration's weight sync, 0 when one differs, -1 when no remote runner is healthy."""

    def on_train_result(self, *, algorithm, result, **kwargs) -> None:
        learner = weights_checksum(algorithm.env_runner.get_weights())
        runners = algorithm.env_runner_group.foreach_env_runner(
            lambda runner: weights_checksum(runner.get_weights()), local_env_runner=False)
        result["runner_weights_match"] = -1 if not runners else int(all(c == learner for c in runners))
