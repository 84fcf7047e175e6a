"""A PettingZoo env through `env: pettingzoo`, side by side in one run: MPE2's simple_spread (3 agents, Discrete
actions, BenchMARL's task settings: 100 cycles, local_ratio 0.5) stepped `--num-envs` copies at a time
(envs/games.py).

  - sampling: the batched env runner (what train.py picks) vs RLlib's stock old-stack sampler over the same games,
    PPO's forward pass and training columns, no learning, `--sample-fragments` fragments after a warm-up one; and
    the raw env, `--num-envs` PettingZoo envs stepped in a loop with random actions: the ceiling of any sampler;
  - training: this project's PPO (per-agent critics, parameters shared) vs BenchMARL's IPPO on its PettingZoo
    simple_spread task (its env built from mpe2, bench/matched.py), at the settings bench/matched.py matches, for
    `--train-frames` frames over `--seeds` seeds (`algorithm.train()` as a Tune trial calls it, sampling in the
    training process).

A frame is one step of one game (all agents). Prints a table and, as the last line, one JSON object:
`pz_raw_fps`, `pz_batched_sample_fps`, `pz_stock_sample_fps`, `pz_train_fps`, `pz_return`, `benchmarl_pz_train_fps`,
`benchmarl_pz_return` (returns: mean per-agent episode return of the last batch's episodes, averaged over seeds;
training frames/s: the median over seeds).

Usage:
    python bench/pettingzoo.py                        # defaults below, ~6 min on 2 CPU cores
    python bench/pettingzoo.py --num-envs 4 --fragment 25 --train-frames 200 --minibatch 25 --seeds 1 \\
        --sample-fragments 1 --hiddens 16                # tiny (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # (as in bench/algorithms.py)

from bench.matched import (  # noqa: E402
    Matched, add_matched_arguments, benchmarl_train, ours_sample_fps, ours_train, summarize,
)

SCENARIO = "simple_spread"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_matched_arguments(parser, num_envs=20, fragment=50, train_frames=30_000)
    parser.add_argument("--minibatch", type=int, default=250, help="PPO: frames per gradient step")
    parser.add_argument("--epochs", type=int, default=4, help="PPO: passes over each batch")
    parser.add_argument("--sample-fragments", type=int, default=5, help="fragments timed per sampler")
    args = parser.parse_args(argv)
    if min(args.num_envs, args.fragment, args.train_frames, args.seeds, args.minibatch, args.epochs,
           args.sample_fragments) < 1:
        parser.error("the sizes and counts must be >= 1")
    return args


def raw_fps(matched: Matched, frames: int) -> float:
    """Frames per second of the PettingZoo env alone: `matched.num_envs` games stepped one after another with random
    actions (restarted when they end), as the batched runner steps them, without policies."""
    import importlib

    module = importlib.import_module(matched.env_config(continuous_actions=True)["env"])
    games = [module.parallel_env(continuous_actions=True, **matched.task) for _ in range(matched.num_envs)]
    for seed, game in enumerate(games):
        game.reset(seed=seed)
    done, start = 0, time.perf_counter()
    while done < frames:
        for game in games:
            if not game.agents:
                game.reset()
            game.step({agent: game.action_space(agent).sample() for agent in game.agents})
        done += len(games)
    return done / (time.perf_counter() - start)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    matched = Matched(SCENARIO, args.num_envs, args.fragment * args.num_envs, args.train_frames,
                      [int(size) for size in args.hiddens.split(",")], args.lr, args.epochs, args.minibatch,
                      env="pettingzoo")
    figures = {"pz_raw_fps": raw_fps(matched, args.sample_fragments * matched.frames_per_batch)}
    ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
    try:
        for key, stock in (("pz_batched_sample_fps", False), ("pz_stock_sample_fps", True)):
            figures[key] = ours_sample_fps(matched, "PPO", stock, args.sample_fragments)
        ours = [ours_train(matched, "PPO", seed) for seed in range(args.seeds)]
    finally:
        ray.shutdown()
    fps, mean_return, spread = summarize(ours)
    figures.update(pz_train_fps=fps, pz_return=mean_return)
    rows = [("marlkit PPO", fps, mean_return, spread)]
    if not args.skip_benchmarl:
        with tempfile.TemporaryDirectory(prefix="bench-benchmarl-") as folder:
            runs = [benchmarl_train(matched, "ippo", seed, Path(folder)) for seed in range(args.seeds)]
        fps, mean_return, spread = summarize(runs)
        figures.update(benchmarl_pz_train_fps=fps, benchmarl_pz_return=mean_return)
        rows.append(("BenchMARL IPPO", fps, mean_return, spread))
    batched, stock = figures["pz_batched_sample_fps"], figures["pz_stock_sample_fps"]
    print(f"\nsampling {SCENARIO} ({args.num_envs} games): the env alone {figures['pz_raw_fps']:,.0f} frames/s, "
          f"batched runner {batched:,.0f}, RLlib's stock sampler {stock:,.0f} (batched / stock {batched / stock:.2f}x)")
    print(f"{'run':<16}{'train/s':>10}   return after {args.train_frames:,} frames ({args.seeds} seeds)")
    for label, fps, mean_return, spread in rows:
        print(f"{label:<16}{fps:>10,.0f}   {mean_return:.3f} ± {spread:.3f}")
    if figures.get("benchmarl_pz_train_fps"):
        print(f"train frames/s, ours / BenchMARL: {figures['pz_train_fps'] / figures['benchmarl_pz_train_fps']:.2f}x")
    print(json.dumps({key: None if value is None or math.isnan(value) else round(value, 4)
                      for key, value in figures.items()}))
    return figures


if __name__ == "__main__":
    main()
