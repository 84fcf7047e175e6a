"""Building blocks shared by the model files in model/ (each model file stays importable on its own)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def mlp(in_size: int, hiddens, activation: str) -> tuple[nn.Sequential, int]:
    """A stack of Linear + activation layers of sizes `hiddens`, and its output size.

    Example:
        >>> trunk, size = mlp(18, [64, 64], "tanh")
        >>> size
        64
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers = []
    for size in hiddens:
        layers += [nn.Linear(in_size, size), ACTIVATIONS[activation]()]
        in_size = size
    return nn.Sequential(*layers), in_size


class CentralCritic(nn.Module):
    """The default centralised critic (marlkit/mappo.py): an MLP from the joint input to one value per agent of the
    policy."""

    def __init__(self, input_size: int, num_values: int, hiddens, activation: str = "tanh"):
        super().__init__()
        self.trunk, size = mlp(input_size, hiddens, activation)
        self.head = nn.Linear(size, num_values)

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(joint))
