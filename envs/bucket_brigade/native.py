"""The Rust core (`native/`, a C ABI loaded with ctypes) behind a numpy `VecEnv`.

`make setup` builds it (`cargo build --release --offline` in envs/bucket_brigade/native). Observations, rewards and
flags are written by the native code straight into numpy arrays this object owns; `step` returns those arrays (they
are overwritten by the next call: copy what you keep).

Example:
    >>> from envs.bucket_brigade import VecEnv
    >>> env = VecEnv("default", num_envs=2, num_agents=4, seed=0)
    >>> env.reset().shape
    (2, 4, 47)
    >>> import numpy as np
    >>> obs, rewards, terminated, truncated = env.step(np.zeros((2, 4, 3), dtype=np.int64))
    >>> rewards.shape, terminated.dtype
    ((2, 4), dtype('bool'))
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from envs.bucket_brigade.scenarios import Scenario, get_scenario, obs_dim

CRATE_DIR = Path(__file__).resolve().parent / "native"
LIBRARY = CRATE_DIR / "target" / "release" / "libbucket_brigade_core.so"
BUILD_COMMAND = f"cargo build --release --offline --manifest-path {CRATE_DIR / 'Cargo.toml'}"
BAD_ACTION = {2: "house index out of range", 3: "mode must be 0 (REST) or 1 (WORK)", 4: "signal must be 0 or 1"}


class _CScenario(ctypes.Structure):
    """Mirror of `Scenario` in native/src/lib.rs (same field order and types)."""

    _fields_ = [
        ("num_houses", ctypes.c_uint32),
        ("prob_fire_spreads", ctypes.c_float),
        ("prob_solo_agent_extinguishes_fire", ctypes.c_float),
        ("prob_house_catches_fire", ctypes.c_float),
        ("team_reward_house_survives", ctypes.c_float),
        ("team_penalty_house_burns", ctypes.c_float),
        ("cost_to_work_one_night", ctypes.c_float),
        ("reward_rest", ctypes.c_float),
        ("min_nights", ctypes.c_uint32),
        ("reward_own_house_survives", ctypes.c_float),
        ("reward_other_house_survives", ctypes.c_float),
        ("penalty_own_house_burns", ctypes.c_float),
        ("penalty_other_house_burns", ctypes.c_float),
        ("distance_cost_alpha", ctypes.c_float),
        ("continuous", ctypes.c_uint32),
        ("suppression_per_worker", ctypes.c_float),
        ("spread_before_burnout", ctypes.c_uint32),
    ]

    @classmethod
    def of(cls, scenario: Scenario) -> "_CScenario":
        return cls(**{name: getattr(scenario, name) for name, _ in cls._fields_})


_library = None


def load_library() -> ctypes.CDLL:
    """The native core, loaded once; a clear error when it was not built."""
    global _library
    if _library is None:
        if not LIBRARY.exists():
            raise RuntimeError(f"the Bucket Brigade native core is not built ({LIBRARY} missing); run `make setup` "
                               f"or `{BUILD_COMMAND}`")
        library = ctypes.CDLL(str(LIBRARY))
        pointer, f32p, i64p, u8p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64), \
            ctypes.POINTER(ctypes.c_uint8)
        library.bb_new.argtypes = [ctypes.POINTER(_CScenario), ctypes.c_uint32, ctypes.c_uint32,
                                   ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint64, ctypes.c_uint32]
        library.bb_new.restype = pointer
        library.bb_free.argtypes = [pointer]
        library.bb_free.restype = None
        library.bb_obs_dim.argtypes = [pointer]
        library.bb_obs_dim.restype = ctypes.c_uint32
        library.bb_reset.argtypes = [pointer, ctypes.c_uint8, ctypes.c_uint64, f32p]
        library.bb_reset.restype = ctypes.c_int32
        library.bb_step.argtypes = [pointer, i64p, f32p, f32p, u8p, u8p, ctypes.POINTER(ctypes.c_size_t)]
        library.bb_step.restype = ctypes.c_int32
        _library = library
    return _library


def check_sizes(num_envs: int, num_agents: int, max_nights: int) -> None:
    for name, value in (("num_envs", num_envs), ("num_agents", num_agents), ("max_nights", max_nights)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if num_agents > 255:
        raise ValueError(f"num_agents must be <= 255, got {num_agents}")


def check_actions(actions, num_envs: int, num_agents: int) -> np.ndarray:
    """Integer (num_envs, num_agents, 3) actions as contiguous int64; ValueError/TypeError otherwise."""
    actions = np.asarray(actions)
    if actions.shape != (num_envs, num_agents, 3):
        raise ValueError(f"actions must have shape (num_envs, num_agents, 3) = ({num_envs}, {num_agents}, 3) "
                         f"(house, mode, signal), got {actions.shape}")
    if actions.dtype.kind not in "iu":
        raise TypeError(f"actions must be integers (house, mode, signal), got dtype {actions.dtype}")
    return np.ascontiguousarray(actions, dtype=np.int64)


def bad_action_message(status: int, flat_index: int, actions: np.ndarray) -> str:
    env, rest = divmod(flat_index, actions.shape[1] * 3)
    agent, field = divmod(rest, 3)
    value = actions[env, agent, field]
    return f"bad action for env {env}, agent {agent}: {BAD_ACTION[status]} (got {value})"


def first_bad_action(actions: np.ndarray, num_houses: int, playing: np.ndarray) -> str | None:
    """The message for the first out-of-range value among the games that play this step (None if all are fine);
    the same check, order and message as the native core's."""
    valid = np.stack([(actions[..., 0] >= 0) & (actions[..., 0] < num_houses),
                      np.isin(actions[..., 1], (0, 1)), np.isin(actions[..., 2], (0, 1))], axis=-1)
    valid[~playing] = True
    if valid.all():
        return None
    flat_index = int(np.flatnonzero(~valid.ravel())[0])
    return bad_action_message(2 + flat_index % 3, flat_index, actions)


class GameBatch:
    """What both `VecEnv` implementations share: the scenario and the validated sizes."""

    def __init__(self, scenario: str | Scenario, num_envs: int, num_agents: int, max_nights: int):
        self.scenario = get_scenario(scenario)
        check_sizes(num_envs, num_agents, max_nights)
        self.num_envs, self.num_agents, self.max_nights = num_envs, num_agents, max_nights
        self.num_houses = self.scenario.num_houses
        self.obs_dim = obs_dim(self.num_houses, num_agents)


class VecEnv(GameBatch):
    """`num_envs` Bucket Brigade games of `num_agents` agents, stepped together by the Rust core.

    Args:
        scenario: a name of `SCENARIOS` or a `Scenario`.
        num_envs: games stepped together.
        num_agents: agents per game (house h belongs to agent h mod num_agents).
        seed: seeds every game's generator (game i draws from its own stream of this seed).
        max_nights: a game still running after this many nights is truncated.
    """

    def __init__(self, scenario: str | Scenario, num_envs: int, num_agents: int = 4, seed: int = 0,
                 max_nights: int = 100):
        super().__init__(scenario, num_envs, num_agents, max_nights)
        library = load_library()
        homes = (ctypes.c_uint32 * num_agents)(*self.scenario.homes(num_agents))
        c_scenario = _CScenario.of(self.scenario)
        self._handle = library.bb_new(ctypes.byref(c_scenario), num_envs, num_agents, homes,
                                      seed & (2**64 - 1), max_nights)
        if not self._handle:
            raise ValueError(f"the native core refused scenario {self.scenario} with num_envs={num_envs}, "
                             f"num_agents={num_agents}, max_nights={max_nights}")
        self._library = library
        self._obs = np.zeros((num_envs, num_agents, self.obs_dim), dtype=np.float32)
        self._rewards = np.zeros((num_envs, num_agents), dtype=np.float32)
        self._terminated = np.zeros(num_envs, dtype=np.bool_)
        self._truncated = np.zeros(num_envs, dtype=np.bool_)
        self._bad_index = ctypes.c_size_t(0)
        self._started = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Starts a new game in every env (restarting the random streams from `seed` when given)."""
        status = self._library.bb_reset(self._handle, seed is not None, (seed or 0) & (2**64 - 1),
                                        self._obs.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        if status:
            raise RuntimeError(f"native reset failed with status {status}")
        self._started = True
        return self._obs

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One night of every game: (obs, rewards, terminated, truncated), finished games reset on the next step."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = check_actions(actions, self.num_envs, self.num_agents)
        status = self._library.bb_step(
            self._handle, actions.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
            self._obs.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            self._rewards.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            self._terminated.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
            self._truncated.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
            ctypes.byref(self._bad_index),
        )
        if status in BAD_ACTION:
            raise ValueError(bad_action_message(status, self._bad_index.value, actions))
        if status:
            raise RuntimeError(f"native step failed with status {status}")
        return self._obs, self._rewards, self._terminated, self._truncated

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._library.bb_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()
