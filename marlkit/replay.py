"""RLlib's multi-agent replay buffers (uniform and prioritized) with each policy's rows in numpy columns.

Why: RLlib 2.60's old-stack buffers store every transition as its own one-row `SampleBatch` (`add` cuts a batch into
`timeslices(1)`), and old-stack DQN and SAC draw a training batch one item at a time
(`sample_min_n_steps_from_buffer` calls `sample(num_items=1)` until the batch is full): a 384-row training batch was
~38,000 Python-level `sample` calls per 100 gradient steps, 85% of the training time of `bench/algorithms.py`'s DQN
(cProfile, 2026-12-07), and adding a 2,000-frame fragment of 3 agents took 0.8 s. Here `add` copies a batch's rows
into preallocated ring-buffer columns, and one `sample` call draws a whole training batch per policy
(`rows_per_item` rows per requested item, the training batch size), so that RLlib's loop ends after one call.
Prioritized draws and priority updates walk a `SumTree` for the whole batch at once (0.4 ms for 256 rows of a
1,000,000-row buffer, where a cumulative sum over all priorities took 17 ms).

Semantics are RLlib's: `capacity` rows per policy, the oldest overwritten first; independent replay per policy;
prioritized sampling P(i) = p_i^alpha / sum p^alpha with importance weights (N P(i))^-beta normalised by the largest,
new rows' priorities from the batch's `weights` column (RLlib's replay weights, as RLlib's buffer takes them), and
|TD error| + eps after each update. `marlkit/algorithms.py` substitutes these for `MultiAgentReplayBuffer` and
`MultiAgentPrioritizedReplayBuffer` where they store single timesteps (their default).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from ray.rllib.utils.replay_buffers import (
    MultiAgentPrioritizedReplayBuffer, MultiAgentReplayBuffer, ReplayBuffer,
)

WEIGHTS, INDEXES = "weights", "batch_indexes"


class SumTree:
    """Sums over a binary tree of `capacity` leaves (rounded up to a power of two), each operation vectorised over many
    leaves at once: a prioritized draw of a batch costs O(batch x log capacity) numpy work, not O(capacity)."""

    def __init__(self, capacity: int):
        self.leaves = 1 << max(0, (capacity - 1).bit_length())
        self.tree = np.zeros(2 * self.leaves)  # node i's children: 2i and 2i + 1; the leaves at [leaves, 2 leaves)

    def set(self, indexes: np.ndarray, values: np.ndarray) -> None:
        nodes = np.asarray(indexes) + self.leaves
        self.tree[nodes] = values
        while nodes[0] > 1:
            nodes = np.unique(nodes // 2)
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]

    def total(self) -> float:
        return float(self.tree[1])

    def find(self, masses: np.ndarray) -> np.ndarray:
        """The leaf of each mass in [0, total): the first whose running sum exceeds it."""
        nodes = np.ones(len(masses), dtype=np.int64)
        while nodes[0] < self.leaves:
            left = self.tree[2 * nodes]
            right = masses >= left
            masses = np.where(right, masses - left, masses)
            nodes = 2 * nodes + right
        return nodes - self.leaves


class PolicyRows:
    """One policy's transitions: a ring of numpy columns, allocated on the first `add` from that batch's columns;
    with `alpha`, their priorities^alpha in a `SumTree` as well (prioritized replay)."""

    def __init__(self, capacity: int, alpha: float | None = None):
        self.capacity, self.alpha = capacity, alpha
        self.columns: dict[str, np.ndarray] | None = None
        self.priorities = np.zeros(capacity, dtype=np.float64)
        self.tree = None if alpha is None else SumTree(capacity)
        self.size = 0
        self.next = 0  # the ring position the next row goes to

    def set_priorities(self, indexes: np.ndarray, priorities: np.ndarray) -> None:
        self.priorities[indexes] = priorities
        if self.tree is not None:
            self.tree.set(indexes, self.priorities[indexes] ** self.alpha)

    def add(self, batch: SampleBatch, priorities: np.ndarray) -> None:
        rows = {key: np.asarray(value) for key, value in batch.items() if key != INDEXES}
        count = len(batch)
        if self.columns is None:
            self.columns = {key: np.empty((self.capacity,) + value.shape[1:], dtype=value.dtype)
                            for key, value in rows.items()}
        if rows.keys() != self.columns.keys():
            raise ValueError(f"replay buffer: a batch with columns {sorted(rows)} after ones with {sorted(self.columns)}")
        keep = slice(max(0, count - self.capacity), count)  # a batch larger than the buffer keeps its newest rows
        positions = (self.next + np.arange(count)[keep]) % self.capacity
        for key, column in self.columns.items():
            column[positions] = rows[key][keep]
        self.set_priorities(positions, priorities[keep])
        self.next = int(positions[-1] + 1) % self.capacity if len(positions) else self.next
        self.size = min(self.size + len(positions), self.capacity)

    def rows(self, indexes: np.ndarray) -> SampleBatch:
        return SampleBatch({key: column[indexes] for key, column in self.columns.items()})

    def get_state(self) -> dict:
        columns = None if self.columns is None else {key: column[:self.size] for key, column in self.columns.items()}
        return {"columns": columns, "priorities": self.priorities[:self.size], "size": self.size, "next": self.next}

    def set_state(self, state: dict) -> None:
        self.columns = None
        if state["columns"] is not None:
            self.columns = {key: np.empty((self.capacity,) + value.shape[1:], dtype=value.dtype)
                            for key, value in state["columns"].items()}
            for key, value in state["columns"].items():
                self.columns[key][:state["size"]] = value
        self.size, self.next = state["size"], state["next"]
        if self.size:
            self.set_priorities(np.arange(self.size), state["priorities"])


class ColumnarReplayBuffer(MultiAgentReplayBuffer):
    """Uniform replay, independent per policy: `sample(n)` gives each policy `n x rows_per_item` rows.

    Args:
        capacity: rows kept per policy.
        rows_per_item: rows per requested item: the training batch size, so that one `sample(1)` is a batch.
    """

    def __init__(self, capacity: int = 10_000, rows_per_item: int = 1, **kwargs):
        ReplayBuffer.__init__(self, capacity, "timesteps")
        self.rows_per_item = rows_per_item
        self.policies: dict[str, PolicyRows] = {}
        self._num_added = 0

    def __len__(self) -> int:
        return sum(policy.size for policy in self.policies.values())

    def _new_rows(self) -> PolicyRows:
        return PolicyRows(self.capacity)

    def _priorities(self, batch: SampleBatch) -> np.ndarray:
        return np.ones(len(batch))

    def add(self, batch, **kwargs) -> None:
        if isinstance(batch, SampleBatch):
            batch = MultiAgentBatch({DEFAULT_POLICY_ID: batch}, len(batch))
        for policy_id, policy_batch in batch.policy_batches.items():
            if len(policy_batch):
                rows = self.policies.setdefault(policy_id, self._new_rows())
                rows.add(policy_batch, self._priorities(policy_batch))
                self._num_added += len(policy_batch)
        self._num_timesteps_added += batch.env_steps()

    def _draw(self, rows: PolicyRows, count: int) -> SampleBatch:
        return rows.rows(np.random.randint(0, rows.size, size=count))

    def sample(self, num_items: int, policy_id: str | None = None, **kwargs) -> MultiAgentBatch:
        chosen = [policy_id] if policy_id is not None else list(self.policies)
        samples = {pid: self._draw(self.policies[pid], num_items * self.rows_per_item)
                   for pid in chosen if pid in self.policies and self.policies[pid].size}
        return MultiAgentBatch(samples, sum(len(sample) for sample in samples.values()))

    def stats(self, debug: bool = False) -> dict:
        return {"added_count": self._num_added, "num_entries": len(self),
                **{f"policy_{pid}": {"num_entries": rows.size} for pid, rows in self.policies.items()}}

    def get_state(self) -> dict[str, Any]:
        return {"policies": {pid: rows.get_state() for pid, rows in self.policies.items()},
                "num_added": self._num_added, "num_timesteps_added": self._num_timesteps_added}

    def set_state(self, state: dict[str, Any]) -> None:
        self.policies = {}
        for pid, rows_state in state["policies"].items():
            self.policies[pid] = self._new_rows()
            self.policies[pid].set_state(rows_state)
        self._num_added, self._num_timesteps_added = state["num_added"], state["num_timesteps_added"]


class ColumnarPrioritizedReplayBuffer(ColumnarReplayBuffer, MultiAgentPrioritizedReplayBuffer):
    """Prioritized replay (RLlib's `MultiAgentPrioritizedReplayBuffer` semantics, see the module docstring). A subclass
    of RLlib's class, whose constructor it does not run, because RLlib updates priorities only in buffers that are
    (`update_priorities_in_replay_buffer`'s isinstance test).

    Args:
        prioritized_replay_alpha, prioritized_replay_beta, prioritized_replay_eps: RLlib's settings of that name.
    """

    def __init__(self, capacity: int = 10_000, rows_per_item: int = 1, prioritized_replay_alpha: float = 0.6,
                 prioritized_replay_beta: float = 0.4, prioritized_replay_eps: float = 1e-6, **kwargs):
        super().__init__(capacity, rows_per_item)
        self.alpha, self.beta, self.prioritized_replay_eps = (
            prioritized_replay_alpha, prioritized_replay_beta, prioritized_replay_eps)
        self.max_priority = 1.0

    def _new_rows(self) -> PolicyRows:
        return PolicyRows(self.capacity, self.alpha)

    def _priorities(self, batch: SampleBatch) -> np.ndarray:
        if WEIGHTS in batch:
            return np.asarray(batch[WEIGHTS], dtype=np.float64)
        return np.full(len(batch), self.max_priority)

    def _draw(self, rows: PolicyRows, count: int) -> SampleBatch:
        total = rows.tree.total()
        # (a mass a rounding error puts past the last row's leaf lands on the last row)
        indexes = np.minimum(rows.tree.find(np.random.random(count) * total), rows.size - 1)
        probabilities = rows.priorities[indexes] ** self.alpha / total
        smallest = rows.priorities[:rows.size].min() ** self.alpha / total
        # importance weights, normalised by the largest (that of the least likely row), as RLlib's buffer does
        weights = (rows.size * probabilities) ** -self.beta / (rows.size * smallest) ** -self.beta
        sample = rows.rows(indexes)
        sample[WEIGHTS] = weights.astype(np.float32)
        sample[INDEXES] = indexes
        return sample

    def update_priorities(self, prio_dict: dict) -> None:
        for policy_id, (indexes, td_errors) in prio_dict.items():
            priorities = np.abs(td_errors) + self.prioritized_replay_eps
            self.policies[policy_id].set_priorities(np.asarray(indexes), priorities)
            self.max_priority = max(self.max_priority, float(priorities.max()))

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "max_priority": self.max_priority}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.max_priority = state["max_priority"]


COLUMNAR = {MultiAgentReplayBuffer: ColumnarReplayBuffer, MultiAgentPrioritizedReplayBuffer: ColumnarPrioritizedReplayBuffer}


def columnar_config(buffer_config: dict, train_batch_size: int) -> dict:
    """`buffer_config` (a validated `replay_buffer_config`; its `type` a class or RLlib's name of one) with RLlib's
    timestep buffer swapped for its columnar twin above; unchanged where it is another buffer or stores sequences or
    episodes."""
    kind = buffer_config.get("type")
    if isinstance(kind, str) and (kind.startswith("ray.rllib.") or "." not in kind):
        kind = {rllib.__name__: rllib for rllib in COLUMNAR}.get(kind.rsplit(".", 1)[-1])
    columnar = COLUMNAR.get(kind)
    if columnar is None or buffer_config.get("storage_unit", "timesteps") != "timesteps" \
            or buffer_config.get("replay_sequence_length", 1) != 1 \
            or buffer_config.get("replay_mode", "independent") != "independent":
        return buffer_config
    return {**buffer_config, "type": columnar, "rows_per_item": train_batch_size}
