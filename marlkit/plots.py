"""PNG plots of benchmark results (matplotlib, no display needed): learning curves with confidence bands over
seeds, final evaluation return per architecture and level, training speed, and speed across machines."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402

CURVE_POINTS = 50


def _mean_and_band(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation; 0 for one value)."""
    mean = statistics.fmean(values)
    band = 1.96 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, band


def _finished(document: dict) -> list[dict]:
    return [r for r in document["runs"].values() if r["status"] == "finished"]


def _save(figure, path: Path) -> None:
    from marlkit.files import atomic_write

    atomic_write(path, lambda staging: figure.savefig(staging, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)


def learning_curves(document: dict, path: Path) -> None:
    """One panel per level: each architecture's score over env steps, mean over seeds with a 95% band."""
    runs = _finished(document)
    levels = sorted({r["level"] for r in runs})
    figure, axes = plt.subplots(1, max(len(levels), 1), figsize=(5 * max(len(levels), 1), 3.6), squeeze=False)
    for axis, level in zip(axes[0], levels):
        for arch in sorted({r["arch"] for r in runs if r["level"] == level}):
            curves = [[(s, v) for s, v in r["train"]["curve"] if s is not None and v is not None]
                      for r in runs if r["level"] == level and r["arch"] == arch]
            curves = [c for c in curves if c]
            if not curves:
                continue
            end = min(c[-1][0] for c in curves)
            grid = np.linspace(min(c[0][0] for c in curves), end, CURVE_POINTS)
            stacked = np.array([np.interp(grid, *zip(*c)) for c in curves])
            mean = stacked.mean(axis=0)
            band = 1.96 * stacked.std(axis=0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 else 0 * mean
            axis.plot(grid, mean, label=f"{arch} ({len(curves)} seeds)")
            axis.fill_between(grid, mean - band, mean + band, alpha=0.25)
        axis.set_title(level)
        axis.set_xlabel("env steps")
        axis.set_ylabel(runs[0]["train"]["score_metric"].split("/")[-1] if runs else "score")
        if axis.get_legend_handles_labels()[0]:  # a level whose runs ended no episode yet has no curve
            axis.legend(fontsize=8)
    _save(figure, path)


def _bars(document: dict, path: Path, value, ylabel: str, title: str) -> None:
    """Grouped bars: levels on the x axis, one bar per architecture (mean over seeds, 95% interval)."""
    runs = _finished(document)
    levels = sorted({r["level"] for r in runs})
    archs = sorted({r["arch"] for r in runs})
    figure, axis = plt.subplots(figsize=(max(4, 1.8 * len(levels) * max(len(archs), 1)), 3.6))
    width = 0.8 / max(len(archs), 1)
    for index, arch in enumerate(archs):
        means, bands = [], []
        for level in levels:
            values = [v for r in runs if r["level"] == level and r["arch"] == arch if (v := value(r)) is not None]
            mean, band = _mean_and_band(values) if values else (np.nan, 0.0)
            means.append(mean)
            bands.append(band)
        axis.bar(np.arange(len(levels)) + index * width, means, width, yerr=bands, capsize=3, label=arch)
    axis.set_xticks(np.arange(len(levels)) + width * (len(archs) - 1) / 2, levels)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    _save(figure, path)


def suite_plots(document: dict, output_dir: Path) -> None:
    """learning_curves.png, final_returns.png and speed.png for the finished runs (none yet: no plots)."""
    if not _finished(document):
        return
    learning_curves(document, output_dir / "learning_curves.png")
    _bars(document, output_dir / "final_returns.png", lambda r: r["evaluation"]["mean"],
          "evaluation return (score)", "final return, deterministic evaluation")
    _bars(document, output_dir / "speed.png", lambda r: r["speed"]["env_steps_per_s"],
          "env steps/s (median over iterations)", "training speed")


def speed_comparison(rows: list[tuple[str, list[float | None]]], machines: list[str], path: Path) -> None:
    """Grouped bars of env steps/s: one group per (level, architecture), one bar per machine."""
    figure, axis = plt.subplots(figsize=(max(5, 1.5 * len(rows) * len(machines)), 3.8))
    width = 0.8 / len(machines)
    for index, machine in enumerate(machines):
        values = [speeds[index] if speeds[index] is not None else np.nan for _, speeds in rows]
        axis.bar(np.arange(len(rows)) + index * width, values, width, label=machine)
    axis.set_xticks(np.arange(len(rows)) + width * (len(machines) - 1) / 2, [label for label, _ in rows],
                    rotation=20, ha="right")
    axis.set_ylabel("env steps/s")
    axis.set_title("training speed across machines")
    axis.legend(fontsize=7)
    _save(figure, path)
