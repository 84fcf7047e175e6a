"""MASAC: SAC whose twin critics see the whole game, switched on with one line of YAML.

    run: SAC
    config:
      multiagent:
        policies: shared           # or per_agent, or named policies: the actors
        critic: centralized        # default: decentralized (independent SAC learners)
        team_reward: sum           # optional: every agent's critic learns the team's sum (or mean) of rewards;
                                   # default: each agent's own reward

The team is every agent of a trained policy (scripted opponents are not part of it). Actors stay decentralised: each
agent acts on its own observation with its policy's actor, so rollouts and rollout.py need nothing else. The twin
critics (and their target copies) read the game's state s, the joint observation the MAPPO critic reads
(marlkit/mappo.py), and give every team agent i its own Q-value, as BenchMARL's MASAC does:

    Box actions       Q_i(s, a_1, ..., a_n)            the team's actions are part of the input
    Discrete actions  Q_i(s, .) over agent i's actions  (the others' actions are not input; expectations run over
                                                         agent i's own policy, as in RLlib's discrete SAC)

Losses, per agent and as RLlib's SAC computes them for one agent: the critics regress onto
r_i + gamma^n (1 - done) [min(Q'_1, Q'_2)_i(s', a' ~ pi(s')) - alpha_i log pi_i(a'_i | o'_i)] (Huber loss, weighted
by prioritized replay's importance weights); actor i minimises alpha_i log pi_i(a_i | o_i) - min(Q_1, Q_2)_i(s, a ~ pi)
with every agent's action freshly sampled (for Box actions the gradient reaches each actor through the joint action);
each policy keeps its own temperature alpha (`initial_alpha`, `target_entropy`). SAC's settings (`tau`,
`target_network_update_freq`, `optimization` learning rates, `q_model_config` for the critics' layers, `n_step`,
`gamma`, `twin_q`) mean what they mean for SAC.

Where it runs: the first policy of the team (the "host", `MASACPolicy`) holds the centralised critics in place of its
own Q-networks (so RLlib's critic optimizers, checkpoints and soft target updates cover them) and trains every team
policy on replayed whole game steps (marlkit/team.py, through the batched runner's `GameSteps` hook); the team's
other policies add no rows of their own, and their own Q-networks stay unused.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn
from ray.rllib.algorithms.dqn.dqn_tf_policy import PRIO_WEIGHTS
from ray.rllib.algorithms.sac.sac_torch_policy import SACTorchPolicy, build_sac_model_and_action_dist
from ray.rllib.policy.sample_batch import SampleBatch
from ray.rllib.utils.metrics.learner_info import LEARNER_STATS_KEY
from ray.rllib.utils.torch_utils import huber_loss

from marlkit.layers import mlp
from marlkit.team import BATCH_COLUMNS, TEAM, TeamHost, state_size


class CentralQ(nn.Module):
    """A centralised critic: an MLP from the game's state (and the team's actions) to Q-values of every team agent;
    `variables()` is what RLlib's SAC lists of a Q-network for its critic optimizer."""

    def __init__(self, input_size: int, num_outputs: int, hiddens, activation: str):
        super().__init__()
        self.trunk, size = mlp(input_size, hiddens, activation)
        self.head = nn.Linear(size, num_outputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(inputs))

    def variables(self, as_dict: bool = False):
        return dict(self.named_parameters()) if as_dict else list(self.parameters())


def central_q(team: dict, q_model_config: dict) -> CentralQ:
    sizes = team["action_sizes"]  # per team agent: a Box's width, or the number of Discrete actions
    if team["discrete"]:
        inputs, outputs = state_size(team), len(sizes) * max(sizes)
    else:
        inputs, outputs = state_size(team) + sum(sizes), len(sizes)
    return CentralQ(inputs, outputs, q_model_config.get("fcnet_hiddens") or [256, 256],
                    q_model_config.get("fcnet_activation") or "relu")


def _model_with_central_critics(policy, observation_space, action_space, config):
    """SAC's model and its target copy, each with centralised twin critics as its Q-networks."""
    model, distribution = build_sac_model_and_action_dist(policy, observation_space, action_space, config)
    for each in (model, policy.target_model):
        each.q_net = central_q(config[TEAM], config["q_model_config"])
        each.twin_q_net = central_q(config[TEAM], config["q_model_config"]) if config["twin_q"] else None
    return model, distribution


def team_action_sizes(action_spaces: list[gym.Space]) -> tuple[bool, list[int]]:
    """Whether a team acts in Discrete spaces, and each agent's action size (Box width or number of actions)."""
    discrete = isinstance(action_spaces[0], gym.spaces.Discrete)
    return discrete, [int(space.n) if discrete else int(space.shape[0]) for space in action_spaces]


def _columns_of_game_steps(policy, model, distribution_class, train_batch):
    """RLlib builds a policy's loss once from a dummy batch of one agent's rows, to learn which columns it reads; the
    host's losses (`team_losses`) read whole game steps, in its own `learn_on_batch`. Here: the same columns, no
    loss."""
    return sum(train_batch[key].float().sum() for key in BATCH_COLUMNS) * 0.0


class MASACPolicy(TeamHost, SACTorchPolicy.with_updates(name="MASACPolicy",
                                                        make_model_and_action_dist=_model_with_central_critics,
                                                        loss_fn=_columns_of_game_steps, stats_fn=lambda *_: {})):
    """The host of a MASAC team: acts for its own agents as SAC does, and trains every team policy's actor and
    temperature and the centralised critics on replayed game steps (`learn_on_batch`)."""

    def __init__(self, observation_space, action_space, config):
        self.team = config[TEAM]
        super().__init__(observation_space, action_space, config)

    def learn_on_batch(self, samples: SampleBatch) -> dict:
        batch = self.team_batch(samples)
        policies = list(self.team_policies.values())
        for policy in policies:
            policy.model.train()
        losses, td_error, stats = self.team_losses(batch)
        groups = {  # loss -> (its parameters, their optimizers)
            "critic": (self.model.q_variables(), self.critic_optims),
            "actor": ([p for policy in policies for p in policy.model.policy_variables()],
                      [policy.actor_optim for policy in policies]),
            "alpha": ([policy.model.log_alpha for policy in policies], [policy.alpha_optim for policy in policies]),
        }
        # Each loss moves only its own parameters; all gradients are taken before any step, as RLlib's SAC does
        # (the actor's loss reads the critics). allow_unused: RLlib's actor networks carry a value branch no SAC
        # loss reads.
        gradients = {name: torch.autograd.grad(losses[name], parameters, allow_unused=True)
                     for name, (parameters, _) in groups.items()}
        for name, (parameters, optimizers) in groups.items():
            for parameter, gradient in zip(parameters, gradients[name]):
                parameter.grad = gradient
            if self.config.get("grad_clip"):
                nn.utils.clip_grad_norm_(parameters, self.config["grad_clip"])
            for optimizer in optimizers:
                optimizer.step()
        for policy in policies:
            policy.num_grad_updates += 1
        return {LEARNER_STATS_KEY: {**stats, **{f"{name}_loss": float(loss.detach()) for name, loss in losses.items()}},
                "td_error": td_error.detach().cpu().numpy(), "num_grad_updates_lifetime": self.num_grad_updates}

    def team_losses(self, batch: dict) -> tuple[dict, torch.Tensor, dict]:
        """The critic, actor and temperature losses of a batch of game steps, the TD errors (rows,) and stats."""
        obs, next_obs = batch[SampleBatch.OBS].float(), batch[SampleBatch.NEXT_OBS].float()
        state, next_state = self.state(obs), self.state(next_obs)
        weights = batch[PRIO_WEIGHTS].float().unsqueeze(1)
        done = batch[SampleBatch.TERMINATEDS].float().unsqueeze(1)
        discount = self.config["gamma"] ** self.config.get("n_step", 1)
        rewards = self.rewards(batch)
        now = [self._actor_pass(policy, self.own(obs, agents, shape), len(agents), len(obs))
               for policy, agents, shape in self.members()]
        with torch.no_grad():
            later = [self._actor_pass(policy, self.own(next_obs, agents, shape), len(agents), len(obs))
                     for policy, agents, shape in self.members()]
        alphas = torch.cat([policy.model.log_alpha.exp().detach().expand(len(agents))
                            for policy, agents, _ in self.members()])
        critics = [self.model.q_net] + ([self.model.twin_q_net] if self.config["twin_q"] else [])
        targets = [self.target_models[self.model].q_net] + (
            [self.target_models[self.model].twin_q_net] if self.config["twin_q"] else [])
        if self.team["discrete"]:
            taken = self._team_actions(batch).long()
            q_all = [self._per_action(critic(state)) for critic in critics]  # (rows, team agents, actions) each
            q_taken = [q.gather(2, taken.unsqueeze(2)).squeeze(2) for q in q_all]
            with torch.no_grad():
                next_q = torch.min(torch.stack([self._per_action(target(next_state)) for target in targets]), 0)[0]
                probs, logps = self._stacked(later)
                next_value = (probs * (next_q - alphas[None, :, None] * logps)).sum(2)
            q_now = torch.min(torch.stack(q_all), 0)[0].detach()
            probs, logps = self._stacked(now)
            actor = (probs * (alphas[None, :, None] * logps - q_now)).sum(2)
            entropy_terms = [(probs_i.detach() * (logps_i + policy.model.target_entropy).detach()).sum(2)
                             for (probs_i, logps_i), (policy, _, _) in zip(now, self.members())]
        else:
            actions = self._team_actions(batch)
            q_taken = [critic(torch.cat([state, actions], 1)) for critic in critics]
            with torch.no_grad():
                sampled, logps = (torch.cat(part, 1) for part in zip(*later))
                next_q = torch.min(torch.stack([target(torch.cat([next_state, sampled], 1))
                                                for target in targets]), 0)[0]
                next_value = next_q - alphas * logps
            sampled, logps = (torch.cat(part, 1) for part in zip(*now))
            q_now = torch.min(torch.stack([critic(torch.cat([state, sampled], 1)) for critic in critics]), 0)[0]
            actor = alphas * logps - q_now
            entropy_terms = [(logps_i + policy.model.target_entropy).detach()
                             for (_, logps_i), (policy, _, _) in zip(now, self.members())]
        target = rewards + discount * (1.0 - done) * next_value
        td_errors = [q - target for q in q_taken]
        losses = {"critic": sum(torch.mean(weights * huber_loss(td)) for td in td_errors), "actor": actor.mean(),
                  "alpha": sum(-(policy.model.log_alpha * term).mean()
                               for term, (policy, _, _) in zip(entropy_terms, self.members()))}
        stats = {"mean_q": float(q_taken[0].detach().mean()), "mean_alpha": float(alphas.mean())}
        return losses, td_errors[0].detach().abs().mean(1), stats

    @staticmethod
    def _actor_pass(policy, own: torch.Tensor, agents: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Box: sampled actions (rows, agents x width, agent after agent) and their log-likelihoods (rows, agents);
        Discrete: the action probabilities and log-probabilities (rows, agents, actions)."""
        out, _ = policy.model({SampleBatch.OBS: own}, [], None)
        inputs, _ = policy.model.get_action_model_outputs(out)
        if isinstance(policy.action_space, gym.spaces.Discrete):
            logps = torch.log_softmax(inputs, -1).view(rows, agents, -1)
            return logps.exp(), logps
        distribution = policy.dist_class(inputs, policy.model)
        actions = distribution.sample()
        return actions.reshape(rows, -1), distribution.logp(actions).view(rows, agents)

    def _team_actions(self, batch: dict) -> torch.Tensor:
        """The team's replayed actions: Discrete (rows, team agents); Box (rows, sum of their widths)."""
        actions = batch[SampleBatch.ACTIONS]
        if self.team["discrete"]:
            return torch.cat([actions[:, agents, 0] for _, agents, _ in self.members()], 1)
        sizes = iter(self.team["action_sizes"])
        return torch.cat([actions[:, [a], :next(sizes)].flatten(1) for _, agents, _ in self.members() for a in agents],
                         1).float()

    def _per_action(self, q: torch.Tensor) -> torch.Tensor:
        """A discrete critic's (rows, team agents x most actions) outputs as (rows, team agents, most actions)."""
        return q.view(len(q), len(self.team["action_sizes"]), -1)

    def _stacked(self, passes: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete actor passes of the members, padded to the most actions (padding: probability 0)."""
        most = max(self.team["action_sizes"])
        probs = torch.cat([nn.functional.pad(p, (0, most - p.shape[2])) for p, _ in passes], 1)
        logps = torch.cat([nn.functional.pad(lp, (0, most - lp.shape[2])) for _, lp in passes], 1)
        return probs, logps
