"""BenchMARL's MAPPO on a VMAS benchmark level with the level's own settings: the suite's reference row
(`benchmark.py --with-benchmarl`, architecture name `benchmarl_mappo`).

Matched to the level's RLlib config: the scenario and its parameters (VMAS defaults for the rest, as our env uses),
`max_steps`, frames per batch (`train_batch_size`), envs per batch (`num_envs_per_env_runner`), minibatch size, epochs,
learning rate, gamma, GAE lambda, PPO clip, entropy coefficient, continuous actions, and parameters shared by the
agents of a group (our `shared` / named policies). Actor and critic are MLPs of `model/fcnet.py`'s default layers
(256, 256, tanh); MAPPO's critic is centralised (BenchMARL's reference algorithm). A level with a curriculum trains on
its final task (BenchMARL has no curricula). Runs in the benchmark's driver process, one after another.

The level's score is computed from BenchMARL's own batches and evaluation rollouts the way RLlib reports it: episode
returns summed over the scored agents (all agents, or one policy's agents for `policy_reward_mean/<policy>` scores).
"""

from __future__ import annotations

import statistics
import tempfile

import torch
from benchmarl.algorithms import MappoConfig
from benchmarl.environments import VmasTask
from benchmarl.experiment import Callback, Experiment, ExperimentConfig
from benchmarl.models.mlp import MlpConfig

from marlkit import spec
from marlkit.callbacks import machine_info

FCNET_LAYERS = [256, 256]
WRAPPER_KEYS = ("num_envs", "device", "continuous_actions", "seed", "max_steps")


def scored_agents(experiment: spec.Experiment, agents: list[str], score: str) -> set[str]:
    """The agents whose rewards make up the level's score."""
    prefix = "env_runners/policy_reward_mean/"
    if not score.startswith(prefix):
        return set(agents)
    assignment = experiment.policy_layout.assign(agents)
    return {agent for agent, policy in assignment.items() if policy == score[len(prefix):]}


def run_mappo(experiment: spec.Experiment, score: str, timesteps: int, eval_episodes: int, seed: int) -> dict:
    """Trains and evaluates BenchMARL MAPPO on the level; returns the run's record fields (as training_record)."""
    rllib = experiment.config
    env_config = dict(rllib.get("env_config") or {})
    if experiment.curriculum:
        env_config.update(experiment.curriculum["stages"][-1]["env_config"])
    frames_per_batch = int(rllib.get("train_batch_size", 4000))
    config = ExperimentConfig.get_from_yaml()
    config.sampling_device = config.train_device = config.buffer_device = "cpu"
    config.share_policy_params = True
    config.prefer_continuous_actions = bool(env_config.get("continuous_actions", True))
    config.gamma, config.lr = float(rllib.get("gamma", 0.99)), float(rllib.get("lr", 5e-5))
    iterations = -(-timesteps // frames_per_batch)
    config.max_n_frames = iterations * frames_per_batch
    config.on_policy_collected_frames_per_batch = frames_per_batch
    config.on_policy_n_envs_per_worker = int(rllib.get("num_envs_per_env_runner", 1))
    config.on_policy_n_minibatch_iters = int(rllib.get("num_epochs", 1))
    config.on_policy_minibatch_size = int(rllib.get("minibatch_size", 128))
    # Evaluation after the first and the last iteration (it also needs a logger or the JSON file to run at all).
    config.evaluation, config.evaluation_interval = True, config.max_n_frames
    config.evaluation_episodes, config.evaluation_deterministic_actions = eval_episodes, True
    config.render, config.loggers, config.create_json = False, [], True
    config.checkpoint_interval, config.checkpoint_at_end = 0, False
    algorithm = MappoConfig.get_from_yaml()
    algorithm.lmbda, algorithm.clip_epsilon = float(rllib.get("lambda", 1.0)), float(rllib.get("clip_param", 0.3))
    algorithm.entropy_coef = float(rllib.get("entropy_coeff", 0.0))
    task = VmasTask[env_config["scenario"].upper()].get_from_yaml()
    task.config = {key: value for key, value in env_config.items() if key not in WRAPPER_KEYS + ("scenario",)}
    task.config["max_steps"] = int(env_config.get("max_steps", 100))
    model = MlpConfig(num_cells=FCNET_LAYERS, activation_class=torch.nn.Tanh, layer_class=torch.nn.Linear)
    record = ScoreRecorder()
    with tempfile.TemporaryDirectory(prefix="benchmarl-") as folder:
        config.save_folder = folder
        run = Experiment(task=task, algorithm_config=algorithm, model_config=model, critic_model_config=model,
                         seed=seed, config=config, callbacks=[record])
        record.scored = scored_agents(experiment, [a for agents in run.group_map.values() for a in agents], score)
        run.run()
    curve = [point for point in record.curve if point[1] is not None]
    returns = record.evaluation
    return {
        "train": {
            "time_s": run.total_time,
            "iterations": run.n_iters_performed,
            "env_steps": run.total_frames,
            "score_metric": score,
            "final_score": curve[-1][1] if curve else None,
            "episode_return_mean": None,
            "curriculum_stage": None,
            "curve": curve,
        },
        "evaluation": {"returns": returns, "mean": statistics.fmean(returns) if returns else None},
        "speed": {"env_steps_per_s": run.total_frames / run.total_time, "sample_time_ms": None, "learn_time_ms": None},
        "machine": machine_info(),
        "placement": None,
    }


def _scored_sum(per_agent: dict, group_map: dict, scored: set[str]) -> torch.Tensor:
    """Sum over the scored agents of per-agent values: `per_agent[group]` is (..., agents of the group, 1)."""
    total = 0
    for group, agents in group_map.items():
        columns = [i for i, agent in enumerate(agents) if agent in scored]
        if columns:
            total = total + per_agent[group][..., columns, :].sum(dim=(-2, -1))
    return total


class ScoreRecorder(Callback):
    """Learning curve (each batch's finished episodes) and evaluation scores of the scored agents."""

    def __init__(self):
        super().__init__()
        self.scored: set[str] = set()
        self.curve: list = []
        self.evaluation: list[float] = []

    def on_batch_collected(self, batch):
        done = batch.get(("next", "done")).squeeze(-1)
        groups = self.experiment.group_map
        returns = _scored_sum({g: batch.get(("next", g, "episode_reward"))[done] for g in groups}, groups, self.scored)
        # BenchMARL counts the batch's frames before it calls back.
        self.curve.append([self.experiment.total_frames, float(returns.mean()) if done.any() else None])

    def on_evaluation_end(self, rollouts):
        groups = self.experiment.group_map
        self.evaluation = []
        for rollout in rollouts:  # one episode per rollout: (steps, ...); it may run past its end
            done = rollout.get(("next", "done")).squeeze(-1)
            end = int(done.nonzero()[0]) + 1 if done.any() else len(done)
            rewards = {g: rollout.get(("next", g, "reward"))[:end].sum(0) for g in groups}
            self.evaluation.append(float(_scored_sum(rewards, groups, self.scored)))
