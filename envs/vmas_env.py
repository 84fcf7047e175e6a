"""VMAS (Vectorized Multi-Agent Simulator) as a `BatchedEnv` (envs/batched.py).

`env: vmas` in an experiment YAML. `env_config`:

    scenario            VMAS scenario name (required), e.g. navigation, balance, transport, simple_spread.
    continuous_actions  Box actions (default true) or Discrete actions (false).
    max_steps           episode length; reaching it truncates the episode (default 100).
    device              torch device of the simulator, "cpu" or "cuda[:N]". Default: "cuda" when the process that
                        samples has a GPU (num_gpus_per_env_runner > 0, or num_gpus > 0 with num_env_runners 0),
                        else "cpu". The batched env runner keeps the policy's forward pass on the policy's device.
    num_envs            worlds simulated together in one batched VMAS call (default 1). It is kept equal to
                        RLlib's num_envs_per_env_runner (set either one), so RLlib's batch accounting stays right.
    seed                default seed when RLlib resets without one.
    any other key       passed to the scenario (n_agents, shared_rew, ...); a key the scenario does not
                        use is an error.

Agent ids are VMAS's agent names (`agent_0`, `agent_1`, ...). Each agent has its own observation and action
space, reward and action; `terminated`/`truncated` are shared by all agents of the VMAS world. VMAS scenarios
offer no global state: a centralised critic (`multiagent.critic: centralized`, marlkit/mappo.py) reads the joint
observation of all agents of the world.

Example:
    >>> env = VmasBatch({"scenario": "navigation", "n_agents": 3, "max_steps": 50, "num_envs": 4})
    >>> env.possible_agents, tuple(env.reset(seed=0).shape)  # (worlds, agents, observation size)
    (['agent_0', 'agent_1', 'agent_2'], (4, 3, 18))
"""

from __future__ import annotations

import ctypes.util
import warnings

import gymnasium as gym
import numpy as np
import torch

from envs.batched import BatchedEnv, action_width, observation_size
from envs.errors import ConfigError, closest

WRAPPER_KEYS = ("scenario", "continuous_actions", "max_steps", "device", "seed", "num_envs")
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


def check_config(env_config: dict) -> None:
    """Raises ConfigError for an env_config this wrapper cannot run (checked before Ray starts)."""
    scenario = env_config.get("scenario")
    if scenario is None:
        raise ConfigError(
            "env_config.scenario is required for env 'vmas' (e.g. navigation, balance; "
            f"available: {', '.join(scenario_names())})"
        )
    if scenario not in scenario_names():
        raise ConfigError(
            f"unknown VMAS scenario '{scenario}'{closest(scenario, scenario_names())}; "
            f"available: {', '.join(scenario_names())}"
        )
    num_envs = env_config.get("num_envs", 1)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigError(f"env_config.num_envs must be a whole number >= 1, got {num_envs!r}")


class VmasBatch(BatchedEnv):
    """`num_envs` VMAS worlds as a `BatchedEnv` (envs/batched.py): torch tensors on `device` in and out.

    Observations of agents that observe different sizes (predators and prey) are zero-padded to the widest. A world
    that finished restarts on the next step: all worlds with one VMAS `reset` when they finished together (episodes
    of a fixed length do; one `reset_at` per world costs as much as a whole step), else one `reset_at` each.

    Args:
        env_config: the `env_config` of the module docstring.
    """

    def __init__(self, env_config: dict):
        import vmas

        config = dict(env_config)
        check_config(config)
        self.num_envs = int(config.get("num_envs", 1))
        scenario_kwargs = {k: v for k, v in config.items() if k not in WRAPPER_KEYS}
        self._seed = config.get("seed")
        self._scenario_name = config["scenario"]
        device = config.get("device", "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"env_config.device is '{device}' but this process sees no CUDA GPU; set device: cpu, or give "
                "the sampling process a GPU (num_gpus_per_env_runner, or num_gpus with num_env_runners: 0)"
            )
        with warnings.catch_warnings():
            # VMAS only warns about scenario kwargs it did not use; a typo must not pass silently.
            warnings.filterwarnings("error", message="Scenario kwargs")
            try:
                self._world = vmas.make_env(
                    scenario=config["scenario"],
                    num_envs=self.num_envs,
                    device=device,
                    continuous_actions=bool(config.get("continuous_actions", True)),
                    max_steps=int(config.get("max_steps", DEFAULT_MAX_STEPS)),
                    seed=self._seed,
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
        self.observation_spaces = {aid: _to_gymnasium(s) for aid, s in self._world.observation_space.spaces.items()}
        self.action_spaces = {aid: _to_gymnasium(s) for aid, s in self._world.action_space.spaces.items()}
        self.device = str(self._world.device)
        self._widest = max(observation_size(space) for space in self.observation_spaces.values())
        self._widths = [action_width(self.action_spaces[agent]) for agent in self.possible_agents]
        self._discrete = [isinstance(self.action_spaces[agent], gym.spaces.Discrete) for agent in self.possible_agents]
        self._restart = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._infos = None  # VMAS's infos of the last step: agent -> key -> tensor (num_envs, ...)

    def _stacked(self, per_agent: dict) -> torch.Tensor:
        """(num_envs, num_agents, ...) from VMAS's per-agent dict; observations zero-padded to the widest."""
        parts = [per_agent[agent] for agent in self.possible_agents]
        if parts[0].dim() > 1:
            parts = [torch.nn.functional.pad(p.reshape(len(p), -1), (0, self._widest - p[0].numel())) for p in parts]
        return torch.stack(parts, dim=1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Starts every world; seeds them with `seed`, or with env_config.seed at the first reset without one (later
        resets continue the seeded random stream)."""
        seed = self._seed if seed is None else seed
        if seed is not None:
            self._world.seed(seed)
            self._seed = None
        self._restart.zero_()
        self._infos = None
        return self._stacked(self._world.reset())

    def step(self, actions: torch.Tensor):
        if bool(self._restart.all()):
            self._restart.zero_()
            self._infos = None
            zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            return (self._stacked(self._world.reset()), torch.zeros(self.num_envs, len(self.possible_agents),
                                                                    device=self.device), zeros, zeros)
        per_agent = {}
        for index, agent in enumerate(self.possible_agents):
            action = actions[:, index, :self._widths[index]]
            per_agent[agent] = action[:, 0].long() if self._discrete[index] else action.float()
        observations, rewards, terminated, truncated, self._infos = self._world.step(per_agent)
        observations, rewards = self._stacked(observations), self._stacked(rewards)
        truncated = truncated & ~terminated
        restarting = self._restart.nonzero().flatten().tolist()
        for env_index in restarting:
            observations[env_index] = self._stacked(self._world.reset_at(env_index))[env_index]
        if restarting:
            rewards[restarting] = 0.0
            terminated[restarting] = False
            truncated[restarting] = False
        self._restart = terminated | truncated
        return observations, rewards, terminated, truncated

    def step_infos(self, game: int) -> dict:
        """VMAS's infos of the last step of one world: {agent: {key: numpy array}} ({} after a restart)."""
        if self._infos is None:
            return {}
        return {agent: {key: value[game].detach().cpu().numpy() for key, value in info.items()}
                for agent, info in self._infos.items()}

    def set_task(self, task: dict) -> None:
        """Changes scenario parameters of the running worlds (a curriculum stage), e.g. {"pos_shaping_factor": 0}.

        Only parameters the scenario keeps as attributes can change live; others raise ValueError.
        """
        scenario = self._world.scenario
        for key, value in task.items():
            if key in WRAPPER_KEYS or not hasattr(scenario, key):
                raise ValueError(f"VMAS scenario '{self._scenario_name}' has no parameter "
                                 f"'{key}' that can change while it runs")
            setattr(scenario, key, value)

    @staticmethod
    def render_needs_display() -> bool:
        """VMAS renders off-screen through EGL where the EGL library exists; otherwise pyglet needs an X display."""
        return ctypes.util.find_library("EGL") is None

    def render(self, env_index: int = 0) -> np.ndarray:
        """The current frame of one world as an RGB array (H, W, 3), uint8."""
        return self._world.render(mode="rgb_array", env_index=env_index, visualize_when_rgb=False)

    def close(self) -> None:
        viewer = getattr(self._world, "viewer", None)
        if viewer is not None:
            viewer.close()
