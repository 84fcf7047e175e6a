"""VMAS throughput and learning, side by side in one run on one machine (navigation by default; --scenario balance).

Measures, at `--num-envs` worlds (default 600), on the scenario as BenchMARL's task file sets it (navigation: 3
agents, balance: 4):
  a. raw VMAS stepping with random actions (the ceiling),
  b. this project's sampling: its batched env runner with the PPO policy forward, no learning,
  c. a hand-written MultiAgentEnv with one VMAS simulator per sub-env on stock RLlib 2.60 (new API stack), the
     wrapper a user would write, sampled by RLlib's own MultiAgentEnvRunner,
  d. end-to-end PPO: this project (the same Algorithm a `train.py` trial runs) with per-agent critics (`ours`) and
     with the centralised critic of `multiagent.critic: centralized` (`ours_mappo`, marlkit/mappo.py), and
     BenchMARL's MAPPO (and IPPO), with the same hyperparameters (frames per batch, epochs, minibatch size, MLP sizes
     and activation, learning rate, gamma, GAE lambda, clip, gradient-norm clip, number of envs) for the same frames,
  e. the mean per-agent episode return of each at equal frames (episodes of the last batch), over `--seeds` seeds,
  f. recurrent models on `config/benchmark/level_1_basic.yaml` (2 agents, 32 worlds, 3,200 frames per batch, sampled
     in the training process): PPO with `custom_model: lstm` through RLlib's stock old-stack sampler (`RolloutWorker`
     as env_runner_cls) and through this project's batched env runner, and `custom_model: fcnet` through the batched
     runner, each model with its defaults (fcnet MLP [256, 256]; lstm MLP [128] + LSTM 128, max_seq_len 10), for the
     same --recurrent-iters iterations.

A frame is one step of one world (all agents), counted the same way for all. Training time is the sum of
training iterations (sampling + learning), without process start and model/env construction, for both.
Prints a table and, as the last line, one JSON object with the figures.

Usage:
    python bench/vmas.py                                  # defaults below, ~15 min on 2 CPU cores
    python bench/vmas.py --only-recurrent                 # only the recurrent rows (f), ~2 min
    python bench/vmas.py --scenario balance --skip-sampling --recurrent-iters 0 --benchmarl-algorithms mappo
                                                          # the balance return table (d, e), ~30 min
    python bench/vmas.py --num-envs 6 --frames-per-batch 600 --train-frames 1200 --minibatch-size 200 \\
        --sample-iters 1 --naive-steps 1 --seeds 1 --recurrent-iters 1 --recurrent-batch-size 64   # a tiny run (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Run as `python bench/vmas.py`, this folder would come first on sys.path and this file would shadow the `vmas`
# package: put the repository root there instead (for marlkit and envs).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.matched import TASKS, Matched, TrainRun, benchmarl_train, ours_sample_fps, ours_train, summarize  # noqa: E402

JSON_KEYS = ("raw_vmas_fps", "ours_sample_fps", "naive_rllib_sample_fps", "ours_train_fps", "benchmarl_train_fps",
             "ours_return", "benchmarl_return", "ours_mappo_train_fps", "ours_mappo_return", "lstm_stock_train_fps", "lstm_batched_train_fps",
             "fcnet_batched_train_fps")
RECURRENT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "benchmark" / "level_1_basic.yaml"
# (f): JSON key, table label, custom_model, RLlib's stock sampler?
RECURRENT_RUNS = (
    ("lstm_stock", "f. level 1, LSTM PPO, stock RLlib sampler (train)", "lstm", True),
    ("lstm_batched", "f. level 1, LSTM PPO, batched runner (train)", "lstm", False),
    ("fcnet_batched", "f. level 1, MLP PPO, batched runner (train)", "fcnet", False),
)
# (d): ours' critics: JSON key prefix, table label, multiagent.critic
OURS_RUNS = {
    "decentralized": ("ours", "d. marlkit PPO, per-agent critics (train)"),
    "centralized": ("ours_mappo", "d. marlkit MAPPO, centralised critic (train)"),
}
# (f): (figure, bound, label); a ratio >= bound meets the target
RECURRENT_TARGETS = (
    ("lstm_batched / lstm_stock", 3.0, "LSTM batched >= 3x stock"),
    ("lstm_batched / fcnet_batched", 0.5, "LSTM batched within 2x of the MLP"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=sorted(TASKS), default="navigation")
    parser.add_argument("--ours-critics", default="decentralized,centralized",
                        help="this project's PPO runs: per-agent critics, the centralised critic (MAPPO), or both")
    parser.add_argument("--num-envs", type=int, default=600, help="VMAS worlds stepped together (all measurements)")
    parser.add_argument("--sample-iters", type=int, default=5,
                        help="timed sampling fragments for (a) and (b), each max_steps steps of every world")
    parser.add_argument("--naive-steps", type=int, default=2,
                        help="timed vector steps of the naive wrapper (each steps --num-envs simulators one by one)")
    parser.add_argument("--frames-per-batch", type=int, default=60_000, help="frames per training iteration")
    parser.add_argument("--train-frames", type=int, default=600_000, help="frames each training run collects")
    parser.add_argument("--epochs", type=int, default=4, help="passes over each batch")
    parser.add_argument("--minibatch-size", type=int, default=6_000, help="frames per gradient step")
    parser.add_argument("--hiddens", default="256,256", help="MLP hidden sizes of policy and critic")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seeds", type=int, default=3, help="training runs per framework (seeds 0..N-1)")
    parser.add_argument("--benchmarl-algorithms", default="mappo,ippo",
                        help="BenchMARL reference runs, comma-separated: mappo (centralised critic: one critic pass "
                             "per world) and/or ippo (a critic pass per agent, as this project's PPO)")
    parser.add_argument("--skip-training", action="store_true", help="only the sampling measurements (a-c)")
    parser.add_argument("--skip-sampling", action="store_true", help="no sampling measurements (a-c)")
    parser.add_argument("--recurrent-iters", type=int, default=5,
                        help="PPO iterations of each recurrent-row run (f); 0 skips the recurrent rows")
    parser.add_argument("--recurrent-batch-size", type=int, default=None,
                        help="frames per iteration of the recurrent rows (default: level_1_basic.yaml's 3,200; a "
                             "multiple of its 32 worlds)")
    parser.add_argument("--only-recurrent", action="store_true", help="only the recurrent rows (f), not a-e")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads of this process (default: torch's own, one per core)")
    parser.add_argument("--temp-dir", help="Ray's temp folder (default: Ray's own)")
    args = parser.parse_args(argv)
    args.hiddens = [int(size) for size in args.hiddens.split(",")]
    args.benchmarl_algorithms = args.benchmarl_algorithms.split(",")
    args.ours_critics = args.ours_critics.split(",")
    if set(args.ours_critics) - set(OURS_RUNS):
        parser.error(f"--ours-critics: choose from {', '.join(OURS_RUNS)} (got {','.join(args.ours_critics)})")
    args.task = TASKS[args.scenario]
    args.matched = Matched(args.scenario, args.num_envs, args.frames_per_batch, args.train_frames, args.hiddens,
                           args.lr, args.epochs, args.minibatch_size)
    if set(args.benchmarl_algorithms) - {"mappo", "ippo"}:
        parser.error(f"--benchmarl-algorithms: choose from mappo, ippo (got {','.join(args.benchmarl_algorithms)})")
    if args.frames_per_batch % args.num_envs:
        parser.error(f"--frames-per-batch {args.frames_per_batch} must be a multiple of --num-envs {args.num_envs}")
    if args.train_frames % args.frames_per_batch:
        parser.error("--train-frames must be a multiple of --frames-per-batch (both frameworks stop at batch ends)")
    if args.frames_per_batch % args.minibatch_size:
        parser.error("--frames-per-batch must be a multiple of --minibatch-size")
    if args.recurrent_iters < 0 or (args.only_recurrent and args.recurrent_iters < 1):
        parser.error("--only-recurrent needs --recurrent-iters >= 1" if args.only_recurrent
                     else "--recurrent-iters must be >= 0")
    if args.torch_threads is not None and args.torch_threads < 1:
        parser.error("--torch-threads must be >= 1")
    if args.recurrent_batch_size is not None and (args.recurrent_batch_size < 32 or args.recurrent_batch_size % 32):
        parser.error(f"--recurrent-batch-size {args.recurrent_batch_size} must be a multiple of level_1_basic.yaml's "
                     f"32 worlds")
    if args.minibatch_size * args.task["n_agents"] > args.frames_per_batch:
        parser.error(f"--minibatch-size x {args.task['n_agents']} agents must be <= --frames-per-batch (RLlib's check on "
                     "its minibatch rows, one per agent and frame)")
    return args


def raw_vmas_fps(args) -> float:
    """(a) One VMAS simulator, random actions, finished worlds reset as they end."""
    import vmas

    env = vmas.make_env(args.scenario, num_envs=args.num_envs, continuous_actions=True, seed=0,
                        terminated_truncated=True, **args.task)
    env.reset()
    steps = args.sample_iters * args.task["max_steps"]
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step([env.get_random_action(agent) for agent in env.agents])
        done = terminated | truncated
        if done.all():
            env.reset()
        else:
            for index in done.nonzero().flatten().tolist():
                env.reset_at(index)
    return steps * args.num_envs / (time.perf_counter() - start)


def naive_env_class(args):
    """A user's MultiAgentEnv: one VMAS simulator (num_envs=1) per RLlib sub-env, numpy dicts in and out."""
    import gymnasium as gym
    import vmas
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    class NaiveVmasEnv(MultiAgentEnv):
        def __init__(self, config=None):
            super().__init__()
            self.env = vmas.make_env(args.scenario, num_envs=1, continuous_actions=True, dict_spaces=True,
                                     terminated_truncated=True, **args.task)
            self.agents = self.possible_agents = [agent.name for agent in self.env.agents]
            self.observation_spaces = {
                aid: gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32)
                for aid, space in self.env.observation_space.spaces.items()
            }
            self.action_spaces = {
                aid: gym.spaces.Box(space.low, space.high, space.shape, np.float32)
                for aid, space in self.env.action_space.spaces.items()
            }

        def reset(self, *, seed=None, options=None):
            if seed is not None:
                self.env.seed(seed)
            obs = self.env.reset()
            return {aid: value[0].numpy() for aid, value in obs.items()}, {}

        def step(self, action_dict):
            actions = {aid: torch.as_tensor(action).reshape(1, -1) for aid, action in action_dict.items()}
            obs, rewards, terminated, truncated, _ = self.env.step(actions)
            obs = {aid: value[0].numpy() for aid, value in obs.items()}
            rewards = {aid: float(value[0]) for aid, value in rewards.items()}
            terminateds = {"__all__": bool(terminated[0])}
            truncateds = {"__all__": bool(truncated[0])}
            return obs, rewards, terminateds, truncateds, {}

    return NaiveVmasEnv


def naive_rllib_sample_fps(args) -> float:
    """(c) RLlib 2.60's default stack sampling the naive wrapper: one env runner, --num-envs sub-envs."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    config = (
        PPOConfig()
        .environment(naive_env_class(args))
        .env_runners(num_env_runners=0, num_envs_per_env_runner=args.num_envs)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, episode, **kwargs: "shared")
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=args.hiddens, fcnet_activation="tanh"))
    )
    runner = MultiAgentEnvRunner(config=config)
    try:
        runner.sample(num_timesteps=args.num_envs)  # warm-up: resets every sub-env
        start = time.perf_counter()
        episodes = runner.sample(num_timesteps=args.naive_steps * args.num_envs)
        seconds = time.perf_counter() - start
        return sum(episode.env_steps() for episode in episodes) / seconds
    finally:
        runner.stop()


def recurrent_train(args, custom_model: str, stock: bool) -> tuple[float, str]:
    """(f) PPO of config/benchmark/level_1_basic.yaml with `custom_model` (its defaults), sampling in this process
    through RLlib's stock old-stack sampler or this project's batched env runner: frames over the summed time of
    --recurrent-iters `algorithm.train()` calls; and a note for the table."""
    from bench.build import build_for_bench

    algorithm, config = build_for_bench(RECURRENT_CONFIG, {"num_env_runners": 0, "model": {
        "custom_model": custom_model}}, stock, args.recurrent_batch_size)
    try:
        seconds, frames = 0.0, 0
        for _ in range(args.recurrent_iters):
            start = time.perf_counter()
            result = algorithm.train()
            seconds += time.perf_counter() - start
            frames += result["num_env_steps_sampled_this_iter"]
        # RLlib's timers: means over the last 10 iterations at most
        note = (f"{args.recurrent_iters} iterations of {config['train_batch_size']:,} frames "
                f"({config['env_config']['n_agents']} agents, {config['num_envs_per_env_runner']} worlds): "
                f"sample {result['timers']['sample_time_ms'] / 1000:.2f} s + learn "
                f"{result['timers']['learn_time_ms'] / 1000:.2f} s per iteration")
        print(f"level 1, {custom_model}, {'stock' if stock else 'batched'}: {frames:,} frames in {seconds:.1f} s "
              f"({frames / seconds:,.0f} frames/s); {note}", flush=True)
        return frames / seconds, note
    finally:
        algorithm.stop()


def benchmarl_key(algorithm: str) -> str:
    """JSON key prefix: `benchmarl` is MAPPO (the issue's reference), other algorithms get their own keys."""
    return "benchmarl" if algorithm == "mappo" else f"benchmarl_{algorithm}"


def print_report(args, figures: dict, rows: list, sampling: bool, training: bool) -> None:
    """The table of measurements, the ratios of ours to the others and, with recurrent runs, the targets met."""
    notes = f"mean per-agent return after {args.train_frames:,} frames" if training else "notes"
    print(f"\n{'measurement':<50}{'frames/s':>12}   {notes}")
    for label, fps, note in rows:
        print(f"{label:<50}{fps:>12,.0f}   {note}")
    ratios = {}
    if sampling:
        ratios["ours_sample / raw"] = figures["ours_sample_fps"] / figures["raw_vmas_fps"]
        ratios["ours_sample / naive"] = figures["ours_sample_fps"] / figures["naive_rllib_sample_fps"]
    for algorithm in args.benchmarl_algorithms if training else ():
        key = benchmarl_key(algorithm)
        for critic in args.ours_critics:
            ours = OURS_RUNS[critic][0]
            ratios[f"{ours}_train / {key}_train"] = figures[f"{ours}_train_fps"] / figures[f"{key}_train_fps"]
    if args.recurrent_iters:
        ratios["lstm_batched / lstm_stock"] = figures["lstm_batched_train_fps"] / figures["lstm_stock_train_fps"]
        ratios["lstm_batched / fcnet_batched"] = figures["lstm_batched_train_fps"] / figures["fcnet_batched_train_fps"]
    print("ratios: " + ", ".join(f"{name} = {value:.2f}" for name, value in ratios.items()))
    if args.recurrent_iters:
        print("targets: " + "; ".join(f"{label}: {'met' if ratios[name] >= bound else 'not met'} ({name} = "
                                      f"{ratios[name]:.2f})" for name, bound, label in RECURRENT_TARGETS))


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"VMAS {args.scenario}, {args.task['n_agents']} agents, {args.num_envs} envs; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    figures = {}

    def measure(key: str, function) -> None:
        figures[key] = function(args)
        print(f"{key}: {figures[key]:,.0f}", flush=True)

    rows = []
    main_rows = not args.only_recurrent
    sampling = main_rows and not args.skip_sampling
    training = main_rows and not args.skip_training

    def add_training_rows(key: str, label: str, runs: list[TrainRun]) -> None:
        fps, mean_return, spread = summarize(runs)
        figures[f"{key}_train_fps"], figures[f"{key}_return"] = fps, mean_return
        per_seed = ", ".join(f"{run.mean_return:.3f}" for run in runs)
        rows.append((label, fps, f"{mean_return:.3f} ± {spread:.3f} (seeds: {per_seed})"))

    if sampling:
        measure("raw_vmas_fps", raw_vmas_fps)
    ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
    try:
        if sampling:
            measure("ours_sample_fps", lambda args: ours_sample_fps(args.matched, "PPO", False, args.sample_iters))
            measure("naive_rllib_sample_fps", naive_rllib_sample_fps)
            rows += [
                ("a. raw VMAS, random actions", figures["raw_vmas_fps"], ""),
                ("b. marlkit batched runner (sampling)", figures["ours_sample_fps"], ""),
                ("c. naive MultiAgentEnv, stock RLlib (sampling)", figures["naive_rllib_sample_fps"], ""),
            ]
        for critic in args.ours_critics if training else ():
            key, label = OURS_RUNS[critic]
            add_training_rows(key, label, [ours_train(args.matched, "PPO", seed, critic)
                                                   for seed in range(args.seeds)])
        recurrent_rows = []
        if args.recurrent_iters:
            for key, label, custom_model, stock in RECURRENT_RUNS:
                figures[f"{key}_train_fps"], note = recurrent_train(args, custom_model, stock)
                recurrent_rows.append((label, figures[f"{key}_train_fps"], note))
    finally:
        ray.shutdown()
    if training:
        for algorithm in args.benchmarl_algorithms:
            with tempfile.TemporaryDirectory(prefix="bench-benchmarl-") as folder:
                runs = [benchmarl_train(args.matched, algorithm, seed, Path(folder)) for seed in range(args.seeds)]
            add_training_rows(benchmarl_key(algorithm), f"d. BenchMARL {algorithm.upper()} (train)", runs)
    rows += recurrent_rows
    print_report(args, figures, rows, sampling, training)
    figures = {key: figures.get(key) for key in (*JSON_KEYS, *figures)}
    # null where a figure was not measured, or where no episode ended within the training frames (returns)
    print(json.dumps({key: None if value is None or math.isnan(value) else round(value, 4)
                      for key, value in figures.items()}))
    return figures


if __name__ == "__main__":
    main()
