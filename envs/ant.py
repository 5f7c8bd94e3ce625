"""Ant-v5 families: running direction (1-D or 2-D) and goal position."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from envs.core import Task, TaskDraws, Transition, control_cost
from envs.half_cheetah import BOTH_DIRECTIONS, DirectionTask, draw_directions, validate_direction
from envs.mujoco_base import MujocoFamily, Robot


def ant_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Ant-v5: finite state and torso height in ``[0.2, 1.0]``."""
    finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
    return finite & (qpos[:, 2] >= 0.2) & (qpos[:, 2] <= 1.0)


ANT = Robot(
    name="ant",
    xml_file="ant.xml",
    frame_skip=5,
    reset_noise_scale=0.1,
    qvel_noise="normal",
    skipped_qpos=2,
    tracked_body=1,
    contact_forces=True,
    healthy=ant_healthy,
    camera={"distance": 4.0, "trackbodyid": 1},
)

CONTACT_COST_WEIGHT = 5e-4


def contact_cost(step: Transition) -> np.ndarray:
    """``5e-4 ||clip(cfrc_ext, -1, 1)||^2`` per slot."""
    forces = step.contact_forces.reshape(len(step.contact_forces), -1)
    return CONTACT_COST_WEIGHT * np.einsum("bi,bi->b", forces, forces)


@dataclasses.dataclass(frozen=True)
class Direction2DTask(Task):
    """Run along the unit vector ``direction``."""

    direction: tuple[float, float]

    def describe(self) -> str:
        return f"heading {math.degrees(math.atan2(self.direction[1], self.direction[0])):.0f} deg"


@dataclasses.dataclass(frozen=True)
class GoalTask(Task):
    """Reach the xy position ``goal``."""

    goal: tuple[float, float]

    def describe(self) -> str:
        return f"goal ({self.goal[0]:.2f}, {self.goal[1]:.2f})"


def _vector(name: str, value: object) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64) if isinstance(value, (tuple, list)) else np.array([np.nan])
    if array.shape != (2,) or not np.all(np.isfinite(array)):
        raise ValueError(f"task parameter {name} must be a pair of finite numbers, got {value!r}")
    return array


class AntDir(MujocoFamily):
    """Goal direction: reward ``d . v + 1 (healthy) - 0.5 ||a||^2 - contact cost``,
    Ant-v5 termination. ``d ~ U{-1, +1}`` along x; variant ``2d``: a unit vector
    with angle ``~ U[0, 2 pi)`` and the projection of the xy velocity."""

    name = "ant_dir"
    variants = ("default", "2d")
    horizon = 200
    robot = ANT

    def __init__(self, variant: str = "default", split: str = "train", clip_actions: bool = False) -> None:
        super().__init__(variant, split, clip_actions)
        self.task_type = Direction2DTask if variant == "2d" else DirectionTask  # type: ignore[misc]
        self.num_test_tasks = 40 if variant == "2d" else 2  # type: ignore[misc]

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        if self.variant == "2d":
            angles = draws.uniform(0.0, 2 * math.pi)
            return [Direction2DTask((float(math.cos(a)), float(math.sin(a)))) for a in angles]
        return draw_directions(draws)

    def test_tasks(self) -> list[Task]:
        return super().test_tasks() if self.variant == "2d" else list(BOTH_DIRECTIONS)

    def validate(self, task: Task) -> Task:
        if self.variant != "2d":
            return validate_direction(self, task)
        self._check_type(task)
        direction = _vector("direction", task.direction)  # type: ignore[attr-defined]
        if abs(np.linalg.norm(direction) - 1.0) > 1e-6:
            raise ValueError(f"task parameter direction must be a unit vector, got norm {np.linalg.norm(direction)}")
        return task

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        direction = params["direction"]
        if direction.ndim == 1:
            forward = direction * step.x_velocity
        else:
            forward = np.einsum("bi,bi->b", direction, step.xy_velocity)
        return {
            "reward_forward": forward,
            "reward_survive": step.healthy.astype(np.float64),
            "reward_ctrl": -control_cost(step.action, 0.5),
            "reward_contact": -contact_cost(step),
        }


class AntGoal(MujocoFamily):
    """Goal position: reward ``-||xy - g||_1 + 1 (healthy) - 0.1 ||a||^2 - contact cost``,
    ``g`` at radius ``3 sqrt(U)`` and angle ``~ U[0, 2 pi)``; no termination."""

    name = "ant_goal"
    horizon = 200
    robot = ANT
    task_type = GoalTask
    terminates = False
    GOAL_BOUND = 10.0

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        radius = 3.0 * np.sqrt(draws.uniform(0.0, 1.0))
        angle = draws.uniform(0.0, 2 * math.pi)
        return [GoalTask((float(r * math.cos(a)), float(r * math.sin(a)))) for r, a in zip(radius, angle, strict=True)]

    def validate(self, task: Task) -> Task:
        self._check_type(task)
        goal = _vector("goal", task.goal)  # type: ignore[attr-defined]
        if np.abs(goal).max() > self.GOAL_BOUND:
            raise ValueError(
                f"task parameter goal={tuple(goal)} is outside the allowed range "
                f"[-{self.GOAL_BOUND}, {self.GOAL_BOUND}]^2"
            )
        return task

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return {
            "reward_goal": -np.abs(step.position - params["goal"]).sum(axis=1),
            "reward_survive": step.healthy.astype(np.float64),
            "reward_ctrl": -control_cost(step.action, 0.1),
            "reward_contact": -contact_cost(step),
        }
