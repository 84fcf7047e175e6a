"""Custom-model registry and the shipped models."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.models import ModelCatalog
from ray.rllib.models.torch.recurrent_net import RecurrentNetwork

from marlkit import models
from envs.errors import ConfigError


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "MODEL_DIR", tmp_path)
    return tmp_path


def test_shipped_models_are_listed():
    assert {"fcnet", "convnet"} <= set(models.available_models())


def test_registered_fcnet_builds_with_its_custom_config():
    models.register_models(["fcnet"])
    obs_space, action_space = gym.spaces.Box(-1, 1, (18,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32)
    model = ModelCatalog.get_model_v2(
        obs_space, action_space, 4, {"custom_model": "fcnet", "custom_model_config": {"hiddens": [32, 16]}},
        framework="torch",
    )
    logits, _ = model({"obs_flat": torch.zeros(5, 18), "obs": torch.zeros(5, 18)}, [], None)
    assert logits.shape == (5, 4)
    assert model.value_function().shape == (5,)
    assert [m.out_features for m in model.policy_trunk if isinstance(m, torch.nn.Linear)] == [32, 16]


def test_house_pointer_scores_every_house_with_the_same_network():
    """model/house_pointer.py on real Bucket Brigade observations: houses with the same own features (state,
    ownership, distance from home) get the same logit in an observation, one burning apart from its safe twin gets
    another; a wrong action space is refused."""
    from envs.bucket_brigade.env import BucketBrigadeBatch
    from envs.bucket_brigade.scenarios import obs_layout

    env = BucketBrigadeBatch({"scenario": "default"})
    space, actions = env.observation_spaces["agent_0"], env.action_spaces["agent_0"]
    env.close()
    torch.manual_seed(0)
    model = models.load_model("house_pointer")(space, actions, 14, {}, "pointer", hiddens=[16], house_hidden=8)
    houses = obs_layout(10, 4)["houses"].start
    obs = np.zeros((2, space.shape[0]), np.float32)
    obs[:, obs_layout(10, 4)["identity"].start] = 1.0  # agent 0 at home 0; houses 1 and 9: agent 1's, one step away
    obs[0, houses + 1] = 1.0  # row 0: house 1 BURNING, house 9 SAFE
    obs[1, [houses + 1, houses + 9]] = 1.0  # row 1: both BURNING
    logits, _ = model({"obs_flat": torch.as_tensor(obs), "obs": torch.as_tensor(obs)}, [], None)
    house_logits = logits[:, :10].detach()
    assert logits.shape == (2, 14) and model.value_function().shape == (2,)
    assert house_logits[1, 1] == house_logits[1, 9] and house_logits[0, 3] == house_logits[0, 7]  # twins
    assert abs(float(house_logits[0, 1] - house_logits[0, 9])) > 1e-4  # burning vs its safe twin
    with pytest.raises(ValueError, match="MultiDiscrete\\(\\[houses, 2, 2\\]\\) actions"):
        models.load_model("house_pointer")(space, gym.spaces.Discrete(3), 3, {}, "pointer")


def test_convnet_reads_channels_last_images():
    model_class = models.load_model("convnet")
    obs_space = gym.spaces.Box(0, 255, (40, 30, 3), np.uint8)
    model = model_class(obs_space, gym.spaces.Discrete(5), 5, {}, "convnet", channels=[8, 8], kernels=[3, 3],
                        strides=[2, 2], hidden=32)
    images = torch.randint(0, 255, (2, 40, 30, 3), dtype=torch.uint8)
    logits, _ = model({"obs": images}, [], None)
    assert logits.shape == (2, 5) and model.value_function().shape == (2,)


@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 8, 1), (20, 20, 3), (7, 33, 2)])
def test_convnet_with_its_defaults_fits_any_image_size(shape):
    """The default model of images RLlib's default CNN has no filters for (spec.py): any size, default settings."""
    model = models.load_model("convnet")(gym.spaces.Box(0, 1, shape, np.float32), gym.spaces.Discrete(4), 4, {},
                                         "convnet")
    logits, _ = model({"obs": torch.rand(3, *shape)}, [], None)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()


def test_convnet_takes_an_image_and_a_vector_together():
    model_class = models.load_model("convnet")
    original = gym.spaces.Tuple((gym.spaces.Box(-1, 1, (12,), np.float32), gym.spaces.Box(0, 1, (16, 16, 1), np.float32)))
    obs_space = gym.spaces.Box(-1, 1, (12 + 256,), np.float32)
    obs_space.original_space = original  # how RLlib's preprocessor hands Tuple spaces to models
    model = model_class(obs_space, gym.spaces.Discrete(3), 3, {}, "convnet", channels=[4], kernels=[3], strides=[2],
                        hidden=16)
    vectors, images = torch.zeros(5, 12), torch.rand(5, 16, 16, 1)
    logits, _ = model({"obs": (vectors, images)}, [], None)
    assert logits.shape == (5, 3)
    changed, _ = model({"obs": (vectors + 1, images)}, [], None)
    assert not torch.allclose(logits, changed), "the vector part does not reach the output"


@pytest.mark.parametrize("name", ["fcnet", "convnet"])
def test_models_never_pick_masked_actions(name):
    from envs import masking

    image = gym.spaces.Box(0, 1, (8, 8, 1), np.float32)
    inner = gym.spaces.Tuple((gym.spaces.Box(-1, 1, (4,), np.float32), image))
    original = masking.wrap_space(inner, 3)
    obs_space = gym.spaces.Box(-1, 1, (3 + 4 + 64,), np.float32)
    obs_space.original_space = original
    kwargs = {"channels": [4], "kernels": [3], "strides": [2], "hidden": 8} if name == "convnet" else {"hiddens": [8]}
    model = models.load_model(name)(obs_space, gym.spaces.Discrete(3), 3, {}, name, **kwargs)
    obs = {"observations": (torch.randn(6, 4), torch.rand(6, 8, 8, 1)),
           "action_mask": torch.tensor([[1.0, 0.0, 1.0]] * 6)}
    logits, _ = model({"obs": obs}, [], None)
    assert (logits[:, 1] < -1e30).all() and (logits[:, [0, 2]].abs() < 1e3).all()


def test_missing_model_lists_what_model_dir_has(model_dir):
    (model_dir / "mlp.py").write_text("")
    with pytest.raises(ConfigError, match="custom_model 'mpl'.*did you mean 'mlp'.*model/ has: mlp"):
        models.load_model("mpl")


def test_file_without_custom_model_class(model_dir):
    (model_dir / "empty.py").write_text("class Model:\n    pass\n")
    with pytest.raises(ConfigError, match="defines no class named CustomModel"):
        models.load_model("empty")


def test_custom_model_must_be_a_torch_model_v2(model_dir):
    (model_dir / "plain.py").write_text("import torch\nclass CustomModel(torch.nn.Module):\n    pass\n")
    with pytest.raises(ConfigError, match="must subclass TorchModelV2"):
        models.load_model("plain")


def test_model_file_that_fails_to_import(model_dir):
    (model_dir / "broken.py").write_text("import not_a_module\n")
    with pytest.raises(ConfigError, match="broken.py fails to import: ModuleNotFoundError"):
        models.load_model("broken")


def test_unknown_custom_model_config_keys():
    fcnet = models.load_model("fcnet")
    models.check_model_kwargs("fcnet", fcnet, {"hiddens": [8], "activation": "relu"})
    with pytest.raises(ConfigError, match="custom_model_config.width: model 'fcnet' does not take it"):
        models.check_model_kwargs("fcnet", fcnet, {"width": 8})


def test_user_model_file_becomes_an_architecture(model_dir):
    (model_dir / "tiny.py").write_text(
        "import torch\n"
        "from ray.rllib.models.torch.torch_modelv2 import TorchModelV2\n"
        "class CustomModel(TorchModelV2, torch.nn.Module):\n"
        "    def __init__(self, obs_space, action_space, num_outputs, model_config, name, **kwargs):\n"
        "        TorchModelV2.__init__(self, obs_space, action_space, num_outputs, model_config, name)\n"
        "        torch.nn.Module.__init__(self)\n"
        "        self.kwargs = kwargs\n"
    )
    model_class = models.load_model("tiny")
    models.check_model_kwargs("tiny", model_class, {"anything": 1})  # **kwargs takes every key
    assert models.available_models() == ["tiny"]


@pytest.mark.parametrize("name, settings", [
    ("lstm", {"hiddens": [16], "cell_size": 8}),
    ("attention", {"embed_dim": 8, "memory": 3, "num_heads": 2, "num_layers": 1}),
])
def test_recurrent_models_carry_memory_through_their_state(name, settings):
    models.register_models([name])
    obs_space, action_space = gym.spaces.Box(-1, 1, (6,), np.float32), gym.spaces.Discrete(5)
    model = ModelCatalog.get_model_v2(obs_space, action_space, 5, {
        "custom_model": name, "custom_model_config": settings, "max_seq_len": 4}, framework="torch")
    assert issubclass(models.load_model(name), RecurrentNetwork)
    assert not issubclass(models.load_model("fcnet"), RecurrentNetwork)
    torch.manual_seed(0)
    batch, steps = 3, 4
    obs = torch.randn(batch, steps, 6)
    initial = [s.unsqueeze(0).repeat(batch, *([1] * s.dim())) for s in model.get_initial_state()]
    # Training path: whole sequences at once.
    flat = obs.reshape(batch * steps, 6)
    logits, state = model({"obs": flat, "obs_flat": flat}, initial, torch.full((batch,), steps))
    assert logits.shape == (batch * steps, 5) and model.value_function().shape == (batch * steps,)
    # Sampling path: one step at a time, the state carried over, gives the same outputs.
    carried, one_by_one = initial, []
    for step in range(steps):
        out, carried = model({"obs": obs[:, step], "obs_flat": obs[:, step]}, carried, torch.ones(batch, dtype=torch.int64))
        one_by_one.append(out)
    torch.testing.assert_close(torch.stack(one_by_one, 1).reshape(batch * steps, 5), logits, atol=1e-5, rtol=1e-5)
    for final, expected in zip(carried, state):
        torch.testing.assert_close(final, expected, atol=1e-5, rtol=1e-5)
    # The last step's output depends on the earlier observations (memory), not only on its own.
    alone, _ = model({"obs": obs[:, -1], "obs_flat": obs[:, -1]}, initial, torch.ones(batch, dtype=torch.int64))
    assert not torch.allclose(alone, logits.reshape(batch, steps, 5)[:, -1], atol=1e-4)


def test_recurrent_models_get_the_batched_runner_and_use_attention_the_stock_sampler(tmp_path):
    from conftest import tiny_experiment, write_yaml
    from marlkit.batched_runner import BatchedEnvRunner
    from marlkit.plan import make_plan
    from marlkit.spec import load_experiments

    for model in ({"custom_model": "lstm", "custom_model_config": {"cell_size": 8}}, {"use_lstm": True}, {}):
        experiment = tiny_experiment(config={"model": model})
        (loaded,) = load_experiments(write_yaml(tmp_path / "exp.yaml", {"exp": experiment}))
        plan = make_plan(loaded)
        assert plan.settings["env_runner_cls"] is BatchedEnvRunner and not loaded.notes and not plan.notes
    for model, reason in (({"use_attention": True}, "use_attention models"),
                          ({"use_lstm": True, "lstm_use_prev_action": True}, "LSTMs fed previous actions")):
        (loaded,) = load_experiments(write_yaml(tmp_path / "exp.yaml", {"exp": tiny_experiment(config={"model": model})}))
        plan = make_plan(loaded)
        assert plan.settings["env_runner_cls"].__name__ == "StockEnvRunner"  # RLlib's stock sampler
        assert any(f"{reason}" in note and "get RLlib's stock sampler" in note for note in plan.notes), plan.notes