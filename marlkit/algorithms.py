"""The RLlib algorithm behind each `run:` name, as it trains on RLlib's old API stack (the stack this project's
TorchModelV2 models, policies and samplers are built on).

    on-policy        PPO; APPO and IMPALA (asynchronous, V-trace)
    off-policy       DQN (Discrete actions), SAC (Box or Discrete actions): experience replay
    refused          the offline algorithms (BC, MARWIL, CQL, IQL: they learn from recorded experience, not from an
                     env) and DreamerV3 (new API stack only), each with a line saying why

`run: IQL` is RLlib's offline Implicit Q-Learning; independent Q-learning, as MARL papers use the name, is `run: DQN`
with per-agent or shared policies (docs/algorithms.md).

Why a class of our own for DQN and SAC: Ray 2.60's `Algorithm` tests `"EpisodeReplayBuffer" in <buffer type>` after
the old stack's config validation has turned the type into a class, so every old-stack replay algorithm failed with
`TypeError: argument of type 'ABCMeta' is not iterable` at build time. `OldStackReplay` builds the buffer from the
validated config directly, with RLlib's timestep buffers kept in columns (marlkit/replay.py: RLlib's stored one
`SampleBatch` per transition and drew training batches one row per call).

Example:
    >>> algorithm_class("DQN").__module__, algorithm_class("PPO").__name__
    ('marlkit.algorithms', 'PPO')
    >>> refusal("exp", "IQL").split(": ", 1)[1][:60]
    'IQL is offline Implicit Q-Learning (it learns from recorded '
"""

from __future__ import annotations

import gymnasium as gym
from ray.rllib.algorithms.dqn import DQN as RLlibDQN
from ray.rllib.algorithms.registry import ALGORITHMS
from ray.rllib.algorithms.sac import SAC as RLlibSAC
from ray.rllib.utils.from_config import from_config
from ray.rllib.utils.replay_buffers import ReplayBuffer

from marlkit.game_values import GameSteps
from marlkit.replay import columnar_config

OFFLINE = ("BC", "MARWIL", "CQL", "IQL")
NEW_STACK_ONLY = ("DreamerV3",)


class OldStackReplay:
    """Builds the local replay buffer from the validated `replay_buffer_config`, whose `type` is a class by then;
    RLlib's timestep buffers in columns (marlkit/replay.py), drawing a training batch per `sample` call. Hands a
    policy that trains a team (`GameSteps`: marlkit/mixers.py) the learner's policies of its team."""

    def setup(self, config):
        super().setup(config)
        policies = self.env_runner.policy_map
        for policy in policies.values():
            if isinstance(policy, GameSteps):
                policy.join_team(policies)

    def _create_local_replay_buffer_if_necessary(self, config):
        buffer_config = config.get("replay_buffer_config")
        if not buffer_config or buffer_config.get("no_local_replay_buffer"):
            return None
        return from_config(ReplayBuffer, columnar_config(buffer_config, config["train_batch_size"]))

    @classmethod
    def get_default_config(cls):
        config = super().get_default_config()
        config.algo_class = cls  # so that `config.build_algo()` (local mode, rollout.py) builds this class
        # SAC's config sets the new stack's `train_batch_size_per_learner` (256), which the old stack's replay then
        # samples instead of `train_batch_size`; unset, it follows `train_batch_size` (default 256 as well).
        config.train_batch_size_per_learner = None
        # Each replayed batch serves one gradient step: RLlib's multi-GPU loader (batches preloaded into device
        # buffers for several SGD passes) only adds work here, 20% of DQN's and SAC's training time on VMAS.
        config.simple_optimizer = True
        return config


class DQN(OldStackReplay, RLlibDQN):
    pass


class SAC(OldStackReplay, RLlibSAC):
    pass


OWN_CLASSES = {"DQN": DQN, "SAC": SAC}
# The algorithms whose batches the batched env runner builds (marlkit/batched_runner.py): PPO's advantages, DQN's and
# SAC's replayed transitions. APPO and IMPALA (V-trace over fragments in time order) sample with RLlib's stock sampler.
BATCHED_SAMPLING = ("PPO", "DQN", "SAC")
# The action spaces a trained policy of these algorithms can act in (RLlib's old-stack policies); others take any.
ACTION_SPACES = {"DQN": (gym.spaces.Discrete,), "SAC": (gym.spaces.Box, gym.spaces.Discrete)}


def algorithm_class(run: str) -> type:
    """The Algorithm class of a `run` name: RLlib's, or ours where Ray 2.60's old stack needs a fix."""
    return OWN_CLASSES.get(run) or ALGORITHMS[run]()[0]


def action_space_problem(run: str, space: gym.Space) -> str | None:
    """What is wrong with a trained policy of `run` acting in `space` (None when nothing is)."""
    kinds = ACTION_SPACES.get(run)
    if kinds is None or isinstance(space, kinds):
        return None
    return f"{run} takes {' or '.join(kind.__name__ for kind in kinds)} actions, not {space}"


def refusal(name: str, run: str) -> str | None:
    """Why `run` cannot train here, as the one-line error of experiment `name`; None when it can."""
    if run == "IQL":
        return (f"{name}.run: IQL is offline Implicit Q-Learning (it learns from recorded experience), not "
                f"independent Q-learning; for independent Q-learners use run: DQN with multiagent.policies: "
                f"per_agent (or shared)")
    if run in OFFLINE:
        return (f"{name}.run: {run} is an offline algorithm: it learns from recorded experience (config.input), "
                f"which this project does not record; train online with PPO, APPO, IMPALA, DQN or SAC")
    if run in NEW_STACK_ONLY:
        return (f"{name}.run: {run} runs only on RLlib's new API stack; this project trains on the old one "
                f"(PPO, APPO, IMPALA, DQN, SAC)")
    return None
