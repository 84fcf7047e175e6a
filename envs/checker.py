"""The env checker: plays one episode of an env with random (legal) actions and lists what it does not do as it says,
one line per problem naming the env, the agent and the field, before any training starts.

It checks that spaces are gymnasium spaces (actions Box, Discrete or MultiDiscrete); that `reset` and `step` return
what their API says (PettingZoo Parallel: five dicts keyed by the agents in the game; RLlib: `__all__` flags;
gymnasium: five values); that every observation lies in its agent's space (type, shape, dtype, bounds), action masks
included; that agent ids are the declared ones and agents in the game are given observations and rewards; and that
an episode ends within `max_steps`. A project `BatchedEnv` is checked on its arrays (shapes, dtypes, an episode end).

train.py runs it when it loads an experiment on a user's env or a PettingZoo env (a failing env stops it before Ray
starts), and for any experiment with `train.py -f x.yaml --check-env`.

Example:
    >>> from envs.user_envs import pettingzoo_batch
    >>> env_problems(pettingzoo_batch({"env": "mpe2.simple_spread_v3", "N": 2, "max_cycles": 5}), "spread")
    []
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.batched import BatchedEnv, zero_actions
from envs.games import MASK_KEY, GameCopies, ParallelGame, RLlibGame, TurnGame

MAX_STEPS = 10_000
ACTION_SPACES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)
STEP_VALUES = "(observations, rewards, terminations, truncations, infos)"


class EnvProblem(Exception):
    """Ends the check: what follows would only repeat it."""


def env_problems(batch: BatchedEnv, name: str, max_steps: int = MAX_STEPS, seed: int = 0) -> list[str]:
    """The problems of the env behind `batch` (a `GameCopies` is checked game by game through its first game's env,
    any other `BatchedEnv` on its arrays), one line each; empty when it passes."""
    checker = _GameChecker(batch.games[0], name) if isinstance(batch, GameCopies) else _BatchChecker(batch, name)
    try:
        checker.run(max_steps, seed)
    except EnvProblem:
        pass
    except Exception as error:  # noqa: BLE001: the env's own exception is a finding like any other
        checker.say(None, checker.phase, f"raised {type(error).__name__}: {' '.join(str(error).split())}")
    return checker.problems


class _Checker:
    def __init__(self, name: str):
        self.name, self.problems, self.phase = name, [], "construction"

    def say(self, agent, field: str, text: str) -> None:
        line = f"env '{self.name}': " + (f"agent '{agent}': " if agent is not None else "") + f"{field} {text}"
        if line not in self.problems:
            self.problems.append(line)

    def stop_if_any(self) -> None:
        if self.problems:
            raise EnvProblem


class _GameChecker(_Checker):
    """One game through its adapter (envs/games.py), the raw values it returns checked against the API."""

    def __init__(self, game: ParallelGame, name: str):
        super().__init__(name)
        self.game = game
        self.parallel = type(game) is ParallelGame
        self.rllib = isinstance(game, RLlibGame)
        self.turns = isinstance(game, TurnGame)

    def run(self, max_steps: int, seed: int) -> None:
        agents = self.game.possible_agents
        if not agents or len(set(agents)) != len(agents):
            self.say(None, "possible_agents", f"must list each agent id once, got {agents!r}")
        self.stop_if_any()
        self._check_spaces(agents)
        self.phase = "reset()"
        reset = self.game.reset(seed)
        self._check_dicts("reset()", reset, 2, "(observations, infos)")
        observations = reset[0]
        self._check_observations("reset()", observations)
        for step in range(max_steps):
            self.phase = "step()"
            acting = self.game.acting(observations)
            result = self.game.step(self._random_actions(observations, acting))
            self._check_dicts("step()", result, 5, STEP_VALUES)
            observations, rewards, terminations, truncations, _ = result
            self._check_step(acting, rewards, terminations, truncations)
            self._check_observations("step()", observations)
            if self.game.over(terminations, truncations):
                return
        self.say(None, "episode", f"did not end within {max_steps} steps of random actions: give the env a time "
                                  f"limit (truncation) or end its episodes")

    def _check_spaces(self, agents: list) -> None:
        for agent in agents:
            observation_space, action_space = self.game.observation_space(agent), self.game.action_space(agent)
            if not isinstance(observation_space, gym.Space):
                self.say(agent, "observation space", f"is a {type(observation_space).__name__}, not a gymnasium space")
            if not isinstance(action_space, ACTION_SPACES):
                self.say(agent, "action space", f"is {action_space!r}; the batched runner takes Box, Discrete or "
                                                f"MultiDiscrete actions")
        self.stop_if_any()

    def _check_dicts(self, call: str, result, count: int, names: str) -> None:
        if not isinstance(result, tuple) or len(result) != count:
            size = len(result) if isinstance(result, tuple) else type(result).__name__
            self.say(None, call, f"returned {size} values; it must return {count}: {names}")
        elif not all(isinstance(part, dict) for part in result):
            kinds = ", ".join(type(part).__name__ for part in result)
            self.say(None, call, f"returned ({kinds}); it must return dicts keyed by agent: {names}")
        self.stop_if_any()

    def _check_observations(self, call: str, observations: dict) -> None:
        known = set(self.game.possible_agents)
        for agent in observations:
            if agent not in known:
                self.say(agent, f"{call} observations:", f"is not one of possible_agents {sorted(known)}")
        if self.parallel:
            for agent in self.game.env.agents:
                if agent not in observations:
                    self.say(agent, f"{call} observations:", "missing, though the agent is in env.agents")
        for agent, value in observations.items():
            if agent in known:
                problem = observation_problem(self.game.observation_space(agent), value)
                if problem:
                    self.say(agent, f"{call} observation", problem)
        self.stop_if_any()

    def _check_step(self, acting: set, rewards: dict, terminations: dict, truncations: dict) -> None:
        for field, values in (("rewards", rewards), ("terminations", terminations), ("truncations", truncations)):
            agents = set(values) - {"__all__"}
            for agent in sorted(agents - set(self.game.possible_agents)):
                self.say(agent, f"step() {field}:", f"is not one of possible_agents {self.game.possible_agents}")
            if self.parallel or self.turns:
                for agent in sorted(acting - agents):
                    self.say(agent, f"step() {field}:", "missing, though the agent acted this step")
            if self.rllib and field != "rewards" and "__all__" not in values:
                self.say(None, f"step() {field}:", "has no '__all__' entry (RLlib's flag for the whole episode)")
        for agent, reward in rewards.items():
            if not isinstance(reward, (int, float, np.number)) or not np.isfinite(reward):
                self.say(agent, "step() reward", f"is {reward!r}; it must be a finite number")
        self.stop_if_any()

    def _random_actions(self, observations: dict, acting: set) -> dict:
        actions = {}
        for agent in acting:
            space = self.game.action_space(agent)
            value = observations.get(agent)
            if isinstance(value, dict) and MASK_KEY in value:
                allowed = np.flatnonzero(np.asarray(value[MASK_KEY]).reshape(-1))
                if not len(allowed):
                    self.say(agent, "action_mask", "allows no action for an agent whose turn it is")
                    raise EnvProblem
                actions[agent] = int(np.random.default_rng(len(actions)).choice(allowed))
            else:
                actions[agent] = space.sample()
        return actions


def observation_problem(space: gym.Space, value) -> str | None:
    """Why `value` is not an observation of `space` (type, shape, dtype, bounds), or None."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(value, dict):
            return f"is a {type(value).__name__}; its space is a Dict"
        if set(value) != set(space.spaces):
            return f"has keys {sorted(value)}; its space has {sorted(space.spaces)}"
        for key, part in space.spaces.items():
            problem = observation_problem(part, value[key])
            if problem:
                return f"'{key}' {problem}"
        return None
    if isinstance(space, gym.spaces.Box):
        if not isinstance(value, np.ndarray):
            return f"is a {type(value).__name__}, not a numpy array"
        if value.shape != space.shape:
            return f"has shape {value.shape}; its space says {space.shape}"
        if value.dtype != space.dtype:
            return f"has dtype {value.dtype}; its space says {space.dtype}"
        outside = np.flatnonzero((value < space.low) | (value > space.high) | np.isnan(value))
        if len(outside):
            i = int(outside[0])
            return (f"is outside its space: entry {i} is {float(value.flat[i]):g}, bounds "
                    f"[{float(space.low.flat[i]):g}, {float(space.high.flat[i]):g}]")
        return None
    return None if space.contains(value) else f"{value!r} is not in its space {space}"


class _BatchChecker(_Checker):
    """A project `BatchedEnv`: arrays of the declared shapes and dtypes, and an episode end."""

    def __init__(self, batch: BatchedEnv, name: str):
        super().__init__(name)
        self.batch = batch

    def run(self, max_steps: int, seed: int) -> None:
        batch = self.batch
        agents = list(batch.possible_agents)
        for agent in agents:
            if not isinstance(batch.observation_spaces.get(agent), gym.spaces.Box) and not isinstance(
                    batch.observation_spaces.get(agent), gym.spaces.Dict):
                self.say(agent, "observation space", f"is {batch.observation_spaces.get(agent)!r}, not a Box")
            if not isinstance(batch.action_spaces.get(agent), ACTION_SPACES):
                self.say(agent, "action space", f"is {batch.action_spaces.get(agent)!r}, not Box, Discrete or "
                                                f"MultiDiscrete")
        self.stop_if_any()
        width = max(gym.spaces.flatdim(batch.observation_spaces[agent]) for agent in agents)
        self.phase = "reset()"
        self._check_array("reset()", "observations", batch.reset(seed), (batch.num_envs, len(agents), width), "f")
        actions = zero_actions(batch)
        for _ in range(max_steps):
            self.phase = "step()"
            result = batch.step(actions)
            if not isinstance(result, tuple) or len(result) != 4:
                self.say(None, "step()", "must return 4 arrays: (observations, rewards, terminated, truncated)")
                raise EnvProblem
            observations, rewards, terminated, truncated = result
            self._check_array("step()", "observations", observations, (batch.num_envs, len(agents), width), "f")
            self._check_array("step()", "rewards", rewards, (batch.num_envs, len(agents)), "f")
            self._check_array("step()", "terminated", terminated, (batch.num_envs,), "b")
            self._check_array("step()", "truncated", truncated, (batch.num_envs,), "b")
            if np.any(_numpy(terminated)) or np.any(_numpy(truncated)):
                return
        self.say(None, "episode", f"no game ended within {max_steps} steps: give the env a time limit (truncation)")

    def _check_array(self, call: str, field: str, array, shape: tuple, kind: str) -> None:
        array = _numpy(array)
        if array.shape != shape or array.dtype.kind != kind:
            self.say(None, f"{call} {field}", f"have shape {array.shape} and dtype {array.dtype}; expected shape "
                                              f"{shape} and a {'float' if kind == 'f' else 'bool'} dtype")
            raise EnvProblem


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
