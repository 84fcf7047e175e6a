"""The LLSC/ templates on a real Slurm: two slurmd nodes on this machine, the sbatch commands of docs/slurm.md, real Ray.

Needs root and Debian's slurm-wlm + munge (`make test` installs them); skipped with the reason otherwise,
except under CI (CI=true), where that fails.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from conftest import (FLAKY_MODEL, REPO, assert_resumed, progress_iterations, read_results, require_system_part, tiny_experiment,
                      trial_dirs, write_yaml)
from slurm_cluster import SlurmCluster, command_line, still_running, unavailable_reason


@pytest.fixture(autouse=True)
def throw_away_slurm_possible():
    reason = unavailable_reason()
    require_system_part(reason and f"no throw-away Slurm: {reason}")

DOCS_RESULTS = "results/slurm"  # the docs' --local-dir prefix; the tests write below their own folder instead


def documented_command(script: str) -> list[str]:
    """The first sbatch line of docs/slurm.md that runs `script`, as argument list."""
    page = REPO.joinpath("docs", "slurm.md").read_text()
    lines = [line.strip() for line in page.splitlines() if line.strip().startswith("sbatch ") and script in line]
    return shlex.split(lines[0])


def local_paths(command: list[str], results: Path) -> list[str]:
    """The command with the docs' results folder moved to `results` (globs expanded there)."""
    moved = []
    for arg in command:
        arg = arg.replace(DOCS_RESULTS, str(results))
        if "*" in arg:
            (arg,) = glob.glob(arg)
        moved.append(arg)
    return moved


@pytest.fixture(scope="module")
def slurm():
    base = Path(f"/tmp/slurm-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths live below it
    cluster = SlurmCluster(base, nodes=2, cpus=2)
    cluster.env["MARL_RAY_TMPDIR"] = str(base / "ray")
    cluster.start()
    yield cluster
    cluster.stop()
    assert not base.exists()


@pytest.fixture(scope="module")
def two_node_run(slurm, tmp_path_factory):
    """The two-node training command of docs/slurm.md, run once for the tests that read its results."""
    folder = tmp_path_factory.mktemp("slurm")
    command = local_paths(documented_command("LLSC/train_template.sh"), folder / "results")
    output = folder / "job.out"
    job = slurm.submit([command[0], f"--output={output}", *command[1:]], cwd=REPO)
    state, exit_code = slurm.wait(job)
    print(output.read_text()[-6000:])
    return job, state, exit_code, output.read_text(), folder / "results"


def printed_nodes(output: str) -> list[str]:
    return re.findall(r"^  node \S+ \(\S+, id ([0-9a-f]{8})\): 2 CPUs, 0 GPUs$", output, re.MULTILINE)


def test_training_spans_both_nodes(slurm, two_node_run):
    job, state, exit_code, output, results = two_node_run
    assert (state, exit_code) == ("COMPLETED", 0), output[-3000:]
    assert slurm.job_record(job)["NodeList"] == "n[1-2]"
    assert "Ray head on n1" in output and "Ray worker on n2: 2 CPUs, 0 GPUs" in output
    assert "2 node(s), 4 CPUs, 0 GPUs" in output
    nodes = printed_nodes(output)
    assert len(set(nodes)) == 2, output[-3000:]
    (trial,) = trial_dirs(results / "vmas-navigation-ppo")
    rows = read_results(trial)
    assert [r["training_iteration"] for r in rows] == [1, 2]
    placement = rows[-1]["placement"]
    runners = placement["env_runners"].split(",")
    assert len(runners) == 3 and set(runners) == set(nodes), placement  # env runners ran on both nodes
    assert placement["learner"] in nodes
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == ["checkpoint_000000", "checkpoint_000001"]
    assert (trial / "checkpoint_000001" / "algorithm_state.pkl").exists()
    assert f"Ray cluster of job {job} stopped" in output
    assert not list((slurm.base / "ray").glob(f"ray-{job}-*")), "a Ray session folder was left behind"


def test_rollout_template_evaluates_the_checkpoint(slurm, two_node_run):
    *_, results = two_node_run
    command = local_paths(documented_command("LLSC/rollout_template.sh"), results)
    output = results.parent / "rollout.out"
    state, exit_code = slurm.wait(slurm.submit([command[0], f"--output={output}", *command[1:]], cwd=REPO))
    print(output.read_text()[-3000:])
    assert (state, exit_code) == ("COMPLETED", 0)
    with open(results / "episodes.pkl", "rb") as file:
        episodes = pickle.load(file)
    assert len(episodes) == 2 and all(0 < len(steps) <= 100 for steps in episodes)  # max_steps: 100


def test_array_template_runs_one_experiment_per_task(slurm, tmp_path):
    command = documented_command("LLSC/array_template.sh")
    command = [arg.replace("results/slurm-sweep", str(tmp_path / "sweep")) for arg in command]
    output = tmp_path / "array-%a.out"
    job = slurm.submit([command[0], f"--output={output}", *command[1:]], cwd=REPO)
    # Both tasks run at once, one per node: two Ray clusters of two jobs on one host, each with its own ports.
    states = [slurm.wait(f"{job}_{task}") for task in (0, 1)]
    logs = [out.read_text() if (out := tmp_path / f"array-{task}.out").exists() else "" for task in (0, 1)]
    assert states == [("COMPLETED", 0), ("COMPLETED", 0)], "\n".join(log[-3000:] for log in logs)
    for seed in (0, 1):
        (trial,) = trial_dirs(tmp_path / "sweep" / f"vmas-navigation-ppo-seed{seed}" / "vmas-navigation-ppo")
        assert json.loads((trial / "params.json").read_text())["seed"] == seed
        assert [r["training_iteration"] for r in read_results(trial)] == [1, 2]
    assert "array task 0 of 2: config/vmas-navigation-ppo.yaml, seed 0" in logs[0]
    assert "array task 1 of 2: config/vmas-navigation-ppo.yaml, seed 1" in logs[1]
    assert len({re.search(r"Ray head on \S+ at (\S+);", log).group(1) for log in logs}) == 2


def test_array_task_that_ends_first_leaves_the_others_running(slurm, tmp_path):
    """The last task of an array runs under the array's own job id; when it ends first, its teardown must stop its
    own Ray cluster, not signal the whole array."""
    # the long task outlasts the short one by far more than the short one's teardown (25 iterations ended 4 s after it)
    long = write_yaml(tmp_path / "long.yaml", {"long": tiny_experiment(stop={"training_iteration": 100})})
    short = write_yaml(tmp_path / "short.yaml", {"short": tiny_experiment(stop={"training_iteration": 1})})
    job = slurm.submit(["sbatch", "--array=0-1", "-c", "2", f"--output={tmp_path}/array-%a.out", "LLSC/array_template.sh",
                        "--configs", f"{long},{short}", "--seeds", "1", "--local-dir", str(tmp_path / "sweep")], cwd=REPO)
    assert slurm.wait(f"{job}_1") == ("COMPLETED", 0)
    assert slurm.job_record(f"{job}_1")["JobId"] == job  # the short task held the array's id
    assert not slurm.job_record(f"{job}_0"), "the long task ended together with the short one"
    assert slurm.wait(f"{job}_0") == ("COMPLETED", 0), (tmp_path / "array-0.out").read_text()[-3000:]
    (trial,) = trial_dirs(tmp_path / "sweep" / "long-seed0" / "long")
    assert len(read_results(trial)) == 100


def test_scancel_leaves_no_ray_process(slurm, tmp_path):
    command = local_paths(documented_command("LLSC/train_template.sh"), tmp_path)
    command = [arg if not arg.startswith("{training_iteration") else "{training_iteration: 100000}" for arg in command]
    output = tmp_path / "job.out"
    job = slurm.submit([command[0], f"--output={output}", *command[1:]], cwd=REPO)
    deadline = time.monotonic() + 300
    while "placement:" not in (output.read_text() if output.exists() else ""):  # the trial is training
        assert time.monotonic() < deadline and not slurm.job_record(job), output.read_text()[-3000:]
        time.sleep(0.5)
    processes = slurm.job_processes(job)
    assert len(processes) > 10  # slurmstepds, sruns, both raylets, the GCS, the trial, its env runners, train.py
    slurm.run("scancel", job)
    assert slurm.wait(job, timeout=120)[0] == "CANCELLED"
    deadline = time.monotonic() + 30
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not still_running(processes), "processes of the cancelled job are still running"
    for folder in (slurm.base / "ray").glob(f"ray-{job}-*"):  # a node killed before its cleanup leaves its folder
        shutil.rmtree(folder) if folder.is_dir() else folder.unlink()


def checkpoint_iterations(trial: Path) -> list[int]:
    """The training iterations of the trial's complete checkpoints (checkpoint_N is iteration N + 1 here)."""
    return sorted(int(p.name.split("_")[1]) + 1 for p in trial.glob("checkpoint_*") if (p / "algorithm_state.pkl").exists())


@pytest.mark.parametrize("trial_node", ["worker", "head"])
def test_lost_worker_node_ends_the_job_resumably(trial_node, slurm, tmp_path):
    """Issue 17: a worker node lost mid-job. Where the trial itself (its Algorithm actor) survives (on the head node),
    RLlib drops the lost env runners and training goes on to the end; where it ran on the lost node, the trial errors
    and the job fails with train.py's exit code 1, and the same sbatch line with --resume continues from the last
    checkpoint. Either way the job ends in bounded time and leaves no process behind. The trial is placed on the node
    of `trial_node` by a custom resource only that node has (MARL_RAY_<ROLE>_RESOURCES), so each branch runs every
    time."""
    stop = 8
    # 1 + 3 env runners on 2 x 2 CPUs: the trial spans both nodes, so the lost node held part of it.
    config = write_yaml(tmp_path / "lost.yaml", {"lost": tiny_experiment(
        stop={"training_iteration": stop}, checkpoint_freq=1,
        config={"num_env_runners": 3, "custom_resources_for_main_process": {"trial_slot": 1}})})
    placement = f"--export=ALL,MARL_RAY_{trial_node.upper()}_RESOURCES={{\"trial_slot\": 1}}"
    submit = ["sbatch", "-N", "2", "-c", "2", placement, "LLSC/train_template.sh", "-f", str(config),
              "--local-dir", str(tmp_path / "results")]
    output = tmp_path / "job.out"
    job = slurm.submit([*submit[:1], f"--output={output}", *submit[1:]], cwd=REPO)
    deadline = time.monotonic() + 300
    # The trainable saves its checkpoints straight into the trial folder; the driver's files there (params.json,
    # progress.csv) are copies Tune refreshes only now and then, so the checkpoints tell how far training got.
    while not (trials := {p.parent for p in (tmp_path / "results").glob("lost/*/checkpoint_*")}) \
            or len(checkpoint_iterations(next(iter(trials)))) < 2 or "(PPO pid=" not in output.read_text():
        assert time.monotonic() < deadline and not slurm.job_record(job), output.read_text()[-3000:]
        time.sleep(0.2)
    (trial,) = trials
    processes = slurm.job_processes(job)
    # The worker node's `srun ... ray_node.sh worker` step: its slurmstepd and everything below it (ray_node.sh,
    # `ray start --block`, the raylet, the node's Ray workers: env runners, and here perhaps the trial itself).
    steps = {line.split("[", 1)[1].rstrip("]").split(".", 1)[1] for pid, _ in processes
             if (line := command_line(pid)).startswith(f"slurmstepd: [{job}.")}
    (worker_step,) = [step for step in steps if any(  # (the batch step holds the `srun` that started it)
        "ray_node.sh worker" in (line := command_line(pid)) and not line.startswith("srun ")
        for pid, _ in slurm.job_processes(job, step))]
    lost = [pid for pid, _ in slurm.job_processes(job, worker_step) if not command_line(pid).startswith("slurmstepd")]
    assert any("raylet" in command_line(pid) for pid in lost), [command_line(pid) for pid in lost]
    trial_pid = int(re.search(r"\(PPO pid=(\d+)\)", output.read_text()).group(1))
    assert (trial_pid in lost) == (trial_node == "worker"), f"the trial was not placed on the {trial_node} node"
    # A lost node (power cut, kernel panic, the OOM killer taking the raylet) gives its Ray processes no signal to
    # handle, no drain and no cleanup: all of them stop at once (SIGSTOP first, so that none sees the others die),
    # then SIGKILL. Slurm's daemons stay up: with a real node gone Slurm itself ends the whole job (NODE_FAIL) after
    # SlurmdTimeout (300 s by default) unless it was submitted with --no-kill; what is tested here is how Ray, Tune,
    # RLlib and LLSC/ray_cluster.sh react before that.
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in lost:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    killed_at, before = time.monotonic(), max(checkpoint_iterations(trial))
    state, exit_code = slurm.wait(job, timeout=300)
    seconds = time.monotonic() - killed_at
    text = output.read_text()
    print(text[-3000:])
    after = progress_iterations(trial)
    print(f"lost node (trial on the {trial_node}): killed after iteration {before}; "
          f"job {state} {exit_code} {seconds:.1f} s after the kill, at iteration {max(after)}; progress.csv {after}")
    assert before < stop, "the job trained to the end before the node was lost"
    # Bounded: Ray notices the lost node within its health-check timeout (about 30 s here), the trial then errors or
    # goes on without the lost env runners, and the cluster stops within MARL_RAY_STOP_TIMEOUT (30 s).
    assert seconds < 150, f"the job ended {seconds:.0f} s after the node was lost"
    deadline = time.monotonic() + 30
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not still_running(processes), [command_line(pid) for pid in still_running(processes)]
    assert f"Ray cluster of job {job} stopped" in text
    for folder in (slurm.base / "ray").glob(f"ray-{job}-*"):  # the lost node could not remove its session folder
        shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    if trial_node == "head":  # training went on with the env runners left
        assert (state, exit_code) == ("COMPLETED", 0), text[-3000:]
        assert after == list(range(1, stop + 1)), after
        rows = read_results(trial)
        assert len({r["pid"] for r in rows}) == 1, "the trial was restarted"
        return
    assert (state, exit_code) == ("FAILED", 1), text[-3000:]
    # The same sbatch line with --resume (on two nodes again, as after resubmitting: the trial needs 4 CPUs)
    # continues from the last checkpoint, not from iteration 1.
    checkpointed = max(checkpoint_iterations(trial))
    first_pid = next((r["pid"] for r in read_results(trial)), None)
    resumed = tmp_path / "resume.out"
    job = slurm.submit([*submit[:1], f"--output={resumed}", *submit[1:], "--resume"], cwd=REPO)
    assert slurm.wait(job, timeout=300) == ("COMPLETED", 0), resumed.read_text()[-3000:]
    iterations = progress_iterations(trial)
    print(f"resumed from checkpoint {checkpointed}, {max(after) - checkpointed} iteration(s) lost: {iterations}")
    assert checkpointed >= before and iterations == list(range(1, stop + 1)), iterations
    assert_resumed(read_results(trial), checkpointed, first_pid)


def test_bad_config_fails_the_job(slurm, tmp_path):
    output = tmp_path / "job.out"
    job = slurm.submit(["sbatch", "-N", "1", "-c", "2", f"--output={output}", "LLSC/train_template.sh",
                        "-f", "config/no-such-experiment.yaml"], cwd=REPO)
    assert slurm.wait(job) == ("FAILED", 2)
    text = output.read_text()
    assert "error: config file config/no-such-experiment.yaml does not exist" in text
    assert f"Ray cluster of job {job} stopped" in text
    assert not list((slurm.base / "ray").glob(f"ray-{job}-*"))


def test_failing_trial_fails_the_job(slurm, tmp_path):
    """A trial that crashes on a node (its model fails to build): train.py's exit code 1 becomes the job's."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "flaky.py").write_text(FLAKY_MODEL)
    (tmp_path / "fail").touch()
    config = write_yaml(tmp_path / "crash.yaml", {"crash": tiny_experiment(config={"model": {"custom_model": "flaky"}})})
    output = tmp_path / "job.out"
    job = slurm.submit(["sbatch", "-N", "1", "-c", "2", f"--output={output}",
                        f"--export=ALL,MARLKIT_MODEL_DIR={tmp_path / 'models'},FLAKY_MARKER={tmp_path / 'fail'}",
                        "LLSC/train_template.sh", "-f", str(config), "--local-dir", str(tmp_path / "results")], cwd=REPO)
    assert slurm.wait(job) == ("FAILED", 1), output.read_text()[-3000:]
    text = output.read_text()
    assert re.search(r"^trial \S+crash\S+ failed: .*flaky model: the marker file is there", text, re.MULTILINE), text[-3000:]
    assert f"Ray cluster of job {job} stopped" in text
    assert not list((slurm.base / "ray").glob(f"ray-{job}-*"))


def test_benchmark_template_spreads_a_suite_over_the_nodes(slurm, tmp_path):
    command = documented_command("LLSC/benchmark_template.sh")
    command = [arg.replace("results/slurm-bench", str(tmp_path / "bench")) for arg in command]
    output = tmp_path / "job.out"
    job = slurm.submit([command[0], f"--output={output}", *command[1:]], cwd=REPO)
    state, exit_code = slurm.wait(job)
    text = output.read_text()
    print(text[-3000:])
    assert (state, exit_code) == ("COMPLETED", 0)
    runs = json.loads((tmp_path / "bench" / "benchmark_results.json").read_text())["runs"]
    assert [r["status"] for r in runs.values()] == ["finished", "finished"]
    assert {r["machine"]["ray_nodes"] for r in runs.values()} == {2}
    used = {node for r in runs.values() for node in [r["placement"]["learner"], *r["placement"]["env_runners"].split(",")]}
    assert used == set(printed_nodes(text))  # the two runs at once filled both nodes
