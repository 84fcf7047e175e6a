"""A plain numpy Bucket Brigade, written for clarity: one `Game` per env, one night in `Game.play_night`.

Same rules, observation layout and API as the Rust core (`envs.bucket_brigade.VecEnv`), used to cross-check it:
identical results where nothing is random (probabilities 0 or 1), statistical agreement elsewhere (its random
numbers come from numpy, not the core's generator). About 100x slower; see bench/bucket_brigade.py.

Example:
    >>> from envs.bucket_brigade.reference import VecEnv
    >>> VecEnv("easy", num_envs=3, num_agents=2).reset().shape
    (3, 2, 35)
"""

from __future__ import annotations

import numpy as np

from envs.bucket_brigade.native import GameBatch, check_actions, first_bad_action
from envs.bucket_brigade.scenarios import Scenario

SAFE, BURNING, RUINED = 0, 1, 2
REST, WORK = 0, 1


class Game:
    """One game on a ring of houses."""

    def __init__(self, scenario: Scenario, num_agents: int, max_nights: int, rng: np.random.Generator):
        self.scenario, self.num_agents, self.max_nights, self.rng = scenario, num_agents, max_nights, rng
        self.num_houses = scenario.num_houses
        self.owner = np.arange(self.num_houses) % num_agents
        self.homes = np.array(scenario.homes(num_agents))
        self.features = np.array(scenario.features(num_agents), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        s = self.scenario
        self.houses = np.where(self.rng.random(self.num_houses) < s.prob_house_catches_fire, BURNING, SAFE)
        self.suppression = np.zeros(self.num_houses)
        self.signals = np.zeros(self.num_agents, dtype=np.int64)
        self.locations = np.zeros(self.num_agents, dtype=np.int64)
        self.last_actions = np.zeros((self.num_agents, 3), dtype=np.int64)
        self.night = 0

    def play_night(self, actions: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """actions (num_agents, 3) -> (rewards, terminated, truncated)."""
        s = self.scenario
        houses_at_start = self.houses.copy()
        self.signals = actions[:, 2].copy()
        self.locations = actions[:, 0].copy()
        self.last_actions = actions.copy()
        working = actions[:, 1] == WORK
        workers = np.bincount(actions[working, 0], minlength=self.num_houses)

        for house in np.flatnonzero(self.houses == BURNING):  # extinguish
            if s.continuous:
                self.suppression[house] += workers[house] * s.suppression_per_worker
                if self.suppression[house] >= 1.0:
                    self.houses[house], self.suppression[house] = SAFE, 0.0
            elif self.rng.random() < 1 - (1 - s.prob_solo_agent_extinguishes_fire) ** workers[house]:
                self.houses[house] = SAFE
        if s.continuous:
            self.spread()
        elif s.spread_before_burnout:
            self.spread()
            self.houses[self.houses == BURNING] = RUINED
        else:
            self.houses[self.houses == BURNING] = RUINED
            self.spread()
        for house in range(self.num_houses):  # spontaneous ignition
            if self.houses[house] == SAFE and self.rng.random() < s.prob_house_catches_fire:
                self.houses[house] = BURNING

        rewards = np.zeros(self.num_agents)
        safe, ruined = np.sum(self.houses == SAFE), np.sum(self.houses == RUINED)
        team = (s.team_reward_house_survives * safe - s.team_penalty_house_burns * ruined) / self.num_houses
        saved = (houses_at_start != SAFE) & (self.houses == SAFE)
        for agent in range(self.num_agents):
            own = self.owner == agent
            distance = abs(int(self.homes[agent]) - int(actions[agent, 0]))
            distance = min(distance, self.num_houses - distance)
            work_or_rest = -s.cost_to_work_one_night - s.distance_cost_alpha * distance if working[agent] else s.reward_rest
            rewards[agent] = (
                team + work_or_rest
                + s.reward_own_house_survives * np.sum(saved & own) + s.reward_other_house_survives * np.sum(saved & ~own)
                - s.penalty_own_house_burns * np.sum((self.houses == RUINED) & own)
                - s.penalty_other_house_burns * np.sum((self.houses == RUINED) & ~own)
            )
        terminated = bool(self.night >= s.min_nights and not np.any(self.houses == BURNING))
        self.night += 1
        return rewards, terminated, not terminated and self.night >= self.max_nights

    def spread(self) -> None:
        """Each house burning at the start of the phase tries each SAFE neighbour once (no cascade)."""
        snapshot = self.houses.copy()
        for house in np.flatnonzero(snapshot == BURNING):
            for neighbour in ((house - 1) % self.num_houses, (house + 1) % self.num_houses):
                if snapshot[neighbour] == SAFE and self.rng.random() < self.scenario.prob_fire_spreads:
                    self.houses[neighbour] = BURNING

    def observation(self, agent: int) -> np.ndarray:
        identity = np.zeros(self.num_agents)
        identity[agent] = 1
        return np.concatenate([self.houses, self.signals, self.locations, self.last_actions.ravel(), self.features,
                               identity, [self.night]]).astype(np.float32)


class VecEnv(GameBatch):
    """The reference `VecEnv`: same constructor, `reset`, `step` and auto-reset as the Rust-backed one."""

    def __init__(self, scenario: str | Scenario, num_envs: int, num_agents: int = 4, seed: int = 0,
                 max_nights: int = 100):
        super().__init__(scenario, num_envs, num_agents, max_nights)
        self._seed(seed)
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    def _seed(self, seed: int) -> None:
        streams = np.random.SeedSequence(seed).spawn(self.num_envs)
        self.games = [Game(self.scenario, self.num_agents, self.max_nights, np.random.default_rng(stream))
                      for stream in streams]

    def _observations(self) -> np.ndarray:
        return np.stack([[game.observation(agent) for agent in range(self.num_agents)] for game in self.games])

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._seed(seed)
        for game in self.games:
            game.reset()
        self._needs_reset[:] = False
        return self._observations()

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        actions = check_actions(actions, self.num_envs, self.num_agents)
        problem = first_bad_action(actions, self.num_houses, playing=~self._needs_reset)
        if problem:
            raise ValueError(problem)
        rewards = np.zeros((self.num_envs, self.num_agents), dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for index, game in enumerate(self.games):
            if self._needs_reset[index]:  # Gymnasium's next-step auto-reset: this step's actions are ignored
                game.reset()
                self._needs_reset[index] = False
            else:
                rewards[index], terminated[index], truncated[index] = game.play_night(actions[index])
                self._needs_reset[index] = terminated[index] or truncated[index]
        return self._observations(), rewards, terminated, truncated

    def close(self) -> None:
        pass
