"""Bucket Brigade: speed of the Rust core, of RLlib's stock sampler and of marlkit's batched env runner, and a PPO
learner against every scripted agent in the same seat.

Throughput (default), side by side in one run, one process. Env steps are game-nights; agent steps are env steps x
agents (all four seats count, scripted ones too):
  a. the Rust core batched: one `VecEnv` of --num-envs games, one native call per night for all of them, uniform
     random actions drawn beforehand,
  b. the Rust core one game at a time: a `VecEnv` of 1 game, one call per night (the per-call cost dominates),
  c. the numpy reference (`envs.bucket_brigade.reference`), --reference-envs games,
  d. sampling only through RLlib's stock old-stack sampler (`RolloutWorker` as env_runner_cls) over the one-game
     MultiAgentEnv, --stock-games sub-envs (8, the YAML's setting before the batched runner), with `config/bucket-brigade-ppo.yaml`'s policies: the
     MLP [128, 128] learner and the scripted opponents,
  e. sampling only through marlkit's batched env runner (`BatchedEnvRunner`, what train.py picks for
     `env: bucket_brigade`), same policies, at each of --games-per-runner games per runner; the fastest is "best",
  f. PPO end to end (`algorithm.train()`: sampling and learning) with the YAML's settings, --train-iters iterations
     each: the stock sampler at --stock-games games and the batched runner at the best games per runner of (e).
Every RLlib measurement samples in this process (num_env_runners 0) with --torch-threads torch threads (default 1,
what Ray gives a Tune trial's process of one CPU: OMP_NUM_THREADS=1). RLlib rows use the YAML's 4 agents.

Learning (--learning): for each of --scenarios, the experiment of --learning-config (default
`config/bucket-brigade-ppo.yaml`: a learner in agent_0's seat among random, random, firefighter) trains with its own
settings (env runners included, as a train.py trial) for --minutes of wall time with the scenario set. Then the
learner (its most likely actions) and every scripted agent (`heuristics.HEURISTICS`: the archetypes, random, rest, pool)
are scored in that seat, against the same opponents, on the same 2,000 games (envs/bucket_brigade/evaluation.py):
reward per night. Target: the learner >= the best scripted agent.

Usage:
    python bench/bucket_brigade.py                         # throughput, ~3.5 min on 2 CPU cores
    python bench/bucket_brigade.py --skip-rllib            # the Rust core and the reference only (a-c), ~15 s
    python bench/bucket_brigade.py --skip-rllib --learning --minutes 20   # learner vs scripted agents, 4 scenarios, ~82 min
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

from envs.bucket_brigade import VecEnv, reference  # noqa: E402
from envs.bucket_brigade.evaluation import policy_seat, seat_reward_per_night, seat_table  # noqa: E402
from envs.bucket_brigade.scenarios import get_scenario  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "config" / "bucket-brigade-ppo.yaml"
LEARNING_SCENARIOS = "default,greedy_neighbor,trivial_cooperation,chain_reaction"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default", help="scenario of the throughput runs")
    parser.add_argument("--num-agents", type=int, default=4)
    parser.add_argument("--num-envs", type=int, default=4096, help="games of the batched Rust run")
    parser.add_argument("--reference-envs", type=int, default=64, help="games of the numpy reference run")
    parser.add_argument("--seconds", type=float, default=3.0, help="time each Rust core/reference run steps for")
    parser.add_argument("--stock-games", type=int, default=8,
                        help="sub-envs of RLlib's stock sampler (default 8: the shipped YAML's setting before the "
                             "batched runner)")
    parser.add_argument("--games-per-runner", default="8,64,256,1024,4096",
                        help="games per batched env runner, comma-separated: each is sampled, the fastest trains")
    parser.add_argument("--sample-seconds", type=float, default=3.0,
                        help="time each sampling measurement samples for (at least one fragment, after a warm-up one)")
    parser.add_argument("--train-iters", type=int, default=10, help="PPO iterations of each end-to-end run")
    parser.add_argument("--train-batch-size", type=int, default=None,
                        help="env steps per PPO iteration (default: the YAML's 4000; minibatches are at most this)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of this process for the RLlib rows (a Tune trial of 1 CPU gets 1)")
    parser.add_argument("--skip-rllib", action="store_true", help="only the Rust core and the reference (a-c)")
    parser.add_argument("--learning", action="store_true",
                        help="also train the learner and score it against every scripted agent in its seat")
    parser.add_argument("--scenarios", default=LEARNING_SCENARIOS, help="scenarios of --learning")
    parser.add_argument("--learning-config", default=str(CONFIG),
                        help="experiment YAML of --learning: a trained policy in agent_0's seat, scripted opponents")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall time each --learning run trains for")
    parser.add_argument("--temp-dir", help="Ray's temp folder (default: Ray's own)")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.split(",")
    try:
        args.games_per_runner = [int(games) for games in args.games_per_runner.split(",")]
    except ValueError:
        parser.error(f"--games-per-runner takes whole numbers, comma-separated (got {args.games_per_runner})")
    for name in ("games_per_runner", "stock_games", "train_iters", "train_batch_size", "torch_threads"):
        values = getattr(args, name)
        if any(value is not None and value < 1 for value in (values if isinstance(values, list) else [values])):
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
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


def rllib_algorithm(args, games: int | None, stock: bool):
    """PPO of config/bucket-brigade-ppo.yaml sampling in this process: through RLlib's stock old-stack sampler
    (`RolloutWorker`) or marlkit's batched env runner (what train.py picks), at `games` games per runner."""
    from bench.build import build_for_bench

    overrides = {"num_env_runners": 0, "env_config": {"scenario": args.scenario}}
    if games is not None:
        overrides["num_envs_per_env_runner"] = games
    return build_for_bench(CONFIG, overrides, stock, args.train_batch_size)


def sample_env_steps_per_s(algorithm, seconds: float) -> float:
    """Env steps per second of the algorithm's local env runner's `sample()` (no learning): one warm-up fragment,
    then fragments until `seconds` have passed (at least one)."""
    runner = algorithm.env_runner
    runner.sample()
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        steps += runner.sample().env_steps()
    return steps / (time.perf_counter() - start)


def train_run(algorithm, iterations: int) -> dict:
    """`iterations` calls of `algorithm.train()`: env steps over their summed wall time, and the sampling and
    learning seconds per iteration (RLlib's timers: means over the last 10 iterations at most)."""
    seconds, env_steps = 0.0, 0
    for _ in range(iterations):
        start = time.perf_counter()
        result = algorithm.train()
        seconds += time.perf_counter() - start
        env_steps += result["num_env_steps_sampled_this_iter"]
    return {"env_steps_per_s": env_steps / seconds, "env_steps_per_iter": env_steps / iterations,
            "sample_s": result["timers"]["sample_time_ms"] / 1000, "learn_s": result["timers"]["learn_time_ms"] / 1000}


def rllib_rows(args) -> tuple[dict, list]:
    """(d-f): figures and table rows (label, env steps/s, agents, note)."""
    figures, rows = {}, []
    stock, stock_config = rllib_algorithm(args, args.stock_games, stock=True)
    agents = stock_config["env_config"]["num_agents"]
    stock_games = stock_config["num_envs_per_env_runner"]
    batch = stock_config["train_batch_size"]
    figures["stock_num_envs"] = stock_games
    try:
        speed = sample_env_steps_per_s(stock, args.sample_seconds)
        figures["stock_sample_agent_steps_per_s"] = speed * agents
        rows.append((f"d. stock RLlib sampler, {stock_games} games (sampling)", speed, agents, ""))
        print(f"stock sampling: {speed * agents:,.0f} agent steps/s", flush=True)
        stock_train = train_run(stock, args.train_iters)
    finally:
        stock.stop()
    best, best_speed, best_games = None, 0.0, None
    try:
        for games in args.games_per_runner:
            algorithm, _ = rllib_algorithm(args, games, stock=False)
            speed = sample_env_steps_per_s(algorithm, args.sample_seconds)
            figures[f"batched_sample_agent_steps_per_s_{games}"] = speed * agents
            rows.append((f"e. batched runner, {games} games (sampling)", speed, agents, ""))
            print(f"batched sampling, {games} games: {speed * agents:,.0f} agent steps/s", flush=True)
            if speed > best_speed:
                if best is not None:
                    best.stop()
                best, best_speed, best_games = algorithm, speed, games
            else:
                algorithm.stop()
        figures["batched_sample_agent_steps_per_s"] = best_speed * agents
        figures["batched_best_num_envs"] = best_games
        rows.append((f"e. batched runner, best: {best_games} games (sampling)", best_speed, agents, ""))
        batched_train = train_run(best, args.train_iters)
    finally:
        if best is not None:
            best.stop()
    for key, label, games, run in (("stock", "stock RLlib sampler", stock_games, stock_train),
                                   ("batched", "batched runner", best_games, batched_train)):
        figures[f"{key}_train_agent_steps_per_s"] = run["env_steps_per_s"] * agents
        rows.append((f"f. PPO, {label}, {games} games (train)", run["env_steps_per_s"], agents,
                     f"{run['env_steps_per_iter']:,.0f} env steps/iter: sample {run['sample_s']:.2f} s + "
                     f"learn {run['learn_s']:.2f} s"))
    figures["train_iterations"] = args.train_iters
    figures["train_batch_size"] = batch
    for kind in ("sample", "train"):
        figures[f"batched_vs_stock_{kind}"] = (figures[f"batched_{kind}_agent_steps_per_s"]
                                               / figures[f"stock_{kind}_agent_steps_per_s"])
    return figures, rows


def train_learner(config_path: str, scenario: str, minutes: float):
    """The experiment of `config_path` with `scenario`, trained as a train.py trial would (its env runners included)
    for `minutes` of wall time: (algorithm, the learner's seat policy, the opponents, wall seconds, agent steps)."""
    from envs.bucket_brigade.env import BucketBrigadeBatch
    from marlkit import launch, spec

    (experiment,) = spec.load_experiments(config_path, {"env_config": {"scenario": scenario}})
    launch.register_components([experiment])
    config = launch.first_trial_config(experiment)
    algorithm = launch.build_algorithm(experiment.run, config)
    start = time.perf_counter()
    while time.perf_counter() - start < minutes * 60:
        result = algorithm.train()
    wall_seconds = time.perf_counter() - start
    env = BucketBrigadeBatch(config["env_config"])
    layout = experiment.policy_layout
    scripted = [layout.heuristics.get(layout.policy_for(agent)) for agent in env.possible_agents[1:]]
    if None in scripted:
        raise SystemExit(f"--learning-config {config_path}: agents 1.. must be scripted opponents (heuristic:)")
    seat = policy_seat(algorithm.get_policy(layout.policy_for(env.possible_agents[0])), env.scale_observations)
    env.close()
    return algorithm, seat, tuple(scripted), wall_seconds, result["num_agent_steps_sampled_lifetime"]


def learning_rows(args) -> dict:
    """--learning: per scenario, the learner and every scripted agent in its seat (reward per night)."""
    learning = {}
    for scenario in args.scenarios:
        algorithm, seat, opponents, wall_seconds, agent_steps = train_learner(args.learning_config, scenario,
                                                                              args.minutes)
        try:
            learner = seat_reward_per_night(scenario, seat, opponents)
        finally:
            algorithm.stop()
        scripted = seat_table(scenario, opponents)
        best = max(scripted, key=scripted.get)
        learning[scenario] = {"learner": learner, "best_heuristic": scripted[best], "best_heuristic_name": best,
                              "random": scripted["random"], "rest": scripted["rest"], "agent_steps": agent_steps,
                              "wall_s": wall_seconds, "heuristics": scripted}
        print(f"\n{scenario} (opponents {', '.join(opponents)}; {agent_steps:,} agent steps in {wall_seconds:.0f} s): "
              f"reward per night in agent_0's seat, 2,000 games", flush=True)
        for name, value in sorted({"learner": learner, **scripted}.items(), key=lambda item: -item[1]):
            print(f"  {name:<14}{value:>9.2f}")
        print(f"  learner - best scripted ({best}) = {learner - scripted[best]:+.2f}: "
              f"{'met' if learner >= scripted[best] else 'not met'}", flush=True)
    return learning


def rounded(value):
    """Figures at 4 decimals, nested mappings included."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return round(value, 4) if isinstance(value, float) else value


TARGETS = (  # (figure, at least, label) of the issue that asked for rows d-f
    ("batched_vs_stock_sample", 100.0, "batched sampling >= 100x stock"),
    ("batched_vs_stock_train", 20.0, "PPO end to end >= 20x stock"),
    ("batched_vs_stock_train", 50.0, "PPO end to end >= 50x stock (aim)"),
)


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f"Bucket Brigade '{args.scenario}', {args.num_agents} agents; {os.cpu_count()} CPUs", flush=True)
    speeds = throughput(args)
    figures = {f"{name}_env_steps_per_s": value for name, value in speeds.items()}
    figures.update({f"{name}_agent_steps_per_s": value * args.num_agents for name, value in speeds.items()})
    figures["core_agent_steps_per_s"] = figures["rust_batched_agent_steps_per_s"]
    labels = {"rust_batched": f"a. Rust core, {args.num_envs} games per call", "rust_one_game": "b. Rust core, 1 game per call",
              "reference": f"c. numpy reference, {args.reference_envs} games"}
    rows = [(label, speeds[name], args.num_agents, "") for name, label in labels.items()]
    figures["rust_batched_vs_reference"] = speeds["rust_batched"] / speeds["reference"]
    figures["rust_batched_vs_one_game"] = speeds["rust_batched"] / speeds["rust_one_game"]
    ratios = [f"core batched / reference = {figures['rust_batched_vs_reference']:.0f}x",
              f"core batched / one game per call = {figures['rust_batched_vs_one_game']:.0f}x"]
    if not args.skip_rllib or args.learning:
        import ray
        import torch

        torch.set_num_threads(args.torch_threads)
        ray.init(include_dashboard=False, _temp_dir=str(Path(args.temp_dir).resolve()) if args.temp_dir else None)
    try:
        if not args.skip_rllib:
            print(f"RLlib rows: torch threads {torch.get_num_threads()}, PPO {args.train_iters} iterations each",
                  flush=True)
            rllib_figures, rllib_table = rllib_rows(args)
            figures.update(rllib_figures)
            rows += rllib_table
            ratios += [f"batched / stock sampling = {figures['batched_vs_stock_sample']:.1f}x",
                       f"batched / stock PPO end to end = {figures['batched_vs_stock_train']:.1f}x"]
        print(f"\n{'measurement':<46}{'env steps/s':>13}{'agent steps/s':>15}")
        for label, speed, agents, note in rows:
            print(f"{label:<46}{speed:>13,.0f}{speed * agents:>15,.0f}" + (f"   {note}" if note else ""))
        print("ratios: " + ", ".join(ratios))
        if not args.skip_rllib:
            print(f"PPO: {args.train_iters} iterations each, train_batch_size {figures['train_batch_size']} (an "
                  f"iteration samples whole fragments until it has that many env steps)")
            print("targets: " + "; ".join(f"{label}: {'met' if figures[key] >= bound else 'not met'} "
                                          f"({figures[key]:.1f}x)" for key, bound, label in TARGETS))
        if args.learning:
            figures["learning"] = learning_rows(args)
    finally:
        if not args.skip_rllib or args.learning:
            ray.shutdown()
    print(json.dumps(rounded(figures)))
    return figures


if __name__ == "__main__":
    main()
