"""Bucket Brigade study: the original study's questions answered with trained learners, as the tables of docs/bucket-brigade.md.

Every learner is a shipped experiment trained in this process as a train.py trial would train it (env runners
included) for --minutes of wall time; its policy is saved under --out/<run>/policy (and, for self-play, every
--snapshot-minutes under --out/<run>/policy_<agent steps so far>). Runs:

    default, greedy_neighbor,          config/bucket-brigade-ppo.yaml with that scenario: a learner in agent_0's seat
    trivial_cooperation, chain_reaction  among random, random, firefighter
    mix                                config/bucket-brigade-study.yaml bucket-brigade-mix: the four scenarios at once
    mix_all                            ... bucket-brigade-mix-all: every ten-house scenario at once
    random_opponents, pool_opponents   ... agent_0 among three random agents / a pool of the five archetypes
    selfplay                           config/bucket-brigade-selfplay.yaml: four agents share one policy (default)

--report evaluates the saved policies (deterministic actions, 2,000 fixed games each, envs/bucket_brigade/
evaluation.py; scripted agents in the same seats on the same games) and prints four markdown tables:

    transfer   rows: every ten-house scenario; columns: the learner of each scenario run, mix and mix_all in agent_0's
               seat among random, random, firefighter, and the best scripted agent in that seat (reward per night);
    scripted   the mix_all learner and every scripted agent in that seat, on every ten-house scenario;
    opponents  rows: what the learner trained against; columns: the opponents it is evaluated against (random,
               random, firefighter; three random; the archetype pool; three copies of the self-play policy);
    selfplay   teams of four: the self-play policy at each snapshot, and all-firefighter, all-hero, all-free-rider,
               all-rest and all-random teams: reward per night per agent and the share of nights they WORK.

It writes them with their figures to --out/study.json. Figure 1 of the study, per-scenario learners against every
scripted agent, is `bench/bucket_brigade.py --learning` (20 minutes per scenario); the scripted table adds the one
learner of all ten-house scenarios.

Usage:
    python bench/bucket_brigade_study.py --train default,mix,selfplay --minutes 6 --out results/study
    python bench/bucket_brigade_study.py --train greedy_neighbor,pool_opponents --minutes 6 --out results/study &
    python bench/bucket_brigade_study.py --report --out results/study      # ~1 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the repository root, for `envs` and `marlkit`

from envs.bucket_brigade.evaluation import OPPONENTS, play, policy_seat, scripted_seat, seat_table  # noqa: E402
from envs.bucket_brigade.heuristics import HEURISTICS  # noqa: E402
from envs.bucket_brigade.scenarios import SCENARIOS  # noqa: E402

PPO, STUDY, SELFPLAY = (ROOT / "config" / f"bucket-brigade-{name}.yaml" for name in ("ppo", "study", "selfplay"))
SCENARIO_RUNS = ("default", "greedy_neighbor", "trivial_cooperation", "chain_reaction")
RUNS = {  # run -> (experiment file, experiment name, RLlib config overrides)
    **{scenario: (PPO, "bucket-brigade-ppo", {"env_config": {"scenario": scenario}}) for scenario in SCENARIO_RUNS},
    "mix": (STUDY, "bucket-brigade-mix", {}),
    "mix_all": (STUDY, "bucket-brigade-mix-all", {}),
    "random_opponents": (STUDY, "bucket-brigade-random-opponents", {}),
    "pool_opponents": (STUDY, "bucket-brigade-pool-opponents", {}),
    "selfplay": (SELFPLAY, "bucket-brigade-selfplay", {}),
}
TEN_HOUSES = [name for name, scenario in SCENARIOS.items() if scenario.num_houses == 10]
OPPONENT_SETS = {  # evaluation opponents of agent_0; "selfplay" is three copies of the self-play policy
    "random, random, firefighter": OPPONENTS,
    "3 random": ("random",) * 3,
    "archetype pool": ("pool",) * 3,
    "3 self-play": "selfplay",
}
OPPONENT_RUNS = {"random, random, firefighter": "default", "3 random": "random_opponents",
                 "archetype pool": "pool_opponents", "self-play": "selfplay"}
TEAMS = ("firefighter", "hero", "free_rider", "rest", "random")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the saved policies and study.json")
    parser.add_argument("--train", default="", help=f"runs to train, comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--minutes", type=float, default=6.0, help="wall time each run trains for")
    parser.add_argument("--snapshot-minutes", type=float, default=1.0,
                        help="self-play saves its policy this often (the selfplay table's rows)")
    parser.add_argument("--report", action="store_true", help="evaluate the saved policies and print the tables")
    args = parser.parse_args(argv)
    args.train = [run for run in args.train.split(",") if run]
    unknown = [run for run in args.train if run not in RUNS]
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}; runs: {', '.join(RUNS)}")
    if not args.train and not args.report:
        parser.error("nothing to do: give --train RUNS and/or --report")
    if args.minutes <= 0 or args.snapshot_minutes <= 0:
        parser.error("--minutes and --snapshot-minutes must be > 0")
    args.out = Path(args.out)
    return args


def experiment_of(run: str):
    from marlkit import spec

    path, name, overrides = RUNS[run]
    (experiment,) = [e for e in spec.load_experiments(path, overrides) if e.name == name]
    return experiment


def train(run: str, minutes: float, snapshot_minutes: float, out: Path) -> dict:
    """Trains `run` for `minutes` of wall time; saves its trained policy (and self-play snapshots) under out/run."""
    from marlkit import launch
    from marlkit.files import write_json

    experiment = experiment_of(run)
    launch.register_components([experiment])
    config = launch.first_trial_config(experiment)
    algorithm = launch.build_algorithm(experiment.run, config)
    (policy_id,) = config["multiagent"]["policies_to_train"] or list(config["multiagent"]["policies"])
    snapshot_every = snapshot_minutes * 60 if run == "selfplay" else float("inf")
    start, next_snapshot = time.perf_counter(), snapshot_every
    result = {"num_agent_steps_sampled_lifetime": 0, "training_iteration": 0}
    try:
        while (elapsed := time.perf_counter() - start) < minutes * 60:
            if elapsed >= next_snapshot:
                steps = result["num_agent_steps_sampled_lifetime"]
                save_policy(algorithm.get_policy(policy_id), out / run / f"policy_{steps}")
                next_snapshot += snapshot_every
            result = algorithm.train()
        save_policy(algorithm.get_policy(policy_id), out / run / "policy")
    finally:
        algorithm.stop()
    facts = {"run": run, "experiment": experiment.name, "wall_s": time.perf_counter() - start,
             "agent_steps": result["num_agent_steps_sampled_lifetime"], "iterations": result["training_iteration"]}
    write_json(out / run / "training.json", facts)
    print(f"{run}: {facts['agent_steps']:,} agent steps, {facts['iterations']} iterations in {facts['wall_s']:.0f} s",
          flush=True)
    return facts


def save_policy(policy, folder: Path) -> None:
    """The policy's checkpoint, written beside and renamed into place (a reader never sees half of one)."""
    import shutil

    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    policy.export_checkpoint(str(staging))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def load_seat(folder: Path):
    """The saved policy as a seat policy (deterministic actions on the observations it trained on)."""
    from ray.rllib.policy.policy import Policy

    from envs.bucket_brigade.env import BucketBrigadeBatch

    policy = Policy.from_checkpoint(str(folder))
    scaler = BucketBrigadeBatch({"scenario": "default"})
    try:
        return policy_seat(policy, scaler.scale_observations)
    finally:
        scaler.close()


def transfer_table(seats: dict) -> dict:
    """Scenario -> {run: learner's reward per night, best_scripted, best_scripted_name} in agent_0's seat."""
    runs = [run for run in (*SCENARIO_RUNS, "mix", "mix_all") if run in seats]
    table = {}
    for scenario in TEN_HOUSES:
        scripted = seat_table(scenario)
        best = max(scripted, key=scripted.get)
        row = {run: play(scenario, [seats[run], *scripted_opponents(scenario)]).reward_per_night[0] for run in runs}
        table[scenario] = {**row, "best_scripted": scripted[best], "best_scripted_name": best, "scripted": scripted}
    return table


def scripted_opponents(scenario: str, names=OPPONENTS) -> list:
    return [scripted_seat(name, scenario, 1 + len(names)) for name in names]


def opponents_table(seats: dict) -> dict:
    """Training opponents (row) -> evaluation opponents (column) -> agent_0's reward per night on `default`; and a
    best-scripted row (the best scripted agent in the seat against those opponents)."""
    columns = {}
    for label, names in OPPONENT_SETS.items():
        if names == "selfplay":
            if "selfplay" in seats:
                columns[label] = [seats["selfplay"]] * 3
        else:
            columns[label] = scripted_opponents("default", names)
    table = {row: {label: play("default", [seats[run], *opponents]).reward_per_night[0]
                   for label, opponents in columns.items()}
             for row, run in OPPONENT_RUNS.items() if run in seats}
    best = {}
    for label, opponents in columns.items():
        scores = {name: play("default", [scripted_seat(name, "default", 4), *opponents]).reward_per_night[0]
                  for name in HEURISTICS}
        top = max(scores, key=scores.get)
        best[label] = {"reward": scores[top], "name": top}
    return {"learners": table, "best_scripted": best}


def selfplay_table(out: Path) -> dict:
    """Team -> {reward_per_night (mean over the four agents), work_share}: the self-play policy at each snapshot and
    the scripted teams, on `default`."""
    teams = {}
    snapshots = sorted(out.glob("selfplay/policy_*"), key=lambda folder: int(folder.name[7:]))
    final = out / "selfplay" / "policy"
    if final.is_dir():
        steps = json.loads((out / "selfplay" / "training.json").read_text())["agent_steps"]
        for folder, at in [*((folder, int(folder.name[7:])) for folder in snapshots), (final, steps)]:
            teams[f"self-play policy, {at / 1e6:.2f}M agent steps"] = [load_seat(folder)] * 4
    for name in TEAMS:
        teams[f"4 {name}"] = [scripted_seat(name, "default", 4)] * 4
    table = {}
    for team, seats in teams.items():
        result = play("default", seats)
        table[team] = {"reward_per_night": float(result.reward_per_night.mean()),
                       "work_share": float(result.work_share.mean())}
    return table


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def report(out: Path) -> dict:
    from marlkit import launch
    from marlkit.files import write_json

    trained = [run for run in RUNS if (out / run / "policy").is_dir()]
    if not trained:
        raise SystemExit(f"error: no trained policies under {out}; train them first (--train)")
    launch.register_components([experiment_of(run) for run in trained])  # their custom models
    seats = {run: load_seat(out / run / "policy") for run in trained}
    training = {run: json.loads((out / run / "training.json").read_text()) for run in trained}
    study = {"training": training, "transfer": transfer_table(seats), "opponents": opponents_table(seats),
             "selfplay": selfplay_table(out)}

    runs = [run for run in (*SCENARIO_RUNS, "mix", "mix_all") if run in seats]
    rows = []
    for scenario, row in study["transfer"].items():
        cells = [f"**{row[run]:.2f}**" if row[run] >= row["best_scripted"] else f"{row[run]:.2f}" for run in runs]
        rows.append([scenario, *cells, f"{row['best_scripted']:.2f} ({row['best_scripted_name']})"])
    print("\nTransfer: agent_0 among random, random, firefighter; reward per night, 2,000 games per cell; rows: "
          "evaluated on; columns: trained on; bold: at least the best scripted agent\n")
    print(markdown(["scenario", *runs, "best scripted"], rows))

    if "mix_all" in seats:
        names = sorted(HEURISTICS, key=lambda name: -study["transfer"]["default"]["scripted"][name])
        rows = [[scenario, f"**{row['mix_all']:.2f}**" if row["mix_all"] >= row["best_scripted"] else
                 f"{row['mix_all']:.2f}", *(f"{row['scripted'][name]:.2f}" for name in names)]
                for scenario, row in study["transfer"].items()]
        print("\nThe mix_all learner against every scripted agent in its seat (agent_0 among random, random, "
              "firefighter); reward per night, 2,000 games\n")
        print(markdown(["scenario", "learner (mix_all)", *names], rows))

    opponents = study["opponents"]
    labels = list(opponents["best_scripted"])
    rows = [[row, *(f"{values[label]:.2f}" for label in labels)] for row, values in opponents["learners"].items()]
    rows.append(["best scripted agent", *(f"{best['reward']:.2f} ({best['name']})"
                                          for best in opponents["best_scripted"].values())])
    print("\nOpponents: agent_0's reward per night on default; rows: trained against; columns: evaluated against\n")
    print(markdown(["trained against", *labels], rows))

    rows = [[team, f"{values['reward_per_night']:.2f}", f"{values['work_share']:.3f}"]
            for team, values in study["selfplay"].items()]
    print("\nSelf-play on default: teams of four, reward per night per agent and share of nights spent WORKing\n")
    print(markdown(["team", "reward per night", "WORK share"], rows))
    print("\ntraining: " + "; ".join(f"{run} {facts['agent_steps']:,} agent steps in {facts['wall_s']:.0f} s"
                                     for run, facts in training.items()))
    write_json(out / "study.json", study)
    print(json.dumps({"study": str(out / "study.json")}))
    return study


def main(argv=None) -> dict:
    args = parse_args(argv)
    study = {}
    if args.train:
        import ray
        import torch

        torch.set_num_threads(1)  # what a Tune trial of one CPU gets
        ray.init(include_dashboard=False)
        try:
            study["training"] = [train(run, args.minutes, args.snapshot_minutes, args.out) for run in args.train]
        finally:
            ray.shutdown()
    if args.report:
        study = report(args.out)
    return study


if __name__ == "__main__":
    main()
