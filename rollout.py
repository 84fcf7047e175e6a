#!/usr/bin/env python
"""Evaluate a trained checkpoint: run episodes, save every step to a rollout file, optionally record videos.

    python rollout.py results/vmas-navigation-ppo/PPO_vmas_..._00000_0_.../checkpoint_000005 --run PPO --episodes 1
    python rollout.py results/vmas-navigation-ppo/PPO_vmas_..._00000_0_... --monitor    # newest checkpoint, videos
"""

import argparse
import json
import os

from marlkit.cli import parse_mapping, run_cli
from envs.errors import ConfigError


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint_* folder, or a trial folder (its newest checkpoint)")
    parser.add_argument("--run", help="algorithm the checkpoint must hold (e.g. PPO); checked, not required")
    parser.add_argument("--env", help="evaluate on another registered env than the one trained on")
    parser.add_argument("--config", default="{}",
                        help="RLlib settings as JSON/YAML over the trained ones, e.g. '{env_config: {n_agents: 4}}'")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to run (default 1)")
    parser.add_argument("--steps", type=int, help="stop after this many env steps in all")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="remote env runners sharing the episodes (0: run them in this process)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs for the restored algorithm")
    parser.add_argument("--out", help="rollout file (default: <checkpoint>/rollout)")
    parser.add_argument("--save-info", action="store_true", help="add each step's info dict to the rollout file")
    parser.add_argument("--monitor", action="store_true", help="record one mp4 per episode into <checkpoint>/monitor/")
    parser.add_argument("--video-dir", help="record the videos into this folder instead (implies --monitor)")
    parser.add_argument("--explore", action=argparse.BooleanOptionalAction, default=False,
                        help="sample actions (--explore) or take the most likely ones (default, --no-explore)")
    parser.add_argument("--seed", type=int, help="seed of episode i is seed + i (env and action sampling)")
    parser.add_argument("--local-mode", action="store_true", help="run everything in this process (for pdb)")
    parser.add_argument("--temp-dir", help="Ray session folder")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: $RAY_ADDRESS, else start one)")
    parser.add_argument("--ray-num-nodes", type=int, help="wait (up to 120 s) until this many Ray nodes joined")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, got {args.num_workers}")
    overrides = parse_mapping("--config", args.config, "{env_config: {n_agents: 4}}")

    from marlkit import checkpoints, launch, preflight
    from marlkit.rollout import RolloutSettings, restore_for_evaluation, rollout, summary, write_rollout

    checkpoint = checkpoints.resolve_checkpoint(args.checkpoint)
    state = checkpoints.load_algorithm_state(checkpoint)
    algorithm_name = checkpoints.check_run(checkpoint, state, args.run)
    num_workers = 0 if args.local_mode else args.num_workers
    video_dir = args.video_dir or (str(checkpoint / "monitor") if args.monitor else None)
    out = args.out or str(checkpoint / "rollout")
    preflight.check_writable(os.path.dirname(os.path.abspath(out)))

    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    launch.start_ray(launch.RayOptions(
        address=address, num_nodes=args.ray_num_nodes, num_cpus=None if address else num_workers + 1,
        temp_dir=args.temp_dir,
    ))
    algorithm = restore_for_evaluation(checkpoint, state, args.env, overrides, num_workers, args.num_gpus)
    settings = RolloutSettings(
        env=algorithm.config.env, env_config=dict(algorithm.config.env_config), episodes=args.episodes,
        steps=args.steps, explore=args.explore, seed=args.seed, save_info=args.save_info, video_dir=video_dir,
    )
    print(f"rolling out {algorithm_name} checkpoint {checkpoint} on {settings.env} "
          f"({json.dumps(settings.env_config, default=str)}), explore={settings.explore}, seed={settings.seed}")
    try:
        episodes = rollout(algorithm, settings)
    finally:
        algorithm.stop()
    write_rollout(out, episodes)
    print(summary(episodes))
    print(f"rollout file: {out} ({len(episodes)} episode(s), {sum(len(e.steps) for e in episodes)} steps)")
    for episode in episodes:
        if episode.video:
            print(f"video: {episode.video} ({episode.video_frames} frames)")
    return 0


if __name__ == "__main__":
    run_cli(main)
