"""Samples fragments with real algorithms' local BatchedEnvRunner (PPO, DQN, SAC); pickles what test_batched_runner.py
checks.

Run as a script by test_batched_runner.py, so that Ray and torch start in a process of their own:
    python tests/sample_batches.py OUT_DIR TEMP_DIR CASE [CASE ...]
writes OUT_DIR/<CASE>.pkl for each CASE of `CASES`.

Every case logs what its batched env was asked and answered (`EnvLog`), so the tests rebuild the trajectories from
the env's side rather than from the runner's batch. For each trained policy and fragment, it also computes here,
where the policy lives (`analyse`):
  - `replay`: a fresh forward pass of the policy's model over the batch as PPO's loss sees it (recurrent: padded
    sequences from `seq_lens` and the `state_in_*` at sequence starts);
  - `stock`: RLlib's stock machinery on the env log: per-step `compute_actions_from_input_dict` with the recurrent
    state carried per (game, agent) from each episode's start, `compute_log_likelihoods`, one SampleBatch per
    (episode, agent) postprocessed by the policy's own `postprocess_trajectory` (GAE, bootstrap from NEXT_OBS and
    the last state_out), concatenated and padded into sequences by RLlib's `pad_batch_to_sequences_of_same_size`;
  - the first PPO loss (`policy.loss`, same weights) on the runner's batch and on the stock batch.

`Countdown` is a user-style batched env of the tests (registered as `countdown` in `envs.ENVS` here) whose games end
at different steps, by termination or by truncation.

Cases: vmas (navigation, a shared feed-forward policy), simple_tag (VMAS agents observing different sizes),
countdown (feed-forward, two fragments), countdown_lstm (model/lstm.py with a non-zero initial state, two fragments),
countdown_box (Box actions, bounded and unbounded), bucket_brigade (a learner, a frozen network, scripted
opponents), faults (env arrays of the wrong shape or dtype); the `*_mappo` cases with centralised critics; DQN and
SAC (countdown_dqn, vmas_sac: replayed transitions, `analyse_transitions`); countdown_qmix, simple_tag_vdn (a team
of two policies observing different sizes) and countdown_masac (a team's rows of whole game steps,
`analyse_game_steps`, and one team learning step, beside its losses by hand for QMIX and MASAC).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.rnn_sequencing import pad_batch_to_sequences_of_same_size
from ray.rllib.policy.sample_batch import SampleBatch, concat_samples
from ray.rllib.algorithms.dqn.dqn_tf_policy import PRIO_WEIGHTS

import envs
from conftest import tiny_experiment
from envs.batched import BatchedEnv
from marlkit import launch, spec
from marlkit.batched_runner import BatchedEnvError, BatchedEnvRunner
from marlkit.game_values import GameSteps
from marlkit.mappo import CentralCriticPPOPolicy

NUM_ENVS, FRAGMENT, SEED = 3, 12, 7
GAMMA, LAMBDA = 0.9, 0.8
VMAS_MAX_STEPS = 5
COUNTDOWN_ENVS, COUNTDOWN_MAX_STEPS, COUNTDOWN_FRAGMENTS, MAX_SEQ_LEN = 4, 5, 2, 3
BB_CONFIG = {"scenario": "hard", "num_agents": 4, "max_nights": 6, "min_nights": 2, "reward_scale": 0.01}


class Countdown(BatchedEnv):
    """Two agents per game, each paid 1 for repeating a bit it sees (action == bit). Every game draws its length
    (2 to 7 steps) when it starts: it terminates after that many steps (with a bonus of 1 to each agent), or is
    truncated at `max_steps` first; a game that terminates on its last allowed step reports both flags (Gymnasium
    allows it; it counts as terminated). Observations (clock / max_steps, the bit, a constant of the game and agent)
    make every final observation differ from the next game's first.

    env_config: num_envs, max_steps (default 5), seed, box_actions (default false: Discrete(2) actions; true:
    agent_0 acts in Box [0, 4], agent_1 in an unbounded Box, both paid 1 - min(|action - bit|, 2)).
    `fault` (attribute): None, or (call, array, kind): that call ("reset" or "step") returns that array with a wrong
    "shape" or "dtype" (the `faults` case).
    """

    fault = None

    def __init__(self, env_config: dict):
        self.num_envs = int(env_config.get("num_envs", 1))
        self.max_steps = int(env_config.get("max_steps", 5))
        self.possible_agents = ["agent_0", "agent_1"]
        self.observation_spaces = {a: gym.spaces.Box(-10.0, 10.0, (3,), np.float32) for a in self.possible_agents}
        self.box_actions = bool(env_config.get("box_actions", False))
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents} if not self.box_actions else {
            "agent_0": gym.spaces.Box(0.0, 4.0, (1,), np.float32),
            "agent_1": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)}
        self._rng = np.random.default_rng(env_config.get("seed"))

    def _start(self, games: np.ndarray) -> None:
        count = int(games.sum())
        self.clock[games] = 0
        self.length[games] = self._rng.integers(2, 8, count)
        self.constant[games] = self._rng.normal(size=(count, 2)).astype(np.float32)
        self.bit[games] = self._rng.integers(0, 2, (count, 2))

    def _observations(self) -> np.ndarray:
        clock = np.broadcast_to((self.clock / self.max_steps)[:, None], (self.num_envs, 2))
        return np.stack([clock, self.bit, self.constant], axis=-1).astype(np.float32)

    def reset(self, seed=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.clock = np.zeros(self.num_envs, dtype=np.int64)
        self.length = np.zeros(self.num_envs, dtype=np.int64)
        self.constant = np.zeros((self.num_envs, 2), dtype=np.float32)
        self.bit = np.zeros((self.num_envs, 2), dtype=np.int64)
        self.restart = np.zeros(self.num_envs, dtype=bool)
        self._start(np.ones(self.num_envs, dtype=bool))
        return self._faulty("reset", {"observations": self._observations()})[0]

    def step(self, actions):
        actions = actions.cpu().numpy()[..., 0]
        playing = ~self.restart
        if self.box_actions:
            rewards = (1.0 - np.minimum(np.abs(actions - self.bit), 2.0)).astype(np.float32)
        else:
            rewards = (actions == self.bit).astype(np.float32)
        self.clock[playing] += 1
        terminated = playing & (self.clock >= self.length)
        truncated = playing & (self.clock >= self.max_steps)
        rewards[terminated] += 1.0
        self.bit[playing] = self._rng.integers(0, 2, (int(playing.sum()), 2))
        rewards[self.restart] = 0.0
        self._start(self.restart)
        self.restart = terminated | truncated
        return self._faulty("step", {"observations": self._observations(), "rewards": rewards,
                                     "terminated": terminated, "truncated": truncated})

    def _faulty(self, call: str, arrays: dict) -> tuple:
        """The arrays, one of them broken as `fault` says."""
        if self.fault is not None and self.fault[0] == call:
            _, name, kind = self.fault
            array = arrays[name]
            if kind == "dtype":
                arrays[name] = array.astype(np.int64)
            else:  # a missing axis entry (games, 1, ...), or an extra axis for flags (games, 1)
                arrays[name] = array[:, :1] if array.ndim > 1 else array[:, None]
        return tuple(arrays.values())


def register_countdown() -> None:
    envs.ENVS["countdown"] = envs.EnvEntry(check_config=lambda config: None, create_batch=Countdown)


class EnvLog:
    """What a batched env was asked and answered: the first observations of `reset` and, per step, the actions in
    and the arrays out (numpy copies); `sample_ends`: the number of steps logged when each sample() returned."""

    def __init__(self, env):
        self.first, self.steps, self.sample_ends = None, [], []
        reset, step = env.reset, env.step

        def logged_reset(seed=None):
            observations = reset(seed)
            assert self.first is None, "one reset per runner"
            self.first = _numpy(observations)
            return observations

        def logged_step(actions):
            answer = step(actions)
            self.steps.append((_numpy(actions), *(_numpy(a) for a in answer)))
            return answer

        env.reset, env.step = logged_reset, logged_step

    def arrays(self) -> dict:
        """(steps, games, ...) arrays: obs_in (what the policies saw), actions, obs_out, rewards, terminated,
        truncated (not terminated), both (both flags came), valid (false on the step after a game ended: its
        restart)."""
        actions, obs_out, rewards, terminated, truncated = (np.stack(column) for column in zip(*self.steps))
        done = terminated | truncated
        return {
            "obs_in": np.concatenate([self.first[None], obs_out[:-1]]), "actions": actions, "obs_out": obs_out,
            "rewards": rewards, "terminated": terminated, "truncated": truncated & ~terminated,
            "both": terminated & truncated,
            "valid": np.concatenate([np.ones_like(done[:1]), ~done[:-1]]), "sample_ends": list(self.sample_ends),
        }


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy().copy() if isinstance(array, torch.Tensor) else np.array(array, copy=True)


def row_keys(valid: np.ndarray, steps: range, group: list[int], recurrent: bool) -> np.ndarray:
    """(rows, 3) = (step, game, agent) of a policy's rows in the runner's documented order: (step, game, agent) for
    feed-forward policies, (game, agent, step) for recurrent ones; valid steps of the fragment only."""
    keys = [(s, e, a) for s in steps for e in range(valid.shape[1]) for a in group if valid[s, e]]
    if recurrent:
        keys.sort(key=lambda key: (key[1], group.index(key[2]), key[0]))
    return np.array(keys, dtype=np.int64).reshape(-1, 3)


def joint_of(observations: np.ndarray) -> np.ndarray:
    """(..., agents, widest) env observations -> the documented joint input of marlkit/mappo.py, built here
    apart from it: every agent's observation in the env's order, then a presence flag per agent (all present)."""
    flat = observations.reshape(observations.shape[:-2] + (-1,))
    return np.concatenate([flat, np.ones(observations.shape[:-1], np.float32)], axis=-1).astype(np.float32)


def critic_values(policy, observations: np.ndarray) -> np.ndarray:
    """(steps, games, agents, widest) -> (steps, games, agents of the policy): its centralised critic's values."""
    joint = joint_of(observations)
    with torch.no_grad():
        values = policy.model.central_critic(torch.as_tensor(joint.reshape(-1, joint.shape[-1])))
    return values.numpy().reshape(joint.shape[:2] + (-1,))


def stock_forward(policy, group: list[int], size: int, log: dict) -> dict:
    """RLlib's per-step action computation over the whole log, state carried per (game, agent) lane from each
    episode's first step: (steps, games, agents of the policy, ...) arrays of VF_PREDS, ACTION_DIST_INPUTS, state
    in and out, and the value of the observation each step returned (with the state out). A centralised critic's
    values come from the critic over the joint input of the env's observations (`critic_values`)."""
    steps, games, k = len(log["valid"]), log["valid"].shape[1], len(group)
    initial = [np.asarray(s) for s in policy.get_initial_state()]
    state = [np.broadcast_to(s, (games * k,) + s.shape).copy() for s in initial]
    out = {"vf": [], "dist_inputs": [], "next_vf": [], "state_in": [], "state_out": []}

    def forward(observations, state_in):
        rows = SampleBatch({SampleBatch.OBS: observations.reshape(games * k, size),
                            **{f"state_in_{i}": s for i, s in enumerate(state_in)}})
        _, state_out, fetches = policy.compute_actions_from_input_dict(rows, explore=False)
        return fetches, [np.asarray(s) for s in state_out]

    for s in range(steps):
        starts = np.repeat(log["valid"][s] & ((s == 0) | ~log["valid"][max(s - 1, 0)]), k)
        for i, init in enumerate(initial):
            state[i][starts] = init
        fetches, state_out = forward(log["obs_in"][s][:, group, :size], state)
        next_fetches, _ = forward(log["obs_out"][s][:, group, :size], state_out)
        if isinstance(policy, CentralCriticPPOPolicy):
            out["vf"].append(critic_values(policy, log["obs_in"][s][None])[0])
            out["next_vf"].append(critic_values(policy, log["obs_out"][s][None])[0])
        else:
            out["vf"].append(fetches[SampleBatch.VF_PREDS].reshape(games, k))
            out["next_vf"].append(next_fetches[SampleBatch.VF_PREDS].reshape(games, k))
        out["dist_inputs"].append(fetches[SampleBatch.ACTION_DIST_INPUTS].reshape(games, k, -1))
        out["state_in"].append([x.reshape((games, k) + x.shape[1:]).copy() for x in state])
        out["state_out"].append([x.reshape((games, k) + x.shape[1:]) for x in state_out])
        state = state_out
    return {"vf": np.stack(out["vf"]), "dist_inputs": np.stack(out["dist_inputs"]),
            "next_vf": np.stack(out["next_vf"]),
            "state_in": [np.stack(parts) for parts in zip(*out["state_in"])],
            "state_out": [np.stack(parts) for parts in zip(*out["state_out"])]}


def padded_loss(policy, batch: SampleBatch) -> tuple[float, int]:
    """PPO's loss (same weights) on a copy of `batch`, padded into sequences as RLlib's learn_on_batch does, and
    the rows a centralised critic was run on for it (0 without one)."""
    batch = batch.copy()
    if policy.is_recurrent():
        pad_batch_to_sequences_of_same_size(batch, max_seq_len=policy.max_seq_len, shuffle=False,
                                            batch_divisibility_req=1, view_requirements=policy.view_requirements)
    batch.set_training(True)
    critic_rows = []
    critic = getattr(policy.model, "central_critic", None)
    hook = critic.register_forward_hook(lambda module, args, out: critic_rows.append(len(args[0]))) if critic else None
    with torch.no_grad():
        loss = float(policy.loss(policy.model, policy.dist_class, policy._lazy_tensor_dict(batch)))
    if hook:
        hook.remove()
    return loss, sum(critic_rows)


def replay(policy, batch: SampleBatch, initial_states: bool = False) -> dict:
    """The model's forward pass over the batch as PPO's loss makes it; per row, in the batch's order. With
    `initial_states`, every sequence starts from the model's initial state instead of its `state_in_*`."""
    padded = batch.copy()
    for i, initial in enumerate(policy.get_initial_state() if initial_states else []):
        padded[f"state_in_{i}"] = np.broadcast_to(initial, padded[f"state_in_{i}"].shape).copy()
    mask = np.ones(len(batch), dtype=bool)
    if policy.is_recurrent():
        pad_batch_to_sequences_of_same_size(padded, max_seq_len=policy.max_seq_len, shuffle=False,
                                            batch_divisibility_req=1, view_requirements=policy.view_requirements)
        length = padded.max_seq_len
        mask = (np.arange(length)[None, :] < padded[SampleBatch.SEQ_LENS][:, None]).reshape(-1)
    padded.set_training(True)
    tensors = policy._lazy_tensor_dict(padded)
    with torch.no_grad():
        dist_inputs, _ = policy.model(tensors)
        values = None if isinstance(policy, CentralCriticPPOPolicy) else policy.model.value_function().cpu().numpy()
        logp = policy.dist_class(dist_inputs, policy.model).logp(tensors[SampleBatch.ACTIONS])
    return {"dist_inputs": dist_inputs.cpu().numpy()[mask], "vf": None if values is None else values[mask],
            "logp": logp.cpu().numpy()[mask]}


class EpisodeIndex:
    """What a centralised critic's postprocessing reads of RLlib's episode: agent id -> its index in the episode."""

    def __init__(self, agents: list[str]):
        self._agent_to_index = {agent: index for index, agent in enumerate(agents)}


def trajectory_runs(valid: np.ndarray, steps: range, group: list[int]) -> list[tuple[int, int, list[int]]]:
    """(game, agent, steps) of each trajectory of the fragment: a maximal run of valid steps of a (game, agent) lane,
    one SampleBatch per trajectory in RLlib's stock sampler."""
    runs = []
    for e in range(valid.shape[1]):
        for a in group:
            run = []
            for s in list(steps) + [None]:
                if s is not None and valid[s, e]:
                    run.append(s)
                    continue
                if run:
                    runs.append((e, a, run))
                run = []
    return runs


def analyse_transitions(policy, group: list[int], size: int, log: dict, steps: range, batch: SampleBatch) -> dict:
    """A replay policy's (DQN, SAC) reference for one fragment: each trajectory's transitions from the env log,
    postprocessed by the policy's own `postprocess_trajectory` (RLlib's n-step adjustment and replay weights), in the
    runner's row order; and the greedy actions of the rows' observations (what exploration departs from)."""
    keys = row_keys(log["valid"], steps, group, False)
    raw_actions = {tuple(key): action for key, action in zip(keys.tolist(), batch[SampleBatch.ACTIONS])}
    columns = (SampleBatch.NEXT_OBS, SampleBatch.REWARDS, SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS,
               PRIO_WEIGHTS)
    per_row = {}
    for e, a, run in trajectory_runs(log["valid"], steps, group):
        trajectory = policy.postprocess_trajectory(SampleBatch({
            SampleBatch.OBS: log["obs_in"][run, e, a, :size], SampleBatch.NEXT_OBS: log["obs_out"][run, e, a, :size],
            SampleBatch.ACTIONS: np.stack([raw_actions[(s, e, a)] for s in run]),
            SampleBatch.REWARDS: log["rewards"][run, e, a], SampleBatch.TERMINATEDS: log["terminated"][run, e],
            SampleBatch.TRUNCATEDS: log["truncated"][run, e]}))
        for index, s in enumerate(run):
            per_row[(s, e, a)] = {key: trajectory[key][index] for key in columns}
    rows = [per_row[tuple(key)] for key in keys.tolist()]
    greedy = policy.compute_actions_from_input_dict(SampleBatch({SampleBatch.OBS: batch[SampleBatch.OBS]}),
                                                    explore=False)[0]
    return {"keys": keys, "transitions": True, "stock": {key: np.stack([row[key] for row in rows]) for key in columns},
            "greedy": np.asarray(greedy)}


def analyse_game_steps(policy, sizes: list[int], log: dict, steps: range, batch: SampleBatch) -> dict:
    """A `GameSteps` policy's reference for one fragment (marlkit/mixers.py): per valid (step, game) of the env log,
    every agent's observation and, from each (game, agent) trajectory postprocessed by the policy's own
    `postprocess_trajectory` (RLlib's adjust_nstep), its n-step reward, next observation and flags."""
    agents = list(range(len(sizes)))
    keys = row_keys(log["valid"], steps, [0], False)[:, :2]  # (step, game) of each row
    raw_actions = {tuple(key): action for key, action in zip(keys.tolist(), batch[SampleBatch.ACTIONS])}
    per_agent = {}
    for e, a, run in trajectory_runs(log["valid"], steps, agents):
        size = sizes[a]
        trajectory = policy.postprocess_trajectory(SampleBatch({
            SampleBatch.OBS: log["obs_in"][run, e, a, :size], SampleBatch.NEXT_OBS: log["obs_out"][run, e, a, :size],
            SampleBatch.ACTIONS: np.stack([raw_actions[(s, e)][a, 0] for s in run]),
            SampleBatch.REWARDS: log["rewards"][run, e, a], SampleBatch.TERMINATEDS: log["terminated"][run, e],
            SampleBatch.TRUNCATEDS: log["truncated"][run, e]}))
        for index, s in enumerate(run):
            per_agent[(s, e, a)] = {key: trajectory[key][index] for key in (
                SampleBatch.NEXT_OBS, SampleBatch.REWARDS, SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS)}

    def column(key, pad=False):
        return np.stack([np.stack([np.pad(per_agent[(s, e, a)][key], (0, max(sizes) - sizes[a])) if pad else
                                   per_agent[(s, e, a)][key] for a in agents]) for s, e in keys.tolist()])

    return {"keys": keys, "game_steps": True, "stock": {
        SampleBatch.OBS: log["obs_in"][keys[:, 0], keys[:, 1]],
        SampleBatch.ACTIONS: log["actions"][keys[:, 0], keys[:, 1]],
        SampleBatch.NEXT_OBS: column(SampleBatch.NEXT_OBS, pad=True), SampleBatch.REWARDS: column(SampleBatch.REWARDS),
        SampleBatch.TERMINATEDS: column(SampleBatch.TERMINATEDS)[:, 0],
        SampleBatch.TRUNCATEDS: column(SampleBatch.TRUNCATEDS)[:, 0]}}


def analyse(policy, group: list[int], size: int, log: dict, steps: range, batch: SampleBatch,
            agents: list[str], sizes: list[int]) -> dict:
    """Replay and stock reference of one policy's batch of the fragment `steps` (see the module docstring).
    `agents`/`sizes`: every agent of the env and its observation size; a centralised critic's postprocessing gets
    the other agents' rows of each episode, as RLlib's stock sampler gives them."""
    recurrent = policy.is_recurrent()
    central = isinstance(policy, CentralCriticPPOPolicy)
    keys = row_keys(log["valid"], steps, group, recurrent)
    stock = stock_forward(policy, group, size, log)
    slot = {a: j for j, a in enumerate(group)}
    raw_actions = {tuple(key): action for key, action in zip(keys.tolist(), batch[SampleBatch.ACTIONS])}

    per_row, trajectories = {}, []
    for number, (e, a, run) in enumerate(trajectory_runs(log["valid"], steps, group)):
        j = slot[a]
        first = run[0]
        while first > 0 and log["valid"][first - 1, e]:
            first -= 1  # the episode's first step, maybe in an earlier fragment
        actions = np.stack([raw_actions[(s, e, a)] for s in run])
        obs = log["obs_in"][run, e, a, :size]
        state_in = [x[run, e, j] for x in stock["state_in"]]
        logp = policy.compute_log_likelihoods(actions, obs, state_batches=state_in or None)
        trajectory = SampleBatch({
            SampleBatch.OBS: obs, SampleBatch.NEXT_OBS: log["obs_out"][run, e, a, :size],
            SampleBatch.ACTIONS: actions, SampleBatch.REWARDS: log["rewards"][run, e, a],
            SampleBatch.TERMINATEDS: log["terminated"][run, e], SampleBatch.TRUNCATEDS: log["truncated"][run, e],
            SampleBatch.VF_PREDS: stock["vf"][run, e, j],
            SampleBatch.ACTION_DIST_INPUTS: stock["dist_inputs"][run, e, j],
            SampleBatch.ACTION_LOGP: np.asarray(logp, dtype=np.float32),
            SampleBatch.EPS_ID: np.full(len(run), number), SampleBatch.UNROLL_ID: np.full(len(run), number),
            SampleBatch.AGENT_INDEX: np.full(len(run), a),
            SampleBatch.T: np.array(run) - first,
            **{f"state_in_{i}": x for i, x in enumerate(state_in)},
            **{f"state_out_{i}": x[run, e, j] for i, x in enumerate(stock["state_out"])},
        })
        if central:
            others = {agents[b]: (None, None, SampleBatch({
                SampleBatch.OBS: log["obs_in"][run, e, b, :sizes[b]], SampleBatch.NEXT_OBS: log["obs_out"][run, e, b, :sizes[b]],
                SampleBatch.T: np.array(run) - first})) for b in range(len(agents)) if b != a}
            trajectory = policy.postprocess_trajectory(trajectory, others, EpisodeIndex(agents))
        else:
            trajectory = policy.postprocess_trajectory(trajectory)
        trajectories.append(trajectory)
        for index, s in enumerate(run):
            per_row[(s, e, a)] = {key: trajectory[key][index] for key in (
                SampleBatch.VF_PREDS, SampleBatch.ACTION_DIST_INPUTS, SampleBatch.ACTION_LOGP, SampleBatch.T,
                Postprocessing.ADVANTAGES, Postprocessing.VALUE_TARGETS)}
            per_row[(s, e, a)]["state_in"] = [x[s, e, j] for x in stock["state_in"]]
            per_row[(s, e, a)]["next_vf"] = stock["next_vf"][s, e, j]
    stock_batch = concat_samples(trajectories)
    rows = [per_row[tuple(key)] for key in keys.tolist()]
    stock_rows = {key: np.stack([row[key] for row in rows]) for key in rows[0] if key != "state_in"}
    stock_rows["state_in"] = [np.stack([row["state_in"][i] for row in rows]) for i in range(len(rows[0]["state_in"]))]
    padded_stock = stock_batch.copy()
    if recurrent:
        pad_batch_to_sequences_of_same_size(padded_stock, max_seq_len=policy.max_seq_len, shuffle=False,
                                            batch_divisibility_req=1, view_requirements=policy.view_requirements)
    replayed = replay(policy, batch)
    if central:  # the critic over the joint input of the env's observations at each row's step
        replayed["vf"] = at(stock["vf"], np.stack([keys[:, 0], keys[:, 1], [slot[a] for a in keys[:, 2]]], 1))
    loss, critic_rows = padded_loss(policy, batch)
    stock_loss, stock_critic_rows = padded_loss(policy, stock_batch)
    return {
        "keys": keys, "recurrent": recurrent, "max_seq_len": policy.max_seq_len if recurrent else None,
        "replay": replayed, "stock": stock_rows,
        "replay_initial_states": replay(policy, batch, initial_states=True) if recurrent else None,
        "stock_seq_lens": np.asarray(padded_stock.get(SampleBatch.SEQ_LENS, [])),
        "loss": loss, "stock_loss": stock_loss, "central": central,
        "critic_rows": critic_rows, "stock_critic_rows": stock_critic_rows,
        "joint": joint_of(log["obs_in"]) if central else None,
    }


def at(array: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return array[keys[:, 0], keys[:, 1], keys[:, 2]]


def build(experiment: dict):
    loaded = spec.parse_experiment("batched", experiment)
    launch.register_components([loaded])
    algorithm = launch.build_algorithm(loaded.run, launch.first_trial_config(loaded))
    assert isinstance(algorithm.env_runner, BatchedEnvRunner), type(algorithm.env_runner)
    return algorithm, loaded.config["env_config"]


def sample(experiment: dict, fragments: int = 1, prepare=None, then=None) -> dict:
    """Fragments of a freshly built algorithm's local runner, the env log, metrics and analyses per fragment;
    `prepare(runner)` runs before the first sample, `then(algorithm, batches)` after the last (its result: "then")."""
    algorithm, env_config = build(experiment)
    try:
        runner = algorithm.env_runner
        if prepare is not None:
            prepare(runner)
        log = EnvLog(runner.env)
        critic_calls = {}  # centralised policy id -> rows of each critic pass while sampling
        hooks = [policy.model.central_critic.register_forward_hook(
                     lambda module, args, out, pid=pid: critic_calls.setdefault(pid, []).append(len(args[0])))
                 for pid, policy in runner.policy_map.items() if isinstance(policy, CentralCriticPPOPolicy)]
        batches, metrics = [], []
        for _ in range(fragments):
            batches.append(runner.sample())
            metrics.append(runner.get_metrics())
            log.sample_ends.append(len(log.steps))
        for hook in hooks:
            hook.remove()
        arrays = log.arrays()
        agents = list(runner.env.possible_agents)  # the agent axis of the env's arrays
        groups = {}  # policy id -> indices of its agents, from the experiment's policy mapping
        for index, agent in enumerate(agents):
            groups.setdefault(runner.policy_mapping_fn(agent, None, runner), []).append(index)
        agent_sizes = [gym.spaces.flatdim(runner.env.observation_spaces[agent]) for agent in agents]
        analyses = []
        for index, batch in enumerate(batches):
            steps = range(([0] + log.sample_ends)[index], log.sample_ends[index])
            analyses.append({
                pid: analyse_game_steps(runner.policy_map[pid], agent_sizes, arrays, steps, rows)
                if isinstance(runner.policy_map[pid], GameSteps) else
                analyse(runner.policy_map[pid], groups[pid], agent_sizes[groups[pid][0]], arrays, steps, rows,
                        agents, agent_sizes)
                if Postprocessing.ADVANTAGES in runner.policy_map[pid].view_requirements else
                analyse_transitions(runner.policy_map[pid], groups[pid], agent_sizes[groups[pid][0]], arrays, steps,
                                    rows)
                for pid, rows in batch.policy_batches.items()})
        policies = {pid: {"trained": runner.is_policy_to_train is None or runner.is_policy_to_train(pid),
                          "model": getattr(runner.policy_map[pid], "model", None) is not None} for pid in groups}
        extra = {} if then is None else {"then": then(algorithm, batches)}
        return {**extra, "batches": batches, "metrics": metrics, "log": arrays, "analyses": analyses,
                "critic_calls": critic_calls,
                "env_config": env_config, "agents": agents, "groups": groups, "policies": policies,
                "config": {"gamma": runner.config.gamma, "lambda": getattr(runner.config, "lambda_", None),
                           "n_step": getattr(runner.config, "n_step", None)}}
    finally:
        algorithm.stop()


def ppo_config(**overrides) -> dict:
    return {"rollout_fragment_length": FRAGMENT, "seed": SEED, "explore": True, "gamma": GAMMA, "lambda": LAMBDA,
            "minibatch_size": FRAGMENT, **overrides}


SIMPLE_TAG = {"scenario": "simple_tag", "num_adversaries": 2, "num_good_agents": 1}
PREDATORS_AND_PREY = {"predator": {"agents": "adversary_*"}, "prey": {"agents": "agent_*"}}


def vmas_experiment(env_config: dict, multiagent: dict | None = None) -> dict:
    experiment = tiny_experiment(config=ppo_config(num_envs_per_env_runner=NUM_ENVS,
                                                   train_batch_size=FRAGMENT * NUM_ENVS,
                                                   env_config={**env_config, "max_steps": VMAS_MAX_STEPS}))
    if multiagent:
        experiment["config"]["multiagent"] = multiagent
    return experiment


def case_vmas() -> dict:
    return sample(vmas_experiment({"scenario": "navigation", "n_agents": 2}))


def case_simple_tag() -> dict:
    """2 predators (one policy) and 1 prey (another), whose observations differ in size."""
    return sample(vmas_experiment(SIMPLE_TAG, {"policies": PREDATORS_AND_PREY}))


def countdown_experiment(model: dict) -> dict:
    return {"run": "PPO", "env": "countdown", "config": ppo_config(
        env_config={"num_envs": COUNTDOWN_ENVS, "max_steps": COUNTDOWN_MAX_STEPS},
        num_env_runners=0, train_batch_size=FRAGMENT * COUNTDOWN_ENVS, num_epochs=1, model=model)}


def case_countdown() -> dict:
    return sample(countdown_experiment({"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}}),
                  fragments=COUNTDOWN_FRAGMENTS)


def learned_initial_state(runner) -> None:
    """Gives the LSTM a non-zero initial state, as a learned one would be: every episode must start from
    `get_initial_state()` (RLlib's stock sampler does), not from zeros."""
    model = runner.policy_map["shared"].model
    initial = [torch.full((model.cell_size,), 0.5), torch.full((model.cell_size,), -0.25)]
    model.get_initial_state = lambda: [state.clone() for state in initial]


def case_countdown_lstm() -> dict:
    return sample(countdown_experiment({"custom_model": "lstm", "custom_model_config": {"hiddens": [8], "cell_size": 8},
                                        "max_seq_len": MAX_SEQ_LEN}),
                  fragments=COUNTDOWN_FRAGMENTS, prepare=learned_initial_state)


def case_countdown_box() -> dict:
    """Box actions, a policy per agent: agent_0's [-1, 1] outputs unsquashed into [0, 4], agent_1's unbounded."""
    experiment = countdown_experiment({"custom_model": "fcnet", "custom_model_config": {"hiddens": [8]}})
    experiment["config"]["env_config"]["box_actions"] = True
    experiment["config"]["multiagent"] = {"policies": "per_agent"}
    return sample(experiment)


def case_bucket_brigade() -> dict:
    """A learner, a frozen network policy (not trained) and scripted opponents."""
    return sample({"run": "PPO", "env": "bucket_brigade", "config": ppo_config(
        env_config=dict(BB_CONFIG, num_envs=NUM_ENVS), num_env_runners=0, train_batch_size=FRAGMENT * NUM_ENVS,
        model={"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}},
        multiagent={"policies": {"learner": {"agents": "agent_0"}, "frozen": {"agents": "agent_1"},
                                 "firefighter": {"agents": "agent_2", "heuristic": "firefighter"},
                                 "others": {"agents": "agent_3", "heuristic": "random"}},
                    "policies_to_train": ["learner"]})})


def case_vmas_mappo() -> dict:
    """3 agents, one shared policy with a centralised critic."""
    return sample(vmas_experiment({"scenario": "navigation", "n_agents": 3}, {"critic": "centralized"}))


def case_simple_tag_mappo() -> dict:
    """simple_tag's predators and prey (observations of different sizes), each policy with a centralised critic."""
    return sample(vmas_experiment(SIMPLE_TAG, {"policies": PREDATORS_AND_PREY, "critic": "centralized"}))


def case_countdown_lstm_mappo() -> dict:
    """A recurrent actor (model/lstm.py) with the default centralised critic (critic_hiddens)."""
    experiment = countdown_experiment({"custom_model": "lstm", "max_seq_len": MAX_SEQ_LEN, "custom_model_config": {
        "hiddens": [8], "cell_size": 8, "critic_hiddens": [12]}})
    experiment["config"]["multiagent"] = {"critic": "centralized"}
    return sample(experiment, fragments=COUNTDOWN_FRAGMENTS)


def case_bucket_brigade_mappo() -> dict:
    """A learner with a centralised critic among scripted opponents, whose observations it reads."""
    return sample({"run": "PPO", "env": "bucket_brigade", "config": ppo_config(
        env_config=dict(BB_CONFIG, num_envs=NUM_ENVS), num_env_runners=0, train_batch_size=FRAGMENT * NUM_ENVS,
        model={"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}},
        multiagent={"policies": {"learner": {"agents": "agent_0"},
                                 "firefighter": {"agents": ["agent_1", "agent_2"], "heuristic": "firefighter"},
                                 "others": {"agents": "agent_3", "heuristic": "random"}},
                    "critic": "centralized"})})


def replay_config(**overrides) -> dict:
    """DQN or SAC on the old stack, learning from the first fragment (the translated replay defaults otherwise)."""
    return {"rollout_fragment_length": FRAGMENT, "seed": SEED, "explore": True, "gamma": GAMMA, "num_env_runners": 0,
            "num_steps_sampled_before_learning_starts": 0, "model": {"fcnet_hiddens": [16]}, **overrides}


def case_countdown_dqn() -> dict:
    """DQN, 3-step returns, epsilon-greedy exploration, worker-side prioritization (TD errors as replay weights), two
    fragments: trajectories are cut at fragment ends too."""
    return sample({"run": "DQN", "env": "countdown", "config": replay_config(
        env_config={"num_envs": COUNTDOWN_ENVS, "max_steps": COUNTDOWN_MAX_STEPS}, n_step=3,
        train_batch_size=FRAGMENT * COUNTDOWN_ENVS, replay_buffer_config={"worker_side_prioritization": True})},
        fragments=COUNTDOWN_FRAGMENTS)


def case_vmas_sac() -> dict:
    """SAC on VMAS navigation's Box actions, 2-step returns. (Its TD errors sample next actions, so worker-side
    priorities are compared on the DQN case.)"""
    return sample({"run": "SAC", "env": "vmas", "config": replay_config(
        env_config={"scenario": "navigation", "n_agents": 2, "max_steps": VMAS_MAX_STEPS, "num_envs": NUM_ENVS},
        n_step=2, train_batch_size=FRAGMENT * NUM_ENVS)})


def case_countdown_qmix() -> dict:
    """QMIX over two per-agent DQN policies (agent_0 hosts the mixer), 2-step returns, two fragments; then one
    team TD error computed by hand and one learning step on the first fragment's rows (`team_learning`)."""
    return sample({"run": "DQN", "env": "countdown", "config": replay_config(
        env_config={"num_envs": COUNTDOWN_ENVS, "max_steps": COUNTDOWN_MAX_STEPS}, n_step=2,
        train_batch_size=FRAGMENT * COUNTDOWN_ENVS, target_network_update_freq=10**6,
        multiagent={"policies": "per_agent", "mixer": "qmix", "mixer_config": {"embed_dim": 4}})},
        fragments=COUNTDOWN_FRAGMENTS, then=team_learning)


def team_learning(algorithm, batches) -> dict:
    """The host's team TD errors on the first fragment's game steps beside a computation by hand (per row: each
    agent's Q-values from its own policy, QMIX's mix from the mixer's parameters in numpy), then which parameters
    one `learn_on_batch` changed (the team's Q-networks and the mixer, not the target networks)."""
    policies = algorithm.env_runner.policy_map
    host = policies["agent_0"]
    rows = batches[0].policy_batches["agent_0"]
    tensors = {key: torch.as_tensor(np.asarray(rows[key])) for key in (
        SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS, SampleBatch.NEXT_OBS, SampleBatch.TERMINATEDS,
        PRIO_WEIGHTS)}
    with torch.no_grad():
        td_error, _ = host.team_td_error(tensors)
    team = [policies["agent_0"], policies["agent_1"]]
    by_hand = [team_td_error_by_hand(host, team, rows, b) for b in range(len(rows))]
    modules = {"agent_0": host.model, "agent_1": policies["agent_1"].model,
               "target agent_1": policies["agent_1"].target_models[policies["agent_1"].model],
               "target agent_0": host.target_models[host.model]}
    before = {(module, name): value.detach().clone() for module, model in modules.items()
              for name, value in model.named_parameters()}
    info = host.learn_on_batch(rows)
    changed = {}  # "agent_0 mixer", "agent_0 q-network", ... -> whether any of its parameters changed
    for module, model in modules.items():
        for name, value in model.named_parameters():
            part = f"{module} {'mixer' if name.startswith('mixer.') else 'q-network'}"
            changed[part] = changed.get(part, False) or not torch.equal(before[(module, name)], value.detach())
    return {"td_error": td_error.numpy(), "by_hand": np.array(by_hand), "learned_td_error": info["td_error"],
            "changed": changed, "learner_stats": info["learner_stats"]}


def team_td_error_by_hand(host, team: list, rows: SampleBatch, b: int) -> float:
    """QMIX's TD error of game step `b`, written out: Q_i of each agent's action, the target networks' Q at the
    online greedy next action, both mixed by w2 . elu(q W1 + b1) + V(s) with |W1|, |w2| from the state's hypernets."""
    from ray.rllib.algorithms.dqn.dqn_torch_policy import compute_q_values

    def q(policy, model, obs):
        with torch.no_grad():
            q, _, _, _ = compute_q_values(policy, model, {SampleBatch.OBS: torch.as_tensor(obs[None])}, explore=False)
            return q[0].numpy()

    def mix(mixer, agent_q, obs):
        state = np.concatenate([obs.reshape(-1), np.ones(len(obs))])
        p = {name: value.detach().numpy().astype(np.float64) for name, value in mixer.named_parameters()}
        embed = len(p["hyper_b1.bias"])
        w1 = np.abs(p["hyper_w1.weight"] @ state + p["hyper_w1.bias"]).reshape(len(agent_q), embed)
        hidden = agent_q @ w1 + p["hyper_b1.weight"] @ state + p["hyper_b1.bias"]
        hidden = np.where(hidden > 0, hidden, np.exp(hidden) - 1.0)  # elu
        w2 = np.abs(p["hyper_w2.weight"] @ state + p["hyper_w2.bias"])
        value = p["value.2.weight"] @ np.maximum(p["value.0.weight"] @ state + p["value.0.bias"], 0) + p["value.2.bias"]
        return float(hidden @ w2 + value[0])

    obs, next_obs = rows[SampleBatch.OBS][b], rows[SampleBatch.NEXT_OBS][b]
    taken, best = [], []
    for a, policy in enumerate(team):
        taken.append(q(policy, policy.model, obs[a])[int(rows[SampleBatch.ACTIONS][b, a, 0])])
        greedy = int(np.argmax(q(policy, policy.model, next_obs[a])))
        best.append(q(policy, policy.target_models[policy.model], next_obs[a])[greedy])
    target_mixer = host.target_models[host.model].mixer
    target = rows[SampleBatch.REWARDS][b].sum() + GAMMA ** 2 * (1 - rows[SampleBatch.TERMINATEDS][b]) * mix(
        target_mixer, np.array(best), next_obs)
    return mix(host.model.mixer, np.array(taken), obs) - target


def case_simple_tag_vdn() -> dict:
    """VDN over simple_tag's predators and prey (two policies whose observations differ in size, Discrete actions),
    then which networks one learning step changed."""
    def learning(algorithm, batches) -> dict:
        policies = algorithm.env_runner.policy_map
        before = {pid: [p.detach().clone() for p in policies[pid].model.parameters()] for pid in ("predator", "prey")}
        policies["predator"].learn_on_batch(batches[0].policy_batches["predator"])
        return {"changed": {pid: any(not torch.equal(old, new.detach()) for old, new in
                                     zip(before[pid], policies[pid].model.parameters())) for pid in before}}

    return sample({"run": "DQN", "env": "vmas", "config": replay_config(
        env_config={**SIMPLE_TAG, "continuous_actions": False, "max_steps": VMAS_MAX_STEPS, "num_envs": NUM_ENVS},
        train_batch_size=FRAGMENT * NUM_ENVS, multiagent={"policies": PREDATORS_AND_PREY, "mixer": "vdn"})},
        then=learning)


def case_countdown_masac() -> dict:
    """MASAC over two per-agent SAC policies in Discrete actions (agent_0 hosts the centralised critics), 2-step
    returns, two fragments; then its losses computed by hand and one learning step (`masac_learning`)."""
    return sample({"run": "SAC", "env": "countdown", "config": replay_config(
        env_config={"num_envs": COUNTDOWN_ENVS, "max_steps": COUNTDOWN_MAX_STEPS}, n_step=2,
        train_batch_size=FRAGMENT * COUNTDOWN_ENVS, q_model_config={"fcnet_hiddens": [8]}, initial_alpha=0.5,
        multiagent={"policies": "per_agent", "critic": "centralized"})},
        fragments=COUNTDOWN_FRAGMENTS, then=masac_learning)


def masac_learning(algorithm, batches) -> dict:
    """The host's critic, actor and temperature losses on the first fragment's game steps beside the same losses
    written out per agent (discrete SAC's expectations over each agent's own actions, the critics reading the joint
    observation), then which parameters one `learn_on_batch` changed."""
    policies = algorithm.env_runner.policy_map
    host, team = policies["agent_0"], [policies["agent_0"], policies["agent_1"]]
    rows = batches[0].policy_batches["agent_0"]
    tensors = {key: torch.as_tensor(np.asarray(rows[key])) for key in (
        SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS, SampleBatch.NEXT_OBS, SampleBatch.TERMINATEDS,
        PRIO_WEIGHTS)}
    losses, _, _ = host.team_losses(tensors)
    by_hand = masac_losses_by_hand(host, team, rows)
    modules = {"agent_0 actor": host.model.action_model, "agent_1 actor": team[1].model.action_model,
               "critics": torch.nn.ModuleList([host.model.q_net, host.model.twin_q_net]),
               "agent_1 own q-network": team[1].model.q_net,
               "target critics": torch.nn.ModuleList([host.target_models[host.model].q_net,
                                                      host.target_models[host.model].twin_q_net])}
    before = {name: [p.detach().clone() for p in module.parameters()] for name, module in modules.items()}
    alphas_before = [float(policy.model.log_alpha.detach()) for policy in team]
    info = host.learn_on_batch(rows)
    changed = {name: any(not torch.equal(old, new.detach()) for old, new in zip(before[name], module.parameters()))
               for name, module in modules.items()}
    changed["log_alphas"] = [float(policy.model.log_alpha.detach()) != old for policy, old in zip(team, alphas_before)]
    return {"losses": {name: float(loss.detach()) for name, loss in losses.items()}, "by_hand": by_hand,
            "changed": changed,
            "learner_stats": info["learner_stats"]}


def masac_losses_by_hand(host, team: list, rows: SampleBatch) -> dict:
    """Discrete MASAC's three losses, one agent and one game step at a time."""
    def probs(policy, obs):
        with torch.no_grad():
            out, _ = policy.model({SampleBatch.OBS: torch.as_tensor(obs[None])}, [], None)
            logits = policy.model.get_action_model_outputs(out)[0][0].numpy().astype(np.float64)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def q(net, obs):  # (agents, actions) from the joint observation
        state = np.concatenate([obs.reshape(-1), np.ones(len(obs))]).astype(np.float32)
        with torch.no_grad():
            return net(torch.as_tensor(state[None]))[0].numpy().astype(np.float64).reshape(len(obs), -1)

    target = host.target_models[host.model]
    critic, actor, alpha = 0.0, 0.0, 0.0
    count = len(rows) * len(team)
    for b in range(len(rows)):
        obs, next_obs = rows[SampleBatch.OBS][b], rows[SampleBatch.NEXT_OBS][b]
        q1, q2 = q(host.model.q_net, obs), q(host.model.twin_q_net, obs)
        next_q = np.minimum(q(target.q_net, next_obs), q(target.twin_q_net, next_obs))
        for i, policy in enumerate(team):
            log_alpha = float(policy.model.log_alpha.detach())
            a = float(np.exp(log_alpha))
            pi, pi_next = probs(policy, obs[i]), probs(policy, next_obs[i])
            value = float(pi_next @ (next_q[i] - a * np.log(pi_next)))
            y = rows[SampleBatch.REWARDS][b, i] + GAMMA ** 2 * (1 - rows[SampleBatch.TERMINATEDS][b]) * value
            action = int(rows[SampleBatch.ACTIONS][b, i, 0])
            for qj in (q1, q2):
                error = qj[i, action] - y
                critic += (0.5 * error ** 2 if abs(error) < 1 else abs(error) - 0.5) / count  # Huber, delta 1
            actor += float(pi @ (a * np.log(pi) - np.minimum(q1[i], q2[i]))) / count
            alpha -= log_alpha * float(pi @ (np.log(pi) + float(policy.model.target_entropy))) / len(rows)
    return {"critic": critic, "actor": actor, "alpha": alpha}


FAULTS = [("reset", "observations", "shape"), ("reset", "observations", "dtype"), ("step", "observations", "shape"),
          ("step", "rewards", "shape"), ("step", "rewards", "dtype"), ("step", "terminated", "dtype"),
          ("step", "truncated", "shape")]


def case_faults() -> dict:
    """What each of FAULTS raises from runner.sample(): (type name, is a BatchedEnvError, message); reset faults
    first (the runner resets on its first sample() only)."""
    algorithm, _ = build(countdown_experiment({"custom_model": "fcnet", "custom_model_config": {"hiddens": [4]}}))
    errors = {}
    try:
        for fault in FAULTS:
            algorithm.env_runner.env.fault = fault
            try:
                algorithm.env_runner.sample()
                errors[fault] = None
            except Exception as error:  # noqa: BLE001 - the test checks which
                errors[fault] = (type(error).__name__, isinstance(error, BatchedEnvError), str(error))
        algorithm.env_runner.env.fault = None
        errors[None] = len(algorithm.env_runner.sample().policy_batches["shared"])  # sound arrays sample again
    finally:
        algorithm.stop()
    return {"errors": errors, "num_envs": COUNTDOWN_ENVS}


def case_spread_mappo() -> dict:
    """MPE2's simple_spread through `env: pettingzoo` with a centralised critic, which reads the env's global state:
    the states the env gave while sampling, the fragment's critic columns, the critic's input size, and whether one
    training step changed the critic."""
    algorithm, _ = build({"run": "PPO", "env": "pettingzoo", "config": ppo_config(
        env_config={"env": "mpe2.simple_spread_v3", "N": 3, "max_cycles": 5}, num_env_runners=0,
        num_envs_per_env_runner=NUM_ENVS, train_batch_size=FRAGMENT * NUM_ENVS,
        model={"custom_model": "fcnet", "custom_model_config": {"hiddens": [16]}},
        multiagent={"critic": "centralized"})})
    try:
        runner = algorithm.env_runner
        states, state = [], runner.env.state
        runner.env.state = lambda: states.append(state()) or states[-1]
        batch = runner.sample().policy_batches["shared"]
        critic = algorithm.get_policy("shared").model.central_critic
        before = [p.detach().clone() for p in critic.parameters()]
        algorithm.train()
        return {"states": np.stack(states), "critic_obs": batch["critic_obs"], "weights": batch["critic_weights"],
                "obs": batch[SampleBatch.OBS], "input_size": next(critic.parameters()).shape[1],
                "critic_changed": any(not torch.equal(a, b.detach()) for a, b in zip(before, critic.parameters()))}
    finally:
        algorithm.stop()


CASES = {"vmas": case_vmas, "simple_tag": case_simple_tag, "countdown": case_countdown,
         "countdown_lstm": case_countdown_lstm, "countdown_box": case_countdown_box,
         "bucket_brigade": case_bucket_brigade, "faults": case_faults, "vmas_mappo": case_vmas_mappo,
         "simple_tag_mappo": case_simple_tag_mappo, "countdown_lstm_mappo": case_countdown_lstm_mappo,
         "bucket_brigade_mappo": case_bucket_brigade_mappo, "countdown_dqn": case_countdown_dqn,
         "vmas_sac": case_vmas_sac, "countdown_qmix": case_countdown_qmix,
         "simple_tag_vdn": case_simple_tag_vdn,
         "countdown_masac": case_countdown_masac, "spread_mappo": case_spread_mappo}


def main(out_dir: str, temp_dir: str, *cases: str) -> None:
    register_countdown()
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir)
    try:
        for case in cases:
            result = CASES[case]()
            with open(Path(out_dir) / f"{case}.pkl", "wb") as file:
                pickle.dump(result, file)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
