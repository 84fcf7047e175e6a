"""What every policy that trains a team on whole game steps shares (value mixers: marlkit/mixers.py; MASAC's
centralised critics: marlkit/masac.py): the team's layout in the host policy's config, the batched runner's
`GameSteps` hook, the hand-over of the team's policies on the learner, and the pieces of a game-step batch.

The team is every agent of a trained policy, in the env's agent order policy by policy; the host is its first
policy. The host's replay rows are whole game steps (marlkit/game_values.py): every agent's observation (zero-padded
to the widest), action and n-step reward, the next observations and the game's flags. The game's state is the joint
observation the centralised critic reads (marlkit/mappo.py: every agent's observation with presence flags; VMAS and
Bucket Brigade offer no global state).
"""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.algorithms.dqn.dqn_tf_policy import PRIO_WEIGHTS
from ray.rllib.policy.sample_batch import SampleBatch

from envs.batched import agent_observations
from marlkit.game_values import GameSteps
from marlkit.mappo import joint_input

TEAM = "team"  # the host policy's config key: its team (`team_layout`)
TEAM_REWARDS = ("sum", "mean")
BATCH_COLUMNS = (SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS, SampleBatch.NEXT_OBS,
                 SampleBatch.TERMINATEDS, PRIO_WEIGHTS)


def team_layout(agents: list, width: int, policies: dict[str, list[int]], reward: str | None, **learner) -> dict:
    """The host's `team` config: every agent of the game (env order) and the widest flattened observation (the
    state's layout), policy id -> indices of its agents, how rewards are combined (`sum` or `mean` over the team;
    None: each agent's own), and the learner's own settings (`learner`: the mixer, or the centralised critic)."""
    return {"agents": list(agents), "width": int(width), "policies": policies, "reward": reward, **learner}


def team_agents(team: dict) -> list[int]:
    """Indices of the team's agents, policy by policy (the order their values are stacked in)."""
    return [index for indices in team["policies"].values() for index in indices]


def state_size(team: dict) -> int:
    return len(team["agents"]) * (team["width"] + 1)


class TeamHost(GameSteps):
    """The host policy's side of a team (a mixin before the RLlib policy class): set `self.team` from its config
    before use; the algorithm calls `join_team` on the learner (marlkit/algorithms.py)."""

    team: dict
    team_policies: dict | None = None  # policy id -> policy, on the learner

    def team_policy_ids(self) -> list[str]:
        return list(self.team["policies"])

    def check_game(self, env: str, agents: list[str], width: int) -> None:
        if agents != self.team["agents"] or width != self.team["width"]:
            raise ValueError(f"its team was built for agents {self.team['agents']} (observation width "
                             f"{self.team['width']}), but env '{env}' has {agents} (width {width})")

    def join_team(self, policy_map) -> None:
        self.team_policies = {pid: policy_map[pid] for pid in self.team["policies"]}

    @torch.no_grad()
    def update_target(self, tau: float | None = None) -> None:
        """RLlib's soft target update (every tensor of the model's state: target <- tau x online + (1 - tau) x
        target, `tau` defaulting to the config's as RLlib's), in place with torch's multi-tensor ops: RLlib's
        rebuilds and reloads the whole state dict, 8% of a QMIX training step in bench/teams.py."""
        tau = tau or self.config.get("tau", 1.0)
        online = list(self.model.state_dict().values())
        for target_model in self.target_models.values():
            target = list(target_model.state_dict().values())
            floats = [(t, o.to(t.device)) for t, o in zip(target, online) if t.is_floating_point()]
            torch._foreach_lerp_([t for t, _ in floats], [o for _, o in floats], tau)
            for t, o in zip(target, online):
                if not t.is_floating_point():  # (counters: RLlib's formula, cast back, as its load_state_dict does)
                    t.copy_(tau * o.to(t.device) + (1 - tau) * t)

    def team_batch(self, samples: SampleBatch) -> dict[str, torch.Tensor]:
        """The columns a team learner reads, as tensors on the host's device."""
        if not self.team_policies:
            raise RuntimeError(f"{type(self).__name__}.learn_on_batch before join_team (the algorithm hands over "
                               f"the team)")
        return {key: torch.as_tensor(np.asarray(samples[key]), device=self.device) for key in BATCH_COLUMNS}

    def members(self):
        """(policy, indices of its agents, its model's observation shape) of each team policy."""
        for pid, agents in self.team["policies"].items():
            policy = self.team_policies[pid]
            yield policy, agents, tuple(policy.observation_space.shape)

    def rewards(self, batch: dict) -> torch.Tensor:
        """(rows, team agents) rewards: each agent's own, or the team's sum or mean for every agent."""
        rewards = batch[SampleBatch.REWARDS][:, team_agents(self.team)].float()
        if self.team["reward"] is None:
            return rewards
        combined = rewards.sum(1, keepdim=True) if self.team["reward"] == "sum" else rewards.mean(1, keepdim=True)
        return combined.expand_as(rewards)

    @staticmethod
    def state(observations: torch.Tensor) -> torch.Tensor:
        """(rows, agents, width) -> the game's state (rows, agents x (width + 1)), every agent present."""
        return joint_input(observations, torch.ones(observations.shape[:2], device=observations.device))

    @staticmethod
    def own(observations: torch.Tensor, agents: list[int], shape: tuple) -> torch.Tensor:
        """(rows, agents, width) -> (rows x len(agents), *shape): the agents' own observations, row after row."""
        return agent_observations(observations, agents, shape).flatten(0, 1)
