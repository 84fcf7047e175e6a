"""Value factorisation for DQN (VDN and QMIX), switched on with one line of YAML.

    run: DQN
    config:
      multiagent:
        policies: shared             # or per_agent, or named policies: the agents' own Q-networks
        mixer: qmix                  # or vdn
        mixer_config: {embed_dim: 32}  # QMIX's mixing width (optional)
        team_reward: sum             # or mean: the team's reward from its agents' rewards (optional)

The team is every agent of a trained policy (scripted opponents and policies left out of `policies_to_train` act,
but are not part of it); it needs two agents or more. Each agent acts epsilon-greedily on its own Q-network, as
independent DQN does. Training is on whole game steps: the team's Q is a mix of the Q-values of the actions its agents
took,

    VDN   Q_team = sum_i Q_i(o_i, a_i)                              (Sunehag et al. 2018)
    QMIX  Q_team = V(s) + w2(s) . elu(W1(s) q + b1(s)),  W1, w2 >= 0   (Rashid et al. 2018)

where QMIX's weights come from hypernetworks of the game's state s (monotonic in every agent's Q: each agent's
greedy action is the team's) and s is the joint observation the centralised critic reads (marlkit/mappo.py: every
agent's observation, zero-padded to the widest, with presence flags; VMAS and Bucket Brigade offer no global state).
The target is the team reward plus the discounted mix of the target networks' Q-values at the online networks'
greedy actions (`double_q`); the loss is the mean over game steps of the TD error's Huber loss (or half its square,
`td_error_loss_fn: mse`; RLlib's DQN sums that one over the batch) weighted by prioritized replay's importance
weights; DQN's other settings (`n_step`, `gamma`, `lr`, `grad_clip`, `tau`, `target_network_update_freq`, the model's
`hiddens` and `dueling`) mean what they mean for DQN.

Where it runs: the first policy of the team (the "host", `MixerDQNPolicy`) holds the mixer and trains every team
policy (marlkit/team.py); the batched env runner (marlkit/batched_runner.py) gives it one replay row per game and
step through the `GameSteps` hook (marlkit/game_values.py), and the team's other policies add no rows of their own.
A replay buffer's `capacity` and `train_batch_size` therefore count game steps. The mixer is part of the host's
model, so it is checkpointed, restored and target-updated with it; rollouts play the agents' Q-networks alone.
"""

from __future__ import annotations

import torch
from torch import nn
from ray.rllib.algorithms.dqn.dqn_tf_policy import PRIO_WEIGHTS
from ray.rllib.algorithms.dqn.dqn_torch_policy import (
    DQNTorchPolicy, build_q_model_and_distribution, compute_q_values,
)
from ray.rllib.policy.sample_batch import SampleBatch
from ray.rllib.utils.metrics.learner_info import LEARNER_STATS_KEY
from ray.rllib.utils.torch_utils import huber_loss

from marlkit.team import TEAM, TeamHost, state_size, team_agents

MIXERS = ("vdn", "qmix")
MIXER_SETTINGS = {"embed_dim": 32}  # mixer_config keys and their defaults (QMIX; VDN has no settings)


class VDNMixer(nn.Module):
    """Q_team = sum of the agents' Q-values; no parameters, the state unused."""

    def forward(self, agent_q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return agent_q.sum(dim=1)


class QMixer(nn.Module):
    """QMIX's monotonic mixing network (one-layer hypernetworks, as in the paper and torchrl's `QMixer`).

    Example:
        >>> mixer = QMixer(num_agents=3, state_size=12, embed_dim=8)
        >>> mixer(torch.zeros(5, 3), torch.zeros(5, 12)).shape
        torch.Size([5])
    """

    def __init__(self, num_agents: int, state_size: int, embed_dim: int = 32):
        super().__init__()
        self.num_agents, self.embed_dim = num_agents, embed_dim
        self.hyper_w1 = nn.Linear(state_size, embed_dim * num_agents)
        self.hyper_b1 = nn.Linear(state_size, embed_dim)
        self.hyper_w2 = nn.Linear(state_size, embed_dim)
        self.value = nn.Sequential(nn.Linear(state_size, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))

    def mixing_weights(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-negative weights (rows, agents, embed) and (rows, embed, 1) that make the mix monotonic."""
        rows = len(state)
        return (torch.abs(self.hyper_w1(state)).view(rows, self.num_agents, self.embed_dim),
                torch.abs(self.hyper_w2(state)).view(rows, self.embed_dim, 1))

    def forward(self, agent_q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.mixing_weights(state)
        hidden = nn.functional.elu(torch.bmm(agent_q.unsqueeze(1), w1) + self.hyper_b1(state).unsqueeze(1))
        return (torch.bmm(hidden, w2) + self.value(state).unsqueeze(1)).view(-1)


def mixer_settings(mixer: str, mixer_config: dict) -> dict:
    """The team layout's learner settings of a mixer (marlkit/team.py)."""
    return {"mixer": mixer, "mixer_config": {**MIXER_SETTINGS, **mixer_config} if mixer == "qmix" else {}}


def make_mixer(team: dict) -> nn.Module:
    if team["mixer"] == "vdn":
        return VDNMixer()
    return QMixer(len(team_agents(team)), state_size(team), **team["mixer_config"])


def _model_with_mixer(policy, observation_space, action_space, config):
    """DQN's Q-model and its target, each with the team's mixer as a submodule (trained, synced, checkpointed and
    target-updated with the Q-network)."""
    model, distribution = build_q_model_and_distribution(policy, observation_space, action_space, config)
    model.mixer = make_mixer(config[TEAM])
    policy.target_model.mixer = make_mixer(config[TEAM])
    return model, distribution


class MixerDQNPolicy(TeamHost, DQNTorchPolicy.with_updates(name="MixerDQNPolicy",
                                                           make_model_and_action_dist=_model_with_mixer)):
    """The host of a team: acts for its own agents as DQN does, and trains the whole team's Q-networks and the mixer
    on replayed game steps (`learn_on_batch`)."""

    def __init__(self, observation_space, action_space, config):
        super().__init__(observation_space, action_space, config)
        self.team = config[TEAM]

    def learn_on_batch(self, samples: SampleBatch) -> dict:
        """One gradient step of every team policy and the mixer on a batch of replayed game steps."""
        batch = self.team_batch(samples)
        policies = list(self.team_policies.values())
        optimizers = [optimizer for policy in policies for optimizer in policy._optimizers]
        for policy in policies:
            policy.model.train()
        td_error, loss = self.team_td_error(batch)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        grad_norms = [float(nn.utils.clip_grad_norm_(policy.model.parameters(), policy.config["grad_clip"]))
                      for policy in policies if policy.config.get("grad_clip")]
        for optimizer in optimizers:
            optimizer.step()
        for policy in policies:
            policy.num_grad_updates += 1
        stats = {"mean_td_error": float(td_error.detach().abs().mean()), "loss": float(loss.detach()),
                 "mean_q_team": float(self._last_q_team.mean()), "cur_lr": float(self.cur_lr)}
        if grad_norms:
            stats["max_grad_norm"] = max(grad_norms)
        return {LEARNER_STATS_KEY: stats, "td_error": td_error.detach().cpu().numpy(),
                "num_grad_updates_lifetime": self.num_grad_updates}

    def team_td_error(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed TD errors (rows,) and the loss of a batch of game steps (marlkit/team.py's columns)."""
        obs, next_obs = batch[SampleBatch.OBS].float(), batch[SampleBatch.NEXT_OBS].float()
        rows = len(obs)
        taken, best_next = [], []
        for policy, agents, shape in self.members():
            def q_values(model, observations):
                own = self.own(observations, agents, shape)
                q, _, _, _ = compute_q_values(policy, model, {SampleBatch.OBS: own}, explore=False, is_training=True)
                return q.view(rows, len(agents), -1)

            actions = batch[SampleBatch.ACTIONS][:, agents, 0].long()
            taken.append(q_values(policy.model, obs).gather(2, actions.unsqueeze(2)).squeeze(2))
            with torch.no_grad():
                target_q = q_values(policy.target_models[policy.model], next_obs)
                greedy = (q_values(policy.model, next_obs) if policy.config["double_q"] else target_q).argmax(2)
                best_next.append(target_q.gather(2, greedy.unsqueeze(2)).squeeze(2))
        q_team = self.model.mixer(torch.cat(taken, 1), self.state(obs))
        with torch.no_grad():
            target_team = self.target_models[self.model].mixer(torch.cat(best_next, 1), self.state(next_obs))
            discount = self.config["gamma"] ** self.config.get("n_step", 1)
            target = self.rewards(batch)[:, 0] + discount * (
                1.0 - batch[SampleBatch.TERMINATEDS].float()) * target_team
        td_error = q_team - target
        losses = huber_loss(td_error) if self.config["td_error_loss_fn"] == "huber" else 0.5 * td_error ** 2
        self._last_q_team = q_team.detach()
        return td_error, torch.mean(batch[PRIO_WEIGHTS].float() * losses)
