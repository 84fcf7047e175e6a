"""Evaluating a trained checkpoint: real episodes step by step, the rollout file, videos and a summary.

The rollout file is a pickle of a list of episodes; each episode is a list of steps; each step is
`[obs, action, next_obs, reward, terminated, truncated]` (+ `info` with `save_info`), each a dict keyed by agent id
(`terminated`/`truncated` also carry `"__all__"`).

Episodes run on an RLlib env runner (the algorithm's local one, or each remote one for a share of the episodes), with
that runner's policies, preprocessors and observation filters, so actions are exactly what training would compute.

Example (needs a trained checkpoint, e.g. after `make train`, so it is not a doctest; rollout.py does the same):

    from marlkit import checkpoints, launch
    checkpoint = checkpoints.resolve_checkpoint("results/vmas-navigation-ppo/PPO_vmas_84d79_00000_0_...")
    state = checkpoints.load_algorithm_state(checkpoint)
    launch.start_ray(launch.RayOptions())
    algorithm = restore_for_evaluation(checkpoint, state, None, {}, num_workers=0, num_gpus=0)
    settings = RolloutSettings(env="vmas", env_config=algorithm.config.env_config, episodes=2, seed=0)
    episodes = rollout(algorithm, settings)     # 2 episodes of 100 steps
    write_rollout("rollout.pkl", episodes)
"""

from __future__ import annotations

import functools
import os
import pickle
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.models.preprocessors import get_preprocessor
from ray.rllib.utils.spaces import space_utils
from ray.tune.registry import ENV_CREATOR, _global_registry

from envs import ENVS, EnvEntry, env_entry
from envs.errors import ConfigError
from marlkit.video import VideoWriter, virtual_display

DEFAULT_FPS = 10


def restore_for_evaluation(checkpoint: Path, state: dict, env: str | None, overrides: dict, num_workers: int,
                           num_gpus: float):
    """Rebuilds the checkpoint's algorithm with evaluation settings and loads its weights (needs Ray started).

    `env` and `overrides` (RLlib settings; `env_config` is merged key by key) change what the policies are
    evaluated on. Training-only parts are dropped: user callbacks, evaluation runs, the `--restore` hook.
    """
    from marlkit import launch, models
    from marlkit.rllib_settings import translate_config

    config = state["config"].copy(copy_frozen=False)
    env = env or config.env
    entry = env_entry(env)
    if entry is None:
        raise ConfigError(f"--env: unknown env '{env}'; registered envs: {', '.join(ENVS)} (or an env's file or class)")
    env_config = entry.single_env_config({**config.env_config, **overrides.pop("env_config", {})})
    if overrides:
        translated, _ = translate_config("--config", state["algorithm_class"].__name__, overrides, overrides=True)
        config.update_from_dict(translated)
    entry.check(env_config)
    config.environment(env=env, env_config=env_config)
    config.env_runners(num_env_runners=num_workers, num_envs_per_env_runner=1)
    config.resources(num_gpus=num_gpus)
    config.callbacks(RLlibCallback)
    config.evaluation(evaluation_interval=None, evaluation_num_env_runners=0)
    launch.register_envs()
    models.register_models(models.used_model_names(config.model, config.policies))
    try:
        algorithm = config.build_algo()
    except Exception as error:  # user model and env code fails in its own ways; --debug shows the traceback
        raise ConfigError(
            f"cannot rebuild the algorithm of {checkpoint}: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    try:
        algorithm.restore(str(checkpoint))
    except (RuntimeError, ValueError, KeyError) as error:  # torch's state-dict and optimizer mismatches
        algorithm.stop()
        raise ConfigError(
            f"the weights in {checkpoint} do not fit the model built now (was its model/ file changed?): "
            f"{str(error).splitlines()[0]}"
        ) from None
    return algorithm


@dataclass
class RolloutSettings:
    """What to roll out: the env, how many episodes/steps, action mode, seeding and recording."""

    env: str
    env_config: dict
    episodes: int = 1
    steps: int | None = None  # stop after this many steps in all (the last episode may end early)
    explore: bool = False
    seed: int | None = None
    save_info: bool = False
    video_dir: str | None = None


@dataclass
class EpisodeRecord:
    index: int
    steps: list = field(default_factory=list)
    agent_returns: dict = field(default_factory=lambda: defaultdict(float))
    agent_policies: dict = field(default_factory=dict)
    video: str | None = None
    video_frames: int = 0

    @property
    def policy_returns(self) -> dict:
        returns = defaultdict(float)
        for agent, value in self.agent_returns.items():
            returns[self.agent_policies[agent]] += value
        return dict(returns)


def make_env(settings: RolloutSettings):
    """One (non-batched) instance of the env, for stepping and rendering a single episode at a time. Inside a Tune
    trial the entry is the one registered with Ray (a user's env class travels in it, whatever the trial's folder)."""
    registered = _global_registry.get(ENV_CREATOR, settings.env) if ray.is_initialized() and \
        _global_registry.contains(ENV_CREATOR, settings.env) else None
    entry = registered if isinstance(registered, EnvEntry) else env_entry(settings.env)
    return entry.make(entry.single_env_config(settings.env_config))


def check_render(env) -> None:
    """ConfigError unless the env renders RGB uint8 frames (H, W, 3)."""
    try:
        frame = env.render()
    except Exception as error:  # a renderer fails in many library-specific ways; the user needs the reason
        raise ConfigError(f"the env cannot render video frames: {type(error).__name__}: {error}") from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ConfigError(f"the env's render() gave no RGB frame (got {type(frame).__name__}); it cannot be recorded")


def _compute_action(worker, policy_id, observation, state, explore):
    """The action the runner's policy takes, with the policy's observation preprocessing (Tuple and Dict observations
    flattened, as RLlib's sampler does), the runner's filter and action unsquashing."""
    policy = worker.policy_map[policy_id]
    original = getattr(policy.observation_space, "original_space", None)
    if isinstance(original, (gym.spaces.Tuple, gym.spaces.Dict)):
        observation = get_preprocessor(original)(original).transform(observation)
    observation = worker.filters[policy_id](observation, update=False)
    action, state_out, _ = policy.compute_single_action(observation, state=state, explore=explore)
    if worker.config.normalize_actions:
        action = space_utils.unsquash_action(action, policy.action_space_struct)
    elif worker.config.clip_actions:
        action = space_utils.clip_action(action, policy.action_space_struct)
    return action, state_out


def run_episodes(worker, settings: RolloutSettings, indices: list[int]) -> list[EpisodeRecord]:
    """Runs the episodes numbered `indices` on `worker` (an RLlib RolloutWorker) and returns their records."""
    env = make_env(settings)
    needs_display = bool(settings.video_dir) and getattr(env, "render_needs_display", lambda: False)()
    episodes, total_steps = [], 0
    try:
        with virtual_display(needs_display):
            for index in indices:
                if settings.steps is not None and total_steps >= settings.steps:
                    break
                episode = _run_episode(worker, env, settings, index, settings.steps and settings.steps - total_steps)
                total_steps += len(episode.steps)
                episodes.append(episode)
    finally:
        env.close()
    return episodes


def _run_episode(worker, env, settings: RolloutSettings, index: int, max_steps: int | None) -> EpisodeRecord:
    seed = None if settings.seed is None else settings.seed + index
    if seed is not None:
        torch.manual_seed(seed)  # exploration noise, when --explore samples actions
    observations, _ = env.reset(seed=seed)
    record = EpisodeRecord(index)
    video = None
    if settings.video_dir:
        check_render(env)
        record.video = str(Path(settings.video_dir) / f"episode_{index:06d}.mp4")
        video = VideoWriter(record.video, fps=env.metadata.get("render_fps", DEFAULT_FPS))
    states = {}
    try:
        while True:
            if video is not None:
                video.add(env.render())  # one frame per step: the state its actions were taken in
            actions = {}
            for agent, observation in observations.items():
                policy_id = worker.policy_mapping_fn(agent, None, worker)
                record.agent_policies[agent] = policy_id
                state = states.get(agent, worker.policy_map[policy_id].get_initial_state())
                actions[agent], states[agent] = _compute_action(worker, policy_id, observation, state, settings.explore)
            next_observations, rewards, terminateds, truncateds, infos = env.step(actions)
            step = [observations, actions, next_observations, rewards, terminateds, truncateds]
            record.steps.append(step + [infos] if settings.save_info else step)
            for agent, reward in rewards.items():
                record.agent_returns[agent] += float(reward)
            if terminateds["__all__"] or truncateds["__all__"] or (max_steps and len(record.steps) >= max_steps):
                break
            done = {a for a in next_observations if terminateds.get(a) or truncateds.get(a)}
            observations = {a: o for a, o in next_observations.items() if a not in done}
    except BaseException:
        if video is not None:
            video.abort()
        raise
    if video is not None:
        video.close()
        record.video_frames = video.frames
    record.agent_returns = dict(record.agent_returns)
    return record


def _remote_share(worker, settings: RolloutSettings, num_workers: int) -> list[EpisodeRecord]:
    """The episodes of one remote env runner: every num_workers-th episode, starting at its own index."""
    indices = list(range(worker.worker_index - 1, settings.episodes, num_workers))
    steps = None if settings.steps is None else -(-settings.steps // num_workers)
    share = RolloutSettings(**{**settings.__dict__, "steps": steps})
    return run_episodes(worker, share, indices)


def rollout(algorithm, settings: RolloutSettings) -> list[EpisodeRecord]:
    """Runs the episodes on the algorithm's remote env runners if it has any, else in this process."""
    num_workers = algorithm.config.num_env_runners
    if not num_workers:
        return run_episodes(algorithm.env_runner, settings, list(range(settings.episodes)))
    shares = algorithm.env_runner_group.foreach_env_runner(
        functools.partial(_remote_share, settings=settings, num_workers=num_workers), local_env_runner=False,
    )
    return sorted((episode for share in shares for episode in share), key=lambda e: e.index)


def write_rollout(path: str | Path, episodes: list[EpisodeRecord]) -> Path:
    """Pickles the episodes' steps to `path` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(staging, "wb") as file:
            pickle.dump([episode.steps for episode in episodes], file, protocol=pickle.HIGHEST_PROTOCOL)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def _stats(values: list[float]) -> str:
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):12.6g} {spread:12.6g} {min(values):12.6g} {max(values):12.6g}"


def summary(episodes: list[EpisodeRecord]) -> str:
    """Per-episode lines and mean/std/min/max of lengths and returns per agent, per policy and in total."""
    if not episodes:
        return "no episode was run"
    lines = []
    for e in episodes:
        per_agent = ", ".join(f"{agent} {value:.6g}" for agent, value in e.agent_returns.items())
        lines.append(f"episode {e.index}: length {len(e.steps)}, return {sum(e.agent_returns.values()):.6g} ({per_agent})")
    lines.append(f"{'':24}{'mean':>12} {'std':>12} {'min':>12} {'max':>12}")
    lines.append(f"{'length':24}{_stats([float(len(e.steps)) for e in episodes])}")
    agents = sorted({a for e in episodes for a in e.agent_returns})
    for agent in agents:
        lines.append(f"{'return ' + str(agent):24}{_stats([e.agent_returns.get(agent, 0.0) for e in episodes])}")
    policies = sorted({p for e in episodes for p in e.policy_returns})
    for policy in policies:
        lines.append(f"{'return policy ' + str(policy):24}{_stats([e.policy_returns.get(policy, 0.0) for e in episodes])}")
    lines.append(f"{'return total':24}{_stats([sum(e.agent_returns.values()) for e in episodes])}")
    return "\n".join(lines)
