"""The benchmark suite's results: `benchmark_results.json` (written after every finished run), the marl-eval JSON and
plots derived from it, the summary table, and the speed comparison of several result folders (machines)."""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from envs.errors import ConfigError
from marlkit.files import write_json

RESULTS_FILE = "benchmark_results.json"
MARL_EVAL_FILE = "marl_eval.json"
DEFAULT_SCORE = "env_runners/episode_return_mean"

if TYPE_CHECKING:
    from marlkit.benchmark import Suite


def machine_label(machine: dict) -> str:
    gpus = machine.get("gpus") or "no GPU"
    return f"{machine.get('host', '?')}: {machine.get('cpu_model', '?')} x{machine.get('cpu_cores', '?')}, {gpus}"


def check_output_dir(output_dir: Path, suite: Suite, force: bool) -> None:
    """ConfigError when `output_dir` holds results of another suite definition (unless `force`)."""
    path = output_dir / RESULTS_FILE
    if not path.exists() or force:
        return
    try:
        previous = json.loads(path.read_text()).get("suite") or {}
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{path} is not a benchmark results file; choose another --output-dir, or --force") from None
    differences = [key for key, value in asdict(suite).items() if previous.get(key) != value]
    if differences:
        raise ConfigError(f"--output-dir {output_dir} holds results of a different suite ({', '.join(differences)} "
                          f"differ); choose another --output-dir, or --force to discard them")


class Results:
    """benchmark_results.json of an output folder, and everything derived from it (marl-eval JSON, plots)."""

    def __init__(self, output_dir: Path, suite: Suite):
        self.output_dir = output_dir
        self.suite = suite
        self.path = output_dir / RESULTS_FILE
        self.document = {
            "suite": asdict(suite),
            "start_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "max_timesteps": suite.timesteps,
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "runs": {},
        }

    def load_or_start(self, force: bool) -> None:
        """Continues the folder's results when it holds this suite; refuses another suite unless `force`."""
        check_output_dir(self.output_dir, self.suite, force)
        if self.path.exists():
            previous = json.loads(self.path.read_text())
            if previous.get("suite") == asdict(self.suite):
                self.document["start_time"] = previous["start_time"]
                self.document["runs"] = previous["runs"]
            else:
                shutil.rmtree(self.output_dir / "tune", ignore_errors=True)  # --force: the other suite's runs go
                for plot in ("learning_curves.png", "final_returns.png", "speed.png"):
                    (self.output_dir / plot).unlink(missing_ok=True)
        for run in self.suite.runs():
            self.document["runs"].setdefault(run.run_id, {
                "number": run.number, "total": len(self.suite.runs()), "arch": run.arch, "level": run.level,
                "seed": run.seed, "status": "pending", "command": self.suite.train_command(run),
            })
        self.save()

    def finished(self) -> list[str]:
        return [run_id for run_id, record in self.document["runs"].items() if record["status"] == "finished"]

    def update(self, run_id: str, **fields) -> None:
        self.document["runs"][run_id].update(fields)
        self.save()

    def save(self) -> None:
        from marlkit import plots

        write_json(self.path, self.document)
        write_json(self.output_dir / MARL_EVAL_FILE, marl_eval(self.document))
        plots.suite_plots(self.document, self.output_dir)


def training_record(rows: list[dict], score: str) -> dict:
    """Per-run fields from its result rows: final metrics, the learning curve, speed, time split and machine."""
    from ray.tune.utils import flatten_dict

    flat = [flatten_dict(row, delimiter="/") for row in rows]
    last = flat[-1]
    speeds = [r["env_steps_per_s"] for r in flat if r.get("env_steps_per_s")]
    sample = [r["timers/sample_time_ms"] for r in flat if r.get("timers/sample_time_ms") is not None]
    learn = [r["timers/learn_time_ms"] for r in flat if r.get("timers/learn_time_ms") is not None]
    evaluation = rows[-1].get("evaluation_returns")
    return {
        "train": {
            "time_s": last.get("time_total_s"),
            "iterations": last.get("training_iteration"),
            "env_steps": last.get("num_env_steps_sampled_lifetime"),
            "score_metric": score,
            "final_score": last.get(score),
            "episode_return_mean": last.get(DEFAULT_SCORE),
            "curriculum_stage": last.get("curriculum_stage"),
            "curve": [[r.get("num_env_steps_sampled_lifetime"), r.get(score)] for r in flat],
        },
        "evaluation": {"returns": evaluation, "mean": statistics.fmean(evaluation) if evaluation else None},
        "speed": {
            "env_steps_per_s": statistics.median(speeds) if speeds else None,
            "sample_time_ms": statistics.fmean(sample) if sample else None,
            "learn_time_ms": statistics.fmean(learn) if learn else None,
        },
        "machine": rows[-1].get("machine"),
        "placement": rows[-1].get("placement"),
    }


def marl_eval(document: dict) -> dict:
    """The results in marl-eval's raw-data shape: env -> task -> algorithm -> seed_<s> -> step_<i> / absolute_metrics.

    Each `step_<i>` is one training iteration: `step_count` (env steps) and `return` ([the level's score]);
    `absolute_metrics.return` holds the evaluation episodes' scores.
    """
    data: dict = {}
    for record in document["runs"].values():
        if record["status"] != "finished":
            continue
        env = record.get("env", "unknown")
        steps = {
            f"step_{index}": {"step_count": count, "return": [value]}
            for index, (count, value) in enumerate(record["train"]["curve"]) if value is not None
        }
        steps["absolute_metrics"] = {"return": record["evaluation"]["returns"] or []}
        data.setdefault(env, {}).setdefault(record["level"], {}).setdefault(record["arch"], {})[f"seed_{record['seed']}"] = steps
    return data


def table(document: dict) -> str:
    """One line per (level, architecture): seeds finished, mean final training score, evaluation mean, env steps/s."""
    groups: dict[tuple, list] = {}
    for record in document["runs"].values():
        groups.setdefault((record["level"], record["arch"]), []).append(record)
    lines = [f"{'level':16} {'architecture':14} {'seeds':>5} {'train score':>12} {'eval return':>12} {'env steps/s':>12}"]
    for (level, arch), records in sorted(groups.items()):
        done = [r for r in records if r["status"] == "finished"]

        def mean(values):
            values = [v for v in values if v is not None]
            return f"{statistics.fmean(values):12.4g}" if values else f"{'-':>12}"

        lines.append(
            f"{level:16} {arch:14} {len(done):>2}/{len(records):<2} {mean(r['train']['final_score'] for r in done)} "
            f"{mean(r['evaluation']['mean'] for r in done)} {mean(r['speed']['env_steps_per_s'] for r in done)}"
        )
    return "\n".join(lines)


def compare_speed(folders: list[Path], plot_path: Path) -> str:
    """A table (and plot) of each (level, architecture)'s median env steps/s in several result folders, e.g. the
    same suite run on different machines; ratios are against the first folder."""
    from marlkit import plots

    documents, machines = [], []
    for folder in folders:
        path = folder / RESULTS_FILE
        if not path.is_file():
            raise ConfigError(f"--compare-speed: {folder} holds no {RESULTS_FILE}; pass benchmark output folders")
        document = json.loads(path.read_text())
        finished = [r for r in document["runs"].values() if r["status"] == "finished"]
        if not finished:
            raise ConfigError(f"--compare-speed: {folder} has no finished run")
        documents.append(document)
        machines.append(f"{folder.name} ({machine_label(finished[0].get('machine') or {})})")
    keys = sorted({(r["level"], r["arch"]) for d in documents for r in d["runs"].values() if r["status"] == "finished"})
    rows = []
    for level, arch in keys:
        speeds = []
        for document in documents:
            values = [r["speed"]["env_steps_per_s"] for r in document["runs"].values()
                      if r["status"] == "finished" and (r["level"], r["arch"]) == (level, arch)
                      and r["speed"]["env_steps_per_s"] is not None]
            speeds.append(statistics.median(values) if values else None)
        rows.append((f"{level} {arch}", speeds))
    lines = ["machines:", *(f"  [{i}] {m}" for i, m in enumerate(machines)), "",
             f"{'level architecture':32}" + "".join(f"{f'[{i}] env steps/s':>20}" for i in range(len(machines)))]
    for label, speeds in rows:
        cells = []
        for speed in speeds:
            if speed is None:
                cells.append(f"{'-':>20}")
            elif speeds[0]:
                cells.append(f"{f'{speed:,.0f} ({speed / speeds[0]:.2f}x)':>20}")
            else:
                cells.append(f"{f'{speed:,.0f}':>20}")
        lines.append(f"{label:32}" + "".join(cells))
    plots.speed_comparison(rows, machines, plot_path)
    lines.append(f"\nplot: {plot_path}")
    return "\n".join(lines)
