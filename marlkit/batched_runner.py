"""The batched env runner: whole-array sampling of any `BatchedEnv` (envs/batched.py) on RLlib's old API stack.

Why: RLlib's stock sampler walks every agent of every sub-env through per-agent episode objects and connectors, one
step at a time; with simulators that step thousands of games per call that bookkeeping, not the simulator, bounds
sampling. `BatchedEnvRunner` subclasses the old stack's `RolloutWorker` (marlkit/plan.py sets it as `env_runner_cls`
for envs registered with `create_batch`), keeps the rest of it (policies, weight sync, checkpoints) and replaces
`sample()`:

  - per step, one forward pass per policy over all of its agents in all games, one `env.step` for all games;
    scripted policies (`heuristic:` in YAML) act on the same arrays; policies not being trained add no rows;
  - recurrent models (model/lstm.py, model/attention.py, `use_lstm`) keep their state per (game, agent), reset to
    the model's initial state when a game restarts;
  - finished games restart on the next step (next-step auto-reset): that row is not a training row; its policy pass
    gives the value of the finished game's final observation, the bootstrap of a truncated episode (terminated ones
    bootstrap from zero), as RLlib's postprocessing does;
  - at the fragment's end, the training columns over the whole (time, game, agent) arrays (marlkit/batch_columns.py):
    PPO's GAE advantages, or for DQN and SAC (policies without advantages in their view requirements) replayed
    transitions: next observations, n-step rewards and flags (RLlib's `adjust_nstep`), replay weights, with actions
    from the policy's own exploration;
  - rows in (time, game, agent) order; a recurrent policy's per (game, agent) in time order, in `max_seq_len`
    sequences that never cross an episode start, with `seq_lens` and each sequence's first state.

A fragment holds at least `rollout_fragment_length x num_envs` env steps (restart rows do not count). Episode metrics
and `on_sample_end` callbacks work; per-episode callbacks need RLlib's stock sampler (marlkit/plan.py picks it, with a
note). A policy valued per game rather than per agent (MAPPO's centralised critic, marlkit/mappo.py) implements
`GameValues`: the runner asks it for one input and one value pass per game and step, and for the columns that carry
them. A policy that trains a team on whole game steps (value mixers, MASAC: marlkit/team.py) implements `GameSteps`:
its rows are one per game and step with every agent's observation, action and n-step reward, and its team's other
policies add none. The runner knows no algorithm beyond these interfaces.

Example (YAML): nothing to do; `env: vmas` or `env: bucket_brigade` sample through this runner.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.dqn.dqn_tf_policy import PRIO_WEIGHTS
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.offline.input_reader import InputReader
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.filter import NoFilter

from envs.batched import agent_observations, observation_size, zero_actions
from marlkit import batch_columns
from marlkit.game_episodes import GameEpisodes
from marlkit.game_values import GameSteps, GameValues
from marlkit.stock_runner import StockEnvRunner


class BatchedEnvError(ValueError):
    """A batched env returned arrays of the wrong shape or dtype."""


def _no_env(env_context):
    return None  # RolloutWorker builds no env of its own; the runner builds the batched one


class BatchedEnvRunner(StockEnvRunner):
    """Old-stack env runner whose `sample()` steps a `BatchedEnv` with whole-array policy passes."""

    def __init__(self, **kwargs):
        entry = kwargs["env_creator"]  # the env's `EnvEntry` (Ray's env creator, see launch.register_envs)
        kwargs["env_creator"] = _no_env
        super().__init__(**kwargs)
        self._episodes = None
        if self.worker_index == 0 and self.num_workers > 0 and not self.config.create_local_env_runner:
            return  # the local runner of a Tune trial holds no env when remote runners sample
        self.env = entry.batch(dict(self.env_context))
        self.input_reader = _BatchedInput(self)  # RLlib's health check and local evaluation look for one
        env = self.env
        self._name = self.config.env
        self._agents = list(env.possible_agents)
        self._num_envs = env.num_envs
        self._device = torch.device(env.device)
        self._obs_width = max(observation_size(env.observation_spaces[a]) for a in self._agents)
        self._actions = zero_actions(env)
        self._groups = {}  # policy id -> indices into self._agents
        for index, agent in enumerate(self._agents):
            self._groups.setdefault(self.policy_mapping_fn(agent, None, self), []).append(index)
        # what each policy's agents see: its model's observation shape (an image's (H, W, C)), flat for a scripted one
        self._obs_shape = {pid: tuple(self.policy_map[pid].observation_space.shape) if self._is_model(pid)
                           else (observation_size(env.observation_spaces[self._agents[g[0]]]),)
                           for pid, g in self._groups.items()}
        # Policies that learn from replayed transitions (DQN, SAC: next observations, n-step) rather than from
        # advantages of whole trajectories (PPO), by the columns their loss and postprocessing declare.
        self._replayed = {pid for pid in self._groups if self._is_model(pid)
                          and Postprocessing.ADVANTAGES not in self.policy_map[pid].view_requirements}
        for policy_id in self._groups:
            self._check_policy(policy_id)
        self._trained = [pid for pid in self._groups if self._is_model(pid)
                         and (self.is_policy_to_train is None or self.is_policy_to_train(pid))]
        self._game_level = {pid for pid in self._trained if isinstance(self.policy_map[pid], GameValues)}
        self._game_steps = {pid for pid in self._trained if isinstance(self.policy_map[pid], GameSteps)}
        carried = {member for pid in self._game_steps for member in self.policy_map[pid].team_policy_ids()}
        self._trained = [pid for pid in self._trained if pid in self._game_steps or pid not in carried]
        self._policy_actions = torch.zeros_like(self._actions)  # as the policies chose them (GameSteps rows)
        self._all_present = torch.ones(self._num_envs, len(self._agents), device=self._device)
        self._has_state = getattr(env, "state_space", None) is not None
        self._observations = None
        self._states = {}  # policy id -> recurrent state tensors (games, agents of the policy, ...)
        self._restarting = torch.zeros(self._num_envs, dtype=torch.bool, device=self._device)
        agent_keys = [(agent, self.policy_mapping_fn(agent, None, self)) for agent in self._agents]
        self._episodes = GameEpisodes(self._num_envs, agent_keys, self.worker_index * 10**9, self._device)
        self._reset_seed = None if self.config.seed is None else self.config.seed + 1000 * self.worker_index

    def _is_model(self, policy_id) -> bool:
        return getattr(self.policy_map[policy_id], "model", None) is not None

    def _check_policy(self, policy_id) -> None:
        if not self._is_model(policy_id):
            return  # a scripted policy: compute_actions on whole arrays
        if not isinstance(self.filters[policy_id], NoFilter):
            raise ValueError(f"policy '{policy_id}': observation filters are not supported by the batched env runner")
        problem = batch_columns.unsupported(self.policy_map[policy_id], policy_id in self._replayed)
        if problem:
            raise ValueError(f"policy '{policy_id}': {problem}")

    # ---- env arrays ----------------------------------------------------------------------------------------------

    def _checked(self, method: str, name: str, array, shape: tuple, kind: str) -> torch.Tensor:
        """`array` as a tensor on the runner's device, or BatchedEnvError naming the env, the call and the array."""
        tensor = torch.as_tensor(array, device=self._device)
        ok_kind = tensor.dtype == torch.bool if kind == "bool" else tensor.is_floating_point()
        if tuple(tensor.shape) != shape or not ok_kind:
            raise BatchedEnvError(
                f"env '{self._name}': {method}() returned {name} of shape {tuple(tensor.shape)} and dtype "
                f"{str(tensor.dtype).replace('torch.', '')}; expected shape {shape} and a {kind} dtype")
        return tensor.clone()  # envs may reuse their arrays on the next call

    def _observations_of(self, method: str, observations) -> torch.Tensor:
        return self._checked(method, "observations", observations,
                             (self._num_envs, len(self._agents), self._obs_width), "float").float()

    def _env_state(self) -> torch.Tensor | None:
        """The env's global state of every game now (`BatchedEnv.state`), None for an env without one."""
        if not self._has_state:
            return None
        return self._checked("state", "state", self.env.state(),
                             (self._num_envs, observation_size(self.env.state_space)), "float").float()

    def _reset_all(self) -> None:
        self._observations = self._observations_of("reset", self.env.reset(self._reset_seed))
        self._restarting.zero_()
        for policy_id in self._groups:
            if self._is_model(policy_id) and self.policy_map[policy_id].is_recurrent():
                self._states[policy_id] = [
                    s.expand((self._num_envs, len(self._groups[policy_id])) + tuple(s.shape)).clone()
                    for s in self._initial_state(policy_id)]

    def _initial_state(self, policy_id) -> list:
        """The model's initial recurrent state (asked anew: a learned one changes with training)."""
        policy = self.policy_map[policy_id]
        return [torch.as_tensor(np.asarray(s)).to(policy.device) for s in policy.get_initial_state()]

    # ---- policy passes -------------------------------------------------------------------------------------------

    def _own(self, observations: torch.Tensor, policy_id) -> torch.Tensor:
        """(games, agents of the policy, *its observation shape) from the (games, agents, widest) array."""
        return agent_observations(observations, self._groups[policy_id], self._obs_shape[policy_id])

    @staticmethod
    def _forward(policy, observations: torch.Tensor, state: list):
        """Distribution inputs, values (None for a policy with `GameValues`) and next state of the policy's model
        for (rows, ...) observations."""
        rows = observations.to(policy.device)
        seq_lens = torch.ones(len(rows), dtype=torch.int32, device=policy.device) if state else None
        with torch.no_grad():
            dist_inputs, state_out = policy.model(SampleBatch({SampleBatch.OBS: rows}, _is_training=False),
                                                  state, seq_lens)
            game_level = isinstance(policy, GameValues)
            return dist_inputs, None if game_level else policy.model.value_function(), state_out

    def _state_rows(self, policy_id) -> list:
        return [s.reshape((-1,) + tuple(s.shape[2:])) for s in self._states.get(policy_id, [])]

    def _env_actions(self, policy, actions: torch.Tensor) -> torch.Tensor:
        """RLlib's unsquash/clip of policy outputs into the env's action bounds, on whole arrays: normalize_actions
        unsquashes (and clips) only into Boxes bounded on every side, as RLlib's own action connectors do; unbounded
        actions go to the env as sampled."""
        space = policy.action_space
        if isinstance(space, gym.spaces.Box):
            low = torch.as_tensor(space.low, device=actions.device)
            high = torch.as_tensor(space.high, device=actions.device)
            bounded = bool(np.all(space.bounded_below) and np.all(space.bounded_above))
            unsquash = self.config.normalize_actions and bounded
            if unsquash:
                actions = low + (actions + 1.0) * (high - low) / 2.0
            if unsquash or self.config.clip_actions:
                actions = torch.maximum(torch.minimum(actions, high), low)
        return actions

    def _act(self, policy_id, explore: bool, record: dict | None) -> None:
        """Writes the actions of one policy's agents in all games into `self._actions`; records training columns."""
        policy = self.policy_map[policy_id]
        group = self._groups[policy_id]
        own = self._own(self._observations, policy_id)
        rows = own.flatten(0, 1)
        if not self._is_model(policy_id):
            actions = torch.as_tensor(np.asarray(policy.compute_actions(rows.cpu().numpy(), explore=explore)[0]))
            env_actions = actions
        elif policy_id in self._replayed:  # the policy's own exploration (epsilon-greedy, SAC's sampling)
            actions = torch.as_tensor(np.asarray(policy.compute_actions_from_input_dict(
                SampleBatch({SampleBatch.OBS: rows.cpu().numpy()}), explore=explore)[0]), device=self._device)
            if record is not None:
                record["obs"].append(own)
                record["actions"].append(actions.reshape((self._num_envs, len(group)) + tuple(actions.shape[1:])))
            env_actions = self._env_actions(policy, actions)
        else:
            state_in = self._state_rows(policy_id)
            dist_inputs, values, state_out = self._forward(policy, rows, state_in)
            with torch.no_grad():
                distribution = policy.dist_class(dist_inputs, policy.model)
                actions = distribution.sample() if explore else distribution.deterministic_sample()
                logp = distribution.logp(actions)
            if state_in:
                self._states[policy_id] = [s.reshape(self._states[policy_id][i].shape)
                                           for i, s in enumerate(state_out)]
            if record is not None:
                shape = (self._num_envs, len(group))
                if policy_id in self._game_level:  # one value pass per game for all the policy's agents
                    game_input = policy.game_input(self._observations, self._all_present, self._env_state())
                    values = policy.game_values(game_input)
                    record["game_input"].append(game_input)
                record["obs"].append(own)
                record["actions"].append(actions.reshape(shape + tuple(actions.shape[1:])))
                record["dist_inputs"].append(dist_inputs.reshape(shape + tuple(dist_inputs.shape[1:])))
                record["logp"].append(logp.reshape(shape).to(self._device))
                record["values"].append(values.reshape(shape).to(self._device))
                record["state_in"].append([s.reshape(shape + tuple(s.shape[1:])) for s in state_in])
            env_actions = self._env_actions(policy, actions)
        width = 1 if env_actions.dim() == 1 else int(np.prod(env_actions.shape[1:]))
        self._actions[:, group, :width] = env_actions.reshape(self._num_envs, len(group), width).to(
            device=self._device, dtype=self._actions.dtype)
        if self._game_steps:
            self._policy_actions[:, group, :width] = actions.reshape(self._num_envs, len(group), width).to(
                device=self._device, dtype=self._actions.dtype)

    def _last_values(self, policy_id) -> torch.Tensor:
        """(games, agents of the policy) values of the current observations, the state left as it is."""
        policy = self.policy_map[policy_id]
        if policy_id in self._game_level:
            return policy.game_values(policy.game_input(self._observations, self._all_present,
                                                        self._env_state())).to(self._device)
        rows = self._own(self._observations, policy_id).flatten(0, 1)
        _, values, _ = self._forward(policy, rows, self._state_rows(policy_id))
        return values.reshape(self._num_envs, -1).to(self._device)

    # ---- sampling ------------------------------------------------------------------------------------------------

    def _check_game_level_policies(self) -> None:
        for policy_id in self._game_level | self._game_steps:
            try:
                self.policy_map[policy_id].check_game(self._name, self._agents, self._obs_width)
            except ValueError as error:
                raise ValueError(f"policy '{policy_id}': {error}") from None

    def sample(self, **kwargs):
        if self._observations is None:
            self._check_game_level_policies()
            self._reset_all()
        target = self.config.get_rollout_fragment_length(self.worker_index) * self._num_envs
        explore = self.config.explore
        agents = len(self._agents)
        records = {pid: {k: [] for k in ("obs", "next_obs", "actions", "dist_inputs", "logp", "values", "state_in",
                                         "game_input")}
                   for pid in self._trained}
        steps = {k: [] for k in ("rewards", "terminated", "truncated", "valid", "eps_id", "t")}
        env_steps = 0
        while env_steps < target:
            valid = ~self._restarting
            steps["valid"].append(valid)
            steps["eps_id"].append(self._episodes.ids.clone())
            steps["t"].append(self._episodes.lengths.clone())
            for policy_id in self._groups:
                self._act(policy_id, explore, None if policy_id in self._game_steps else records.get(policy_id))
            for policy_id in self._game_steps:  # the whole game, after every policy acted
                records[policy_id]["obs"].append(self._observations)
                records[policy_id]["actions"].append(self._policy_actions.clone())
            observations, rewards, terminated, truncated = self.env.step(self._actions)
            shape = (self._num_envs, agents)
            self._observations = self._observations_of("step", observations)
            for policy_id, record in records.items():  # a finished game's final observation; its restart row is dropped
                if policy_id in self._game_steps:
                    record["next_obs"].append(self._observations)
                elif policy_id in self._replayed:
                    record["next_obs"].append(self._own(self._observations, policy_id))
            rewards = self._checked("step", "rewards", rewards, shape, "float").float()
            terminated = self._checked("step", "terminated", terminated, (self._num_envs,), "bool")
            truncated = self._checked("step", "truncated", truncated, (self._num_envs,), "bool") & ~terminated
            steps["rewards"].append(rewards)
            steps["terminated"].append(terminated)
            steps["truncated"].append(truncated)
            env_steps += int(valid.sum())
            if bool(self._restarting.any()):  # this step started new games: their recurrent state starts afresh
                for policy_id, states in self._states.items():
                    for state, initial in zip(states, self._initial_state(policy_id)):
                        state[self._restarting.to(state.device)] = initial
            done = terminated | truncated
            self._episodes.step(rewards, valid, done)
            self._restarting = done
        stacked = {k: torch.stack(v) for k, v in steps.items()}
        batch = self._build_batch(records, stacked, env_steps)
        self.callbacks.on_sample_end(worker=self, samples=batch)
        return batch

    # ---- training batch ------------------------------------------------------------------------------------------

    def _build_batch(self, records: dict, steps: dict, env_steps: int) -> MultiAgentBatch:
        done = steps["terminated"] | steps["truncated"]
        time_steps = len(done)
        policy_batches = {}
        for policy_id, record in records.items():
            if policy_id in self._game_steps:
                policy_batches[policy_id] = self._game_step_rows(policy_id, record, steps, done)
                continue
            group = self._groups[policy_id]
            k = len(group)

            def per_agent(tensor: torch.Tensor) -> torch.Tensor:
                """(time, games) -> (time, games, agents of the policy)."""
                return tensor.unsqueeze(-1).expand(-1, -1, k)

            columns = {
                SampleBatch.OBS: torch.stack(record["obs"]),
                SampleBatch.ACTIONS: torch.stack(record["actions"]),
                SampleBatch.REWARDS: steps["rewards"][:, :, group],
                SampleBatch.TERMINATEDS: per_agent(steps["terminated"]),
                SampleBatch.TRUNCATEDS: per_agent(steps["truncated"]),
                SampleBatch.EPS_ID: per_agent(steps["eps_id"]),
                SampleBatch.T: per_agent(steps["t"]),
                SampleBatch.AGENT_INDEX: torch.as_tensor(group, device=self._device).expand(time_steps,
                                                                                           self._num_envs, k),
            }
            if policy_id in self._replayed:
                columns.update(self._transition_columns(policy_id, record, steps, done, group))
            else:
                columns.update(self._advantage_columns(policy_id, record, steps, done))
            valid = per_agent(steps["valid"])
            state_in = [torch.stack(parts) for parts in zip(*record["state_in"])]
            if state_in:
                policy_batches[policy_id] = self._sequences(policy_id, columns, state_in, valid, steps["valid"])
            else:
                policy_batches[policy_id] = SampleBatch({
                    key: _numpy(column[valid.to(column.device)]) for key, column in columns.items()})
            if policy_id in self._replayed:
                policy_batches[policy_id][PRIO_WEIGHTS] = batch_columns.replay_weights(self.policy_map[policy_id],
                                                                                       policy_batches[policy_id])
        return MultiAgentBatch(policy_batches, env_steps=env_steps)

    def _advantage_columns(self, policy_id, record: dict, steps: dict, done: torch.Tensor) -> dict:
        """PPO's columns: the policy pass's outputs, GAE advantages and value targets (and a `GameValues` policy's
        own columns)."""
        values = torch.stack(record["values"])
        advantages = batch_columns.gae(values, self._last_values(policy_id),
                                       steps["rewards"][:, :, self._groups[policy_id]], steps["terminated"], done,
                                       self.config.gamma, self.config.lambda_)
        columns = {
            SampleBatch.ACTION_DIST_INPUTS: torch.stack(record["dist_inputs"]),
            SampleBatch.ACTION_LOGP: torch.stack(record["logp"]),
            SampleBatch.VF_PREDS: values,
            Postprocessing.ADVANTAGES: advantages,
            Postprocessing.VALUE_TARGETS: advantages + values,
        }
        if policy_id in self._game_level:
            columns.update(self.policy_map[policy_id].game_columns(torch.stack(record["game_input"]),
                                                                   advantages + values))
        return columns

    def _transition_columns(self, policy_id, record: dict, steps: dict, done: torch.Tensor,
                            agents: list | slice) -> dict:
        """Replay transitions of `agents`: next observations, n-step rewards and flags (the policy's `n_step`)."""
        return batch_columns.transitions(self.policy_map[policy_id].config, steps["rewards"][:, :, agents],
                                         torch.stack(record["next_obs"]), steps["terminated"], steps["truncated"], done)

    def _game_step_rows(self, policy_id, record: dict, steps: dict, done: torch.Tensor) -> SampleBatch:
        """A `GameSteps` policy's rows (marlkit/game_values.py): one per game and step, every agent of the game in
        it, with n-step rewards and next observations."""
        columns = self._transition_columns(policy_id, record, steps, done, slice(None))
        columns.update({SampleBatch.OBS: torch.stack(record["obs"]), SampleBatch.EPS_ID: steps["eps_id"],
                        SampleBatch.ACTIONS: torch.stack(record["actions"]), SampleBatch.T: steps["t"]})
        for flag in (SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS):  # the game's, not per agent
            columns[flag] = columns[flag][..., 0]
        batch = SampleBatch({key: _numpy(column[steps["valid"].to(column.device)]) for key, column in columns.items()})
        batch[PRIO_WEIGHTS] = np.ones(len(batch), dtype=np.float32)
        return batch

    def _sequences(self, policy_id, columns: dict, state_in: list, valid: torch.Tensor,
                   valid_steps: torch.Tensor) -> SampleBatch:
        """A recurrent policy's rows per (game, agent) in time order, in `max_seq_len` sequences with their state."""
        max_seq_len = self.policy_map[policy_id].max_seq_len
        rows, states, seq_lens = batch_columns.sequences(columns, state_in, valid, valid_steps, max_seq_len)
        batch = {key: _numpy(column) for key, column in rows.items()}
        for i, state in enumerate(states):
            batch[f"state_in_{i}"] = _numpy(state)
        batch[SampleBatch.SEQ_LENS] = seq_lens.cpu().numpy().astype(np.int32)
        return SampleBatch(batch, _max_seq_len=max_seq_len)

    def get_metrics(self) -> list:
        return self._episodes.take_finished() if self._episodes is not None else []

    def stop(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
        super().stop()


class _BatchedInput(InputReader):
    """The runner's `sample()` as RLlib's input reader."""

    def __init__(self, runner: BatchedEnvRunner):
        self.runner = runner

    def next(self):
        return self.runner.sample()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.cpu().numpy()
