"""Convolutional policy and value network for image observations (H, W, C), e.g. camera or depth maps.

`custom_model: convnet`. `custom_model_config`:
    channels     output channels of each conv layer (default [16, 32, 32])
    kernels      kernel size of each conv layer (default [5, 3, 3])
    strides      stride of each conv layer (default [2, 2, 2])
    hidden       size of the fully connected layer after the convolutions (default 256)

Observations are channels-last and are permuted to torch's channels-first inside the model; uint8 images are
scaled to [0, 1]. A Tuple observation (e.g. a Unity game's depth image and vector) works too: its first image goes
through the convolutions, and every other component is flattened and joins the conv features before the hidden layer.
Observations may carry a discrete action mask (envs/masking.py): masked actions are never sampled.

Example (YAML):
    model:
      custom_model: convnet
      custom_model_config: {channels: [16, 32], kernels: [5, 3], strides: [2, 2], hidden: 128}
"""

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2

from envs import masking


class CustomModel(TorchModelV2, nn.Module):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name,
                 channels=(16, 32, 32), kernels=(5, 3, 3), strides=(2, 2, 2), hidden=256):
        TorchModelV2.__init__(self, obs_space, action_space, num_outputs, model_config, name)
        nn.Module.__init__(self)
        if not len(channels) == len(kernels) == len(strides):
            raise ValueError("channels, kernels and strides must have the same length")
        original, self._masked = masking.split_space(obs_space)
        parts = list(original.spaces) if isinstance(original, gym.spaces.Tuple) else [original]
        images = [i for i, part in enumerate(parts) if len(part.shape) == 3]
        if not images:
            raise ValueError(f"convnet needs (H, W, C) image observations, got {original}")
        self._image = images[0]
        self._tuple = isinstance(original, gym.spaces.Tuple)
        image_space = parts[self._image]
        extra_size = sum(int(np.prod(part.shape)) for i, part in enumerate(parts) if i != self._image)
        height, width, image_channels = image_space.shape
        self._scale = 1.0 / 255.0 if image_space.dtype == "uint8" else 1.0
        layers, in_channels = [], image_channels
        for out_channels, kernel, stride in zip(channels, kernels, strides):
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2), nn.ReLU()]
            in_channels = out_channels
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            conv_size = self.conv(torch.zeros(1, image_channels, height, width)).shape[1]
        self.trunk = nn.Sequential(nn.Linear(conv_size + extra_size, hidden), nn.ReLU())
        self.policy_head = nn.Linear(hidden, num_outputs)
        self.value_head = nn.Linear(hidden, 1)
        self._features = None

    def forward(self, input_dict, state, seq_lens):
        observations, mask = masking.split_obs(input_dict["obs"], self._masked)
        parts = list(observations) if self._tuple else [observations]
        images = parts.pop(self._image).float() * self._scale
        features = [self.conv(images.permute(0, 3, 1, 2))] + [part.float().flatten(1) for part in parts]
        self._features = self.trunk(torch.cat(features, dim=1))
        return masking.apply_mask(self.policy_head(self._features), mask), state

    def value_function(self):
        return self.value_head(self._features).squeeze(1)
