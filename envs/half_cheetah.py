"""HalfCheetah-v5 families: target velocity, direction, mass, friction, per-element dynamics."""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.core import Task, TaskDraws, TaskFamily, Transition, check_range, control_cost
from envs.dynamics import FrictionFamily, MassFamily, ParamsFamily
from envs.mujoco_base import MujocoFamily, Robot

HALF_CHEETAH = Robot(
    name="half_cheetah",
    xml_file="half_cheetah.xml",
    frame_skip=5,
    reset_noise_scale=0.1,
    qvel_noise="normal",
    skipped_qpos=1,
    camera={"distance": 4.0, "trackbodyid": 1},
)


def v5_reward(step: Transition) -> dict[str, np.ndarray]:
    """HalfCheetah-v5 reward terms: ``v_x - 0.1 ||a||^2``."""
    return {"reward_forward": step.x_velocity, "reward_ctrl": -control_cost(step.action, 0.1)}


@dataclasses.dataclass(frozen=True)
class VelocityTask(Task):
    """Run at ``target_velocity`` (m/s)."""

    target_velocity: float

    def describe(self) -> str:
        return f"target {self.target_velocity:.2f} m/s"


@dataclasses.dataclass(frozen=True)
class DirectionTask(Task):
    """Run forward (``direction=+1``) or backward (``-1``)."""

    direction: float

    def describe(self) -> str:
        return "forward" if self.direction > 0 else "backward"


def validate_direction(family: TaskFamily, task: Task) -> Task:
    """Check a 1-D :class:`DirectionTask`: direction is +1 or -1."""
    family._check_type(task)
    assert isinstance(task, DirectionTask)
    if task.direction not in (-1.0, 1.0):
        raise ValueError(f"task parameter direction must be +1 or -1, got {task.direction!r}")
    return task


def draw_directions(draws: TaskDraws) -> list[Task]:
    """``d ~ U{-1, +1}``."""
    return [DirectionTask(float(d)) for d in draws.choice([-1.0, 1.0])]


BOTH_DIRECTIONS: list[Task] = [DirectionTask(1.0), DirectionTask(-1.0)]
"""The test set of the 1-D direction families."""


class HalfCheetahVel(MujocoFamily):
    """Goal velocity (MAML): reward ``-|v_x - v*| - 0.05 ||a||^2``, ``v* ~ U[0, 2]``
    (variant ``pearl``: ``U[0, 3]``); ``ood``: ``v* ~ U[2, 3]``."""

    name = "half_cheetah_vel"
    variants = ("default", "pearl")
    horizon = 200
    robot = HALF_CHEETAH
    task_type = VelocityTask
    has_ood = True
    VELOCITY_RANGE = (-10.0, 10.0)

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        low, high = (2.0, 3.0) if which == "ood" else (0.0, 3.0 if self.variant == "pearl" else 2.0)
        return [VelocityTask(float(v)) for v in draws.uniform(low, high)]

    def validate(self, task: Task) -> Task:
        self._check_type(task)
        check_range("target_velocity", task.target_velocity, *self.VELOCITY_RANGE)  # type: ignore[attr-defined]
        return task

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return {
            "reward_velocity": -np.abs(step.x_velocity - params["target_velocity"]),
            "reward_ctrl": -control_cost(step.action, 0.05),
        }


class HalfCheetahDir(MujocoFamily):
    """Goal direction (MAML): reward ``d * v_x - 0.05 ||a||^2``, ``d ~ U{-1, +1}``."""

    name = "half_cheetah_dir"
    horizon = 100
    robot = HALF_CHEETAH
    task_type = DirectionTask
    num_test_tasks = 2

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        return draw_directions(draws)

    def test_tasks(self) -> list[Task]:
        return list(BOTH_DIRECTIONS)

    def validate(self, task: Task) -> Task:
        return validate_direction(self, task)

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return {
            "reward_forward": params["direction"] * step.x_velocity,
            "reward_ctrl": -control_cost(step.action, 0.05),
        }


class _HalfCheetahDynamics:
    robot = HALF_CHEETAH
    horizon = 200

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return v5_reward(step)


class HalfCheetahMass(_HalfCheetahDynamics, MassFamily):
    """Mass and inertia of every body times ``m``, ``log m ~ U[log 0.5, log 2]``; v5 reward."""

    name = "half_cheetah_mass"


class HalfCheetahFriction(_HalfCheetahDynamics, FrictionFamily):
    """Sliding friction of every geom times ``f``, ``log f ~ U[log 0.25, log 2]``; v5 reward."""

    name = "half_cheetah_friction"


class HalfCheetahParams(_HalfCheetahDynamics, ParamsFamily):
    """Per-element mass, inertia, damping and friction multipliers; v5 reward."""

    name = "half_cheetah_params"
