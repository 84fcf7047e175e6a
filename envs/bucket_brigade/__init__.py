"""Bucket Brigade: a cooperative firefighting game on a ring of houses, with a native (Rust) batched core.

Each night every agent picks a house, WORK or REST, and a signal (free talk: it may differ from what it does).
Fires that no one puts out ruin the house; everyone shares a team reward for safe houses, owners gain from their
houses saved and lose for their houses ruined, and WORK costs while REST pays: the tension between cooperation and
free-riding the game is studied for.

    from envs.bucket_brigade import VecEnv, SCENARIOS           # Rust core
    from envs.bucket_brigade.reference import VecEnv           # plain numpy reference, same API

`VecEnv(scenario, num_envs, num_agents=4, seed=0, max_nights=100)`: `reset() -> obs` float32
(num_envs, num_agents, obs_dim); `step(actions) -> (obs, rewards, terminated, truncated)` with int actions
(num_envs, num_agents, 3) = (house, mode 0 REST / 1 WORK, signal 0/1), float32 rewards (num_envs, num_agents) and bool
flags (num_envs,). A game terminates when night >= min_nights and no house burns, and is truncated after
max_nights. Auto-reset follows Gymnasium 1.x's next-step convention: the step after a game finished ignores that
game's actions and returns the new game's first observation, zero rewards and false flags.

Per-agent observation (obs_dim = houses + 6 * agents + 13; `obs_layout` gives the slices): houses (0 SAFE,
1 BURNING, 2 RUINED), every agent's signal and location of the last night, every agent's last action (house, mode,
signal), the 12 scenario features (`SCENARIO_FEATURES`), this agent's identity one-hot, the night (0 at reset).
"""

from envs.bucket_brigade.native import VecEnv
from envs.bucket_brigade.scenarios import SCENARIO_FEATURES, SCENARIOS, Scenario, get_scenario, obs_dim, obs_layout

__all__ = ["VecEnv", "SCENARIOS", "SCENARIO_FEATURES", "Scenario", "get_scenario", "obs_dim", "obs_layout"]
