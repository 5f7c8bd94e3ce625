"""Render a meta-trained policy on a held-out task before and after adaptation.

    python scripts/render.py runs/<run> [--task I | --all] [--split test|ood|train] [--steps 1]
        [--out video.mp4] [--gif] [--width 320 --height 240] [--fps F] [--seed 0] [--sequential]

Left panel: the meta-parameters (before adaptation); right panel: the parameters
after --steps inner gradient steps on episodes sampled from the task, as in
scripts/evaluate.py (context policies also get the memory of those episodes).
--all shows one row per held-out task (the split's first 4). Each panel is
captioned with the task, the stage, the live forward velocity (goal tasks: the
distance to the goal) and the running return; the camera tracks the robot.
Writes an H.264 MP4 (default runs/<run>/videos/...); --gif also writes a GIF
next to it, and an --out ending in .gif writes only the GIF. Headless: MUJOCO_GL
defaults to egl, with osmesa as the fallback.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from metarl import checkpoint, video  # noqa: E402
from metarl.evaluation import (  # noqa: E402
    LATER_LR_SCALE_HELP,
    LATER_MEMORIES,
    LATER_MEMORY_HELP,
    check_later_lr_scale,
    check_later_memory,
)
from metarl.params import detached  # noqa: E402
from metarl.training import torch_threads  # noqa: E402
from scripts.runs import load_run  # noqa: E402

MAX_GRID = 4
"""Tasks shown by --all."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run directory of scripts/meta_train.py")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", type=int, default=0, help="index of the held-out task (default 0)")
    which.add_argument("--all", action="store_true", help=f"a grid of the split's first {MAX_GRID} tasks")
    p.add_argument("--split", default="test", help="held-out tasks: test (default), ood or train")
    p.add_argument("--steps", type=int, default=1, help="inner gradient steps of the 'after' panel (default 1)")
    p.add_argument("--episodes-per-task", type=int, help="episodes per inner step (default: the run's)")
    p.add_argument("--later-lr-scale", type=float, default=1.0, help=LATER_LR_SCALE_HELP)
    p.add_argument("--later-memory", choices=LATER_MEMORIES, default="latest", help=LATER_MEMORY_HELP)
    p.add_argument("--checkpoint", help="checkpoint file in the run directory (default: the last)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--out", type=Path, help="video file (default: RUN_DIR/videos/<split>_<task>_steps<K>.mp4)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF next to the MP4")
    p.add_argument("--width", type=int, default=320, help="width of one panel in pixels (default 320)")
    p.add_argument("--height", type=int, default=240, help="height of one panel in pixels (default 240)")
    p.add_argument("--fps", type=float, help="frames per second (default: real time, the env's render_fps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the adaptation episodes and the initial state")
    p.add_argument("--max-steps", type=int, help="environment steps shown (default: the family's horizon)")
    p.add_argument("--sequential", action="store_true", help="before, then after, instead of side by side")
    p.add_argument("--sample", action="store_true", help="sample actions instead of taking the mean")
    p.add_argument("--no-caption", action="store_true", help="no text over the panels")
    return p


def check(args: argparse.Namespace) -> None:
    """ValueError for arguments out of range (before anything is loaded)."""
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    check_later_lr_scale(args.later_lr_scale)
    if args.width < 16 or args.height < 16:
        raise ValueError(f"--width and --height must be >= 16 pixels, got {args.width}x{args.height}")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if args.max_steps is not None and args.max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {args.max_steps}")
    if args.episodes_per_task is not None and args.episodes_per_task <= 0:
        raise ValueError(f"--episodes-per-task must be positive, got {args.episodes_per_task}")
    if args.out is not None and args.out.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--out must end in .mp4 or .gif, got {args.out.name}")


def measure_for(family: Any, task: Any) -> video.Measure:
    """The caption's live quantity: distance to the goal for goal tasks, else forward velocity."""
    goal = getattr(task, "goal", None)
    if goal is None:
        return video.velocity_measure
    target, robot = np.asarray(goal, dtype=np.float64), getattr(family, "robot", None)

    def distance(env: Any, observation: np.ndarray, info: dict[str, Any]) -> str:
        if robot is None:  # point robots observe their position
            position = np.asarray(observation, dtype=np.float64)[:2]
        else:
            data = env.unwrapped.data
            position = robot.position(data.qpos[None], data.xpos[None])[0]
        return f"distance {np.linalg.norm(position - target):.2f} m"

    return distance


def stage_name(steps: int) -> str:
    return f"after {steps} step{'' if steps == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check(args)
        trainer, state = load_run(args.run_dir, args.checkpoint, args.device)
        family, policy, config = trainer.family, trainer.policy, trainer.config
        check_later_memory(args.later_memory, policy)
        tasks = family.held_out_tasks(args.split)
        if not args.all and not 0 <= args.task < len(tasks):
            raise ValueError(f"task index {args.task} is out of range: {args.split} has tasks 0..{len(tasks) - 1}")
    except (ValueError, checkpoint.CheckpointError) as error:
        print(f"render: error: {error}", file=sys.stderr)
        return 2
    try:
        if hasattr(family, "robot"):  # MuJoCo families need OpenGL; point_nav draws with numpy
            video.ensure_gl(args.width, args.height)
    except video.RenderUnavailable as error:
        print(f"render: error: {error}", file=sys.stderr)
        return 1
    indices = list(range(min(MAX_GRID, len(tasks)))) if args.all else [args.task]
    chosen = [tasks[i] for i in indices]
    out = args.out or args.run_dir / "videos" / (
        f"{args.split}_{'all' if args.all else f'task{args.task}'}_steps{args.steps}.mp4"
    )
    paths = [out, out.with_suffix(".gif")] if args.gif and out.suffix.lower() != ".gif" else [out]
    device, max_steps = trainer.device, args.max_steps if args.max_steps is not None else family.horizon
    made = []
    with torch_threads(1):
        shared = detached(policy.params())
        per_task = args.episodes_per_task or config.episodes_per_task
        adapted, memory = video.adapted_params(
            family,
            policy,
            trainer.learner,
            chosen,
            args.steps,
            per_task,
            config.memory_size,
            args.seed,
            device,
            args.later_lr_scale,
            args.later_memory,
        )
        rows = []
        for n, task in enumerate(chosen):
            row = []
            for stage, (params, mem) in (
                ("before adaptation", (shared, None)),
                (stage_name(args.steps), video.task_slice(adapted, shared, memory, n)),
            ):
                env = family.make_env(task, render_mode="rgb_array", width=args.width, height=args.height)
                made.append(env)
                frames = video.rollout_frames(
                    env,
                    policy,
                    params,
                    mem,
                    seed=args.seed,
                    max_steps=max_steps,
                    deterministic=not args.sample,
                    measure=measure_for(family, task),
                    device=device,
                )
                lines = None if args.no_caption else caption_lines(task.describe(), stage)
                row.append(video.Panel(frames, lines))
            rows.append(row)
        stream: Iterator[np.ndarray]
        if args.sequential:
            stream = itertools.chain(video.lockstep([[r[0]] for r in rows]), video.lockstep([[r[1]] for r in rows]))
        else:
            stream = video.lockstep(rows)
        fps = args.fps or float(made[0].metadata.get("render_fps", 20))
        try:
            count = video.write_video(paths, stream, fps)
        finally:
            for env in made:
                env.close()
    print(f"{', '.join(map(str, paths))}: {count} frames at {fps:g} fps, iteration {state['iteration']}")
    for index, task, (before, after) in zip(indices, chosen, rows, strict=True):
        returns = [p.last.episode_return if p.last else float("nan") for p in (before, after)]
        print(
            f"  {args.split} task {index} ({task.describe()}): return before {returns[0]:.1f}, after {returns[1]:.1f}"
        )
    return 0


def caption_lines(description: str, stage: str) -> Callable[[video.Frame], list[str]]:
    """The caption of a panel: the task, the stage, the live measure and the return so far."""
    return lambda frame: [description, stage, f"{frame.measure}  return {frame.episode_return:.1f}"]


if __name__ == "__main__":
    sys.exit(main())
