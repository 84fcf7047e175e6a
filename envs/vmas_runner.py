"""A batched env runner for VMAS: whole-array sampling on RLlib's old API stack.

Why a custom env runner: RLlib's stock sampler walks every agent of every sub-env through per-agent episode objects,
connectors and view requirements; with VMAS that bookkeeping, not the simulator, bounds sampling (profiled at ~60% of
sampling time). `BatchedVmasRunner` subclasses the old stack's `RolloutWorker` (set as
`env_runners(env_runner_cls=...)`), keeps everything else of it (policies, weight sync, filters, checkpoints), and
replaces `sample()`: per step one forward pass per policy over all of its agents in all sub-envs, one VMAS call for
all sub-envs, and the training batch built from preallocated tensors (observations, actions, log-probs, values,
rewards, flags); GAE is computed over the whole (time, env, agent) array at the end of the fragment. Finished sub-envs
are reset in place (one VMAS `reset` when all finished together, else `reset_at` per world); truncated episodes bootstrap from the value of their final observation, as
RLlib's own postprocessing does.

Limits (checked at start): feed-forward models only (no RNN state), no observation filter, Box or Discrete actions.
Per-step callbacks (`on_episode_step` ...) do not run on this path; `on_sample_end` does.

Example (YAML): nothing to do; `env: vmas` with `num_envs_per_env_runner > 1` samples through this runner.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.evaluation.metrics import RolloutMetrics
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.evaluation.rollout_worker import RolloutWorker
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.filter import NoFilter


class BatchedVmasRunner(RolloutWorker):
    """Old-stack env runner whose `sample()` steps one batched VMAS world with whole-array policy passes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._finished = []  # RolloutMetrics of episodes ended since the last get_metrics()
        self._vmas = getattr(self.env, "_world", None) if self.env is not None else None
        if self._vmas is None:  # the local runner of a Tune trial has no env when remote runners sample
            return
        self._agents = list(self.env.possible_agents)
        self._num_envs = self._vmas.num_envs
        self._device = self._vmas.device
        self._groups = {}  # policy id -> indices into self._agents
        for index, agent in enumerate(self._agents):
            self._groups.setdefault(self.policy_mapping_fn(agent, None, self), []).append(index)
        sizes = [int(np.prod(self.env.observation_spaces[agent].shape)) for agent in self._agents]
        self._widest_obs = max(sizes)
        self._padded = len(set(sizes)) > 1  # agents of different kinds (predators and prey) observe different sizes
        self._obs_size = {policy_id: sizes[group[0]] for policy_id, group in self._groups.items()}
        for policy_id in self._groups:
            policy = self.policy_map[policy_id]
            if policy.is_recurrent():
                raise ValueError(f"policy '{policy_id}': recurrent models need RLlib's stock sampler (num_envs 1)")
            if not isinstance(self.filters[policy_id], NoFilter):
                raise ValueError(f"policy '{policy_id}': observation filters are not supported by the batched runner")
        self._observations = None
        self._episode_returns = torch.zeros(self._num_envs, len(self._agents), device=self._device)
        self._episode_lengths = torch.zeros(self._num_envs, dtype=torch.long, device=self._device)
        self._episode_ids = torch.arange(self._num_envs, device=self._device) + self.worker_index * 10**9
        self._next_episode_id = int(self._episode_ids[-1]) + 1
        self._reset_seed = getattr(self.env, "_reset_seed", None)

    def _stacked(self, per_agent: dict) -> torch.Tensor:
        """(num_envs, num_agents, ...) from VMAS's per-agent dict of rewards or observations.

        Observations of different sizes are flattened and zero-padded to the widest; `_own` cuts a policy's back.
        """
        parts = [per_agent[agent] for agent in self._agents]
        if self._padded and parts[0].dim() > 1:
            parts = [torch.nn.functional.pad(p.reshape(len(p), -1), (0, self._widest_obs - p[0].numel())) for p in parts]
        return torch.stack(parts, dim=1)

    def _own(self, observations: torch.Tensor, policy_id, agent_axis: int = 1) -> torch.Tensor:
        """The observations of one policy's agents (agent axis `agent_axis`), without another kind's padding."""
        index = torch.tensor(self._groups[policy_id], device=observations.device)
        picked = observations.index_select(agent_axis, index)
        return picked[..., :self._obs_size[policy_id]] if self._padded else picked

    def _reset_all(self) -> None:
        if self._reset_seed is not None:
            self._vmas.seed(self._reset_seed)
        self._observations = self._stacked(self._vmas.reset())

    @staticmethod
    def _forward(policy, observations: torch.Tensor):
        """Distribution inputs and state values of the policy's model for (rows, ...) observations (no grad)."""
        rows = observations.to(policy.device).reshape(len(observations), -1)
        with torch.no_grad():
            dist_inputs, _ = policy.model(SampleBatch({SampleBatch.OBS: rows}, _is_training=False), [], None)
            return dist_inputs, policy.model.value_function()

    def _policy_pass(self, policy, observations: torch.Tensor, explore: bool):
        """Actions, log-probs, values and distribution inputs for a (rows, obs_dim) observation array."""
        dist_inputs, values = self._forward(policy, observations)
        with torch.no_grad():
            distribution = policy.dist_class(dist_inputs, policy.model)
            actions = distribution.sample() if explore else distribution.deterministic_sample()
            logp = distribution.logp(actions)
        return actions, logp, values, dist_inputs

    def _env_actions(self, policy, actions: torch.Tensor) -> torch.Tensor:
        """RLlib's unsquash/clip of policy outputs into the env's action bounds, on whole arrays."""
        space = policy.action_space
        if isinstance(space, gym.spaces.Box):
            low = torch.as_tensor(space.low, device=actions.device)
            high = torch.as_tensor(space.high, device=actions.device)
            if self.config.normalize_actions:
                actions = low + (actions + 1.0) * (high - low) / 2.0
            if self.config.normalize_actions or self.config.clip_actions:
                actions = torch.maximum(torch.minimum(actions, high), low)
        return actions

    def _values(self, observations: torch.Tensor) -> torch.Tensor:
        """(envs, agents) state values of (envs, agents, obs_dim) observations, per the agents' policies."""
        values = torch.zeros(observations.shape[:2], device=self._device)
        for policy_id, agents in self._groups.items():
            policy = self.policy_map[policy_id]
            own = self._own(observations, policy_id)
            _, group_values = self._forward(policy, own.reshape((-1,) + tuple(own.shape[2:])))
            values[:, agents] = group_values.to(self._device).reshape(len(observations), len(agents))
        return values

    def sample(self, **kwargs):
        if self._observations is None:
            self._reset_all()
        steps = self.config.get_rollout_fragment_length(self.worker_index)
        explore = self.config.explore
        envs, agents = self._num_envs, len(self._agents)
        obs_buffer = torch.empty((steps, envs, agents) + self._observations.shape[2:], device=self._device)
        rewards = torch.empty(steps, envs, agents, device=self._device)
        values = torch.empty(steps, envs, agents, device=self._device)
        logps = torch.empty(steps, envs, agents, device=self._device)
        terminated = torch.empty(steps, envs, dtype=torch.bool, device=self._device)
        truncated = torch.empty(steps, envs, dtype=torch.bool, device=self._device)
        bootstrap = torch.zeros(steps, envs, agents, device=self._device)  # value of a truncated episode's last obs
        episode_ids = torch.empty(steps, envs, dtype=torch.long, device=self._device)
        time_in_episode = torch.empty(steps, envs, dtype=torch.long, device=self._device)
        actions, dist_inputs = {}, {}

        for t in range(steps):
            obs_buffer[t] = self._observations
            episode_ids[t] = self._episode_ids
            time_in_episode[t] = self._episode_lengths
            env_actions = {}
            for policy_id, group in self._groups.items():
                policy = self.policy_map[policy_id]
                rows = self._own(self._observations, policy_id).reshape(envs * len(group), -1)
                action, logp, value, inputs = self._policy_pass(policy, rows, explore)
                if t == 0:
                    actions[policy_id] = torch.empty((steps,) + tuple(action.shape), dtype=action.dtype, device=action.device)
                    dist_inputs[policy_id] = torch.empty((steps,) + tuple(inputs.shape), device=inputs.device)
                actions[policy_id][t] = action
                dist_inputs[policy_id][t] = inputs
                logps[t][:, group] = logp.to(self._device).reshape(envs, len(group))
                values[t][:, group] = value.to(self._device).reshape(envs, len(group))
                per_env = self._env_actions(policy, action).to(self._device).reshape((envs, len(group)) + tuple(action.shape[1:]))
                for position, agent_index in enumerate(group):
                    env_actions[self._agents[agent_index]] = per_env[:, position]
            observations, step_rewards, step_terminated, step_truncated, _ = self._vmas.step(env_actions)
            rewards[t] = self._stacked(step_rewards)
            terminated[t] = step_terminated
            truncated[t] = step_truncated & ~step_terminated
            next_observations = self._stacked(observations)
            self._episode_returns += rewards[t]
            self._episode_lengths += 1
            done = (step_terminated | step_truncated).nonzero().flatten()
            if len(done):
                cut = truncated[t].nonzero().flatten()
                if len(cut):
                    bootstrap[t, cut] = self._values(next_observations[cut])
                next_observations = self._reset_done(done, next_observations)
            self._observations = next_observations

        last_values = self._values(self._observations)
        batch = self._build_batch(obs_buffer, actions, dist_inputs, logps, values, rewards, terminated, truncated,
                                  bootstrap, last_values, episode_ids, time_in_episode)
        self.callbacks.on_sample_end(worker=self, samples=batch)
        return batch

    def _reset_done(self, done: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
        """Records and resets finished sub-envs: all at once in one VMAS call when all finished (episodes of a fixed
        length end together; one `reset_at` per world costs as much as a whole step), else one by one."""
        all_done = len(done) == self._num_envs
        if all_done:
            next_observations = self._stacked(self._vmas.reset())
        for env_index in done.tolist():
            self._finished.append(RolloutMetrics(
                episode_length=int(self._episode_lengths[env_index]),
                episode_reward=float(self._episode_returns[env_index].sum()),
                agent_rewards={
                    (agent, self.policy_mapping_fn(agent, None, self)): float(self._episode_returns[env_index, i])
                    for i, agent in enumerate(self._agents)
                },
            ))
            if not all_done:
                next_observations[env_index] = self._stacked(self._vmas.reset_at(env_index))[env_index]
            self._episode_returns[env_index] = 0
            self._episode_lengths[env_index] = 0
            self._episode_ids[env_index] = self._next_episode_id
            self._next_episode_id += 1
        return next_observations

    def _build_batch(self, obs_buffer, actions, dist_inputs, logps, values, rewards, terminated, truncated,
                     bootstrap, last_values, episode_ids, time_in_episode) -> MultiAgentBatch:
        gamma, lambda_ = self.config.gamma, self.config.lambda_
        steps, envs, agents = rewards.shape
        done = (terminated | truncated).unsqueeze(-1).expand(-1, -1, agents)
        next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
        next_values = torch.where(done, bootstrap, next_values)  # terminated: bootstrap is 0
        deltas = rewards + gamma * next_values - values
        advantages = torch.empty_like(deltas)
        running = torch.zeros(envs, agents, device=self._device)
        for t in reversed(range(steps)):
            running = deltas[t] + gamma * lambda_ * (~done[t]) * running
            advantages[t] = running
        targets = advantages + values

        def rows(tensor: torch.Tensor, group: list[int]) -> np.ndarray:
            """(steps, envs, agents, ...) -> (steps * envs * len(group), ...) for the agents of one policy."""
            picked = tensor[:, :, group]
            return picked.reshape((-1,) + tuple(picked.shape[3:])).cpu().numpy()

        def per_agent(tensor: torch.Tensor) -> torch.Tensor:
            """(steps, envs) -> (steps, envs, agents)."""
            return tensor.unsqueeze(-1).expand(-1, -1, agents)

        def flat(tensor: torch.Tensor) -> np.ndarray:
            """(steps, envs * len(group), ...) as recorded per policy -> rows."""
            return tensor.reshape((-1,) + tuple(tensor.shape[2:])).cpu().numpy()

        agent_index = torch.arange(agents, device=self._device).expand(steps, envs, agents)
        policy_batches = {}
        for policy_id, group in self._groups.items():
            policy_batches[policy_id] = SampleBatch({
                SampleBatch.OBS: rows(self._own(obs_buffer, policy_id, agent_axis=2), list(range(len(group)))),
                SampleBatch.ACTIONS: flat(actions[policy_id]),
                SampleBatch.ACTION_DIST_INPUTS: flat(dist_inputs[policy_id]),
                SampleBatch.ACTION_LOGP: rows(logps, group),
                SampleBatch.VF_PREDS: rows(values, group),
                SampleBatch.REWARDS: rows(rewards, group),
                SampleBatch.TERMINATEDS: rows(per_agent(terminated), group),
                SampleBatch.TRUNCATEDS: rows(per_agent(truncated), group),
                SampleBatch.EPS_ID: rows(per_agent(episode_ids), group),
                SampleBatch.T: rows(per_agent(time_in_episode), group),
                SampleBatch.AGENT_INDEX: rows(agent_index, group),
                Postprocessing.ADVANTAGES: rows(advantages, group),
                Postprocessing.VALUE_TARGETS: rows(targets, group),
            })
        return MultiAgentBatch(policy_batches, env_steps=steps * envs)

    def get_metrics(self) -> list:
        finished, self._finished = self._finished, []
        return finished
