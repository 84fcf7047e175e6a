"""Recurrent policy and value network: an MLP encoder, an LSTM, and policy and value heads on the LSTM's output.

`custom_model: lstm`. `custom_model_config`:
    hiddens      sizes of the encoder's layers before the LSTM (default [128])
    cell_size    LSTM hidden and cell size (default 128)
    activation   "tanh" (default), "relu" or "elu"

Each agent carries its own LSTM state through its episode (RLlib's recurrent-model machinery: `state_in`/`state_out`
in the sample batch). PPO trains on sequences of `model.max_seq_len` steps (RLlib default 20), starting from the
state recorded at each sequence's first step. Batched envs (VMAS, Bucket Brigade) sample it through the batched env
runner (marlkit/batched_runner.py), which keeps the state as arrays per (game, agent).

Example (YAML):
    model:
      custom_model: lstm
      custom_model_config: {hiddens: [64], cell_size: 64}
      max_seq_len: 20
"""

import gymnasium as gym
import torch
from torch import nn
from ray.rllib.models.torch.recurrent_net import RecurrentNetwork

from envs import masking
from marlkit.layers import mlp


class CustomModel(RecurrentNetwork, nn.Module):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name,
                 hiddens=(128,), cell_size=128, activation="tanh"):
        nn.Module.__init__(self)
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        if masking.split_space(obs_space)[1]:
            raise ValueError("model 'lstm' does not take action masks in observations; use fcnet or convnet")
        self.cell_size = cell_size
        self.encoder, encoded = mlp(gym.spaces.flatdim(obs_space), hiddens, activation)
        self.lstm = nn.LSTM(encoded, cell_size, batch_first=True)
        self.policy_head = nn.Linear(cell_size, num_outputs)
        self.value_head = nn.Linear(cell_size, 1)
        self._features = None

    def get_initial_state(self):
        return [torch.zeros(self.cell_size), torch.zeros(self.cell_size)]

    def forward_rnn(self, inputs, state, seq_lens):
        """inputs: (batch, time, obs); state: [h, c], each (batch, cell_size)."""
        self._features, (h, c) = self.lstm(self.encoder(inputs), (state[0].unsqueeze(0), state[1].unsqueeze(0)))
        return self.policy_head(self._features), [h.squeeze(0), c.squeeze(0)]

    def value_function(self):
        return self.value_head(self._features).reshape(-1)
