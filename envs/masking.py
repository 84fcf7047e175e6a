"""Discrete action masks carried in observations: `Dict(observations=..., action_mask=Box(0, 1, (n,)))`.

An env that masks actions (e.g. `env: unity` with `action_masks: true`) wraps each observation so; the mask has one
entry per discrete action (all branches one after another), 1 = allowed, 0 = not. The models in model/ read the
`observations` part and push the logits of masked actions to a very large negative number, so the action
distribution never samples them. With hybrid actions the discrete logits are the last ones, as RLlib lays them out.

Example:
    >>> import torch
    >>> apply_mask(torch.zeros(1, 4), torch.tensor([[1.0, 0.0]]))[0, 2:].tolist()
    [0.0, -3.4028234663852886e+38]
"""

from __future__ import annotations

import gymnasium as gym
import torch

MASK_KEY, OBSERVATIONS_KEY = "action_mask", "observations"
FLOAT_MIN = torch.finfo(torch.float32).min


def wrap_space(space: gym.Space, mask_size: int) -> gym.spaces.Dict:
    """The observation space of an env that adds a mask of `mask_size` discrete actions to `space`."""
    return gym.spaces.Dict({OBSERVATIONS_KEY: space, MASK_KEY: gym.spaces.Box(0.0, 1.0, (mask_size,), "float32")})


def split_space(obs_space: gym.Space) -> tuple[gym.Space, bool]:
    """(the space of the observations proper, whether a mask comes with them) of a model's `obs_space`."""
    original = getattr(obs_space, "original_space", obs_space)
    if isinstance(original, gym.spaces.Dict) and MASK_KEY in original.spaces:
        return original[OBSERVATIONS_KEY], True
    return original, False


def split_obs(obs, masked: bool):
    """(observations, mask or None) of a model's restored `input_dict["obs"]`."""
    return (obs[OBSERVATIONS_KEY], obs[MASK_KEY]) if masked else (obs, None)


def apply_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits with those of masked discrete actions (the last mask.shape[1] ones) at the float minimum."""
    if mask is None:
        return logits
    size = mask.shape[1]
    masked = logits[:, -size:] + torch.clamp(torch.log(mask), min=FLOAT_MIN)
    return torch.cat([logits[:, :-size], masked], dim=1)
