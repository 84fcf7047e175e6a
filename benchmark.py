#!/usr/bin/env python
"""Compare architectures (model/ files) across the benchmark levels (config/benchmark/) and seeds on Ray Tune.

    python benchmark.py --architectures fcnet,lstm --levels level_1_basic,level_2_easy --seeds 3 \\
        --timesteps 1000000 --max-parallel 4 --output-dir results/bench_20261121
    python benchmark.py ... --skip-training                  # evaluate the finished runs' checkpoints again
    python benchmark.py --compare-speed results/bench_a results/bench_b   # the same suite on two machines

Re-running with the same --output-dir resumes: finished runs are skipped, failed ones run again.
"""

import argparse
import json
import os
from pathlib import Path

from marlkit.cli import parse_mapping, run_cli
from envs.errors import ConfigError


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", default="fcnet", help="comma-separated model file names (default fcnet)")
    parser.add_argument("--levels", default="level_1_basic",
                        help="comma-separated level names (config/benchmark/), or 'all', or paths of experiment YAMLs "
                             "of any algorithm (e.g. config/vmas-balance-qmix.yaml)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per (level, architecture) (default 3)")
    parser.add_argument("--timesteps", type=int, default=1_000_000, help="env steps each run trains (default 1e6)")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="deterministic evaluation episodes after training (default 10)")
    parser.add_argument("--max-parallel", type=int, default=1, help="runs trained at once (default 1)")
    parser.add_argument("--output-dir", help="results folder (default results/bench_<date>)")
    parser.add_argument("--config", help="RLlib settings merged over every level's, e.g. '{num_env_runners: 0}'")
    parser.add_argument("--with-benchmarl", action="store_true",
                        help="add BenchMARL MAPPO runs (matched settings) on the VMAS levels, as architecture "
                             "benchmarl_mappo")
    parser.add_argument("--skip-training", action="store_true", help="only evaluate the finished runs' checkpoints")
    parser.add_argument("--force", action="store_true", help="discard results of a different suite in --output-dir")
    parser.add_argument("--compare-speed", nargs="+", metavar="DIR",
                        help="compare env steps/s of these result folders (other machines) instead of running")
    parser.add_argument("--wandb", choices=["online", "offline"], help="log every run to Weights & Biases")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: $RAY_ADDRESS, else start one)")
    parser.add_argument("--ray-num-cpus", type=int, help="CPUs of the Ray instance started here")
    parser.add_argument("--ray-num-nodes", type=int, help="wait (up to 120 s) until this many Ray nodes joined")
    parser.add_argument("--temp-dir", help="Ray session folder (logs, sockets); keep it short and node-local")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser.parse_args(argv)


def names(flag: str, text: str) -> list[str]:
    values = [name.strip() for name in text.split(",") if name.strip()]
    if not values:
        raise ConfigError(f"{flag} needs at least one name")
    return values


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from datetime import date

    from marlkit import benchmark, benchmark_results, launch, preflight

    if args.compare_speed:
        plot = Path(args.output_dir or ".") / "speed_comparison.png"
        print(benchmark_results.compare_speed([Path(folder) for folder in args.compare_speed], plot))
        return 0
    levels = benchmark.available_levels() if args.levels == "all" else names("--levels", args.levels)
    suite = benchmark.Suite(
        architectures=names("--architectures", args.architectures), levels=levels, seeds=args.seeds,
        timesteps=args.timesteps, eval_episodes=args.eval_episodes, with_benchmarl=args.with_benchmarl,
        config=parse_mapping("--config", args.config, "{num_env_runners: 0}") if args.config else {},
    )
    suite.check()
    if args.max_parallel < 1:
        raise ConfigError(f"--max-parallel must be at least 1, got {args.max_parallel}")
    output_dir = preflight.check_writable(args.output_dir or f"results/bench_{date.today():%Y%m%d}")
    for run in suite.runs():
        if run.seed == 0:
            suite.experiment(run)  # every (level, architecture) validates before Ray starts
    if not args.skip_training:
        benchmark_results.check_output_dir(output_dir, suite, args.force)
    launch.start_ray(launch.RayOptions(address=args.ray_address, num_cpus=args.ray_num_cpus, num_nodes=args.ray_num_nodes,
                                       temp_dir=args.temp_dir))
    if args.skip_training:
        ok = benchmark.evaluate_checkpoints(suite, output_dir)
    else:
        ok = benchmark.run_suite(suite, output_dir, args.max_parallel, args.force, args.wandb)
    document = json.loads((output_dir / benchmark_results.RESULTS_FILE).read_text())
    print(benchmark_results.table(document))
    print(f"results: {output_dir / benchmark_results.RESULTS_FILE}, {output_dir / benchmark_results.MARL_EVAL_FILE}, plots in {output_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    run_cli(main)
