"""What the benches share: an experiment file's algorithm built in this process, with the sampler a bench compares."""

from __future__ import annotations

import time
from pathlib import Path

from ray.rllib.evaluation.rollout_worker import RolloutWorker

from marlkit import launch
from marlkit.spec import Experiment, load_experiments


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
    return build_experiment(experiment, stock_sampler)


def build_experiment(experiment: Experiment, stock_sampler: bool):
    """(algorithm, resolved config) of a loaded experiment, built in this process; RuntimeError unless it samples
    through RLlib's stock sampler (`stock_sampler`, set as the experiment's `env_runner_cls`) or the batched one."""
    launch.register_components([experiment])
    config = launch.first_trial_config(experiment)
    algorithm = launch.build_algorithm(experiment.run, config)
    runner = type(algorithm.env_runner).__name__
    if runner != ("RolloutWorker" if stock_sampler else "BatchedEnvRunner"):
        algorithm.stop()
        raise RuntimeError(f"expected the {'stock' if stock_sampler else 'batched'} sampler, got a {runner}")
    return algorithm, config


def train_until(algorithm, frames: int) -> tuple[float, int, dict]:
    """Calls `algorithm.train()`, as a Tune trial does, until `frames` env steps were sampled: (seconds spent in the
    calls, env steps sampled, the last result)."""
    seconds, sampled, result = 0.0, 0, {}
    while sampled < frames:
        start = time.perf_counter()
        result = algorithm.train()
        seconds += time.perf_counter() - start
        sampled = result["num_env_steps_sampled_lifetime"]
    return seconds, sampled, result
