"""Saved reports -> the README's results table and the series of ``evaluate.py --compare``.

A results directory holds, anywhere below it, evaluation reports
(``scripts/evaluate.py --json``; they have ``by_gradient_steps``) and baseline
reports (``scripts/baselines.py``: ``scratch.json``, ``multitask.json``,
``oracle.json``; they have ``by_budget``). Other JSON files are ignored.

Rows and columns of the table. One table per (family, variant, split); rows:
MAML + attention, MAML + MLP (``by_gradient_steps`` of the evaluation reports,
episode columns from ``by_episodes["gradient"]``), attention, context only
(``by_episodes["context"]`` of the attention reports), multi-task +
fine-tuning, from scratch and oracle (``by_budget`` of the baseline reports).
Columns "after k steps" hold the return after k inner gradient steps, or for a
baseline after training on the task with k times one step's env-steps
(``x = k`` of ``by_budget``: the from-scratch budgets 1x, 10x, 100x fill the
1, 10 and 100 columns; the multi-task agent before and after fine-tuning the
"before" and 1 columns; the oracle, which never adapts, "before"). "after j
episodes" is the return of episode j + 1 when the policy may use the j
episodes before it (``evaluate.py --episodes 11`` fills all three). A MAML row
is a policy and the training settings that differ from the family's preset
(:func:`policy_name`), so only runs that differ in seed or budget share one.
Reports of the same row (several seeds) are averaged: the cell is the mean over seeds with
a 95% Student-t interval over seeds; with one seed, the interval is the
report's, over tasks. Two reports of one seed in a row (one run evaluated twice
as it trained on) are an error, not two seeds. Training columns: meta-training's env-steps and
wall-clock (``meta_training`` of the evaluation report), or the sum over a
baseline's agents (``training``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from metarl.config import TrainConfig, flag_name, preset
from metarl.evaluation import BEST_SELECTION, adaptation_budget, mean_and_ci, training_cost
from metarl.training import CHECKPOINT

START, END = "<!-- results:start -->", "<!-- results:end -->"
"""Markers around the generated table in the README."""

SECTIONS = (
    ("half_cheetah_vel", "default", "test"),
    ("half_cheetah_vel", "default", "ood"),
    ("half_cheetah_dir", "default", "test"),
    ("half_cheetah_mass", "default", "test"),
    ("half_cheetah_mass", "default", "ood"),
    ("point_nav", "default", "test"),
)
"""Tables always shown (with "–" where nothing was run), in this order; others follow when saved."""

ROWS = (
    ("maml", "attention"),
    ("maml", "mlp"),
    ("context", "attention"),
    ("multitask", "ppo"),
    ("scratch", "ppo"),
    ("oracle", "ppo"),
)
"""Rows always shown, in this order; other settings (SAC, a context fraction) follow when saved."""

RETURN_COLUMNS = (
    ("before adaptation", "steps", 0),
    ("after 1 step", "steps", 1),
    ("after 3 steps", "steps", 3),
    ("after 10 steps", "steps", 10),
    ("after 100 steps", "steps", 100),
    ("after 1 episode", "episodes", 1),
    ("after 3 episodes", "episodes", 3),
    ("after 10 episodes", "episodes", 10),
)
"""``(header, curve, k)``: return after k steps' or k episodes' worth of task experience."""

MISSING = "–"


# ------------------------------------------------------------------ reports
def load_reports(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every evaluation and baseline report in ``paths`` (JSON files, or directories searched
    recursively), each with its file as ``report["file"]``; ValueError for a missing path."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"no results at {path}: give JSON reports or directories that hold them")
    reports = []
    for file in files:
        try:
            report = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{file} is not a JSON file: {error}") from None
        if isinstance(report, dict) and ("by_gradient_steps" in report or "by_budget" in report):
            reports.append({**report, "file": str(file)})
    return reports


def is_baseline(report: dict[str, Any]) -> bool:
    """A report of ``scripts/baselines.py`` (else of ``scripts/evaluate.py``)."""
    return "by_budget" in report


def section(report: dict[str, Any]) -> tuple[str, str, str]:
    """``(family, variant, split)`` of a report."""
    source = report if is_baseline(report) else report["config"]
    return source["env"], source.get("variant", "default"), report["split"]


def complete(report: dict[str, Any], horizon: int) -> dict[str, Any]:
    """An evaluation report made before the adaptation budget and training cost were
    recorded, with them added: from its config (``episodes_per_task``, so a run
    evaluated with another ``--episodes-per-task`` needs a new report) and, where the
    run directory is still there, its ``metrics.csv``."""
    if is_baseline(report):
        return report
    config = report["config"]
    added: dict[str, Any] = {}
    if "adaptation_env_steps_per_step" not in report:
        added.update(adaptation_budget(config["episodes_per_task"], horizon, config["maml"]["num_inner_steps"]))
    if "meta_training" not in report:
        added["meta_training"] = (
            training_cost(Path(report["run_dir"]), horizon, report.get("iteration")) if "run_dir" in report else None
        )
    return {**report, **added}


RUN_SETTINGS = ("env", "variant", "policy", "seed", "iterations", "time_limit", "checkpoint_every", "device")
"""Config fields that do not tell runs' rows apart: the table's section, the row's policy,
the seed (rows average over it), and the budget and bookkeeping of a run."""


def policy_name(config: dict[str, Any]) -> str:
    """The policy of an evaluation report's run with every setting it trained with that differs
    from the defaults and the family's preset (``mlp, max-kl 0.06``), so that runs of different
    settings get different rows and only seeds are averaged."""
    settings = [
        " ".join([flag[2:], *values]) for name, flag, values in changed_flags(config) if name not in RUN_SETTINGS
    ]
    return ", ".join([config["policy"], *settings])


def run_name(report: dict[str, Any]) -> str:
    """:func:`policy_name` of an evaluation report's run, its inner steps' sizes where they were not
    all the run's (``evaluate.py --later-lr-scale``), the memory of its later steps where it was not the
    latest episodes' (``evaluate.py --later-memory``), its episodes per inner step where they were not
    the run's (``evaluate.py --episodes-per-task``), its action clipping where that was not the run's
    (``evaluate.py --[no-]clip-actions``), and which checkpoint it evaluated where that was not the
    last (``evaluate.py --checkpoint best`` or a numbered one)."""
    name = policy_name(report["config"])
    scale = report.get("later_lr_scale", 1.0)
    if scale != 1.0:
        name = f"{name}, later-lr-scale {scale:g}"
    if report.get("later_memory", "latest") != "latest":
        name = f"{name}, later-memory {report['later_memory']}"
    if not _own_episodes_per_step(report):
        name = f"{name}, evaluated with episodes-per-task {report['episodes_per_step']}"
    clip = report.get("clip_actions", report["config"].get("clip_actions", False))
    if clip != report["config"].get("clip_actions", False):
        name = f"{name}, evaluated {'with' if clip else 'without'} clip-actions"
    if report.get("checkpoint_selection") == BEST_SELECTION:
        return f"{name}, best checkpoint"
    checkpoint = report.get("checkpoint", CHECKPOINT)
    return name if checkpoint == CHECKPOINT else f"{name}, {checkpoint}"


def _own_episodes_per_step(report: dict[str, Any]) -> bool:
    """Whether an evaluation report's inner steps took the run's episodes per task."""
    episodes = report["config"]["episodes_per_task"]
    return report.get("episodes_per_step", episodes) == episodes


def row_label(kind: str, name: str) -> str:
    """The row of ``(kind, name)``: kind maml/context (name: the policy) or a baseline (name: the algorithm)."""
    policy = name.replace("mlp", "MLP")
    return {
        "maml": f"MAML + {policy}",
        "context": f"{policy}, context only",
        "multitask": f"multi-task {name.upper()} + fine-tuning",
        "scratch": f"{name.upper()} from scratch",
        "oracle": f"oracle ({name.upper()}, observes the task)",
    }[kind]


class Series(NamedTuple):
    """One line of a comparison plot: return against env-steps of task-specific experience.

    ``reference`` lines (the oracle) have one point and are drawn across the plot.
    """

    label: str
    env_steps: list[float]
    mean: list[float]
    ci95_low: list[float]
    ci95_high: list[float]
    reference: bool = False


def _series(label: str, env_steps: list[float], c: dict[str, Any], reference: bool = False) -> Series:
    return Series(label, env_steps, c["mean"], c["ci95_low"], c["ci95_high"], reference)


def experience_series(report: dict[str, Any]) -> list[Series]:
    """A report's curves against env-steps of task experience (a :func:`complete` report).

    Inner step k of an evaluation comes after ``k x adaptation_env_steps_per_step``
    steps, its episode j after ``(j - 1) x horizon``; a baseline's ``by_budget``
    records its ``env_steps``.
    """
    if is_baseline(report):
        label = row_label(report["kind"], report["algo"])
        c = report["by_budget"]
        return [_series(label, c["env_steps"], c, reference=report["kind"] == "oracle")]
    per_step, horizon = report["adaptation_env_steps_per_step"], report["horizon"]
    policy = run_name(report).replace("mlp", "MLP")
    steps = report["by_gradient_steps"]
    out = [_series(f"MAML + {policy}, inner steps", [k * per_step for k in steps["x"]], steps)]
    for mode, c in report.get("by_episodes", {}).items():
        out.append(_series(f"{policy}, episodes ({mode})", [(j - 1) * horizon for j in c["x"]], c))
    return out


def comparison_panels(reports: list[dict[str, Any]]) -> dict[str, list[Series]]:
    """:func:`experience_series` of ``reports`` (:func:`complete` ones) by family and split,
    labels told apart by seed where several reports give the same one."""
    panels: dict[str, list[tuple[int, Series]]] = {}
    for report in reports:
        env, variant, split = section(report)
        title = f"{env}{'' if variant == 'default' else f' ({variant})'}, {split} tasks"
        seed = report["seed"] if is_baseline(report) else report["config"]["seed"]
        panels.setdefault(title, []).extend((seed, s) for s in experience_series(report))
    out = {}
    for title, pairs in panels.items():
        labels = [s.label for _, s in pairs]
        out[title] = [
            s._replace(label=f"{s.label} (seed {seed})") if labels.count(s.label) > 1 else s for seed, s in pairs
        ]
    return out


# ------------------------------------------------------------------ the table
@dataclasses.dataclass
class Entry:
    """One report's contribution to one row."""

    values: dict[str, tuple[float, float, float]]
    """Column header -> (mean, ci95 low, ci95 high)."""
    seed: int
    num_tasks: int
    env_steps: float | None
    wall_clock_s: float | None
    commands: list[str]
    file: str
    """Where the report was read from (``load_reports``), for error messages."""


def _point(c: dict[str, Any], x: int) -> tuple[float, float, float] | None:
    if x not in c["x"]:
        return None
    i = c["x"].index(x)
    return float(c["mean"][i]), float(c["ci95_low"][i]), float(c["ci95_high"][i])


def _values(by_steps: dict[str, Any] | None, by_episodes: dict[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for header, kind, k in RETURN_COLUMNS:
        if kind == "steps":
            point = _point(by_steps, k) if by_steps else None
        else:
            point = _point(by_episodes, k + 1) if by_episodes else None
        if point is not None:
            values[header] = point
    return values


def changed_flags(config: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """``(field, flag, values)`` of every field of a run's config that differs from the defaults
    and the family's preset for the run's policy."""
    saved = TrainConfig.from_dict(config)
    default = TrainConfig.from_dict({**preset(saved.env, saved.policy)[1], "env": saved.env})
    pairs: list[tuple[Any, Any, dataclasses.Field[Any]]]
    pairs = [(saved, default, f) for f in dataclasses.fields(TrainConfig) if f.name != "maml"]
    pairs += [(saved.maml, default.maml, f) for f in dataclasses.fields(saved.maml)]
    out: list[tuple[str, str, list[str]]] = []
    for ours, theirs, field in pairs:
        value = getattr(ours, field.name)
        if value == getattr(theirs, field.name):
            continue
        flag = flag_name(field.name)
        if isinstance(value, bool):
            out.append((field.name, flag if value else "--no-" + flag[2:], []))
        else:
            values = value if isinstance(value, tuple) else (value,)
            out.append((field.name, flag, [str(v) for v in values]))
    return out


def training_command(config: dict[str, Any]) -> str:
    """The ``meta_train.py`` command of a run's config: ``--env``, ``--policy``, ``--seed`` and
    every field that differs from the defaults and the family's preset."""
    flags = ["--env", config["env"], "--policy", config["policy"], "--seed", str(config["seed"])]
    for name, flag, values in changed_flags(config):
        if name not in ("env", "policy", "seed"):
            flags += [flag, *values]
    return " ".join(["python", "scripts/meta_train.py", *flags])


def evaluation_command(report: dict[str, Any]) -> str:
    """The report's ``evaluate.py`` command with its run directory written as ``RUN_DIR``: the
    directory the training command wrote, which is a path on the machine that ran it."""
    return " ".join("RUN_DIR" if token == report["run_dir"] else token for token in report["command"].split(" "))


def entries(report: dict[str, Any]) -> dict[tuple[str, str], Entry]:
    """Row key -> the report's entry in that row (a :func:`complete` report)."""
    tasks, source = len(report["tasks"]), report.get("file", "a report")
    if is_baseline(report):
        key = (report["kind"], report["algo"])
        training = report["training"]
        entry = Entry(
            _values(report["by_budget"], None),
            report["seed"],
            tasks,
            training["env_steps"],
            training["wall_clock_s"],
            [report["command"]],
            source,
        )
        return {key: entry}
    config, episodes = report["config"], report.get("by_episodes", {})
    cost = report.get("meta_training") or {}
    commands = [training_command(config), evaluation_command(report)]
    seed, env_steps, wall = config["seed"], cost.get("env_steps"), cost.get("wall_clock_s")
    policy = run_name(report)
    rows = {
        ("maml", policy): Entry(
            _values(report["by_gradient_steps"], episodes.get("gradient")),
            seed,
            tasks,
            env_steps,
            wall,
            commands,
            source,
        )
    }
    # the context curve takes no gradient step: a report with the later steps rescaled or given another memory,
    # or another number of episodes per step, would repeat the plain report's context row under another name
    plain_steps = report.get("later_lr_scale", 1.0) == 1.0 and report.get("later_memory", "latest") == "latest"
    if "context" in episodes and plain_steps and _own_episodes_per_step(report):
        context = _values(None, episodes["context"])
        first = _point(episodes["context"], 1)
        if first is not None:
            context["before adaptation"] = first
        rows[("context", policy)] = Entry(context, seed, tasks, env_steps, wall, commands, source)
    return rows


def _combine(points: list[tuple[float, float, float]]) -> str:
    if len(points) == 1:
        mean, low, high = points[0]
    else:
        means = np.array([p[0] for p in points])
        center, half = mean_and_ci(means)
        mean, low, high = float(center), float(center - half), float(center + half)
    if math.isfinite(low) and math.isfinite(high):
        return f"{mean:.1f} [{low:.1f}, {high:.1f}]"
    return f"{mean:.1f}"


def format_steps(steps: float) -> str:
    """``160000000`` -> ``160M``, ``4000`` -> ``4k``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if steps >= size:
            return f"{steps / size:.3g}{unit}"
    return f"{steps:.0f}"


def format_seconds(seconds: float) -> str:
    """``42`` -> ``42 s``, ``1500`` -> ``25 min``, ``9000`` -> ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _mean_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def section_table(rows: dict[tuple[str, str], list[Entry]], first_note: int) -> tuple[list[str], list[str]]:
    """Markdown lines of one table and of its numbered command notes."""
    headers = ["", *(h for h, _, _ in RETURN_COLUMNS), "training env-steps", "training wall-clock", "seeds", "command"]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    notes: list[str] = []
    kinds = [kind for kind, _ in ROWS]
    order = list(ROWS) + sorted((k for k in rows if k not in ROWS), key=lambda k: (kinds.index(k[0]), k[1]))
    for key in order:
        found = rows.get(key, [])
        cells = [row_label(*key)]
        for header, _, _ in RETURN_COLUMNS:
            points = [e.values[header] for e in found if header in e.values]
            cells.append(_combine(points) if points else MISSING)
        steps = _mean_of([e.env_steps for e in found])
        wall = _mean_of([e.wall_clock_s for e in found])
        cells.append(MISSING if steps is None else format_steps(steps))
        cells.append(MISSING if wall is None else format_seconds(wall))
        if found:
            shown, seeds = found[0], sorted({e.seed for e in found})
            commands = "; then ".join(f"`{c}`" for c in shown.commands)
            note = f"{commands} (seed {shown.seed} shown; seeds {', '.join(map(str, seeds))}; {shown.num_tasks} tasks)"
            if note not in notes:
                notes.append(note)
            cells += [str(len(found)), f"({first_note + notes.index(note)})"]
        else:
            cells += [MISSING, MISSING]
        lines.append("| " + " | ".join(cells) + " |")
    return lines, notes


def results_markdown(reports: list[dict[str, Any]]) -> str:
    """The results tables of ``reports`` (:func:`complete` ones), as markdown."""
    grouped: dict[tuple[str, str, str], dict[tuple[str, str], list[Entry]]] = {s: {} for s in SECTIONS}
    for report in reports:
        rows = grouped.setdefault(section(report), {})
        for key, entry in entries(report).items():
            twin = next((e for e in rows.get(key, []) if e.seed == entry.seed), None)
            if twin is not None:
                raise ValueError(
                    f"{twin.file} and {entry.file} are both seed {entry.seed} of the row"
                    f" '{row_label(*key)}' ({'/'.join(section(report))}), which averages over seeds;"
                    " keep one, or evaluate a numbered checkpoint (evaluate.py --checkpoint) for a row of its own"
                )
            rows.setdefault(key, []).append(entry)
    out: list[str] = []
    notes = 1
    for (env, variant, split), rows in grouped.items():
        name = env if variant == "default" else f"{env} ({variant})"
        lines, footnotes = section_table(rows, notes)
        out += [f"**`{name}`, {split} tasks**", "", *lines, ""]
        out += [line for i, note in enumerate(footnotes, notes) for line in (f"({i}) {note}", "")]
        notes += len(footnotes)
    return "\n".join(out).rstrip() + "\n"


def replace_marked(text: str, block: str) -> str:
    """``text`` with everything between :data:`START` and :data:`END` replaced by ``block``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {START} ... {END} markers (in this order) to put the table between")
    return text[: start + len(START)] + "\n" + block + text[end:]
