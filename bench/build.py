"""What the benches share: an experiment file's algorithm built in this process, with the sampler a bench compares."""

from __future__ import annotations

from pathlib import Path

from ray.rllib.evaluation.rollout_worker import RolloutWorker

from marlkit import launch
from marlkit.spec import load_experiments


def build_for_bench(path: str | Path, overrides: dict, stock_sampler: bool, train_batch_size: int | None = None):
    """(algorithm, resolved config) of the first experiment in `path` with RLlib `overrides`, built in this process,
    sampling through RLlib's stock old-stack sampler (`stock_sampler`) or what train.py picks; for the benches.
    `train_batch_size` (optional) also caps the minibatch size."""
    if stock_sampler:
        overrides = {**overrides, "env_runner_cls": RolloutWorker}
    (experiment,) = load_experiments(path, overrides)
    if train_batch_size is not None:
        experiment.config["train_batch_size"] = train_batch_size
        experiment.config["minibatch_size"] = min(experiment.config["minibatch_size"], train_batch_size)
    launch.register_components([experiment])
    config = launch.first_trial_config(experiment)
    algorithm = launch.build_algorithm(experiment.run, config)
    runner = type(algorithm.env_runner).__name__
    if runner != ("RolloutWorker" if stock_sampler else "BatchedEnvRunner"):
        algorithm.stop()
        raise RuntimeError(f"expected the {'stock' if stock_sampler else 'batched'} sampler, got a {runner}")
    return algorithm, config
