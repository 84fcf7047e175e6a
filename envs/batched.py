"""Batched envs: many games stepped per call, as whole arrays of shape (games, agents, ...).

An env that simulates many games at once (VMAS worlds on a torch device, Bucket Brigade games in a Rust core)
implements `BatchedEnv`; `marlkit.batched_runner` then samples it for training with one policy pass per step for all
agents of all games, instead of RLlib's per-agent sampler. The interface knows nothing of RLlib: plain numpy arrays
or torch tensors in and out.

The contract:
  - `possible_agents`: agent ids; their order is the agent axis of every array.
  - `observation_spaces`, `action_spaces`: per agent; observations are Box spaces (a vector, or an image (H, W, C),
    which the policies' models then see in its shape: `agent_observations`) or the project's mask Dict
    (envs/masking.py); actions Box, Discrete or MultiDiscrete. The arrays carry each agent's observation flattened
    (C order; a Dict as gymnasium flattens it). Agents may differ: arrays are as wide as the widest agent, and a
    narrower agent uses the leading entries (`observation_size`, `action_width`).
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
  - `state_space` and `state() -> (num_envs, state size)` (optional; `state_space` None or absent: no state): the
    global state of every game after the last reset or step (a PettingZoo env's `state()`), which a centralised
    critic reads instead of the joint observation.
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


def agent_observations(observations, agents: list[int], shape: tuple):
    """`agents`' observations from a (games, agents, widest) array (numpy or torch), each cut to the size of
    `shape` and shaped so: (games, len(agents), *shape); an image gets its (H, W, C) back.

    >>> agent_observations(np.arange(12.).reshape(1, 2, 6), [1], (2, 2, 1))[0, 0, :, :, 0]
    array([[6., 7.],
           [8., 9.]])
    """
    size = int(np.prod(shape))
    return observations[:, agents, :size].reshape((observations.shape[0], len(agents)) + tuple(shape))


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


class FlatActions(BatchedEnv):
    """A batched env whose MultiDiscrete agents act in one Discrete space over every combination of their choices
    (MultiDiscrete([10, 2, 2]) -> Discrete(40), row-major as `np.ravel_multi_index`): the view value-based learners
    (DQN, SAC) need. Scripted policies keep acting by rule; their actions are encoded the same way. Everything
    else is the wrapped env's.

    Example:
        >>> flat = FlatActions.__new__(FlatActions)
        >>> flat._encode(np.array([[3, 1, 0]]), np.array([10, 2, 2])), flat._decode(torch.tensor([14]), np.array([10, 2, 2]))
        (array([14]), tensor([[3, 1, 0]]))
    """

    def __init__(self, env: BatchedEnv):
        self.env = env
        self.num_envs, self.possible_agents, self.device = env.num_envs, list(env.possible_agents), env.device
        self.observation_spaces = env.observation_spaces
        self.choices = {agent: space.nvec.astype(np.int64) for agent, space in env.action_spaces.items()
                        if isinstance(space, gym.spaces.MultiDiscrete)}
        self.action_spaces = {agent: gym.spaces.Discrete(int(np.prod(self.choices[agent]))) if agent in self.choices
                              else space for agent, space in env.action_spaces.items()}
        self._native = zero_actions(env)
        shared = {tuple(nvec) for nvec in self.choices.values()}
        self.scripted_policies = {} if len(shared) != 1 else {  # scripted actions are rows of one action space
            name: FlatScripted(act, np.array(next(iter(shared))))
            for name, act in getattr(env, "scripted_policies", {}).items()}

    @staticmethod
    def _encode(actions: np.ndarray, nvec: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(actions.reshape(len(actions), -1).T.astype(np.int64)), nvec)

    @staticmethod
    def _decode(index: torch.Tensor, nvec: np.ndarray) -> torch.Tensor:
        digits, index = [], index.long()
        for n in nvec[::-1]:
            digits.append(index % int(n))
            index = torch.div(index, int(n), rounding_mode="floor")
        return torch.stack(digits[::-1], dim=-1)

    def reset(self, seed: int | None = None):
        return self.env.reset(seed)

    def step(self, actions):
        actions = torch.as_tensor(actions, device=self._native.device)
        for i, agent in enumerate(self.possible_agents):
            if agent in self.choices:
                nvec = self.choices[agent]
                self._native[:, i, :len(nvec)] = self._decode(actions[:, i, 0], nvec).to(self._native.dtype)
            else:
                width = action_width(self.action_spaces[agent])
                self._native[:, i, :width] = actions[:, i, :width].to(self._native.dtype)
        return self.env.step(self._native)

    def set_task(self, task: dict) -> None:
        self.env.set_task(task)

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str):
        """The wrapped env's own extras (`step_infos`, `render`, ...)."""
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


class FlatScripted:
    """A scripted policy of a MultiDiscrete env acting in its `FlatActions` view (picklable: policies travel to the
    env runners with their config)."""

    def __init__(self, act: Callable, nvec: np.ndarray):
        self.act, self.nvec = act, nvec

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return FlatActions._encode(np.asarray(self.act(observations, rng=rng)), self.nvec)
