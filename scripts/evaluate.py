"""Measure how fast a meta-trained policy adapts to held-out tasks.

    python scripts/evaluate.py runs/<run> [--split test|ood|train] [--json FILE] [--csv FILE] [--plot FILE.png]
    python scripts/evaluate.py [runs/<run>] --compare results/ [DIR_OR_JSON ...] --plot compare.png

Two curves, per task and as a mean with a 95% confidence interval over tasks:
the return after 0..--steps inner gradient steps, and the return of episode
k = 1..--episodes when the policy may use the task's earlier episodes
(context only, gradient only, both). --repeats R runs R independent
adaptation trials per task (one batch) and averages them into the task's value:
the interval stays over tasks, each task's value is less noisy.

--csv writes every number in long format, one per row, with the columns
curve,mode,x,task_index,stat,value: per-task rows have stat "task", and each
curve point also has rows with stat mean, ci95_low and ci95_high (task_index
empty). --plot draws the curves (panel 1: return against inner steps, mean with
its 95% CI and a faint line per task; panel 2: return of episode k per mode)
and, for dynamics families, a third panel: each task's return before and after
one step against its parameter (mass or friction multiplier; *_params: the mean
log_1.5 body-mass multiplier), the training range shaded. The figure is drawn
from the JSON report alone (metarl.plots), so it always shows the JSON numbers.
The JSON also records the adaptation budget (adaptation_env_steps_per_step:
--episodes-per-task x horizon env-steps per inner step) and what meta-training
used so far (meta_training: iterations, env_steps, wall_clock_s).

--compare DIR_OR_JSON ... overlays saved reports (evaluation JSONs, and the
baseline reports of scripts/baselines.py) on one plot per family and split,
written to --plot: return against env-steps of task-specific experience (inner
step k after k x the adaptation budget, episode j after j - 1 episodes, a
baseline after the env-steps it trained on the task), the oracle as a dashed
line. With a run directory, that run is evaluated and drawn too; without one,
nothing is evaluated and nothing is trained: the plot is redrawn from the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import envs  # noqa: E402
from envs.dynamics import PARAM_BASES, ParamsFamily  # noqa: E402
from metarl import checkpoint, plots, results  # noqa: E402
from metarl.evaluation import (  # noqa: E402
    BEST_SELECTION,
    EPISODE_MODES,
    LATER_LR_SCALE_HELP,
    LATER_MEMORIES,
    LATER_MEMORY_HELP,
    adaptation_budget,
    by_episodes,
    by_gradient_steps,
    check_later_lr_scale,
    check_later_memory,
    curve,
    mean_over_repeats,
    training_cost,
)
from metarl.training import CHECKPOINT, keep_freed_memory, torch_threads  # noqa: E402
from scripts.runs import BEST, best_checkpoint, load_run  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, nargs="?", help="a run directory of scripts/meta_train.py")
    p.add_argument("--split", default="test", help="held-out tasks: test (default), ood or train")
    p.add_argument(
        "--checkpoint",
        help="checkpoint file in the run directory (default: the last), or best: the kept checkpoint whose "
        "last checkpoint-every iterations had the highest training return after adaptation (training tasks only)",
    )
    p.add_argument("--steps", type=int, default=3, help="inner gradient steps of the first curve (default 3)")
    p.add_argument("--episodes", type=int, default=10, help="episodes of experience of the second curve (default 10)")
    p.add_argument("--episodes-per-task", type=int, help="episodes per inner step (default: the run's)")
    p.add_argument("--later-lr-scale", type=float, default=1.0, help=LATER_LR_SCALE_HELP)
    p.add_argument("--later-memory", choices=LATER_MEMORIES, default="latest", help=LATER_MEMORY_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="independent adaptation trials per task, averaged into its value (default 1; worth it "
        "where a split has few tasks, like half_cheetah_dir's two directions)",
    )
    p.add_argument(
        "--clip-actions",
        action=argparse.BooleanOptionalAction,
        help="clip the actions to the action space before they act, so that the control cost sees the clipped "
        "action (default: as the run trained); the other choice scores a run in the other convention",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", type=Path, help="write every number to this JSON file")
    p.add_argument("--csv", type=Path, help="write every number to this CSV file (long format, see above)")
    p.add_argument("--plot", type=Path, help="draw the curves into this image file (e.g. eval.png)")
    p.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="DIR_OR_JSON",
        help="draw these saved reports (and the run's, if given) into --plot against env-steps of experience",
    )
    return p


def task_parameter(family: Any, tasks: list[Any]) -> dict[str, Any] | None:
    """Each task's dynamics parameter and the family's training range (the plot's third panel), or None."""
    field = getattr(family, "scale_field", None)
    if field is not None:  # *_mass, *_friction: one multiplier, log-uniform in train_range
        values = [float(getattr(t, field)) for t in tasks]
        label, (low, high) = field.replace("_scale", " multiplier"), family.train_range
    elif isinstance(family, ParamsFamily):  # base**u per element, u ~ U[-3, 3] (split ood trains on U[-2, 2])
        base, high = PARAM_BASES["body_mass"], 2.0 if family.split == "ood" else 3.0
        values = [float(np.mean(np.log(np.asarray(t.body_mass[1:])) / np.log(base))) for t in tasks]
        field, label, low = "mean_log_body_mass", f"mean log_{base:g} of the body-mass multipliers", -high
    else:
        return None
    log_scale = field.endswith("_scale")
    return {"name": field, "label": label, "values": values, "train_range": [low, high], "log_scale": log_scale}


def compare(reports: list[dict[str, Any]], path: Path) -> None:
    """Draw ``reports`` (evaluation and baseline reports) against env-steps of experience into ``path``."""
    complete = [results.complete(r, envs.make(results.section(r)[0]).horizon) for r in reports]
    panels = results.comparison_panels(complete)
    plots.save_comparison(panels, path)
    print(f"{path}: {sum(map(len, panels.values()))} curves of {len(reports)} reports in {len(panels)} plots")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.steps < 0 or args.episodes < 0:
            raise ValueError("--steps and --episodes must be >= 0")
        if args.repeats < 1:
            raise ValueError(f"invalid --repeats {args.repeats}: must be >= 1")
        check_later_lr_scale(args.later_lr_scale)
        if args.compare and args.plot is None:
            raise ValueError("--compare draws into --plot FILE: give one (e.g. --plot compare.png)")
        if args.run_dir is None and not args.compare:
            raise ValueError("give a run directory (or --compare DIR_OR_JSON ... --plot FILE to redraw saved reports)")
        if args.plot is not None:
            plots.check_figure_path(args.plot)
        saved = results.load_reports(args.compare) if args.compare else []
        if args.run_dir is None:
            if not saved:
                raise ValueError(f"no evaluation or baseline reports in {' '.join(map(str, args.compare))}")
            compare(saved, args.plot)
            return 0
        name = best_checkpoint(args.run_dir) if args.checkpoint == BEST else args.checkpoint
        trainer, state = load_run(args.run_dir, name, args.device)
        family, policy, learner, config = trainer.family, trainer.policy, trainer.learner, trainer.config
        check_later_memory(args.later_memory, policy)
        if args.clip_actions is not None:
            family.clip_actions = args.clip_actions
        tasks = family.held_out_tasks(args.split)
    except (ValueError, checkpoint.CheckpointError) as error:
        print(f"evaluate: error: {error}", file=sys.stderr)
        return 2
    keep_freed_memory()
    per_step = args.episodes_per_task or config.episodes_per_task
    repeats = f", {args.repeats} trials each" if args.repeats > 1 else ""
    where = f"{args.run_dir}/{name or CHECKPOINT} (iteration {state['iteration']})"
    print(f"{where}: {len(tasks)} {args.split} tasks of {config.env}{repeats}")
    trials = tasks * args.repeats  # one batch; trial r of task t is slot r * len(tasks) + t
    with torch_threads(1):
        steps = by_gradient_steps(
            family,
            policy,
            learner,
            trials,
            args.steps,
            per_step,
            config.memory_size,
            args.seed,
            trainer.device,
            progress=lambda m: print("  " + m, flush=True),
            later_lr_scale=args.later_lr_scale,
            later_memory=args.later_memory,
        )
        modes = EPISODE_MODES if policy.uses_context else ("gradient",)
        episodes = {
            mode: by_episodes(
                family,
                policy,
                learner,
                trials,
                args.episodes,
                mode,
                config.memory_size,
                args.seed,
                trainer.device,
                progress=lambda m: print("  " + m, flush=True),
            )
            for mode in (modes if args.episodes else ())
        }
    report = {
        "run_dir": str(args.run_dir),
        "checkpoint": name or CHECKPOINT,
        "checkpoint_selection": BEST_SELECTION if args.checkpoint == BEST else ("given" if name else "last"),
        "iteration": state["iteration"],
        "command": " ".join(["python", "scripts/evaluate.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": config.to_dict(),
        "split": args.split,
        "tasks": [t.to_dict() for t in tasks],
        "repeats": args.repeats,
        "later_lr_scale": args.later_lr_scale,
        "later_memory": args.later_memory,
        "clip_actions": family.clip_actions,
        **adaptation_budget(per_step, family.horizon, config.maml.num_inner_steps),
        "meta_training": training_cost(args.run_dir, family.horizon, state["iteration"]),
        "by_gradient_steps": curve(mean_over_repeats(steps, args.repeats), list(range(args.steps + 1))),
        "by_episodes": {
            m: curve(mean_over_repeats(v, args.repeats), list(range(1, args.episodes + 1))) for m, v in episodes.items()
        },
    }
    parameter = task_parameter(family, tasks)
    if parameter is not None:
        report["task_parameter"] = parameter
    summary = report["by_gradient_steps"]
    print("return after k inner steps (mean [95% CI] over tasks):")
    for k, m, lo, hi in zip(summary["x"], summary["mean"], summary["ci95_low"], summary["ci95_high"], strict=True):
        print(f"  k={k}: {m:9.2f} [{lo:.2f}, {hi:.2f}]")
    for mode, c in report["by_episodes"].items():
        print(
            f"return of episode k, {mode}: "
            + ", ".join(f"{k}: {m:.1f}" for k, m in zip(c["x"], c["mean"], strict=True))
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.csv:
        plots.write_csv(report, args.csv)
    if args.compare:
        compare([report, *saved], args.plot)
    elif args.plot:
        plots.save_figure(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
