"""Bucket Brigade as a `BatchedEnv` (envs/batched.py): `env: bucket_brigade`, with scripted opponents as fixed
(non-learning) policies.

`env_config`:
    scenario        a name of `SCENARIOS` (default "default"); unknown names list the available ones. A list of
                    names (same number of houses) trains on a mix: a batch of games is split evenly among them, in
                    blocks (game i of n plays scenario i * len // n, for the whole run); a single game
                    (num_envs 1: rollout.py, RLlib's stock sampler) draws one at every start. The scenario
                    features in every observation tell the scenarios apart.
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

from envs.batched import BatchedEnv
from envs.bucket_brigade import heuristics
from envs.bucket_brigade.native import VecEnv, check_sizes
from envs.bucket_brigade.scenarios import SCENARIOS, Scenario, obs_layout
from envs.errors import ConfigError, closest

WRAPPER_KEYS = ("scenario", "num_agents", "max_nights", "seed", "reward_scale", "num_envs")
SCENARIO_KEYS = tuple(name for name in Scenario.__dataclass_fields__)
DEFAULT_AGENTS, DEFAULT_MAX_NIGHTS = 4, 100
FEATURE_SCALES = np.array([1, 1, 100, 100, 1, 1, 20, 10, 100, 100, 100, 100], dtype=np.float32)


def check_config(env_config: dict) -> None:
    """Raises ConfigError for an env_config the game cannot run (checked before Ray starts)."""
    build_scenarios(env_config)
    scale = env_config.get("reward_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ConfigError(f"env_config.reward_scale must be a number > 0, got {scale!r}")
    try:
        check_sizes(env_config.get("num_envs", 1), env_config.get("num_agents", DEFAULT_AGENTS),
                    env_config.get("max_nights", DEFAULT_MAX_NIGHTS))
    except ValueError as error:
        raise ConfigError(f"env_config.{error}") from None


def scenario_names(env_config: dict) -> list[str]:
    """env_config.scenario as a list of names (one name, or the names of a mix)."""
    names = env_config.get("scenario", "default")
    names = names if isinstance(names, list) else [names]
    if not names:
        raise ConfigError("env_config.scenario: an empty list; give a scenario name or a list of them")
    for name in names:
        if not isinstance(name, str) or name not in SCENARIOS:
            raise ConfigError(f"unknown Bucket Brigade scenario {name!r}{closest(str(name), SCENARIOS)}; "
                              f"available: {', '.join(SCENARIOS)}")
    return names


def build_scenarios(env_config: dict) -> list[Scenario]:
    """The scenarios of env_config (one, or the mix of a list), with its scenario parameters applied to each."""
    options = {k: v for k, v in env_config.items() if k not in WRAPPER_KEYS}
    unknown = [key for key in options if key not in SCENARIO_KEYS]
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]} is not a Bucket Brigade setting{closest(unknown[0], WRAPPER_KEYS + SCENARIO_KEYS)}; "
                          f"known: {', '.join(WRAPPER_KEYS + SCENARIO_KEYS)}")
    names = scenario_names(env_config)
    scenarios = [SCENARIOS[name].with_options(**options) for name in names]
    houses = {name: scenario.num_houses for name, scenario in zip(names, scenarios)}
    if len(set(houses.values())) > 1:
        raise ConfigError(f"env_config.scenario: a mix needs scenarios with the same number of houses, got "
                          f"{', '.join(f'{name} ({count})' for name, count in houses.items())}")
    games = env_config.get("num_envs", 1)
    if isinstance(games, int) and 1 < games < len(names):  # one game draws a scenario per start
        raise ConfigError(f"env_config.scenario: a mix of {len(names)} scenarios needs at least {len(names)} games "
                          f"per env runner (num_envs_per_env_runner), got {games}")
    return scenarios


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
        scenarios = build_scenarios(env_config)
        self.num_envs = env_config.get("num_envs", 1)
        if 1 < self.num_envs < len(scenarios):
            raise ValueError(f"a mix of {len(scenarios)} scenarios needs at least {len(scenarios)} games, got "
                             f"{self.num_envs}")
        num_agents = env_config.get("num_agents", DEFAULT_AGENTS)
        self.max_nights = env_config.get("max_nights", DEFAULT_MAX_NIGHTS)
        self._seed = env_config.get("seed")
        self.reward_scale = float(env_config.get("reward_scale", 1.0))
        if self.num_envs == 1 and len(scenarios) > 1:
            # one game of a mix: a core per scenario, one of them drawn at every (re)start of the game
            self._mix = [VecEnv(scenario, 1, num_agents, seed=self._seed or 0, max_nights=self.max_nights)
                         for scenario in scenarios]
            self._draw = np.random.default_rng(self._seed)
            self._games, self._splits = [self._mix[0]], []
        else:
            # scenario j plays games [bounds[j], bounds[j + 1]); each block is one core with its own seed
            bounds = [j * self.num_envs // len(scenarios) for j in range(len(scenarios) + 1)]
            self._mix = []
            self._games = [VecEnv(scenario, end - start, num_agents, seed=(self._seed or 0) + j,
                                  max_nights=self.max_nights)
                           for j, (scenario, start, end) in enumerate(zip(scenarios, bounds, bounds[1:]))]
            self._splits = bounds[1:-1]
        self._game_over = False  # the one game of a mix ended: the next step draws and starts the next
        self.num_houses = scenarios[0].num_houses
        obs_dim = self._games[0].obs_dim
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        space = gym.spaces.Box(0.0, np.inf, (obs_dim,), np.float32)
        action_space = gym.spaces.MultiDiscrete([self.num_houses, 2, 2])
        self.observation_spaces = {agent: space for agent in self.possible_agents}
        self.action_spaces = {agent: action_space for agent in self.possible_agents}
        layout = obs_layout(self.num_houses, num_agents)
        self._scale = np.ones(obs_dim, dtype=np.float32)
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
        if self._mix:
            if seed is not None:
                self._draw = np.random.default_rng(seed)
            self._games = [self._mix[self._draw.integers(len(self._mix))]]
            self._game_over = False
        if seed is None:
            seed, self._seed = self._seed, None  # later resets continue the seeded stream
        obs = [game.reset(None if seed is None else seed + j) for j, game in enumerate(self._games)]
        return self.scale_observations(obs[0] if len(obs) == 1 else np.concatenate(obs))

    def step(self, actions):
        if self._game_over:  # (next-step auto-reset with a newly drawn scenario)
            obs = self.reset()
            return obs, np.zeros((1, len(self.possible_agents)), np.float32), np.zeros(1, bool), np.zeros(1, bool)
        if len(self._games) == 1:
            obs, rewards, terminated, truncated = self._games[0].step(np.asarray(actions))
            self._game_over = bool(self._mix) and bool(terminated[0] or truncated[0])
        else:
            parts = np.split(np.asarray(actions), self._splits)
            obs, rewards, terminated, truncated = (
                np.concatenate(column) for column in zip(*(game.step(part) for game, part in zip(self._games, parts))))
        return self.scale_observations(obs), rewards * self.reward_scale, terminated, truncated

    def close(self) -> None:
        for game in self._mix or self._games:
            game.close()
