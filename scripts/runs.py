"""Loading a run directory: its config, a checkpoint, and the family, policy and learner they describe."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import envs  # noqa: E402
from agents.factory import make_learner, make_policy  # noqa: E402
from metarl import checkpoint  # noqa: E402
from metarl.config import TrainConfig  # noqa: E402
from metarl.training import CHECKPOINT, MetaTrainer, resolve_device  # noqa: E402


def checkpoint_path(run_dir: Path, name: str | None = None) -> Path:
    """``run_dir/checkpoint.pt`` (the last) or the named one; ValueError if ``run_dir`` is no run."""
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a metarl run directory (no config.json)")
    path = run_dir / (name or CHECKPOINT)
    if not path.is_file():
        kept = sorted(p.name for p in run_dir.glob("checkpoint*.pt"))
        raise ValueError(f"no checkpoint {path.name} in {run_dir}; available: {', '.join(kept) or 'none'}")
    return path


BEST = "best"
"""``--checkpoint best``: the checkpoint :func:`best_checkpoint` chooses."""


def best_checkpoint(run_dir: Path) -> str:
    """The kept checkpoint whose last ``checkpoint_every`` iterations had the highest mean training
    return after adaptation (``returns/post`` of ``metrics.csv``): a choice made on the training
    tasks alone, like keeping the best model on a validation signal. Candidates are the numbered
    checkpoints and the last one (``checkpoint.pt``)."""
    last = checkpoint.load(checkpoint_path(run_dir))["iteration"]
    every = int(json.loads((run_dir / "config.json").read_text())["checkpoint_every"])
    post: dict[int, float] = {}
    if (run_dir / "metrics.csv").is_file():
        with (run_dir / "metrics.csv").open() as f:
            post = {int(row["iteration"]): float(row["returns/post"]) for row in csv.DictReader(f)}
    done = {int(p.stem.split("_")[1]): p.name for p in run_dir.glob("checkpoint_[0-9]*.pt")}
    done.setdefault(last, CHECKPOINT)
    score = {
        name: sum(block) / len(block)
        for iterations, name in done.items()
        if (block := [post[i] for i in range(iterations - every, iterations) if i in post])
    }
    if not score:
        raise ValueError(f"{run_dir}: no checkpoint with logged training returns (metrics.csv) to choose from")
    return max(score, key=score.__getitem__)


def build_trainer(config: TrainConfig, run_dir: Path, device: str | None = None) -> MetaTrainer:
    """Family, policy and learner of ``config`` wrapped in a trainer writing to ``run_dir``."""
    family = envs.make(config.env, variant=config.variant, split=config.split, clip_actions=config.clip_actions)
    where = resolve_device(device or config.device)
    torch.manual_seed(config.seed)
    policy = make_policy(config, family.observation_dim, family.action_dim).to(where)
    return MetaTrainer(config, family, policy, make_learner(config, policy), run_dir, where)


def load_run(run_dir: Path, name: str | None = None, device: str = "auto") -> tuple[MetaTrainer, dict[str, Any]]:
    """The trainer of a finished or interrupted run with the checkpoint's parameters loaded
    (on ``device``: a run trained on a GPU evaluates on a CPU-only machine)."""
    state = checkpoint.load(checkpoint_path(run_dir, name))
    trainer = build_trainer(TrainConfig.from_dict(state["config"]), run_dir, device)
    trainer.restore(state)
    return trainer, state
