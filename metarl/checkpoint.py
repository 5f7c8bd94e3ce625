"""Checkpoints, written atomically: a kill at any instant leaves the last good one readable."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or belongs to another run."""


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` only once the block has written it completely:
    a temporary file in the same directory, flushed, fsynced and renamed; removed if the block fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        torch.save(state, f)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(json.dumps(value, indent=1).encode())


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
