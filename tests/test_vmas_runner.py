"""The batched VMAS env runner against the simple path (VmasVectorEnv stepped through RLlib's BaseEnv API)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, ray_session_folder, subprocess_env
from envs.vmas_env import VmasVectorEnv
from sample_fragment import FRAGMENT, GAMMA, LAMBDA, MAX_STEPS, NUM_ENVS, SEED


def sample_fragment(tmp_path_factory, *scenario: str):
    """(batch, metrics, env_config) of one fragment from a real PPO algorithm's local BatchedVmasRunner."""
    out = tmp_path_factory.mktemp("runner") / "fragment.pkl"
    with ray_session_folder() as temp_dir:
        run = subprocess.run([sys.executable, str(REPO / "tests" / "sample_fragment.py"), str(out), str(temp_dir),
                              *scenario], cwd=REPO / "tests", env={**subprocess_env(), "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out, "rb") as file:
        return pickle.load(file)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    return sample_fragment(tmp_path_factory)


def per_step(column: np.ndarray) -> np.ndarray:
    """Batch rows are ordered (step, env, agent): reshape to (step, env, agent, ...)."""
    return column.reshape((FRAGMENT, NUM_ENVS, 2) + column.shape[1:])


def test_batch_counts_and_episode_boundaries(sampled):
    batch, metrics, _ = sampled
    assert batch.env_steps() == FRAGMENT * NUM_ENVS
    shared = batch.policy_batches["shared"]
    assert len(shared) == FRAGMENT * NUM_ENVS * 2
    t = per_step(shared["t"])[:, 0, 0]
    assert t.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]  # sub-envs reset in place after MAX_STEPS
    truncated = per_step(shared["truncateds"])[:, 0, 0]
    assert np.flatnonzero(truncated).tolist() == [4, 9]
    episodes = per_step(shared["eps_id"])[:, :, 0]
    assert len(np.unique(episodes)) == 3 * NUM_ENVS
    assert [m.episode_length for m in metrics] == [MAX_STEPS] * (2 * NUM_ENVS)
    returns = per_step(shared["rewards"]).sum(axis=2)  # (step, env)
    assert metrics[0].episode_reward == pytest.approx(float(returns[:MAX_STEPS, 0].sum()), rel=1e-5)


def test_same_seed_same_actions_same_observations_and_rewards_as_the_simple_path(sampled):
    batch, _, env_config = sampled
    shared = batch.policy_batches["shared"]
    observations, actions, rewards = per_step(shared["obs"]), per_step(shared["actions"]), per_step(shared["rewards"])
    env = VmasVectorEnv(env_config)
    env.reset(seed=SEED)  # RLlib seeds the local runner's env with config.seed + 1000 * worker index (0)
    first = env.poll()[0]
    assert np.allclose(np.stack([[first[e][a] for a in ("agent_0", "agent_1")] for e in range(NUM_ENVS)]), observations[0])
    for t in range(FRAGMENT - 1):
        env_actions = np.clip(actions[t], -1.0, 1.0)  # normalize_actions: [-1, 1] -> the Box bounds [-1, 1]
        env.send_actions({e: {"agent_0": env_actions[e, 0], "agent_1": env_actions[e, 1]} for e in range(NUM_ENVS)})
        next_obs, step_rewards, terminated, truncated, _, _ = env.poll()
        assert np.allclose([[step_rewards[e][a] for a in ("agent_0", "agent_1")] for e in range(NUM_ENVS)], rewards[t], atol=1e-6)
        for e in range(NUM_ENVS):
            if truncated[e]["__all__"] or terminated[e]["__all__"]:
                next_obs[e] = env.try_reset(e)[0][e]
        stepped = np.stack([[next_obs[e][a] for a in ("agent_0", "agent_1")] for e in range(NUM_ENVS)])
        assert np.allclose(stepped, observations[t + 1], atol=1e-5), f"step {t}"


def test_advantages_follow_the_gae_recurrence(sampled):
    batch, _, _ = sampled
    shared = batch.policy_batches["shared"]
    adv, values, rewards, eps = (per_step(shared[k]) for k in ("advantages", "vf_preds", "rewards", "eps_id"))
    checked = 0
    for t in range(FRAGMENT - 1):
        same = eps[t] == eps[t + 1]
        expected = rewards[t] + GAMMA * values[t + 1] - values[t] + GAMMA * LAMBDA * adv[t + 1]
        assert np.allclose(adv[t][same], expected[same], atol=1e-4)
        checked += same.sum()
    assert checked > 0
    assert np.allclose(per_step(shared["value_targets"]), adv + values, atol=1e-5)


def test_agents_observing_different_sizes_get_their_own_observations(tmp_path_factory):
    batch, _, env_config = sample_fragment(tmp_path_factory, "simple_tag")
    predator, prey = batch.policy_batches["predator"], batch.policy_batches["prey"]
    assert predator["obs"].shape == (FRAGMENT * NUM_ENVS * 2, 14) and prey["obs"].shape == (FRAGMENT * NUM_ENVS, 12)
    env = VmasVectorEnv(env_config)
    env.reset(seed=SEED)
    first = env.poll()[0]
    expected = [[first[e][a] for a in ("adversary_0", "adversary_1")] for e in range(NUM_ENVS)]
    assert np.allclose(predator["obs"][:NUM_ENVS * 2].reshape(NUM_ENVS, 2, 14), expected)
    assert np.allclose(prey["obs"][:NUM_ENVS], [first[e]["agent_0"] for e in range(NUM_ENVS)])
    assert np.isfinite(predator["advantages"]).all() and np.isfinite(prey["advantages"]).all()
