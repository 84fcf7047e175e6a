"""Batched envs: many games stepped per call, as whole arrays of shape (games, agents, ...).

An env that simulates many games at once (VMAS worlds on a torch device, Bucket Brigade games in a Rust core)
implements `BatchedEnv`; `marlkit.batched_runner` then samples it for training with one policy pass per step for all
agents of all games, instead of RLlib's per-agent sampler. The interface knows nothing of RLlib: plain numpy arrays
or torch tensors in and out.

The contract:
  - `possible_agents`: agent ids; their order is the agent axis of every array.
  - `observation_spaces`, `action_spaces`: per agent; observations are Box spaces (flattened), actions Box,
    Discrete or MultiDiscrete. Agents may differ: arrays are as wide as the widest agent, and a narrower agent uses
    the leading entries (`observation_size`, `action_width`).
  - `reset(seed=None) -> observations`: starts a game in every slot; float (num_envs, num_agents, observation size).
  - `step(actions) -> (observations, rewards, terminated, truncated)`: `actions` is a torch tensor on `device`,
    (num_envs, num_agents, action width), float for Box actions, int64 otherwise; rewards are float
    (num_envs, num_agents), the flags bool (num_envs,). A game that terminated or was truncated restarts on the next
    step (Gymnasium 1.x next-step auto-reset): that step ignores the game's actions and returns its new first
    observation, zero rewards and false flags. The returned arrays may be reused by the next call.
  - `device`: the torch device actions arrive on (numpy envs: "cpu").
  - `scripted_policies` (optional): name -> `act(observations (rows, size), rng) -> actions (rows, width)`, agents
    that act by rule on whole arrays (YAML: `heuristic: <name>`).
  - `step_infos(game) -> {agent: dict}` (optional): the infos of the last step of one game (rollout.py
    --save-info records them).
  - `set_task(task)` (optional: curricula) and `close()`.

Example, a complete batched env (a game per slot: every agent sees one bit and is paid for repeating it):

    >>> import numpy as np, gymnasium as gym
    >>> class RepeatBit(BatchedEnv):
    ...     def __init__(self, num_envs, length=3):
    ...         self.num_envs, self.length = num_envs, length
    ...         self.possible_agents = ["agent_0", "agent_1"]
    ...         self.observation_spaces = {a: gym.spaces.Box(0, 1, (1,)) for a in self.possible_agents}
    ...         self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents}
    ...         self.rng = np.random.default_rng(0)
    ...     def reset(self, seed=None):
    ...         self.rng = np.random.default_rng(seed)
    ...         self.bits = self.rng.integers(0, 2, (self.num_envs, 2, 1)).astype(np.float32)
    ...         self.night = np.zeros(self.num_envs, dtype=np.int64)
    ...         self.restart = np.zeros(self.num_envs, dtype=bool)
    ...         return self.bits
    ...     def step(self, actions):
    ...         rewards = (actions.numpy()[..., 0] == self.bits[..., 0]).astype(np.float32)
    ...         self.night += 1
    ...         new = self.restart  # next-step auto-reset of the games that ended last step
    ...         self.night[new], rewards[new] = 0, 0.0
    ...         self.bits = self.rng.integers(0, 2, self.bits.shape).astype(np.float32)
    ...         truncated = self.night >= self.length
    ...         self.restart = truncated
    ...         return self.bits, rewards, np.zeros(self.num_envs, dtype=bool), truncated
    >>> import torch
    >>> env = RepeatBit(num_envs=4)
    >>> env.reset(seed=0).shape
    (4, 2, 1)
    >>> observations, rewards, terminated, truncated = env.step(torch.zeros(4, 2, 1, dtype=torch.int64))
    >>> rewards.shape, truncated.shape
    ((4, 2), (4,))

Register it in `envs/__init__.py` with `EnvEntry(create_batch=<env_config -> RepeatBit>, check_config=...)`: RLlib's
stock sampler, rollouts and videos see it through the generic adapters of envs/rllib_adapters.py.
"""

from __future__ import annotations

import abc
from typing import Callable

import gymnasium as gym
import numpy as np
import torch


class BatchedEnv(abc.ABC):
    """`num_envs` games of `possible_agents`, stepped together on whole arrays (see the module docstring)."""

    num_envs: int
    possible_agents: list[str]
    observation_spaces: dict[str, gym.Space]
    action_spaces: dict[str, gym.Space]
    device: str = "cpu"
    scripted_policies: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {}

    @abc.abstractmethod
    def reset(self, seed: int | None = None):
        """Starts a game in every slot (seeding the env's random streams when `seed` is given); observations."""

    @abc.abstractmethod
    def step(self, actions):
        """One step of every game: (observations, rewards, terminated, truncated), next-step auto-reset."""

    def set_task(self, task: dict) -> None:
        """Changes task parameters of the running games (a curriculum stage)."""
        raise ValueError(f"{type(self).__name__} has no task parameters that can change while it runs")

    def close(self) -> None:
        pass


def observation_size(space: gym.Space) -> int:
    return int(gym.spaces.flatdim(space))


def action_width(space: gym.Space) -> int:
    """Entries one agent's action takes in the action array: Box its flat size, Discrete 1, MultiDiscrete one each."""
    if isinstance(space, gym.spaces.Discrete):
        return 1
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiDiscrete)):
        return int(np.prod(space.shape))
    raise ValueError(f"batched envs take Box, Discrete or MultiDiscrete actions, not {space}")


def zero_actions(env: BatchedEnv) -> torch.Tensor:
    """An action array for `env` filled with zeros: (num_envs, agents, widest action) on `env.device`, float when any
    agent acts in a Box, else int64."""
    spaces = [env.action_spaces[agent] for agent in env.possible_agents]
    floats = any(isinstance(space, gym.spaces.Box) for space in spaces)
    return torch.zeros(env.num_envs, len(spaces), max(action_width(space) for space in spaces),
                       device=torch.device(env.device), dtype=torch.float32 if floats else torch.int64)
