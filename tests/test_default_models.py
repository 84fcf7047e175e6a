"""The default model of each policy, from its own observation space (marlkit/default_models.py), and the model RLlib
then builds for it: every kind of observation gets a network that takes it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.models import ModelCatalog
from ray.rllib.models.catalog import MODEL_DEFAULTS
from ray.rllib.models.preprocessors import get_preprocessor
from ray.rllib.models.torch.complex_input_net import ComplexInputNetwork
from ray.rllib.models.torch.fcnet import FullyConnectedNetwork
from ray.rllib.models.torch.visionnet import VisionNetwork
from ray.rllib.policy.policy import PolicySpec

from envs import masking
from marlkit import models
from marlkit.default_models import apply_default_models
from marlkit.policies import ScriptedPolicy

VECTOR = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACTIONS = gym.spaces.Discrete(3)


def image(size: int) -> gym.spaces.Box:
    return gym.spaces.Box(0.0, 1.0, (size, size, 1), np.float32)


SPACES = {
    "vector": VECTOR,
    "image_8": image(8),
    "image_84": image(84),
    "vector_and_image_8": gym.spaces.Tuple((VECTOR, image(8))),
    "vector_and_image_84": gym.spaces.Tuple((VECTOR, image(84))),
    "masked_vector_and_image_20": masking.wrap_space(gym.spaces.Tuple((VECTOR, image(20))), 3),
    "masked_vector": masking.wrap_space(VECTOR, 3),  # a flat board's
    "masked_image_84": masking.wrap_space(image(84), 3),  # an image RLlib has filters for, with a mask
}
# What RLlib builds for each kind of observation when the experiment chooses no model.
BUILT = {
    "vector": FullyConnectedNetwork,
    "image_8": "convnet",
    "image_84": VisionNetwork,  # RLlib's default filters for 84x84
    "vector_and_image_8": "convnet",
    "vector_and_image_84": ComplexInputNetwork,  # RLlib's default filters for the image, an MLP for the vector
    "masked_vector_and_image_20": "convnet",
    "masked_vector": "fcnet",
    "masked_image_84": "convnet",
}
IMAGE_20 = ("convnet", "sees images of shape (20, 20, 1), which RLlib's default CNN has no filters for")
IMAGE_8 = ("convnet", "sees images of shape (8, 8, 1), which RLlib's default CNN has no filters for")
MASKS = ("fcnet", "sees action masks, which RLlib's default model does not apply")
MASKED_IMAGE_84 = ("convnet", "sees images of shape (84, 84, 1) with action masks, which RLlib's default CNN does not "
                              "apply")


def policies(**configs) -> dict:
    return {name: PolicySpec(None, space, ACTIONS, dict(configs.get(name, {}))) for name, space in SPACES.items()}


def built_model(spec: PolicySpec, model: dict):
    """The model RLlib's policy builds for `spec` in an experiment whose `config.model` is `model`, run once on a
    sample observation."""
    config = {**MODEL_DEFAULTS, **model, **(spec.config.get("model") or {})}
    preprocessor = get_preprocessor(spec.observation_space)(spec.observation_space)
    flat_space = preprocessor.observation_space
    flat_space.original_space = spec.observation_space  # as RLlib's policies set it
    network = ModelCatalog.get_model_v2(flat_space, ACTIONS, ACTIONS.n, config, framework="torch")
    sample = torch.as_tensor(preprocessor.transform(spec.observation_space.sample()))[None]
    logits, _ = network({"obs": sample, "obs_flat": sample}, [], None)
    assert logits.shape == (1, ACTIONS.n) and network.value_function().shape == (1,)
    return network


def test_each_policy_gets_the_default_of_its_own_observations():
    models.register_models(["convnet", "fcnet"])
    specs = policies()
    chosen = apply_default_models(specs, {})
    assert chosen == {"image_8": IMAGE_8, "vector_and_image_8": IMAGE_8, "masked_vector_and_image_20": IMAGE_20,
                      "masked_vector": MASKS, "masked_image_84": MASKED_IMAGE_84}
    for name, spec in specs.items():
        expected = BUILT[name]
        network = built_model(spec, {})
        if expected in ("convnet", "fcnet"):
            assert spec.config == {"model": {"custom_model": expected}}
            assert type(network).__module__ == f"model.{expected}"
        else:
            assert spec.config == {}, name  # RLlib's default: nothing set
            assert type(network) is expected, name


def test_a_model_chosen_by_the_experiment_or_the_policy_always_wins():
    for model in ({"custom_model": "fcnet"}, {"conv_filters": [[8, [4, 4], 2], [16, [4, 4], 1]]}):
        specs = policies()
        assert apply_default_models(specs, model) == {}
        assert all(spec.config == {} for spec in specs.values())
    own = {"image_8": {"model": {"custom_model": "fcnet"}}, "vector_and_image_8": {"model": {"conv_filters": [[8, [8, 8], 1]]}},
           "masked_vector_and_image_20": {"lr": 0.001, "model": {"fcnet_hiddens": [32]}}}
    specs = policies(**own)
    assert apply_default_models(specs, {"fcnet_hiddens": [64]}) == {
        "masked_vector_and_image_20": IMAGE_20, "masked_vector": MASKS, "masked_image_84": MASKED_IMAGE_84}
    assert specs["image_8"].config == own["image_8"] and specs["vector_and_image_8"].config == own["vector_and_image_8"]
    # A policy's own model settings that choose no network keep their place beside the default.
    assert specs["masked_vector_and_image_20"].config == {"lr": 0.001, "model": {"fcnet_hiddens": [32],
                                                                                  "custom_model": "convnet"}}
    # The masking MLP takes the experiment's MLP sizes.
    assert specs["masked_vector"].config == {"model": {"custom_model": "fcnet",
                                                       "custom_model_config": {"hiddens": [64]}}}


def test_scripted_policies_get_no_model():
    specs = {"rule": PolicySpec(ScriptedPolicy, image(8), ACTIONS, {"act": None})}
    assert apply_default_models(specs, {}) == {} and specs["rule"].config == {"act": None}


def test_used_model_names_read_the_experiment_and_every_policy():
    specs = policies(image_8={"model": {"custom_model": "fcnet"}})
    apply_default_models(specs, {})
    assert models.used_model_names({}, specs) == {"fcnet", "convnet"}
    stored = {pid: (None, spec.observation_space, ACTIONS, spec.config) for pid, spec in specs.items()}  # a checkpoint's
    assert models.used_model_names({}, stored) == {"fcnet", "convnet"}
    assert models.used_model_names({"custom_model": "lstm"}) == {"lstm"}
    assert models.used_model_names({}, None) == set()


@pytest.mark.parametrize("name", sorted(name for name, built in BUILT.items()
                                         if built == "convnet" and name != "masked_image_84"))
def test_without_the_default_rllib_cannot_build_small_images(name):
    """The defect the rule mends: RLlib's own default model fails on images it has no filters for."""
    with pytest.raises(ValueError, match="No default CNN configuration for obs shape"):
        built_model(policies()[name], {})


@pytest.mark.parametrize("name", ["masked_vector", "masked_image_84"])
def test_without_the_default_rllib_samples_masked_actions(name):
    """The defect the mask rules mend: RLlib's own default models leave the logits of masked actions as they are."""
    spec = policies()[name]
    preprocessor = get_preprocessor(spec.observation_space)(spec.observation_space)
    observation = {masking.MASK_KEY: np.array([1.0, 0.0, 0.0], np.float32),
                   masking.OBSERVATIONS_KEY: np.ones(SPACES[name][masking.OBSERVATIONS_KEY].shape, np.float32)}
    sample = torch.as_tensor(preprocessor.transform(observation))[None]
    default = built_model(spec, {})
    assert bool(torch.all(default({"obs": sample, "obs_flat": sample}, [], None)[0][0, 1:] > -1e30))
    apply_default_models({name: spec}, {})
    chosen = built_model(spec, {})
    assert torch.all(chosen({"obs": sample, "obs_flat": sample}, [], None)[0][0, 1:] < -1e30)
