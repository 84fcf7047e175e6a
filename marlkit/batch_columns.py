"""Training columns computed on whole (time, games, agents) arrays of one sampled fragment, for the batched env
runner (marlkit/batched_runner.py): what RLlib's per-trajectory postprocessing computes, for every trajectory at once.

A fragment's trajectories are the stretches of one game between its episode's start (or the fragment's start) and its
end (or the fragment's end), as RLlib's stock sampler cuts them. `done[t]` is true where the game ended at step `t`;
the game's row at `t + 1` is its restart row, which the runner drops.

- `gae`: advantages (PPO's `compute_gae_for_sample_batch`);
- `nstep`: n-step rewards, next observations and flags (`adjust_nstep`, used by DQN and SAC);
- `replay_weights`: the replay weights of DQN's and SAC's rows (`postprocess_nstep_and_prio`);
- `sequences`: a recurrent policy's rows cut into `max_seq_len` sequences;
- `unsupported`: why a policy needs columns these cannot give (RLlib's stock sampler builds them).
"""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.algorithms.dqn.dqn_tf_policy import PRIO_WEIGHTS
from ray.rllib.policy.sample_batch import SampleBatch


def gae(values: torch.Tensor, last_values: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
        done: torch.Tensor, gamma: float, lambda_: float) -> torch.Tensor:
    """Generalised advantage estimates over (time, games, agents).

    Args:
        values: the value predictions of each row.
        last_values: (games, agents) values of the observations after the fragment's last step.
        rewards: the rewards of each row.
        terminated, done: (time, games) flags; the row after a finished game is its restart row, whose value is
            that of the final observation: the bootstrap of a truncated game (a terminated one bootstraps from 0).
    """
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
    next_values = torch.where(terminated.unsqueeze(-1), torch.zeros_like(next_values), next_values)
    deltas = rewards + gamma * next_values - values
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    keep = (~done).unsqueeze(-1).float()
    for t in reversed(range(len(deltas))):
        running = deltas[t] + gamma * lambda_ * keep[t] * running
        advantages[t] = running
    return advantages


def nstep(n: int, gamma: float, rewards: torch.Tensor, next_obs: torch.Tensor, terminated: torch.Tensor,
          truncated: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """RLlib's `adjust_nstep` on every trajectory of the fragment at once: row t gets the discounted sum of the
    rewards of rows t .. t+n-1 and the next observation and flags of the last of them, all within t's trajectory
    (a trajectory's last rows look ahead fewer steps).

    Args:
        rewards: (time, games, agents); next_obs: (time, games, agents, size), the observation after each step
            (a finished game's final observation at its last row).
        terminated, truncated, done: (time, games).

    Returns:
        rewards, next_obs, terminated, truncated, the last two (time, games, agents).

    Example:
        >>> r = torch.tensor([1., 1., 1., 1.]).reshape(4, 1, 1)
        >>> ended = torch.tensor([False, True, False, False]).reshape(4, 1)
        >>> obs = torch.arange(4.).reshape(4, 1, 1, 1)
        >>> rewards, next_obs, term, _ = nstep(3, 0.5, r, obs, ended, ended & False, ended)
        >>> rewards.flatten().tolist(), next_obs.flatten().tolist(), term.flatten().tolist()
        ([1.5, 1.0, 1.5, 1.0], [1.0, 1.0, 3.0, 3.0], [True, True, False, False])
    """
    time_steps = len(done)
    last = torch.empty_like(done, dtype=torch.long)  # the last row of each row's trajectory
    last[-1] = time_steps - 1
    for t in reversed(range(time_steps - 1)):
        last[t] = torch.where(done[t], torch.full_like(last[t], t), last[t + 1])
    rows = torch.arange(time_steps, device=done.device).unsqueeze(1)
    target = torch.minimum(rows + n - 1, last)  # (time, games)
    summed = torch.zeros_like(rewards)
    for j in range(n):
        ahead = (rows + j).clamp(max=time_steps - 1)
        inside = (rows + j <= target).unsqueeze(-1)
        summed += torch.where(inside, gamma ** j * torch.gather(rewards, 0, _along(ahead, rewards)),
                              torch.zeros_like(rewards))
    agents = rewards.shape[2]

    def at_target(column: torch.Tensor) -> torch.Tensor:
        return torch.gather(column, 0, target).unsqueeze(-1).expand(-1, -1, agents)

    return summed, torch.gather(next_obs, 0, _along(target, next_obs)), at_target(terminated), at_target(truncated)


def transitions(config: dict, rewards: torch.Tensor, next_obs: torch.Tensor, terminated: torch.Tensor,
                truncated: torch.Tensor, done: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replay columns (time, games, agents, ...) as `nstep` gives them for a policy's `config` (`n_step`, `gamma`):
    next observations, n-step rewards, flags."""
    rewards, next_obs, terminated, truncated = nstep(config.get("n_step", 1), config["gamma"], rewards, next_obs,
                                                     terminated, truncated, done)
    return {SampleBatch.NEXT_OBS: next_obs, SampleBatch.REWARDS: rewards, SampleBatch.TERMINATEDS: terminated,
            SampleBatch.TRUNCATEDS: truncated}


def replay_weights(policy, batch: SampleBatch) -> np.ndarray:
    """Replay weights of a fragment's transitions as RLlib's `postprocess_nstep_and_prio` sets them: ones, or with
    `worker_side_prioritization` the policy's TD errors (+ `prioritized_replay_eps`)."""
    replay = policy.config.get("replay_buffer_config") or {}
    weights = np.ones_like(batch[SampleBatch.REWARDS])
    if not batch.count or not replay.get("worker_side_prioritization", False):
        return weights
    td_errors = policy.compute_td_error(batch[SampleBatch.OBS], batch[SampleBatch.ACTIONS], batch[SampleBatch.REWARDS],
                                        batch[SampleBatch.NEXT_OBS], batch[SampleBatch.TERMINATEDS], weights)
    epsilon = replay.get("prioritized_replay_eps") or policy.config.get("prioritized_replay_eps")
    return np.abs(np.asarray(td_errors.detach().cpu() if torch.is_tensor(td_errors) else td_errors)) + epsilon


def _along(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (time, games) row index expanded to gather along time from `like` (time, games, ...)."""
    return index.reshape(index.shape + (1,) * (like.dim() - 2)).expand_as(like)


def sequences(columns: dict, state_in: list, valid: torch.Tensor, valid_steps: torch.Tensor,
              max_seq_len: int) -> tuple[dict, list, torch.Tensor]:
    """A recurrent policy's rows per (game, agent) in time order, cut into sequences of at most `max_seq_len` that
    start at the fragment's start, at each episode start and every `max_seq_len` rows after.

    Args:
        columns: name -> (time, games, agents, ...) tensors; state_in: the state tensors, the same way.
        valid: (time, games, agents) rows to keep; valid_steps: (time, games).

    Returns:
        the columns' kept rows, the state at each sequence's first row, and the sequence lengths.
    """
    time_steps = len(valid_steps)
    index = torch.arange(time_steps, device=valid_steps.device).unsqueeze(1).expand_as(valid_steps)
    follows_restart = torch.cat([torch.ones_like(valid_steps[:1]), ~valid_steps[:-1]])
    chunk_start = torch.where(valid_steps & follows_restart, index, torch.full_like(index, -1))
    position = index - torch.cummax(chunk_start, dim=0).values
    starts = (valid_steps & (position % max_seq_len == 0)).unsqueeze(-1).expand_as(valid)

    def lanes(tensor: torch.Tensor) -> torch.Tensor:
        """(time, games, agents, ...) -> rows ordered (game, agent, time), valid rows only."""
        lane_major = tensor.transpose(0, 1).transpose(1, 2)
        return lane_major[valid.transpose(0, 1).transpose(1, 2).to(tensor.device)]

    is_start = lanes(starts)
    first_rows = is_start.nonzero().flatten()
    seq_lens = torch.diff(first_rows, append=torch.tensor([len(is_start)], device=first_rows.device))
    return ({key: lanes(column) for key, column in columns.items()},
            [lanes(state)[is_start.to(state.device)] for state in state_in], seq_lens)


def unsupported(policy, replayed: bool) -> str | None:
    """Why the columns above cannot train `policy` (None when they can): `replayed` policies learn from replayed
    transitions (no advantages in their view requirements) and must weight them (DQN, SAC); recurrent models need
    the policy's own state at each step, which the runner keeps only for models that read their last state alone."""
    if replayed and PRIO_WEIGHTS not in policy.view_requirements:
        return "its algorithm trains on neither advantages nor replayed transitions; it needs RLlib's stock sampler"
    if not policy.is_recurrent():
        return None
    if replayed:
        return "recurrent models of replay-based algorithms need RLlib's stock sampler"
    requirement = policy.view_requirements.get("state_in_0")
    if requirement is not None and requirement.shift_from is not None:
        return "attention nets over past states (use_attention) need RLlib's stock sampler"
    model_config = policy.config.get("model") or {}
    if model_config.get("lstm_use_prev_action") or model_config.get("lstm_use_prev_reward"):
        return "lstm_use_prev_action/lstm_use_prev_reward need RLlib's stock sampler"
    return None
