"""The model each trained policy gets when the experiment chooses none for it, decided from that policy's own
observation space, for every env (a Unity game whose behaviors differ, a user's env with a grid sensor).

- Vectors, and images RLlib's default CNN has filters for (10x10, 42x42, 64x64, 84x84 and 96x96), alone or in a
  Tuple with vectors: RLlib's default model (its complex-input model for a Tuple); nothing is set.
- Images of other sizes (grid sensors and small cameras give e.g. 8x8, 16x16 or 20x20), alone or in a Tuple with
  vectors: `model/convnet.py`, which fits any image size (the vector parts join its conv features). RLlib's
  complex-input model would need `conv_filters`, which it applies to every image of the Tuple alike, and its models
  do not apply the project's action masks (envs/masking.py), which convnet does.
- Images of any size with an action mask (a PettingZoo board game's (3, 3, 2) board): `model/convnet.py`, which
  applies the mask (RLlib's default models would sample illegal actions).
- Vectors with an action mask (a Unity behavior with masks, a flat board): `model/fcnet.py`, which applies the mask,
  sized by `fcnet_hiddens`/`fcnet_activation` where the experiment gives them.

A `custom_model` or `conv_filters` in the experiment's `config.model` or in the policy's own
`multiagent.policies.<id>.config.model` always wins: such a policy is left alone. Scripted policies have no model.

Example:
    >>> import gymnasium as gym
    >>> from ray.rllib.policy.policy import PolicySpec
    >>> policies = {"camera": PolicySpec(None, gym.spaces.Box(0, 1, (8, 8, 1)), gym.spaces.Discrete(2), {}),
    ...             "vector": PolicySpec(None, gym.spaces.Box(0, 1, (4,)), gym.spaces.Discrete(2), {})}
    >>> apply_default_models(policies, {"fcnet_hiddens": [64]})
    {'camera': ('convnet', "sees images of shape (8, 8, 1), which RLlib's default CNN has no filters for")}
    >>> policies["camera"].config["model"], policies["vector"].config
    ({'custom_model': 'convnet'}, {})
"""

from __future__ import annotations

import gymnasium as gym
from ray.rllib.models.utils import get_filter_config

from envs import masking
from marlkit.policies import ScriptedPolicy

IMAGE_MODEL = "convnet"  # model/convnet.py
MASK_MODEL = "fcnet"  # model/fcnet.py


def image_shapes(space: gym.Space) -> list[tuple]:
    """Shapes of the images (H, W, C) in an observation space (alone, in a Tuple, beside a mask)."""
    space, _ = masking.split_space(space)
    parts = space.spaces if isinstance(space, gym.spaces.Tuple) else [space]
    return [part.shape for part in parts if isinstance(part, gym.spaces.Box) and len(part.shape) == 3]


def has_default_cnn(shape: tuple) -> bool:
    """Whether RLlib's default CNN has filters for images of this shape."""
    try:
        get_filter_config(shape)
    except ValueError:
        return False
    return True


def chooses_model(model: dict) -> bool:
    """Whether RLlib model settings pick the network themselves (a custom model or the CNN's filters)."""
    return bool(model.get("custom_model") or model.get("conv_filters"))


def apply_default_models(policies: dict, model: dict) -> dict[str, tuple[str, str]]:
    """Sets `config["model"]` of each policy in RLlib's `multiagent.policies` (id -> PolicySpec) that needs a model
    of its own (see the module docstring); `model`: the experiment's `config.model`.

    Returns: policy id -> (the model/ file chosen, why), for the policies it set.
    """
    chosen = {}
    if chooses_model(model or {}):
        return chosen
    for pid, spec in policies.items():
        own = (spec.config or {}).get("model") or {}
        if spec.policy_class is ScriptedPolicy or chooses_model(own):
            continue
        images = sorted(set(image_shapes(spec.observation_space)))
        masked = masking.split_space(spec.observation_space)[1]
        unfiltered = [shape for shape in images if not has_default_cnn(shape)]
        if unfiltered or (images and masked):
            name, settings = IMAGE_MODEL, {"custom_model": IMAGE_MODEL}
            why = f"sees images of shape {', '.join(map(str, unfiltered or images))}" + (
                ", which RLlib's default CNN has no filters for" if unfiltered
                else " with action masks, which RLlib's default CNN does not apply")
        elif masked:
            name, why = MASK_MODEL, "sees action masks, which RLlib's default model does not apply"
            given = {**model, **own}
            sizes = {key: given[rllib] for key, rllib in (("hiddens", "fcnet_hiddens"),
                                                         ("activation", "fcnet_activation")) if rllib in given}
            settings = {"custom_model": name, **({"custom_model_config": sizes} if sizes else {})}
        else:
            continue
        spec.config = {**(spec.config or {}), "model": {**own, **settings}}
        chosen[pid] = (name, why)
    return chosen
