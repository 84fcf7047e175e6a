"""Environment registry: the `env:` names an experiment YAML may use.

`ENVS` maps a name to an `EnvEntry`. An env that steps many games per call (VMAS, Bucket Brigade) gives
`create_batch(env_config)`, a `BatchedEnv` (envs/batched.py) of `env_config.num_envs` games: marlkit's batched env
runner samples it for training, and the generic adapters of envs/rllib_adapters.py give RLlib's stock sampler,
rollouts and videos their RLlib env (`EnvEntry.make`). An env that is not batched (Unity) gives `create(env_config)`,
an RLlib `MultiAgentEnv`, instead. Every env exposes `possible_agents`, `observation_spaces`, `action_spaces` and
`close()`; `check_config(env_config)` raises `envs.errors.ConfigError` and runs before Ray starts (through
`EnvEntry.check`, which also checks `flat_actions`: every batched env offers its MultiDiscrete actions as one Discrete
space, envs/batched.py `FlatActions`).
`env_config.num_envs` is kept equal to RLlib's `num_envs_per_env_runner` (the games of one env runner).

To add an environment: one file with its `BatchedEnv` and `check_config`, and one entry here, e.g.
`"repeat_bit": EnvEntry(create_batch=RepeatBit, check_config=repeat_bit.check_config)`. A user's own env needs no
entry: `env:` may name its file or class (envs/user_envs.py), or a PettingZoo env (`env: pettingzoo`), and one-game
envs are stepped many copies at a time behind `BatchedEnv` (envs/games.py); `env_entry(name)` finds either.
"""

from dataclasses import dataclass
from typing import Callable

import gymnasium

from envs import vmas_env
from envs.batched import FlatActions
from envs.errors import ConfigError
from envs.bucket_brigade import env as bucket_brigade_env
from envs.rllib_adapters import rllib_env
from envs.unity import unity_env
from envs.user_envs import check_pettingzoo_config, names_user_env, pettingzoo_batch, user_env_entry


# env_config key of every batched env: MultiDiscrete actions as one Discrete space (envs.batched.FlatActions), set
# by the loader for value-based algorithms.
FLAT_ACTIONS = "flat_actions"


def _flat_actions(env_config: dict) -> tuple[object, dict]:
    """(`flat_actions` as given, default false; the env's own settings without it)."""
    rest = dict(env_config)
    return rest.pop(FLAT_ACTIONS, False), rest


@dataclass(frozen=True)
class EnvEntry:
    check_config: Callable[[dict], None]
    create_batch: Callable[[dict], object] | None = None  # env_config -> BatchedEnv of env_config.num_envs games
    create: Callable[[dict], object] | None = None  # env_config -> RLlib MultiAgentEnv (an env that is not batched)
    torch_device: bool = False  # env_config.device picks the torch device the env simulates on
    policy_group: Callable[[str], str] | None = None  # agent id -> default policy id (`policies: per_group`)
    absolute_paths: Callable[[dict], dict] | None = None  # env_config with its file paths made absolute at load
    # time: trials run with their own folder as working directory
    own_process: bool = False  # the env drives a process of its own (a game) that may die: RLlib's
    # restart_failed_sub_environments defaults to true, so a crashed one is replaced within its env runner
    checked_at_load: bool = False  # envs/checker.py plays an episode of it when an experiment loads (user envs)

    def check(self, env_config: dict) -> None:
        """`check_config`, and the keys the registry adds to every batched env (`flat_actions`)."""
        flat, env_config = _flat_actions(env_config)
        if flat is not False and self.create_batch is None:
            raise ConfigError(f"{FLAT_ACTIONS} is offered by batched envs only")
        if not isinstance(flat, bool):
            raise ConfigError(f"{FLAT_ACTIONS} must be true or false, got {flat!r}")
        self.check_config(env_config)

    def batch(self, env_config: dict):
        """The `BatchedEnv` of `env_config`, its MultiDiscrete actions flattened where `flat_actions` says so."""
        flat, env_config = _flat_actions(env_config)
        batch = self.create_batch(env_config)
        return FlatActions(batch) if flat else batch

    def make(self, env_config: dict):
        """The RLlib env of `env_config`: `create`'s, or the batch's behind a generic adapter (one game: a
        `MultiAgentEnv`, several: a `BaseEnv`)."""
        if self.create is not None:
            return self.create(env_config)
        return rllib_env(self.batch(env_config))

    def __call__(self, env_config: dict):
        """`make`: the entry itself is Ray's env creator for `env: <name>`, so that env runners, which receive it
        pickled, reach `create_batch` without looking the name up (an env registered at run time works too)."""
        return self.make(env_config)

    def single_env_config(self, env_config: dict) -> dict:
        """`env_config` for one world at a time (single episodes in rollouts and videos, space probes).

        One world runs on the CPU: a GPU only pays off for many worlds per call, and probes run on the driver,
        which may have no GPU.
        """
        config = {**env_config, "num_envs": 1} if self.create_batch else dict(env_config)
        if self.torch_device:
            config["device"] = "cpu"
        return config


ENVS = {
    "vmas": EnvEntry(check_config=vmas_env.check_config, create_batch=vmas_env.VmasBatch, torch_device=True),
    "bucket_brigade": EnvEntry(check_config=bucket_brigade_env.check_config,
                               create_batch=bucket_brigade_env.BucketBrigadeBatch),
    "unity": EnvEntry(check_config=unity_env.check_config, create=unity_env.UnityEnv,
                      policy_group=unity_env.behavior_policy, absolute_paths=unity_env.absolute_paths, own_process=True),
    "pettingzoo": EnvEntry(check_config=check_pettingzoo_config, create_batch=pettingzoo_batch, checked_at_load=True),
}


def env_entry(env: str) -> EnvEntry | None:
    """The entry of `env:`: a registry name, or a user env by file or dotted class path (envs/user_envs.py: resolved
    once, then kept in `ENVS` under its name); None for anything else (a gymnasium id, which RLlib makes itself).
    ConfigError when a user env cannot be loaded."""
    if isinstance(env, str) and env not in ENVS and env not in gymnasium.registry and names_user_env(env):
        ENVS[env] = user_env_entry(env)
    return ENVS.get(env)
