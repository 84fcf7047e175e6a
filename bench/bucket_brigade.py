"""Bucket Brigade: speed of the Rust core against the numpy reference, and PPO against uniform-random play.

Throughput (default), side by side in one run, one process, uniform random actions drawn beforehand:
  a. the Rust core batched: one `VecEnv` of --num-envs games, one native call per night for all of them,
  b. the Rust core one game at a time: a `VecEnv` of 1 game, one call per night (the per-call cost dominates),
  c. the numpy reference (`envs.bucket_brigade.reference`), --reference-envs games.
Env steps are game-nights; agent steps are env steps x agents.

Learning (--learning): for each of --scenarios, PPO trains `config/bucket-brigade-ppo.yaml`'s learner (agent_0,
opponents random, random, firefighter) in this process until --cpu-minutes of CPU time, then its reward per night
(its most likely actions, in 2,000 games on the Rust core) is compared with a uniform-random agent's in the same
seat against the same opponents in the same 2,000 games.

Usage:
    python bench/bucket_brigade.py                         # throughput, ~30 s
    python bench/bucket_brigade.py --learning              # + PPO vs random on default and greedy_neighbor, ~21 min
Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, for `envs` and `marlkit`

from envs.bucket_brigade import VecEnv, heuristics, reference  # noqa: E402
from envs.bucket_brigade.scenarios import get_scenario  # noqa: E402

OPPONENTS = ("random", "random", "firefighter")  # agents 1-3 of config/bucket-brigade-ppo.yaml


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default", help="scenario of the throughput runs")
    parser.add_argument("--num-agents", type=int, default=4)
    parser.add_argument("--num-envs", type=int, default=4096, help="games of the batched Rust run")
    parser.add_argument("--reference-envs", type=int, default=64, help="games of the numpy reference run")
    parser.add_argument("--seconds", type=float, default=3.0, help="time each throughput run steps for")
    parser.add_argument("--learning", action="store_true", help="also train PPO and compare with random play")
    parser.add_argument("--scenarios", default="default,greedy_neighbor", help="scenarios of --learning")
    parser.add_argument("--cpu-minutes", type=float, default=10.0, help="CPU time budget of each PPO run")
    parser.add_argument("--temp-dir", help="Ray's temp folder (default: Ray's own)")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.split(",")
    try:
        for name in [args.scenario, *args.scenarios]:
            get_scenario(name)
    except ValueError as error:
        parser.error(str(error))
    return args


def random_actions(rng: np.random.Generator, count: int, num_envs: int, num_agents: int, houses: int) -> np.ndarray:
    """A pool of `count` nights of uniform random actions (drawn before timing)."""
    shape = (count, num_envs, num_agents)
    return np.stack([rng.integers(0, houses, shape), rng.integers(0, 2, shape), rng.integers(0, 2, shape)], axis=-1)


def steps_per_second(env, seconds: float, rng: np.random.Generator) -> float:
    """Game-nights per second of `env.step` with random actions, stepping for about `seconds`."""
    pool = random_actions(rng, 64, env.num_envs, env.num_agents, env.num_houses)
    env.reset()
    nights, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for actions in pool:
            env.step(actions)
        nights += len(pool)
    return nights * env.num_envs / (time.perf_counter() - start)


def throughput(args) -> dict:
    rng = np.random.default_rng(0)
    runs = {
        "rust_batched": VecEnv(args.scenario, args.num_envs, args.num_agents),
        "rust_one_game": VecEnv(args.scenario, 1, args.num_agents),
        "reference": reference.VecEnv(args.scenario, args.reference_envs, args.num_agents),
    }
    return {name: steps_per_second(env, args.seconds, rng) for name, env in runs.items()}


def seat_reward_per_night(scenario: str, seat_policy, games: int = 2000, max_nights: int = 100) -> float:
    """Agent 0 acting with `seat_policy(obs_rows, rng) -> actions` against OPPONENTS, one game per env (the first
    episode of each of `games` games, same seed for every policy): its total reward over the nights played."""
    env = VecEnv(scenario, games, 1 + len(OPPONENTS), seed=12345, max_nights=max_nights)
    rng = np.random.default_rng(12345)
    obs = env.reset()
    finished = np.zeros(games, dtype=bool)
    total_reward, nights = 0.0, 0
    while not finished.all():
        opponents = [heuristics.act(name, obs[:, agent], env.num_houses, env.num_agents, rng)
                     for agent, name in enumerate(OPPONENTS, start=1)]
        obs, rewards, terminated, truncated = env.step(np.stack([seat_policy(obs[:, 0], rng), *opponents], axis=1))
        playing = ~finished
        total_reward += float(rewards[playing, 0].sum())
        nights += int(playing.sum())
        finished |= terminated | truncated
    return total_reward / nights


def train_ppo(scenario: str, cpu_minutes: float):
    """PPO as config/bucket-brigade-ppo.yaml, in this process, until the CPU budget: (seat policy, CPU s, steps)."""
    from envs.bucket_brigade.rllib_env import BucketBrigadeEnv
    from marlkit import launch, spec

    (experiment,) = spec.load_experiments(Path(__file__).resolve().parent.parent / "config" / "bucket-brigade-ppo.yaml")
    experiment.config["env_config"]["scenario"] = scenario
    launch.register_components([experiment])
    config = dict(launch.first_trial_config(experiment), num_env_runners=0)  # one process: its CPU time is all
    algorithm = launch.build_algorithm(experiment.run, config)
    start = time.process_time()
    while time.process_time() - start < cpu_minutes * 60:
        result = algorithm.train()
    cpu_seconds = time.process_time() - start
    policy = algorithm.get_policy("learner")
    env = BucketBrigadeEnv(experiment.config["env_config"])

    def seat_policy(obs_rows, rng):
        return np.asarray(policy.compute_actions(env.scale_observations(obs_rows), explore=False)[0])

    return algorithm, seat_policy, cpu_seconds, result["num_env_steps_sampled_lifetime"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f"Bucket Brigade '{args.scenario}', {args.num_agents} agents; {os.cpu_count()} CPUs", flush=True)
    speeds = throughput(args)
    figures = {f"{name}_env_steps_per_s": value for name, value in speeds.items()}
    figures.update({f"{name}_agent_steps_per_s": value * args.num_agents for name, value in speeds.items()})
    labels = {"rust_batched": f"a. Rust core, {args.num_envs} games per call", "rust_one_game": "b. Rust core, 1 game per call",
              "reference": f"c. numpy reference, {args.reference_envs} games"}
    print(f"\n{'measurement':<44}{'env steps/s':>14}{'agent steps/s':>16}")
    for name, label in labels.items():
        print(f"{label:<44}{speeds[name]:>14,.0f}{speeds[name] * args.num_agents:>16,.0f}")
    figures["rust_batched_vs_reference"] = speeds["rust_batched"] / speeds["reference"]
    figures["rust_batched_vs_one_game"] = speeds["rust_batched"] / speeds["rust_one_game"]
    print(f"ratios: batched / reference = {figures['rust_batched_vs_reference']:.0f}x, "
          f"batched / one game per call = {figures['rust_batched_vs_one_game']:.0f}x")
    if args.learning:
        import ray

        ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
        try:
            print(f"\n{'scenario':<20}{'PPO reward/night':>18}{'random reward/night':>21}{'CPU s':>8}{'env steps':>11}")
            for scenario in args.scenarios:
                algorithm, seat_policy, cpu_seconds, steps = train_ppo(scenario, args.cpu_minutes)
                learned = seat_reward_per_night(scenario, seat_policy)
                algorithm.stop()
                houses = get_scenario(scenario).num_houses
                random_play = seat_reward_per_night(
                    scenario, lambda obs, rng: heuristics.act("random", obs, houses, 1 + len(OPPONENTS), rng))
                figures[f"ppo_reward_per_night_{scenario}"] = learned
                figures[f"random_reward_per_night_{scenario}"] = random_play
                print(f"{scenario:<20}{learned:>18.2f}{random_play:>21.2f}{cpu_seconds:>8.0f}{steps:>11,}", flush=True)
        finally:
            ray.shutdown()
    print(json.dumps({key: round(value, 4) for key, value in figures.items()}))
    return figures


if __name__ == "__main__":
    main()
