#!/usr/bin/env python
"""Train the experiments of a YAML file with Ray Tune + RLlib.

    python train.py -f config/vmas-navigation-ppo.yaml --checkpoint-freq 10 --checkpoint-at-end --local-dir results
    python train.py -f config/vmas-navigation-ppo.yaml --local-mode     # one process: pdb works in env/model/callbacks
"""

import argparse
import os

from marlkit.cli import parse_mapping, run_cli
from envs.errors import ConfigError


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-f", "--config-file", required=True, help="experiment YAML file (see config/)")
    parser.add_argument("--local-dir", default=None,
                        help="results folder (Tune storage path); default: the YAML's local_dir, else ./results")
    parser.add_argument("--temp-dir", help="Ray session folder (logs, sockets); keep it short and node-local")
    parser.add_argument("--checkpoint-freq", type=int, help="checkpoint every N iterations (overrides the YAML)")
    parser.add_argument("--checkpoint-at-end", action="store_true", default=None,
                        help="checkpoint when each trial ends (overrides the YAML)")
    parser.add_argument("--keep-checkpoints-num", type=int, help="keep only the newest N checkpoints per trial")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted experiments of this YAML from <local-dir>/<experiment>")
    parser.add_argument("--restore", help="checkpoint folder to initialise every trial from")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: $RAY_ADDRESS, else start one)")
    parser.add_argument("--ray-num-cpus", type=int, help="CPUs of the Ray instance started here")
    parser.add_argument("--ray-num-gpus", type=int, help="GPUs of the Ray instance started here")
    parser.add_argument("--ray-num-nodes", type=int, help="wait (up to 120 s) until this many Ray nodes joined")
    parser.add_argument("--ray-object-store-memory", type=int, help="object store bytes of the Ray instance started here")
    parser.add_argument("--local-mode", action="store_true",
                        help="run trials one by one in this process with no remote env runners (for pdb)")
    parser.add_argument("--seed", type=int, help="sets config.seed of every experiment")
    parser.add_argument("--config", help="RLlib settings as JSON/YAML, deep-merged over every experiment's config, "
                                         "e.g. '{num_env_runners: 4, env_config: {n_agents: 5}}'")
    parser.add_argument("--stop", help="stopping criteria as JSON/YAML, merged over the YAML's, "
                                       "e.g. '{training_iteration: 5}'")
    parser.add_argument("--wandb", choices=["online", "offline"],
                        help="log to Weights & Biases (offline needs no account); the YAML's wandb block sets more")
    parser.add_argument("--check-env", action="store_true",
                        help="play an episode of each experiment's env with random actions, list what breaks its API "
                             "(spaces, reset/step values, agents, an episode's end) and exit; trains nothing")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_override = parse_mapping("--stop", args.stop, "{training_iteration: 5}") if args.stop else {}
    config_override = parse_mapping("--config", args.config, "{num_env_runners: 4}") if args.config else {}

    # Tune's classic progress reporter shows our columns (env steps/s); the newer one ignores them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from marlkit import launch, local_mode, plan, preflight, spec  # heavy imports (Ray, torch) after argument parsing keeps --help fast

    if args.seed is not None:
        config_override["seed"] = args.seed
    overrides = {"checkpoint_freq": args.checkpoint_freq, "keep_checkpoints_num": args.keep_checkpoints_num,
                 "checkpoint_at_end": args.checkpoint_at_end or None, "stop": stop_override or None,
                 "wandb": {"mode": args.wandb} if args.wandb else None}
    experiments = spec.load_experiments(args.config_file, config_override,
                                        {name: value for name, value in overrides.items() if value is not None})
    if args.check_env:
        from marlkit.env_checks import env_check_lines
        results = [env_check_lines(experiment) for experiment in experiments]
        for _, lines in results:
            print("\n".join(lines))
        return 0 if all(passed for passed, _ in results) else 1
    for experiment in experiments:
        for note in experiment.notes + plan.make_plan(experiment).notes:
            print(f"note: {note}")
    local_dirs = {args.local_dir or e.local_dir or "results" for e in experiments}
    storages = {d: preflight.check_writable(d) for d in local_dirs}
    if args.resume:
        if args.local_mode:
            raise ConfigError("--resume continues Tune experiments; it does not combine with --local-mode")
        for experiment in experiments:
            preflight.check_resumable(experiment, storages[args.local_dir or experiment.local_dir or "results"])
    restores = {e.name: preflight.check_checkpoint(args.restore or e.restore, e) for e in experiments if args.restore or e.restore}

    resources = launch.start_ray(launch.RayOptions(
        address=args.ray_address, num_cpus=args.ray_num_cpus, num_gpus=args.ray_num_gpus,
        num_nodes=args.ray_num_nodes, object_store_memory=args.ray_object_store_memory, temp_dir=args.temp_dir,
    ))
    for experiment in experiments:
        preflight.check_resources(experiment, resources, args.local_mode)
    launch.register_components(experiments)

    ok = True
    for experiment in experiments:
        storage = storages[args.local_dir or experiment.local_dir or "results"]
        restore = restores.get(experiment.name)
        if args.local_mode:
            ok &= local_mode.run_local(experiment, storage, restore)
        else:
            ok &= launch.run_tune(experiment, storage, restore, resume=args.resume)
        print(f"{experiment.name}: results in {storage / experiment.name}")
    return 0 if ok else 1


if __name__ == "__main__":
    run_cli(main)
