"""2-D point navigation (MAML): move a point to a goal. Pure numpy, no MuJoCo."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

from envs.core import Task, TaskDraws, TaskFamily, Transition
from envs.mujoco_base import check_action
from envs.vector import BatchedSimulator, SlotOutcome

MAX_STEP = 0.1
"""The action is a velocity clipped to ``[-0.1, 0.1]^2``."""


@dataclasses.dataclass(frozen=True)
class PointGoalTask(Task):
    """Reach ``goal`` in the plane."""

    goal: tuple[float, float]

    def describe(self) -> str:
        return f"goal ({self.goal[0]:.2f}, {self.goal[1]:.2f})"


class PointNav(TaskFamily):
    """Reward ``-||p - g||_2`` after the move, start at the origin, ``g ~ U[-0.5, 0.5]^2``."""

    name = "point_nav"
    horizon = 100
    task_type = PointGoalTask
    GOAL_BOUND = 10.0

    @property
    def observation_dim(self) -> int:
        return 2

    @property
    def action_dim(self) -> int:
        return 2

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``[-0.1, 0.1]^2``, where the dynamics clip the action anyway."""
        return np.full(2, -MAX_STEP), np.full(2, MAX_STEP)

    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        return [PointGoalTask((float(x), float(y))) for x, y in draws.uniform(-0.5, 0.5, (2,))]

    def validate(self, task: Task) -> Task:
        self._check_type(task)
        goal = task.goal  # type: ignore[attr-defined]
        array = np.asarray(goal, dtype=np.float64) if isinstance(goal, (tuple, list)) else np.array([np.nan])
        if array.shape != (2,) or not np.all(np.isfinite(array)):
            raise ValueError(f"task parameter goal must be a pair of finite numbers, got {goal!r}")
        if np.abs(array).max() > self.GOAL_BOUND:
            raise ValueError(
                f"task parameter goal={goal} is outside the allowed range [-{self.GOAL_BOUND}, {self.GOAL_BOUND}]^2"
            )
        return task

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return {"reward_distance": -np.linalg.norm(step.position - params["goal"], axis=1)}

    def move(
        self, position: np.ndarray, action: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One step of ``B`` points: new positions ``[B, 2]`` and reward terms."""
        clipped = np.clip(action, -MAX_STEP, MAX_STEP)
        after = position + clipped
        n = len(position)
        step = Transition(action, clipped[:, 0], clipped, after, np.ones(n, dtype=bool), np.zeros((n, 1, 6)))
        return after, self.reward_terms(params, step)

    def make_env(self, task: Task | None = None, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
        return PointNavEnv(self, task, render_mode=render_mode, **kwargs)

    def batch(self, tasks: list[Task], episodes_per_task: int = 1, seed: int = 0, nthread: int = 0) -> BatchedSimulator:
        return PointNavBatch(self, tasks, episodes_per_task, seed)


class PointNavEnv(gym.Env):
    """One point-navigation task as a Gymnasium environment (``rgb_array`` rendering)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        family: PointNav,
        task: Task | None = None,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: rgb_array")
        self.family = family
        self.task = family.validate(family.default_task() if task is None else task)
        self._params = family.task_arrays([self.task])
        self.render_mode = render_mode
        self.width, self.height = width, height
        self.observation_space = Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = Box(-MAX_STEP, MAX_STEP, (2,), np.float32)
        self._position = np.zeros(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._position = np.zeros(2)
        return self._position.copy(), {"task": self.task.to_dict()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = self.family.applied_action(check_action(action, (2,)))
        after, terms = self.family.move(self._position[None], action[None], self._params)
        self._position = after[0]
        terms_info = {k: float(v[0]) for k, v in terms.items()}
        info = {**terms_info, "x_velocity": float(np.clip(action[0], -MAX_STEP, MAX_STEP))}
        return self._position.copy(), float(sum(terms_info.values())), False, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((self.height, self.width, 3), 255, dtype=np.uint8)
        for point, color in ((np.asarray(self.task.goal), (40, 160, 40)), (self._position, (200, 40, 40))):  # type: ignore[attr-defined]
            x = int((point[0] + 1.0) / 2.0 * (self.width - 1))
            y = int((1.0 - point[1]) / 2.0 * (self.height - 1))
            frame[max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = color
        return frame


class PointNavBatch(BatchedSimulator):
    """Batched point navigation: every slot moved by one vectorised numpy step."""

    def __init__(self, family: PointNav, tasks: list[Task], episodes_per_task: int = 1, seed: int = 0) -> None:
        super().__init__(family, tasks, episodes_per_task, seed)
        self.family: PointNav = family
        self._position = np.zeros((self.num_slots, 2))

    def _reset(self) -> np.ndarray:
        self._position = np.zeros((self.num_slots, 2))
        return self._position.copy()

    def _advance(self, actions: np.ndarray, ids: np.ndarray | None) -> SlotOutcome:
        sel = slice(None) if ids is None else ids
        params = {k: v[sel] for k, v in self.params.items()}
        after, terms = self.family.move(self._position[sel], actions[sel], params)
        self._position[sel] = after
        n = len(after)
        return SlotOutcome(
            after.copy(),
            terms,
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=bool),
            np.clip(actions[sel, 0], -MAX_STEP, MAX_STEP),
        )
