"""Teams that learn from whole game steps (marlkit/team.py, issue 27): value factorisation for DQN (VDN and QMIX,
marlkit/mixers.py) and MASAC (marlkit/masac.py). The mixers' math, the settings refused in one line, and each
trained by train.py on VMAS and Bucket Brigade, checkpointed, rolled out and restored. (The rows of whole game steps
and one learning step of QMIX and MASAC against their losses computed by hand: test_batched_runner.py.)"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from conftest import (
    REPO, finish_script, read_results, run_in_process, run_script, run_train, start_script, trial_dirs, write_yaml,
)
from envs.errors import ConfigError
from marlkit.checkpoints import load_algorithm_state
from marlkit.mixers import QMixer, VDNMixer
from marlkit.plan import make_plan
from marlkit.spec import parse_experiment
from marlkit.team import TeamHost
from test_algorithms import bucket_brigade, shipped, vmas
from test_cli_errors import assert_one_line_error


def test_vdn_is_the_sum_and_qmix_a_monotonic_mix_of_the_agents_q_values():
    """VDN: the plain sum. QMIX: w2 . elu(q W1 + b1) + V(s) computed by hand from its parameters, with mixing weights
    that are non-negative for any state, so the team's Q never falls when an agent's Q rises."""
    torch.manual_seed(0)
    agent_q, state = torch.randn(64, 3), 3.0 * torch.randn(64, 10)
    np.testing.assert_allclose(VDNMixer()(agent_q, state).numpy(), agent_q.sum(1).numpy(), rtol=1e-6)
    mixer = QMixer(num_agents=3, state_size=10, embed_dim=4)
    p = {name: value.detach().numpy().astype(np.float64) for name, value in mixer.named_parameters()}
    s, q = state.numpy().astype(np.float64), agent_q.numpy().astype(np.float64)
    w1 = np.abs(s @ p["hyper_w1.weight"].T + p["hyper_w1.bias"]).reshape(64, 3, 4)
    hidden = np.einsum("ba,bae->be", q, w1) + s @ p["hyper_b1.weight"].T + p["hyper_b1.bias"]
    hidden = np.where(hidden > 0, hidden, np.exp(hidden) - 1.0)
    w2 = np.abs(s @ p["hyper_w2.weight"].T + p["hyper_w2.bias"])
    value = np.maximum(s @ p["value.0.weight"].T + p["value.0.bias"], 0) @ p["value.2.weight"].T + p["value.2.bias"]
    np.testing.assert_allclose(mixer(agent_q, state).detach().numpy(), (hidden * w2).sum(1) + value[:, 0], rtol=1e-5)
    first, second = mixer.mixing_weights(state)
    assert (first >= 0).all() and (second >= 0).all()
    agent_q.requires_grad_(True)
    (gradient,) = torch.autograd.grad(mixer(agent_q, state).sum(), agent_q)
    assert (gradient >= 0).all() and (gradient > 0).any()


def test_the_hosts_target_update_is_rllibs():
    """The team host's in-place soft target update gives what RLlib's TargetNetworkMixin gives (every tensor of the
    state interpolated by tau, integer counters cast back), for an explicit tau and the config's."""
    from ray.rllib.policy.torch_mixins import TargetNetworkMixin

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(8, 3))  # BatchNorm's running statistics and its counter move
    start = {key: torch.randn_like(value) if value.is_floating_point() else value + 5
             for key, value in model.state_dict().items()}
    targets = []
    for policy_class in (TeamHost, TargetNetworkMixin):
        policy = policy_class.__new__(policy_class)
        policy.config, policy.model = {"tau": 0.3}, model
        target = copy.deepcopy(model)
        target.load_state_dict(start)
        policy.target_models = {model: target}
        policy.update_target(0.5)
        policy.update_target()
        targets.append(target.state_dict())
    ours, rllib = targets
    assert not torch.equal(ours["0.weight"], start["0.weight"])
    for key in rllib:
        assert torch.allclose(ours[key], rllib[key]), key


def mixed(mixer: str = "qmix", **multiagent) -> dict:
    experiment = vmas("DQN", False, train_batch_size=32)
    experiment["config"]["multiagent"] = {"policies": "per_agent", "mixer": mixer, **multiagent}
    return experiment


def with_config(experiment: dict, **config) -> dict:
    experiment["config"].update(config)
    return experiment


def team_of_one(run: str = "DQN", **multiagent) -> dict:
    experiment = bucket_brigade(run)
    experiment["config"]["multiagent"].update(multiagent or {"mixer": "vdn"})
    return experiment


def masac(**config) -> dict:
    experiment = vmas("SAC", True, **config)
    experiment["config"]["multiagent"] = {"policies": "per_agent", "critic": "centralized"}
    return experiment


@pytest.mark.parametrize("experiment, message", [
    (mixed("qmx"), "config.multiagent.mixer: 'qmx' is not a mixer (did you mean 'qmix'?)"),
    ({**mixed(), "run": "PPO"}, "x.config.multiagent.mixer: qmix mixes the Q-values of value-based agents (run: DQN), "
                                "not PPO's; use run: DQN or remove the key"),
    (with_config(mixed(), env_config={"scenario": "navigation", "n_agents": 2, "continuous_actions": True}),
     "x: DQN takes Discrete actions, not Box"),
    (with_config(mixed(), env_config={"scenario": "navigation", "n_agents": 1, "continuous_actions": False}),
     "config.multiagent.mixer mixes the Q-values of a team of 2 or more trained agents; this game's team is "
     "['agent_0']"),
    (team_of_one(), "config.multiagent.mixer mixes the Q-values of a team of 2 or more trained agents; this game's "
                    "team is ['agent_0']"),
    (with_config(mixed(), model={"fcnet_hiddens": [16], "use_lstm": True}),
     "x.config.model.use_lstm: the agents of a mixer are feed-forward networks (replayed game steps carry no "
     "recurrent state); remove use_lstm or the mixer"),
    (with_config(mixed(), num_atoms=51), "x.config.num_atoms: a mixer mixes expected Q-values, not distributions"),
    (mixed(mixer_config={"embed": 8}), "config.multiagent.mixer_config.embed is not a QMIX setting (did you mean "
                                       "'embed_dim'?)"),
    (mixed("vdn", mixer_config={"embed_dim": 8}), "config.multiagent.mixer_config sets QMIX's mixing network; it "
                                                  "needs mixer: qmix, not vdn"),
    (mixed(team_reward="max"), "config.multiagent.team_reward must be sum or mean"),
    (with_config(vmas("DQN", False), multiagent={"team_reward": "sum"}),
     "config.multiagent.team_reward is the reward of a team: it needs multiagent.mixer (DQN) or critic: centralized "
     "with run: SAC (MASAC)"),
    (team_of_one("SAC", critic="centralized"), "config.multiagent.critic: centralized (MASAC) values the actions of a "
                                               "team of 2 or more trained agents; this game's team is ['agent_0']"),
    ({**masac(), "run": "DQN"}, "x.config.multiagent.critic: centralized is built for PPO (MAPPO) and SAC (MASAC), "
                                "not DQN; use one of them or remove the key"),
    (masac(model={"fcnet_hiddens": [16], "use_lstm": True}),
     "x.config.model.use_lstm: the actors of MASAC are feed-forward networks (replayed game steps carry no recurrent "
     "state); remove use_lstm or multiagent.critic: centralized"),
    (masac(callbacks="pid_callback.RecordEpisodePid"), "x.config.multiagent.critic trains on whole game steps"),
    (with_config(mixed(), callbacks="pid_callback.RecordEpisodePid"),
     "x.config.multiagent.mixer trains on whole game steps, which only the batched env runner records, and user "
     "callbacks with per-episode hooks (on_episode_start) get RLlib's stock sampler; remove what needs it, or "
     "multiagent.mixer"),
])
def test_what_a_team_cannot_train_is_a_one_line_error_before_ray_starts(experiment, message, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    with pytest.raises(ConfigError) as error:
        make_plan(parse_experiment("x", experiment))  # (the plan is made before Ray starts too)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_vdn_qmix_and_masac_train_checkpoint_roll_out_and_restore(tmp_path, ray_temp_dir, capsys):
    """One train.py run, 2 iterations each: the shipped VDN config on VMAS balance with a Q-network per agent, the
    shipped MASAC config on VMAS navigation (Box actions, an actor per agent), and on Bucket Brigade (Discrete
    actions: the flat view) VDN over 3 agents sharing a Q-network, QMIX and MASAC over two learners beside a scripted
    player (not in the team). (The shipped QMIX config trains in test_benchmark.py.) Only the host policy reports
    learning, yet every team policy's network changes between the checkpoints of iterations 1 and 2. A QMIX and a
    MASAC checkpoint roll out; a QMIX checkpoint restored into an experiment with another mixer or none is refused in
    one line; the VDN checkpoint restores into its own experiment in --local-mode and goes on learning."""
    replay = {"num_steps_sampled_before_learning_starts": 100, "min_sample_timesteps_per_iteration": 200,
              "train_batch_size": 32}
    vdn = shipped("vmas-balance-vdn", **replay)
    vdn["config"]["multiagent"]["policies"] = "per_agent"
    masac_vmas = shipped("vmas-navigation-masac", **replay, q_model_config={"fcnet_hiddens": [32]},
                         policy_model_config={"fcnet_hiddens": [32]})
    masac_vmas["config"]["multiagent"]["policies"] = "per_agent"
    learners = {"learners": {"agents": ["agent_0", "agent_1"]}, "rival": {"agents": "agent_2", "heuristic": "random"}}
    qmix_bb, masac_bb, vdn_bb = (bucket_brigade(run, **replay) for run in ("DQN", "SAC", "DQN"))
    qmix_bb["config"]["multiagent"] = {"policies": learners, "mixer": "qmix", "team_reward": "mean"}
    masac_bb["config"]["multiagent"] = {"policies": learners, "critic": "centralized", "team_reward": "sum"}
    vdn_bb["config"]["multiagent"] = {"policies": "shared", "mixer": "vdn"}
    experiments = {"vdn-vmas": vdn, "masac-vmas": masac_vmas, "vdn-bb": vdn_bb, "qmix-bb": qmix_bb,
                   "masac-bb": masac_bb}
    for experiment in experiments.values():
        experiment.update(checkpoint_freq=1, checkpoint_at_end=True)
    run = run_train("-f", str(write_yaml(tmp_path / "teams.yaml", experiments)), "--local-dir", str(tmp_path),
                    temp_dir=ray_temp_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    hosts = {"vdn-vmas": ("agent_0", ["agent_1", "agent_2"]), "masac-vmas": ("agent_0", ["agent_1", "agent_2"]),
             "vdn-bb": ("shared", []), "qmix-bb": ("learners", []), "masac-bb": ("learners", [])}
    for name, (host, carried) in hosts.items():
        (trial,) = trial_dirs(tmp_path / name)
        rows = read_results(trial)
        assert [r["training_iteration"] for r in rows] == [1, 2], name
        assert set(rows[-1]["info"]["learner"]) == {host}, (name, rows[-1]["info"]["learner"])
        stats = rows[-1]["info"]["learner"][host]["learner_stats"]
        assert all(np.isfinite(value) for value in stats.values()) and stats.get("loss", stats.get("critic_loss")) > 0
        first, second = (load_algorithm_state(trial / f"checkpoint_00000{i}")["worker"]["policy_states"]
                         for i in (0, 1))
        for pid in [host, *carried]:  # trained through the host's team step
            assert any(not np.array_equal(first[pid]["weights"][key], second[pid]["weights"][key])
                       for key in first[pid]["weights"] if "action_model" in key or "masac" not in name), (name, pid)
        assert any(key.startswith("mixer.") for key in second[host]["weights"]) == name.startswith("qmix"), name

    rollouts = {run: start_script("rollout.py", str(trial_dirs(tmp_path / name)[0] / "checkpoint_000001"), "--run", run,
                                  "--episodes", "1", "--num-workers", "0", "--num-gpus", "0",
                                  temp_dir=ray_temp_dir / f"rollout-{run}")
                for run, name in (("DQN", "qmix-bb"), ("SAC", "masac-vmas"))}
    vdn_file = write_yaml(tmp_path / "vdn.yaml", {"vdn-vmas": vdn})
    vdn_checkpoint = trial_dirs(tmp_path / "vdn-vmas")[0] / "checkpoint_000001"
    qmix_checkpoint = str(trial_dirs(tmp_path / "qmix-bb")[0] / "checkpoint_000001")
    refused = run_in_process(capsys, "train.py", "-f", str(vdn_file), "--restore", qmix_checkpoint)
    assert_one_line_error(refused, "its policies were trained with a qmix mixer, but vdn-vmas.config.multiagent.mixer "
                                   "is vdn; restore it into an experiment with the same mixer, or train from scratch")
    independent = bucket_brigade("DQN")
    refused = run_in_process(capsys, "train.py", "-f", str(write_yaml(tmp_path / "iql.yaml", {"iql-bb": independent})),
                             "--restore", qmix_checkpoint)
    assert_one_line_error(refused, "its policies were trained with a qmix mixer, but iql-bb has no multiagent.mixer")
    restored = run_train("-f", str(vdn_file), "--restore", str(vdn_checkpoint), "--local-mode", "--stop",
                         "{training_iteration: 3}", "--local-dir", str(tmp_path / "restored"),
                         temp_dir=ray_temp_dir / "restore")
    assert restored.returncode == 0, restored.stderr[-3000:]
    rows = read_results(trial_dirs(tmp_path / "restored" / "vdn-vmas")[0])
    assert [r["training_iteration"] for r in rows] == [3], "not restored from the checkpoint of iteration 2"
    assert rows[0]["info"]["learner"]["agent_0"]["num_grad_updates_lifetime"] > 0
    for run, rollout in rollouts.items():
        rollout = finish_script(rollout)
        assert rollout.returncode == 0, (run, rollout.stderr[-3000:])
        assert re.search(r"^episode 0: length \d+, return \S+ ", rollout.stdout, re.M), (run, rollout.stdout)


def test_teams_benchmark_tiny_run(ray_temp_dir):
    """bench/teams.py: QMIX (balance, Discrete) and MASAC (navigation, Box) trained here and by BenchMARL on equal
    frames, with the JSON keys bench/README.md names (the full run adds DQN and VDN). No speed is asserted, so it runs
    beside other tests (test_bench.py's run alone)."""
    result = run_script("bench/teams.py", "--algorithms", "QMIX,MASAC", "--num-envs", "4", "--fragment", "5",
                        "--train-frames", "40", "--seeds", "1", "--replay-batch", "8", "--optimizer-steps", "2",
                        temp_dir=ray_temp_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == {f"{side}_{algorithm}_{figure}" for side in ("ours", "benchmarl")
                            for algorithm in ("qmix", "masac") for figure in ("train_fps", "return")}
    assert all(figures[f"{side}_{algorithm}_train_fps"] > 0 for side in ("ours", "benchmarl")
               for algorithm in ("qmix", "masac"))
    for line in ("marlkit QMIX seed 0: 40 frames", "BenchMARL QMIX seed 0: 40 frames",
                 "marlkit MASAC seed 0: 40 frames", "BenchMARL MASAC seed 0: 40 frames",
                 "train frames/s, ours / BenchMARL: QMIX "):
        assert line in result.stdout, line
