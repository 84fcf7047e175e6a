"""Bucket Brigade in RLlib: `env: bucket_brigade` and scripted opponents as fixed (non-learning) policies.

`env_config`:
    scenario        a name of `SCENARIOS` (default "default"); unknown names list the available ones.
    num_agents      agents per game (default 4), ids `agent_0` ... `agent_<N-1>`.
    max_nights      nights before a game is truncated (default 100).
    seed            seed of the game's random stream when RLlib resets without one.
    reward_scale    multiplies the rewards RLlib sees (default 1). The team term pays ~100 a night, so returns reach
                    ~1,000; 0.01 keeps value targets near 1-10, where critics learn quickly. Metrics are scaled too.
    any `Scenario` parameter, e.g. spread_before_burnout: true, prob_house_catches_fire: 0.05.

Observations are the core's per-agent rows (see envs/bucket_brigade/__init__.py) with the large-valued entries
scaled for neural networks: scenario features divided by `FEATURE_SCALES` and the night by max_nights. Houses,
signals, locations, last actions and identity keep their raw values (the heuristics read them). Actions are
`MultiDiscrete([houses, 2, 2])` = (house, mode, signal). The game offers no global state beyond its observations: a
centralised critic (`multiagent.critic: centralized`, marlkit/mappo.py) reads the joint observation of all agents of
the game, scripted ones included.

Scripted opponents in an experiment YAML (see config/bucket-brigade-ppo.yaml):

    multiagent:
      policies:
        learner: {agents: agent_0}
        firefighter: {agents: agent_1, heuristic: firefighter}     # firefighter, free_rider, hero, coordinator,
        others: {agents: ["agent_2", "agent_3"], heuristic: random} # liar, random, rest
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.batched import BatchedEnv
from envs.bucket_brigade import heuristics
from envs.bucket_brigade.native import VecEnv, check_sizes
from envs.bucket_brigade.scenarios import SCENARIOS, Scenario, obs_layout
from marlkit.errors import ConfigError, closest

WRAPPER_KEYS = ("scenario", "num_agents", "max_nights", "seed", "reward_scale", "num_envs")
SCENARIO_KEYS = tuple(name for name in Scenario.__dataclass_fields__)
DEFAULT_AGENTS, DEFAULT_MAX_NIGHTS = 4, 100
FEATURE_SCALES = np.array([1, 1, 100, 100, 1, 1, 20, 10, 100, 100, 100, 100], dtype=np.float32)


def check_config(env_config: dict) -> None:
    """Raises ConfigError for an env_config the game cannot run (checked before Ray starts)."""
    build_scenario(env_config)
    scale = env_config.get("reward_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ConfigError(f"env_config.reward_scale must be a number > 0, got {scale!r}")
    try:
        check_sizes(env_config.get("num_envs", 1), env_config.get("num_agents", DEFAULT_AGENTS),
                    env_config.get("max_nights", DEFAULT_MAX_NIGHTS))
    except ValueError as error:
        raise ConfigError(f"env_config.{error}") from None


def build_scenario(env_config: dict) -> Scenario:
    name = env_config.get("scenario", "default")
    if name not in SCENARIOS:
        raise ConfigError(f"unknown Bucket Brigade scenario '{name}'{closest(str(name), SCENARIOS)}; "
                          f"available: {', '.join(SCENARIOS)}")
    options = {k: v for k, v in env_config.items() if k not in WRAPPER_KEYS}
    unknown = [key for key in options if key not in SCENARIO_KEYS]
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]} is not a Bucket Brigade setting{closest(unknown[0], WRAPPER_KEYS + SCENARIO_KEYS)}; "
                          f"known: {', '.join(WRAPPER_KEYS + SCENARIO_KEYS)}")
    return SCENARIOS[name].with_options(**options)


class BucketBrigadeBatch(BatchedEnv):
    """`num_envs` Bucket Brigade games stepped together by the Rust core, as a `BatchedEnv` (envs/batched.py):
    scaled float32 observations (num_envs, num_agents, obs_dim), int64 actions (num_envs, num_agents, 3),
    rewards times `reward_scale`; finished games restart on the next step (the core's own auto-reset).

    Args:
        env_config: the `env_config` of the module docstring, plus `num_envs` (games, default 1).
    """

    def __init__(self, env_config: dict | None = None):
        env_config = dict(env_config or {})
        check_config(env_config)
        self.scenario = build_scenario(env_config)
        self.num_envs = env_config.get("num_envs", 1)
        num_agents = env_config.get("num_agents", DEFAULT_AGENTS)
        self.max_nights = env_config.get("max_nights", DEFAULT_MAX_NIGHTS)
        self._seed = env_config.get("seed")
        self.reward_scale = float(env_config.get("reward_scale", 1.0))
        self._game = VecEnv(self.scenario, self.num_envs, num_agents, seed=self._seed or 0,
                            max_nights=self.max_nights)
        self.num_houses = self.scenario.num_houses
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        space = gym.spaces.Box(0.0, np.inf, (self._game.obs_dim,), np.float32)
        action_space = gym.spaces.MultiDiscrete([self.num_houses, 2, 2])
        self.observation_spaces = {agent: space for agent in self.possible_agents}
        self.action_spaces = {agent: action_space for agent in self.possible_agents}
        layout = obs_layout(self.num_houses, num_agents)
        self._scale = np.ones(self._game.obs_dim, dtype=np.float32)
        self._scale[layout["scenario"]] = FEATURE_SCALES
        self._scale[layout["night"]] = self.max_nights
        self.scripted_policies = {
            name: functools.partial(heuristics.act, name, num_houses=self.num_houses, num_agents=num_agents)
            for name in heuristics.HEURISTICS
        }

    def scale_observations(self, obs: np.ndarray) -> np.ndarray:
        """The observations policies see, from the core's rows (..., obs_dim)."""
        return obs / self._scale

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is None:
            seed, self._seed = self._seed, None  # later resets continue the seeded stream
        return self.scale_observations(self._game.reset(seed))

    def step(self, actions):
        obs, rewards, terminated, truncated = self._game.step(np.asarray(actions))
        return self.scale_observations(obs), rewards * self.reward_scale, terminated, truncated

    def close(self) -> None:
        self._game.close()


class BucketBrigadeEnv(MultiAgentEnv):
    """One Bucket Brigade game (a one-game `BucketBrigadeBatch`) as an RLlib multi-agent env."""

    def __init__(self, env_config: dict | None = None):
        super().__init__()
        self._games = BucketBrigadeBatch({**(env_config or {}), "num_envs": 1})
        self.agents = self.possible_agents = list(self._games.possible_agents)
        self.observation_spaces, self.action_spaces = self._games.observation_spaces, self._games.action_spaces
        self.num_houses, self.max_nights = self._games.num_houses, self._games.max_nights
        self.scripted_policies = self._games.scripted_policies
        self.scale_observations = self._games.scale_observations

    def _observations(self, obs: np.ndarray) -> dict:
        return {agent: obs[0, index] for index, agent in enumerate(self.agents)}

    def reset(self, *, seed=None, options=None):
        return self._observations(self._games.reset(seed)), {}

    def step(self, action_dict):
        try:
            actions = np.stack([np.asarray(action_dict[agent]) for agent in self.agents])[None]
        except KeyError as missing:
            raise ValueError(f"no action for {missing.args[0]}: every agent acts every night") from None
        obs, rewards, terminated, truncated = self._games.step(actions)
        rewards = {agent: float(rewards[0, index]) for index, agent in enumerate(self.agents)}
        return (self._observations(obs), rewards, {"__all__": bool(terminated[0])}, {"__all__": bool(truncated[0])},
                {})

    def close(self) -> None:
        self._games.close()
