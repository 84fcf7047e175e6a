"""marlkit/replay.py: the columnar replay buffers keep RLlib's semantics (rows per policy, ring overwrite, prioritized
sampling and importance weights, priorities updated from TD errors, checkpoint state) and draw a training batch per
call; DQN and SAC get them, SAC's training batch is the YAML's `train_batch_size`, and both learn with RLlib's simple
optimizer (`simple_optimizer: false` in a YAML file still selects the multi-GPU one)."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.replay_buffers import (
    EpisodeReplayBuffer, MultiAgentPrioritizedReplayBuffer, MultiAgentReplayBuffer, PrioritizedReplayBuffer,
)

from marlkit import launch, spec
from marlkit.algorithms import DQN, SAC, algorithm_class
from marlkit.replay import ColumnarPrioritizedReplayBuffer, ColumnarReplayBuffer, SumTree, columnar_config


def rows(start: int, count: int, weights: np.ndarray | None = None) -> SampleBatch:
    """Rows whose columns tell where they came from: obs = (i, -i), rewards = 2 i."""
    index = np.arange(start, start + count)
    batch = {SampleBatch.OBS: np.stack([index, -index], axis=1).astype(np.float32),
             SampleBatch.REWARDS: 2.0 * index, SampleBatch.TERMINATEDS: index % 5 == 0}
    if weights is not None:
        batch["weights"] = weights
    return SampleBatch(batch)


def test_a_training_batch_per_policy_in_one_call_with_rows_intact():
    buffer = ColumnarReplayBuffer(capacity=100, rows_per_item=8)
    buffer.add(MultiAgentBatch({"a": rows(0, 30), "b": rows(1000, 5)}, env_steps=30))
    assert len(buffer) == 35
    sample = buffer.sample(1)
    assert {pid: len(batch) for pid, batch in sample.policy_batches.items()} == {"a": 8, "b": 8}
    for pid, (low, high) in {"a": (0, 30), "b": (1000, 1005)}.items():
        batch = sample.policy_batches[pid]
        index = batch[SampleBatch.OBS][:, 0]
        assert np.all((low <= index) & (index < high)), index
        assert np.array_equal(batch[SampleBatch.OBS][:, 1], -index)  # every column of a row from the same row
        assert np.array_equal(batch[SampleBatch.REWARDS], 2 * index)
        assert np.array_equal(batch[SampleBatch.TERMINATEDS], index % 5 == 0)
    assert len(buffer.sample(3, policy_id="b").policy_batches["b"]) == 24
    assert buffer.sample(1, policy_id="nobody").policy_batches == {}


def test_the_oldest_rows_are_overwritten_first():
    buffer = ColumnarReplayBuffer(capacity=10, rows_per_item=500)
    for start in range(0, 25, 5):
        buffer.add(rows(start, 5))
    assert len(buffer) == 10
    assert set(buffer.sample(1).policy_batches["default_policy"][SampleBatch.OBS][:, 0]) == set(range(15, 25))
    buffer.add(rows(100, 23))  # larger than the buffer: its newest rows
    assert set(buffer.sample(1).policy_batches["default_policy"][SampleBatch.OBS][:, 0]) == set(range(113, 123))


def test_a_batch_with_other_columns_is_an_error():
    buffer = ColumnarReplayBuffer(capacity=10)
    buffer.add(rows(0, 3))
    with pytest.raises(ValueError, match="a batch with columns .* after ones with"):
        buffer.add(rows(0, 3, weights=np.ones(3)))


def test_prioritized_weights_are_rllibs():
    """RLlib's own prioritized buffer over the same priorities: its importance weights for the rows it drew are ours."""
    priorities = np.linspace(0.1, 3.0, 16)
    rllib = PrioritizedReplayBuffer(capacity=16, alpha=0.7)
    for i, priority in enumerate(priorities):
        rllib.add(rows(i, 1), weight=priority)
    drawn = rllib.sample(64, beta=0.5)
    ours = ColumnarPrioritizedReplayBuffer(capacity=16, rows_per_item=64, prioritized_replay_alpha=0.7,
                                           prioritized_replay_beta=0.5)
    ours.add(rows(0, 16, weights=priorities))
    scaled = priorities ** 0.7
    probabilities = scaled / scaled.sum()
    expected = (16 * probabilities) ** -0.5 / (16 * probabilities.min()) ** -0.5
    assert np.allclose(drawn["weights"], expected[drawn["batch_indexes"]], rtol=1e-5)
    sample = ours.sample(1).policy_batches["default_policy"]
    assert np.allclose(sample["weights"], expected[sample["batch_indexes"]], rtol=1e-5)
    assert np.array_equal(sample[SampleBatch.OBS][:, 0], sample["batch_indexes"])


def test_prioritized_sampling_follows_priorities_and_td_errors():
    np.random.seed(0)
    buffer = ColumnarPrioritizedReplayBuffer(capacity=4, rows_per_item=20_000, prioritized_replay_alpha=1.0,
                                             prioritized_replay_eps=1e-6)
    buffer.add(rows(0, 4, weights=np.array([1.0, 1.0, 2.0, 4.0])))
    counts = np.bincount(buffer.sample(1).policy_batches["default_policy"]["batch_indexes"], minlength=4)
    assert np.allclose(counts / counts.sum(), [0.125, 0.125, 0.25, 0.5], atol=0.015), counts
    buffer.update_priorities({"default_policy": (np.array([0, 3]), np.array([-8.0, 0.0]))})  # |TD error| + eps
    counts = np.bincount(buffer.sample(1).policy_batches["default_policy"]["batch_indexes"], minlength=4)
    assert np.allclose(counts / counts.sum(), [8 / 11, 1 / 11, 2 / 11, 0.0], atol=0.015), counts
    assert buffer.max_priority == pytest.approx(8.0)
    # batches without a weights column: new rows get the largest priority so far
    unweighted = ColumnarPrioritizedReplayBuffer(capacity=4)
    unweighted.add(rows(0, 2))
    unweighted.update_priorities({"default_policy": (np.array([1]), np.array([5.0]))})
    unweighted.add(rows(2, 1))
    assert unweighted.policies["default_policy"].priorities[:3] == pytest.approx([1.0, 5.0, 5.0])


def test_state_round_trip():
    buffer = ColumnarPrioritizedReplayBuffer(capacity=8, rows_per_item=4)
    buffer.add(MultiAgentBatch({"a": rows(0, 11, weights=np.arange(1.0, 12.0)), "b": rows(50, 3, np.ones(3))}, 11))
    buffer.update_priorities({"a": (np.array([2]), np.array([30.0]))})
    restored = ColumnarPrioritizedReplayBuffer(capacity=8, rows_per_item=4)
    restored.set_state(buffer.get_state())
    assert len(restored) == len(buffer) == 11 and restored.max_priority == buffer.max_priority
    for pid in ("a", "b"):
        old, new = buffer.policies[pid], restored.policies[pid]
        assert (old.size, old.next) == (new.size, new.next)
        assert np.array_equal(old.priorities, new.priorities)
        for key in old.columns:
            assert np.array_equal(old.columns[key][:old.size], new.columns[key][:new.size]), key
    restored.add(rows(90, 1, np.ones(1)))  # goes on where the saved one would
    assert restored.policies["default_policy"].size == 1 and restored.policies["a"].next == buffer.policies["a"].next


def test_dqn_and_sac_get_the_columnar_buffers_and_the_yamls_batch_size():
    for rllib, columnar in ((MultiAgentReplayBuffer, ColumnarReplayBuffer),
                            (MultiAgentPrioritizedReplayBuffer, ColumnarPrioritizedReplayBuffer)):
        for kind in (rllib, rllib.__name__, f"ray.rllib.utils.replay_buffers.{rllib.__name__}"):
            assert columnar_config({"type": kind, "capacity": 10}, 64) == {"type": columnar, "capacity": 10,
                                                                           "rows_per_item": 64}
    kept = [{"type": EpisodeReplayBuffer}, {"type": MultiAgentReplayBuffer, "storage_unit": "sequences"},
            {"type": MultiAgentReplayBuffer, "replay_mode": "lockstep"}, {"type": "my_module.MultiAgentReplayBuffer"}]
    for config in kept:
        assert columnar_config(config, 64) == config
    for run, own in (("DQN", DQN), ("SAC", SAC)):
        assert algorithm_class(run) is own
        experiment = spec.parse_experiment("exp", {"run": run, "env": "vmas", "config": {
            "env_config": {"scenario": "navigation", "n_agents": 2, "continuous_actions": run == "SAC"},
            "train_batch_size": 64}})
        config = own.get_default_config().update_from_dict(launch.first_trial_config(experiment))
        assert config.total_train_batch_size == 64, run  # SAC's sampled 256 rows whatever the YAML said
        assert config.simple_optimizer is True, run  # one gradient step per replayed batch: no multi-GPU loader
        buffer = own._create_local_replay_buffer_if_necessary(None, config.to_dict())
        assert isinstance(buffer, ColumnarPrioritizedReplayBuffer) and buffer.rows_per_item == 64, run


def test_the_multi_gpu_optimizer_stays_selectable():
    experiment = spec.parse_experiment("exp", {"run": "DQN", "env": "vmas", "config": {
        "env_config": {"scenario": "navigation", "n_agents": 2, "continuous_actions": False}, "simple_optimizer": False}})
    assert launch.first_trial_config(experiment)["simple_optimizer"] is False


def test_sum_tree_finds_what_a_cumulative_sum_finds():
    rng = np.random.default_rng(0)
    values = rng.random(1000)
    tree = SumTree(1000)  # 1,024 leaves, the last 24 empty
    tree.set(np.arange(1000), values)
    tree.set(np.array([5, 5, 999]), np.array([7.0, 3.0, 0.0]))  # repeated index: the last value
    values[[5, 999]] = [3.0, 0.0]
    assert tree.total() == pytest.approx(values.sum())
    masses = rng.random(5000) * values.sum()
    assert np.array_equal(tree.find(masses), np.searchsorted(np.cumsum(values), masses, side="right"))
