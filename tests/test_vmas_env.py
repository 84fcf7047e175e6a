"""The VMAS env through the generic RLlib adapters (envs/rllib_adapters.py): RLlib's env checker, per-agent spaces,
seeding, and the many-game BaseEnv of RLlib's stock sampler."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from ray.rllib.env.base_env import ASYNC_RESET_RETURN

from envs import ENVS
from envs.rllib_adapters import GamesBaseEnv, OneGameEnv
from envs.errors import ConfigError


def make_env(env_config: dict):
    """What Ray's env creator for `env: vmas` builds."""
    return ENVS["vmas"].make(env_config)


def rollout(env: OneGameEnv, seed: int, steps: int) -> list:
    observations, _ = env.reset(seed=seed)
    trace = [observations]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        actions = {aid: rng.uniform(-1, 1, 2).astype(np.float32) for aid in env.possible_agents}
        observations, rewards, *_ = env.step(actions)
        trace.append((observations, rewards))
    return trace


def test_passes_rllib_env_checker():
    env = make_env({"scenario": "navigation", "n_agents": 3, "max_steps": 20})
    check_multiagent_environments(env)
    env.close()


def test_per_agent_spaces_and_step_outputs():
    env = make_env({"scenario": "navigation", "n_agents": 3, "max_steps": 2})
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert all(space == gym.spaces.Box(-1, 1, (2,), np.float32) for space in env.action_spaces.values())
    observations, infos = env.reset(seed=1)
    assert {aid: obs.shape for aid, obs in observations.items()} == {aid: (18,) for aid in env.possible_agents}
    assert all(env.observation_spaces[aid].contains(obs) for aid, obs in observations.items())
    zero = {aid: np.zeros(2, np.float32) for aid in env.possible_agents}
    _, rewards, terminated, truncated, infos = env.step(zero)
    assert set(rewards) == set(env.possible_agents) and all(isinstance(r, float) for r in rewards.values())
    assert truncated["__all__"] is False and terminated["__all__"] is False
    _, _, terminated, truncated, _ = env.step(zero)
    assert truncated["__all__"] is True and terminated["__all__"] is False  # max_steps truncates
    assert "pos_rew" in infos["agent_0"]


def test_discrete_actions():
    env = make_env({"scenario": "balance", "continuous_actions": False})
    assert all(isinstance(space, gym.spaces.Discrete) for space in env.action_spaces.values())
    env.reset(seed=0)
    _, rewards, *_ = env.step({aid: 1 for aid in env.possible_agents})
    assert len(rewards) == len(env.possible_agents)


def test_same_seed_same_episode_other_seed_other_episode():
    first = rollout(make_env({"scenario": "navigation", "n_agents": 2}), seed=7, steps=5)
    again = rollout(make_env({"scenario": "navigation", "n_agents": 2}), seed=7, steps=5)
    other = rollout(make_env({"scenario": "navigation", "n_agents": 2}), seed=8, steps=5)
    assert all(np.array_equal(first[0][a], again[0][a]) for a in first[0])
    assert all(np.array_equal(first[-1][0][a], again[-1][0][a]) and first[-1][1] == again[-1][1] for a in first[0])
    assert not np.array_equal(first[0]["agent_0"], other[0]["agent_0"])


def test_render_gives_an_rgb_frame():
    env = make_env({"scenario": "navigation", "n_agents": 2})
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and frame.max() > 0
    env.close()


def test_config_errors():
    with pytest.raises(ConfigError, match="env_config.scenario is required"):
        make_env({})
    with pytest.raises(ConfigError, match="has keys the scenario does not use: \\['n_agnts'\\]"):
        make_env({"scenario": "navigation", "n_agnts": 2})
    with pytest.raises(ConfigError, match="num_envs must be a whole number >= 1"):
        make_env({"scenario": "navigation", "num_envs": 0})


def test_cuda_device_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the error is for machines without one")
    with pytest.raises(ConfigError, match="env_config.device is 'cuda' but this process sees no CUDA GPU"):
        make_env({"scenario": "navigation", "num_envs": 4, "device": "cuda"})


def test_make_env_batches_only_when_asked():
    assert isinstance(make_env({"scenario": "navigation"}), OneGameEnv)
    assert isinstance(make_env({"scenario": "navigation", "num_envs": 3}), GamesBaseEnv)


def test_vector_env_steps_all_sub_envs_and_resets_one():
    env = make_env({"scenario": "navigation", "n_agents": 2, "num_envs": 3, "max_steps": 2})
    env.reset(seed=3)
    observations, rewards, terminated, truncated, infos, off_policy = env.poll()
    assert sorted(observations) == [0, 1, 2] and off_policy == {}
    assert all(sorted(obs) == ["agent_0", "agent_1"] and obs["agent_0"].shape == (env.observation_spaces["agent_0"].shape) for obs in observations.values())
    assert env.poll()[0] == {}, "a second poll without actions has nothing new"
    actions = {i: {aid: np.zeros(2, np.float32) for aid in env.possible_agents} for i in range(3)}
    for step in range(2):
        env.send_actions(actions)
        observations, rewards, terminated, truncated, _, _ = env.poll()
        assert sorted(rewards) == [0, 1, 2]
        assert all(flags["__all__"] is (step == 1) for flags in truncated.values())
        assert all(flags["__all__"] is False for flags in terminated.values())
    # A finished world restarts at the next step (the batch's next-step auto-reset): RLlib's try_reset is answered
    # asynchronously, the restart step takes no actions for it, and its first observation comes with the next poll.
    assert env.try_reset(1) == (ASYNC_RESET_RETURN, ASYNC_RESET_RETURN)
    env.send_actions({})
    observations, rewards, terminated, truncated, _, _ = env.poll()
    assert sorted(observations) == [0, 1, 2] and sorted(observations[1]) == ["agent_0", "agent_1"]
    assert all(r == {"agent_0": 0.0, "agent_1": 0.0} for r in rewards.values())
    assert not any(flags["__all__"] for flags in (*terminated.values(), *truncated.values()))
    env.send_actions(actions)
    assert all(flags["__all__"] is False for flags in env.poll()[3].values()), "a new episode of max_steps 2"


def test_vector_env_seeding_is_reproducible():
    def first_observations(seed):
        env = make_env({"scenario": "navigation", "n_agents": 2, "num_envs": 4})
        env.reset(seed=seed)
        return np.stack([obs["agent_0"] for obs in env.poll()[0].values()])

    assert np.array_equal(first_observations(5), first_observations(5))
    assert not np.array_equal(first_observations(5), first_observations(6))
    sub_envs = first_observations(5)
    assert not np.array_equal(sub_envs[0], sub_envs[1]), "sub-envs must not be copies of each other"
