"""RLlib algorithms beside PPO from YAML (issue 26): what the loader translates or refuses, and a short real run of
each off-policy and asynchronous algorithm on VMAS and Bucket Brigade."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from conftest import REPO, finish_script, read_results, run_in_process, run_train, start_script, trial_dirs, write_yaml
from envs.errors import ConfigError
from marlkit.checkpoints import load_algorithm_state
from marlkit.spec import load_experiments
from test_cli_errors import assert_one_line_error


def vmas(run: str, continuous: bool, **config) -> dict:
    return {"run": run, "env": "vmas", "stop": {"training_iteration": 2}, "checkpoint_at_end": True, "config": {
        "env_config": {"scenario": "navigation", "n_agents": 2, "max_steps": 25, "continuous_actions": continuous},
        "num_env_runners": 0, "num_envs_per_env_runner": 4, "model": {"fcnet_hiddens": [16]}, **config}}


def bucket_brigade(run: str, **config) -> dict:
    return {"run": run, "env": "bucket_brigade", "stop": {"training_iteration": 2}, "checkpoint_at_end": True,
            "config": {"env_config": {"scenario": "default", "num_agents": 3, "max_nights": 20},
                       "num_env_runners": 0, "num_envs_per_env_runner": 4, "model": {"fcnet_hiddens": [16]},
                       "multiagent": {"policies": {"learner": {"agents": "agent_0"},
                                                   "random": {"agents": ["agent_1", "agent_2"], "heuristic": "random"}}},
                       **config}}


# The settings of RLlib's tuned examples rllib/tuned_examples/{dqn/cartpole-dqn,ppo/cartpole-ppo,ppo/pendulum-ppo}.yaml
# (classic keys and all), with `framework: torch` for their `tf`.
RLLIB_TUNED_EXAMPLES = {
    "cartpole-dqn": {"env": "CartPole-v0", "run": "DQN", "stop": {"episode_reward_mean": 150, "timesteps_total": 50000},
                     "config": {"framework": "torch", "n_step": 3, "gamma": 0.95}},
    "cartpole-ppo": {"env": "CartPole-v1", "run": "PPO", "stop": {"episode_reward_mean": 150, "timesteps_total": 100000},
                     "config": {"framework": "torch", "gamma": 0.99, "lr": 0.0003, "num_workers": 1,
                                "observation_filter": "MeanStdFilter", "num_sgd_iter": 6, "vf_loss_coeff": 0.01,
                                "model": {"fcnet_hiddens": [32], "fcnet_activation": "linear", "vf_share_layers": True},
                                "enable_connectors": True}},
    "pendulum-ppo": {"env": "Pendulum-v0", "run": "PPO", "stop": {"episode_reward_mean": -500, "timesteps_total": 400000},
                     "config": {"framework": "torch", "train_batch_size": 512, "vf_clip_param": 10.0, "num_workers": 0,
                                "num_envs_per_worker": 20, "lambda": 0.1, "gamma": 0.95, "lr": 0.0003,
                                "sgd_minibatch_size": 64, "num_sgd_iter": 6, "model": {"fcnet_hiddens": [256, 256]},
                                "observation_filter": "MeanStdFilter"}},
}


def test_rllibs_tuned_examples_load_or_are_refused_in_one_line(tmp_path):
    """cartpole-dqn and cartpole-ppo load as written (classic keys translated with notes); pendulum-ppo's
    Pendulum-v0 is gone from Gymnasium 1.x: one line naming Pendulum-v1. (Both CartPole ones train in the run below.)"""
    (dqn,) = load_experiments(write_yaml(tmp_path / "dqn.yaml", {"cartpole-dqn": RLLIB_TUNED_EXAMPLES["cartpole-dqn"]}))
    assert dqn.config["n_step"] == 3 and dqn.stop["env_runners/episode_return_mean"] == 150
    (ppo,) = load_experiments(write_yaml(tmp_path / "ppo.yaml", {"cartpole-ppo": RLLIB_TUNED_EXAMPLES["cartpole-ppo"]}))
    assert ppo.config["num_env_runners"] == 1 and ppo.config["num_epochs"] == 6
    assert "cartpole-ppo.config.enable_connectors is deprecated in Ray 2.60, which ignores it; leaving it out" in ppo.notes
    with pytest.raises(ConfigError) as error:
        load_experiments(write_yaml(tmp_path / "pendulum.yaml", {"pendulum-ppo": RLLIB_TUNED_EXAMPLES["pendulum-ppo"]}))
    assert "pendulum-ppo.env: unknown env 'Pendulum-v0' (did you mean 'Pendulum-v1'?)" in str(error.value)


def load_one(tmp_path, experiment: dict):
    (loaded,) = load_experiments(write_yaml(tmp_path / "exp.yaml", {"exp": experiment}))
    return loaded


@pytest.mark.parametrize("experiment, message", [
    (vmas("BC", False), "exp.run: BC is an offline algorithm: it learns from recorded experience (config.input)"),
    (vmas("IQL", False), "exp.run: IQL is offline Implicit Q-Learning (it learns from recorded experience), not "
                         "independent Q-learning; for independent Q-learners use run: DQN"),
    (vmas("DreamerV3", False), "exp.run: DreamerV3 runs only on RLlib's new API stack"),
    (vmas("DQN", True), "exp: DQN takes Discrete actions, not Box(-1.0, 1.0, (2,), float32) (policy 'shared')"),
    (vmas("DQN", False, replay_buffer_config={"type": "EpisodeReplayBuffer"}),
     "exp.config.replay_buffer_config.type: EpisodeReplayBuffer is a buffer of RLlib's new API stack"),
    (vmas("PPO", False, buffer_size=100), "exp.config.buffer_size is a replay setting, and PPO replays no experience"),
    (bucket_brigade("DQN", env_config={"scenario": "default", "num_agents": 3, "flat_actions": False}),
     "DQN takes Discrete actions, not MultiDiscrete([10  2  2]) (policy 'learner')"),
    (bucket_brigade("PPO", env_config={"scenario": "default", "flat_actions": "yes"}),
     "exp.config.env_config: flat_actions must be true or false, got 'yes'"),
])
def test_what_cannot_train_is_a_one_line_error_at_load(tmp_path, experiment, message):
    with pytest.raises(ConfigError) as error:
        load_one(tmp_path, experiment)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_classic_replay_and_deprecated_keys_are_translated_with_notes(tmp_path):
    loaded = load_one(tmp_path, vmas("DQN", False, buffer_size=5000, prioritized_replay=False, learning_starts=100,
                                     enable_connectors=True))
    assert loaded.config["replay_buffer_config"] == {"type": "MultiAgentReplayBuffer", "capacity": 5000}
    assert loaded.config["num_steps_sampled_before_learning_starts"] == 100
    assert "enable_connectors" not in loaded.config
    assert "exp.config.enable_connectors is deprecated in Ray 2.60, which ignores it; leaving it out" in loaded.notes
    assert "exp.config.buffer_size is replay_buffer_config.capacity in Ray 2.60; using it there" in loaded.notes
    default = load_one(tmp_path, vmas("SAC", True)).config["replay_buffer_config"]
    assert default["type"] == "MultiAgentPrioritizedReplayBuffer" and default["capacity"] == 1_000_000
    impala = load_one(tmp_path, vmas("IMPALA", True))
    assert impala.config["num_gpus"] == 0 and any("RLlib's default for IMPALA is 1" in n for n in impala.notes)
    flat = load_one(tmp_path, bucket_brigade("DQN"))
    assert flat.config["env_config"]["flat_actions"] is True
    assert any("offered as Discrete(40), one action per combination" in note for note in flat.notes)


def shipped(name: str, **config) -> dict:
    """config/<name>.yaml as written but for a 2-iteration stop, 4 short games and `config` over its settings."""
    (experiment,) = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()).values()
    experiment["stop"] = {"training_iteration": 2}
    experiment["config"]["env_config"].update(num_envs=4, max_steps=25)
    experiment["config"].update(config)
    return experiment


def stock_sampler_notes(stdout: str) -> list[tuple[str, str]]:
    """(experiment, algorithm) of train.py's notes that an experiment on a batched env gets RLlib's stock sampler."""
    return re.findall(r"^note: (\S+): (\S+) experiments get RLlib's stock sampler \(the batched env runner does not "
                      r"run them\); sampling is slower$", stdout, re.M)


def test_off_policy_and_asynchronous_algorithms_train_checkpoint_resume_and_roll_out(tmp_path, ray_temp_dir,
                                                                                      monkeypatch, capsys):
    """One train.py run, 2 iterations each: the shipped DQN (Discrete VMAS) and SAC (Box VMAS) configs, DQN on Bucket
    Brigade through its flat Discrete view beside scripted agents, IMPALA (RLlib's default of 1 GPU made 0: it never
    started here) and APPO on Bucket Brigade beside scripted agents, each on the other env (SAC per Bucket Brigade
    player, APPO on Box VMAS, IMPALA on Bucket Brigade), SAC on Pendulum-v1, APPO on CartPole-v1 and RLlib's CartPole
    tuned examples as written (but for their stop and a checkpoint at the end). The replay algorithms learn from the
    2nd iteration on, sampled by the batched env runner on batched envs (IMPALA and APPO by RLlib's stock sampler,
    with a note). DQN and SAC on VMAS, IMPALA and APPO fail in their 2nd iteration (tests/fail_callback.py) after a
    checkpoint of the 1st, and `--resume` finishes them from it; meanwhile a DQN and a SAC checkpoint roll out and SAC
    is restored."""
    replay = {"num_steps_sampled_before_learning_starts": 100, "min_sample_timesteps_per_iteration": 200,
              "train_batch_size": 64}
    # (RLlib's 10 s minimum per iteration of APPO and IMPALA cut to 1 s)
    asynchronous = {"train_batch_size": 200, "rollout_fragment_length": 50, "min_time_s_per_iteration": 1}
    failing = {"dqn-vmas": shipped("vmas-navigation-dqn", **replay), "sac-vmas": shipped("vmas-navigation-sac", **replay),
               "impala-vmas": vmas("IMPALA", False, **asynchronous), "appo-bb": bucket_brigade("APPO", **asynchronous)}
    for experiment in failing.values():
        experiment.update(checkpoint_freq=1, checkpoint_at_end=True)
        experiment["config"]["callbacks"] = "fail_callback.FailInSecondIteration"
    # and each algorithm on the other env: SAC with a policy per Bucket Brigade player (the flat Discrete view),
    # APPO with VMAS's Box actions, IMPALA beside scripted Bucket Brigade players
    per_agent = bucket_brigade("SAC", **replay)
    per_agent["config"]["multiagent"] = {"policies": "per_agent"}
    first = {**failing, "dqn-bb": bucket_brigade("DQN", **replay), "sac-bb": per_agent}
    others = {"appo-vmas": vmas("APPO", True, **asynchronous), "impala-bb": bucket_brigade("IMPALA", **asynchronous),
              **{name: {**RLLIB_TUNED_EXAMPLES[name], "stop": {"training_iteration": 2}, "checkpoint_at_end": True}
                 for name in ("cartpole-dqn", "cartpole-ppo")},
              # and on gymnasium ids (RLlib's stock sampler): SAC in Box actions, APPO
              **{name: {"run": run, "env": env, "stop": {"training_iteration": 2}, "checkpoint_at_end": True,
                        "config": {"num_env_runners": 0, **settings}}
                 for name, run, env, settings in (("sac-pendulum", "SAC", "Pendulum-v1", replay),
                                                  ("appo-cartpole", "APPO", "CartPole-v1", asynchronous))}}
    # Two train.py processes at once (start-ups and Tune's waits overlap): the second goes on while the first's
    # checkpoints are resumed, restored and rolled out.
    second = start_script("train.py", "-f", str(write_yaml(tmp_path / "others.yaml", others)), "--local-dir",
                          str(tmp_path), temp_dir=ray_temp_dir / "others")
    marker = tmp_path / "fail-in-second-iteration"
    marker.touch()
    callbacks = {"PYTHONPATH": str(REPO / "tests")}
    run = run_train("-f", str(write_yaml(tmp_path / "first.yaml", first)), "--local-dir", str(tmp_path),
                    temp_dir=ray_temp_dir, env={**callbacks, "FAIL_IN_SECOND_ITERATION": str(marker)})
    assert run.returncode == 1, run.stderr[-3000:]
    failed = re.findall(r"^trial \S+/(\S+?)/\S+ failed: RuntimeError: test failure in iteration 2", run.stdout, re.M)
    assert failed == list(failing), run.stdout[-3000:]
    assert stock_sampler_notes(run.stdout) == [("impala-vmas", "IMPALA"), ("appo-bb", "APPO")]
    first_rows = {name: read_results(trial_dirs(tmp_path / name)[0]) for name in failing}
    assert all([r["training_iteration"] for r in rows] == [1] for rows in first_rows.values()), first_rows

    (sac_trial,) = trial_dirs(tmp_path / "sac-vmas")
    rollouts = {run: start_script("rollout.py", str(checkpoint), "--run", run, "--episodes", "1", "--num-workers", "0",
                                  "--num-gpus", "0", temp_dir=ray_temp_dir / f"rollout-{run}", env=callbacks)
                for run, checkpoint in (("DQN", next(trial_dirs(tmp_path / "dqn-bb")[0].glob("checkpoint_*"))),
                                        ("SAC", sac_trial / "checkpoint_000000"))}
    # (the failed experiments' file: a finished experiment costs a Tune start to find nothing to do)
    resumed = start_script("train.py", "-f", str(write_yaml(tmp_path / "failed.yaml", failing)), "--local-dir",
                           str(tmp_path), "--resume", temp_dir=ray_temp_dir / "resume", env=callbacks)
    # SAC restored from its checkpoint of iteration 1 in --local-mode (the trial in the driver): it goes on from the
    # checkpoint's counters and weights (and learns), not from scratch.
    sac_config = {key: value for key, value in failing["sac-vmas"]["config"].items() if key != "callbacks"}
    sac = write_yaml(tmp_path / "sac.yaml", {"sac-vmas": {**failing["sac-vmas"], "config": sac_config}})
    # The checkpoint's config names the callback class: restored where Python cannot import its module, one line.
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "fail_callback", None)
        refused = run_in_process(capsys, "train.py", "-f", str(sac), "--restore", str(sac_trial / "checkpoint_000000"))
    assert_one_line_error(refused, "needs the module 'fail_callback', which Python cannot import here")
    restored = run_train("-f", str(sac), "--restore", str(sac_trial / "checkpoint_000000"), "--local-mode",
                         "--local-dir", str(tmp_path / "restored"), temp_dir=ray_temp_dir / "restore", env=callbacks)
    assert restored.returncode == 0, restored.stderr[-3000:]
    rows = read_results(trial_dirs(tmp_path / "restored" / "sac-vmas")[0])
    assert [r["training_iteration"] for r in rows] == [2], "not restored from the checkpoint of iteration 1"
    row, checkpointed = rows[0], first_rows["sac-vmas"][0]
    assert row["pid"] != checkpointed["pid"]
    assert row["num_env_steps_sampled_lifetime"] > checkpointed["num_env_steps_sampled_lifetime"]
    assert "shared" in row["info"]["learner"]

    resumed = finish_script(resumed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = finish_script(second)
    assert second.returncode == 0, second.stderr[-3000:]
    assert stock_sampler_notes(second.stdout) == [("appo-vmas", "APPO"), ("impala-bb", "IMPALA")]
    trained = {"dqn-vmas": {"shared"}, "sac-vmas": {"shared"}, "dqn-bb": {"learner"}, "impala-vmas": {"shared"},
               "appo-bb": {"learner"}, "sac-bb": {"agent_0", "agent_1", "agent_2"}, "appo-vmas": {"shared"},
               "impala-bb": {"learner"}, "cartpole-dqn": {"default_policy"}, "cartpole-ppo": {"default_policy"},
               "sac-pendulum": {"default_policy"}, "appo-cartpole": {"default_policy"}}
    for name, policies in trained.items():
        (trial,) = trial_dirs(tmp_path / name)
        rows = read_results(trial)
        assert [r["training_iteration"] for r in rows] == [1, 2], name
        assert rows[-1]["num_env_steps_sampled_lifetime"] > rows[0]["num_env_steps_sampled_lifetime"] > 0, name
        assert policies <= set(rows[-1]["info"]["learner"]), (name, rows[-1]["info"])  # they learned
        assert list(trial.glob("checkpoint_*")), name
        if name in failing:  # the 2nd iteration in the resumed run's process, from the 1st's checkpoint
            assert rows[-1]["pid"] != rows[0]["pid"], name
            assert load_algorithm_state(max(trial.glob("checkpoint_*")))["training_iteration"] == 2, name
    for run, rollout in rollouts.items():
        rollout = finish_script(rollout)
        assert rollout.returncode == 0, (run, rollout.stderr[-3000:])
        assert re.search(r"^episode 0: length \d+, return \S+ ", rollout.stdout, re.M), (run, rollout.stdout)
