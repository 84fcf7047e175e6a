"""Learning, not just stepping: seeded runs of train.py as users run it (Tune, the remote env runner of the shipped
configs receiving the learner's weights every iteration) must learn by a stated margin.

- VMAS navigation (benchmark level 1), PPO and MAPPO (`multiagent.critic: centralized`): the mean return of the last
  two iterations must beat the first iteration's (the untrained policy) by a margin.
- Bucket Brigade, the shipped `config/bucket-brigade-ppo.yaml` as it is (house_pointer learner among random, random,
  firefighter), a shorter stop: the trained learner, scored in its seat on the study's 2,000 games
  (envs/bucket_brigade/evaluation.py), must reach a fixed bar above the random and always-rest agents and above every
  untrained learner measured.

Each margin comes from runs over four seeds (the observed values are in the comments); the test runs seed 0.
OMP_NUM_THREADS=1: on a small shared machine torch's intra-op threads fight the other processes for the cores;
with one thread a run costs a third of the CPU time and learns exactly the same (same returns per seed).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ray_session_folder, read_results, run_script, trial_dirs, write_yaml
from marlkit.checkpoints import load_algorithm_state

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def rise(returns: list[float]) -> float:
    """How far the last two iterations' mean return is above the first iteration's."""
    return sum(returns[-2:]) / 2 - returns[0]


# VMAS navigation as the shipped benchmark level 1 (2 agents, 50 steps, no collisions, dense shaped reward, one
# shared policy, 3,200 env steps an iteration on one remote env runner), 5 iterations. Episode return mean per
# iteration (seeds 0-3):
#   PPO   seed 0: -0.11  0.43  1.18  1.62  2.03   rise 1.94     MAPPO seed 0: -0.08  0.44  1.22  1.64  2.13   rise 1.97
#         seed 1:  0.36  0.86  1.48  1.92  2.17   rise 1.69           seed 1:  0.29  0.78  1.31  1.77  2.23   rise 1.71
#         seed 2: -0.02  0.37  1.12  1.69  1.91   rise 1.82           seed 2: -0.14  0.43  1.16  1.70  1.91   rise 1.95
#         seed 3: -0.36  0.24  1.01  1.70  1.90   rise 2.16           seed 3: -0.30  0.29  1.02  1.66  1.84   rise 2.05
# Margins: about half the smallest rise.
VMAS_SEED, VMAS_ITERATIONS = 0, 5
VMAS_MARGINS = {"ppo": 0.8, "mappo": 0.85}


@pytest.fixture(scope="module")
def vmas_runs(tmp_path_factory) -> dict[str, Path]:
    """Level 1 with per-agent critics (PPO) and with the centralised critic (MAPPO): one train.py run, two
    experiments; kind -> trial folder."""
    (_, level), = yaml.safe_load((REPO / "config/benchmark/level_1_basic.yaml").read_text()).items()
    level["stop"] = {"training_iteration": VMAS_ITERATIONS}
    level["checkpoint_at_end"] = True  # to tell which critic trained
    level["config"]["seed"] = VMAS_SEED
    mappo = copy.deepcopy(level)
    mappo["config"]["multiagent"]["critic"] = "centralized"
    folder = tmp_path_factory.mktemp("vmas-learning")
    config = write_yaml(folder / "exp.yaml", {"ppo": level, "mappo": mappo})
    with ray_session_folder() as temp_dir:
        run = run_script("train.py", "-f", str(config), "--local-dir", str(folder / "results"), temp_dir=temp_dir,
                         env=ONE_THREAD)
    assert run.returncode == 0, run.stderr[-3000:]
    return {kind: trial_dirs(folder / "results" / kind)[0] for kind in ("ppo", "mappo")}


@pytest.mark.parametrize("kind", ["ppo", "mappo"])
def test_vmas_navigation_return_rises_with_a_remote_env_runner(kind, vmas_runs):
    trial = vmas_runs[kind]
    results = read_results(trial)
    assert [r["training_iteration"] for r in results] == list(range(1, VMAS_ITERATIONS + 1))
    assert results[-1]["num_env_steps_sampled_lifetime"] == 3200 * VMAS_ITERATIONS
    assert results[-1]["num_healthy_workers"] == 1  # sampled by the remote env runner, not the learner's process
    weights = load_algorithm_state(max(trial.glob("checkpoint_*")))["worker"]["policy_states"]["shared"]["weights"]
    assert any(key.startswith("central_critic.") for key in weights) == (kind == "mappo")
    returns = [r["env_runners"]["episode_return_mean"] for r in results]
    print(f"{kind}: episode return per iteration {returns}")
    assert rise(returns) >= VMAS_MARGINS[kind], f"episode return per iteration {returns}: rose less than " \
                                                f"{VMAS_MARGINS[kind]}"


# Bucket Brigade, config/bucket-brigade-ppo.yaml on `default` (4,096 env steps an iteration: 16 nights of 256
# games, about 1.5 s), learner's reward per night in its seat on the 2,000 games of envs/bucket_brigade/evaluation.py,
# after 0 (the untrained policy), 4, 8, 12 and 16 iterations (seeds 0-3):
#   seed 0: 79.55  84.39  84.88  84.66  84.76
#   seed 1: 78.69  76.49  79.13  79.41  80.76
#   seed 2: 74.24  79.86  78.72  81.70  80.83
#   seed 3: 75.11  82.96  79.58  79.65  81.06
# Scripted agents in the same seat on the same games: hero 84.81, firefighter 83.83, pool 80.75, coordinator 80.39,
# liar 79.87, free_rider 75.89, random 75.46, rest 75.20. The bar, 80.0, lies above random and rest, above every
# untrained learner, and below every seed's learner after 16 iterations.
BUCKET_SEED, BUCKET_ITERATIONS, BUCKET_BAR = 0, 16, 80.0


def test_shipped_bucket_brigade_learner_beats_random_and_resting(tmp_path, ray_temp_dir):
    from ray.rllib.policy.policy import Policy

    from envs.bucket_brigade.evaluation import policy_seat, seat_reward_per_night
    from envs.bucket_brigade.env import BucketBrigadeBatch
    from marlkit.models import register_models

    # The learner trains from what its remote env runner samples; tests/weights_callback.py reports whether the runner
    # sampled with the learner's weights (the seat score alone cannot tell: a learner trained on the initial policy's
    # games still clears the bar, measured with the runner never synced).
    run = run_script("train.py", "-f", "config/bucket-brigade-ppo.yaml", "--stop",
                     f"{{training_iteration: {BUCKET_ITERATIONS}}}", "--seed", str(BUCKET_SEED), "--local-dir",
                     str(tmp_path), "--config", "{callbacks: weights_callback.RunnerWeightsMatch}",
                     temp_dir=ray_temp_dir, env={**ONE_THREAD, "PYTHONPATH": str(REPO / "tests")})
    assert run.returncode == 0, run.stderr[-3000:]
    (trial,) = trial_dirs(tmp_path / "bucket-brigade-ppo")
    results = read_results(trial)
    assert [r["training_iteration"] for r in results] == list(range(1, BUCKET_ITERATIONS + 1))
    assert [r["runner_weights_match"] for r in results] == [1] * BUCKET_ITERATIONS
    assert results[-1]["num_healthy_workers"] == 1 and sorted(results[-1]["info"]["learner"]) == ["learner"]
    checkpoint = max(trial.glob("checkpoint_*"))  # checkpoint_at_end of the shipped config
    assert load_algorithm_state(checkpoint)["training_iteration"] == BUCKET_ITERATIONS
    register_models(["house_pointer"])
    learner = Policy.from_checkpoint(checkpoint / "policies" / "learner")
    env = BucketBrigadeBatch({"scenario": "default"})
    score = seat_reward_per_night("default", policy_seat(learner, env.scale_observations))
    env.close()
    print(f"learner's reward per night in its seat after {BUCKET_ITERATIONS} iterations: {score:.2f}")
    assert score >= BUCKET_BAR, f"the learner's reward per night in its seat is {score:.2f}, below {BUCKET_BAR}"
