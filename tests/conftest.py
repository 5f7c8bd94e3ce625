"""Shared pytest configuration and fixtures for the metarl test suite."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Headless MuJoCo rendering; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the packages are importable without an install
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from envs.dynamics import ParamsFamily, ParamsTask


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test in a temporary directory (MuJoCo writes MUJOCO_LOG.TXT to the cwd)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def uniform_params_task() -> Callable[..., ParamsTask]:
    """Factory: a ``ParamsTask`` with one multiplier per field (world body at 1).

    ``uniform_params_task(family, body_mass=m, body_inertia=i, dof_damping=d, geom_friction=f)``
    """

    def make(
        family: ParamsFamily,
        body_mass: float = 1.0,
        body_inertia: float = 1.0,
        dof_damping: float = 1.0,
        geom_friction: float = 1.0,
    ) -> ParamsTask:
        from envs.dynamics import ParamsTask

        values = {
            "body_mass": body_mass,
            "body_inertia": body_inertia,
            "dof_damping": dof_damping,
            "geom_friction": geom_friction,
        }
        model = family.robot.base_model()
        fields = {}
        for name, value in values.items():
            array = np.full(getattr(model, name).shape, value, dtype=np.float64)
            if name.startswith("body_"):
                array[0] = 1.0
            fields[name] = array.tolist()
        task = ParamsTask.from_dict(fields)  # lists become nested tuples
        assert isinstance(task, ParamsTask)
        return task

    return make
