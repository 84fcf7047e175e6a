"""MAPPO: PPO whose critic sees the whole game, switched on with one line of YAML.

    config:
      multiagent:
        policies: shared
        critic: centralized        # default: decentralized (each agent's critic sees its own observation)
      model:
        custom_model: fcnet
        custom_model_config: {hiddens: [64, 64], critic_hiddens: [256, 256]}   # critic_hiddens: optional

Actors stay decentralised: each agent acts on its own observation, so rollouts, evaluation and rollout.py need
nothing but the actor. The critic of each trained policy reads the joint input of its game and outputs one value per
agent of that policy (`num_values`, in the env's agent order):

    joint input = [obs of agent 0 | obs of agent 1 | ... | obs of agent N-1 | present_0 ... present_N-1]

every agent of the game in the env's fixed order (`possible_agents`), scripted and other policies' agents included,
each flattened observation zero-padded to the widest one, then one presence flag per agent (0 when the agent had no
observation at that env step: finished earlier or not yet there; its observation slot is then zeros). VMAS, Bucket
Brigade and Unity offer no global state, so the joint observation is what the critic sees. An env that offers one
(`BatchedEnv.state`: a PettingZoo env's `state()`, e.g. MPE's) gives the critic its state instead, as BenchMARL's
MAPPO does, where the batched env runner samples (RLlib's stock sampler has no state: the joint observation there).

Where the critic runs:
  - batched sampler (marlkit/batched_runner.py: VMAS, Bucket Brigade), through the runner's `GameValues` hook, which
    this policy implements: once per game per step for all agents of the policy; in training once per game row: the first agent row of each (game, step) carries the joint input and the
    value targets of all the policy's agents (`critic_obs`, `critic_targets`, `critic_weights`), the other rows carry
    zero weights and the critic skips them;
  - RLlib's stock sampler (Unity, or experiments spec.py sends there): in `postprocess_trajectory`, from the rows of
    all agents with the same env step (`t`) of the episode; each agent row carries its own value target.

The critic is `model.central_critic`, a submodule of the policy's model (so it is trained, synced and checkpointed with
it). By default it is an MLP (`critic_hiddens`, default the model's `hiddens`, else [256, 256]; tanh) with
`num_values` outputs. A model in model/ may build its own by defining

    def make_central_critic(self, input_size: int, num_values: int, hiddens: list[int]) -> nn.Module:
        # a module mapping (rows, input_size) joint inputs to (rows, num_values) values

in which case its own per-agent value branch can go (model/fcnet.py drops it); `value_function()` is never called on a
centralised policy. The critic is feed-forward, so recurrent actors (model/lstm.py) work with it unchanged.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from ray.rllib.algorithms.ppo.ppo_torch_policy import PPOTorchPolicy
from ray.rllib.evaluation.postprocessing import Postprocessing, compute_advantages
from ray.rllib.models import ModelCatalog
from ray.rllib.policy.sample_batch import SampleBatch
from ray.rllib.utils.torch_utils import explained_variance, sequence_mask

from marlkit.game_values import GameValues
from envs.errors import ConfigError
from marlkit.layers import CentralCritic

CRITICS = ("decentralized", "centralized")
DEFAULT_CRITIC_HIDDENS = [256, 256]
# Training columns of a centralised policy (rows x ...).
CRITIC_OBS = "critic_obs"  # the joint input, or zeros on rows that carry no critic targets
CRITIC_TARGETS = "critic_targets"  # (rows, num_values) value targets of the policy's agents at that game step
CRITIC_WEIGHTS = "critic_weights"  # (rows, num_values) 1 where a target counts in the value loss


def joint_input_size(num_agents: int, width: int) -> int:
    """Size of the joint input for `num_agents` agents whose widest flattened observation has `width` entries."""
    return num_agents * (width + 1)


def critic_input_size(layout: dict) -> int:
    """Size of what the critic of a `central_critic` layout reads: the env's state, else the joint input."""
    return layout.get("state_size") or joint_input_size(len(layout["agents"]), layout["width"])


def joint_input(observations: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(rows, agents, width) observations and (rows, agents) presence flags -> (rows, agents x (width + 1))."""
    observations = observations * present.unsqueeze(-1)
    return torch.cat([observations.flatten(1), present.to(observations.dtype)], dim=1)


class CentralCriticPPOPolicy(GameValues, PPOTorchPolicy):
    """PPO (old API stack) with a centralised critic; the actor is the model's policy output as in PPO.

    config["central_critic"] (set by marlkit.policies for `critic: centralized`):
        agents  every agent of the game in the env's order
        own     indices into `agents` of this policy's agents (the critic's outputs, in this order)
        width   the widest flattened observation among `agents`
        state_size  the size of the env's global state the critic reads (0 or absent: the joint input)
    """

    def __init__(self, observation_space, action_space, config):
        layout = config["central_critic"]
        self.critic_agents = list(layout["agents"])
        self.critic_own = list(layout["own"])
        self.critic_width = int(layout["width"])
        self.critic_state_size = int(layout.get("state_size") or 0)
        self.critic_input_size = critic_input_size(layout)
        super().__init__(observation_space, action_space, config)

    def make_model(self):
        model_config = copy.deepcopy(self.config["model"])
        custom = model_config.get("custom_model_config") or {}
        hiddens = list(custom.pop("critic_hiddens", None) or custom.get("hiddens") or DEFAULT_CRITIC_HIDDENS)
        _, logit_dim = ModelCatalog.get_action_dist(self.action_space, model_config, framework="torch")
        model = ModelCatalog.get_model_v2(self.observation_space, self.action_space, logit_dim, model_config,
                                          framework="torch")
        make = getattr(model, "make_central_critic", None)
        size = self.critic_input_size
        model.central_critic = (make(size, len(self.critic_own), hiddens) if make
                                else CentralCritic(size, len(self.critic_own), hiddens))
        return model

    @torch.no_grad()
    def central_values(self, joint: torch.Tensor) -> torch.Tensor:
        """(rows, joint input) -> (rows, agents of this policy) values, for sampling (no gradient)."""
        return self.model.central_critic(joint.to(self.device))

    def extra_action_out(self, input_dict, state_batches, model, action_dist):
        return {}  # values come from the critic in postprocessing (or the batched runner), not per action

    # ---- batched sampler (GameValues) ---------------------------------------------------------------------------

    def check_game(self, env: str, agents: list[str], width: int) -> None:
        if agents != self.critic_agents or width != self.critic_width:
            raise ValueError(f"its centralised critic was built for agents {self.critic_agents} (observation width "
                             f"{self.critic_width}), but env '{env}' has {agents} (width {width})")

    def game_input(self, observations: torch.Tensor, present: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        if not self.critic_state_size:
            return joint_input(observations, present)
        if state is None or state.shape[1] != self.critic_state_size:
            raise ValueError(f"its centralised critic reads the env's global state of size {self.critic_state_size}, "
                             f"which this env does not offer (state: {None if state is None else tuple(state.shape)})")
        return state

    def game_values(self, game_input: torch.Tensor) -> torch.Tensor:
        return self.central_values(game_input)

    def game_columns(self, game_inputs: torch.Tensor, value_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The first agent row of each (time, game) carries the joint input and the value targets of all the
        policy's agents, the others zeros, so training runs the critic once per game row."""
        k = value_targets.shape[-1]
        first = torch.zeros(k, device=value_targets.device)
        first[0] = 1.0
        carrier = first.view(1, 1, k, 1)
        return {CRITIC_OBS: game_inputs.unsqueeze(2) * carrier.to(game_inputs.device),
                CRITIC_TARGETS: value_targets.unsqueeze(2) * carrier,
                CRITIC_WEIGHTS: carrier.expand(value_targets.shape + (k,))}

    # ---- stock sampler ----------------------------------------------------------------------------------------

    def postprocess_trajectory(self, sample_batch, other_agent_batches=None, episode=None):
        """Values from the joint input of every agent at the same env step, then GAE as RLlib's PPO does."""
        with torch.no_grad():
            own_id = self._own_agent_id(sample_batch, other_agent_batches, episode)
            if self.critic_state_size and own_id is not None:
                raise ValueError("its centralised critic reads the env's global state, which RLlib's stock sampler "
                                 "does not give (marlkit/plan.py builds such a critic for the batched runner only)")
            batches = {agent: entry[2] for agent, entry in (other_agent_batches or {}).items()
                       if agent in self.critic_agents}
            if own_id is not None:
                batches[own_id] = sample_batch
            me = self._slot_of(own_id)
            steps = np.asarray(sample_batch[SampleBatch.T])
            joint = self._joint_at(batches, steps, SampleBatch.OBS)
            values = self.central_values(joint).cpu().numpy()
            sample_batch[SampleBatch.VF_PREDS] = values[:, me].astype(np.float32)
            if sample_batch[SampleBatch.TERMINATEDS][-1]:
                last_value = 0.0
            else:
                last_joint = self._joint_at(batches, steps[-1:], SampleBatch.NEXT_OBS)
                last_value = float(self.central_values(last_joint)[0, me])
            sample_batch = compute_advantages(sample_batch, last_value, self.config["gamma"], self.config["lambda"],
                                              use_gae=True, use_critic=True)
        rows = len(sample_batch)
        weights = np.zeros((rows, len(self.critic_own)), np.float32)
        weights[:, me] = 1.0
        sample_batch[CRITIC_OBS] = joint.cpu().numpy()
        sample_batch[CRITIC_TARGETS] = weights * sample_batch[Postprocessing.VALUE_TARGETS][:, None]
        sample_batch[CRITIC_WEIGHTS] = weights
        return sample_batch

    def _own_agent_id(self, sample_batch, other_agent_batches, episode):
        """The agent id of `sample_batch` (RLlib passes its episode index, not its id)."""
        index_of = getattr(episode, "_agent_to_index", None)
        if index_of is None or not len(sample_batch):
            return None  # RLlib's dummy batch while it sets the policy up
        own_index = int(sample_batch[SampleBatch.AGENT_INDEX][0])
        return next((agent for agent, index in index_of.items() if index == own_index
                     and agent not in (other_agent_batches or {})), None)

    def _slot_of(self, agent_id) -> int:
        """The critic output of agent `agent_id` (0 for RLlib's dummy batch and agents outside the layout)."""
        index = self.critic_agents.index(agent_id) if agent_id in self.critic_agents else None
        return self.critic_own.index(index) if index in self.critic_own else 0

    def _joint_at(self, batches: dict, steps: np.ndarray, column: str) -> torch.Tensor:
        """Joint inputs at env steps `steps` from each agent's `column`; agents without a row there are absent.
        (Zeros of the state's size for a critic of the env's state: only RLlib's dummy batch at set-up gets here.)"""
        if self.critic_state_size:
            return torch.zeros(len(steps), self.critic_state_size)
        observations = np.zeros((len(steps), len(self.critic_agents), self.critic_width), np.float32)
        present = np.zeros((len(steps), len(self.critic_agents)), np.float32)
        for slot, agent in enumerate(self.critic_agents):
            batch = batches.get(agent)
            if batch is None or column not in batch or not len(batch):
                continue
            times = np.asarray(batch[SampleBatch.T])
            rows = np.clip(np.searchsorted(times, steps), 0, len(times) - 1)
            found = times[rows] == steps
            values = np.asarray(batch[column], np.float32).reshape(len(times), -1)
            observations[found, slot, :values.shape[1]] = values[rows[found]]
            present[found, slot] = 1.0
        return joint_input(torch.as_tensor(observations), torch.as_tensor(present))

    # ---- learning ------------------------------------------------------------------------------------------------

    def loss(self, model, dist_class, train_batch):
        """PPO's clipped surrogate, KL and entropy terms over agent rows (as RLlib's PPO), and the value loss over
        the rows that carry critic targets: the critic runs on those rows only."""
        logits, state = model(train_batch)
        current = dist_class(logits, model)
        if state:
            sequences = len(train_batch[SampleBatch.SEQ_LENS])
            mask = sequence_mask(train_batch[SampleBatch.SEQ_LENS], logits.shape[0] // sequences,
                                 time_major=model.is_time_major()).reshape(-1)

            def mean(t):
                return torch.sum(t[mask]) / torch.sum(mask)
        else:
            mean = torch.mean
        previous = dist_class(train_batch[SampleBatch.ACTION_DIST_INPUTS], model)
        ratio = torch.exp(current.logp(train_batch[SampleBatch.ACTIONS]) - train_batch[SampleBatch.ACTION_LOGP])
        advantages = train_batch[Postprocessing.ADVANTAGES]
        clip = self.config["clip_param"]
        surrogate = torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip))
        entropy = current.entropy()
        if self.config["use_kl_loss"]:
            mean_kl = mean(previous.kl(current))
        else:
            mean_kl = torch.tensor(0.0, device=ratio.device)

        weights = train_batch[CRITIC_WEIGHTS]
        rows = weights.sum(dim=1) > 0
        weights = weights[rows]
        values = model.central_critic(train_batch[CRITIC_OBS][rows])
        targets = train_batch[CRITIC_TARGETS][rows]
        errors = torch.clamp((values - targets) ** 2, 0, self.config["vf_clip_param"])
        mean_vf = torch.sum(errors * weights) / torch.clamp(torch.sum(weights), min=1.0)

        total = (mean(-surrogate - self.entropy_coeff * entropy) + self.config["vf_loss_coeff"] * mean_vf)
        if self.config["use_kl_loss"]:
            total = total + self.kl_coeff * mean_kl
        counted = weights > 0
        model.tower_stats["total_loss"] = total
        model.tower_stats["mean_policy_loss"] = mean(-surrogate)
        model.tower_stats["mean_vf_loss"] = mean_vf
        model.tower_stats["vf_explained_var"] = explained_variance(targets[counted], values[counted])
        model.tower_stats["mean_entropy"] = mean(entropy)
        model.tower_stats["mean_kl_loss"] = mean_kl
        return total


def check_critic_memory(name: str, variant: dict, multiagent: dict) -> None:
    """Refuses a centralised critic whose training columns (its input on every agent row, marlkit/mappo.py)
    would take more than a quarter of this machine's memory."""
    for pid, policy in multiagent["policies"].items():
        layout = policy.config.get("central_critic")
        if not layout:
            continue
        inputs = critic_input_size(layout)
        rows = int(variant.get("train_batch_size") or 4000) * len(layout["own"])
        needed = rows * (inputs + 2 * len(layout["own"])) * 4
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > memory / 4:
            reads = (f"the env's state of {inputs} inputs" if layout.get("state_size")
                     else f"{len(layout['agents'])} agents x {layout['width'] + 1} inputs")
            raise ConfigError(
                f"{name}.config.multiagent.critic: the centralised critic of policy '{pid}' reads {reads}; its "
                f"training columns for train_batch_size {variant.get('train_batch_size')} would take "
                f"{needed / 2**30:.1f} GiB, more than a quarter of this machine's {memory / 2**30:.1f} GiB; lower "
                f"train_batch_size, or use critic: decentralized")
