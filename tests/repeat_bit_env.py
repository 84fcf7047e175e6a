"""A tiny `BatchedEnv` added the way docs/envs.md says (one class, one `check_config`, one registry line), for
tests/test_new_env.py: every agent sees one random bit and is paid for repeating it; games last `length` steps."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback

from envs import ENVS, EnvEntry
from envs.batched import BatchedEnv
from envs.errors import ConfigError


def check_config(env_config: dict) -> None:
    unknown = sorted(set(env_config) - {"length", "num_envs", "seed"})
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]} is not a repeat_bit setting; known: length, num_envs, seed")


class RepeatBit(BatchedEnv):
    def __init__(self, env_config: dict):
        check_config(env_config)
        self.num_envs, self.length = int(env_config.get("num_envs", 1)), int(env_config.get("length", 3))
        self.possible_agents = ["agent_0", "agent_1"]
        self.observation_spaces = {a: gym.spaces.Box(0, 1, (1,), np.float32) for a in self.possible_agents}
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents}
        self.rng = np.random.default_rng(env_config.get("seed"))

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.bits = self.rng.integers(0, 2, (self.num_envs, 2, 1)).astype(np.float32)
        self.step_count = np.zeros(self.num_envs, dtype=np.int64)
        self.restart = np.zeros(self.num_envs, dtype=bool)
        return self.bits

    def step(self, actions):
        rewards = (np.asarray(actions.cpu())[..., 0] == self.bits[..., 0]).astype(np.float32)
        self.step_count += 1
        self.step_count[self.restart], rewards[self.restart] = 0, 0.0  # next-step auto-reset
        self.bits = self.rng.integers(0, 2, self.bits.shape).astype(np.float32)
        truncated = self.step_count >= self.length
        self.restart = truncated
        return self.bits, rewards, np.zeros(self.num_envs, dtype=bool), truncated


def register() -> None:
    ENVS["repeat_bit"] = EnvEntry(create_batch=RepeatBit, check_config=check_config)


class EpisodeLengths(RLlibCallback):
    """A per-episode hook (which sends an experiment to RLlib's stock sampler): each episode's length as a custom
    metric."""

    def on_episode_end(self, *, episode, **kwargs):
        episode.custom_metrics["length"] = episode.length
