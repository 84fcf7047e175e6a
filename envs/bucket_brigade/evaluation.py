"""Scoring a seat: a policy in agent_0's seat of a Bucket Brigade game against scripted opponents, on the same games
for every candidate, so that a learner's figure sits beside the scripted agents' (the study's yardstick).

A candidate is a seat policy `act(obs_rows, rng) -> actions (rows, 3)` on the core's raw observation rows (what the
heuristics read). `seat_reward_per_night` plays the first episode of each of `games` games (seed `seed`: the same
fires for every candidate given the same actions) and returns the seat's reward per night played. One random stream
(seeded with `seed`) drives the opponents, then the seat, every night. `seat_table` scores every scripted agent of
`heuristics.HEURISTICS` (the archetypes, `random`, `rest`); `policy_seat` turns an RLlib policy (a trained learner)
into a seat policy that acts deterministically on the observations it was trained on.

Example:
    >>> from envs.bucket_brigade.evaluation import seat_table
    >>> table = seat_table("default", games=20)
    >>> sorted(table)
    ['coordinator', 'firefighter', 'free_rider', 'hero', 'liar', 'random', 'rest']
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from envs.bucket_brigade import VecEnv, heuristics
from envs.bucket_brigade.scenarios import get_scenario

SeatPolicy = Callable[[np.ndarray, np.random.Generator], np.ndarray]

OPPONENTS = ("random", "random", "firefighter")  # agents 1-3 of config/bucket-brigade-ppo.yaml
GAMES, SEED, MAX_NIGHTS = 2000, 12345, 100


def scripted_seat(name: str, scenario: str, num_agents: int) -> SeatPolicy:
    """The seat policy of scripted agent `name` (a name of `heuristics.HEURISTICS`)."""
    houses = get_scenario(scenario).num_houses
    return lambda obs, rng: heuristics.act(name, obs, houses, num_agents, rng)


def seat_reward_per_night(scenario: str, seat: SeatPolicy, opponents=OPPONENTS, games: int = GAMES,
                          seed: int = SEED, max_nights: int = MAX_NIGHTS) -> float:
    """Agent 0 acting with `seat` against scripted `opponents` (agents 1..): its total reward over the nights of the
    first episode of each of `games` games, divided by those nights."""
    num_agents = 1 + len(opponents)
    env = VecEnv(scenario, games, num_agents, seed=seed, max_nights=max_nights)
    rng = np.random.default_rng(seed)
    obs = env.reset()
    finished = np.zeros(games, dtype=bool)
    total_reward, nights = 0.0, 0
    try:
        while not finished.all():
            actions = [heuristics.act(name, obs[:, agent], env.num_houses, num_agents, rng)
                       for agent, name in enumerate(opponents, start=1)]
            actions.insert(0, seat(obs[:, 0], rng))
            obs, rewards, terminated, truncated = env.step(np.stack(actions, axis=1))
            playing = ~finished
            total_reward += float(rewards[playing, 0].sum())
            nights += int(playing.sum())
            finished |= terminated | truncated
    finally:
        env.close()
    return total_reward / nights


def seat_table(scenario: str, opponents=OPPONENTS, games: int = GAMES, seed: int = SEED) -> dict[str, float]:
    """Reward per night of every scripted agent in the seat: name -> figure."""
    return {name: seat_reward_per_night(scenario, scripted_seat(name, scenario, 1 + len(opponents)), opponents,
                                        games, seed) for name in heuristics.HEURISTICS}


def policy_seat(policy, scale_observations: Callable[[np.ndarray], np.ndarray]) -> SeatPolicy:
    """An RLlib policy (old API stack) as a seat policy: its deterministic actions (explore=False) on the observations
    it sees in training, `scale_observations(raw rows)` (the env's `scale_observations`). A scripted policy
    (marlkit.policies.ScriptedPolicy) draws from the seat's stream, so it scores exactly as in `seat_table`."""
    return lambda obs, rng: np.asarray(policy.compute_actions(scale_observations(obs), explore=False, rng=rng)[0])
