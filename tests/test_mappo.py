"""MAPPO as one line of YAML (marlkit/mappo.py): train.py trains VMAS, Bucket Brigade and the Unity stand-in game with
`multiagent.critic: centralized` and rollout.py rolls the checkpoints out; the stock sampler's joint input for agents
that finished earlier; bad input is one line. The batched sampler's MAPPO rows, values, advantages and loss are
checked in test_batched_runner.py (the `*_mappo` cases)."""

from __future__ import annotations

import pickle
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.policy.sample_batch import SampleBatch

from conftest import REPO, processes_mentioning, ray_session_folder, read_results, run_script, tiny_experiment, trial_dirs, write_yaml
from marlkit.checkpoints import load_algorithm_state
from envs.errors import ConfigError
from marlkit.mappo import CRITIC_OBS, CRITIC_TARGETS, CRITIC_WEIGHTS, CentralCriticPPOPolicy
from marlkit.plan import make_plan
from marlkit.spec import load_experiments, parse_experiment
from test_cli_errors import assert_one_line_error

SMALL = {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1, "num_env_runners": 0}


def shipped(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())[name]


def vmas_experiment() -> dict:
    experiment = shipped("vmas-balance-mappo")
    experiment["config"].update(SMALL, num_envs_per_env_runner=4)
    experiment["config"]["env_config"]["max_steps"] = 25
    experiment["config"]["model"]["custom_model_config"] = {"hiddens": [16], "critic_hiddens": [32]}
    return experiment


def bucket_brigade_experiment() -> dict:
    experiment = shipped("bucket-brigade-ppo")  # a learner among scripted random and firefighter neighbours
    experiment["config"].update(SMALL, num_envs_per_env_runner=8)
    experiment["config"]["env_config"]["max_nights"] = 10
    experiment["config"]["multiagent"]["critic"] = "centralized"
    return experiment


def unity_experiment(log_folder: str) -> dict:
    experiment = shipped("dodgeball-ppo-fcnet")  # RLlib's stock sampler: the critic's input comes from postprocessing
    experiment["config"].update(SMALL)
    experiment["config"]["env_config"]["file_name"] = str(REPO / "envs/unity/standin/StandInDodgeball.x86_64")
    experiment["config"]["env_config"]["parameters"]["episode_length"] = 40
    experiment["config"]["env_config"]["log_folder"] = log_folder  # marks this test's games
    experiment["config"]["multiagent"] = {"critic": "centralized"}
    return experiment


# case -> (experiment, trained policy id, its agents, every agent of the game, the widest observation)
CASES = {
    "vmas": (vmas_experiment, "shared", 3, 3, 16),
    "bucket_brigade": (bucket_brigade_experiment, "learner", 1, 4, None),
    "unity": (unity_experiment, "Dodgeball", 4, 4, None),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """case -> trial folder of a two-iteration run with a centralised critic, checkpointed at the end: every case an
    experiment of one train.py run (one process and Ray start)."""
    root = tmp_path_factory.mktemp("mappo")
    experiments = {f"mappo-{case}": make(str(root / "game-logs")) if case == "unity" else make()
                   for case, (make, *_) in CASES.items()}
    config = write_yaml(root / "exp.yaml", experiments)
    with ray_session_folder() as temp_dir:
        run = run_script("train.py", "-f", str(config), "--stop", "{training_iteration: 2}", "--checkpoint-at-end",
                         "--local-dir", str(root / "results"), temp_dir=temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not processes_mentioning(str(root / "game-logs")), "games left running after train.py ended"
    return {case: trial_dirs(root / "results" / f"mappo-{case}")[0] for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_centralised_critic_trains_checkpoints_and_rolls_out(trained, case, tmp_path):
    """Two iterations learn with the value loss of the centralised critic; the checkpoint holds the critic (joint input
    of every agent of the game, one value per agent of the policy) and no per-agent value branch; rollout.py plays an
    episode from it with the actor alone (VMAS: with 4 agents instead of the 3 the critic was built for)."""
    _, policy_id, own, agents, width = CASES[case]
    trial = trained[case]
    results = read_results(trial)
    assert [r["training_iteration"] for r in results] == [1, 2]
    stats = results[-1]["info"]["learner"][policy_id]["learner_stats"]
    assert np.isfinite(stats["vf_loss"]) and stats["vf_loss"] > 0 and np.isfinite(stats["vf_explained_var"])
    (checkpoint,) = sorted(trial.glob("checkpoint_*"))
    weights = load_algorithm_state(checkpoint)["worker"]["policy_states"][policy_id]["weights"]
    assert weights["central_critic.head.weight"].shape[0] == own
    joint_size = weights["central_critic.trunk.0.weight"].shape[1]
    assert joint_size % agents == 0 and (width is None or joint_size == agents * (width + 1))
    assert not [key for key in weights if key.startswith("value_")]
    more_agents = ["--config", "{env_config: {n_agents: 4}}"] if case == "vmas" else []
    with ray_session_folder() as temp_dir:
        run = run_script("rollout.py", str(checkpoint), "--run", "PPO", "--episodes", "1", "--num-workers", "0",
                         "--out", str(tmp_path / "rollout.pkl"), *more_agents, temp_dir=temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "rollout.pkl", "rb") as file:
        (episode,) = pickle.load(file)
    observations, actions = episode[0][0], episode[0][1]
    assert len(episode) > 0 and sorted(observations) == sorted(actions)
    if case == "vmas":
        assert sorted(actions) == [f"agent_{i}" for i in range(4)]


def test_restoring_a_checkpoint_with_the_other_kind_of_critic_is_one_line(trained, tmp_path):
    config = write_yaml(tmp_path / "exp.yaml", {"per-agent": tiny_experiment(config={
        "env_config": {"scenario": "balance", "n_agents": 3, "max_steps": 25}})})
    checkpoint = sorted(trained["vmas"].glob("checkpoint_*"))[-1]
    run = run_script("train.py", "-f", str(config), "--restore", str(checkpoint), "--local-dir", str(tmp_path))
    assert_one_line_error(run, "trained with a centralised critic", "per-agent.config.multiagent.critic is decentralized")
    assert not (tmp_path / "per-agent").exists()


def standalone_policy(critic_hiddens=(8,)) -> CentralCriticPPOPolicy:
    """A centralised-critic policy of agent "b" in a game of agents a, b, c; a and c observe 2 numbers, b 3."""
    config = PPOConfig().api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
    config = config.to_dict()
    config["model"] = {**config["model"], "custom_model": None, "fcnet_hiddens": [4],
                       "custom_model_config": {"critic_hiddens": list(critic_hiddens)}}
    config["central_critic"] = {"agents": ["a", "b", "c"], "own": [1], "width": 3}
    return CentralCriticPPOPolicy(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), config)


def test_stock_sampler_joint_input_marks_agents_without_a_row_absent():
    """Postprocessing builds each row's joint input from the rows of every agent with the same env step `t`: an agent
    that finished earlier (c) or joined later (a) contributes zeros and a 0 presence flag there; smaller observations
    are zero-padded to the widest. Values are the critic's output for this agent; value targets follow GAE."""
    policy = standalone_policy()
    torch.manual_seed(0)
    own = SampleBatch({
        SampleBatch.OBS: np.arange(12, dtype=np.float32).reshape(4, 3), SampleBatch.NEXT_OBS: np.ones((4, 3), np.float32),
        SampleBatch.T: np.arange(4), SampleBatch.REWARDS: np.ones(4, np.float32),
        SampleBatch.TERMINATEDS: np.array([0, 0, 0, 1], bool), SampleBatch.TRUNCATEDS: np.zeros(4, bool),
        SampleBatch.AGENT_INDEX: np.full(4, 7),
    })
    late = SampleBatch({SampleBatch.OBS: np.full((2, 2), 5.0, np.float32), SampleBatch.T: np.array([2, 3])})
    early = SampleBatch({SampleBatch.OBS: np.full((2, 2), -3.0, np.float32), SampleBatch.T: np.array([0, 1])})
    episode = types.SimpleNamespace(_agent_to_index={"a": 3, "b": 7, "c": 1})
    out = policy.postprocess_trajectory(own, {"a": ("p", None, late), "c": ("p", None, early)}, episode)
    joint = out[CRITIC_OBS]
    expected = np.zeros((4, 12), np.float32)
    expected[2:, 0:2] = 5.0  # a, from t = 2
    expected[:, 3:6] = own[SampleBatch.OBS]  # b: itself
    expected[:2, 6:8] = -3.0  # c, until t = 1
    expected[2:, 9] = 1.0
    expected[:, 10] = 1.0
    expected[:2, 11] = 1.0
    np.testing.assert_array_equal(joint, expected)
    with torch.no_grad():
        values = policy.model.central_critic(torch.as_tensor(expected))[:, 0].numpy()
    np.testing.assert_allclose(out[SampleBatch.VF_PREDS], values, rtol=1e-6)
    gamma, lambda_ = policy.config["gamma"], policy.config["lambda"]
    advantages, running = np.zeros(4), 0.0
    for t in reversed(range(4)):
        following = values[t + 1] if t < 3 else 0.0  # terminated at the end: bootstrap 0
        running = 1.0 + gamma * following - values[t] + gamma * lambda_ * running
        advantages[t] = running
    np.testing.assert_allclose(out["advantages"], advantages, rtol=1e-5)
    np.testing.assert_allclose(out[CRITIC_TARGETS][:, 0], advantages + values, rtol=1e-5)
    np.testing.assert_array_equal(out[CRITIC_WEIGHTS], np.ones((4, 1)))
    assert list(policy.model.central_critic.trunk[0].weight.shape) == [8, 12]  # critic_hiddens [8]


@pytest.mark.parametrize("change, message", [
    ({"multiagent": {"critic": "central"}}, "config.multiagent.critic: 'central' is not a critic (did you mean 'centralized'?)"),
    ({"use_gae": False}, "x.config.use_gae: false does not go with multiagent.critic: centralized"),
    ({"model": {"custom_model_config": {"hiddens": [8], "critic_hiddens": [0]}}},
     "x.config.model.custom_model_config.critic_hiddens must be a list of layer sizes such as [256, 256], got [0]"),
    ({"train_batch_size": 10**10}, "x.config.multiagent.critic: the centralised critic of policy 'shared' reads 3 agents "
                                   "x 17 inputs; its training columns for train_batch_size 10000000000 would take"),
])
def test_bad_centralised_critic_settings_are_one_line_config_errors(change, message):
    experiment = shipped("vmas-balance-mappo")
    for key, value in change.items():
        experiment["config"][key] = {**experiment["config"][key], **value} if key == "multiagent" else value
    with pytest.raises(ConfigError) as error:
        make_plan(parse_experiment("x", experiment))  # the critic's memory is the run-time plan's check
    assert message in str(error.value) and "\n" not in str(error.value)


def test_centralised_critic_is_for_ppo_and_critic_hiddens_needs_it():
    appo = {**shipped("vmas-balance-mappo"), "run": "APPO"}
    with pytest.raises(ConfigError, match="x.config.multiagent.critic: centralized is built for PPO .MAPPO. and SAC .MASAC., not APPO"):
        parse_experiment("x", appo)
    per_agent = shipped("vmas-balance-ppo")
    per_agent["config"]["model"]["custom_model_config"]["critic_hiddens"] = [64]
    with pytest.raises(ConfigError, match="critic_hiddens sizes a centralised critic; it needs config.multiagent.critic"):
        parse_experiment("x", per_agent)
    assert load_experiments(REPO / "config" / "vmas-balance-mappo.yaml")[0].policy_layout.critic == "centralized"


def test_a_typo_in_the_critic_is_one_line_from_train_py(tmp_path):
    experiment = vmas_experiment()
    experiment["config"]["multiagent"]["critic"] = "central"
    run = run_script("train.py", "-f", str(write_yaml(tmp_path / "x.yaml", {"x": experiment})))
    assert_one_line_error(run, "config.multiagent.critic: 'central' is not a critic (did you mean 'centralized'?)")
