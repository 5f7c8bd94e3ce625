"""Checkpoints, written atomically: a kill at any instant leaves the last good one readable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or belongs to another run."""


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` via a temporary file in the same directory, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing or corrupt file raises :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # any unpickling or zip failure means a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"checkpoint {path} is not a metarl checkpoint")
    return state
