"""The batched env runner's episode bookkeeping (marlkit/batched_runner.py): per game, the running episode's id,
length and per-agent return; RLlib's `RolloutMetrics` of every episode that ended, for the runner's `get_metrics()`.

Example:
    >>> import torch
    >>> episodes = GameEpisodes(num_games=2, agent_keys=[("a", "p"), ("b", "p")], first_id=0, device="cpu")
    >>> episodes.step(torch.ones(2, 2), valid=torch.tensor([True, True]), done=torch.tensor([True, False]))
    >>> [(m.episode_length, m.episode_reward) for m in episodes.take_finished()], episodes.ids.tolist()
    ([(1, 2.0)], [2, 1])
"""

from __future__ import annotations

import torch
from ray.rllib.evaluation.metrics import RolloutMetrics


class GameEpisodes:
    """Episodes of `num_games` games; `agent_keys`: RLlib's (agent id, policy id) of each agent, in the env's order.
    Episode ids start at `first_id` and count up across games."""

    def __init__(self, num_games: int, agent_keys: list[tuple], first_id: int, device):
        self.agent_keys = agent_keys
        self.returns = torch.zeros(num_games, len(agent_keys), device=device)
        self.lengths = torch.zeros(num_games, dtype=torch.long, device=device)
        self.ids = torch.arange(num_games, device=device) + first_id
        self.next_id = first_id + num_games
        self.finished: list[RolloutMetrics] = []

    def step(self, rewards: torch.Tensor, valid: torch.Tensor, done: torch.Tensor) -> None:
        """One env step: (games, agents) rewards, which games played a step (not restarting) and which ended."""
        self.returns += rewards
        self.lengths += valid
        if not bool(done.any()):
            return
        ended = done.nonzero().flatten()
        for length, agent_returns in zip(self.lengths[ended].tolist(), self.returns[ended].tolist()):
            self.finished.append(RolloutMetrics(episode_length=length, episode_reward=float(sum(agent_returns)),
                                                agent_rewards=dict(zip(self.agent_keys, agent_returns))))
        self.ids[ended] = torch.arange(self.next_id, self.next_id + len(ended), device=self.ids.device)
        self.next_id += len(ended)
        self.returns[done] = 0
        self.lengths[done] = 0

    def take_finished(self) -> list[RolloutMetrics]:
        finished, self.finished = self.finished, []
        return finished
