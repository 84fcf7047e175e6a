"""RLlib algorithms from YAML on VMAS navigation (3 agents, BenchMARL's task settings), side by side in one run:
for PPO, DQN and SAC,

  a. sampling frames/s of the batched env runner and of RLlib's stock old-stack sampler, on the same algorithm
     (its policy's forward pass and exploration, the env, the training columns: GAE for PPO, n-step transitions and
     replay weights for DQN and SAC), no learning;
  b. training frames/s and the mean per-agent episode return after `--train-frames` frames (`algorithm.train()` as a
     Tune trial calls it, sampling in the training process), over `--seeds` seeds.

DQN acts in VMAS's Discrete actions (`continuous_actions: false`), PPO and SAC in its Box actions. A frame is one
step of one world (all agents). Prints a table and, as the last line, one JSON object with `<algo>_batched_sample_fps`,
`<algo>_stock_sample_fps`, `<algo>_train_fps`, `<algo>_return` (lower-case algorithm names).

Usage:
    python bench/algorithms.py                                 # defaults below
    python bench/algorithms.py --skip-training                 # only the sampling figures (a)
    python bench/algorithms.py --num-envs 4 --fragment 5 --sample-iters 1 --train-frames 40 --seeds 1   # tiny
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

# Run as `python bench/algorithms.py`, this folder would come first on sys.path and bench/vmas.py would shadow the
# `vmas` package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.build import build_experiment, train_until  # noqa: E402
from bench.vmas import TASKS  # noqa: E402

ALGORITHMS = ("PPO", "DQN", "SAC")
# Per algorithm: RLlib settings beside the shared ones (what a YAML file would set), and whether it acts in Box actions.
SETTINGS = {
    "PPO": ({"num_epochs": 4, "lambda": 0.9, "clip_param": 0.2, "entropy_coeff": 0.0}, True),
    "DQN": ({"n_step": 1, "target_network_update_freq": 500}, False),
    "SAC": ({"n_step": 1}, True),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, from PPO, DQN, SAC")
    parser.add_argument("--num-envs", type=int, default=200, help="VMAS worlds stepped together")
    parser.add_argument("--fragment", type=int, default=10, help="steps of every world per sampled fragment")
    parser.add_argument("--sample-iters", type=int, default=3, help="timed fragments per sampler (a)")
    parser.add_argument("--train-frames", type=int, default=60_000, help="frames each training run collects (b)")
    parser.add_argument("--replay-batch", type=int, default=256, help="DQN/SAC: transitions per gradient step")
    parser.add_argument("--seeds", type=int, default=3, help="training runs per algorithm (seeds 0..N-1)")
    parser.add_argument("--skip-training", action="store_true", help="only the sampling measurements (a)")
    parser.add_argument("--hiddens", default="256,256", help="MLP hidden sizes")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--temp-dir", help="Ray's temp folder (default: Ray's own)")
    args = parser.parse_args(argv)
    args.algorithms = args.algorithms.split(",")
    if set(args.algorithms) - set(ALGORITHMS):
        parser.error(f"--algorithms: choose from {', '.join(ALGORITHMS)} (got {','.join(args.algorithms)})")
    args.hiddens = [int(size) for size in args.hiddens.split(",")]
    if min(args.num_envs, args.fragment, args.sample_iters, args.train_frames, args.seeds) < 1:
        parser.error("--num-envs, --fragment, --sample-iters, --train-frames and --seeds must be >= 1")
    return args


def experiment(args, algorithm: str, seed: int, stock_sampler: bool):
    """The experiment as a YAML file would declare it (RLlib's stock sampler set as `env_runner_cls` when asked)."""
    from ray.rllib.evaluation.rollout_worker import RolloutWorker

    from marlkit import spec

    settings, box_actions = SETTINGS[algorithm]
    frames = args.fragment * args.num_envs
    config = {
        "env_config": {"scenario": "navigation", "continuous_actions": box_actions, **TASKS["navigation"]},
        "num_env_runners": 0,  # sample in the training process, as BenchMARL's collector does
        "num_envs_per_env_runner": args.num_envs,
        "rollout_fragment_length": args.fragment,
        "train_batch_size": frames if algorithm == "PPO" else args.replay_batch,
        "gamma": 0.99,
        "lr": args.lr,
        "seed": seed,
        "metrics_num_episodes_for_smoothing": args.num_envs,
        "multiagent": {"policies": "shared"},
        "model": {"fcnet_hiddens": args.hiddens, "fcnet_activation": "tanh"},
        **settings,
    }
    if algorithm == "PPO":
        config["minibatch_size"] = frames * TASKS["navigation"]["n_agents"] // 4
    else:
        config["num_steps_sampled_before_learning_starts"] = min(1_000, args.train_frames // 2)
    if stock_sampler:
        config["env_runner_cls"] = RolloutWorker
    return spec.parse_experiment(f"bench-{algorithm.lower()}", {"run": algorithm, "env": "vmas", "config": config})


def sample_fps(args, algorithm: str, stock_sampler: bool) -> float:
    """(a) Frames per second of `--sample-iters` fragments of the algorithm's own env runner, after one warm-up."""
    built, _ = build_experiment(experiment(args, algorithm, 0, stock_sampler), stock_sampler)
    try:
        runner = built.env_runner
        runner.sample()
        start = time.perf_counter()
        frames = sum(runner.sample().env_steps() for _ in range(args.sample_iters))
        return frames / (time.perf_counter() - start)
    finally:
        built.stop()


def train(args, algorithm: str, seed: int) -> tuple[float, float]:
    """(b) (frames/s, mean per-agent return of the last iteration's episodes) of `algorithm.train()` calls until
    `--train-frames` frames, with the sampler train.py picks (the batched env runner)."""
    built, _ = build_experiment(experiment(args, algorithm, seed, False), False)
    try:
        seconds, frames, result = train_until(built, args.train_frames)
        mean_return = result["env_runners"]["policy_reward_mean"].get("shared", math.nan)
        print(f"{algorithm} seed {seed}: {frames:,} frames in {seconds:.1f} s ({frames / seconds:,.0f} frames/s), "
              f"mean per-agent return {mean_return:.3f}", flush=True)
        return frames / seconds, mean_return
    finally:
        built.stop()


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    figures, rows = {}, []
    ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
    try:
        for algorithm in args.algorithms:
            key = algorithm.lower()
            for sampler in ("batched", "stock"):
                figures[f"{key}_{sampler}_sample_fps"] = sample_fps(args, algorithm, sampler == "stock")
                print(f"{algorithm} {sampler} sampling: {figures[f'{key}_{sampler}_sample_fps']:,.0f} frames/s",
                      flush=True)
            runs = [] if args.skip_training else [train(args, algorithm, seed) for seed in range(args.seeds)]
            returns = [mean_return for _, mean_return in runs]
            figures[f"{key}_train_fps"] = statistics.median(fps for fps, _ in runs) if runs else math.nan
            figures[f"{key}_return"] = statistics.mean(returns) if runs else math.nan
            spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
            rows.append((algorithm, figures[f"{key}_batched_sample_fps"], figures[f"{key}_stock_sample_fps"],
                         figures[f"{key}_train_fps"], f"{figures[f'{key}_return']:.3f} ± {spread:.3f}"))
    finally:
        ray.shutdown()
    print(f"\n{'algorithm':<10}{'batched sample/s':>18}{'stock sample/s':>16}{'ratio':>8}{'train/s':>10}   "
          f"return after {args.train_frames:,} frames ({args.seeds} seeds)")
    for algorithm, batched, stock, train_fps, returns in rows:
        print(f"{algorithm:<10}{batched:>18,.0f}{stock:>16,.0f}{batched / stock:>8.1f}{train_fps:>10,.0f}   {returns}")
    print(json.dumps({key: None if value is None or math.isnan(value) else round(value, 4)
                      for key, value in figures.items()}))
    return figures


if __name__ == "__main__":
    main()
