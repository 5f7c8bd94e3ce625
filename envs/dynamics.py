"""Dynamics randomisation: the task types and model changes of the mass,
friction and per-element (``*_params``, after rand_param_envs) families.

Multipliers always scale a fresh copy of the base model's values
(:meth:`envs.mujoco_base.Robot.base_model`), never values already scaled for an
earlier task, and the world body is never changed. ``mj_setConst`` follows, so
derived constants (subtree masses, inverse weights) match the new masses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from envs.core import Task, TaskDraws, check_range
from envs.mujoco_base import MujocoFamily

SCALE_RANGE = (1e-3, 1e3)
"""Allowed range of every dynamics multiplier (training draws far inside it)."""

PARAM_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
"""``field *= base**u`` with an independent ``u`` per element."""


@dataclasses.dataclass(frozen=True)
class MassTask(Task):
    """Every body's mass and inertia scaled by ``mass_scale``."""

    mass_scale: float

    def describe(self) -> str:
        return f"mass x {self.mass_scale:.2f}"


@dataclasses.dataclass(frozen=True)
class FrictionTask(Task):
    """Every geom's sliding friction scaled by ``friction_scale``."""

    friction_scale: float

    def describe(self) -> str:
        return f"friction x {self.friction_scale:.2f}"


@dataclasses.dataclass(frozen=True)
class ParamsTask(Task):
    """Per-element multipliers of ``body_mass``, ``body_inertia``, ``dof_damping``
    and ``geom_friction`` (shapes of the model's arrays; world body at 1)."""

    body_mass: tuple[float, ...]
    body_inertia: tuple[tuple[float, ...], ...]
    dof_damping: tuple[float, ...]
    geom_friction: tuple[tuple[float, ...], ...]

    def describe(self) -> str:
        mass = np.asarray(self.body_mass[1:])
        damping = np.asarray(self.dof_damping)
        return f"mass x {mass.min():.2f}..{mass.max():.2f}, damping x {damping.min():.2f}..{damping.max():.2f}"


def _two_intervals(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float], n: int) -> np.ndarray:
    """Uniform in ``low`` or ``high`` (each with probability 1/2)."""
    upper = rng.random(n) < 0.5
    return np.where(upper, rng.uniform(*high, n), rng.uniform(*low, n))


class _ScaleFamily(MujocoFamily):
    """One scalar multiplier per task, log-uniform in training, two intervals out of it."""

    has_ood = True
    scale_field: ClassVar[str]
    train_range: ClassVar[tuple[float, float]]
    ood_ranges: ClassVar[tuple[tuple[float, float], tuple[float, float]]]

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        if which == "ood":
            values = _two_intervals(draws.rng, *self.ood_ranges, draws.n)
        else:
            low, high = self.train_range
            values = np.exp(draws.uniform(math.log(low), math.log(high)))
        return [self.task_type(float(v)) for v in values]  # type: ignore[call-arg]

    def validate(self, task: Task) -> Task:
        self._check_type(task)
        check_range(self.scale_field, getattr(task, self.scale_field), *SCALE_RANGE)
        return task

    def task_arrays(self, tasks: list[Task]) -> dict[str, np.ndarray]:
        return {}


class MassFamily(_ScaleFamily):
    """Base for ``*_mass``: every body's mass and inertia times ``mass_scale``."""

    task_type = MassTask
    scale_field = "mass_scale"
    train_range = (0.5, 2.0)
    ood_ranges = ((0.33, 0.5), (2.0, 3.0))

    def model_fields(self, task: Task) -> dict[str, np.ndarray]:
        assert isinstance(task, MassTask)
        model = self.robot.base_model()
        mass, inertia = model.body_mass.copy(), model.body_inertia.copy()
        mass[1:] *= task.mass_scale
        inertia[1:] *= task.mass_scale
        return {"body_mass": mass, "body_inertia": inertia}


class FrictionFamily(_ScaleFamily):
    """Base for ``*_friction``: every geom's sliding friction times ``friction_scale``."""

    task_type = FrictionTask
    scale_field = "friction_scale"
    train_range = (0.25, 2.0)
    ood_ranges = ((0.1, 0.25), (2.0, 3.0))

    def model_fields(self, task: Task) -> dict[str, np.ndarray]:
        assert isinstance(task, FrictionTask)
        friction = self.robot.base_model().geom_friction.copy()
        friction[:, 0] *= task.friction_scale
        return {"geom_friction": friction}


class ParamsFamily(MujocoFamily):
    """Base for ``*_params``: ``u ~ U[-3, 3]`` per element (``--split ood``: ``U[-2, 2]``);
    ``ood`` tasks have ``|u| ~ U[2, 3]`` with a random sign."""

    task_type = ParamsTask
    has_ood = True

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        model = self.robot.base_model()
        return {name: getattr(model, name).shape for name in PARAM_BASES}

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        shapes = self._shapes()
        bound = 2.0 if which == "reduced" else 3.0
        if draws.stratified:  # every element across the tasks at once (training ranges: sample_tasks)
            columns = {name: draws.uniform(-bound, bound, shape) for name, shape in shapes.items()}
            exponents = [{name: column[i] for name, column in columns.items()} for i in range(draws.n)]
        else:  # task by task, element by element
            exponents = [
                {
                    name: draws.rng.uniform(2.0, 3.0, shape) * draws.rng.choice([-1.0, 1.0], shape)
                    if which == "ood"
                    else draws.rng.uniform(-bound, bound, shape)
                    for name, shape in shapes.items()
                }
                for _ in range(draws.n)
            ]
        return [self._task(u) for u in exponents]

    @staticmethod
    def _task(exponents: dict[str, np.ndarray]) -> ParamsTask:
        fields = {}
        for name, u in exponents.items():
            if name.startswith("body_"):
                u = u.copy()
                u[0] = 0.0  # the world body is never changed
            fields[name] = _tuples(PARAM_BASES[name] ** u)
        return ParamsTask(**fields)

    def validate(self, task: Task) -> Task:
        self._check_type(task)
        for name, shape in self._shapes().items():
            values = np.asarray(getattr(task, name), dtype=np.float64)
            if values.shape != shape:
                raise ValueError(f"task parameter {name} must have shape {shape}, got {values.shape}")
            bad = ~np.isfinite(values) | (values < SCALE_RANGE[0]) | (values > SCALE_RANGE[1])
            if bad.any():
                index = tuple(np.argwhere(bad)[0].tolist())
                raise ValueError(
                    f"task parameter {name}{list(index)}={values[index]} is outside the allowed range "
                    f"[{SCALE_RANGE[0]}, {SCALE_RANGE[1]}]"
                )
            if name.startswith("body_") and not np.all(values[0] == 1.0):
                raise ValueError(f"task parameter {name}[0] (the world body) must be 1")
        return task

    def task_arrays(self, tasks: list[Task]) -> dict[str, np.ndarray]:
        return {}

    def model_fields(self, task: Task) -> dict[str, np.ndarray]:
        model = self.robot.base_model()
        return {name: getattr(model, name) * np.asarray(getattr(task, name)) for name in PARAM_BASES}


def _tuples(values: np.ndarray) -> tuple[Any, ...]:
    if values.ndim == 1:
        return tuple(float(v) for v in values)
    return tuple(_tuples(row) for row in values)


def plain_params_task(family: ParamsFamily) -> ParamsTask:
    """The task whose multipliers are all 1: the plain v5 environment."""
    shapes = family._shapes()
    return ParamsTask(**{name: _tuples(np.ones(shape)) for name, shape in shapes.items()})
