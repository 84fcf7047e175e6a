"""VMAS (Vectorized Multi-Agent Simulator) as an RLlib multi-agent environment.

`env: vmas` in an experiment YAML. `env_config`:

    scenario            VMAS scenario name (required), e.g. navigation, balance, transport, simple_spread.
    continuous_actions  Box actions (default true) or Discrete actions (false).
    max_steps           episode length; reaching it truncates the episode (default 100).
    device              torch device of the simulator, "cpu" (default) or "cuda[:N]".
    seed                default seed when RLlib resets without one.
    any other key       passed to the scenario (n_agents, shared_rew, ...); a key the scenario does not
                        use is an error.

Agent ids are VMAS's agent names (`agent_0`, `agent_1`, ...). Each agent has its own observation and action
space, reward and action; `terminated`/`truncated` are shared by all agents of the VMAS world.

Example:
    >>> from envs.vmas_env import VmasEnv
    >>> env = VmasEnv({"scenario": "navigation", "n_agents": 3, "max_steps": 50})
    >>> obs, infos = env.reset(seed=0)
    >>> sorted(obs), obs["agent_0"].shape
    (['agent_0', 'agent_1', 'agent_2'], (18,))
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from marlkit.errors import ConfigError, closest

WRAPPER_KEYS = ("scenario", "continuous_actions", "max_steps", "device", "seed")
DEFAULT_MAX_STEPS = 100


def scenario_names() -> list[str]:
    import vmas

    return sorted(vmas.scenarios + vmas.mpe_scenarios + vmas.debug_scenarios)


def _to_gymnasium(space) -> gym.Space:
    """VMAS builds its spaces with the legacy `gym` package; RLlib needs `gymnasium` ones."""
    kind = type(space).__name__
    if kind == "Box":
        return gym.spaces.Box(low=space.low, high=space.high, shape=space.shape, dtype=np.float32)
    if kind == "Discrete":
        return gym.spaces.Discrete(int(space.n))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(space.nvec)
    raise ConfigError(f"VMAS space {space} has no gymnasium equivalent in this wrapper")


class VmasEnv(MultiAgentEnv):
    """One VMAS world exposed as an RLlib `MultiAgentEnv` (one episode at a time)."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    @staticmethod
    def check_config(env_config: dict) -> None:
        """Raises ConfigError for an env_config this wrapper cannot run (checked before Ray starts)."""
        scenario = env_config.get("scenario")
        if scenario is None:
            raise ConfigError(
                "env_config.scenario is required for env 'vmas' (e.g. navigation, balance; "
                f"available: {', '.join(scenario_names())})"
            )
        if isinstance(scenario, str) and scenario not in scenario_names():
            raise ConfigError(
                f"unknown VMAS scenario '{scenario}'{closest(scenario, scenario_names())}; "
                f"available: {', '.join(scenario_names())}"
            )

    def __init__(self, env_config: dict | None = None):
        super().__init__()
        import vmas

        config = dict(env_config or {})
        self.check_config(config)
        scenario_kwargs = {k: v for k, v in config.items() if k not in WRAPPER_KEYS}
        self._default_seed = config.get("seed")
        self._device = config.get("device", "cpu")
        with warnings.catch_warnings():
            # VMAS only warns about scenario kwargs it did not use; a typo must not pass silently.
            warnings.filterwarnings("error", message="Scenario kwargs")
            try:
                self._world = vmas.make_env(
                    scenario=config["scenario"],
                    num_envs=1,
                    device=self._device,
                    continuous_actions=bool(config.get("continuous_actions", True)),
                    max_steps=int(config.get("max_steps", DEFAULT_MAX_STEPS)),
                    seed=self._default_seed,
                    dict_spaces=True,
                    terminated_truncated=True,
                    **scenario_kwargs,
                )
            except UserWarning as warning:
                raise ConfigError(
                    f"env_config for VMAS scenario '{config['scenario']}' has keys the scenario does not use: "
                    f"{sorted(scenario_kwargs)} ({warning})"
                ) from None
        self.possible_agents = [agent.name for agent in self._world.agents]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {
            aid: _to_gymnasium(s) for aid, s in self._world.observation_space.spaces.items()
        }
        self.action_spaces = {aid: _to_gymnasium(s) for aid, s in self._world.action_space.spaces.items()}
        # VMAS takes (batch,) for a Discrete action and (batch, size) otherwise.
        self._action_shapes = {
            aid: (1,) if isinstance(space, gym.spaces.Discrete) else (1, -1) for aid, space in self.action_spaces.items()
        }
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    def _numpy(self, per_agent: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {aid: value[0].detach().cpu().numpy().astype(np.float32) for aid, value in per_agent.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = self._default_seed if seed is None else seed
        if seed is not None:
            self._world.seed(seed)
            self._default_seed = None  # later resets continue the seeded random stream
        observations = self._world.reset()
        return self._numpy(observations), {aid: {} for aid in self.possible_agents}

    def step(self, action_dict: dict[str, Any]):
        actions = {
            aid: torch.as_tensor(np.asarray(action_dict[aid]), device=self._device).reshape(self._action_shapes[aid])
            for aid in self.possible_agents
        }
        observations, rewards, terminated, truncated, infos = self._world.step(actions)
        done_terminated = bool(terminated[0])
        done_truncated = bool(truncated[0]) and not done_terminated
        terminateds = {aid: done_terminated for aid in self.possible_agents}
        truncateds = {aid: done_truncated for aid in self.possible_agents}
        terminateds["__all__"] = done_terminated
        truncateds["__all__"] = done_truncated
        return (
            self._numpy(observations),
            {aid: float(r[0]) for aid, r in rewards.items()},
            terminateds,
            truncateds,
            {aid: {k: v[0].detach().cpu().numpy() for k, v in info.items()} for aid, info in infos.items()},
        )

    def render(self) -> np.ndarray:
        """The current frame as an RGB array (H, W, 3), uint8."""
        return self._world.render(mode="rgb_array", env_index=0, visualize_when_rgb=False)

    def close(self) -> None:
        viewer = getattr(self._world, "viewer", None)
        if viewer is not None:
            viewer.close()
