"""Tasks, task families and the per-step quantities shared by every simulator.

A *task* is a small frozen dataclass of parameters (JSON-serialisable). A *task
family* is a distribution over tasks: it samples training tasks from an explicit
``numpy.random.Generator``, holds fixed held-out sets (``test``, ``ood``), and
builds simulators for a list of tasks: a single Gymnasium environment
(``make_env``) or the batched simulator (``batch``). The reward of a family is a
function of a :class:`Transition`, vectorised over a leading slot axis ``[B]``,
so the single and batched simulators compute it with the same code.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import zlib
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym

    from envs.vector import BatchedSimulator

NUM_HELD_OUT = 40
"""Size of the fixed ``test`` and ``ood`` task lists (``*_dir`` families: 2)."""

SPLITS = ("train", "ood")
"""Training splits: ``ood`` trains on the reduced range where a family has one."""


@dataclasses.dataclass(frozen=True)
class Task:
    """Base of every family's task: frozen, hashable, JSON-serialisable."""

    def to_dict(self) -> dict[str, Any]:
        """The task's parameters as plain JSON types (tuples become lists)."""
        return {field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Task:
        """Inverse of :meth:`to_dict`."""
        names = {field.name for field in dataclasses.fields(cls)}
        if set(values) != names:
            raise ValueError(f"{cls.__name__} takes the fields {sorted(names)}, got {sorted(values)}")
        return cls(**{k: _tupled(v) for k, v in values.items()})

    def describe(self) -> str:
        """A short human-readable caption, e.g. ``target 1.40 m/s``."""
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items())


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


class Transition(NamedTuple):
    """What a reward function may look at for one step of ``B`` slots.

    Shapes: ``action [B, act_dim]``, ``x_velocity [B]``, ``xy_velocity [B, 2]``,
    ``position [B, 2]`` (the tracked body's xy after the step; for 1-D robots the
    second column is 0), ``healthy [B]`` (bool), ``contact_forces [B, nbody, 6]``
    (already clipped; zeros where a robot has none).
    """

    action: np.ndarray
    x_velocity: np.ndarray
    xy_velocity: np.ndarray
    position: np.ndarray
    healthy: np.ndarray
    contact_forces: np.ndarray


def control_cost(action: np.ndarray, weight: float) -> np.ndarray:
    """``weight * ||a||^2`` per slot; ``action [B, act_dim]`` -> ``[B]``."""
    return weight * np.einsum("bi,bi->b", action, action)


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise a ValueError naming ``name`` unless ``low <= value <= high`` (finite)."""
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value)):
        raise ValueError(f"task parameter {name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"task parameter {name}={value} is outside the allowed range [{low}, {high}]")


class TaskDraws:
    """The random numbers of one draw of ``n`` tasks, every array with the tasks on its first axis.

    Plain draws are i.i.d. from ``rng``. Stratified draws (``stratified=True``) have the same
    distribution for each task but cover the range evenly across the ``n`` tasks: each column of
    :meth:`uniform` is a Latin-hypercube sample (one value from each of ``n`` equal-probability
    strata, in random order), and :meth:`choice` takes every value ``n // k`` times (the remaining
    ``n % k`` distinct and at random), shuffled. A meta-batch of ``half_cheetah_dir`` tasks then
    holds as many forward as backward tasks. Only training draws stratify (``sample_tasks``); the
    fixed held-out sets are plain draws of their own streams.
    """

    def __init__(self, rng: np.random.Generator, n: int, stratified: bool = False) -> None:
        self.rng, self.n, self.stratified = rng, n, stratified

    def uniform(self, low: float, high: float, dims: tuple[int, ...] = ()) -> np.ndarray:
        """``U[low, high)`` of shape ``[n, *dims]``."""
        if not self.stratified:
            return self.rng.uniform(low, high, (self.n, *dims))
        strata = self.rng.permuted(
            np.broadcast_to(np.arange(self.n).reshape(-1, *[1] * len(dims)), (self.n, *dims)), axis=0
        )
        return low + (high - low) * (strata + self.rng.random((self.n, *dims))) / self.n

    def choice(self, values: list[float]) -> np.ndarray:
        """``n`` values drawn uniformly from ``values``."""
        if not self.stratified:
            return self.rng.choice(values, self.n)
        k = len(values)
        rest = self.rng.choice(k, self.n % k, replace=False)
        return np.asarray(values)[self.rng.permutation(np.concatenate([np.tile(np.arange(k), self.n // k), rest]))]


class TaskFamily(abc.ABC):
    """A distribution over tasks of one robot, and the simulators for them.

    Args:
        variant: one of ``variants`` (``"default"`` unless stated).
        split: ``"train"`` or ``"ood"``; with ``"ood"``, training tasks come from
            the reduced range of families whose ``ood`` set is inside the full
            training range.
        clip_actions: its simulators and Gymnasium envs clip every action to
            :attr:`action_bounds` before it acts, and the reward (a control cost)
            sees the clipped action, as rllab's normalised envs (the MAML paper),
            learn2learn and stable-baselines3 do; off, the action goes to the
            physics as given (MuJoCo clamps the control) and the control cost sees
            it unclipped, as Gymnasium and pytorch-maml-rl do.
    """

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]] = ("default",)
    horizon: ClassVar[int]
    task_type: ClassVar[type[Task]]
    has_ood: ClassVar[bool] = False
    num_test_tasks: ClassVar[int] = NUM_HELD_OUT

    def __init__(self, variant: str = "default", split: str = "train", clip_actions: bool = False) -> None:
        if variant not in self.variants:
            raise ValueError(f"unknown variant {variant!r} for {self.name}; valid variants: {', '.join(self.variants)}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        self.variant = variant
        self.split = split
        self.clip_actions = bool(clip_actions)

    def __repr__(self) -> str:
        clip = ", clip_actions=True" if self.clip_actions else ""
        return f"{type(self).__name__}(variant={self.variant!r}, split={self.split!r}{clip})"

    # ----------------------------------------------------------------- tasks
    @abc.abstractmethod
    def _draw(self, draws: TaskDraws, which: str) -> list[Task]:
        """Draw ``draws.n`` tasks; ``which`` is ``"train"``, ``"reduced"`` or ``"ood"``."""

    @abc.abstractmethod
    def validate(self, task: Task) -> Task:
        """Return ``task`` if this family can simulate it, else raise ValueError."""

    def sample_tasks(self, rng: np.random.Generator, num_tasks: int, stratified: bool = False) -> list[Task]:
        """Sample ``num_tasks`` training tasks from ``rng``, stratified across them if asked
        (same distribution per task, the range covered evenly: :class:`TaskDraws`)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks <= 0:
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        which = "reduced" if self.split == "ood" and self.has_ood else "train"
        return self._draw(TaskDraws(rng, int(num_tasks), stratified), which)

    def _held_out_rng(self, which: str) -> np.random.Generator:
        # A stream of the family's own: seeded by its name, never by a user seed.
        key = zlib.crc32(f"metarl/{self.name}/{self.variant}/{which}".encode())
        return np.random.default_rng([0x6D657461, key])

    def test_tasks(self) -> list[Task]:
        """The fixed held-out tasks, drawn once from the training distribution."""
        return self._draw(TaskDraws(self._held_out_rng("test"), self.num_test_tasks), "train")

    def ood_tasks(self) -> list[Task]:
        """The fixed out-of-distribution tasks (only for families that have them)."""
        if not self.has_ood:
            raise ValueError(f"{self.name} has no ood tasks; its held-out split is: test")
        return self._draw(TaskDraws(self._held_out_rng("ood"), NUM_HELD_OUT), "ood")

    def held_out_tasks(self, split: str) -> list[Task]:
        """``test_tasks()``, ``ood_tasks()`` or (``"train"``) a fixed training sample."""
        if split == "test":
            return self.test_tasks()
        if split == "ood":
            return self.ood_tasks()
        if split == "train":
            return self.sample_tasks(self._held_out_rng("train"), NUM_HELD_OUT)
        valid = "test, ood, train" if self.has_ood else "test, train"
        raise ValueError(f"unknown split {split!r} for {self.name}; valid splits: {valid}")

    def default_task(self) -> Task:
        """The task a bare ``gymnasium.make`` uses: the first test task."""
        return self.test_tasks()[0]

    # ------------------------------------------------------------ simulators
    @property
    @abc.abstractmethod
    def observation_dim(self) -> int:
        """Length of an observation."""

    @property
    @abc.abstractmethod
    def action_dim(self) -> int:
        """Length of an action."""

    @property
    @abc.abstractmethod
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``, each ``[act_dim]``: the action space's bounds."""

    def applied_action(self, action: np.ndarray) -> np.ndarray:
        """The action as it acts: clipped to :attr:`action_bounds` with ``clip_actions``."""
        return np.clip(action, *self.action_bounds) if self.clip_actions else action

    @abc.abstractmethod
    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        """Each reward term ``[B]`` of one step; the reward is their sum.

        ``params`` holds the tasks' parameters stacked per slot (:meth:`task_arrays`).
        """

    def task_arrays(self, tasks: list[Task]) -> dict[str, np.ndarray]:
        """Task parameters stacked per slot, ``{field: [B, ...]}`` (float64)."""
        return {
            field.name: np.array([getattr(t, field.name) for t in tasks], dtype=np.float64)
            for field in dataclasses.fields(self.task_type)
        }

    @abc.abstractmethod
    def make_env(self, task: Task | None = None, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
        """A single Gymnasium environment for ``task`` (default: ``default_task()``)."""

    @abc.abstractmethod
    def batch(self, tasks: list[Task], episodes_per_task: int = 1, seed: int = 0, nthread: int = 0) -> BatchedSimulator:
        """One simulator stepping ``len(tasks) * episodes_per_task`` slots at once.

        Slot ``b`` runs task ``b // episodes_per_task``.
        """

    def validate_tasks(self, tasks: list[Task]) -> list[Task]:
        """Validate a non-empty list of tasks."""
        if not isinstance(tasks, (list, tuple)) or len(tasks) == 0:
            raise ValueError("tasks must be a non-empty list of tasks")
        return [self.validate(task) for task in tasks]

    def _check_type(self, task: Task) -> None:
        if not isinstance(task, self.task_type):
            raise ValueError(f"{self.name} takes {self.task_type.__name__} tasks, got {type(task).__name__}")
