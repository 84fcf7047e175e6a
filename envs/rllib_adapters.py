"""RLlib's env APIs over any `BatchedEnv` (envs/batched.py), so that an env implements the batched interface only.

- `OneGameEnv`: a one-game batch as an RLlib `MultiAgentEnv` (rollouts, videos, space probes, RLlib's stock sampler
  with one game per env runner);
- `GamesBaseEnv`: a batch of games as an RLlib old-stack `BaseEnv` (RLlib's stock sampler with several games per env
  runner: recurrent nets with previous actions, attention nets, algorithms the batched runner does not serve).

A finished game restarts on the batch's next step (next-step auto-reset). `GamesBaseEnv` therefore answers RLlib's
`try_reset` of one game asynchronously: the restart step gives the game zero actions, and its new first observation
reaches RLlib with the next `poll`, which starts the new episode.

Example:
    >>> from envs.vmas_env import VmasBatch
    >>> env = OneGameEnv(VmasBatch({"scenario": "navigation", "n_agents": 3, "max_steps": 50}))
    >>> obs, infos = env.reset(seed=0)
    >>> sorted(obs), obs["agent_0"].shape
    (['agent_0', 'agent_1', 'agent_2'], (18,))
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.base_env import ASYNC_RESET_RETURN, BaseEnv
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.batched import BatchedEnv, action_width, observation_size, zero_actions


class _Arrays:
    """Conversion between a batch's arrays (games, agents, ...) and RLlib's per-agent dicts."""

    def _wrap(self, batch: BatchedEnv) -> None:
        self.batch = batch
        self.possible_agents = list(batch.possible_agents)
        self.observation_spaces, self.action_spaces = dict(batch.observation_spaces), dict(batch.action_spaces)
        self._observation_views = [(observation_size(self.observation_spaces[a]), self.observation_spaces[a].shape)
                                   for a in self.possible_agents]
        self._action_widths = [action_width(self.action_spaces[a]) for a in self.possible_agents]
        self._actions = zero_actions(batch)

    def _agent_observations(self, observations: np.ndarray, game: int) -> dict:
        """One game's per-agent observations (from the batch's observations as numpy), each cut to its agent's size
        and shaped as its space (a Dict one, as an action mask comes, unflattened)."""
        rows = observations[game]
        return {agent: rows[index, :size].astype(np.float32).reshape(shape) if shape is not None
                else gym.spaces.unflatten(self.observation_spaces[agent], rows[index, :size].astype(np.float32))
                for index, (agent, (size, shape)) in enumerate(zip(self.possible_agents, self._observation_views))}

    def _set_actions(self, game: int, per_agent: dict) -> None:
        """Writes one game's actions into the batch's action array (agents without an action keep zeros)."""
        self._actions[game].zero_()
        for index, agent in enumerate(self.possible_agents):
            if agent in per_agent:
                action = torch.as_tensor(np.asarray(per_agent[agent]), dtype=self._actions.dtype)
                self._actions[game, index, :self._action_widths[index]] = action.reshape(-1).to(self._actions.device)

    def _infos(self, game: int) -> dict:
        """The last step's infos of one game, where the batch keeps them (`step_infos`), else empty."""
        step_infos = getattr(self.batch, "step_infos", None)
        return step_infos(game) if step_infos else {}

    def _frame(self, game: int):
        render = getattr(self.batch, "render", None)
        return render(game) if render else None

    def __getattr__(self, name: str):
        """The batch's own extras (`scripted_policies`, `render`, `set_task`, ...) on the adapter."""
        if name == "batch":
            raise AttributeError(name)
        return getattr(self.batch, name)


class OneGameEnv(_Arrays, MultiAgentEnv):
    """A one-game `BatchedEnv` as an RLlib `MultiAgentEnv` (one episode at a time: RLlib calls `reset` after each).

    Args:
        batch: a `BatchedEnv` with `num_envs` 1.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, batch: BatchedEnv):
        MultiAgentEnv.__init__(self)
        if batch.num_envs != 1:
            raise ValueError(f"OneGameEnv takes a batch of one game, got {batch.num_envs}")
        self._wrap(batch)
        self.agents = list(self.possible_agents)
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observations = self.batch.reset(seed)
        return self._agent_observations(_numpy(observations), 0), {agent: {} for agent in self.possible_agents}

    def step(self, action_dict: dict):
        missing = [agent for agent in self.possible_agents if agent not in action_dict]
        if missing:
            raise ValueError(f"no action for {missing[0]}: every agent acts every step")
        self._set_actions(0, action_dict)
        observations, rewards, terminated, truncated = self.batch.step(self._actions)
        rewards, terminated, truncated = _numpy(rewards)[0], bool(_numpy(terminated)[0]), bool(_numpy(truncated)[0])
        infos = self._infos(0)
        return (self._agent_observations(_numpy(observations), 0),
                {agent: float(rewards[index]) for index, agent in enumerate(self.possible_agents)},
                {**{agent: terminated for agent in self.possible_agents}, "__all__": terminated},
                {**{agent: truncated for agent in self.possible_agents}, "__all__": truncated},
                {agent: infos.get(agent, {}) for agent in self.possible_agents})

    def render(self):
        """The batch's frame of its game (gymnasium's `render` would hide the batch's); None for a batch that does not
        render."""
        return self._frame(0)

    def close(self) -> None:
        self.batch.close()


class GamesBaseEnv(_Arrays, BaseEnv):
    """A `BatchedEnv` of `num_envs` games as an RLlib old-stack `BaseEnv`: one batch step per `send_actions`.

    Args:
        batch: a `BatchedEnv`.
    """

    def __init__(self, batch: BatchedEnv):
        self._wrap(batch)
        self.num_envs = batch.num_envs
        self._reset_seed = None
        self._pending = None  # what the next poll() returns; None: the games are still to be started

    @property
    def observation_space(self) -> gym.Space:
        return gym.spaces.Dict(self.observation_spaces)

    @property
    def action_space(self) -> gym.Space:
        return gym.spaces.Dict(self.action_spaces)

    def get_agent_ids(self) -> set:
        return set(self.possible_agents)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> None:
        """Seeds the start of the games at the next poll (RLlib calls this once per env runner with its seed)."""
        self._reset_seed = seed
        self._pending = None

    def poll(self):
        if self._pending is None:
            observations = _numpy(self.batch.reset(self._reset_seed))
            games = range(self.num_envs)
            self._pending = ({g: self._agent_observations(observations, g) for g in games}, {g: {} for g in games},
                             *({g: {"__all__": False} for g in games} for _ in range(2)), {g: {} for g in games})
        pending, self._pending = self._pending, ({}, {}, {}, {}, {})
        return (*pending, {})

    def send_actions(self, action_dict: dict) -> None:
        """Steps every game; a game without actions (one restarting after `try_reset`) gets zeros, which the batch
        ignores for it."""
        for game in range(self.num_envs):
            self._set_actions(game, action_dict.get(game, {}))
        observations, rewards, terminated, truncated = self.batch.step(self._actions)
        observations, rewards = _numpy(observations), _numpy(rewards)
        terminated, truncated = _numpy(terminated), _numpy(truncated)
        games = range(self.num_envs)
        self._pending = (
            {g: self._agent_observations(observations, g) for g in games},
            {g: {agent: float(rewards[g, i]) for i, agent in enumerate(self.possible_agents)} for g in games},
            {g: _flags(self.possible_agents, terminated[g]) for g in games},
            {g: _flags(self.possible_agents, truncated[g]) for g in games},
            {g: self._infos(g) for g in games},
        )

    def try_reset(self, env_id=None, *, seed=None, options=None):
        if env_id is None:
            self.reset(seed=seed)
            observations = self.poll()[0]
            return observations, {g: {} for g in observations}
        return ASYNC_RESET_RETURN, ASYNC_RESET_RETURN  # the game restarts at the next step

    def try_render(self, env_id=None):
        return self._frame(env_id or 0)

    def stop(self) -> None:
        self.batch.close()


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _flags(agents: list[str], flag) -> dict:
    return {**{agent: bool(flag) for agent in agents}, "__all__": bool(flag)}


def rllib_env(batch: BatchedEnv):
    """The RLlib env of a batch: `OneGameEnv` for one game, else `GamesBaseEnv`."""
    return OneGameEnv(batch) if batch.num_envs == 1 else GamesBaseEnv(batch)
