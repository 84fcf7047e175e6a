"""Attention memory: a transformer encoder over a sliding window of the agent's recent observations.

`custom_model: attention`. `custom_model_config`:
    embed_dim    size of each observation's embedding (default 64)
    memory       past steps kept in the window (default 8); the window is the recurrent state
    num_heads    attention heads (default 4; must divide embed_dim)
    num_layers   transformer encoder layers (default 2)
    activation   "tanh" (default), "relu" or "elu" of the observation encoder

At every step the window holds the embeddings of the last `memory` observations plus the current one; the
transformer's output at the current position feeds the policy and value heads, then the window slides by one. The
window travels through RLlib's recurrent-model machinery (`state_in`/`state_out`), so PPO trains on sequences of
`model.max_seq_len` steps like the LSTM, and batched envs sample it through the batched env runner like the LSTM. At
an episode's start the window is zeros.

Example (YAML):
    model:
      custom_model: attention
      custom_model_config: {embed_dim: 32, memory: 8, num_heads: 2, num_layers: 1}
"""

import gymnasium as gym
import torch
from torch import nn
from ray.rllib.models.torch.recurrent_net import RecurrentNetwork

from envs import masking
from marlkit.layers import mlp


class CustomModel(RecurrentNetwork, nn.Module):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name,
                 embed_dim=64, memory=8, num_heads=4, num_layers=2, activation="tanh"):
        nn.Module.__init__(self)
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        if masking.split_space(obs_space)[1]:
            raise ValueError("model 'attention' does not take action masks in observations; use fcnet or convnet")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        self.memory, self.embed_dim = memory, embed_dim
        self.encoder, _ = mlp(gym.spaces.flatdim(obs_space), [embed_dim], activation)
        self.position = nn.Parameter(torch.zeros(memory + 1, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=2 * embed_dim, dropout=0.0,
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.policy_head = nn.Linear(embed_dim, num_outputs)
        self.value_head = nn.Linear(embed_dim, 1)
        self._features = None

    def get_initial_state(self):
        return [torch.zeros(self.memory, self.embed_dim)]

    def forward_rnn(self, inputs, state, seq_lens):
        """inputs: (batch, time, obs); state: [window], (batch, memory, embed_dim)."""
        embedded = self.encoder(inputs)
        window = state[0]
        outputs = []
        for step in range(embedded.shape[1]):
            tokens = torch.cat([window, embedded[:, step:step + 1]], dim=1)
            outputs.append(self.transformer(tokens + self.position)[:, -1])
            window = tokens[:, 1:]
        self._features = torch.stack(outputs, dim=1)
        return self.policy_head(self._features), [window]

    def value_function(self):
        return self.value_head(self._features).reshape(-1)
