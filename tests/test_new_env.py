"""A new env added in one file and one registry line (tests/repeat_bit_env.py) trains through train.py with PPO and
MAPPO, on the batched env runner and on RLlib's stock sampler (through the generic adapters of
envs/rllib_adapters.py)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, read_results, subprocess_env, trial_dirs, write_yaml


def experiment(sampler: str, critic: str) -> dict:
    config = {
        "env_config": {"length": 3}, "num_env_runners": 0, "num_envs_per_env_runner": 4, "train_batch_size": 48,
        "minibatch_size": 24, "num_epochs": 1, "model": {"custom_model": "fcnet", "custom_model_config": {"hiddens": [8]}},
        "multiagent": {"policies": "shared", "critic": critic},
    }
    if sampler == "stock":  # a per-episode callback hook: RLlib's stock sampler calls it, the batched runner not
        config["callbacks"] = "repeat_bit_env.EpisodeLengths"
    return {"run": "PPO", "env": "repeat_bit", "stop": {"training_iteration": 2}, "config": config}


def test_a_new_batched_env_trains_with_ppo_and_mappo_on_both_samplers(tmp_path, ray_temp_dir):
    names = [f"{critic}-{sampler}" for critic in ("decentralized", "centralized") for sampler in ("batched", "stock")]
    config = write_yaml(tmp_path / "repeat-bit.yaml",
                        {name: experiment(name.split("-")[1], name.split("-")[0]) for name in names})
    run = subprocess.run([sys.executable, "tests/train_with_repeat_bit.py", "-f", str(config), "--local-dir",
                          str(tmp_path / "results"), "--temp-dir", str(ray_temp_dir)], cwd=REPO,
                         env={**subprocess_env(), "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    stock_notes = [line for line in run.stdout.splitlines() if "get RLlib's stock sampler" in line]
    assert [note.split(":")[1].strip() for note in stock_notes] == ["decentralized-stock", "centralized-stock"], stock_notes
    for name in names:
        (trial,) = trial_dirs(tmp_path / "results" / name)
        rows = read_results(trial)
        assert [r["training_iteration"] for r in rows] == [1, 2], name
        assert all(r["num_env_steps_sampled_this_iter"] >= 48 for r in rows), name
        # episodes of 3 steps end and restart in every game: their returns and lengths are counted
        assert rows[-1]["env_runners"]["episode_len_mean"] == 3, (name, rows[-1]["env_runners"])
        assert 0 <= rows[-1]["env_runners"]["episode_return_mean"] <= 6, name
        if name.endswith("stock"):
            assert rows[-1]["env_runners"]["custom_metrics"]["length_mean"] == 3, name
