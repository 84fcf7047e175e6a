"""Bucket Brigade scenarios: the game parameters, one dataclass per scenario, and the observation layout.

Values are the original game's scenario table (rjwalters/bucket-brigade, `scenarios.rs` at HEAD): 17 Bernoulli
scenarios and `default_continuous`. Common to all unless set: 10 houses, REST pays 0.5, saving or losing another
agent's house is worth 0, Bernoulli extinguishing. In Bernoulli scenarios fires burn out before they could spread,
so `prob_fire_spreads` only matters with `spread_before_burnout` or in continuous mode (the original's rule order).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

NUM_SCENARIO_FEATURES = 12


@dataclass(frozen=True)
class Scenario:
    """One game's parameters. Ownership is round-robin: house h belongs to agent h mod num_agents."""

    prob_fire_spreads: float  # beta: a burning house ignites a SAFE neighbour (per neighbour, per night)
    prob_solo_agent_extinguishes_fire: float  # kappa: k workers put a fire out with 1 - (1 - kappa)^k
    prob_house_catches_fire: float  # rho: a SAFE house ignites (at reset and every night)
    team_reward_house_survives: float  # A: every agent gets A * safe/houses per night ...
    team_penalty_house_burns: float  # L: ... minus L * ruined/houses
    cost_to_work_one_night: float  # c: WORK costs c (REST pays reward_rest)
    min_nights: int  # the game can end (no house burning) from this night on
    reward_own_house_survives: float = 1.0  # per own house put out this night
    penalty_own_house_burns: float = 2.0  # per own ruined house, every night
    reward_other_house_survives: float = 0.0
    penalty_other_house_burns: float = 0.0
    reward_rest: float = 0.5
    num_houses: int = 10
    distance_cost_alpha: float = 0.0  # extra WORK cost per unit of ring distance from the agent's home
    agent_home_positions: tuple[int, ...] | None = None  # default: agent i lives at house i mod num_houses
    continuous: bool = False  # continuous suppression: workers add suppression_per_worker until 1; no burn-out
    suppression_per_worker: float = 0.0
    spread_before_burnout: bool = False  # the contagion variant: fires spread before they burn out

    def homes(self, num_agents: int) -> list[int]:
        if self.agent_home_positions is None:
            return [agent % self.num_houses for agent in range(num_agents)]
        homes = list(self.agent_home_positions)
        return [homes[agent % len(homes)] for agent in range(num_agents)]

    def features(self, num_agents: int) -> list[float]:
        """The scenario features of every observation, in `SCENARIO_FEATURES` order."""
        return [
            self.prob_fire_spreads, self.prob_solo_agent_extinguishes_fire, self.team_reward_house_survives,
            self.team_penalty_house_burns, self.cost_to_work_one_night, self.prob_house_catches_fire,
            float(self.min_nights), float(num_agents), self.reward_own_house_survives,
            self.reward_other_house_survives, self.penalty_own_house_burns, self.penalty_other_house_burns,
        ]

    def with_options(self, **options) -> "Scenario":
        """A copy with some parameters changed (e.g. spread_before_burnout=True); unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown scenario parameter(s) {unknown}; known: {', '.join(sorted(known))}")
        return replace(self, **options)


SCENARIO_FEATURES = (
    "prob_fire_spreads", "prob_solo_agent_extinguishes_fire", "team_reward_house_survives",
    "team_penalty_house_burns", "cost_to_work_one_night", "prob_house_catches_fire", "min_nights", "num_agents",
    "reward_own_house_survives", "reward_other_house_survives", "penalty_own_house_burns", "penalty_other_house_burns",
)

SCENARIOS: dict[str, Scenario] = {
    "default": Scenario(0.25, 0.5, 0.02, 100, 100, 0.5, 12, reward_own_house_survives=20, penalty_own_house_burns=40),
    "easy": Scenario(0.10, 0.8, 0.01, 100, 100, 0.5, 10),
    "hard": Scenario(0.40, 0.3, 0.05, 100, 100, 0.5, 15),
    "trivial_cooperation": Scenario(0.15, 0.9, 0.00, 100, 100, 0.5, 12),
    "early_containment": Scenario(0.35, 0.6, 0.02, 100, 100, 0.5, 12),
    "greedy_neighbor": Scenario(0.15, 0.4, 0.02, 100, 100, 1.0, 12),
    "sparse_heroics": Scenario(0.10, 0.5, 0.02, 100, 100, 0.8, 20),
    "rest_trap": Scenario(0.05, 0.95, 0.02, 100, 100, 0.2, 12),
    "chain_reaction": Scenario(0.45, 0.6, 0.03, 100, 100, 0.7, 15),
    "deceptive_calm": Scenario(0.25, 0.6, 0.05, 100, 100, 0.4, 20),
    "overcrowding": Scenario(0.20, 0.3, 0.02, 50, 100, 0.6, 12),
    "mixed_motivation": Scenario(0.30, 0.5, 0.03, 100, 100, 0.6, 15),
    "minimal_specialization": Scenario(0.25, 0.5, 0.02, 10, 10, 0.5, 12, reward_own_house_survives=50,
                                       penalty_own_house_burns=100),
    "positional_default": Scenario(0.25, 0.5, 0.02, 100, 100, 0.5, 12, reward_own_house_survives=20,
                                   penalty_own_house_burns=40, distance_cost_alpha=0.1,
                                   agent_home_positions=(0, 3, 5, 8)),
    "v2_minimal": Scenario(0.25, 0.5, 0.05, 10, 10, 0.5, 8, reward_own_house_survives=50, penalty_own_house_burns=100,
                           num_houses=2),
    "asym_b05_k09_c05": Scenario(0.50, 0.9, 0.02, 10, 10, 0.5, 12, reward_own_house_survives=50,
                                 penalty_own_house_burns=100),
    "asym_b09_k09_c05": Scenario(0.90, 0.9, 0.02, 10, 10, 0.5, 12, reward_own_house_survives=50,
                                 penalty_own_house_burns=100),
    "default_continuous": Scenario(0.25, 0.5, 0.02, 100, 100, 0.5, 12, reward_own_house_survives=20,
                                   penalty_own_house_burns=40, continuous=True, suppression_per_worker=0.5),
}


def get_scenario(scenario: str | Scenario) -> Scenario:
    """A scenario by name (or a Scenario as is); ValueError listing the names for an unknown one."""
    if isinstance(scenario, Scenario):
        return scenario
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown Bucket Brigade scenario {scenario!r}; available: {', '.join(SCENARIOS)}")
    return SCENARIOS[scenario]


def obs_dim(num_houses: int, num_agents: int) -> int:
    return num_houses + 6 * num_agents + NUM_SCENARIO_FEATURES + 1


def obs_layout(num_houses: int, num_agents: int) -> dict[str, slice]:
    """Where each field sits in an agent's observation row (all agents see the same state, plus their identity).

    houses (0 SAFE, 1 BURNING, 2 RUINED), signals of last night, locations (house index), last actions (house, mode,
    signal per agent), scenario features (`SCENARIO_FEATURES`), identity one-hot, night (0 at reset).
    """
    sizes = {
        "houses": num_houses, "signals": num_agents, "locations": num_agents, "last_actions": 3 * num_agents,
        "scenario": NUM_SCENARIO_FEATURES, "identity": num_agents, "night": 1,
    }
    layout, start = {}, 0
    for name, size in sizes.items():
        layout[name] = slice(start, start + size)
        start += size
    return layout
