"""Envs that run one game per instance (PettingZoo Parallel and AEC envs, RLlib `MultiAgentEnv`s, gymnasium envs),
stepped `num_envs` copies at a time behind the `BatchedEnv` interface (envs/batched.py), so that the batched env
runner samples them as arrays like any vectorized simulator: the games' own `step` is the only per-game cost.

Each kind of env is first seen through one small adapter with PettingZoo's Parallel API (`reset(seed) ->
(observations, infos)`, `step(actions) -> (observations, rewards, terminations, truncations, infos)`, dicts keyed by
agent) that also says which agents act on the next step (`acting`):

  - PettingZoo `ParallelEnv`: as it is; every agent in `env.agents` acts;
  - PettingZoo `AECEnv` (turn-based games): one step is one turn: the agent in `agent_selection` acts, the others
    observe; agents that finished are stepped with `None` as AEC requires; every agent's reward of the turn counts;
  - RLlib `MultiAgentEnv`: the agents it returns observations for act (a turn-based one returns only the mover's);
  - gymnasium `Env`: one agent, `agent_0`.

`GameCopies` lays the copies out as arrays (games, possible agents, widest observation): observations are flattened
to float32 (a `Discrete` one-hot, as `gymnasium.spaces.flatten` does); an image (a Box (H, W, C)) keeps its shape in
the space the policies see, so that its default model is a convnet (marlkit/default_models.py), and uint8 pixels are
scaled to [0, 1]. An observation with an action mask, as PettingZoo's `{"observation": ..., "action_mask": ...}` or
the project's `{"observations": ..., "action_mask": ...}`, becomes the project's masking convention
(envs/masking.py), which the models in model/ apply. An agent that is not in the game (it left, or has not joined)
or does not act this step (another player's turn) still has a row: its observation (zeros when it is not in the
game), zero reward, and its action is ignored; a masked agent's mask then allows action 0 alone, so its policy makes
no choice there and learns nothing from that row but the value of the state, as BenchMARL pads turn-based PettingZoo
games. A game ends when no agent is left (PettingZoo) or `__all__` says so (RLlib); it is truncated when every agent
was truncated, else terminated, and restarts on the next step.

Example:
    >>> from mpe2 import simple_spread_v3
    >>> games = GameCopies(lambda: simple_spread_v3.parallel_env(N=3), num_envs=4)
    >>> games.reset(seed=0).shape
    (4, 3, 18)
    >>> observations, rewards, terminated, truncated = games.step(np.zeros((4, 3, 1), dtype=np.int64))
    >>> rewards.shape, terminated.shape
    ((4, 3), (4,))
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
from pettingzoo.utils.env import AECEnv, ParallelEnv
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs import masking
from envs.batched import BatchedEnv, action_width

SINGLE_AGENT = "agent_0"  # the id of a gymnasium env's one agent
MASK_KEY = masking.MASK_KEY  # PettingZoo's key for action masks is the project's
OBSERVATION_KEYS = ("observation", masking.OBSERVATIONS_KEY)  # PettingZoo's and the project's


class ParallelGame:
    """A PettingZoo `ParallelEnv` (the API every adapter here speaks)."""

    def __init__(self, env: ParallelEnv):
        self.env = env
        self.possible_agents = list(env.possible_agents)

    def observation_space(self, agent: str) -> gym.Space:
        return self.env.observation_space(agent)

    def action_space(self, agent: str) -> gym.Space:
        return self.env.action_space(agent)

    def reset(self, seed: int | None):
        return self.env.reset(seed=seed)

    def step(self, actions: dict):
        return self.env.step({agent: actions[agent] for agent in self.env.agents})

    def acting(self, observations: dict) -> set:
        return set(self.env.agents)

    def over(self, terminations: dict, truncations: dict) -> bool:
        return not self.env.agents

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class TurnGame(ParallelGame):
    """A PettingZoo `AECEnv` one turn per step: observations of every agent still in the game, the mover acts."""

    def reset(self, seed: int | None):
        self.env.reset(seed=seed)
        return self._observations(), {agent: {} for agent in self.env.agents}

    def _observations(self) -> dict:
        return {agent: self.env.observe(agent) for agent in self.env.agents}

    def step(self, actions: dict):
        env = self.env
        rewards = {agent: 0.0 for agent in self.possible_agents}
        terminations, truncations = {}, {}
        env.step(actions[env.agent_selection])
        while True:
            for agent, reward in env.rewards.items():
                rewards[agent] += float(reward)
            terminations.update(env.terminations)
            truncations.update(env.truncations)
            if not env.agents or not (env.terminations[env.agent_selection] or env.truncations[env.agent_selection]):
                break
            env.step(None)  # AEC: an agent that finished is stepped with None until it leaves
        return self._observations(), rewards, terminations, truncations, {agent: env.infos.get(agent, {})
                                                                          for agent in env.agents}

    def acting(self, observations: dict) -> set:
        return {self.env.agent_selection} if self.env.agents else set()


class RLlibGame(ParallelGame):
    """An RLlib `MultiAgentEnv` (its `__all__` flags end the game)."""

    def __init__(self, env: MultiAgentEnv):
        self.env = env
        self.possible_agents = list(getattr(env, "possible_agents", None) or sorted(env.get_agent_ids()))

    def observation_space(self, agent: str) -> gym.Space:
        return self.env.get_observation_space(agent)

    def action_space(self, agent: str) -> gym.Space:
        return self.env.get_action_space(agent)

    def step(self, actions: dict):
        return self.env.step(actions)

    def acting(self, observations: dict) -> set:
        return set(observations)

    def over(self, terminations: dict, truncations: dict) -> bool:
        return bool(terminations.get("__all__") or truncations.get("__all__"))


class GymGame(ParallelGame):
    """A gymnasium `Env`: one agent, `agent_0`."""

    def __init__(self, env: gym.Env):
        self.env = env
        self.possible_agents = [SINGLE_AGENT]

    def observation_space(self, agent: str) -> gym.Space:
        return self.env.observation_space

    def action_space(self, agent: str) -> gym.Space:
        return self.env.action_space

    def reset(self, seed: int | None):
        observation, info = _values(self.env.reset(seed=seed), "reset", "(observation, info)")
        return {SINGLE_AGENT: observation}, {SINGLE_AGENT: info}

    def step(self, actions: dict):
        observation, reward, terminated, truncated, info = _values(
            self.env.step(actions[SINGLE_AGENT]), "step", "(observation, reward, terminated, truncated, info)")
        return ({SINGLE_AGENT: observation}, {SINGLE_AGENT: reward}, {SINGLE_AGENT: terminated},
                {SINGLE_AGENT: truncated}, {SINGLE_AGENT: info})

    def acting(self, observations: dict) -> set:
        return {SINGLE_AGENT}

    def over(self, terminations: dict, truncations: dict) -> bool:
        return bool(terminations[SINGLE_AGENT] or truncations[SINGLE_AGENT])


def _values(result, call: str, names: str) -> tuple:
    count = names.count(",") + 1
    if not isinstance(result, tuple) or len(result) != count:
        size = len(result) if isinstance(result, tuple) else type(result).__name__
        raise ValueError(f"{call}() returned {size} values; a gymnasium env returns {count}: {names}")
    return result


def as_game(env):
    """The adapter of `env` (see the module docstring); TypeError for an object that is none of these envs."""
    for kind, adapter in GAME_KINDS.items():
        if isinstance(env, kind):
            return adapter(env)
    raise TypeError(f"{type(env).__name__} is not a PettingZoo ParallelEnv or AECEnv, an RLlib MultiAgentEnv or a "
                    f"gymnasium Env")


# Checked in this order: an RLlib MultiAgentEnv is also a gymnasium Env.
GAME_KINDS = {ParallelEnv: ParallelGame, AECEnv: TurnGame, MultiAgentEnv: RLlibGame, gym.Env: GymGame}


class ObservationLayout:
    """How one agent's observations are laid out in the batch: the space the policies see (a float32 Box, flat or an
    image (H, W, C), or the project's mask Dict over one), its width, and the encoding of one observation into a row
    (flattened)."""

    def __init__(self, space: gym.Space):
        self.masked = isinstance(space, gym.spaces.Dict) and MASK_KEY in space.spaces
        inner = space
        if self.masked:
            keys = [key for key in space.spaces if key != MASK_KEY]
            if len(keys) != 1 or keys[0] not in OBSERVATION_KEYS:
                raise ValueError(f"an observation with an action mask is a Dict of '{MASK_KEY}' and one of "
                                 f"{' or '.join(OBSERVATION_KEYS)}, got keys {sorted(space.spaces)}")
            self.key, inner = keys[0], space[keys[0]]
            self.mask_size = int(gym.spaces.flatdim(space[MASK_KEY]))
        self.inner = inner
        self.is_box = isinstance(inner, gym.spaces.Box)
        image = self.is_box and len(inner.shape) == 3
        # uint8 pixels are scaled to [0, 1], as image pipelines do, so that every model and critic sees small inputs
        self.scale = 1.0 / 255.0 if image and inner.dtype == np.uint8 else 1.0
        # an image (H, W, C) keeps its shape for the policies' models (a convnet); anything else is flattened
        kept = inner if image else gym.spaces.flatten_space(inner)
        low, high = kept.low.astype(np.float32) * self.scale, kept.high.astype(np.float32) * self.scale
        box = gym.spaces.Box(low, high, dtype=np.float32)
        # gymnasium's Dict orders its keys, so RLlib flattens the mask Dict mask first, then the observations.
        self.space = masking.wrap_space(box, self.mask_size) if self.masked else box
        self.width = int(gym.spaces.flatdim(self.space))
        if self.masked:
            self.only_first = np.zeros(self.mask_size, dtype=np.float32)
            self.only_first[0] = 1.0

    def write(self, row: np.ndarray, observation, acts: bool) -> None:
        """Writes one observation into `row` (the agent's leading `width` entries); a masked agent that does not act
        gets a mask that allows action 0 alone."""
        if self.masked:
            row[:self.mask_size] = np.asarray(observation[MASK_KEY], dtype=np.float32).reshape(-1) if acts \
                else self.only_first
            row, observation = row[self.mask_size:self.width], observation[self.key]
        values = np.asarray(observation, dtype=np.float32).reshape(-1) if self.is_box \
            else gym.spaces.flatten(self.inner, observation)
        row[:len(values)] = values * self.scale

    def write_absent(self, row: np.ndarray) -> None:
        row[:self.width] = 0.0
        if self.masked:
            row[:self.mask_size] = self.only_first


class GameCopies(BatchedEnv):
    """`num_envs` copies of a one-game env as a `BatchedEnv` (see the module docstring).

    Args:
        make_env: () -> a new env (PettingZoo Parallel or AEC, RLlib MultiAgentEnv or gymnasium Env).
        num_envs: games stepped per call.
    """

    def __init__(self, make_env: Callable[[], object], num_envs: int = 1):
        self.num_envs = int(num_envs)
        self.games = [as_game(make_env()) for _ in range(self.num_envs)]
        first = self.games[0]
        self.possible_agents = list(first.possible_agents)
        self.layouts = {agent: ObservationLayout(first.observation_space(agent)) for agent in self.possible_agents}
        self.observation_spaces = {agent: layout.space for agent, layout in self.layouts.items()}
        self.action_spaces = {agent: first.action_space(agent) for agent in self.possible_agents}
        self._action_layout = []  # per agent: (position, id, kind, width, dtype, shape) of its action
        for position, agent in enumerate(self.possible_agents):
            space = self.action_spaces[agent]
            try:
                width = action_width(space)
            except ValueError as error:
                raise ValueError(f"agent {agent}: {error}") from None
            kind = "discrete" if isinstance(space, gym.spaces.Discrete) else "array"
            dtype = np.int64 if isinstance(space, gym.spaces.MultiDiscrete) else space.dtype
            self._action_layout.append((position, agent, kind, width, dtype, space.shape))
        width = max(layout.width for layout in self.layouts.values())
        self._observations = np.zeros((self.num_envs, len(self.possible_agents), width), dtype=np.float32)
        self._rewards = np.zeros((self.num_envs, len(self.possible_agents)), dtype=np.float32)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._restart = np.zeros(self.num_envs, dtype=bool)
        self._acting = [set() for _ in self.games]
        self._infos = [{} for _ in self.games]
        # PettingZoo's global state, where the env has one (MPE's: every agent's observation)
        space = getattr(first.env, "state_space", None)
        self.state_space = gym.spaces.flatten_space(space) if isinstance(space, gym.spaces.Space) else None

    def reset(self, seed: int | None = None):
        self._restart[:] = False
        for index, game in enumerate(self.games):
            observations, self._infos[index] = game.reset(None if seed is None else seed + index)
            self._write(index, observations)
        return self._observations

    def _write(self, index: int, observations: dict) -> None:
        game, rows = self.games[index], self._observations[index]
        self._acting[index] = game.acting(observations)
        for position, agent in enumerate(self.possible_agents):
            if agent in observations:
                self.layouts[agent].write(rows[position], observations[agent], agent in self._acting[index])
            else:
                self.layouts[agent].write_absent(rows[position])

    def _actions_of(self, actions: np.ndarray, index: int) -> dict:
        chosen, acting = {}, self._acting[index]
        for position, agent, kind, width, dtype, shape in self._action_layout:
            if agent in acting:
                row = actions[index, position]
                chosen[agent] = int(row[0]) if kind == "discrete" else row[:width].astype(dtype).reshape(shape)
        return chosen

    def step(self, actions):
        actions = actions.detach().cpu().numpy() if hasattr(actions, "detach") else np.asarray(actions)
        self._rewards[:] = 0.0
        self._terminated[:] = False
        self._truncated[:] = False
        for index, game in enumerate(self.games):
            if self._restart[index]:  # next-step auto-reset: the finished game starts again, its actions ignored
                observations, self._infos[index] = game.reset(None)
                self._write(index, observations)
                continue
            observations, rewards, terminations, truncations, self._infos[index] = game.step(
                self._actions_of(actions, index))
            for position, agent in enumerate(self.possible_agents):
                self._rewards[index, position] = rewards.get(agent, 0.0)
            self._write(index, observations)
            if game.over(terminations, truncations):
                cut = [truncations.get(agent, False) for agent in self.possible_agents if agent in truncations]
                truncated = bool(truncations.get("__all__", cut and all(cut)))
                self._truncated[index], self._terminated[index] = truncated, not truncated
        self._restart = self._terminated | self._truncated
        return self._observations, self._rewards, self._terminated, self._truncated

    def state(self) -> np.ndarray:
        """(num_envs, state size) float32: each game's `state()` after the last reset or step."""
        if self.state_space is None:
            raise ValueError("this env has no global state (state_space)")
        return np.stack([np.asarray(game.env.state(), dtype=np.float32).reshape(-1) for game in self.games])

    def step_infos(self, game: int) -> dict:
        return {agent: info for agent, info in self._infos[game].items() if agent in self.possible_agents}

    def render(self, game: int = 0):
        return self.games[game].render()

    def close(self) -> None:
        for game in self.games:
            game.close()
