"""The batched simulator: every (task, episode) slot of a meta-batch stepped at once.

Slot ``b`` runs task ``b // episodes_per_task``. ``reset()`` starts every slot;
``step(actions)`` advances the slots whose episode is still running and returns
vectorised numpy arrays. A slot whose episode ended (termination, horizon, or a
diverged simulation) is masked: it is never stepped on stale state, its reward is
0 and its observation stays the last one, until the next ``reset()``.

MuJoCo families run on ``mujoco.batch.Batch`` (C threads, GIL released, live
``[B, n]`` views of the state), with per-slot model fields for dynamics tasks.
"""

from __future__ import annotations

import abc
import os
from typing import Any, NamedTuple

import mujoco
import numpy as np
from mujoco.batch import Batch, SimulationError

from envs.core import Task, TaskFamily
from envs.mujoco_base import MujocoFamily, check_action


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class StepResult(NamedTuple):
    """One step of ``B`` slots.

    Attributes:
        obs: ``[B, obs_dim]`` float64, a fresh array (never a view of the simulator).
        reward: ``[B]``; 0 for slots that were not stepped.
        done: ``[B]`` bool, the slot's episode has ended (at this step or before).
        info: ``[B]`` arrays: ``active`` (stepped by this call), ``terminated``,
            ``truncated`` (horizon reached), ``unstable`` (the simulation diverged;
            observation kept, reward 0), ``x_velocity`` and every reward term.
    """

    obs: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    info: dict[str, np.ndarray]


class SlotOutcome(NamedTuple):
    """What a subclass's ``_advance`` returns for the ``n`` stepped slots."""

    obs: np.ndarray
    terms: dict[str, np.ndarray]
    terminated: np.ndarray
    unstable: np.ndarray
    x_velocity: np.ndarray


class BatchedSimulator(abc.ABC):
    """Common bookkeeping of the batched simulators (masks, horizon, validation)."""

    def __init__(self, family: TaskFamily, tasks: list[Task], episodes_per_task: int, seed: int) -> None:
        if (
            isinstance(episodes_per_task, bool)
            or not isinstance(episodes_per_task, (int, np.integer))
            or episodes_per_task <= 0
        ):
            raise ValueError(f"episodes_per_task must be a positive integer, got {episodes_per_task!r}")
        self.family = family
        self.tasks = family.validate_tasks(tasks)
        self.episodes_per_task = int(episodes_per_task)
        self.num_slots = len(self.tasks) * self.episodes_per_task
        self.task_index = np.repeat(np.arange(len(self.tasks)), self.episodes_per_task)
        """``[B]``: the task of each slot."""
        self.params = family.task_arrays([self.tasks[i] for i in self.task_index])
        self.horizon = family.horizon
        self.observation_dim = family.observation_dim
        self.action_dim = family.action_dim
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self._done = np.ones(self.num_slots, dtype=bool)
        self._obs = np.zeros((self.num_slots, self.observation_dim))
        self._started = False

    @abc.abstractmethod
    def _reset(self) -> np.ndarray:
        """Start every slot; return the observations ``[B, obs_dim]``."""

    @abc.abstractmethod
    def _advance(self, actions: np.ndarray, ids: np.ndarray | None) -> SlotOutcome:
        """Step the slots ``ids`` (None: all) with their rows of ``actions``."""

    def reset(self) -> np.ndarray:
        """Start a new episode in every slot; returns ``obs [B, obs_dim]``."""
        self._obs = self._reset()
        self._done[:] = False
        self.t = 0
        self._started = True
        return self._obs.copy()

    def step(self, actions: Any) -> StepResult:
        """Advance every running slot by one environment step.

        Args:
            actions: ``[B, act_dim]``, finite (rows of ended slots are ignored);
                clipped to the family's bounds if it has ``clip_actions``.
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._done.all():
            raise RuntimeError("every episode has ended; call reset() to start new ones")
        actions = self.family.applied_action(check_action(actions, (self.num_slots, self.action_dim)))
        active = ~self._done
        ids = None if active.all() else np.flatnonzero(active)
        out = self._advance(actions, ids)
        self.t += 1
        sel = slice(None) if ids is None else ids
        keep = ~out.unstable
        obs = self._obs.copy()
        obs[sel] = np.where(keep[:, None], out.obs, self._obs[sel])
        info: dict[str, np.ndarray] = {}
        reward = np.zeros(self.num_slots)
        for name, value in out.terms.items():
            full = np.zeros(self.num_slots)
            full[sel] = np.where(keep, value, 0.0)
            info[name] = full
            reward += full
        terminated = np.zeros(self.num_slots, dtype=bool)
        unstable = np.zeros(self.num_slots, dtype=bool)
        velocity = np.zeros(self.num_slots)
        terminated[sel] = out.terminated & keep
        unstable[sel] = out.unstable
        velocity[sel] = np.where(keep, out.x_velocity, 0.0)
        truncated = active & ~terminated & ~unstable & (self.t >= self.horizon)
        self._done |= terminated | unstable | truncated
        self._obs = obs
        info.update(active=active, terminated=terminated, truncated=truncated, unstable=unstable, x_velocity=velocity)
        return StepResult(obs.copy(), reward, self._done.copy(), info)

    @property
    def done(self) -> np.ndarray:
        """``[B]`` bool: slots whose episode has ended."""
        return self._done.copy()


class MujocoBatch(BatchedSimulator):
    """Batched simulator of a MuJoCo family on ``mujoco.batch.Batch``.

    Started from the same state with the same actions, each slot follows the
    single-env trajectory of its task (:class:`envs.mujoco_base.MujocoTaskEnv`)
    bit for bit. Robots whose reward uses contact forces (Ant) run a persistent
    batch and call ``mj_rnePostConstraint`` on each slot after the step, as
    Gymnasium does: with the RK4 integrator the forces after a step come from the
    last Runge-Kutta stage, which no sensor-triggered computation reproduces.
    """

    def __init__(
        self,
        family: MujocoFamily,
        tasks: list[Task],
        episodes_per_task: int = 1,
        seed: int = 0,
        nthread: int = 0,
    ) -> None:
        super().__init__(family, tasks, episodes_per_task, seed)
        self.family: MujocoFamily = family
        robot = family.robot
        model = robot.base_model()
        self.model = model
        self.dt = model.opt.timestep * robot.frame_skip
        # nthread 0 is one thread per core this process may use (MuJoCo's own 0 would count the machine's).
        self._sim = Batch(model, self.num_slots, nthread=nthread or available_cores(), persistent=robot.contact_forces)
        self._apply_task_fields()
        sim = self._sim
        self._qpos, self._qvel, self._ctrl, self._time = (
            sim.bind("qpos"),
            sim.bind("qvel"),
            sim.bind("ctrl"),
            sim.bind("time"),
        )
        self._xpos = sim.bind("xpos") if robot.tracked_body is not None else None
        self._init_qpos = model.qpos0.copy()
        self._init_qvel = np.zeros(model.nv)
        self._cfrc = np.zeros((self.num_slots, model.nbody, 6))
        self._scratch = mujoco.MjData(model) if robot.contact_forces else None

    def _apply_task_fields(self) -> None:
        per_task = [self.family.model_fields(task) for task in self.tasks]
        if not per_task[0]:
            return
        for name in per_task[0]:
            self._sim.expand(name)[...] = np.stack([fields[name] for fields in per_task])[self.task_index]
        self._sim.set_const()

    def _reset(self) -> np.ndarray:
        qpos, qvel = self.family.robot.initial_state(self._init_qpos, self._init_qvel, self.rng, self.num_slots)
        self._sim.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        return self._load_state(qpos, qvel)

    def _load_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Write every slot's state and run ``mj_forward``, as the v5 ``set_state``."""
        self._qpos[...] = qpos
        self._qvel[...] = qvel
        self._sim.forward()
        rejected = ~(np.all(self._qpos == qpos, axis=1) & np.all(self._qvel == qvel, axis=1))
        if rejected.any():
            raise ValueError(
                f"MuJoCo rejected the state of slots {np.flatnonzero(rejected).tolist()} as diverged "
                "(NaN, inf or huge qpos/qvel/qacc) and reset them"
            )
        self._cfrc[...] = 0.0  # as v5: no contact forces before the first step
        return self.family.robot.observe(self._qpos, self._qvel, self._cfrc)

    def _position(self, sel: slice | np.ndarray) -> np.ndarray:
        xpos = self._xpos[sel] if self._xpos is not None else np.empty((0,))
        return self.family.robot.position(self._qpos[sel], xpos)

    def _advance(self, actions: np.ndarray, ids: np.ndarray | None) -> SlotOutcome:
        robot = self.family.robot
        sel = slice(None) if ids is None else ids
        before = self._position(sel)
        time_before = self._time[sel].copy()
        self._ctrl[sel] = actions[sel]
        failed = np.zeros(self.num_slots, dtype=bool)
        try:
            # rollout() steps as step() does, bit for bit, but stops a simulation at
            # its first MuJoCo warning: a diverged slot then advanced less time.
            self._sim.rollout(robot.frame_skip, record=(mujoco.mjtState.mjSTATE_TIME,), ids=ids)
        except SimulationError as error:
            failed[error.ids] = True
        cfrc = None
        if robot.contact_forces:
            self._contact_forces(range(self.num_slots) if ids is None else ids)
            cfrc = self._cfrc[sel]
        params = {k: v[sel] for k, v in self.params.items()}
        qpos, qvel = self._qpos[sel], self._qvel[sel]
        out = self.family.outcome(params, qpos, qvel, before, self._position(sel), cfrc, actions[sel], self.dt)
        advanced = self._time[sel] - time_before
        unstable = (
            (advanced < (robot.frame_skip - 0.5) * self.model.opt.timestep)
            | failed[sel]
            | ~np.isfinite(out.obs).all(axis=1)
        )
        return SlotOutcome(out.obs, out.terms, out.terminated, unstable, out.x_velocity)

    def _contact_forces(self, ids: Any) -> None:
        data, model = self._scratch, self.model
        assert data is not None, "contact forces need the scratch MjData"
        for sim in ids:
            self._sim.get_data(sim, data)
            mujoco.mj_rnePostConstraint(model, data)
            self._cfrc[sim] = data.cfrc_ext

    def slot_model(self, slot: int) -> mujoco.MjModel:
        """The model slot ``slot`` runs on (its task's per-slot fields applied)."""
        return self._sim.get_model(slot)

    def slot_data(self, slot: int) -> mujoco.MjData:
        """Slot ``slot``'s state as an MjData (for rendering or comparison)."""
        data = self._sim.get_data(slot)
        mujoco.mj_forward(self.slot_model(slot), data)
        return data

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Overwrite every slot's state (``[B, nq]``, ``[B, nv]``) as ``set_state``
        of the single env does; returns the observations.

        Raises ValueError if MuJoCo rejects a state as diverged (it resets such
        a simulation in ``mj_forward``); the other slots keep the new state."""
        self._obs = self._load_state(qpos, qvel)
        return self._obs.copy()
