"""The batched env runner (marlkit/batched_runner.py) on VMAS, Bucket Brigade and a user-style batched env, with
per-agent critics and with centralised ones (marlkit/mappo.py: the `*_mappo` cases).

One subprocess (tests/sample_batches.py, with its own Ray) builds real PPO algorithms, samples fragments with their
local BatchedEnvRunner and logs everything the env was asked and answered. The tests rebuild the trajectories from
that log and hold the runner's batches against a fresh forward pass of the policy, an independent GAE recurrence and
RLlib's stock machinery (per-step action computation, postprocess_trajectory, sequence chopping, PPO's loss). The
batched env adapters are also stepped directly: games that end at different times restart alone.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import vmas
from ray.rllib.env.base_env import ASYNC_RESET_RETURN
from ray.rllib.evaluation.postprocessing import Postprocessing

from conftest import REPO, ray_session_folder, subprocess_env
from envs import ENVS
from envs.bucket_brigade.env import BucketBrigadeBatch
from envs.bucket_brigade.scenarios import obs_layout
from envs.vmas_env import VmasBatch
from sample_batches import (
    BB_CONFIG, CASES, COUNTDOWN_ENVS, FAULTS, FRAGMENT, GAMMA, LAMBDA, MAX_SEQ_LEN, NUM_ENVS, SEED, VMAS_MAX_STEPS,
)

MAPPO_CASES = ("vmas_mappo", "simple_tag_mappo", "countdown_lstm_mappo", "bucket_brigade_mappo")
MODEL_CASES = ("vmas", "simple_tag", "countdown", "countdown_lstm", "countdown_box", "bucket_brigade", *MAPPO_CASES)
REPLAY_CASES = ("countdown_dqn", "vmas_sac")  # DQN and SAC: replayed transitions instead of advantages
# countdown_qmix, countdown_masac: a team's rows, one per game step (the last tests)
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Every case of sample_batches.py, sampled by one subprocess: case -> its pickled result."""
    out = tmp_path_factory.mktemp("batches")
    with ray_session_folder() as temp_dir:
        run = subprocess.run([sys.executable, str(REPO / "tests" / "sample_batches.py"), str(out), str(temp_dir),
                              *CASES], cwd=REPO / "tests", env={**subprocess_env(), "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {}
    for case in CASES:
        with open(out / f"{case}.pkl", "rb") as file:
            results[case] = pickle.load(file)
    return results


def close(actual, expected, rtol=RTOL, atol=ATOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def at(array: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(steps, games, agents, ...) array at (step, game, agent) keys."""
    return array[keys[:, 0], keys[:, 1], keys[:, 2]]


def game_at(array: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(steps, games) array at (step, game, agent) keys."""
    return array[keys[:, 0], keys[:, 1]]


def fragments(result: dict):
    """(fragment index, its steps in the env log, its MultiAgentBatch) of a case."""
    ends = result["log"]["sample_ends"]
    for index, batch in enumerate(result["batches"]):
        yield index, range(([0] + ends)[index], ends[index]), batch


def policy_batches(result: dict):
    """(fragment index, policy id, the policy's rows, the analysis of sample_batches.py, fragment steps)."""
    for index, steps, batch in fragments(result):
        for policy_id, rows in batch.policy_batches.items():
            yield index, policy_id, rows, result["analyses"][index][policy_id], steps


def episodes(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From the env log's valid flags (steps, games): each step's position in its episode (-1 on restart steps)
    and a number per episode, counted from the first reset."""
    position = np.full(valid.shape, -1)
    number = np.full(valid.shape, -1)
    count = 0
    for s in range(len(valid)):
        for e in range(valid.shape[1]):
            if not valid[s, e]:
                continue
            if s == 0 or not valid[s - 1, e]:
                position[s, e], number[s, e] = 0, count
                count += 1
            else:
                position[s, e], number[s, e] = position[s - 1, e] + 1, number[s - 1, e]
    return position, number


def env_actions(case: str, policy_id: str, actions: np.ndarray) -> np.ndarray:
    """What the env must receive for the policy's sampled actions (rows, width)."""
    actions = actions.reshape(len(actions), -1)
    if case.startswith(("vmas", "simple_tag")):  # Box [-1, 1]: unsquashing is the identity, then clipped
        return np.clip(actions, -1.0, 1.0)
    if case == "countdown_box":  # agent_0: Box [0, 4], unsquashed from [-1, 1]; agent_1: unbounded, as sampled
        return np.clip((actions + 1.0) * 2.0, 0.0, 4.0) if policy_id == "agent_0" else actions
    return actions


# ---- the rows are the env's steps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MODEL_CASES + REPLAY_CASES)
def test_rows_are_the_env_steps_of_their_agents_and_metrics_their_episodes(sampled, case):
    """(Replay cases: their rewards and flags are n-step ones, held against RLlib's in the replay test.)"""
    result = sampled[case]
    log = result["log"]
    position, number = episodes(log["valid"])
    games = log["valid"].shape[1]
    for index, steps, batch in fragments(result):
        env_steps = int(log["valid"][steps].sum())
        assert batch.env_steps() == env_steps >= FRAGMENT * games
        assert env_steps - FRAGMENT * games < games  # stops at the first step that reaches the fragment
        ended = [(s, e) for s in steps for e in range(games) if log["terminated"][s, e] or log["truncated"][s, e]]
        metrics = result["metrics"][index]
        assert [m.episode_length for m in metrics] == [position[s, e] + 1 for s, e in ended]
        returns = [log["rewards"][number == number[s, e]].sum() for s, e in ended]
        close([m.episode_reward for m in metrics], returns, atol=1e-4)
    for index, policy_id, rows, analysis, steps in policy_batches(result):
        keys = analysis["keys"]
        assert len(rows) == int(log["valid"][steps].sum()) * len(result["groups"][policy_id])
        size = rows["obs"].shape[1]
        np.testing.assert_array_equal(rows["obs"], at(log["obs_in"], keys)[:, :size])
        if case not in REPLAY_CASES:
            np.testing.assert_array_equal(rows["rewards"], at(log["rewards"], keys))
            np.testing.assert_array_equal(rows["terminateds"], game_at(log["terminated"], keys))
            np.testing.assert_array_equal(rows["truncateds"], game_at(log["truncated"], keys))
        np.testing.assert_array_equal(rows["t"], game_at(position, keys))
        np.testing.assert_array_equal(rows["agent_index"], keys[:, 2])
        pairs = set(zip(rows["eps_id"].tolist(), game_at(number, keys).tolist()))  # one eps_id per episode
        assert len(pairs) == len({p for p, _ in pairs}) == len({n for _, n in pairs})
        expected = env_actions(case, policy_id, rows["actions"])
        close(at(log["actions"], keys)[:, :expected.shape[1]], expected, rtol=0, atol=1e-6)


def test_vmas_fragment_counts_and_episode_boundaries(sampled):
    """3 worlds of 5 steps, 12 steps a fragment: the restart steps (5 and 11) add no rows."""
    result = sampled["vmas"]
    batch, log = result["batches"][0], result["log"]
    assert batch.env_steps() == FRAGMENT * NUM_ENVS
    assert np.flatnonzero(~log["valid"].all(axis=1)).tolist() == [5, 11] and log["valid"].any(axis=1).sum() == 12
    shared = batch.policy_batches["shared"]
    assert len(shared) == FRAGMENT * NUM_ENVS * 2
    per_step = {key: shared[key].reshape(FRAGMENT, NUM_ENVS, 2) for key in ("t", "truncateds", "eps_id")}
    assert per_step["t"][:, 0, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert np.flatnonzero(per_step["truncateds"][:, 0, 0]).tolist() == [4, 9]
    assert len(np.unique(per_step["eps_id"])) == 3 * NUM_ENVS
    assert [m.episode_length for m in result["metrics"][0]] == [VMAS_MAX_STEPS] * (2 * NUM_ENVS)


def test_vmas_rows_equal_stepping_the_stock_vmas_env_by_hand(sampled):
    """The batch's actions, clipped into the action space, sent to RLlib's env of the same VMAS worlds (the BaseEnv of
    RLlib's stock sampler: finished worlds restart through an asynchronous try_reset and a restart step) with the
    same seed give the batch's observations and rewards, across the restarts (VMAS draws its reset positions from a
    random state of its own, not the policy's)."""
    result = sampled["vmas"]
    shared, agents = result["batches"][0].policy_batches["shared"], result["agents"]
    observations, actions, rewards = (shared[key].reshape((FRAGMENT, NUM_ENVS, 2) + shared[key].shape[1:])
                                      for key in ("obs", "actions", "rewards"))
    env = ENVS["vmas"].make(result["env_config"])
    env.reset(seed=SEED)  # RLlib seeds the local runner's env with config.seed + 1000 * worker index (0)

    def stacked(per_env: dict) -> np.ndarray:
        return np.stack([[per_env[e][a] for a in agents] for e in range(NUM_ENVS)])

    close(stacked(env.poll()[0]), observations[0], atol=1e-6)
    restarts = 0
    for t in range(FRAGMENT - 1):
        env_actions = np.clip(actions[t], -1.0, 1.0)  # normalize_actions: [-1, 1] -> the Box bounds [-1, 1]
        env.send_actions({e: {a: env_actions[e, i] for i, a in enumerate(agents)} for e in range(NUM_ENVS)})
        stepped, step_rewards, terminated, truncated, _, _ = env.poll()
        close([[step_rewards[e][a] for a in agents] for e in range(NUM_ENVS)], rewards[t], atol=1e-6)
        ended = [terminated[e]["__all__"] or truncated[e]["__all__"] for e in range(NUM_ENVS)]
        if any(ended):
            assert all(ended), "episodes of a fixed length end together"
            assert all(env.try_reset(e) == (ASYNC_RESET_RETURN, ASYNC_RESET_RETURN) for e in range(NUM_ENVS))
            env.send_actions({})  # the restart step: no episode is active, RLlib sends no actions
            stepped = env.poll()[0]
            restarts += 1
        close(stacked(stepped), observations[t + 1], atol=1e-5)
    assert restarts == 2


def test_agents_observing_different_sizes_get_their_own_observations(sampled):
    result = sampled["simple_tag"]
    batch, log, agents = result["batches"][0], result["log"], result["agents"]
    predator, prey = batch.policy_batches["predator"], batch.policy_batches["prey"]
    assert predator["obs"].shape == (FRAGMENT * NUM_ENVS * 2, 14) and prey["obs"].shape == (FRAGMENT * NUM_ENVS, 12)
    assert (log["obs_in"][:, :, agents.index("agent_0"), 12:] == 0).all()  # the prey's padding
    env = ENVS["vmas"].make(result["env_config"])
    env.reset(seed=SEED)
    first = env.poll()[0]
    close(predator["obs"][:NUM_ENVS * 2].reshape(NUM_ENVS, 2, 14),
          [[first[e][a] for a in ("adversary_0", "adversary_1")] for e in range(NUM_ENVS)])
    close(prey["obs"][:NUM_ENVS], [first[e]["agent_0"] for e in range(NUM_ENVS)])


# ---- what PPO learns from -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MODEL_CASES)
def test_stored_logp_dist_inputs_and_values_are_a_fresh_forward_pass(sampled, case):
    """The policy's model run again over the batch as PPO's loss sees it (recurrent: padded sequences from seq_lens
    and the state_in at each sequence start) gives the stored ACTION_DIST_INPUTS, ACTION_LOGP and VF_PREDS."""
    for _, _, rows, analysis, _ in policy_batches(sampled[case]):
        replay = analysis["replay"]
        close(rows["action_dist_inputs"], replay["dist_inputs"])
        close(rows["action_logp"], replay["logp"])
        close(rows["vf_preds"], replay["vf"])
        if analysis["recurrent"]:  # the stored states matter: from initial states only, the pass differs
            assert np.abs(analysis["replay_initial_states"]["dist_inputs"] - rows["action_dist_inputs"]).max() > 1e-3


def gae(rows, keys: np.ndarray, log: dict, bootstrap: np.ndarray, gamma: float, lambda_: float,
        bootstrap_truncated: bool = True) -> np.ndarray:
    """Advantages by the GAE recurrence, backwards along each (game, agent) of the fragment, from the env's flags:
    the next value is 0 after a termination, `bootstrap` (the value of the observation the step returned: the final
    one) after a truncation and at the fragment's end, else the next row's value."""
    row_of = {tuple(key): i for i, key in enumerate(keys.tolist())}
    last_step = keys[:, 0].max()
    advantages = np.zeros(len(keys))
    for (s, e, a), i in sorted(row_of.items(), key=lambda item: -item[0][0]):
        following = row_of.get((s + 1, e, a))
        if log["terminated"][s, e]:
            next_value, carried = 0.0, 0.0
        elif log["truncated"][s, e]:
            next_value, carried = (bootstrap[i] if bootstrap_truncated else 0.0), 0.0
        elif following is None:
            assert s == last_step, f"row {(s, e, a)} neither ends its episode nor the fragment yet has no successor"
            next_value, carried = bootstrap[i], 0.0
        else:
            next_value, carried = rows["vf_preds"][following], advantages[following]
        advantages[i] = rows["rewards"][i] + gamma * next_value - rows["vf_preds"][i] + gamma * lambda_ * carried
    return advantages


@pytest.mark.parametrize("case", MODEL_CASES)
def test_advantages_follow_gae_bootstrapping_truncation_from_the_final_observation_and_termination_from_zero(
        sampled, case):
    """Advantages and value targets against `gae` computed here from the env's rewards and flags, the stored values
    and the policy's value of each final observation (with its recurrent state), computed apart from the runner."""
    result = sampled[case]
    gamma, lambda_ = result["config"]["gamma"], result["config"]["lambda"]
    assert (gamma, lambda_) == (GAMMA, LAMBDA)
    for _, _, rows, analysis, _ in policy_batches(result):
        bootstrap = analysis["stock"]["next_vf"]  # the policy's value of each step's returned observation
        expected = gae(rows, analysis["keys"], result["log"], bootstrap, gamma, lambda_)
        close(rows["advantages"], expected, atol=1e-5)
        close(rows["value_targets"], expected + rows["vf_preds"], atol=1e-5)
        truncated = rows["truncateds"].astype(bool)
        if truncated.any():  # the test can tell: bootstrapping truncations from 0 gives other advantages
            assert np.abs(bootstrap[truncated]).min() > 1e-4
            wrong = gae(rows, analysis["keys"], result["log"], bootstrap, gamma, lambda_, bootstrap_truncated=False)
            assert np.abs(wrong - rows["advantages"]).max() > 1e-3


def test_countdown_games_end_at_different_steps_by_termination_and_truncation(sampled):
    """The GAE test above sees both kinds of ending, at different steps in different games, mid-fragment, and games
    that report both flags; at a truncation the final observation's value is not the value of the next game's first
    observation."""
    for case in ("countdown", "countdown_lstm"):
        result = sampled[case]
        log = result["log"]
        for _, steps, _ in fragments(result):
            terminated, truncated = log["terminated"][steps], log["truncated"][steps]
            assert terminated[:-1].sum() >= 2 and truncated[:-1].sum() >= 2
            assert len({tuple(row) for row in (terminated | truncated)[:-1] if row.any()}) >= 3  # ends differ per game
        assert log["both"].any()  # terminated on the last allowed step: the rows say terminated, not truncated
        for _, _, rows, analysis, _ in policy_batches(result):
            row_of = {tuple(key): i for i, key in enumerate(analysis["keys"].tolist())}
            checked = 0
            for i in np.flatnonzero(rows["truncateds"]):
                s, e, a = analysis["keys"][i]
                restart_first = row_of.get((s + 2, e, a))  # the next game's first row, after the restart step
                if restart_first is not None:
                    assert abs(analysis["stock"]["next_vf"][i] - rows["vf_preds"][restart_first]) > 1e-4
                    checked += 1
            assert checked > 0


@pytest.mark.parametrize("case", MODEL_CASES)
def test_same_values_advantages_and_first_ppo_loss_as_rllib_stock_machinery(sampled, case):
    """RLlib's own per-step action computation over the env log (recurrent state carried per (game, agent) from each
    episode's start), compute_log_likelihoods, postprocess_trajectory per (episode, agent) and sequence chopping give
    the same rows, sequences and first PPO loss (same weights) as the batched runner."""
    for _, _, rows, analysis, _ in policy_batches(sampled[case]):
        stock = analysis["stock"]
        np.testing.assert_array_equal(rows["t"], stock["t"])
        for column in ("vf_preds", "action_dist_inputs", "action_logp", "advantages", "value_targets"):
            close(rows[column], stock[column], atol=1e-5 if column in ("advantages", "value_targets") else ATOL)
        assert analysis["loss"] == pytest.approx(analysis["stock_loss"], rel=RTOL)
        if analysis["recurrent"]:
            seq_lens = rows["seq_lens"]
            assert seq_lens.tolist() == expected_sequences(analysis["keys"], rows["t"], analysis["max_seq_len"])
            assert sorted(seq_lens.tolist()) == sorted(analysis["stock_seq_lens"].tolist())
            starts = np.cumsum([0, *seq_lens[:-1]])
            for i, state in enumerate(stock["state_in"]):
                close(rows[f"state_in_{i}"], state[starts])


def expected_sequences(keys: np.ndarray, t: np.ndarray, max_seq_len: int) -> list[int]:
    """Sequence lengths of rows in (game, agent, time) order: a new sequence at each (game, agent), each episode
    start and after max_seq_len rows."""
    lengths = []
    for i, (s, e, a) in enumerate(keys.tolist()):
        same_lane = i > 0 and tuple(keys[i - 1, 1:]) == (e, a)
        if same_lane and t[i] != 0 and lengths[-1] < max_seq_len:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def test_recurrent_state_starts_every_episode_from_the_models_initial_state(sampled):
    """sample_batches.py gives the LSTM an initial state of 0.5 (h) and -0.25 (c), as a learned one would be."""
    for _, _, rows, analysis, _ in policy_batches(sampled["countdown_lstm"]):
        assert rows["seq_lens"].max() == MAX_SEQ_LEN
        starts = np.cumsum([0, *rows["seq_lens"][:-1]])
        assert set(np.flatnonzero(rows["t"] == 0)) <= set(starts.tolist())
        first = rows["t"][starts] == 0  # per sequence: it starts an episode
        assert first.sum() >= COUNTDOWN_ENVS * 2 and len(rows["state_in_0"]) == len(starts)
        np.testing.assert_array_equal(rows["state_in_0"][first], 0.5)
        np.testing.assert_array_equal(rows["state_in_1"][first], -0.25)
        assert np.abs(rows["state_in_0"][~first] - 0.5).min() > 1e-4  # later sequences carry the state on


def test_box_actions_are_unsquashed_only_into_bounded_spaces(sampled):
    result = sampled["countdown_box"]
    log = result["log"]
    for _, policy_id, rows, analysis, _ in policy_batches(result):
        sent = at(log["actions"], analysis["keys"])[:, 0]
        assert np.isfinite(sent).all()
        if policy_id == "agent_0":
            assert 0.0 <= sent.min() and sent.max() <= 4.0 and sent.max() - sent.min() > 1.0
        else:
            np.testing.assert_array_equal(sent, rows["actions"][:, 0])
            assert (np.abs(sent) > 1.0).any()  # unbounded: nothing clipped to [-1, 1]


# ---- games that end at different times ----------------------------------------------------------------------------

VMAS_STAGGERED = {"scenario": "navigation", "n_agents": 1, "collisions": False, "agent_radius": 0.2,
                  "world_spawning_x": 0.3, "world_spawning_y": 0.3, "max_steps": 10, "seed": 3, "num_envs": 4}


def test_vmas_worlds_that_end_at_different_times_restart_alone():
    """VmasBatch against VMAS itself with the same seed and actions, the contract of envs/batched.py played by hand
    (a finished world is stepped once more, ignoring its actions, then reset on its own with VMAS reset_at; all
    worlds at once with reset when all finished): the other worlds go on undisturbed, the restart step returns the
    new first observation, zero rewards and false flags whatever actions it got, episodes last max_steps steps unless
    they terminate. (VMAS draws from a random state of its own, so both runs see the same draws.)"""
    steps, games = 30, VMAS_STAGGERED["num_envs"]
    batched = VmasBatch(VMAS_STAGGERED)
    observations = batched.reset()
    record = []  # per step: actions, observations, rewards, terminated, truncated
    restarting = torch.zeros(games, dtype=torch.bool)
    for _ in range(steps):
        actions = torch.clamp(-20 * observations[..., 4:6] - 2 * observations[..., 2:4], -1, 1)  # to the goal
        actions[restarting] = 1.0  # the restart step ignores these
        observations, rewards, terminated, truncated = batched.step(actions)
        record.append([x.clone() for x in (actions, observations, rewards, terminated, truncated)])
        restarting = terminated | truncated
    actions, observations, rewards, terminated, truncated = (torch.stack(x).numpy() for x in zip(*record))
    done = terminated | truncated
    assert terminated.any() and truncated.any() and len({tuple(row) for row in done if row.any()}) >= 3

    scenario = {k: v for k, v in VMAS_STAGGERED.items() if k not in ("scenario", "num_envs", "max_steps", "seed")}
    world = vmas.make_env(VMAS_STAGGERED["scenario"], num_envs=games, device="cpu", continuous_actions=True,
                          max_steps=VMAS_STAGGERED["max_steps"], seed=VMAS_STAGGERED["seed"], dict_spaces=True,
                          terminated_truncated=True, **scenario)
    world.seed(VMAS_STAGGERED["seed"])  # as VmasBatch.reset does
    world.reset()
    for s in range(steps):
        restart = done[s - 1] if s else np.zeros(games, dtype=bool)
        if restart.all():
            expected = world.reset()["agent_0"].numpy()
            close(observations[s, :, 0], expected, atol=1e-6)
        else:
            hand_actions = torch.as_tensor(np.where(restart[:, None, None], 0.0, actions[s]))
            stepped, hand_rewards, hand_terminated, hand_truncated, _ = world.step({"agent_0": hand_actions[:, 0]})
            for e in range(games):
                if restart[e]:
                    close(observations[s, e, 0], world.reset_at(e)["agent_0"][e].numpy(), atol=1e-6)
                else:
                    close(observations[s, e, 0], stepped["agent_0"][e].numpy(), atol=1e-5)
                    close(rewards[s, e, 0], float(hand_rewards["agent_0"][e]), atol=1e-6)
                    assert bool(hand_terminated[e]) == terminated[s, e]
                    assert bool(hand_truncated[e] & ~hand_terminated[e]) == truncated[s, e]
        assert (rewards[s][restart] == 0).all() and not (terminated[s] | truncated[s])[restart].any()
        assert (observations[s][restart][..., 2:4] == 0).all()  # a new world: the agent at rest
    lengths = {True: [], False: []}  # truncated?: lengths of the whole episodes (after a restart)
    for e in range(games):
        ends = np.flatnonzero(done[:, e])
        for start, end in zip(ends[:-1] + 2, ends[1:]):
            lengths[bool(truncated[end, e])].append(end - start + 1)
    assert set(lengths[True]) == {VMAS_STAGGERED["max_steps"]} and 0 < min(lengths[False])
    assert max(lengths[False]) <= VMAS_STAGGERED["max_steps"] and len(set(lengths[False])) >= 2


def test_bucket_brigade_games_that_end_at_different_nights_restart_alone():
    """Four games against two with the same seed and actions (every game has its own random stream): games 0 and 1
    are identical although games 2 and 3 end and restart at other nights; a restarting game ignores its actions
    (here out of range) and returns night 0, zero rewards and false flags; the others' nights go on."""
    nights, layout = 40, obs_layout(10, BB_CONFIG["num_agents"])
    max_nights = BB_CONFIG["max_nights"]
    four = BucketBrigadeBatch({**BB_CONFIG, "num_envs": 4, "seed": 11})
    two = BucketBrigadeBatch({**BB_CONFIG, "num_envs": 2, "seed": 11})
    previous = four.reset().copy()
    np.testing.assert_array_equal(previous[:2], two.reset())
    rng = np.random.default_rng(0)
    restart = np.zeros(4, dtype=bool)
    ends = []
    for _ in range(nights):
        actions = np.stack([rng.integers(0, 10, (4, 4)), rng.integers(0, 2, (4, 4)), rng.integers(0, 2, (4, 4))], -1)
        actions[restart, :, 0] = 99  # ignored: these games restart
        answer = [np.array(x, copy=True) for x in four.step(actions)]
        for mine, theirs in zip(answer, two.step(actions[:2])):
            np.testing.assert_array_equal(mine[:2], theirs)
        observations, rewards, terminated, truncated = answer
        night = np.rint(observations[:, 0, layout["night"]][:, 0] * max_nights)
        before = np.rint(previous[:, 0, layout["night"]][:, 0] * max_nights)
        assert (night[restart] == 0).all() and (rewards[restart] == 0).all()
        assert not (terminated[restart] | truncated[restart]).any()
        np.testing.assert_array_equal(night[~restart], before[~restart] + 1)
        assert (night[truncated] == max_nights).all() and (night[terminated] >= BB_CONFIG["min_nights"]).all()
        ends.append(terminated | truncated)
        restart, previous = terminated | truncated, observations
    ends = np.array(ends)
    assert ends[:, 2:].any() and len({tuple(row) for row in ends if row.any()}) >= 4  # at different nights


# ---- replayed transitions (DQN, SAC) -------------------------------------------------------------------------------


@pytest.mark.parametrize("case, n_step, explored", [("countdown_dqn", 3, 0.3), ("vmas_sac", 2, 0.99)])
def test_replay_rows_are_rllibs_nstep_transitions_of_each_trajectory(sampled, case, n_step, explored):
    """Each row's next observation (a finished game's final one), n-step reward, flags and replay weight (DQN:
    worker-side TD-error priorities) are what the policy's own postprocess_trajectory (RLlib's adjust_nstep) gives
    its trajectory rebuilt from the env log; the actions explore (epsilon-greedy at epsilon 1 on two actions: about
    half differ from the greedy ones; SAC samples: all differ)."""
    result = sampled[case]
    assert result["config"]["n_step"] == n_step
    for index, policy_id, rows, analysis, steps in policy_batches(result):
        assert analysis["transitions"] and Postprocessing.ADVANTAGES not in rows
        for column, expected in analysis["stock"].items():
            close(rows[column], expected, atol=1e-5)
        log = result["log"]
        assert not np.allclose(rows["rewards"], at(log["rewards"], analysis["keys"]))  # sums over n steps
        greedy = analysis["greedy"].reshape(len(rows), -1)
        assert np.mean((greedy != rows["actions"].reshape(len(rows), -1)).any(axis=1)) >= explored, case


# ---- policies that do not learn, bad env arrays ---------------------------------------------------------------------


def test_policies_not_trained_add_no_rows_and_scripted_actions_are_in_range(sampled):
    """Bucket Brigade: agent_0 learns, agent_1 plays a frozen network, agent_2 the firefighter, agent_3 random."""
    result = sampled["bucket_brigade"]
    batch, log = result["batches"][0], result["log"]
    assert result["policies"] == {"learner": {"trained": True, "model": True},
                                  "frozen": {"trained": False, "model": True},
                                  "firefighter": {"trained": False, "model": False},
                                  "others": {"trained": False, "model": False}}
    assert set(batch.policy_batches) == {"learner"}
    assert len(batch.policy_batches["learner"]) == batch.env_steps() == int(log["valid"].sum())
    sent = log["actions"][log["valid"]]  # (env steps, agents, (house, mode, signal))
    assert ((sent[..., 0] >= 0) & (sent[..., 0] < 10)).all() and np.isin(sent[..., 1:], (0, 1)).all()
    firefighter = sent[:, 2]  # honest, works most nights, at its own house (2) or one burning in its own view
    np.testing.assert_array_equal(firefighter[:, 2], firefighter[:, 1])
    assert firefighter[:, 1].mean() > 0.6
    burning = log["obs_in"][..., 2, obs_layout(10, 4)["houses"]][log["valid"]] == 1
    calm = ~burning.any(axis=1)
    assert calm.sum() >= 5 and (firefighter[calm, 0] == 2).all()
    assert (burning[np.arange(len(sent)), firefighter[:, 0]] | (firefighter[:, 0] == 2)).all()
    for agent in (1, 3):  # the frozen network and the random agent: all kinds of actions
        assert len(np.unique(sent[:, agent, 0])) >= 5 and len(np.unique(sent[:, agent, 1])) == 2


def test_bad_env_arrays_are_one_line_errors_naming_the_env_call_and_array(sampled):
    errors = sampled["faults"]["errors"]
    assert errors[FAULTS[0]] == ("BatchedEnvError", True, "env 'countdown': reset() returned observations of shape "
                                 "(4, 1, 3) and dtype float32; expected shape (4, 2, 3) and a float dtype")
    g = COUNTDOWN_ENVS
    expected = {  # fault: the shape and dtype returned, the shape and kind of dtype expected
        ("reset", "observations", "shape"): ((g, 1, 3), "float32", (g, 2, 3), "float"),
        ("reset", "observations", "dtype"): ((g, 2, 3), "int64", (g, 2, 3), "float"),
        ("step", "observations", "shape"): ((g, 1, 3), "float32", (g, 2, 3), "float"),
        ("step", "rewards", "shape"): ((g, 1), "float32", (g, 2), "float"),
        ("step", "rewards", "dtype"): ((g, 2), "int64", (g, 2), "float"),
        ("step", "terminated", "dtype"): ((g,), "int64", (g,), "bool"),
        ("step", "truncated", "shape"): ((g, 1), "bool", (g,), "bool"),
    }
    assert list(expected) == FAULTS
    for (call, array, _), (shape, dtype, wanted, kind) in expected.items():
        message = (f"env 'countdown': {call}() returned {array} of shape {shape} and dtype {dtype}; "
                   f"expected shape {wanted} and a {kind} dtype")
        assert errors[(call, array, _)] == ("BatchedEnvError", True, message)
    assert errors[None] >= FRAGMENT * g * 2  # sound arrays again: the runner samples on


# ---- centralised critics (MAPPO) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MAPPO_CASES)
def test_centralised_critic_runs_once_per_game_when_sampling_and_training(sampled, case):
    """While sampling, each critic pass reads one row per game (never one per agent); in PPO's loss the critic reads
    only the first agent row of each (step, game), which carries the joint input of all agents at that step
    (scripted ones and other policies' included, each padded to the widest observation, then presence flags) and
    the value targets of all the policy's agents; the other rows carry nothing. The stock-sampler path (per agent
    row, the same joint input gathered from the episode's rows at the same step) gives the same loss (the shared
    stock-machinery test) with one critic row per agent row."""
    result = sampled[case]
    trained = [pid for pid, p in result["policies"].items() if p["trained"] and p["model"]]
    assert sorted(result["critic_calls"]) == sorted(trained)
    num_envs = result["env_config"]["num_envs"]
    for pid, calls in result["critic_calls"].items():
        assert set(calls) == {num_envs}, calls
    for _, pid, rows, analysis, _ in policy_batches(result):
        assert analysis["central"]
        keys, k = analysis["keys"], len(result["groups"][pid])
        carriers = rows["critic_weights"].sum(axis=1) > 0
        first_agent = keys[:, 2] == result["groups"][pid][0]
        np.testing.assert_array_equal(carriers, first_agent)
        np.testing.assert_array_equal(rows["critic_weights"][carriers], np.ones((carriers.sum(), k)))
        assert not rows["critic_obs"][~carriers].any() and not rows["critic_targets"][~carriers].any()
        close(rows["critic_obs"][carriers], game_at(analysis["joint"], keys[carriers]))
        row_of = {tuple(key): i for i, key in enumerate(keys.tolist())}
        for i in np.flatnonzero(carriers):
            s, e, _ = keys[i]
            expected = [rows["value_targets"][row_of[(s, e, a)]] for a in result["groups"][pid]]
            close(rows["critic_targets"][i], expected)
        assert analysis["critic_rows"] == carriers.sum() == len(rows) // k
        assert analysis["stock_critic_rows"] == len(rows)
    assert rows["critic_obs"].shape[1] == len(result["agents"]) * (result["log"]["obs_in"].shape[-1] + 1)


# ---- whole game steps (value mixers) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case, host", [("countdown_qmix", "agent_0"), ("countdown_masac", "agent_0"),
                                        ("simple_tag_vdn", "predator")])
def test_a_teams_rows_are_whole_game_steps_and_its_other_policies_add_none(sampled, case, host):
    """QMIX over two per-agent DQN policies, MASAC over two per-agent SAC policies, VDN over simple_tag's predators
    and prey, whose observations differ in size (marlkit/team.py): the host's rows are one per valid (step, game) of
    the env log, holding every agent's observation (zero-padded to the widest) and the actions the env received, and
    each agent's n-step reward, next observation and flags as RLlib's adjust_nstep gives its trajectory; the team's
    other policy adds no rows, and one learning step changes every team policy's network."""
    result = sampled[case]
    for index, steps, batch in fragments(result):
        assert set(batch.policy_batches) == {host}
        rows = batch.policy_batches[host]
        analysis = result["analyses"][index][host]
        assert analysis["game_steps"] and len(rows) == int(result["log"]["valid"][steps].sum())
        for column, expected in analysis["stock"].items():
            close(rows[column], expected)
        assert (rows["weights"] == 1).all()
        if result["config"]["n_step"] == 2:
            assert not np.allclose(rows["rewards"], at(result["log"]["rewards"], np.column_stack(
                [analysis["keys"], np.zeros(len(rows), dtype=np.int64)]))[:, None])  # summed over 2 steps
    if case == "simple_tag_vdn":
        assert result["then"]["changed"] == {"predator": True, "prey": True}


def test_one_qmix_step_is_its_td_error_by_hand_and_trains_the_team_and_the_mixer(sampled):
    """The team TD error equals a computation by hand (QMIX's mix written out in numpy), and one learning step changes
    both agents' Q-networks and the mixer, not the target networks."""
    learning = sampled["countdown_qmix"]["then"]
    close(learning["td_error"], learning["by_hand"], atol=1e-5)
    close(learning["learned_td_error"], learning["td_error"], atol=1e-6)
    assert learning["changed"] == {"agent_0 q-network": True, "agent_0 mixer": True, "agent_1 q-network": True,
                                   "target agent_0 q-network": False, "target agent_0 mixer": False,
                                   "target agent_1 q-network": False}


def test_one_masac_step_is_its_losses_by_hand_and_trains_every_actor_and_the_central_critics(sampled):
    """Discrete MASAC's critic, actor and temperature losses equal the same written out per agent and game step;
    one learning step changes both actors, both temperatures and the centralised critics, not their targets nor
    agent_1's own (unused) Q-network."""
    learning = sampled["countdown_masac"]["then"]
    for name, loss in learning["losses"].items():
        close(loss, learning["by_hand"][name], rtol=1e-5, atol=1e-6)
    assert learning["losses"]["alpha"] != 0
    assert learning["changed"] == {"agent_0 actor": True, "agent_1 actor": True, "critics": True,
                                   "agent_1 own q-network": False, "target critics": False,
                                   "log_alphas": [True, True]}


def test_a_centralised_critic_reads_the_pettingzoo_state(sampled):
    """simple_spread's global state (PettingZoo's `state()`: every agent's observation) is the critic's input: on
    each game's carrier row, a state the env gave, equal to that step's observations of the 3 agents; the critic
    trains on it."""
    result = sampled["spread_mappo"]
    assert result["input_size"] == 54  # the state, not the joint input of 3 x (18 + 1)
    carriers = result["weights"].sum(axis=1) > 0
    critic_obs = result["critic_obs"][carriers]
    assert critic_obs.shape[0] >= FRAGMENT * NUM_ENVS and critic_obs.shape[1] == 54
    rows = carriers.nonzero()[0][:, None] + np.arange(3)  # a carrier row and its game's other agents, same step
    close(critic_obs, result["obs"][rows].reshape(-1, 54))
    given = {tuple(np.round(state, 5)) for state in result["states"].reshape(-1, 54)}
    assert all(tuple(np.round(row, 5)) in given for row in critic_obs)
    assert result["critic_changed"]
