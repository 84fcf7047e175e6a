"""RLlib algorithms from YAML on VMAS navigation (3 agents, BenchMARL's task settings) beside BenchMARL's, side by
side in one run: for PPO, DQN and SAC,

  a. sampling frames/s of the batched env runner and of RLlib's stock old-stack sampler, on the same algorithm
     (its policy's forward pass and exploration, the env, the training columns: GAE for PPO, transitions and replay
     weights for DQN and SAC), no learning;
  b. training frames/s and the mean per-agent episode return after `--train-frames` frames (`algorithm.train()` as a
     Tune trial calls it, sampling in the training process), over `--seeds` seeds;
  c. the same for BenchMARL's counterpart (IPPO, IQL, ISAC) with the settings bench/matched.py lists.

DQN and IQL act in VMAS's Discrete actions, the others in its Box actions. A frame is one step of one world (all
agents). Prints a table and, as the last line, one JSON object with `<algo>_batched_sample_fps`,
`<algo>_stock_sample_fps`, `<algo>_train_fps`, `<algo>_return`, `benchmarl_<algo>_train_fps` and
`benchmarl_<algo>_return` (this project's algorithm names in lower case: ppo, dqn, sac).

Usage:
    python bench/algorithms.py                                 # defaults below, ~15 min on 2 CPU cores
    python bench/algorithms.py --skip-training                 # only the sampling figures (a)
    python bench/algorithms.py --num-envs 4 --fragment 5 --sample-iters 1 --train-frames 40 --seeds 1 \\
        --minibatch-frames 10 --replay-batch 8 --optimizer-steps 2     # tiny (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

# Run as `python bench/algorithms.py`, this folder would come first on sys.path and bench/vmas.py would shadow the
# `vmas` package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.matched import (  # noqa: E402
    BENCHMARL_ALGORITHM, Matched, add_matched_arguments, benchmarl_train, ours_sample_fps, ours_train, summarize,
)

ALGORITHMS = ("PPO", "DQN", "SAC")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, from PPO, DQN, SAC")
    add_matched_arguments(parser)
    parser.add_argument("--sample-iters", type=int, default=3, help="timed batches per sampler (a)")
    parser.add_argument("--minibatch-frames", type=int, default=500, help="PPO: frames per gradient step")
    parser.add_argument("--epochs", type=int, default=4, help="PPO: passes over each batch")
    parser.add_argument("--skip-training", action="store_true", help="only the sampling measurements (a)")
    args = parser.parse_args(argv)
    args.algorithms = args.algorithms.split(",")
    if set(args.algorithms) - set(ALGORITHMS):
        parser.error(f"--algorithms: choose from {', '.join(ALGORITHMS)} (got {','.join(args.algorithms)})")
    if min(args.num_envs, args.fragment, args.sample_iters, args.train_frames, args.seeds, args.minibatch_frames,
           args.epochs, args.replay_batch, args.optimizer_steps) < 1:
        parser.error("the sizes and counts must be >= 1")
    args.matched = Matched(
        "navigation", args.num_envs, args.fragment * args.num_envs, args.train_frames,
        [int(size) for size in args.hiddens.split(",")], args.lr, args.epochs, args.minibatch_frames,
        args.replay_batch, args.optimizer_steps)
    if args.matched.frames_per_batch % args.minibatch_frames:
        parser.error("--fragment x --num-envs (frames per batch) must be a multiple of --minibatch-frames")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    figures, rows = {}, []

    def add_row(key: str, label: str, runs: list) -> None:
        fps, mean_return, spread = summarize(runs)
        figures[f"{key}_train_fps"], figures[f"{key}_return"] = fps, mean_return
        rows.append((label, figures.get(f"{key}_batched_sample_fps"), figures.get(f"{key}_stock_sample_fps"), fps,
                     f"{mean_return:.3f} ± {spread:.3f}" if runs else ""))

    ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
    try:
        for algorithm in args.algorithms:
            key = algorithm.lower()
            for sampler in ("batched", "stock"):
                fps = ours_sample_fps(args.matched, algorithm, sampler == "stock", args.sample_iters)
                figures[f"{key}_{sampler}_sample_fps"] = fps
                print(f"{algorithm} {sampler} sampling: {fps:,.0f} frames/s", flush=True)
            runs = [] if args.skip_training else [ours_train(args.matched, algorithm, seed) for seed in range(args.seeds)]
            add_row(key, f"marlkit {algorithm}", runs)
    finally:
        ray.shutdown()
    for algorithm in [] if args.skip_training or args.skip_benchmarl else args.algorithms:
        with tempfile.TemporaryDirectory(prefix="bench-benchmarl-") as folder:
            name = BENCHMARL_ALGORITHM[algorithm]
            runs = [benchmarl_train(args.matched, name, seed, Path(folder)) for seed in range(args.seeds)]
        add_row(f"benchmarl_{algorithm.lower()}", f"BenchMARL {name.upper()}", runs)
    print_table(args, rows)
    print(json.dumps({key: None if value is None or math.isnan(value) else round(value, 4)
                      for key, value in figures.items()}))
    return figures


def print_table(args, rows: list) -> None:
    def number(value, width: int) -> str:
        return f"{value:>{width},.0f}" if value is not None and not math.isnan(value) else f"{'':>{width}}"

    print(f"\n{'run':<18}{'batched sample/s':>18}{'stock sample/s':>16}{'ratio':>8}{'train/s':>10}   "
          f"return after {args.train_frames:,} frames ({args.seeds} seeds)")
    for label, batched, stock, train_fps, returns in rows:
        ratio = f"{batched / stock:>8.1f}" if batched and stock else f"{'':>8}"
        print(f"{label:<18}{number(batched, 18)}{number(stock, 16)}{ratio}{number(train_fps, 10)}   {returns}")
    ours = {label.split()[-1]: fps for label, _, _, fps, _ in rows if label.startswith("marlkit")}
    ratios = [f"{algorithm} / BenchMARL {name.upper()} train = {ours[algorithm] / fps:.2f}"
              for algorithm, name in BENCHMARL_ALGORITHM.items() for label, _, _, fps, _ in rows
              if label == f"BenchMARL {name.upper()}" and algorithm in ours and fps and not math.isnan(fps)]
    if ratios:
        print("ratios: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
