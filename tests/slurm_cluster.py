"""A throw-away Slurm cluster on this one machine, for testing the LLSC/ templates against the real Slurm.

Debian's slurm-wlm is built with multiple-slurmd support, so several `slurmd -N <name>` on one host act as
separate nodes (their own ports, spool folders and resources). Everything lives under one state folder: a private
munged (own key and socket, so a system munge is left alone), slurmctld and the slurmds on free ports. Every daemon
runs in the foreground as our child and is stopped by its PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


def unavailable_reason() -> str | None:
    """Why this machine cannot run the throw-away cluster, or None when it can."""
    if os.geteuid() != 0:
        return "starting slurmd and munged needs root"
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing); `make test` installs it with apt-get as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no 'munge' user (Debian's munge package creates it)"
    return None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class SlurmCluster:
    """Slurm with `nodes` fake nodes of `cpus` CPUs each, rooted at `base`.

    Args:
        base: state folder (config, spool, logs, munge key and socket); removed by `stop`.
        nodes: number of slurmd nodes, named n1, n2, ...
        cpus: CPUs each node offers (oversubscribing the real cores is fine for tests).

    Example:
        cluster = SlurmCluster(Path("/tmp/slurm-test"), nodes=2).start()
        subprocess.run(["sbatch", "--wait", "--wrap", "hostname"], env=cluster.env)
        cluster.stop()
    """

    def __init__(self, base: Path, nodes: int = 2, cpus: int = 2, memory_mb: int = 8000):
        self.base = base
        self.node_names = [f"n{i + 1}" for i in range(nodes)]
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.processes: list[subprocess.Popen] = []
        self.conf = base / "etc" / "slurm.conf"
        self.munge_socket = base / "munge" / "socket"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self, timeout: float = 30) -> "SlurmCluster":
        (self.base / "log").mkdir(parents=True)
        os.chmod(self.base, 0o755)  # munged (user munge) must reach its socket folder below
        try:
            self._start_munge()
            self._write_config()
            self._spawn("slurmctld", "-D", "-f", str(self.conf))
            for name in self.node_names:
                self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", name)
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        socket_dir, key_dir = self.base / "munge", self.base / "munge" / "key"
        key_dir.mkdir(parents=True)
        (key_dir / "munge.key").write_bytes(os.urandom(128))
        for path, mode in ((socket_dir, 0o755), (key_dir, 0o700), (key_dir / "munge.key", 0o600)):
            os.chown(path, munge.pw_uid, munge.pw_gid)
            os.chmod(path, mode)
        self._spawn(
            "setpriv", f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}", "--init-groups", "/usr/sbin/munged",
            "--foreground", f"--socket={self.munge_socket}", f"--key-file={key_dir / 'munge.key'}",
            f"--pid-file={socket_dir / 'munged.pid'}", f"--log-file={socket_dir / 'munged.log'}",
            f"--seed-file={socket_dir / 'munged.seed'}",
        )
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            if time.monotonic() > deadline or self.processes[-1].poll() is not None:
                raise RuntimeError(f"munged did not start: {(socket_dir / 'munged.log').read_text(errors='replace')}")
            time.sleep(0.1)

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        ctld_port, slurmd_port, *node_ports = free_ports(2 + len(self.node_names))
        for folder in ("etc", "state", "run"):
            (self.base / folder).mkdir(exist_ok=True)
        nodes = "\n".join(
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} State=UNKNOWN"
            for name, port in zip(self.node_names, node_ports)
        )
        base = self.base
        self.conf.write_text(f"""\
ClusterName=test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={base}/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={base}/state/ctld
SlurmdSpoolDir={base}/state/%n
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.%n.log
MinJobAge=300
KillWait=5
DefMemPerCPU=1000
{nodes}
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, *command: str) -> None:
        with open(self.base / "log" / f"{Path(command[0]).name}-{len(self.processes)}.out", "w") as log:
            self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split("\n")
            idle = {line.split()[0] for line in states if line.endswith(" idle")}
            if idle >= set(self.node_names):
                return
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted((self.base / "log").glob("*")))
                raise RuntimeError(f"Slurm nodes not idle (dead daemons: {dead}, sinfo: {states}):\n{logs}")
            time.sleep(0.3)

    def run(self, *command: str, check: bool = True, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def job_processes(self, job_id: str, step: str | None = None) -> set[tuple[int, str]]:
        """Every process Slurm runs for the job now: its slurmstepds and all their descendants, as (pid, start time).

        With `step` (a step id such as "1" or "batch"), only that step's slurmstepd and its descendants.
        """
        prefix = f"slurmstepd: [{job_id}." + (f"{step}]" if step is not None else "")
        parents, starts, roots = {}, {}, []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            pid = int(entry.name)
            parents[pid], starts[pid] = int(fields[1]), fields[19]
            if cmdline.startswith(prefix):
                roots.append(pid)
        found = set(roots)
        while True:
            children = {pid for pid, parent in parents.items() if parent in found} - found
            if not children:
                return {(pid, starts[pid]) for pid in found}
            found |= children

    def submit(self, command: list[str], cwd: Path) -> str:
        """Submits `sbatch ...` (the command as a user types it) and returns the job id."""
        assert command[0] == "sbatch", command
        return self.run("sbatch", "--parsable", *command[1:], cwd=cwd).stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout: float = 600) -> tuple[str, int]:
        """Waits until the job ended; returns its final state and exit code (`sbatch --wait` polls far slower)."""
        deadline = time.monotonic() + timeout
        while not (record := self.job_record(job_id)):
            if time.monotonic() > deadline:
                self.run("scancel", job_id, check=False)
                raise TimeoutError(f"Slurm job {job_id} still running after {timeout} s (cancelled)")
            time.sleep(0.5)
        return record["JobState"], int(record["ExitCode"].split(":")[0])

    def job_record(self, job_id: str) -> dict:
        """The job's line of the completion log (JobState, ExitCode, NodeList, ...), or {} while it runs.

        `job_id` is a job id or, for an array task, `<array job id>_<task id>` as squeue shows it.
        """
        log = self.base / "log" / "jobcomp.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            array_task = f"{fields.get('ArrayJobId')}_{fields.get('ArrayTaskId')}"
            if job_id in (fields.get("JobId"), array_task):
                return fields
        return {}

    def stop(self) -> None:
        """Cancels its jobs, stops every daemon it started (by PID, newest first) and removes the state folder."""
        if len(self.processes) > 1:  # slurmctld runs: no job (and no slurmstepd) may outlive the cluster
            self.run("scancel", "--user", "root", check=False)
            deadline = time.monotonic() + 60
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.base, ignore_errors=True)


def command_line(pid: int) -> str:
    """The process's command line, arguments joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def still_running(processes: set[tuple[int, str]]) -> list[int]:
    """The PIDs of `processes` (from `job_processes`) that still exist (same PID and start time)."""
    alive = []
    for pid, start in processes:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[19] == start and fields[0] != "Z":
            alive.append(pid)
    return alive
