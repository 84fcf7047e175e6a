"""VMAS (Vectorized Multi-Agent Simulator) as an RLlib multi-agent environment.

`env: vmas` in an experiment YAML. `env_config`:

    scenario            VMAS scenario name (required), e.g. navigation, balance, transport, simple_spread.
    continuous_actions  Box actions (default true) or Discrete actions (false).
    max_steps           episode length; reaching it truncates the episode (default 100).
    device              torch device of the simulator, "cpu" or "cuda[:N]". Default: "cuda" when the process that
                        samples has a GPU (num_gpus_per_env_runner > 0, or num_gpus > 0 with num_env_runners 0),
                        else "cpu". The batched env runner keeps the policy's forward pass on the policy's device.
    num_envs            worlds simulated together in one batched VMAS call (default 1). With num_envs > 1 the
                        env is an RLlib `BaseEnv` of that many sub-envs. It is kept equal to RLlib's
                        num_envs_per_env_runner (set either one), so RLlib's batch accounting stays right.
    seed                default seed when RLlib resets without one.
    any other key       passed to the scenario (n_agents, shared_rew, ...); a key the scenario does not
                        use is an error.

Agent ids are VMAS's agent names (`agent_0`, `agent_1`, ...). Each agent has its own observation and action
space, reward and action; `terminated`/`truncated` are shared by all agents of the VMAS world. VMAS scenarios
offer no global state: a centralised critic (`multiagent.critic: centralized`, marlkit/mappo.py) reads the joint
observation of all agents of the world.

Example:
    >>> from envs.vmas_env import VmasEnv
    >>> env = VmasEnv({"scenario": "navigation", "n_agents": 3, "max_steps": 50})
    >>> obs, infos = env.reset(seed=0)
    >>> sorted(obs), obs["agent_0"].shape
    (['agent_0', 'agent_1', 'agent_2'], (18,))
"""

from __future__ import annotations

import ctypes.util
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.env.base_env import BaseEnv
from ray.rllib.env.multi_agent_env import MultiAgentEnv

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


def make_env(env_config: dict | None = None):
    """The `vmas` env creator: a `VmasEnv` for num_envs 1, else a batched `VmasVectorEnv`."""
    env_config = dict(env_config or {})
    if env_config.get("num_envs", 1) == 1:
        return VmasEnv(env_config)
    return VmasVectorEnv(env_config)


class _VmasWorld:
    """What both wrappers share: building the VMAS world and converting between torch and numpy."""

    def _build(self, env_config: dict, num_envs: int) -> None:
        import vmas

        config = dict(env_config)
        check_config(config)
        scenario_kwargs = {k: v for k, v in config.items() if k not in WRAPPER_KEYS}
        self._seed = config.get("seed")
        self._scenario_name = config["scenario"]
        self._device = config.get("device", "cpu")
        if str(self._device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"env_config.device is '{self._device}' but this process sees no CUDA GPU; set device: cpu, or give "
                "the sampling process a GPU (num_gpus_per_env_runner, or num_gpus with num_env_runners: 0)"
            )
        with warnings.catch_warnings():
            # VMAS only warns about scenario kwargs it did not use; a typo must not pass silently.
            warnings.filterwarnings("error", message="Scenario kwargs")
            try:
                self._world = vmas.make_env(
                    scenario=config["scenario"],
                    num_envs=num_envs,
                    device=self._device,
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
        self.observation_spaces = {
            aid: _to_gymnasium(s) for aid, s in self._world.observation_space.spaces.items()
        }
        self.action_spaces = {aid: _to_gymnasium(s) for aid, s in self._world.action_space.spaces.items()}
        # VMAS takes (batch,) for a Discrete action and (batch, size) otherwise.
        self._action_shapes = {
            aid: (num_envs,) if isinstance(space, gym.spaces.Discrete) else (num_envs, -1)
            for aid, space in self.action_spaces.items()
        }

    def _seed_world(self, seed: int | None) -> None:
        """Seeds the worlds with `seed`, or with env_config.seed at the first reset without one."""
        seed = self._seed if seed is None else seed
        if seed is not None:
            self._world.seed(seed)
            self._seed = None  # later resets continue the seeded random stream

    def _reset_world(self, seed: int | None) -> dict[str, np.ndarray]:
        self._seed_world(seed)
        return self._numpy(self._world.reset())

    def _step_world(self, actions: dict[str, np.ndarray]):
        """Steps every sub-env; returns numpy obs, rewards, terminated, truncated, infos (leading dim: sub-env)."""
        torch_actions = {
            aid: torch.tensor(np.asarray(actions[aid]), device=self._device).reshape(self._action_shapes[aid])
            for aid in self.possible_agents
        }
        observations, rewards, terminated, truncated, infos = self._world.step(torch_actions)
        terminated = terminated.cpu().numpy()
        truncated = truncated.cpu().numpy() & ~terminated
        infos = {aid: self._numpy(info) for aid, info in infos.items()}
        return self._numpy(observations), self._numpy(rewards), terminated, truncated, infos

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
    def _numpy(per_agent: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {aid: value.detach().cpu().numpy() for aid, value in per_agent.items()}

    @staticmethod
    def render_needs_display() -> bool:
        """VMAS renders off-screen through EGL where the EGL library exists; otherwise pyglet needs an X display."""
        return ctypes.util.find_library("EGL") is None

    def render(self, env_index: int = 0) -> np.ndarray:
        """The current frame of one sub-env as an RGB array (H, W, 3), uint8."""
        return self._world.render(mode="rgb_array", env_index=env_index, visualize_when_rgb=False)

    def close(self) -> None:
        viewer = getattr(self._world, "viewer", None)
        if viewer is not None:
            viewer.close()


class VmasEnv(_VmasWorld, MultiAgentEnv):
    """One VMAS world exposed as an RLlib `MultiAgentEnv` (one episode at a time)."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, env_config: dict | None = None):
        MultiAgentEnv.__init__(self)
        self._build(dict(env_config or {}), num_envs=1)
        self.agents = list(self.possible_agents)
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observations = self._reset_world(seed)
        return {aid: obs[0] for aid, obs in observations.items()}, {aid: {} for aid in self.possible_agents}

    def step(self, action_dict: dict[str, Any]):
        observations, rewards, terminated, truncated, infos = self._step_world(action_dict)
        done_terminated, done_truncated = bool(terminated[0]), bool(truncated[0])
        terminateds = {aid: done_terminated for aid in self.possible_agents}
        truncateds = {aid: done_truncated for aid in self.possible_agents}
        terminateds["__all__"] = done_terminated
        truncateds["__all__"] = done_truncated
        return (
            {aid: obs[0] for aid, obs in observations.items()},
            {aid: float(r[0]) for aid, r in rewards.items()},
            terminateds,
            truncateds,
            {aid: {key: value[0] for key, value in info.items()} for aid, info in infos.items()},
        )


class VmasVectorEnv(_VmasWorld, BaseEnv):
    """`num_envs` VMAS worlds stepped by one batched simulator call, as an RLlib old-stack `BaseEnv`.

    RLlib's sampler polls all sub-envs, sends one action per agent and sub-env, and resets finished sub-envs
    one by one through `try_reset` (VMAS `reset_at`); the simulator itself always steps every sub-env at once.
    """

    def __init__(self, env_config: dict | None = None):
        config = dict(env_config or {})
        self.num_envs = int(config.get("num_envs", 1))
        self._build(config, num_envs=self.num_envs)
        self._pending = None  # what the next poll() returns
        self._reset_seed = None
        self._needs_reset = True
        self._reset_observations = None  # all sub-envs finished together: reset at once, handed out by try_reset

    @property
    def observation_space(self) -> gym.Space:
        return gym.spaces.Dict(self.observation_spaces)

    @property
    def action_space(self) -> gym.Space:
        return gym.spaces.Dict(self.action_spaces)

    def get_agent_ids(self) -> set:
        return set(self.possible_agents)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> None:
        """Seeds the next full reset (RLlib calls this once per env runner with its computed seed)."""
        self._reset_seed = seed
        self._needs_reset = True

    def poll(self):
        if self._needs_reset:
            observations = self._reset_world(self._reset_seed)
            self._needs_reset = False
            self._pending = (
                self._per_env(observations),
                {i: {} for i in range(self.num_envs)},
                {i: {"__all__": False} for i in range(self.num_envs)},
                {i: {"__all__": False} for i in range(self.num_envs)},
                {i: {} for i in range(self.num_envs)},
            )
        pending, self._pending = self._pending, self._empty()
        return (*pending, {})

    def send_actions(self, action_dict) -> None:
        missing = [i for i in range(self.num_envs) if i not in action_dict]
        if missing:
            raise ValueError(f"VMAS steps all sub-envs together; no actions for sub-envs {missing}")
        actions = {aid: np.stack([action_dict[i][aid] for i in range(self.num_envs)]) for aid in self.possible_agents}
        observations, rewards, terminated, truncated, infos = self._step_world(actions)
        # Episodes of a fixed length end together; one VMAS reset of all worlds costs what one reset_at does.
        self._reset_observations = self._numpy(self._world.reset()) if (terminated | truncated).all() else None
        self._pending = (
            self._per_env(observations),
            {i: {aid: float(r[i]) for aid, r in rewards.items()} for i in range(self.num_envs)},
            self._flags(terminated),
            self._flags(truncated),
            {i: {aid: {k: v[i] for k, v in info.items()} for aid, info in infos.items()} for i in range(self.num_envs)},
        )

    def try_reset(self, env_id=None, *, seed=None, options=None):
        if env_id is None:
            observations = self._reset_world(seed)
            return self._per_env(observations), {i: {} for i in range(self.num_envs)}
        observations = self._reset_observations
        if observations is None:
            observations = self._numpy(self._world.reset_at(env_id))
        return {env_id: {aid: obs[env_id] for aid, obs in observations.items()}}, {env_id: {}}

    def stop(self) -> None:
        self.close()

    def _per_env(self, observations: dict[str, np.ndarray]) -> dict:
        return {i: {aid: obs[i] for aid, obs in observations.items()} for i in range(self.num_envs)}

    def _flags(self, flags: np.ndarray) -> dict:
        return {
            i: {**{aid: bool(flags[i]) for aid in self.possible_agents}, "__all__": bool(flags[i])}
            for i in range(self.num_envs)
        }

    def _empty(self) -> tuple:
        return {}, {}, {}, {}, {}


class VmasBatch(_VmasWorld, BatchedEnv):
    """`num_envs` VMAS worlds as a `BatchedEnv` (envs/batched.py): torch tensors on `device` in and out.

    Observations of agents that observe different sizes (predators and prey) are zero-padded to the widest. A world
    that finished restarts on the next step: all worlds with one VMAS `reset` when they finished together (episodes
    of a fixed length do; one `reset_at` per world costs as much as a whole step), else one `reset_at` each.
    """

    def __init__(self, env_config: dict):
        config = dict(env_config)
        self.num_envs = int(config.get("num_envs", 1))
        self._build(config, num_envs=self.num_envs)
        self.device = str(self._world.device)
        self._widest = max(observation_size(space) for space in self.observation_spaces.values())
        self._widths = [action_width(self.action_spaces[agent]) for agent in self.possible_agents]
        self._discrete = [isinstance(self.action_spaces[agent], gym.spaces.Discrete) for agent in self.possible_agents]
        self._restart = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _stacked(self, per_agent: dict) -> torch.Tensor:
        """(num_envs, num_agents, ...) from VMAS's per-agent dict; observations zero-padded to the widest."""
        parts = [per_agent[agent] for agent in self.possible_agents]
        if parts[0].dim() > 1:
            parts = [torch.nn.functional.pad(p.reshape(len(p), -1), (0, self._widest - p[0].numel())) for p in parts]
        return torch.stack(parts, dim=1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._seed_world(seed)
        self._restart.zero_()
        return self._stacked(self._world.reset())

    def step(self, actions: torch.Tensor):
        if bool(self._restart.all()):
            self._restart.zero_()
            zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            return (self._stacked(self._world.reset()), torch.zeros(self.num_envs, len(self.possible_agents),
                                                                    device=self.device), zeros, zeros)
        per_agent = {}
        for index, agent in enumerate(self.possible_agents):
            action = actions[:, index, :self._widths[index]]
            per_agent[agent] = action[:, 0].long() if self._discrete[index] else action.float()
        observations, rewards, terminated, truncated, _ = self._world.step(per_agent)
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
