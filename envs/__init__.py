"""Environment registry: the `env:` names an experiment YAML may use.

`ENVS` maps a name to an `EnvEntry`: `create(env_config)` builds the env (an RLlib `MultiAgentEnv`, or an old-stack
`BaseEnv` for natively batched simulators) exposing `possible_agents`, `observation_spaces`, `action_spaces` and
`close()`; `check_config(env_config)` raises `envs.errors.ConfigError` and runs before Ray starts. An env that
steps many games per call also gives `create_batch(env_config)`, a `BatchedEnv` (envs/batched.py) of
`env_config.num_envs` games: training samples it through marlkit's batched env runner, and `env_config.num_envs` is
kept equal to RLlib's `num_envs_per_env_runner` (the games of one env runner).
To add an environment, add one entry here.
"""

from dataclasses import dataclass
from typing import Callable

from envs import vmas_env
from envs.bucket_brigade import rllib_env as bucket_brigade_env
from envs.unity import unity_env


@dataclass(frozen=True)
class EnvEntry:
    create: Callable[[dict], object]
    check_config: Callable[[dict], None]
    create_batch: Callable[[dict], object] | None = None  # env_config -> BatchedEnv of env_config.num_envs games
    torch_device: bool = False  # env_config.device picks the torch device the env simulates on
    policy_group: Callable[[str], str] | None = None  # agent id -> default policy id (`policies: per_group`)
    absolute_paths: Callable[[dict], dict] | None = None  # env_config with its file paths made absolute at load
    # time: trials run with their own folder as working directory
    own_process: bool = False  # the env drives a process of its own (a game) that may die: RLlib's
    # restart_failed_sub_environments defaults to true, so a crashed one is replaced within its env runner

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
    "vmas": EnvEntry(create=vmas_env.make_env, check_config=vmas_env.check_config, create_batch=vmas_env.VmasBatch,
                     torch_device=True),
    "bucket_brigade": EnvEntry(create=bucket_brigade_env.BucketBrigadeEnv, check_config=bucket_brigade_env.check_config,
                               create_batch=bucket_brigade_env.BucketBrigadeBatch),
    "unity": EnvEntry(create=unity_env.UnityEnv, check_config=unity_env.check_config,
                      policy_group=unity_env.behavior_policy, absolute_paths=unity_env.absolute_paths, own_process=True),
}
