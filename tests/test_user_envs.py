"""A user's own env and PettingZoo envs (envs/user_envs.py, envs/games.py) and the env checker (envs/checker.py):
the docs' example env file, a dotted-path RLlib MultiAgentEnv that takes turns, MPE2's simple_spread (Parallel),
PettingZoo's tic-tac-toe (AEC, action masks) and SISL's pursuit (image observations, a convnet) train through
train.py on the batched env runner, checkpoint and roll out (with video where the env renders); the checker names
each broken env's problem in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, read_results, script_command, subprocess_env, train_in_process, trial_dirs, write_yaml
from envs import env_entry
from envs.checker import env_problems
from envs.user_envs import pettingzoo_batch
from marlkit.checkpoints import load_algorithm_state

DOCS = (REPO / "docs" / "envs.md").read_text()
SECTION = DOCS[DOCS.index("## Bring your own env"):]
EXAMPLE_ENV = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)
EXAMPLE_YAML = yaml.safe_load(re.search(r"```yaml\n(.*?)```", SECTION, re.S).group(1))

# An RLlib MultiAgentEnv whose agents take turns (only the mover gets an observation), found by dotted path.
RELAY = '''
import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv


class Relay(MultiAgentEnv):
    """Two agents take turns; the mover sees a bit and is paid for repeating it; 6 turns."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = self.agents = ["left", "right"]
        self.observation_spaces = {a: gym.spaces.Box(0.0, 1.0, (1,), np.float32) for a in self.agents}
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.agents}

    def reset(self, *, seed=None, options=None):
        self.rng, self.turn = np.random.default_rng(seed), 0
        self.bit = int(self.rng.integers(2))
        return {"left": np.array([self.bit], np.float32)}, {}

    def step(self, actions):
        mover = self.agents[self.turn % 2]
        reward = float(actions[mover] == self.bit)
        self.turn, self.bit = self.turn + 1, int(self.rng.integers(2))
        done = self.turn >= 6
        return ({self.agents[self.turn % 2]: np.array([self.bit], np.float32)}, {mover: reward}, {"__all__": False},
                {"__all__": done}, {})
'''

SMALL = {"num_envs_per_env_runner": 8, "rollout_fragment_length": 25, "train_batch_size": 400,
         "minibatch_size": 200, "num_epochs": 1}
EXPERIMENTS = {
    **EXAMPLE_YAML,  # chase-ppo: the docs' env file, by path, one remote env runner
    "relay": {"run": "PPO", "env": "zoo.relay.Relay", "config": {"num_env_runners": 1}},
    "spread": {"run": "PPO", "env": "pettingzoo", "config": {
        "num_env_runners": 0, "env_config": {"env": "mpe2.simple_spread_v3", "N": 3, "max_cycles": 25}}},
    "tictactoe": {"run": "PPO", "env": "pettingzoo", "config": {
        "num_env_runners": 0, "env_config": {"env": "pettingzoo.classic.tictactoe_v3"}}},
    "pursuit": {"run": "PPO", "env": "pettingzoo", "config": {"num_env_runners": 0, "env_config": {
        "env": "pettingzoo.sisl.pursuit_v5", "max_cycles": 25, "n_pursuers": 4, "n_evaders": 8}}},
}
EPISODE_LENGTHS = {"chase-ppo": (20, 20), "relay": (6, 6), "spread": (25, 25), "tictactoe": (5, 9), "pursuit": (25, 25)}
VIDEOS = ("spread", "tictactoe", "pursuit")


def in_folder(folder, script: str, *args: str) -> subprocess.Popen:
    """train.py or rollout.py started from `folder` (where the user's env files are)."""
    return subprocess.Popen(script_command(script, *args), cwd=folder, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=600)
    print(stdout[-3000:], stderr[-3000:], sep="\n")
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def video_frames(path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_user_and_pettingzoo_envs_train_checkpoint_and_roll_out(tmp_path, ray_temp_dir):
    (tmp_path / "chase.py").write_text(EXAMPLE_ENV)
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "relay.py").write_text(RELAY)
    write_yaml(tmp_path / "envs.yaml", EXPERIMENTS)
    run = finish(in_folder(tmp_path, "train.py", "-f", "envs.yaml", "--local-dir", "results", "--checkpoint-at-end",
                           "--stop", "{training_iteration: 2}", "--config", yaml.safe_dump(SMALL),
                           "--temp-dir", str(ray_temp_dir)))
    assert "stock sampler" not in run.stdout  # every one of them sampled as arrays by the batched env runner
    assert "Illegal move" not in run.stdout + run.stderr  # the masks reached the policy: no illegal move sampled
    # Boards and images reach the policies in their shape (tic-tac-toe's (3, 3, 2) with its mask, pursuit's (7, 7, 3)):
    # their default model is the convnet, which applies masks.
    for name, shape in (("tictactoe", "(3, 3, 2)"), ("pursuit", "(7, 7, 3)")):
        assert f"note: {name}: policy 'shared' sees images of shape {shape}" in run.stdout
    checkpoints = {}
    for name, (shortest, longest) in EPISODE_LENGTHS.items():
        (trial,) = trial_dirs(tmp_path / "results" / name)
        rows = read_results(trial)
        assert [row["training_iteration"] for row in rows] == [1, 2], name
        assert all(row["num_env_steps_sampled_this_iter"] >= 400 for row in rows), name
        runners = rows[-1]["env_runners"]
        assert shortest <= runners["episode_len_mean"] <= longest, (name, runners["episode_len_mean"])
        assert np.isfinite(runners["episode_return_mean"]), name
        (checkpoints[name],) = sorted(trial.glob("checkpoint_*"))
        if name == "tictactoe":  # what one player wins the other loses
            assert runners["episode_return_mean"] == 0
    weights = load_algorithm_state(checkpoints["pursuit"])["worker"]["policy_states"]["shared"]["weights"]
    assert weights["conv.0.weight"].shape == (16, 3, 5, 5)  # model/convnet.py's first layer over 3 channels
    rollouts = {name: in_folder(tmp_path, "rollout.py", str(checkpoints[name]), "--run", "PPO", "--episodes", "1",
                                *(["--monitor"] if name in VIDEOS else []))
                for name in EPISODE_LENGTHS}
    for name, process in rollouts.items():
        out = finish(process).stdout
        shortest, longest = EPISODE_LENGTHS[name]
        steps = int(re.search(r"\(1 episode\(s\), (\d+) steps\)", out).group(1))
        assert shortest <= steps <= longest, (name, out[-500:])
        assert (checkpoints[name] / "rollout").is_file(), name
        if name in VIDEOS:
            frames = video_frames(checkpoints[name] / "monitor" / "episode_000000.mp4")
            assert len(frames) == steps and all(frame.std() > 5 for frame in frames), (name, len(frames))


def test_each_broken_env_gets_its_line():
    """Each env of tests/broken_envs.py breaks the PettingZoo Parallel API in one way; `Fine` passes."""
    expected = {
        "Fine": [],
        "WrongDtype": ["agent 'agent_0': reset() observation has dtype float64; its space says float32",
                       "agent 'agent_1': reset() observation has dtype float64; its space says float32"],
        "MissingAgent": ["agent 'agent_1': reset() observations: missing, though the agent is in env.agents"],
        "OutsideSpace": ["agent 'agent_0': reset() observation is outside its space: entry 1 is 1.5, bounds [0, 1]",
                         "agent 'agent_1': reset() observation is outside its space: entry 1 is 1.5, bounds [0, 1]"],
        "WrongStepKeys": ["agent 'player_0': step() rewards: is not one of possible_agents ['agent_0', 'agent_1']",
                          "agent 'player_1': step() rewards: is not one of possible_agents ['agent_0', 'agent_1']",
                          "agent 'agent_0': step() rewards: missing, though the agent acted this step",
                          "agent 'agent_1': step() rewards: missing, though the agent acted this step"],
        "OldStepApi": ["step() returned 4 values; it must return 5: (observations, rewards, terminations, "
                       "truncations, infos)"],
        "NeverEnds": ["episode did not end within 10000 steps of random actions: give the env a time limit "
                      "(truncation) or end its episodes"],
    }
    for name, lines in expected.items():
        env = f"broken_envs.{name}"
        assert env_problems(env_entry(env).batch({"num_envs": 1}), env) == [f"env '{env}': {line}" for line in lines]


def test_train_refuses_a_broken_env_before_ray_starts_and_check_env_checks_any(tmp_path, capsys):
    config = write_yaml(tmp_path / "bad.yaml", {"bad": {"run": "PPO", "env": "broken_envs.WrongStepKeys"}})
    run = train_in_process(capsys, "-f", str(config))
    assert run.returncode == 2
    assert "bad.env: the env does not follow its API (4 problem(s)):" in run.stderr
    assert "  env 'broken_envs.WrongStepKeys': agent 'agent_0': step() rewards: missing, though the agent acted " \
           "this step" in run.stderr.splitlines()
    good = write_yaml(tmp_path / "good.yaml", {
        "spread": {"run": "PPO", "env": "pettingzoo", "config": {"env_config": {"env": "mpe2.simple_spread_v3"}}},
        "vmas": {"run": "PPO", "env": "vmas", "config": {"env_config": {"scenario": "navigation", "max_steps": 10}}},
        "cartpole": {"run": "PPO", "env": "CartPole-v1"}})
    run = train_in_process(capsys, "-f", str(good), "--check-env")
    assert run.returncode == 0
    assert run.stdout.splitlines() == [
        f"{name}: env '{env}' passed the env check (spaces, reset, step, an episode's end)"
        for name, env in (("spread", "pettingzoo: mpe2.simple_spread_v3"), ("vmas", "vmas"),
                          ("cartpole", "CartPole-v1"))]


@pytest.mark.parametrize("env, problem", [
    ("no_such_file.py", "no file"),
    ("broken_envs.NoSuchClass", "module 'broken_envs' has no class 'NoSuchClass'"),
    ("no_such_package.Env", "cannot import module 'no_such_package'"),
    ("collections.OrderedDict", "class OrderedDict is not an env: it must subclass one of BatchedEnv, MultiAgentEnv"),
])
def test_an_env_that_cannot_be_found_is_named(tmp_path, capsys, env, problem):
    config = write_yaml(tmp_path / "x.yaml", {"x": {"run": "PPO", "env": env}})
    run = train_in_process(capsys, "-f", str(config))
    assert run.returncode == 2 and problem in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_pettingzoo_settings_are_checked(tmp_path, capsys):
    for env_config, problem in (({}, "env_config.env is required for env: pettingzoo"),
                                ({"env": "mpe2.no_such_env_v0"}, "cannot import 'mpe2.no_such_env_v0'"),
                                ({"env": "mpe2.simple_spread_v3", "n_agents": 3},
                                 "env 'pettingzoo: mpe2.simple_spread_v3': env_config does not fit raw_env(): got an "
                                 "unexpected keyword argument 'n_agents'")):
        config = write_yaml(tmp_path / "x.yaml", {"x": {"run": "PPO", "env": "pettingzoo",
                                                        "config": {"env_config": env_config}}})
        run = train_in_process(capsys, "-f", str(config))
        assert run.returncode == 2 and problem in run.stderr, run.stderr


def test_turns_of_an_aec_game_and_its_masks_in_the_batch():
    """Tic-tac-toe through GameCopies: players move in turn; the waiting player's mask allows action 0 alone and its
    action is ignored; the winning move pays +1/-1 and the game restarts on the next step."""
    games = pettingzoo_batch({"env": "pettingzoo.classic.tictactoe_v3", "num_envs": 2})
    assert games.observation_spaces["player_1"].spaces["action_mask"].shape == (9,)
    observations = games.reset(seed=0)
    moves = [0, 3, 1, 4, 2]  # player_1 takes the top row (cells 0, 1, 2 in PettingZoo's column-major board)
    for turn, move in enumerate(moves):
        mover, waiting = turn % 2, 1 - turn % 2
        assert observations[:, mover, :9].sum(axis=1).tolist() == [9 - turn] * 2  # the free cells
        assert observations[:, waiting, :9].tolist() == [[1.0] + [0.0] * 8] * 2  # action 0 alone
        actions = torch.zeros(2, 2, 1, dtype=torch.int64)
        actions[:, mover, 0] = move
        actions[:, waiting, 0] = 8  # ignored: not this player's turn
        observations, rewards, terminated, truncated = games.step(actions)
        if turn < len(moves) - 1:
            assert not terminated.any() and not rewards.any()
    assert terminated.tolist() == [True, True] and rewards.tolist() == [[1.0, -1.0]] * 2
    assert not truncated.any()
    observations, rewards, terminated, _ = games.step(torch.zeros(2, 2, 1, dtype=torch.int64))
    assert not terminated.any() and not rewards.any()
    assert observations[:, 0, :9].sum(axis=1).tolist() == [9, 9]  # a new game: every cell free


def test_agents_that_leave_keep_a_row_of_zeros():
    """A Parallel env whose agent_1 leaves at step 2: that step gives its final observation and reward, then its row is
    zeros and its reward zero while the game goes on until the last agent leaves."""
    env = env_entry("broken_envs.Leaving")
    games = env.batch({"num_envs": 1})
    observations = games.reset(seed=0)
    assert observations[0].tolist() == [[0.5, 0.5], [0.5, 0.5]]
    for step in range(1, 5):
        observations, rewards, terminated, truncated = games.step(torch.ones(1, 2, 1, dtype=torch.int64))
        gone = step >= 3
        assert observations[0, 1].tolist() == ([0.0, 0.0] if gone else [0.5, 0.5]), step
        assert rewards[0].tolist() == [1.0, 0.0 if gone else 1.0], step
        assert terminated.tolist() == [False] and truncated.tolist() == [step == 4], step
    assert env_problems(env.batch({"num_envs": 1}), "leaving") == []


def test_uint8_images_keep_their_shape_scaled_to_one():
    """An image observation keeps its (H, W, C) shape in the space the policies see (the arrays carry it flat), and
    uint8 pixels arrive in [0, 1]."""
    env = env_entry("broken_envs.Camera")
    games = env.batch({"num_envs": 2})
    assert games.observation_spaces["agent_0"] == gym.spaces.Box(0.0, 1.0, (4, 4, 3), np.float32)
    observations = games.reset(seed=0)
    assert observations.shape == (2, 2, 48)
    np.testing.assert_allclose(observations[1, 1], np.arange(48) * 5 / 255, rtol=1e-6)
    assert env_problems(env.batch({"num_envs": 1}), "camera") == []


def test_a_gymnasium_class_and_a_batched_class_by_dotted_path():
    """A gymnasium env class is one agent, `agent_0`, stepped as a batch; a project `BatchedEnv` class is used as it
    is; the checker passes both and names a batched env whose rewards are not floats."""
    cartpole = env_entry("gymnasium.envs.classic_control.cartpole.CartPoleEnv")
    games = cartpole.batch({"num_envs": 3})
    assert games.possible_agents == ["agent_0"] and games.reset(seed=0).shape == (3, 1, 4)
    assert env_problems(cartpole.batch({"num_envs": 1}), "cartpole") == []
    repeat_bit = env_entry("repeat_bit_env.RepeatBit")
    assert type(repeat_bit.batch({"num_envs": 2, "length": 3})).__name__ == "RepeatBit"
    assert env_problems(repeat_bit.batch({"num_envs": 2, "length": 3}), "repeat_bit") == []
    integer_rewards = env_entry("repeat_bit_env.RepeatBit").batch({"num_envs": 2})
    step = integer_rewards.step
    integer_rewards.step = lambda actions: (lambda o, r, te, tr: (o, r.astype(np.int64), te, tr))(*step(actions))
    assert env_problems(integer_rewards, "repeat_bit") == [
        "env 'repeat_bit': step() rewards have shape (2, 2) and dtype int64; expected shape (2, 2) and a float dtype"]


def test_the_pettingzoo_bench_runs_tiny(ray_temp_dir):
    """bench/pettingzoo.py end to end at a tiny size: both samplers, both frameworks, its JSON keys."""
    run = subprocess.run([sys.executable, "bench/pettingzoo.py", "--num-envs", "4", "--fragment", "25",
                          "--train-frames", "200", "--minibatch", "25", "--seeds", "1", "--sample-fragments", "1",
                          "--hiddens", "16", "--temp-dir", str(ray_temp_dir)], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(figures) == {"pz_raw_fps", "pz_batched_sample_fps", "pz_stock_sample_fps", "pz_train_fps", "pz_return",
                            "benchmarl_pz_train_fps", "benchmarl_pz_return"}
    assert all(figures[key] > 0 for key in figures if key.endswith("fps"))
