"""Samples one fragment with a real PPO algorithm's local BatchedVmasRunner; pickles (batch, metrics, env_config).

Run as a script by test_vmas_runner.py, so Ray and torch start in a process of their own:
    python tests/sample_fragment.py OUT.pkl TEMP_DIR [simple_tag]

With `simple_tag`: 2 predators (one policy) and 1 prey (another), whose observations differ in size.
"""

import pickle
import sys

import ray

from conftest import tiny_experiment
from envs.vmas_runner import BatchedVmasRunner
from marlkit import launch, spec

NUM_ENVS, MAX_STEPS, FRAGMENT, SEED = 3, 5, 12, 7
GAMMA, LAMBDA = 0.9, 0.8


def main(out: str, temp_dir: str, scenario: str = "navigation") -> None:
    experiment = tiny_experiment(config={
        "num_envs_per_env_runner": NUM_ENVS, "rollout_fragment_length": FRAGMENT,
        "train_batch_size": FRAGMENT * NUM_ENVS, "minibatch_size": FRAGMENT, "seed": SEED, "explore": True,
        "gamma": GAMMA, "lambda": LAMBDA,
    })
    experiment["config"]["env_config"]["max_steps"] = MAX_STEPS
    if scenario == "simple_tag":
        experiment["config"]["env_config"] = {"scenario": "simple_tag", "num_adversaries": 2, "num_good_agents": 1,
                                              "max_steps": MAX_STEPS}
        experiment["config"]["multiagent"] = {"policies": {"predator": {"agents": "adversary_*"},
                                                           "prey": {"agents": "agent_*"}}}
    loaded = spec.parse_experiment("runner", experiment)
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir)
    try:
        launch.register_components([loaded])
        algorithm = launch.build_algorithm("PPO", launch.first_trial_config(loaded))
        runner = algorithm.env_runner
        assert isinstance(runner, BatchedVmasRunner), type(runner)
        batch = runner.sample()
        metrics = runner.get_metrics()
        algorithm.stop()
    finally:
        ray.shutdown()
    with open(out, "wb") as file:
        pickle.dump((batch, metrics, loaded.config["env_config"]), file)


if __name__ == "__main__":
    main(*sys.argv[1:])
