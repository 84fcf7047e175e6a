"""Scoring a seat: a policy in agent_0's seat of a Bucket Brigade game against scripted opponents, on the same games
for every candidate, so that a learner's figure sits beside the scripted agents' (the study's yardstick).

A candidate is a seat policy `act(obs_rows, rng) -> actions (rows, 3)` on the core's raw observation rows (what the
heuristics read). `seat_reward_per_night` plays the first episode of each of `games` games (seed `seed`: the same
fires for every candidate given the same actions) and returns the seat's reward per night played. One random stream
(seeded with `seed`) drives the opponents, then the seat, every night. `play` is the same for a whole team of seat
policies (self-play): every seat's reward per night and how often it WORKs. `seat_table` scores every scripted agent of
`heuristics.HEURISTICS` (the archetypes, `random`, `rest`); `policy_seat` turns an RLlib policy (a trained learner)
into a seat policy that acts deterministically on the observations it was trained on.

Example:
    >>> from envs.bucket_brigade.evaluation import seat_table
    >>> table = seat_table("default", games=20)
    >>> sorted(table)
    ['coordinator', 'firefighter', 'free_rider', 'hero', 'liar', 'pool', 'random', 'rest']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

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


@dataclass
class TeamResult:
    """Per seat (agent 0 first): reward per night played, and the share of those nights it chose WORK."""

    reward_per_night: np.ndarray
    work_share: np.ndarray


def play(scenario: str, seats: Sequence[SeatPolicy], games: int = GAMES, seed: int = SEED,
         max_nights: int = MAX_NIGHTS) -> TeamResult:
    """Agent i acting with `seats[i]` in the first episode of each of `games` games. Each night the random stream
    (seeded with `seed`) is drawn by agents 1.., then agent 0."""
    num_agents = len(seats)
    env = VecEnv(scenario, games, num_agents, seed=seed, max_nights=max_nights)
    rng = np.random.default_rng(seed)
    obs = env.reset()
    finished = np.zeros(games, dtype=bool)
    total_reward, work, nights = np.zeros(num_agents), np.zeros(num_agents), 0
    try:
        while not finished.all():
            actions = [None] + [seat(obs[:, agent], rng) for agent, seat in enumerate(seats[1:], start=1)]
            actions[0] = seats[0](obs[:, 0], rng)
            actions = np.stack(actions, axis=1)
            obs, rewards, terminated, truncated = env.step(actions)
            playing = ~finished
            total_reward += rewards[playing].sum(axis=0)
            work += (actions[playing, :, 1] == 1).sum(axis=0)
            nights += int(playing.sum())
            finished |= terminated | truncated
    finally:
        env.close()
    return TeamResult(total_reward / nights, work / nights)


def seat_reward_per_night(scenario: str, seat: SeatPolicy, opponents: Sequence[str | SeatPolicy] = OPPONENTS,
                          games: int = GAMES, seed: int = SEED, max_nights: int = MAX_NIGHTS) -> float:
    """Agent 0 acting with `seat` against `opponents` (agents 1..: scripted agents' names or seat policies): its
    reward over the nights of the first episode of each of `games` games, divided by those nights."""
    num_agents = 1 + len(opponents)
    opponents = [scripted_seat(opponent, scenario, num_agents) if isinstance(opponent, str) else opponent
                 for opponent in opponents]
    return float(play(scenario, [seat, *opponents], games, seed, max_nights).reward_per_night[0])


def seat_table(scenario: str, opponents=OPPONENTS, games: int = GAMES, seed: int = SEED) -> dict[str, float]:
    """Reward per night of every scripted agent in the seat: name -> figure."""
    return {name: seat_reward_per_night(scenario, scripted_seat(name, scenario, 1 + len(opponents)), opponents,
                                        games, seed) for name in heuristics.HEURISTICS}


def policy_seat(policy, scale_observations: Callable[[np.ndarray], np.ndarray]) -> SeatPolicy:
    """An RLlib policy (old API stack) as a seat policy: its deterministic actions (explore=False) on the observations
    it sees in training, `scale_observations(raw rows)` (the env's `scale_observations`). A scripted policy
    (marlkit.policies.ScriptedPolicy) draws from the seat's stream, so it scores exactly as in `seat_table`."""
    return lambda obs, rng: np.asarray(policy.compute_actions(scale_observations(obs), explore=False, rng=rng)[0])
