"""Experiment YAML loading: translation of old keys, multi-agent policy layouts, schedulers, validation."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

from conftest import REPO, tiny_experiment, write_yaml
from envs import ENVS
from envs.errors import ConfigError
from marlkit.plan import make_plan, planned_config
from marlkit.policies import PolicyLayout
from marlkit.spec import load_experiments


def load_one(tmp_path, experiment: dict):
    (loaded,) = load_experiments(write_yaml(tmp_path / "exp.yaml", {"exp": experiment}))
    return loaded


@pytest.mark.parametrize("path", sorted((REPO / "config").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    experiments = load_experiments(path)
    assert experiments and all(e.run in ("PPO", "DQN", "SAC") and e.env in ("vmas", "bucket_brigade", "unity")
                               for e in experiments)
    assert not [note for e in experiments for note in e.notes if "is called" in note]  # Ray 2.60's key names


def test_config_overrides_merge_deeply_and_are_validated():
    (loaded,) = load_experiments("config/vmas-navigation-ppo.yaml", {"num_workers": 3, "env_config": {"n_agents": 4}})
    assert loaded.config["num_env_runners"] == 3  # old names are translated in overrides too
    assert loaded.config["env_config"]["n_agents"] == 4 and loaded.config["env_config"]["scenario"] == "navigation"
    assert loaded.config["lr"] == 0.0001  # the YAML's other settings stay
    assert loaded.policy_layout.rllib_multiagent(ENVS["vmas"].make({"scenario": "navigation", "n_agents": 4}))["policies"].keys() == {"shared"}
    with pytest.raises(ConfigError, match="lrr is not an RLlib PPO setting"):
        load_experiments("config/vmas-navigation-ppo.yaml", {"lrr": 0.1})


def test_old_key_names_are_translated_with_a_note(tmp_path):
    experiment = tiny_experiment()
    config = experiment["config"]
    config["num_workers"] = config.pop("num_env_runners")
    config["sgd_minibatch_size"] = config.pop("minibatch_size")
    config["num_sgd_iter"] = config.pop("num_epochs")
    config["num_envs_per_worker"] = config.pop("num_envs_per_env_runner")
    loaded = load_one(tmp_path, experiment)
    assert loaded.config["num_env_runners"] == 0
    assert loaded.config["minibatch_size"] == 100
    assert loaded.config["num_epochs"] == 1
    assert loaded.config["num_envs_per_env_runner"] == 4
    assert not {"num_workers", "sgd_minibatch_size", "num_sgd_iter", "num_envs_per_worker"} & set(loaded.config)
    assert any("num_workers is called num_env_runners" in note for note in loaded.notes)


def test_old_and_new_name_together_is_an_error(tmp_path):
    experiment = tiny_experiment(config={"num_workers": 1})
    with pytest.raises(ConfigError, match="both 'num_workers' and its new name 'num_env_runners'"):
        load_one(tmp_path, experiment)


def test_old_stop_metric_is_translated(tmp_path):
    loaded = load_one(tmp_path, tiny_experiment(stop={"episode_reward_mean": 5, "training_iteration": 3}))
    assert loaded.stop == {"env_runners/episode_return_mean": 5, "training_iteration": 3}


def test_env_may_be_given_inside_config(tmp_path):
    experiment = tiny_experiment()
    experiment["config"]["env"] = experiment.pop("env")
    assert load_one(tmp_path, experiment).env == "vmas"


def test_batched_env_keeps_num_envs_in_step(tmp_path):
    loaded = load_one(tmp_path, tiny_experiment(config={"num_envs_per_env_runner": 8}))
    assert loaded.config["env_config"]["num_envs"] == 8
    experiment = tiny_experiment()
    del experiment["config"]["num_envs_per_env_runner"]
    experiment["config"]["env_config"]["num_envs"] = 6
    assert load_one(tmp_path, experiment).config["num_envs_per_env_runner"] == 6
    experiment["config"]["num_envs_per_env_runner"] = 3
    with pytest.raises(ConfigError, match=r"env_config.num_envs \(6\) and num_envs_per_env_runner \(3\) differ"):
        load_one(tmp_path, experiment)


@pytest.mark.parametrize("env, key, value", [
    ("vmas", "num_envs_per_env_runner", 0), ("bucket_brigade", "num_envs_per_env_runner", 0),
    ("bucket_brigade", "num_envs_per_env_runner", 2.5), ("vmas", "env_config.num_envs", -1),
])
def test_games_per_env_runner_must_be_a_whole_number(tmp_path, env, key, value):
    experiment = tiny_experiment()
    if env == "bucket_brigade":
        experiment.update(env=env)
        experiment["config"]["env_config"] = {"scenario": "default"}
    experiment["config"].pop("num_envs_per_env_runner", None)
    if key == "env_config.num_envs":
        experiment["config"]["env_config"]["num_envs"] = value
    else:
        experiment["config"][key] = value
    with pytest.raises(ConfigError, match=rf"config.{key} must be a whole number >= 1 \(games per env runner\), "
                                          rf"got {value}"):
        load_one(tmp_path, experiment)


@pytest.mark.parametrize("gpu_settings, device", [
    ({}, None),
    ({"num_env_runners": 2, "num_gpus_per_env_runner": 0.5}, "cuda"),
    ({"num_env_runners": 2, "num_gpus": 1}, None),  # the learner's GPU; env runners sample on CPU
    ({"num_env_runners": 0, "num_gpus": 1}, "cuda"),  # the trial's process samples and learns
    ({"num_env_runners": 2, "num_gpus_per_env_runner": 1, "env_config": {"device": "cpu"}}, "cpu"),
])
def test_env_device_follows_the_sampling_process_gpus(tmp_path, gpu_settings, device):
    experiment = tiny_experiment()
    env_config = {**experiment["config"]["env_config"], **gpu_settings.pop("env_config", {})}
    experiment["config"].update(gpu_settings, env_config=env_config)
    assert planned_config(load_one(tmp_path, experiment))["env_config"].get("device") == device


def test_grid_search_points_are_each_validated(tmp_path):
    experiment = tiny_experiment()
    experiment["config"]["env_config"]["scenario"] = {"grid_search": ["navigation", "balanse"]}
    with pytest.raises(ConfigError, match="unknown VMAS scenario 'balanse'.*did you mean 'balance'"):
        load_one(tmp_path, experiment)


@pytest.mark.parametrize("settings, message", [
    ({"minibatch_size": 400}, r"`minibatch_size` \(400\) must be <= `train_batch_size` \(200\)"),
    ({"use_gae": False}, "Episode truncation is not supported without a value function"),
])
def test_settings_rllib_refuses_are_one_line_errors_at_load(tmp_path, settings, message):
    """RLlib's own validation of the algorithm config runs at load time, before Ray starts: what the trial would
    refuse when it builds its algorithm is a one-line error naming the experiment's config."""
    with pytest.raises(ConfigError, match=r"exp\.config: RLlib refuses these settings: ValueError: " + message):
        load_one(tmp_path, tiny_experiment(config=settings))


def test_new_api_stack_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="old API stack"):
        load_one(tmp_path, tiny_experiment(config={"enable_rl_module_and_learner": True}))


def test_scheduler_blocks_build_tune_schedulers(tmp_path):
    asha = load_one(tmp_path, tiny_experiment(scheduler={
        "type": "asha", "metric": "env_runners/episode_return_mean", "mode": "max", "grace_period": 2, "max_t": 10,
    }))
    assert isinstance(asha.build_scheduler(), ASHAScheduler)
    pbt = load_one(tmp_path, tiny_experiment(scheduler={
        "type": "pbt", "metric": "env_runners/episode_return_mean", "mode": "max", "perturbation_interval": 2,
        "hyperparam_mutations": {"lr": {"loguniform": [1e-5, 1e-2]}, "num_epochs": [1, 2, 4]},
    }))
    scheduler = pbt.build_scheduler()
    assert isinstance(scheduler, PopulationBasedTraining)
    assert scheduler._hyperparam_mutations["num_epochs"] == [1, 2, 4]
    with pytest.raises(ConfigError, match="needs `metric`"):
        load_one(tmp_path, tiny_experiment(scheduler={"type": "asha"}))
    with pytest.raises(ConfigError, match="scheduler.grace is not a asha setting.*did you mean 'grace_period'"):
        load_one(tmp_path, tiny_experiment(scheduler={"type": "asha", "metric": "m", "mode": "max", "grace": 1}))


def test_wandb_block(tmp_path):
    assert load_one(tmp_path, tiny_experiment(wandb={"project": "p", "mode": "offline"})).wandb == {"project": "p", "mode": "offline"}
    with pytest.raises(ConfigError, match="wandb.mode must be one of online, offline, disabled"):
        load_one(tmp_path, tiny_experiment(wandb={"mode": "offlien"}))
    # a union-typed key is named as written (exp.wandb), not by the member type pydantic tried (exp.wandb.bool)
    with pytest.raises(ConfigError, match=r"exp\.wandb must be a mapping \(project, mode, group, tags, ...\) or "
                                          r"true, got 'offline'$"):
        load_one(tmp_path, tiny_experiment(wandb="offline"))


@pytest.fixture(scope="module")
def three_agents():
    env = ENVS["vmas"].make({"scenario": "navigation", "n_agents": 3})
    yield env
    env.close()


def test_shared_layout_maps_every_agent_to_one_policy(three_agents):
    block = PolicyLayout.parse(None).rllib_multiagent(three_agents)
    assert list(block["policies"]) == ["shared"]
    spec = block["policies"]["shared"]
    assert spec.observation_space.shape == (18,) and spec.action_space.shape == (2,)
    assert {block["policy_mapping_fn"](a) for a in three_agents.possible_agents} == {"shared"}


def test_per_agent_layout(three_agents):
    block = PolicyLayout.parse({"policies": "per_agent"}).rllib_multiagent(three_agents)
    assert sorted(block["policies"]) == ["agent_0", "agent_1", "agent_2"]
    assert block["policy_mapping_fn"]("agent_2") == "agent_2"


def test_named_layout_matches_patterns_in_order(three_agents):
    layout = PolicyLayout.parse({
        "policies": {"leader": {"agents": "agent_0", "config": {"lr": 1e-4}}, "followers": {"agents": ["agent_*"]}},
        "policies_to_train": ["followers"],
    })
    block = layout.rllib_multiagent(three_agents)
    assert [block["policy_mapping_fn"](a) for a in three_agents.possible_agents] == ["leader", "followers", "followers"]
    assert block["policies"]["leader"].config == {"lr": 1e-4}
    assert block["policies_to_train"] == ["followers"]


def test_named_layout_errors(three_agents):
    with pytest.raises(ConfigError, match="policies.ghost matches none of the env's agents"):
        PolicyLayout.parse({"policies": {"all": {"agents": "agent_*"}, "ghost": {"agents": "x_*"}}}).rllib_multiagent(three_agents)
    with pytest.raises(ConfigError, match="policies_to_train names 'nobody'"):
        PolicyLayout.parse({"policies": {"all": {"agents": "*"}}, "policies_to_train": ["nobody"]})
    with pytest.raises(ConfigError, match="needs `agents`"):
        PolicyLayout.parse({"policies": {"all": {}}})
    with pytest.raises(ConfigError, match="multiagent.policy is not a known key"):
        PolicyLayout.parse({"policy": "shared"})


def test_agents_with_different_spaces_cannot_share_a_policy():
    class TwoKinds:
        possible_agents = ["a", "b"]
        observation_spaces = {"a": gym.spaces.Box(-1, 1, (4,)), "b": gym.spaces.Box(-1, 1, (6,))}
        action_spaces = {"a": gym.spaces.Discrete(3), "b": gym.spaces.Discrete(3)}

    with pytest.raises(ConfigError, match="agents 'a' and 'b' share policy 'shared' but have different spaces"):
        PolicyLayout.parse({"policies": "shared"}).rllib_multiagent(TwoKinds())


@pytest.mark.parametrize("curriculum, message", [
    ({"stages": [{"env_config": {"pos_shaping_factor": 1}}]}, "curriculum must be a mapping with at least two stages"),
    ({"stages": [{"env_config": {"pos_shaping_factor": 1}}, {"env_config": {}}], "metrik": "x"},
     "curriculum.metrik is not a curriculum key (did you mean 'metric'?)"),
    ({"stages": [{"env_config": {"pos_shaping_factor": 1}}, {"env_config": {}}]}, "stages[0].until must be the metric"),
    ({"stages": [{"env_config": {}, "until": 1}, {"env_config": {}, "until": 2}]}, "is the last stage; it has no 'until'"),
    ({"stages": [{"env_config": {}, "until": 1}, {"env_config": {"pos_shaping": 0}}]},
     "stages[1].env_config: VMAS scenario 'navigation' has no parameter 'pos_shaping' that can change"),
    # a number inside grid_search crashed Tune's grid sampler; a list would run a grid inside one stage
    ({"stages": [{"env_config": {"pos_shaping_factor": {"grid_search": 0.5}}, "until": 1}, {"env_config": {}}]},
     "curriculum.stages[0].env_config.pos_shaping_factor: a stage sets fixed values; grid_search belongs in "
     "config.env_config"),
    ({"stages": [{"env_config": {}, "until": 1}, {"env_config": {"pos_shaping_factor": {"grid_search": [0, 1]}}}]},
     "curriculum.stages[1].env_config.pos_shaping_factor: a stage sets fixed values"),
])
def test_bad_curriculum(tmp_path, curriculum, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_one(tmp_path, tiny_experiment(curriculum=curriculum))


def test_curriculum_starts_at_its_first_stage_and_needs_an_env_with_set_task(tmp_path):
    stages = [{"env_config": {"pos_shaping_factor": 0.5}, "until": 1}, {"env_config": {"pos_shaping_factor": 0}}]
    loaded = load_one(tmp_path, tiny_experiment(curriculum={"stages": stages}))
    assert loaded.config["env_config"]["pos_shaping_factor"] == 0.5
    assert loaded.curriculum == {"metric": "env_runners/episode_return_mean", "stages": stages}
    bucket_brigade = {"run": "PPO", "env": "bucket_brigade", "config": {"env_config": {"scenario": "default"}},
                      "curriculum": {"stages": [{"env_config": {}, "until": 1}, {"env_config": {}}]}}
    with pytest.raises(ConfigError, match="env 'bucket_brigade' has no task parameters that change while it runs"):
        load_one(tmp_path, bucket_brigade)


@pytest.mark.parametrize("run, settings, reason", [
    ("APPO", {}, "APPO experiments"), ("PPO", {"use_gae": False, "batch_mode": "complete_episodes"}, "use_gae: false"),
    ("PPO", {"callbacks": "pid_callback.RecordEpisodePid"}, "user callbacks with per-episode hooks (on_episode_start)"),
])
def test_experiments_the_batched_runner_cannot_serve_get_the_stock_sampler_with_a_note(tmp_path, run, settings, reason):
    plan = make_plan(load_one(tmp_path, tiny_experiment(run=run, config=settings)))
    assert plan.settings["env_runner_cls"].__name__ == "StockEnvRunner"  # RLlib's stock sampler
    assert any(reason in note and "get RLlib's stock sampler" in note for note in plan.notes), plan.notes
    assert make_plan(load_one(tmp_path, tiny_experiment())).settings["env_runner_cls"].__name__ == "BatchedEnvRunner"


def test_callbacks_without_per_episode_hooks_keep_the_batched_runner(tmp_path):
    plan = make_plan(load_one(tmp_path, tiny_experiment(config={"callbacks": "weights_callback.RunnerWeightsMatch"})))
    assert plan.settings["env_runner_cls"].__name__ == "BatchedEnvRunner" and not plan.notes


def test_scripted_policies_draw_their_own_random_streams():
    from envs.bucket_brigade.env import BucketBrigadeBatch
    from marlkit.policies import ScriptedPolicy

    act = BucketBrigadeBatch({}).scripted_policies["random"]
    obs = np.zeros((64, 47), dtype=np.float32)
    space, actions = gym.spaces.Box(0, 1, (47,)), gym.spaces.MultiDiscrete([10, 2, 2])

    def drawn(policy_id, worker_index):
        config = {"act": act, "seed": 3, "__policy_id": policy_id, "worker_index": worker_index}
        return ScriptedPolicy(space, actions, config).compute_actions(obs)[0]

    assert np.array_equal(drawn("random_a", 1), drawn("random_a", 1))  # seeded: reproducible
    assert not np.array_equal(drawn("random_a", 1), drawn("random_b", 1))
    assert not np.array_equal(drawn("random_a", 1), drawn("random_a", 2))


def test_the_readme_experiment_loads_and_its_mistake_gives_the_line_shown(tmp_path):
    """The README's minimal experiment, saved as my.yaml, loads as written; with `lr` misspelt the loader's error is
    the line the README shows."""
    readme = (REPO / "README.md").read_text()
    experiment_yaml = re.search(r"Save as `my.yaml`:\n\n```yaml\n(.*?)```", readme, re.S)[1]
    (tmp_path / "my.yaml").write_text(experiment_yaml)
    (loaded,) = load_experiments(tmp_path / "my.yaml")
    assert loaded.name == "my-first-experiment" and loaded.config["lr"] == {"grid_search": [0.0001, 0.0003]}

    (tmp_path / "my.yaml").write_text(experiment_yaml.replace("    lr:", "    lrr:"))
    shown = re.search(r"\n    (error: my.yaml: .*)\n", readme)[1]
    with pytest.raises(ConfigError) as error:
        load_experiments(tmp_path / "my.yaml")
    assert f"error: {error.value}".replace(str(tmp_path / "my.yaml"), "my.yaml") == shown
