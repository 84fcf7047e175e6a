"""Fully connected policy and value network (MLP) for flat vector observations.

`custom_model: fcnet`. `custom_model_config`:
    hiddens      sizes of the hidden layers, shared by the policy and value heads' trunk (default [256, 256])
    activation   "tanh" (default), "relu" or "elu"
    vf_share_layers  whether the value head reads the policy trunk (default false: separate value trunk)

With `multiagent.critic: centralized` (marlkit/mappo.py) the per-agent value branch is dropped: the centralised critic,
built by `make_central_critic` with this model's activation, gives the values.

Observations may carry a discrete action mask (envs/masking.py): masked actions are never sampled.

Example (YAML):
    model:
      custom_model: fcnet
      custom_model_config: {hiddens: [64, 64], activation: tanh}
"""

import gymnasium as gym
import torch
from torch import nn
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2

from envs import masking
from marlkit.layers import CentralCritic, mlp


class CustomModel(TorchModelV2, nn.Module):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name,
                 hiddens=(256, 256), activation="tanh", vf_share_layers=False):
        TorchModelV2.__init__(self, obs_space, action_space, num_outputs, model_config, name)
        nn.Module.__init__(self)
        observations, self._masked = masking.split_space(obs_space)
        in_size = gym.spaces.flatdim(observations)
        self.policy_trunk, out_size = mlp(in_size, hiddens, activation)
        self.policy_head = nn.Linear(out_size, num_outputs)
        self.value_trunk = None if vf_share_layers else mlp(in_size, hiddens, activation)[0]
        self.value_head = nn.Linear(out_size, 1)
        self._activation = activation
        self._features = None
        self._value_features = None

    def make_central_critic(self, input_size, num_values, hiddens):
        """The centralised critic (marlkit/mappo.py); the per-agent value branch goes, as nothing reads it."""
        self.value_trunk = self.value_head = None
        return CentralCritic(input_size, num_values, hiddens, self._activation)

    def forward(self, input_dict, state, seq_lens):
        if self._masked:
            observations, mask = masking.split_obs(input_dict["obs"], True)
            parts = observations if isinstance(observations, (tuple, list)) else [observations]
            obs = torch.cat([part.float().flatten(1) for part in parts], dim=1)
        else:
            obs, mask = input_dict["obs_flat"].float(), None
        self._features = self.policy_trunk(obs)
        if self.value_head is not None:
            self._value_features = self._features if self.value_trunk is None else self.value_trunk(obs)
        return masking.apply_mask(self.policy_head(self._features), mask), state

    def value_function(self):
        return self.value_head(self._value_features).squeeze(1)
