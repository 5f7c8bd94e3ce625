"""Figures and tables of an evaluation report (the dict ``scripts/evaluate.py`` writes as JSON).

Everything is computed from the report alone, so a figure or CSV can be made
again from a saved JSON file::

    report = json.loads(Path("eval.json").read_text())
    save_figure(report, Path("eval.png"))
    write_csv(report, Path("eval.csv"))

The figure's artists carry ``gid`` labels (``by_gradient_steps/mean``,
``by_episodes/context/ci95``, ``task_parameter/step1``, ...) so tests and users
can find the data each one shows.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

if TYPE_CHECKING:
    from metarl.results import Series

CSV_COLUMNS = ("curve", "mode", "x", "task_index", "stat", "value")
"""Columns of :func:`csv_rows` (long format, one number per row)."""

STATS = ("mean", "ci95_low", "ci95_high")
"""Summary rows of each curve point (``task_index`` empty)."""

SCALE_FIELDS = {"mass_scale": "mass multiplier", "friction_scale": "friction multiplier"}
"""Task fields of the one-multiplier dynamics families, for reports without ``task_parameter``."""

LOG_TICKS = (0.1, 0.2, 0.25, 0.33, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
"""Tick marks of a multiplier axis (log scale)."""


# --------------------------------------------------------------------- tables
def curves(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(curve, mode, curve dict)`` of every curve in ``report``: an evaluation report's
    (mode ``""`` for gradient steps) or a baseline report's ``by_budget`` (mode: its kind)."""
    out = [("by_gradient_steps", "", report["by_gradient_steps"])] if "by_gradient_steps" in report else []
    out += [("by_episodes", mode, c) for mode, c in report.get("by_episodes", {}).items()]
    if "by_budget" in report:
        out.append(("by_budget", report["kind"], report["by_budget"]))
    return out


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's curves in long format: one row per (curve, mode, x, task) value,
    then rows with ``stat`` mean, ci95_low, ci95_high (``task_index`` empty) per point.

    Columns: :data:`CSV_COLUMNS`. ``curve`` is ``by_gradient_steps`` (``x``: inner
    steps, ``mode`` empty), ``by_episodes`` (``x``: episode k, ``mode``: context,
    gradient or both) or, for a baseline, ``by_budget`` (``x``: multiple of the
    adaptation budget, ``mode``: scratch, multitask or oracle); per-task rows
    have ``stat`` ``task``.
    """
    rows: list[dict[str, Any]] = []
    for name, mode, c in curves(report):
        for i, x in enumerate(c["x"]):
            for task, value in enumerate(c["per_task"][i]):
                rows.append({"curve": name, "mode": mode, "x": x, "task_index": task, "stat": "task", "value": value})
            for stat in STATS:
                rows.append({"curve": name, "mode": mode, "x": x, "task_index": "", "stat": stat, "value": c[stat][i]})
    return rows


def write_csv(report: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    """Write :func:`csv_rows` of ``report`` (or of each of a list of reports) to ``path``
    (with a header line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for one in report if isinstance(report, list) else [report]:
            writer.writerows(csv_rows(one))


# --------------------------------------------------------------------- figure
def task_parameter(report: dict[str, Any]) -> dict[str, Any] | None:
    """The dynamics parameter of each task, or None for other families.

    ``report["task_parameter"]`` when present (``scripts/evaluate.py`` fills it
    from the family: ``name``, ``label``, ``values`` per task, ``train_range``,
    ``log_scale``); else read from the tasks' ``mass_scale``/``friction_scale``
    (no training range known then).
    """
    if report.get("task_parameter"):
        return dict(report["task_parameter"])
    tasks = report.get("tasks") or []
    for field, label in SCALE_FIELDS.items():
        if tasks and all(field in t for t in tasks):
            values = [float(t[field]) for t in tasks]
            return {"name": field, "label": label, "values": values, "train_range": None, "log_scale": True}
    return None


def _band(ax: Axes, x: list[float], c: dict[str, Any], color: Any, gid: str) -> None:
    low, high = np.asarray(c["ci95_low"], dtype=float), np.asarray(c["ci95_high"], dtype=float)
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
        ax.fill_between(x, low, high, color=color, alpha=0.25, linewidth=0, gid=gid)


def _gradient_panel(ax: Axes, c: dict[str, Any]) -> None:
    x, per_task = c["x"], np.asarray(c["per_task"], dtype=float)
    for task in range(per_task.shape[1]):
        ax.plot(x, per_task[:, task], color="tab:blue", alpha=0.15, linewidth=0.8, gid=f"by_gradient_steps/task/{task}")
    ax.plot(x, c["mean"], color="tab:blue", linewidth=2, marker="o", label="mean", gid="by_gradient_steps/mean")
    _band(ax, x, c, "tab:blue", "by_gradient_steps/ci95")
    ax.set_xticks(x)
    ax.set_xlabel("inner gradient steps")
    ax.set_ylabel("return")
    ax.set_title(f"after k steps ({per_task.shape[1]} tasks, mean, 95% CI)")
    ax.legend(loc="best", fontsize="small")


def _episodes_panel(ax: Axes, by_episodes: dict[str, Any]) -> None:
    colors = {"context": "tab:orange", "gradient": "tab:green", "both": "tab:purple"}
    for i, (mode, c) in enumerate(by_episodes.items()):
        color = colors.get(mode, f"C{i}")
        ax.plot(c["x"], c["mean"], color=color, linewidth=2, marker="o", label=mode, gid=f"by_episodes/{mode}/mean")
        _band(ax, c["x"], c, color, f"by_episodes/{mode}/ci95")
    if by_episodes:
        ax.legend(title="uses earlier episodes by", loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no episode curve (--episodes 0)", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("episode k of the task")
    ax.set_ylabel("return")
    ax.set_title("return of episode k (mean, 95% CI)")


def _parameter_panel(ax: Axes, parameter: dict[str, Any], c: dict[str, Any]) -> None:
    values = np.asarray(parameter["values"], dtype=float)
    per_task = np.asarray(c["per_task"], dtype=float)
    if parameter.get("train_range"):
        low, high = parameter["train_range"]
        ax.axvspan(low, high, color="0.9", zorder=0, label="training range", gid="task_parameter/train_range")
    if len(per_task) > 1:  # each task's change from before to after
        ax.vlines(values, per_task[0], per_task[1], color="tab:blue", alpha=0.3, linewidth=0.8)
    styles = [("before adaptation", "tab:gray", "o"), ("after 1 step", "tab:blue", "^")]
    for step, (label, color, marker) in enumerate(styles[: len(per_task)]):
        gid = f"task_parameter/step{step}"
        ax.scatter(values, per_task[step], s=14, color=color, marker=marker, label=label, gid=gid)
    if parameter.get("log_scale"):
        ax.set_xscale("log")
        shown = np.concatenate([values, parameter.get("train_range") or []])
        ticks = [t for t in LOG_TICKS if shown.min() / 1.05 <= t <= shown.max() * 1.05]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(parameter.get("label") or parameter["name"])
    ax.set_ylabel("return")
    ax.set_title("return against the task's dynamics")
    ax.legend(loc="best", fontsize="small")


def adaptation_figure(report: dict[str, Any]) -> Figure:
    """The report as a figure (matplotlib, no pyplot state, renders with Agg).

    Panel 1: return against inner gradient steps, the mean with its 95% CI band
    and a faint line per task. Panel 2: return of episode k for each mode of the
    report. Panel 3 (dynamics families): each task's return before (step 0) and
    after 1 step against its parameter, the training range shaded.
    """
    parameter = task_parameter(report)
    panels = 3 if parameter is not None else 2
    fig = Figure(figsize=(5.0 * panels, 4.0), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _gradient_panel(axes[0], report["by_gradient_steps"])
    _episodes_panel(axes[1], report.get("by_episodes", {}))
    if parameter is not None:
        _parameter_panel(axes[2], parameter, report["by_gradient_steps"])
    config = report.get("config", {})
    title = f"{config.get('env', '?')} ({config.get('policy', '?')}), {report.get('split', '?')} tasks"
    if "iteration" in report:
        title += f", iteration {report['iteration']}"
    fig.suptitle(title)
    return fig


def save_figure(report: dict[str, Any], path: Path, dpi: int = 120) -> None:
    """Write :func:`adaptation_figure` of ``report`` to ``path`` (format from its suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adaptation_figure(report).savefig(path, dpi=dpi)


def comparison_figure(panels: dict[str, list[Series]]) -> Figure:
    """Meta-learned and baseline curves in one plot per panel title (a family and split).

    Return against env-steps of task-specific experience (symmetric log scale,
    linear below the smallest non-zero step count), each series' mean with its
    95% CI band; reference series (the oracle) as a dashed horizontal line with
    a faint band. Artists carry ``gid`` ``compare/<title>/<label>/mean`` and ``.../ci95``.
    """
    fig = Figure(figsize=(7.0 * len(panels), 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        positive = [x for s in series for x in s.env_steps if x > 0]
        for i, s in enumerate(series):
            # tab20's dark shades first, then its light ones: 20 distinct colours before one repeats
            color, gid = colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2), f"compare/{title}/{s.label}"
            if s.reference:
                ax.axhline(s.mean[0], color=color, linestyle="--", linewidth=1.5, label=s.label, gid=f"{gid}/mean")
                if math.isfinite(s.ci95_low[0]) and math.isfinite(s.ci95_high[0]):
                    ax.axhspan(s.ci95_low[0], s.ci95_high[0], color=color, alpha=0.1, linewidth=0, gid=f"{gid}/ci95")
            else:
                ax.plot(s.env_steps, s.mean, color=color, marker="o", linewidth=2, label=s.label, gid=f"{gid}/mean")
                _band(ax, s.env_steps, s._asdict(), color, f"{gid}/ci95")
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        ax.set_xlabel("env-steps of task-specific experience")
        ax.set_ylabel("return")
        ax.set_title(title)
        ax.legend(loc="best", fontsize="x-small")
    return fig


def save_comparison(panels: dict[str, list[Series]], path: Path, dpi: int = 120) -> None:
    """Write :func:`comparison_figure` of ``panels`` to ``path`` (format from its suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comparison_figure(panels).savefig(path, dpi=dpi)


def check_figure_path(path: Path) -> None:
    """ValueError unless matplotlib can write ``path``'s format (checked before a long evaluation)."""
    formats = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(f"cannot write a plot to {Path(path).name}; use one of: .{', .'.join(sorted(formats))}")
