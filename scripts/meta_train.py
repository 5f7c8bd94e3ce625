"""Meta-train a policy with MAML-TRPO on a task family.

    python scripts/meta_train.py --env half_cheetah_vel
    python scripts/meta_train.py --resume runs/half_cheetah_vel__attention__0__20260101-120000

Runs go to runs/<env>__<policy>__<seed>__<time>/ (or --out): config.json,
metrics.csv, TensorBoard events, checkpoint.pt (every iteration, atomic) and
checkpoint_NNNNN.pt every --checkpoint-every iterations.

The defaults below are metarl's; each family's preset overrides some of them,
on one family also per policy (metarl/config.py: PRESETS, POLICY_PRESETS; a run
prints its preset's source), and the flags given override both.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metarl import checkpoint  # noqa: E402
from metarl.config import MAMLConfig, TrainConfig, add_arguments, flag_name, given_settings, preset, resolve  # noqa: E402
from metarl.training import CHECKPOINT, MetaTrainer, TrainingDiverged, keep_freed_memory, run_name  # noqa: E402
from scripts.runs import build_trainer  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="run directory (default: runs/<env>__<policy>__<seed>__<time>)")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with its config (only --iterations,"
        " --time-limit and --device may be given, to extend or move it)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(p.add_argument_group("run"), TrainConfig)
    add_arguments(p.add_argument_group("MAML-TRPO"), MAMLConfig)
    return p


RESUME_OVERRIDES = ("iterations", "time_limit", "device")
"""The settings ``--resume`` may change (to extend or move a run); the others are the run's own."""


def build(args: argparse.Namespace) -> MetaTrainer:
    """Resolve the config, the family, the policy and the run directory (ValueError on bad input)."""
    state = None
    if args.resume is not None:
        fixed = [flag_name(name) for name in given_settings(args) if name not in RESUME_OVERRIDES]
        fixed += ["--out"] if args.out is not None else []
        if fixed:
            *first, last = map(flag_name, RESUME_OVERRIDES)
            raise ValueError(
                f"--resume continues {args.resume} with its saved config; only {', '.join(first)} and {last}"
                f" can change there (given: {', '.join(fixed)})"
            )
        state = checkpoint.load(args.resume / CHECKPOINT)
        overrides = {name: getattr(args, name) for name in RESUME_OVERRIDES if getattr(args, name) is not None}
        config = TrainConfig.from_dict({**state["config"], **overrides})
        run_dir = args.resume
    else:
        config = resolve(args)
        run_dir = args.out or Path("runs") / run_name(config)
        if (run_dir / CHECKPOINT).exists():
            raise ValueError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    trainer = build_trainer(config, run_dir)
    if state is not None:
        trainer.restore(state)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.json")
    return trainer


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM, and SIGINT even where the shell made a background job ignore it, raise
    KeyboardInterrupt (the run stops after its last checkpoint); the old handlers come back after."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        trainer = build(args)
    except (ValueError, checkpoint.CheckpointError) as error:
        print(f"meta_train: error: {error}", file=sys.stderr)
        return 2
    cfg = trainer.config
    source = preset(cfg.env, cfg.policy)[0]
    keep_freed_memory()
    print(f"{trainer.run_dir}: {cfg.env} ({cfg.variant}), {cfg.policy} policy, preset from {source}")
    try:
        with interruptible():
            metrics = trainer.train(progress=not args.no_progress)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted after iteration {trainer.iteration}; resume with --resume {trainer.run_dir}",
            file=sys.stderr,
        )
        return 130
    except TrainingDiverged as error:
        print(f"meta_train: error: {error}", file=sys.stderr)
        return 1
    print(
        f"done after iteration {trainer.iteration}: return before adaptation "
        f"{metrics.get('returns/pre', float('nan')):.2f}, after {metrics.get('returns/post', float('nan')):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
