"""The batched env runner's hooks for policies that see the whole game (marlkit/batched_runner.py calls them):
`GameValues` for values computed per game (marlkit/mappo.py implements it), `GameSteps` for training rows of whole
game steps (marlkit/mixers.py). A module of its own so that policies can implement them without importing the
sampler."""

from __future__ import annotations

import abc

import torch


class GameValues(abc.ABC):
    """The batched runner's hook for a policy whose values are computed once per game from the whole game (all its
    agents' observations), not per agent: its model's `value_function()` is never called.

    Per step the runner calls `game_input` and `game_values` once for all games; after the fragment, with the value
    targets GAE gave, `game_columns` adds the policy's own training columns."""

    @abc.abstractmethod
    def check_game(self, env: str, agents: list[str], width: int) -> None:
        """Raises ValueError when the policy was built for other agents or observation widths than this env's
        (checked when training samples: rollouts may play the actors on other games)."""

    @abc.abstractmethod
    def game_input(self, observations: torch.Tensor, present: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """(games, agents, widest observation) observations, (games, agents) presence flags and the env's (games,
        state size) global state (None for an env without one) -> (games, ...)."""

    @abc.abstractmethod
    def game_values(self, game_input: torch.Tensor) -> torch.Tensor:
        """(games, ...) inputs -> (games, agents of the policy) values, without gradient."""

    @abc.abstractmethod
    def game_columns(self, game_inputs: torch.Tensor, value_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training columns, each (time, games, agents of the policy, ...), from the fragment's (time, games, ...)
        inputs and (time, games, agents of the policy) value targets."""


class GameSteps(abc.ABC):
    """The batched runner's hook for a policy that learns from whole game steps of a team of policies (value mixers,
    marlkit/mixers.py): its training rows are one per game and step, holding every agent of the game, and the other
    policies of its team add no rows of their own (this policy trains them).

    Its rows: OBS and NEXT_OBS (rows, agents, widest observation; NEXT_OBS n steps ahead as DQN's `n_step` says),
    ACTIONS (rows, agents, widest action) as the policies chose them, REWARDS (rows, agents) n-step rewards,
    TERMINATEDS and TRUNCATEDS (rows,), replay weights of one."""

    @abc.abstractmethod
    def team_policy_ids(self) -> list[str]:
        """The policies this one trains, itself included."""

    @abc.abstractmethod
    def join_team(self, policy_map) -> None:
        """On the learner: takes the team's policies from the algorithm's policy map (called once it is built)."""

    @abc.abstractmethod
    def check_game(self, env: str, agents: list[str], width: int) -> None:
        """Raises ValueError when the policy was built for other agents or observation widths than this env's."""
