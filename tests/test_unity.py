"""The Unity path: the real mlagents_envs (gRPC) driving the stand-in game, the RLlib env, Xvfb, faults, errors.

The stand-in game (envs/unity/standin/) is launched and driven exactly like a Unity player build.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import time
import uuid

import gymnasium as gym
import numpy as np
import pytest
import yaml
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from conftest import (REPO, finish_script, processes_mentioning, read_results, require_system_part, run_script,
                      run_train, start_script, trial_dirs, wait_until_gone, write_yaml, xvfb_missing)
from envs.unity import pb_compat, unity_env
from envs.unity.unity_env import GameError, UnityEnv, check_config
from marlkit.checkpoints import load_algorithm_state
from envs.errors import ConfigError
from marlkit.plan import make_plan
from marlkit.spec import load_experiments

GAME = str(REPO / "envs" / "unity" / "standin" / "StandInDodgeball.x86_64")
TEAM0, TEAM1 = "Dodgeball?team=0", "Dodgeball?team=1"


def game_processes(env: UnityEnv) -> list[int]:
    return processes_mentioning(f"--mlagents-port\x00{unity_env.BASE_PORT + env.worker_id}")


@pytest.fixture
def make_env():
    """UnityEnv factory; every env is closed after the test and its game must be gone."""
    made = []

    def make(**config):
        env = UnityEnv({"file_name": GAME, "no_graphics": True, **config})
        made.append(env)
        return env

    yield make
    for env in made:
        port_processes = game_processes(env)
        env.close()
        deadline = time.monotonic() + 15
        while any(pid in game_processes(env) for pid in port_processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not game_processes(env), f"game of worker {env.worker_id} still running"


def test_protobuf_modules_load_under_the_stacks_protobuf():
    import google.protobuf

    pb_compat.install()
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto

    assert int(google.protobuf.__version__.split(".")[0]) >= 5
    message = UnityRLOutputProto()
    message.agentInfos["B"].value.extend([AgentInfoProto(id=3, reward=1.5, action_mask=[True, False])])
    again = UnityRLOutputProto.FromString(message.SerializeToString())
    assert again.agentInfos["B"].value[0].id == 3 and list(again.agentInfos["B"].value[0].action_mask) == [True, False]


def test_spaces_come_from_the_games_behavior_specs(make_env):
    env = make_env()
    assert env.possible_agents == [f"{TEAM0}_1", f"{TEAM0}_2", f"{TEAM1}_3", f"{TEAM1}_4"]
    obs_space = env.observation_spaces[f"{TEAM1}_3"]
    assert obs_space == gym.spaces.Tuple((gym.spaces.Box(-np.inf, np.inf, (12,), np.float32),
                                          gym.spaces.Box(-np.inf, np.inf, (16, 16, 1), np.float32)))  # HWC
    assert env.action_spaces[f"{TEAM0}_1"] == gym.spaces.Tuple((gym.spaces.Box(-1, 1, (2,), np.float32),
                                                                gym.spaces.Discrete(2)))
    vector_only = make_env(observations="vector")
    assert vector_only.observation_spaces[f"{TEAM0}_1"] == gym.spaces.Box(-np.inf, np.inf, (12,), np.float32)
    check_multiagent_environments(vector_only)


def test_action_and_observation_specs_map_to_rllib_spaces():
    pb_compat.install()
    from mlagents_envs.base_env import ActionSpec, ObservationSpec, DimensionProperty, ObservationType

    assert unity_env.action_space(ActionSpec(3, ())) == gym.spaces.Box(-1, 1, (3,), np.float32)
    assert unity_env.action_space(ActionSpec(0, (5,))) == gym.spaces.Discrete(5)
    assert unity_env.action_space(ActionSpec(0, (3, 3, 2))) == gym.spaces.MultiDiscrete([3, 3, 2])
    assert unity_env.action_space(ActionSpec(2, (3, 2))) == gym.spaces.Tuple(
        (gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.MultiDiscrete([3, 2])))
    camera = ObservationSpec((3, 84, 64), (DimensionProperty.UNSPECIFIED,) * 3, ObservationType.DEFAULT, "Camera")
    assert unity_env.observation_space(camera).shape == (84, 64, 3)  # channels last
    assert unity_env.behavior_policy("Striker?team=1_12") == "Striker"
    assert unity_env.behavior_policy("Walker_3") == "Walker"


def play_episode(env: UnityEnv, action) -> tuple[int, dict, dict, dict]:
    obs, infos = env.reset()
    returns, steps, ended = {}, 0, {}
    while True:
        obs, rewards, terminated, truncated, infos = env.step({agent: action(agent) for agent in obs})
        steps += 1
        for agent, reward in rewards.items():
            returns[agent] = returns.get(agent, 0.0) + reward
        for agent in obs:
            if terminated.get(agent) or truncated.get(agent):
                ended[agent] = "terminated" if terminated.get(agent) else "truncated"
        if terminated["__all__"] or truncated["__all__"]:
            return steps, returns, ended, infos


def test_parameters_reach_the_game_and_interrupted_episodes_truncate(make_env, tmp_path):
    env = make_env(parameters={"episode_length": 5, "hit_probability": 0}, log_folder=str(tmp_path / "logs"))
    for _ in range(2):
        steps, returns, ended, _ = play_episode(env, lambda agent: (np.zeros(2, np.float32), 0))
        assert steps == 5  # nobody can be hit: every episode is interrupted after episode_length steps
        assert set(ended.values()) == {"truncated"} and len(ended) == 4
        assert all(value == 0 for value in returns.values())
    (log,) = (tmp_path / "logs").glob("Player-*.log")
    assert log.name == f"Player-{env.worker_id}.log" and "StandInDodgeball starting" in log.read_text()


def test_agents_finish_at_different_times_with_group_rewards_and_masks(make_env):
    env = make_env(parameters={"hit_probability": 1, "agents_per_team": 3, "episode_length": 200}, seed=3)
    obs, infos = env.reset()
    assert len(obs) == 6 and all(info["action_mask"].tolist() == [False, False] for info in infos.values())
    throw = lambda agent: (np.zeros(2, np.float32), 1)  # noqa: E731
    obs, rewards, terminated, truncated, infos = env.step({agent: throw(agent) for agent in obs})
    still_in = [agent for agent in obs if agent not in terminated]
    assert all(infos[agent]["action_mask"].tolist() == [False, True] for agent in still_in)  # throw recharging
    steps, returns, ended, _ = play_episode(env, throw)
    assert set(ended.values()) == {"terminated"}
    winners = [agent for agent, value in returns.items() if value > 0.5]
    losers = [agent for agent, value in returns.items() if value < -0.05]
    assert winners and losers, returns
    assert len({agent.split("_")[0] for agent in winners}) == 1  # the group reward +1 went to one team


def test_action_masks_in_observations(make_env):
    env = make_env(action_masks=True, observations="vector", parameters={"hit_probability": 0})
    space = env.observation_spaces[f"{TEAM0}_1"]
    assert isinstance(space, gym.spaces.Dict) and space["action_mask"].shape == (2,)
    check_multiagent_environments(env)
    obs, _ = env.reset()
    assert obs[f"{TEAM0}_1"]["action_mask"].tolist() == [1.0, 1.0]
    obs, *_ = env.step({agent: (np.zeros(2, np.float32), 1) for agent in obs})
    assert all(o["action_mask"].tolist() == [1.0, 0.0] for o in obs.values())  # throw recharging: not allowed


def test_rendering_game_gets_its_own_xvfb_which_stops_with_the_env(make_env, monkeypatch):
    require_system_part(xvfb_missing())
    monkeypatch.delenv("DISPLAY", raising=False)
    env = make_env(no_graphics=False, display="auto", width=320, height=240)
    xvfb_pid = env._xvfb.proc.pid
    assert os.environ["DISPLAY"] and processes_mentioning("Xvfb") and os.path.exists(f"/proc/{xvfb_pid}")
    play_episode(env, lambda agent: (np.zeros(2, np.float32), 1))
    env.close()
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{xvfb_pid}") or open(f"/proc/{xvfb_pid}/stat").read().split()[2] == "Z"


@pytest.mark.parametrize("fault, message", [
    ("crash_at_start", "failed at start: Environment shut down with return code 3"),
    ("version_mismatch", "failed at start: The communication API version is not compatible"),
])
def test_games_that_fail_at_start_give_one_line_errors(fault, message, monkeypatch, tmp_path):
    monkeypatch.setenv("STANDIN_FAULT", fault)
    logs = str(tmp_path / "game-logs")  # in the game's command line: marks this test's game
    with pytest.raises(GameError, match=message):
        UnityEnv({"file_name": GAME, "no_graphics": True, "log_folder": logs})
    # mlagents_envs gives a refused game no time to quit (it waits 0 s, then kills it without waiting): a few
    # seconds' grace for the kill, then no game may be left
    deadline = time.monotonic() + 10
    while processes_mentioning(logs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_mentioning(logs)


def test_crash_and_hang_mid_episode(make_env, monkeypatch):
    monkeypatch.setenv("STANDIN_FAULT", "crash_at_step:3")
    env = make_env()
    env.reset()
    with pytest.raises(GameError, match="failed at step: Environment shut down with return code 3"):
        for _ in range(3):
            env.step({})
    monkeypatch.setenv("STANDIN_FAULT", "hang_at_step:2")
    env = make_env(timeout_wait=10)
    env.reset()
    start = time.monotonic()
    with pytest.raises(GameError, match="did not answer within timeout_wait=10 s at step"):
        for _ in range(2):
            env.step({})
    assert time.monotonic() - start < 40 and not game_processes(env)


def test_the_game_quits_quietly_when_the_connection_drops(make_env, tmp_path, capfd):
    """The trainer's gRPC server vanishes while the game waits for its reply (its process died, or a close raced the
    last exchange): the game ends with exit code 0 and a log line, no traceback."""
    env = make_env(log_folder=str(tmp_path / "logs"))
    env.reset()
    game = env._unity._process  # mlagents_envs 1.1.0 keeps the game's Popen here
    env._unity._communicator.server.stop(None)
    assert game.wait(timeout=20) == 0
    (log,) = (tmp_path / "logs").glob("Player-*.log")
    assert re.search(r"^connection closed by Python: [A-Z_]+$", log.read_text(), re.M), log.read_text()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "RpcError" not in out + err, err


def test_a_port_taken_meanwhile_is_retried(make_env, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        busy_id = taken.getsockname()[1] - unity_env.BASE_PORT
        ids = iter([busy_id])
        real = unity_env.free_worker_id
        monkeypatch.setattr(unity_env, "free_worker_id", lambda: next(ids, None) or real())
        hooks = exit_hooks_registered(monkeypatch)
        env = make_env()
        assert env.worker_id != busy_id
    # mlagents registers its close at exit first thing: the refused game's hook would print a traceback at exit.
    unity_hooks = [hook for hook in hooks if type(getattr(hook, "__self__", None)).__name__ == "UnityEnvironment"]
    assert [hook.__self__ is env._unity for hook in unity_hooks] == [True]


def exit_hooks_registered(monkeypatch) -> list:
    """The functions registered with atexit from now on and still registered."""
    hooks, register, unregister = [], atexit.register, atexit.unregister
    monkeypatch.setattr(atexit, "register", lambda hook, *args, **kwargs: (hooks.append(hook),
                                                                            register(hook, *args, **kwargs))[1])
    monkeypatch.setattr(atexit, "unregister", lambda hook: (hooks.remove(hook) if hook in hooks else None,
                                                            unregister(hook))[1])
    return hooks


def test_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="env_config.file_name is required"):
        check_config({})
    with pytest.raises(ConfigError, match="no such file"):
        check_config({"file_name": str(tmp_path / "Game.x86_64")})
    not_executable = tmp_path / "Game.x86_64"
    not_executable.write_text("")
    with pytest.raises(ConfigError, match="is not executable; run: chmod \\+x"):
        check_config({"file_name": str(not_executable)})
    with pytest.raises(ConfigError, match="env_config.no_grafics is not a Unity setting"):
        check_config({"file_name": GAME, "no_grafics": True})
    with pytest.raises(ConfigError, match="display must be one of auto, xvfb, none"):
        check_config({"file_name": GAME, "display": "x11"})
    for key, value, what in (("timeout_wait", "junk", "a whole number of seconds > 0"), ("timeout_wait", 0, "a whole"),
                             ("width", 2.5, "a whole number of pixels"), ("seed", -1, "a whole number >= 0"),
                             ("time_scale", "fast", "a number > 0"), ("no_graphics", "yes", "true or false")):
        with pytest.raises(ConfigError, match=f"^env_config.{key} must be {what}.*, got {value!r}$"):
            check_config({"file_name": GAME, key: value})
    check_config({"file_name": GAME, "timeout_wait": 30.0, "width": 320, "seed": 0, "time_scale": 1.5})
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="no display: install Xvfb"):
        check_config({"file_name": GAME, "no_graphics": False})


@pytest.mark.parametrize("fault, settings, message", [
    ("", {}, "config.multiagent.policies.nobody matches none of the env's agents"),
    ("crash_at_start", {}, "refused these settings: "),
    ("", {"timeout_wait": {"grid_search": ["junk"]}}, "env_config.timeout_wait must be a whole number of seconds > 0, "
                                                       "got 'junk'"),
])
def test_validation_that_fails_after_starting_the_game_leaves_no_process(fault, settings, message, tmp_path):
    """train.py validates a rendering Unity experiment by opening the game under its own Xvfb: whether a setting
    is bad, the game dies at start or a later check fails, the one-line error comes after the game and Xvfb are
    gone."""
    require_system_part(xvfb_missing())
    config = write_yaml(tmp_path / "exp.yaml", {"render": {
        "run": "PPO", "env": "unity", "stop": {"training_iteration": 1},
        "config": {"env_config": {"file_name": GAME, "no_graphics": False, "display": "xvfb",
                                  **settings},
                   "multiagent": {"policies": {"Dodgeball": {"agents": "Dodgeball*"}, "nobody": {"agents": "x*"}}}},
    }})
    tag = uuid.uuid4().hex
    run = run_train("-f", str(config), "--local-dir", str(tmp_path), env={"STANDIN_FAULT": fault, "MARLKIT_TEST_TAG": tag})
    assert run.returncode == 2 and message in run.stderr.strip().splitlines()[-1], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    left = wait_until_gone(tag, seconds=1)
    assert not left, f"processes left running after the one-line error: {left}"


def test_relative_file_name_is_resolved_at_load_and_policies_default_per_behavior(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    (experiment,) = load_experiments(REPO / "config" / "dodgeball-ppo-fcnet.yaml")
    assert experiment.config["env_config"]["file_name"] == GAME
    assert experiment.policy_layout.policy_for(f"{TEAM1}_7") == "Dodgeball"


def test_images_without_a_default_cnn_get_the_convnet_unless_a_model_is_chosen(tmp_path):
    """The stand-in game's 16x16 depth image has no filters in RLlib's default CNN table."""
    def load(model=None):
        config = {"env_config": {"file_name": GAME, "no_graphics": True, "observations": "visual"}}
        if model is not None:
            config["model"] = model
        (experiment,) = load_experiments(write_yaml(tmp_path / "visual.yaml", {"visual": {
            "run": "PPO", "env": "unity", "config": config}}))
        return experiment

    experiment = load()
    plan = make_plan(experiment)
    assert "model" not in experiment.config and experiment.custom_models + plan.models == ("convnet",)
    assert [note for note in plan.notes if "model/convnet.py" in note] == [
        "visual: policy 'Dodgeball' sees images of shape (16, 16, 1), which RLlib's default CNN has no filters for; "
        "it gets model/convnet.py (set custom_model or conv_filters in config.model or in its "
        "multiagent.policies.<id>.config.model to choose another)"]
    filters = [[8, [4, 4], 2], [16, [8, 8], 1]]
    for model, used in (({"conv_filters": filters}, ()), ({"custom_model": "fcnet"}, ("fcnet",))):
        chosen = load(model)
        plan = make_plan(chosen)
        assert chosen.config["model"] == model and chosen.custom_models + plan.models == used
        assert not any("model/convnet.py" in note for note in chosen.notes + plan.notes)


def model_of(weights: dict) -> str:
    """Which network a policy's checkpointed weights belong to."""
    names = sorted(weights)
    if any(name.startswith("conv.") for name in names):
        return "convnet"  # model/convnet.py
    if any(name.startswith("policy_trunk.") for name in names):
        return "fcnet"  # model/fcnet.py
    if any(name.startswith("cnns.") for name in names):
        return "rllib complex input"  # RLlib's model for a Tuple: its CNN per image, an MLP per vector
    if any(name.startswith("_hidden_layers.") for name in names):
        return "rllib fcnet"
    raise AssertionError(f"unknown model: {names}")


def test_value_based_algorithms_refuse_the_games_actions_in_one_line(tmp_path):
    """The stand-in game's players act in Tuple(Box, Discrete): DQN (and SAC) cannot, and loading says so."""
    experiment = {"run": "DQN", "env": "unity", "config": {"num_env_runners": 0, "env_config": {
        "file_name": GAME, "no_graphics": True, "parameters": {"episode_length": 20}}}}
    with pytest.raises(ConfigError) as error:
        load_experiments(write_yaml(tmp_path / "dqn.yaml", {"dqn": experiment}))
    assert ("dqn: DQN takes Discrete actions, not Tuple(Box(-1.0, 1.0, (2,), float32), Discrete(2)) (policy "
            "'Dodgeball'); choose that kind of actions") in str(error.value) and "\n" not in str(error.value)


def test_each_policy_trains_checkpoints_and_rolls_out_with_the_default_of_its_own_observations(tmp_path, ray_temp_dir):
    """The stand-in game reconfigured two ways, one train.py run: a second behavior without the camera beside a
    Tuple of vector + 84x84 image (the vector-only one gets RLlib's MLP, the camera behavior RLlib's default filters
    in its complex-input model), and, trained by APPO until its learner thread has trained once (the game's hybrid
    and MultiDiscrete actions fit APPO and IMPALA, not DQN or SAC), a per-policy custom_model beside a default one
    (the other policy's Tuple of vector + 8x8 image gets the convnet)."""
    small = {"PPO": {"num_env_runners": 0, "train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
             # (RLlib's 10 s minimum per iteration of APPO cut to 1 s)
             "APPO": {"num_env_runners": 0, "train_batch_size": 200, "rollout_fragment_length": 50,
                      "min_time_s_per_iteration": 1}}

    def experiment(parameters: dict, run: str = "PPO", stop: dict | None = None, **config) -> dict:
        env_config = {"file_name": GAME, "no_graphics": True,
                      "log_folder": str(tmp_path / "game-logs"), "parameters": {"episode_length": 20, **parameters}}
        return {"run": run, "env": "unity", "stop": stop or {"training_iteration": 1}, "checkpoint_at_end": True,
                "config": {**small[run], "env_config": env_config, **config}}

    own_model = {"model": {"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}}}
    teams = {"team0": {"agents": f"{TEAM0}_*", "config": own_model}, "team1": {"agents": f"{TEAM1}_*"}}
    # (APPO's learner thread trains in the background and reports when it has trained: on a busy machine not always
    # within 2 iterations of 100 env steps; 20 iterations bound a learner that never trains)
    trained_once = {"num_env_steps_trained": 1, "training_iteration": 20}
    config = write_yaml(tmp_path / "defaults.yaml", {
        "goalie": experiment({"depth_size": 84, "goalie": 1}),
        "own-model": experiment({"depth_size": 8}, "APPO", stop=trained_once, multiagent={"policies": teams}),
    })
    run = run_train("-f", str(config), "--local-dir", str(tmp_path), temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    notes = [line for line in run.stdout.splitlines() if "model/convnet.py" in line]
    assert [note.split(" sees ")[0] for note in notes] == ["note: own-model: policy 'team1'"], notes
    expected = {"goalie": {"Dodgeball": "rllib complex input", "Goalie": "rllib fcnet"},
                "own-model": {"team0": "fcnet", "team1": "convnet"}}
    runs, checkpoints = {"goalie": "PPO", "own-model": "APPO"}, {}
    for name, policies in expected.items():
        (trial,) = trial_dirs(tmp_path / name)
        learned = set().union(*(row["info"]["learner"] for row in read_results(trial)))
        assert set(policies) <= learned, name
        (checkpoints[name],) = trial.glob("checkpoint_*")
        states = load_algorithm_state(checkpoints[name])["worker"]["policy_states"]
        assert {pid: model_of(state["weights"]) for pid, state in states.items()} == policies
    # The rollouts at once: each is mostly process start-up (imports, Ray, the game).
    rollouts = {name: start_script("rollout.py", str(checkpoint), "--run", runs[name], "--episodes", "1",
                                   "--num-workers", "0", "--num-gpus", "0", temp_dir=ray_temp_dir / name)
                for name, checkpoint in checkpoints.items()}
    for name, policies in expected.items():
        rollout = finish_script(rollouts[name])
        assert rollout.returncode == 0, rollout.stderr[-3000:]
        assert re.search(r"^episode 0: length \d+, return \S+ ", rollout.stdout, re.M), rollout.stdout
        for pid in policies:
            assert re.search(rf"^return policy {re.escape(pid)} ", rollout.stdout, re.M), rollout.stdout
    assert not processes_mentioning(str(tmp_path / "game-logs")), "games left running"


def test_dodgeball_configs_train_with_two_env_runners(tmp_path, ray_temp_dir):
    """Both shipped Dodgeball configs, as written but for their stop, in one train.py run (one Ray start)."""
    configs = ("dodgeball-ppo-fcnet", "dodgeball-ppo-convnet")
    experiments = {}
    for config in configs:
        shipped = yaml.safe_load((REPO / "config" / f"{config}.yaml").read_text())
        shipped[config]["config"]["env_config"]["log_folder"] = str(tmp_path / "game-logs" / config)  # marks its games
        experiments.update(shipped)
    run = run_train("-f", str(write_yaml(tmp_path / "exp.yaml", experiments)), "--stop", "{training_iteration: 2}",
                    "--local-dir", str(tmp_path), temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-2000:]
    for config in configs:
        (trial,) = trial_dirs(tmp_path / config)
        results = read_results(trial)
        assert [r["num_env_steps_sampled_lifetime"] for r in results] == [2000, 4000], config
        assert list(results[-1]["info"]["learner"]) == ["Dodgeball"]
        assert results[-1]["num_healthy_workers"] == 2
        logs = sorted((tmp_path / "game-logs" / config).glob("Player-*.log"))
        assert len(logs) >= 3, config  # the two env runners' games and the trial's own (RLlib's local env runner)
    assert not processes_mentioning(str(tmp_path / "game-logs")), "games left running after train.py ended"


def test_training_goes_on_when_a_game_crashes_mid_run(tmp_path, ray_temp_dir, monkeypatch):
    config = write_yaml(tmp_path / "crash.yaml", {"crashy": {
        "run": "PPO", "env": "unity", "stop": {"training_iteration": 3},
        "config": {
            "env_config": {"file_name": GAME, "no_graphics": True, "observations": "vector",
                           "log_folder": str(tmp_path / "game-logs")},
            "num_env_runners": 2, "num_cpus_per_env_runner": 0.5, "train_batch_size": 600, "minibatch_size": 200,
            "num_epochs": 1, "restart_failed_env_runners": True, "max_num_env_runner_restarts": 20,
            "model": {"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}},
        },
    }})
    monkeypatch.setenv("STANDIN_FAULT", "crash_at_step:400")  # every game crashes after 400 steps
    run = run_train("-f", str(config), "--local-dir", str(tmp_path), temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-2000:]
    (trial,) = trial_dirs(tmp_path / "crashy")
    results = read_results(trial)
    assert [r["training_iteration"] for r in results] == [1, 2, 3]
    assert "failed at step: Environment shut down with return code 3" in run.stdout + run.stderr  # games did crash
    # Every game crashes at its 400th step and an iteration takes 600 over 2 runners: from iteration 2 on, steps
    # come from games started in place of crashed ones (restart_failed_sub_environments, the default for unity);
    # without them the runners are marked unhealthy and iterations sample nothing.
    assert [r["num_env_steps_sampled_this_iter"] >= 600 for r in results] == [True] * 3
    assert [r["num_healthy_workers"] for r in results] == [2, 2, 2]
    logs = [log.read_text() for log in (tmp_path / "game-logs").glob("Player-*.log")]
    assert sum("crashing at step 400" in log for log in logs) >= 2, "fewer than both runners' first games crashed"
    deadline = time.monotonic() + 10  # games of killed env runners die with them (SIGKILL on parent death)
    while processes_mentioning(str(tmp_path / "game-logs")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(str(tmp_path / "game-logs")), "games outlived their env runners"


BROKEN_MODEL = """
from torch import nn
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2


class CustomModel(TorchModelV2, nn.Module):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        raise ValueError("this model cannot be built")
"""


def test_a_runner_that_cannot_be_built_is_named_and_leaves_no_process(tmp_path, ray_temp_dir):
    """The env runners make their games, then fail building the model: train.py's last line names the runner's
    error (not RLlib's follow-on IndexError), and no runner, game or Ray process it started outlives it."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken.py").write_text(BROKEN_MODEL)
    config = write_yaml(tmp_path / "broken.yaml", {"broken": {
        "run": "PPO", "env": "unity", "stop": {"training_iteration": 1},
        "config": {"env_config": {"file_name": GAME, "no_graphics": True, "observations": "vector"},
                   "num_env_runners": 1, "num_cpus_per_env_runner": 0.5, "train_batch_size": 200,
                   "minibatch_size": 100, "num_epochs": 1, "model": {"custom_model": "broken"}},
    }})
    tag = uuid.uuid4().hex
    run = run_script("train.py", "-f", str(config), "--local-dir", str(tmp_path), temp_dir=ray_temp_dir,
                     env={"MARLKIT_MODEL_DIR": str(tmp_path / "models"), "MARLKIT_TEST_TAG": tag})
    assert run.returncode == 1
    failure = [line for line in run.stdout.splitlines() if " failed: " in line]
    assert failure and failure[-1].endswith("failed: an env runner could not be built: ValueError: this model cannot "
                                            "be built"), failure
    left = wait_until_gone(tag)
    assert not left, f"processes left running after train.py ended: {left}"
