"""One set of settings, two frameworks: the experiment this project runs (as a YAML file would declare it) and
BenchMARL's run of the same algorithm, for the side-by-side benches (bench/vmas.py, bench/algorithms.py).

Matched for every algorithm: the VMAS task (BenchMARL's task file settings), worlds stepped together, frames per
batch, frames in all, learning rate, gamma, MLP sizes and activation (tanh), gradient-norm clip, one set of
parameters shared by the agents. PPO (BenchMARL's IPPO/MAPPO): epochs, minibatch frames, GAE lambda, clip, no entropy
bonus, no value clipping. DQN and SAC (BenchMARL's IQL and ISAC): replay batch frames, gradient steps per batch (RLlib's
`training_intensity`), replay capacity, soft target updates after every gradient step (tau), learning from the first
batch on, uniform replay; DQN: its epsilon schedule over a third of the frames, plain Q-learning on the MLP's outputs
(no double-Q, no dueling head) with a squared TD error; SAC: twin Q critics, alpha starting at 1 and the automatic
target entropy. Each framework's own: BenchMARL's Adam epsilon and SAC's scale mapping, RLlib's SAC action squashing.
Teams (bench/teams.py): VDN and QMIX as DQN above with the team's reward the mean of its agents' (BenchMARL's), QMIX
with a 32-wide mixing network; MASAC as SAC above with centralised twin critics, each agent's own reward. Their replay
batch and capacity count frames on both sides (one row per game step here).

A frame is one step of one world (all agents). RLlib counts its replay batch and minibatches in rows, one per agent
and frame; BenchMARL counts frames: the row counts below are frames x agents.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

# The scenarios as BenchMARL's task files (`vmas/<scenario>.yaml`) set them; both frameworks get exactly these.
TASKS = {
    "navigation": {
        "n_agents": 3, "max_steps": 100, "collisions": True, "agents_with_same_goal": 1, "split_goals": False,
        "observe_all_goals": False, "shared_rew": False, "lidar_range": 0.35, "agent_radius": 0.1,
    },
    "balance": {"n_agents": 4, "max_steps": 100, "random_package_pos_on_line": True, "package_mass": 5},
}
# PettingZoo tasks as BenchMARL's task files (`pettingzoo/<scenario>.yaml`) set them, run from their mpe2 module.
PETTINGZOO_TASKS = {"simple_spread": {"N": 3, "max_cycles": 100, "local_ratio": 0.5}}
GAMMA, GAE_LAMBDA, CLIP, GRAD_NORM_CLIP, TAU = 0.99, 0.9, 0.2, 5.0, 0.005
EPSILON_START, EPSILON_END = 0.8, 0.01  # BenchMARL's exploration_eps_init / _end
REPLAY_FRAMES = 1_000_000  # BenchMARL's off_policy_memory_size
# This project's algorithm -> BenchMARL's for `multiagent.critic: decentralized`, and MAPPO for `centralized`
BENCHMARL_ALGORITHM = {"PPO": "ippo", "DQN": "iql", "SAC": "isac", "VDN": "vdn", "QMIX": "qmix", "MASAC": "masac"}
# The teams of bench/teams.py: the RLlib algorithm and the `multiagent` keys that make it a team (marlkit/team.py)
TEAMS = {"VDN": ("DQN", {"mixer": "vdn", "team_reward": "mean"}),
         "QMIX": ("DQN", {"mixer": "qmix", "team_reward": "mean"}),
         "MASAC": ("SAC", {"critic": "centralized"})}


@dataclass
class Matched:
    scenario: str = "navigation"
    num_envs: int = 200
    frames_per_batch: int = 2_000
    train_frames: int = 60_000
    hiddens: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 3e-4
    epochs: int = 4  # PPO: passes over each batch
    minibatch_frames: int = 500  # PPO: frames per gradient step
    replay_batch_frames: int = 128  # DQN, SAC: frames per gradient step
    optimizer_steps: int = 50  # DQN, SAC: gradient steps per batch

    env: str = "vmas"  # or "pettingzoo" (a task of PETTINGZOO_TASKS)

    @property
    def task(self) -> dict:
        return (PETTINGZOO_TASKS if self.env == "pettingzoo" else TASKS)[self.scenario]

    @property
    def n_agents(self) -> int:
        return self.task.get("n_agents") or self.task["N"]

    def env_config(self, continuous_actions: bool) -> dict:
        """This project's env_config of the task: VMAS's scenario, or the mpe2 module of `env: pettingzoo`."""
        where = {"env": f"mpe2.{self.scenario}_v3"} if self.env == "pettingzoo" else {"scenario": self.scenario}
        return {**where, "continuous_actions": continuous_actions, **self.task}


@dataclass
class TrainRun:
    seed: int
    frames: int
    seconds: float
    mean_return: float  # mean per-agent episode return of the episodes that ended in the last batch

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def add_matched_arguments(parser, num_envs: int = 200, fragment: int = 10, train_frames: int = 60_000) -> None:
    """The command-line settings bench/algorithms.py, bench/teams.py and bench/pettingzoo.py share (one Matched
    each), with a bench's own defaults for the sizes."""
    parser.add_argument("--num-envs", type=int, default=num_envs, help="worlds (games) stepped together")
    parser.add_argument("--fragment", type=int, default=fragment, help="steps of every world per sampled batch")
    parser.add_argument("--train-frames", type=int, default=train_frames, help="frames each training run collects")
    parser.add_argument("--replay-batch", type=int, default=128, help="DQN/SAC: frames per gradient step")
    parser.add_argument("--optimizer-steps", type=int, default=50, help="DQN/SAC: gradient steps per sampled batch")
    parser.add_argument("--seeds", type=int, default=3, help="training runs per algorithm and framework (seeds 0..N-1)")
    parser.add_argument("--skip-benchmarl", action="store_true", help="no BenchMARL runs")
    parser.add_argument("--hiddens", default="256,256", help="MLP hidden sizes")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--temp-dir", help="Ray's temp folder (default: Ray's own)")


def ours_experiment(matched: Matched, algorithm: str, seed: int, critic: str = "decentralized",
                    stock_sampler: bool = False):
    """This project's experiment for `algorithm` (PPO, DQN, SAC, or a team of `TEAMS`), loaded as train.py loads a
    YAML file; RLlib's stock sampler set as `env_runner_cls` when asked."""
    from marlkit import spec

    run, team = TEAMS.get(algorithm, (algorithm, {}))
    config = {
        "env_config": matched.env_config(continuous_actions=run != "DQN"),
        "num_env_runners": 0,  # sample in the training process, as BenchMARL's collector does
        "num_envs_per_env_runner": matched.num_envs,
        "rollout_fragment_length": matched.frames_per_batch // matched.num_envs,
        "lr": matched.lr,
        "gamma": GAMMA,
        "grad_clip": GRAD_NORM_CLIP,
        "seed": seed,
        "metrics_num_episodes_for_smoothing": matched.num_envs,  # all episodes of a batch, like BenchMARL's figure
        "multiagent": {"policies": "shared", **({"critic": critic} if algorithm == "PPO" else {}), **team},
        **{"PPO": ppo_settings, "DQN": dqn_settings, "SAC": sac_settings}[run](matched, rows_per_frame=1 if team else
                                                                               matched.n_agents),
    }
    if stock_sampler:
        from ray.rllib.evaluation.rollout_worker import RolloutWorker

        config["env_runner_cls"] = RolloutWorker
    return spec.parse_experiment(f"bench-{algorithm.lower()}-{matched.scenario}",
                                 {"run": run, "env": matched.env, "config": config})


def ppo_settings(matched: Matched, rows_per_frame: int) -> dict:
    return {
        "train_batch_size": matched.frames_per_batch,
        "minibatch_size": matched.minibatch_frames * matched.n_agents,
        "num_epochs": matched.epochs,
        "lambda": GAE_LAMBDA,
        "clip_param": CLIP,
        "vf_loss_coeff": 1.0,
        "vf_clip_param": float("inf"),  # TorchRL's ClipPPOLoss does not clip the value loss
        "entropy_coeff": 0.0,
        "use_kl_loss": False,
        "kl_coeff": 0.0,
        "model": {"custom_model": "fcnet", "custom_model_config": {"hiddens": matched.hiddens, "activation": "tanh"}},
    }


def replay_settings(matched: Matched, rows_per_frame: int) -> dict:
    """DQN's and SAC's shared replay: RLlib does `training_intensity / (batch rows / sampled frames)` gradient steps
    per sampled batch; a row is an agent's step (`rows_per_frame` agents), or a whole game step for a team."""
    rows = matched.replay_batch_frames * rows_per_frame
    return {
        "train_batch_size": rows,
        "min_sample_timesteps_per_iteration": matched.frames_per_batch,  # one sampled batch per iteration
        "min_time_s_per_iteration": 0,  # (RLlib's SAC samples for at least 1 s per iteration: frames past the end)
        "training_intensity": matched.optimizer_steps * rows / matched.frames_per_batch,
        "num_steps_sampled_before_learning_starts": 0,
        "n_step": 1,
        "tau": TAU,
        "target_network_update_freq": 0,  # a (soft) target update after every gradient step
        "replay_buffer_config": {"type": "MultiAgentReplayBuffer", "capacity": REPLAY_FRAMES * rows_per_frame},
    }


def dqn_settings(matched: Matched, rows_per_frame: int) -> dict:
    return {
        **replay_settings(matched, rows_per_frame),
        "dueling": False,
        "double_q": False,
        "hiddens": [],  # Q-values straight from the MLP's last layer
        "td_error_loss_fn": "mse",
        "model": {"fcnet_hiddens": matched.hiddens, "fcnet_activation": "tanh"},
        "exploration_config": {"type": "EpsilonGreedy", "initial_epsilon": EPSILON_START,
                               "final_epsilon": EPSILON_END, "epsilon_timesteps": matched.train_frames // 3},
    }


def sac_settings(matched: Matched, rows_per_frame: int) -> dict:
    network = {"fcnet_hiddens": matched.hiddens, "fcnet_activation": "tanh"}
    return {
        **replay_settings(matched, rows_per_frame),
        "twin_q": True,
        "initial_alpha": 1.0,
        "target_entropy": "auto",
        "optimization": {"actor_learning_rate": matched.lr, "critic_learning_rate": matched.lr,
                         "entropy_learning_rate": matched.lr},
        "q_model_config": network,
        "policy_model_config": network,
    }


def benchmarl_train(matched: Matched, algorithm: str, seed: int, folder: Path) -> TrainRun:
    """BenchMARL's `algorithm` (ippo, mappo, iql, isac, vdn, qmix or masac) on the same task with the same settings,
    run to `matched.train_frames`."""
    import torch
    from benchmarl.algorithms import (
        IppoConfig, IqlConfig, IsacConfig, MappoConfig, MasacConfig, QmixConfig, VdnConfig,
    )
    from benchmarl.environments import VmasTask
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models.mlp import MlpConfig

    config = ExperimentConfig.get_from_yaml()
    config.sampling_device = config.train_device = config.buffer_device = "cpu"
    config.share_policy_params = True
    config.prefer_continuous_actions = algorithm not in ("iql", "vdn", "qmix")
    config.gamma, config.lr = GAMMA, matched.lr
    config.clip_grad_norm, config.clip_grad_val = True, GRAD_NORM_CLIP
    config.max_n_frames = matched.train_frames
    config.on_policy_collected_frames_per_batch = config.off_policy_collected_frames_per_batch = matched.frames_per_batch
    config.on_policy_n_envs_per_worker = config.off_policy_n_envs_per_worker = matched.num_envs
    config.on_policy_n_minibatch_iters = matched.epochs
    config.on_policy_minibatch_size = matched.minibatch_frames
    config.off_policy_n_optimizer_steps = matched.optimizer_steps
    config.off_policy_train_batch_size = matched.replay_batch_frames
    config.off_policy_memory_size, config.off_policy_init_random_frames = REPLAY_FRAMES, 0
    config.off_policy_use_prioritized_replay_buffer = False
    config.soft_target_update, config.polyak_tau = True, TAU
    config.exploration_eps_init, config.exploration_eps_end = EPSILON_START, EPSILON_END
    config.exploration_anneal_frames = matched.train_frames // 3
    config.evaluation, config.render, config.loggers, config.create_json = False, False, [], False
    config.checkpoint_interval, config.checkpoint_at_end = 0, False
    config.save_folder = str(folder)
    algorithm_config = {"mappo": MappoConfig, "ippo": IppoConfig, "iql": IqlConfig, "isac": IsacConfig,
                        "vdn": VdnConfig, "qmix": QmixConfig, "masac": MasacConfig}[algorithm].get_from_yaml()
    if algorithm in ("mappo", "ippo"):
        algorithm_config.lmbda, algorithm_config.clip_epsilon = GAE_LAMBDA, CLIP
        algorithm_config.entropy_coef, algorithm_config.critic_coef = 0.0, 1.0
    if matched.env == "pettingzoo":
        task = pettingzoo_task(matched)
    else:
        task = VmasTask[matched.scenario.upper()].get_from_yaml()
    task.config.update(matched.task)
    model = MlpConfig(num_cells=matched.hiddens, activation_class=torch.nn.Tanh, layer_class=torch.nn.Linear)
    experiment = Experiment(task=task, algorithm_config=algorithm_config, model_config=model, critic_model_config=model,
                            seed=seed, config=config)
    experiment.run()
    return report(f"BenchMARL {algorithm.upper()}",
                  TrainRun(seed, experiment.total_frames, experiment.total_time, experiment.mean_return))


def pettingzoo_task(matched: Matched):
    """BenchMARL's PettingZoo task with its settings, its env built from the mpe2 module (`Mpe2Task`)."""
    from benchmarl.environments import PettingZooTask

    task = PettingZooTask[matched.scenario.upper()].get_from_yaml()
    return _mpe2_task_class()(task.name, task.config)


def _mpe2_task_class():
    """BenchMARL's `PettingZooClass` whose env is the mpe2 module's: TorchRL 0.11 looks MPE up in `pettingzoo.mpe`,
    which PettingZoo 1.25+ moved out (to mpe2). The same wrapper and settings as BenchMARL's `get_env_fun`, the env
    passed in built. (Made on first use: BenchMARL is imported only by the runs that need it; BenchMARL pickles the
    task, so the class is kept at module level.)"""
    global Mpe2Task
    if Mpe2Task is None:
        import importlib

        from benchmarl.environments.pettingzoo.common import PettingZooClass
        from torchrl.envs import PettingZooWrapper

        class Mpe2Task(PettingZooClass):
            def get_env_fun(self, num_envs, continuous_actions, seed, device):
                config = {key: value for key, value in self.config.items() if key != "task"}
                module = importlib.import_module(f"mpe2.{self.config['task']}")
                return lambda: PettingZooWrapper(
                    module.parallel_env(continuous_actions=continuous_actions, render_mode="rgb_array", **config),
                    categorical_actions=True, device=device, seed=seed, return_state=self.has_state())

        Mpe2Task.__qualname__ = "Mpe2Task"  # pickled by its module-level name
    return Mpe2Task


Mpe2Task = None


def report(framework: str, run: TrainRun) -> TrainRun:
    print(f"{framework} seed {run.seed}: {run.frames:,} frames in {run.seconds:.1f} s ({run.fps:,.0f} frames/s), "
          f"mean per-agent return {run.mean_return:.3f}", flush=True)
    return run


def summarize(runs: list[TrainRun]) -> tuple[float, float, float]:
    """Median frames/s, mean return and its standard deviation over seeds (NaN without runs)."""
    if not runs:
        return math.nan, math.nan, math.nan
    returns = [run.mean_return for run in runs]
    spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
    return statistics.median(run.fps for run in runs), statistics.mean(returns), spread


def ours_sample_fps(matched: Matched, algorithm: str, stock_sampler: bool, fragments: int) -> float:
    """Frames per second of `fragments` fragments of the algorithm's own env runner (its policy's forward pass and
    exploration, the env, the training columns: GAE for PPO, transitions and replay weights for DQN and SAC), after
    one warm-up fragment; no learning."""
    from bench.build import build_experiment

    built, _ = build_experiment(ours_experiment(matched, algorithm, 0, stock_sampler=stock_sampler), stock_sampler)
    try:
        runner = built.env_runner
        runner.sample()  # first reset, lazy allocations
        start = time.perf_counter()
        frames = sum(runner.sample().env_steps() for _ in range(fragments))
        return frames / (time.perf_counter() - start)
    finally:
        built.stop()


def ours_train(matched: Matched, algorithm: str, seed: int, critic: str = "decentralized") -> TrainRun:
    """This project's `algorithm` with the batched env runner (the sampler train.py picks): `algorithm.train()`, as a
    Tune trial calls it, until `matched.train_frames` frames."""
    from bench.build import build_experiment, train_until

    built, _ = build_experiment(ours_experiment(matched, algorithm, seed, critic), stock_sampler=False)
    try:
        seconds, frames, result = train_until(built, matched.train_frames)
        mean_return = result["env_runners"]["policy_reward_mean"].get("shared", math.nan)
        label = f"marlkit {algorithm}" + (f" ({critic} critic)" if algorithm == "PPO" else "")
        return report(label, TrainRun(seed, frames, seconds, mean_return))
    finally:
        built.stop()
