"""Bad input gets one line naming the problem, exit code 2 and no traceback (train.py as users run it, and its entry
point in the test process for the many bad-YAML cases, which are refused before Ray starts)."""

from __future__ import annotations

import re
import uuid

import pytest

from conftest import REPO, run_script, run_train, tiny_experiment, train_in_process, wait_until_gone, write_yaml
from envs.errors import ConfigError
from marlkit import preflight
from marlkit.spec import load_experiments


# Lines other programs may write to stderr before train.py's or rollout.py's error, once Ray or a library runs.
NAMED_WARNINGS = tuple(re.compile(r"^\S+ \S+\s+" + pattern) for pattern in (
    r"WARNING authentication_token_setup\.py:\d+ -- Token authentication is enabled",  # Ray starting
    r"INFO (authentication_token_setup|worker)\.py:\d+ -- ",  # Ray starting
    r"WARNING util\.py:\d+ -- Install gputil for GPU system monitoring\.$",  # Tune's trainables (local mode)
    r"WARNING sgd\.py:\d+ -- DeprecationWarning: `_get_slice_indices` has been deprecated",  # RLlib's PPO, training
))


def assert_one_line_error(run, *fragments: str) -> None:
    """Exit code 2 and stderr exactly one line, `error: ...` with each fragment (lines of NAMED_WARNINGS excepted)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = [line for line in run.stderr.splitlines()
             if line.strip() and not any(pattern.match(line) for pattern in NAMED_WARNINGS)]
    assert len(lines) == 1, f"stderr is not one line: {lines}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def experiment_with(**changes) -> dict:
    config_changes = changes.pop("config", {})
    env_config_changes = changes.pop("env_config", {})
    experiment = tiny_experiment(**changes)
    experiment["config"].update(config_changes)
    experiment["config"]["env_config"].update(env_config_changes)
    return {"bad": experiment}


BAD_EXPERIMENTS = {
    "unknown experiment key": (experiment_with(chekpoint_freq=1), ["bad.chekpoint_freq", "did you mean 'checkpoint_freq'"]),
    "unknown rllib key": (experiment_with(config={"lrr": 0.1}), ["bad.config.lrr", "did you mean 'lr'"]),
    "removed rllib key": (experiment_with(config={"horizon": 100}), ["bad.config.horizon", "env_config"]),
    "unknown algorithm": (experiment_with(run="PPPO"), ["unknown algorithm 'PPPO'", "did you mean 'PPO'"]),
    "unknown env": (experiment_with(env="vmass"), ["unknown env 'vmass'", "registered envs: vmas"]),
    "unknown scenario": (experiment_with(env_config={"scenario": "navigaton"}), ["unknown VMAS scenario 'navigaton'", "did you mean 'navigation'"]),
    "unused scenario key": (experiment_with(env_config={"n_agnts": 3}), ["n_agnts", "does not use"]),
    "missing model file": (experiment_with(config={"model": {"custom_model": "nosuch"}}), ["custom_model 'nosuch'", "model/ has: attention, convnet, fcnet, house_pointer, lstm"]),
    "model name too long for a file": (experiment_with(config={"model": {"custom_model": "m" * 300}}),
                                       [f"custom_model '{'m' * 40}...': not a file name in", "(File name too long)"]),
    "bad model kwargs": (experiment_with(config={"model": {"custom_model": "fcnet", "custom_model_config": {"hidden": [8]}}}),
                         ["custom_model_config.hidden", "did you mean 'hiddens'"]),
    "bad scheduler": (experiment_with(scheduler={"type": "ashaa"}), ["unknown scheduler 'ashaa'", "did you mean 'asha'"]),
    "policy matching no agent": (experiment_with(config={"multiagent": {"policies": {"red": {"agents": "red_*"}}}}),
                                 ["agent 'agent_0' matches no policy"]),
    "tensorflow": (experiment_with(config={"framework": "tf2"}), ["only 'torch' is installed"]),
    "experiment without a name": (tiny_experiment(), ["top-level key 'run' belongs inside an experiment"]),
    # values of the wrong type or out of range: the key path and what is expected, never a traceback
    "run of the wrong type": (experiment_with(run={"PPO": 1}), ["bad.run must be an RLlib algorithm name", "{'PPO': 1}"]),
    "env_config not a mapping": ({"bad": {**tiny_experiment(), "config": {**tiny_experiment()["config"], "env_config": 0.5}}},
                                 ["bad.config.env_config must be a mapping, got 0.5"]),
    "count of the wrong type": (experiment_with(config={"train_batch_size": [4000]}),
                                ["bad.config.train_batch_size must be a whole number >= 1", "got [4000]"]),
    "rate out of range": (experiment_with(config={"gamma": 1.5}), ["bad.config.gamma must be a number between 0 and 1"]),
    "empty grid_search": (experiment_with(config={"lr": {"grid_search": []}}),
                          ["bad.config.lr: grid_search takes a non-empty list of values"]),
    "policy agents of the wrong type": (experiment_with(config={"multiagent": {"policies": {"red": {"agents": 3}}}}),
                                        ["bad.config.multiagent.policies.red.agents must be an agent id", "got 3"]),
    "VMAS scenario assert": (experiment_with(env_config={"scenario": "balance", "n_agents": 1}),
                             ["bad.config.env_config: env 'vmas' refused these settings: AssertionError: "
                              "`assert self.n_agents > 1` failed (balance.py:"]),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPERIMENTS))
def test_bad_experiment_yaml(case, tmp_path, capsys):
    document, fragments = BAD_EXPERIMENTS[case]
    run = train_in_process(capsys, "-f", str(write_yaml(tmp_path / "bad.yaml", document)), "--local-dir", str(tmp_path))
    assert_one_line_error(run, *fragments)
    if case != "experiment without a name":  # every experiment's error starts with the file and the experiment
        assert run.stderr.startswith(f"error: {tmp_path / 'bad.yaml'}: bad"), run.stderr
    assert not (tmp_path / "bad").exists(), "a rejected experiment must not leave a results folder"


DEFAULT_EXPERIMENT = str(REPO / "config/vmas-navigation-ppo.yaml")


def test_missing_config_file(tmp_path):
    """The one case run as a separate process: exit code and stderr as the shell sees them."""
    assert_one_line_error(run_train("-f", str(tmp_path / "nope.yaml")), "nope.yaml does not exist")


def test_debug_shows_the_traceback(tmp_path):
    run = run_train("-f", str(tmp_path / "nope.yaml"), "--debug")
    assert run.returncode != 0 and "Traceback" in run.stderr and "ConfigError" in run.stderr


def test_yaml_syntax_error_says_where(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("exp:\n  run: PPO\n  config: {lr: [1, 2}\n")
    assert_one_line_error(train_in_process(capsys, "-f", str(path)), "broken.yaml is not valid YAML at line 3")


def test_restore_path_that_is_not_a_checkpoint(tmp_path, capsys):
    run = train_in_process(capsys, "-f", DEFAULT_EXPERIMENT, "--restore", str(tmp_path),
                           "--local-dir", str(tmp_path))
    assert_one_line_error(run, "is not an RLlib checkpoint")


def test_unwritable_local_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = train_in_process(capsys, "-f", DEFAULT_EXPERIMENT, "--local-dir", str(blocker / "results"))
    assert_one_line_error(run, "cannot be written")


def test_resume_without_an_experiment(tmp_path, capsys):
    run = train_in_process(capsys, "-f", DEFAULT_EXPERIMENT, "--resume", "--local-dir", str(tmp_path))
    assert_one_line_error(run, "--resume", "holds no Tune experiment")


def test_bad_stop_override(tmp_path, capsys):
    run = train_in_process(capsys, "-f", DEFAULT_EXPERIMENT, "--stop", "[1, 2]", "--local-dir",
                           str(tmp_path))
    assert_one_line_error(run, "--stop must be a mapping")


def test_bad_config_override(tmp_path, capsys):
    run = train_in_process(capsys, "-f", DEFAULT_EXPERIMENT, "--config", "{num_env_runners: [",
                           "--local-dir", str(tmp_path))
    assert_one_line_error(run, "--config must be a mapping")
    run = train_in_process(capsys, "-f", DEFAULT_EXPERIMENT, "--config", "{lrr: 0.1}", "--local-dir",
                           str(tmp_path))
    assert_one_line_error(run, "vmas-navigation-ppo.config.lrr is not an RLlib PPO setting")


def test_gpus_the_cluster_does_not_have_fail_fast(tmp_path, ray_temp_dir):
    """Checked once Ray is up (it knows the cluster's GPUs): the one-line error comes after Ray stopped."""
    path = write_yaml(tmp_path / "gpu.yaml", experiment_with(config={"num_gpus": 1}))
    tag = uuid.uuid4().hex
    run = run_script("train.py", "-f", str(path), "--local-dir", str(tmp_path), temp_dir=ray_temp_dir, timeout=120,
                     env={"MARLKIT_TEST_TAG": tag})
    assert_one_line_error(run, "needs 1 GPU(s)", "has 0")
    assert not wait_until_gone(tag), "Ray processes left running after the one-line error"


@pytest.mark.parametrize("config, message", [
    ({"run": "IMPALA", "config": {"num_gpus": 1}},
     "bad: a trial needs 1 GPU(s) (num_gpus, num_gpus_per_env_runner) but the Ray cluster has 0; set num_gpus: 0"),
    ({"config": {"num_env_runners": 2}},
     "bad: a trial needs 3 CPUs (1 + num_env_runners x num_cpus_per_env_runner) but the Ray cluster has 2; lower "
     "num_env_runners or add --ray-num-cpus"),
    ({"config": {"num_env_runners": 2, "num_cpus_per_env_runner": 0.5, "custom_resources_for_main_process": {"fpga": 1},
                 "custom_resources_per_env_runner": {"fpga": 1}}},
     "bad: a trial needs 3 of the custom resource 'fpga' (custom_resources_for_main_process, "
     "custom_resources_per_env_runner) but the Ray cluster has 1; change them or start Ray with it (ray start "
     "--resources)"),
    ({"config": {"custom_resources_per_worker": {"fpga": 2}, "num_env_runners": 1}},
     "bad: a trial needs 2 of the custom resource 'fpga' (custom_resources_per_env_runner) but the Ray cluster has 1"),
])
def test_resources_no_node_can_give_are_refused_in_one_line(tmp_path, config, message):
    """Ray up, Tune would keep such a trial PENDING forever ("No available node types can fulfill resource
    request"); train.py refuses it first (the whole CLI path: test_gpus_the_cluster_does_not_have_fail_fast)."""
    (experiment,) = load_experiments(write_yaml(tmp_path / "exp.yaml", experiment_with(**config)))
    with pytest.raises(ConfigError) as error:
        preflight.check_resources(experiment, {"CPU": 2.0, "GPU": 0.0, "fpga": 1.0}, local_mode=False)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_resources_are_counted_as_ray_places_the_trial(tmp_path):
    """--local-mode runs the env runners in the driver; a custom resource the cluster has is no problem."""
    (experiment,) = load_experiments(write_yaml(tmp_path / "exp.yaml", experiment_with(config={
        "num_env_runners": 4, "custom_resources_per_env_runner": {"fpga": 1}})))
    preflight.check_resources(experiment, {"CPU": 2.0, "GPU": 0.0, "fpga": 1.0}, local_mode=True)
    preflight.check_resources(experiment, {"CPU": 5.0, "fpga": 4.0}, local_mode=False)
    assert preflight.trial_demand(experiment.config, local_mode=False)["fpga"][0] == 4


def test_local_mode_stop_metric_that_results_do_not_have(tmp_path, ray_temp_dir):
    path = write_yaml(tmp_path / "exp.yaml", experiment_with(stop={"env_runners/episode_retrun_mean": 1}))
    run = run_train("-f", str(path), "--local-mode", "--local-dir", str(tmp_path), temp_dir=ray_temp_dir)
    assert_one_line_error(run, "bad.stop.env_runners/episode_retrun_mean is not a result metric",
                          "did you mean 'env_runners/episode_return_mean'")
