"""Unity ML-Agents player builds as RLlib multi-agent environments (`env: unity`).

Ray 2.60 ships no Unity wrapper; this one drives the real `mlagents_envs.UnityEnvironment` (1.1.0, gRPC).
`env_config`:
    file_name     the player build, e.g. builds/Game.x86_64 (required; relative to the working directory).
    no_graphics   run the game with -nographics -batchmode (default false: the game renders, and needs a display).
    display       auto (default): start a private Xvfb when the game renders and there is no DISPLAY;
                  xvfb: always start one; none: never (the game must find a display itself).
    width, height size of that Xvfb screen (640 x 480).
    log_folder    where the game writes Player-<worker id>.log (default: no log file).
    timeout_wait  seconds to wait for the game at start and at every step before giving up (default 60).
    time_scale    Unity's time scale (default 20: faster than real time).
    seed          seed sent to the game (default 0).
    parameters    environment parameters sent to the game (a mapping of name -> number), read by the game at reset.
    observations  all (default), vector (rank-1 observations only) or visual (images only).
    action_masks  true: behaviors with discrete actions observe Dict(observations=..., action_mask=...) (1 = allowed;
                  envs/masking.py), which the models in model/ apply (default false: masks only in infos).

Agents are `<behavior>_<agent id>` (e.g. `Dodgeball?team=1_3`). Observations follow the game's behavior specs: one
observation is a Box, several a Tuple (images channels-last (H, W, C) for CNNs). Actions: continuous -> Box(-1, 1),
one discrete branch -> Discrete, several -> MultiDiscrete, hybrid -> Tuple(Box, Discrete/MultiDiscrete).
Reward = the agent's reward + its group reward. An agent's episode ends when the game reports it done (interrupted ->
truncated); the RLlib episode ends when every agent in it is done, and the game's auto-reset observations of that
same message start the next one. The game's discrete action masks (True = unavailable, ML-Agents' convention) are in
`infos[agent]["action_mask"]`, and in the observations with `action_masks: true`. ML-Agents has no global state: a
centralised critic (`multiagent.critic: centralized`, marlkit/mappo.py) reads the joint observation of the agents
present at the first reset (`possible_agents`); agents that appear later have no slot in it.

Each env gets its own worker id, so its own port (5005 + worker id, picked free), and many runners and trials share
a node.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
from pathlib import Path

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.unity import pb_compat
from envs import masking
from envs.errors import ConfigError

KEYS = ("file_name", "no_graphics", "display", "width", "height", "log_folder", "timeout_wait", "time_scale", "seed",
        "parameters", "observations", "action_masks")
# Settings of one type: name -> (check, what the value must be).
TYPED = {
    "timeout_wait": (lambda v: _whole(v) and v > 0, "a whole number of seconds > 0"),
    "width": (lambda v: _whole(v) and v > 0, "a whole number of pixels > 0"),
    "height": (lambda v: _whole(v) and v > 0, "a whole number of pixels > 0"),
    "seed": (lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
    "time_scale": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
    "no_graphics": (lambda v: isinstance(v, bool), "true or false"),
    "action_masks": (lambda v: isinstance(v, bool), "true or false"),
}
DISPLAYS = ("auto", "xvfb", "none")
OBSERVATIONS = ("all", "vector", "visual")
BASE_PORT = 5005
LAUNCHER = Path(__file__).resolve().parent / "launch_game.sh"  # ties the game's life to its env runner's
PORT_ATTEMPTS = 3


class GameError(RuntimeError):
    """The game could not be started or stopped answering; the message says which and what to check."""


def executable(file_name: str) -> Path | None:
    """The file mlagents_envs would launch for `file_name` (it also tries the .x86_64 / .x86 suffixes)."""
    path = Path(file_name).expanduser()
    for candidate in (path, path.with_name(path.name + ".x86_64"), path.with_name(path.name + ".x86")):
        if candidate.is_file():
            return candidate.resolve()
    return None


def absolute_paths(env_config: dict) -> dict:
    """file_name and log_folder relative to the directory train.py runs in, made absolute."""
    resolved = dict(env_config)
    for key in ("file_name", "log_folder"):
        if isinstance(resolved.get(key), str):
            resolved[key] = str(Path(resolved[key]).expanduser().absolute())
    return resolved


def check_config(env_config: dict) -> None:
    """Raises ConfigError for an env_config that cannot start a game (checked before Ray starts)."""
    unknown = [key for key in env_config if key not in KEYS and key != "num_envs"]
    if unknown:
        raise ConfigError(f"env_config.{unknown[0]} is not a Unity setting; known: {', '.join(KEYS)}")
    file_name = env_config.get("file_name")
    if not file_name:
        raise ConfigError("env_config.file_name is required for env 'unity': the game's player build (e.g. "
                          "builds/Game.x86_64)")
    game = executable(str(file_name))
    if game is None:
        raise ConfigError(f"env_config.file_name {file_name}: no such file; build the game for Linux or fix the path")
    if not os.access(game, os.X_OK):
        raise ConfigError(f"env_config.file_name {game} is not executable; run: chmod +x {game}")
    if any(part in str(Path(file_name).parent) for part in (".x86_64", ".x86", ".app", ".exe")):
        raise ConfigError(f"env_config.file_name {file_name}: mlagents_envs strips .x86_64/.x86/.app/.exe anywhere in "
                          "the path; rename folders whose names contain them")
    for key, (valid, what) in TYPED.items():
        if key in env_config and not valid(env_config[key]):
            raise ConfigError(f"env_config.{key} must be {what}, got {env_config[key]!r}")
    if env_config.get("display", "auto") not in DISPLAYS:
        raise ConfigError(f"env_config.display must be one of {', '.join(DISPLAYS)}, got {env_config['display']!r}")
    if env_config.get("observations", "all") not in OBSERVATIONS:
        raise ConfigError(f"env_config.observations must be one of {', '.join(OBSERVATIONS)}")
    parameters = env_config.get("parameters") or {}
    if not isinstance(parameters, dict) or not all(isinstance(v, (int, float)) for v in parameters.values()):
        raise ConfigError("env_config.parameters must map parameter names to numbers")
    if needs_xvfb(env_config) and shutil.which("Xvfb") is None:
        raise ConfigError("the game renders (no_graphics: false) and there is no display: install Xvfb "
                          "(apt-get install xvfb), or set no_graphics: true")


def _whole(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def needs_xvfb(env_config: dict) -> bool:
    display = env_config.get("display", "auto")
    renders = not env_config.get("no_graphics", False)
    return display == "xvfb" or (display == "auto" and renders and not os.environ.get("DISPLAY"))


def free_worker_id() -> int:
    """A worker id whose port (BASE_PORT + id) is free now; the OS picks, so parallel runners do not collide."""
    while True:
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            port = probe.getsockname()[1]
        if port > BASE_PORT:
            return port - BASE_PORT


def behavior_of(agent_id: str) -> str:
    """The behavior name of an agent id `<behavior>_<id>`."""
    return agent_id.rsplit("_", 1)[0]


def behavior_policy(agent_id: str) -> str:
    """The default policy of an agent: its behavior name without the team suffix (`Striker?team=1_3` -> `Striker`)."""
    return behavior_of(agent_id).split("?", 1)[0]


def observation_space(spec) -> gym.Space:
    shape = tuple(spec.shape)
    if len(shape) == 3:  # CHW from the game -> HWC for RLlib's CNNs
        shape = (shape[1], shape[2], shape[0])
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)


def action_space(spec) -> gym.Space:
    continuous = gym.spaces.Box(-1.0, 1.0, (spec.continuous_size,), np.float32) if spec.continuous_size else None
    branches = spec.discrete_branches
    discrete = (gym.spaces.Discrete(branches[0]) if len(branches) == 1
                else gym.spaces.MultiDiscrete(branches) if branches else None)
    if continuous and discrete:
        return gym.spaces.Tuple((continuous, discrete))
    return continuous or discrete


def _unity_environment(*args, **kwargs):
    """`UnityEnvironment(...)`, without the exit hook a failed construction leaves behind: mlagents registers its
    `_close` with atexit first thing, so a port taken meanwhile left a hook that printed an AttributeError
    traceback when the process ended."""
    from mlagents_envs.environment import UnityEnvironment  # after pb_compat.install()

    unity = UnityEnvironment.__new__(UnityEnvironment)
    try:
        unity.__init__(*args, **kwargs)
    except BaseException:
        atexit.unregister(unity._close)
        raise
    return unity


class UnityEnv(MultiAgentEnv):
    """Every behavior and agent of one running Unity game."""

    def __init__(self, env_config: dict | None = None):
        super().__init__()
        config = dict(env_config or {})
        check_config(config)
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's INFO lines (GOAWAY at close) are noise here
        pb_compat.install()
        from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
        from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

        # Every setting is read before Xvfb starts: a bad one must not leave a display running.
        engine = EngineConfigurationChannel()
        engine.set_configuration_parameters(time_scale=config.get("time_scale", 20.0))
        parameters = EnvironmentParametersChannel()
        for name, value in (config.get("parameters") or {}).items():
            parameters.set_float_parameter(name, float(value))
        log_folder = config.get("log_folder")
        if log_folder:
            Path(log_folder).mkdir(parents=True, exist_ok=True)
        self._game = executable(config["file_name"])
        self._timeout = int(config.get("timeout_wait", 60))
        self._xvfb = None
        self._unity = None
        if needs_xvfb(config):
            from xvfbwrapper import Xvfb

            self._xvfb = Xvfb(width=config.get("width", 640), height=config.get("height", 480), colordepth=24)
            self._xvfb.start()  # sets DISPLAY in this process; the game inherits it
        os.environ["MARLKIT_UNITY_GAME"] = str(self._game)  # read by LAUNCHER, which starts the game
        try:
            self._start_game(config, [engine, parameters])
            self._game_call("reset", self._unity.reset)  # the game sends its behavior specs with the first observations
        except Exception:
            self.close()
            raise
        self._which = config.get("observations", "all")
        self._action_masks = bool(config.get("action_masks", False))
        self._specs = dict(self._unity.behavior_specs)
        self._observation_spaces = {}
        self._action_spaces = {}
        for behavior, spec in self._specs.items():
            obs = [observation_space(s) for s in spec.observation_specs if self._keep(s)]
            space = obs[0] if len(obs) == 1 else gym.spaces.Tuple(obs)
            if self._masked(spec):
                space = masking.wrap_space(space, int(sum(spec.action_spec.discrete_branches)))
            self._observation_spaces[behavior] = space
            self._action_spaces[behavior] = action_space(spec.action_spec)
        self._pending, _ = self._collect()  # the first observations, returned by reset()
        self.possible_agents = sorted(self._pending)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.get_observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.get_action_space(a) for a in self.possible_agents}

    def _start_game(self, config: dict, side_channels: list) -> None:
        """Starts the game on a free port, trying another if a process takes it meanwhile."""
        from mlagents_envs.exception import UnityWorkerInUseException

        log_folder = config.get("log_folder")
        for attempt in range(PORT_ATTEMPTS):
            self.worker_id = free_worker_id()
            try:
                self._unity = self._game_call("start", lambda: _unity_environment(
                    str(LAUNCHER), worker_id=self.worker_id, base_port=BASE_PORT,
                    seed=int(config.get("seed", 0)), no_graphics=bool(config.get("no_graphics", False)),
                    timeout_wait=self._timeout, side_channels=side_channels,
                    log_folder=str(Path(log_folder).resolve()) if log_folder else None,
                ))
                return
            except UnityWorkerInUseException:  # another process took the port since we looked
                if attempt == PORT_ATTEMPTS - 1:
                    raise GameError(f"no free port for the game after {PORT_ATTEMPTS} tries") from None

    def _masked(self, spec) -> bool:
        return self._action_masks and spec.action_spec.discrete_size > 0

    def _keep(self, obs_spec) -> bool:
        rank = len(obs_spec.shape)
        return self._which == "all" or (rank == 1) == (self._which == "vector")

    def get_observation_space(self, agent_id):  # also for agents that appear later
        return self._observation_spaces[behavior_of(agent_id)]

    def get_action_space(self, agent_id):
        return self._action_spaces[behavior_of(agent_id)]

    def _observation(self, spec, batches, index, unavailable=None):
        """One agent's observation; `unavailable`: its action mask (True = not allowed), None for terminal steps."""
        arrays = [np.asarray(batch[index], dtype=np.float32) for obs_spec, batch in zip(spec.observation_specs, batches)
                  if self._keep(obs_spec)]
        arrays = [np.transpose(a, (1, 2, 0)) if a.ndim == 3 else a for a in arrays]
        observation = arrays[0] if len(arrays) == 1 else tuple(arrays)
        if not self._masked(spec):
            return observation
        size = int(sum(spec.action_spec.discrete_branches))
        allowed = np.ones(size, np.float32) if unavailable is None else (~unavailable).astype(np.float32)
        return {masking.OBSERVATIONS_KEY: observation, masking.MASK_KEY: allowed}

    def _collect(self):
        """The game's current message by agent id: decisions {id: (obs, reward, info)} and terminals
        {id: (obs, reward, interrupted)}. An agent can be in both: the game restarted it in the same message."""
        decisions, terminals = {}, {}
        for behavior, spec in self._specs.items():
            decision, terminal = self._unity.get_steps(behavior)
            for index, agent in enumerate(terminal.agent_id):
                reward = float(terminal.reward[index] + terminal.group_reward[index])
                terminals[f"{behavior}_{agent}"] = (self._observation(spec, terminal.obs, index), reward,
                                                   bool(terminal.interrupted[index]))
            for index, agent in enumerate(decision.agent_id):
                info = {}
                if decision.action_mask is not None:  # True = action unavailable (ML-Agents' convention)
                    info["action_mask"] = np.concatenate([mask[index] for mask in decision.action_mask])
                reward = float(decision.reward[index] + decision.group_reward[index])
                observation = self._observation(spec, decision.obs, index, info.get("action_mask"))
                decisions[f"{behavior}_{agent}"] = (observation, reward, info)
        return decisions, terminals

    def reset(self, *, seed=None, options=None):
        if self._pending is None:  # the last episode ended without the game starting new agents
            self._game_call("reset", self._unity.reset)
            self._pending, _ = self._collect()
        decisions, self._pending = self._pending, None
        self._in_episode, self._finished = set(decisions), set()
        return {a: d[0] for a, d in decisions.items()}, {a: d[2] for a, d in decisions.items()}

    def step(self, action_dict):
        for behavior, spec in self._specs.items():
            decision, _ = self._unity.get_steps(behavior)
            if not len(decision):
                continue
            actions = spec.action_spec.empty_action(len(decision))  # agents without an action from RLlib: zeros
            for index, agent in enumerate(decision.agent_id):
                action = action_dict.get(f"{behavior}_{agent}")
                if action is None:
                    continue
                if spec.action_spec.continuous_size and spec.action_spec.discrete_size:
                    actions.continuous[index], actions.discrete[index] = action[0], action[1]
                elif spec.action_spec.continuous_size:
                    actions.continuous[index] = action
                else:
                    actions.discrete[index] = action
            self._unity.set_actions(behavior, actions)
        self._game_call("step", self._unity.step)
        decisions, terminals = self._collect()
        obs, rewards, terminated, truncated, infos = {}, {}, {}, {}, {}
        for agent, (observation, reward, interrupted) in terminals.items():
            if agent in self._in_episode and agent not in self._finished:
                obs[agent], rewards[agent], infos[agent] = observation, reward, {}
                terminated[agent], truncated[agent] = not interrupted, interrupted
                self._finished.add(agent)
        for agent, (observation, reward, info) in decisions.items():
            if agent not in self._finished:  # still playing, or joining this episode late
                obs[agent], rewards[agent], infos[agent] = observation, reward, info
                self._in_episode.add(agent)
        everyone_done = self._in_episode <= self._finished
        if everyone_done:  # the decisions of this message start the game's next episode: the next reset() returns them
            self._pending = decisions or None
        terminated["__all__"] = everyone_done and any(terminated.values())
        truncated["__all__"] = everyone_done and not terminated["__all__"]
        return obs, rewards, terminated, truncated, infos

    def _game_call(self, what: str, call):
        """Runs a call into the game; ML-Agents' failures become one-line GameErrors (and the game is stopped)."""
        from mlagents_envs.exception import (
            UnityCommunicatorStoppedException, UnityEnvironmentException, UnityTimeOutException,
        )

        try:
            return call()
        except UnityTimeOutException:
            self.close()
            raise GameError(f"the game {self._game} did not answer within timeout_wait={self._timeout} s at {what} "
                            "(hung or not an ML-Agents build); it was stopped") from None
        except (UnityEnvironmentException, UnityCommunicatorStoppedException) as error:
            self.close()
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise GameError(f"the game {self._game} failed at {what}: {reason}") from None

    def _stop_display(self) -> None:
        if self._xvfb is not None:
            self._xvfb.stop()
            self._xvfb = None

    def close(self) -> None:
        unity, self._unity = getattr(self, "_unity", None), None
        if unity is not None:
            process = unity._process
            unity.close()  # waits timeout_wait for the game to quit, then kills it (without reaping it)
            if process is not None:
                process.wait(timeout=10)
        self._stop_display()
