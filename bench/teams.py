"""Teams that learn from whole game steps beside BenchMARL's, side by side in one run (settings: bench/matched.py):

  - VDN and QMIX (DQN with `multiagent.mixer`, marlkit/mixers.py) and independent DQN on VMAS balance in Discrete
    actions (4 agents lifting a package together: coordination matters), beside BenchMARL's VDN, QMIX and IQL;
  - MASAC (SAC with `multiagent.critic: centralized`, marlkit/masac.py) on VMAS navigation in Box actions, beside
    BenchMARL's MASAC;

each trained `--train-frames` frames over `--seeds` seeds (`algorithm.train()` as a Tune trial calls it, sampling in
the training process). A frame is one step of one world (all agents). Prints a table and, as the last line, one JSON
object with `ours_<algo>_train_fps`, `ours_<algo>_return`, `benchmarl_<algo>_train_fps` and
`benchmarl_<algo>_return` for algo in dqn, vdn, qmix, masac (returns: the mean per-agent episode return of the last
batch's episodes, averaged over seeds; frames/s: the median over seeds).

Usage:
    python bench/teams.py                                      # defaults below, ~25 min on 2 CPU cores
    python bench/teams.py --algorithms QMIX --skip-benchmarl   # one of ours
    python bench/teams.py --num-envs 4 --fragment 5 --train-frames 40 --seeds 1 --replay-batch 8 \\
        --optimizer-steps 2                                    # tiny (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # (as in bench/algorithms.py: not bench/vmas.py as `vmas`)

from bench.matched import (  # noqa: E402
    BENCHMARL_ALGORITHM, Matched, add_matched_arguments, benchmarl_train, ours_train, summarize,
)

SCENARIOS = {"DQN": "balance", "VDN": "balance", "QMIX": "balance", "MASAC": "navigation"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", default=",".join(SCENARIOS),
                        help=f"comma-separated, from {', '.join(SCENARIOS)}")
    add_matched_arguments(parser)
    args = parser.parse_args(argv)
    args.algorithms = args.algorithms.split(",")
    if set(args.algorithms) - set(SCENARIOS):
        parser.error(f"--algorithms: choose from {', '.join(SCENARIOS)} (got {','.join(args.algorithms)})")
    if min(args.num_envs, args.fragment, args.train_frames, args.seeds, args.replay_batch, args.optimizer_steps) < 1:
        parser.error("the sizes and counts must be >= 1")
    return args


def matched(args, algorithm: str) -> Matched:
    return Matched(SCENARIOS[algorithm], args.num_envs, args.fragment * args.num_envs, args.train_frames,
                   [int(size) for size in args.hiddens.split(",")], args.lr, replay_batch_frames=args.replay_batch,
                   optimizer_steps=args.optimizer_steps)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    figures, rows = {}, []

    def add_row(key: str, label: str, scenario: str, runs: list) -> None:
        fps, mean_return, spread = summarize(runs)
        figures[f"{key}_train_fps"], figures[f"{key}_return"] = fps, mean_return
        rows.append((label, scenario, fps, mean_return, spread))

    ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
    try:
        for algorithm in args.algorithms:
            runs = [ours_train(matched(args, algorithm), algorithm, seed) for seed in range(args.seeds)]
            add_row(f"ours_{algorithm.lower()}", f"marlkit {algorithm}", SCENARIOS[algorithm], runs)
    finally:
        ray.shutdown()
    for algorithm in [] if args.skip_benchmarl else args.algorithms:
        name = BENCHMARL_ALGORITHM[algorithm]
        with tempfile.TemporaryDirectory(prefix="bench-benchmarl-") as folder:
            runs = [benchmarl_train(matched(args, algorithm), name, seed, Path(folder)) for seed in range(args.seeds)]
        add_row(f"benchmarl_{algorithm.lower()}", f"BenchMARL {name.upper()}", SCENARIOS[algorithm], runs)
    print(f"\n{'run':<18}{'scenario':<12}{'train/s':>10}   "
          f"return after {args.train_frames:,} frames ({args.seeds} seeds)")
    for label, scenario, fps, mean_return, spread in rows:
        print(f"{label:<18}{scenario:<12}{fps:>10,.0f}   {mean_return:.3f} ± {spread:.3f}")
    ratios = [f"{algorithm} {figures[f'ours_{algorithm.lower()}_train_fps'] / figures[key]:.2f}x"
              for algorithm in args.algorithms
              if (key := f"benchmarl_{algorithm.lower()}_train_fps") in figures and figures[key]]
    if ratios:
        print("train frames/s, ours / BenchMARL: " + ", ".join(ratios))
    print(json.dumps({key: None if value is None or math.isnan(value) else round(value, 4)
                      for key, value in figures.items()}))
    return figures


if __name__ == "__main__":
    main()
