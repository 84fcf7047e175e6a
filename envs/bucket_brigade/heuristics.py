"""Scripted Bucket Brigade agents: the archetypes of the original study, a uniform-random agent and always-rest.

An archetype is a 10-entry genome [honesty, work_tendency, neighbor_help, own_house_priority, risk_aversion,
coordination_weight, exploration_rate, fatigue_memory, rest_reward_bias, altruism]. Agents act with the original's
fast (native) heuristic, which reads honesty, work_tendency, own_house_priority and rest_reward_bias:
  - WORK with probability work_tendency * (1 - rest_reward_bias), else REST at its own house;
  - a worker whose own house (agent id mod houses) burns goes there with probability own_house_priority, otherwise
    to a uniformly random burning house (its own house when nothing burns);
  - the signal tells the truth (signal = mode) with probability honesty, else the opposite.
`random` draws house, mode and signal uniformly; `rest` always RESTs at its own house and signals REST (0).
`pool` is a pool of the five archetypes: row r of agent i plays archetype (r + i) mod 5 of `ARCHETYPES`, so in a
batch of games (one row per game, as the batched env runner and `evaluation` feed it) each opponent seat of each
game keeps one archetype, and a game's seats differ.
Every agent decides from its own observation row alone, so the same code drives opponents in RLlib and in scripts.

Example:
    >>> import numpy as np
    >>> from envs.bucket_brigade import VecEnv
    >>> from envs.bucket_brigade.heuristics import act
    >>> env = VecEnv("default", num_envs=8, num_agents=4)
    >>> obs = env.reset()
    >>> actions = act("firefighter", obs.reshape(32, -1), num_houses=10, num_agents=4, rng=np.random.default_rng(0))
    >>> actions.shape
    (32, 3)
"""

from __future__ import annotations

import numpy as np

from envs.bucket_brigade.scenarios import obs_layout

GENOME = ("honesty", "work_tendency", "neighbor_help", "own_house_priority", "risk_aversion", "coordination_weight",
          "exploration_rate", "fatigue_memory", "rest_reward_bias", "altruism")
ARCHETYPES = {
    "firefighter": (1.0, 0.9, 0.5, 0.8, 0.5, 0.7, 0.1, 0.0, 0.0, 0.8),
    "free_rider": (0.7, 0.2, 0.0, 0.9, 0.0, 0.0, 0.1, 0.0, 0.9, 0.0),
    "hero": (1.0, 1.0, 1.0, 0.5, 0.1, 0.5, 0.0, 0.9, 0.0, 1.0),
    "coordinator": (0.9, 0.6, 0.7, 0.6, 0.8, 1.0, 0.05, 0.0, 0.2, 0.6),
    "liar": (0.1, 0.7, 0.0, 0.9, 0.2, 0.8, 0.3, 0.0, 0.4, 0.2),
}
HEURISTICS = (*ARCHETYPES, "random", "rest", "pool")
BURNING = 1


def act(name: str, obs: np.ndarray, num_houses: int, num_agents: int, rng: np.random.Generator) -> np.ndarray:
    """Actions (rows, 3) = (house, mode, signal) of heuristic `name` for observation rows (rows, obs_dim)."""
    rows = len(obs)
    if name == "random":
        return np.stack([rng.integers(0, num_houses, rows), rng.integers(0, 2, rows), rng.integers(0, 2, rows)], 1)
    if name not in HEURISTICS:
        raise ValueError(f"unknown heuristic {name!r}; available: {', '.join(HEURISTICS)}")
    layout = obs_layout(num_houses, num_agents)
    agent = np.argmax(obs[:, layout["identity"]], axis=1)
    own = agent % num_houses
    if name == "rest":
        return np.stack([own, np.zeros(rows, np.int64), np.zeros(rows, np.int64)], axis=1).astype(np.int64)
    if name == "pool":
        genomes = np.array(list(ARCHETYPES.values()))[(np.arange(rows) + agent) % len(ARCHETYPES)]
    else:
        genomes = np.array(ARCHETYPES[name])[None]
    genome = dict(zip(GENOME, genomes.T))
    burning = obs[:, layout["houses"]] == BURNING
    works = rng.random(rows) < genome["work_tendency"] * (1 - genome["rest_reward_bias"])
    # a uniformly random burning house per row: the argmax of random keys over the burning ones
    keys = np.where(burning, rng.random((rows, num_houses)), -1.0)
    any_burning = burning.any(axis=1)
    random_burning = np.where(any_burning, np.argmax(keys, axis=1), own)
    to_own = burning[np.arange(rows), own] & (rng.random(rows) < genome["own_house_priority"])
    house = np.where(works & ~to_own, random_burning, own)
    mode = works.astype(np.int64)
    honest = rng.random(rows) < genome["honesty"]
    signal = np.where(honest, mode, 1 - mode)
    return np.stack([house, mode, signal], axis=1).astype(np.int64)
