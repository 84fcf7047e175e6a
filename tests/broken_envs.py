"""Small PettingZoo Parallel envs for the env checker (tests/test_user_envs.py): `Fine` and `Leaving` (an agent leaves
mid-game) follow the API; each other class breaks it in one way, named by the problem the checker must report."""

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv


class Fine(ParallelEnv):
    """Two agents see a number in [0, 1] and are paid for action 1; episodes last 5 steps."""

    metadata = {"name": "fine_v0"}
    length = 5

    def __init__(self):
        self.possible_agents = ["agent_0", "agent_1"]

    def observation_space(self, agent):
        return gym.spaces.Box(0.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return gym.spaces.Discrete(2)

    def observation(self, agent):
        return np.full(2, 0.5, np.float32)

    def observations(self):
        return {agent: self.observation(agent) for agent in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.steps = list(self.possible_agents), 0
        return self.observations(), {agent: {} for agent in self.agents}

    def step(self, actions):
        self.steps += 1
        rewards = {agent: float(action) for agent, action in actions.items()}
        ended = self.steps >= self.length
        flags = {agent: False for agent in self.agents}
        truncations = {agent: ended for agent in self.agents}
        observations, infos = self.observations(), {agent: {} for agent in self.agents}
        if ended:
            self.agents = []
        return observations, rewards, flags, truncations, infos


class WrongDtype(Fine):
    def observation(self, agent):
        return np.full(2, 0.5, np.float64)


class MissingAgent(Fine):
    def observations(self):
        return {"agent_0": self.observation("agent_0")}


class OutsideSpace(Fine):
    def observation(self, agent):
        return np.array([0.5, 1.5], np.float32)


class WrongStepKeys(Fine):
    def step(self, actions):
        observations, rewards, terminations, truncations, infos = super().step(actions)
        renamed = {f"player_{agent[-1]}": reward for agent, reward in rewards.items()}
        return observations, renamed, terminations, truncations, infos


class OldStepApi(Fine):
    def step(self, actions):
        observations, rewards, terminations, truncations, infos = super().step(actions)
        return observations, rewards, terminations, infos


class NeverEnds(Fine):
    length = 10**9


class Camera(Fine):
    """Follows the API too: each agent sees a 4x4 RGB image of uint8 pixels."""

    def observation_space(self, agent):
        return gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)

    def observation(self, agent):
        return (np.arange(48, dtype=np.uint8) * 5).reshape(4, 4, 3)


class Leaving(Fine):
    """Follows the API too: agent_1 leaves the game (terminated) at the second step, agent_0 plays on to step 4."""

    length = 4

    def step(self, actions):
        self.steps += 1
        rewards = {agent: float(action) for agent, action in actions.items()}
        terminations = {agent: agent == "agent_1" and self.steps >= 2 for agent in self.agents}
        truncations = {agent: self.steps >= self.length for agent in self.agents}
        observations, infos = self.observations(), {agent: {} for agent in self.agents}
        self.agents = [agent for agent in self.agents if not (terminations[agent] or truncations[agent])]
        return observations, rewards, terminations, truncations, infos
