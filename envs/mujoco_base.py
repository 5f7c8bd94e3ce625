"""MuJoCo robots, the family base class for them, and their single Gymnasium env.

The observation, health check, reward and instability handling are written
once, vectorised over a leading slot axis; :class:`MujocoTaskEnv` calls them with
one slot and :class:`envs.vector.MujocoBatch` with many.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box

from envs.core import Task, TaskFamily, Transition

ASSETS = os.path.join(os.path.dirname(gym.__file__), "envs", "mujoco", "assets")

HealthCheck = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(qpos [B, nq], qvel [B, nv]) -> healthy [B]`` (bool)."""


@dataclasses.dataclass(frozen=True)
class Robot:
    """A Gymnasium ``*-v5`` robot with its default arguments.

    Attributes:
        name: short name (``half_cheetah``).
        xml_file: the Gymnasium asset the v5 environment loads.
        frame_skip: MuJoCo steps per environment step.
        reset_noise_scale: scale of the initial-state noise.
        qvel_noise: ``"normal"`` (HalfCheetah, Ant) or ``"uniform"`` (Hopper, Walker2d).
        skipped_qpos: leading ``qpos`` entries left out of the observation.
        qvel_clip: observation clip of ``qvel`` (Hopper, Walker2d: 10), or None.
        tracked_body: body whose ``xpos`` gives the xy position (Ant: torso), or
            None to use ``qpos[0]`` as the x position (planar robots).
        contact_forces: whether observation and reward use ``cfrc_ext`` (Ant),
            computed as Gymnasium does with ``mj_rnePostConstraint`` after the step.
        healthy: the v5 health check, or None for robots that are always healthy.
        camera: Gymnasium's default camera configuration.
    """

    name: str
    xml_file: str
    frame_skip: int
    reset_noise_scale: float
    qvel_noise: str
    skipped_qpos: int
    qvel_clip: float | None = None
    tracked_body: int | None = None
    contact_forces: bool = False
    healthy: HealthCheck | None = None
    camera: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def xml_path(self) -> str:
        return os.path.join(ASSETS, self.xml_file)

    def base_model(self) -> mujoco.MjModel:
        """A fresh copy of the robot's unmodified model."""
        return copy.copy(_load_model(self.xml_path))

    @functools.cached_property
    def dims(self) -> tuple[int, int, int]:
        """``(nq, nv, nbody)`` of the model."""
        model = _load_model(self.xml_path)
        return model.nq, model.nv, model.nbody

    @property
    def observation_dim(self) -> int:
        nq, nv, nbody = self.dims
        return nq - self.skipped_qpos + nv + (6 * (nbody - 1) if self.contact_forces else 0)

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, contact_forces: np.ndarray) -> np.ndarray:
        """The v5 observation ``[B, obs_dim]`` from ``qpos [B, nq]``, ``qvel [B, nv]``
        and clipped ``contact_forces [B, nbody, 6]``."""
        parts = [qpos[:, self.skipped_qpos :]]
        parts.append(qvel if self.qvel_clip is None else np.clip(qvel, -self.qvel_clip, self.qvel_clip))
        if self.contact_forces:
            parts.append(contact_forces[:, 1:].reshape(len(qpos), -1))
        return np.concatenate(parts, axis=1)

    def position(self, qpos: np.ndarray, xpos: np.ndarray) -> np.ndarray:
        """The xy position the velocity is measured on, ``[B, 2]``."""
        if self.tracked_body is not None:
            return xpos[:, self.tracked_body, :2].copy()
        return np.stack([qpos[:, 0], np.zeros(len(qpos))], axis=1)

    def initial_state(
        self, init_qpos: np.ndarray, init_qvel: np.ndarray, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` v5 initial states ``(qpos [n, nq], qvel [n, nv])``, drawn as ``reset_model``."""
        scale = self.reset_noise_scale
        qpos = init_qpos + rng.uniform(low=-scale, high=scale, size=(n, init_qpos.size))
        if self.qvel_noise == "normal":
            qvel = init_qvel + scale * rng.standard_normal((n, init_qvel.size))
        else:
            qvel = init_qvel + rng.uniform(low=-scale, high=scale, size=(n, init_qvel.size))
        return qpos, qvel


_TOTAL_MASS = re.compile(r'\s+settotalmass="([^"]+)"')


@functools.cache
def _load_model(path: str) -> mujoco.MjModel:
    """The compiled asset. MuJoCo 4 deprecates the compiler's ``settotalmass`` (HalfCheetah's
    asset sets it): compiling it prints a warning and writes ``MUJOCO_LOG.TXT`` into the working
    directory. It is applied instead as that warning says, with ``mj_setTotalmass`` and
    ``mj_setConst`` on the compiled model, which gives the same model field for field."""
    with open(path) as file:
        xml = file.read()
    total_mass = _TOTAL_MASS.search(xml)
    if total_mass is None:
        return mujoco.MjModel.from_xml_path(path)
    model = mujoco.MjModel.from_xml_string(xml.replace(total_mass.group(0), "", 1))
    mujoco.mj_setTotalmass(model, float(total_mass.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


CONTACT_FORCE_RANGE = (-1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Everything a step produces for ``B`` slots (obs ``[B, obs_dim]``, the rest ``[B]``)."""

    obs: np.ndarray
    reward: np.ndarray
    terms: dict[str, np.ndarray]
    terminated: np.ndarray
    x_velocity: np.ndarray


class MujocoFamily(TaskFamily):
    """A task family on a MuJoCo robot; subclasses set ``robot`` and the reward."""

    robot: ClassVar[Robot]
    terminates: ClassVar[bool] = True
    """Whether an unhealthy robot ends the episode (robots with a health check)."""

    @property
    def observation_dim(self) -> int:
        return self.robot.observation_dim

    @property
    def action_dim(self) -> int:
        return int(_load_model(self.robot.xml_path).nu)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The actuators' control range, as Gymnasium's action space."""
        low, high = _load_model(self.robot.xml_path).actuator_ctrlrange.T
        return low.copy(), high.copy()

    def model_fields(self, task: Task) -> dict[str, np.ndarray]:
        """Model fields this task changes, as full arrays (dynamics families)."""
        return {}

    def task_model(self, task: Task) -> mujoco.MjModel:
        """A fresh model for ``task``: the base model with its fields applied."""
        model = self.robot.base_model()
        fields = self.model_fields(self.validate(task))
        for name, values in fields.items():
            getattr(model, name)[...] = values
        if fields:
            mujoco.mj_setConst(model, mujoco.MjData(model))
        return model

    def outcome(
        self,
        params: dict[str, np.ndarray],
        qpos: np.ndarray,
        qvel: np.ndarray,
        before: np.ndarray,
        after: np.ndarray,
        cfrc_ext: np.ndarray | None,
        action: np.ndarray,
        dt: float,
    ) -> Outcome:
        """Observation, reward terms and termination of one step of ``B`` slots.

        Args:
            params: per-slot task parameters (:meth:`task_arrays`).
            qpos, qvel: state after the step, ``[B, nq]``, ``[B, nv]``.
            before, after: tracked xy position before/after, ``[B, 2]``.
            cfrc_ext: ``[B, nbody, 6]`` for robots with contact forces, else None.
            action: ``[B, act_dim]``.
            dt: ``timestep * frame_skip``.
        """
        robot = self.robot
        if cfrc_ext is None:
            forces = np.zeros((len(qpos), 1, 6))
        else:
            forces = np.clip(cfrc_ext, *CONTACT_FORCE_RANGE)
        velocity = (after - before) / dt
        healthy = np.ones(len(qpos), dtype=bool) if robot.healthy is None else robot.healthy(qpos, qvel)
        step = Transition(action, velocity[:, 0], velocity, after, healthy, forces)
        terms = self.reward_terms(params, step)
        reward = np.sum(list(terms.values()), axis=0)
        terminated = ~healthy if (self.terminates and robot.healthy is not None) else np.zeros_like(healthy)
        return Outcome(robot.observe(qpos, qvel, forces), reward, terms, terminated, velocity[:, 0])

    def make_env(self, task: Task | None = None, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
        return MujocoTaskEnv(self, task, render_mode=render_mode, **kwargs)

    def batch(self, tasks: list[Task], episodes_per_task: int = 1, seed: int = 0, nthread: int = 0):  # type: ignore[no-untyped-def]
        from envs.vector import MujocoBatch

        return MujocoBatch(self, tasks, episodes_per_task=episodes_per_task, seed=seed, nthread=nthread)


def check_action(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``action`` as float64 of ``shape``; a ValueError (nothing stepped) otherwise."""
    array = np.asarray(action, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"actions must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise ValueError(f"actions must be finite; found {array[tuple(bad)]} at index {bad}")
    return array


DIVERGENCE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC,
)
"""MuJoCo answers a NaN, inf or huge ``qpos``/``qvel``/``qacc`` with one of these
warnings and ``mj_resetData``: the simulation diverged."""


def divergence_count(data: mujoco.MjData) -> int:
    """How often ``data`` diverged (and was reset by MuJoCo) so far."""
    return sum(int(data.warning[w].number) for w in DIVERGENCE_WARNINGS)


class MujocoTaskEnv(MujocoEnv):
    """One task of a MuJoCo family as a Gymnasium environment.

    Dynamics, observation, reset noise and ``frame_skip`` are those of the
    robot's Gymnasium ``*-v5`` environment; the reward is the family's. ``info``
    carries each reward term (they sum to the reward), ``x_velocity`` and
    ``unstable`` (the simulation diverged: the episode ends, the observation is
    the last good one and the reward 0).
    """

    def __init__(
        self,
        family: MujocoFamily,
        task: Task | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_id: int | None = None,
        camera_name: str | None = None,
    ) -> None:
        self.family = family
        self.task = family.validate(family.default_task() if task is None else task)
        self._params = family.task_arrays([self.task])
        robot = family.robot
        base = _load_model(robot.xml_path)
        self.metadata = {
            "render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"],
            "render_fps": int(np.round(1.0 / (base.opt.timestep * robot.frame_skip))),
        }
        MujocoEnv.__init__(
            self,
            robot.xml_path,
            robot.frame_skip,
            observation_space=Box(-np.inf, np.inf, (robot.observation_dim,), np.float64),
            render_mode=render_mode,
            width=width,
            height=height,
            camera_id=camera_id,
            camera_name=camera_name,
            default_camera_config=robot.camera,
        )
        self._last_obs = np.zeros(robot.observation_dim)
        self._tracking = False

    def render(self) -> Any:
        """As Gymnasium's, but the default camera follows the robot (``trackbodyid``)."""
        if not self._tracking and self.render_mode in ("rgb_array", "depth_array", "rgbd_tuple"):
            self._track_robot()
        return super().render()

    def _track_robot(self) -> None:
        # Gymnasium copies trackbodyid onto a *free* camera (which ignores it) and
        # resets the camera type on every render(); switch the default camera to
        # tracking and keep it so. A named or numbered camera is left alone.
        self._tracking = True
        body = self.family.robot.camera.get("trackbodyid")
        renderer = self.mujoco_renderer
        if body is None or renderer.camera_id not in (-1, None):
            return
        viewer = renderer._get_viewer(render_mode=self.render_mode)
        viewer.cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        viewer.cam.trackbodyid = int(body)
        renderer.camera_id = None

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = self.family.task_model(self.task)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _position(self) -> np.ndarray:
        return self.family.robot.position(self.data.qpos[None], self.data.xpos[None])

    def _observation(self) -> np.ndarray:
        robot = self.family.robot
        forces = np.clip(self.data.cfrc_ext[None], *CONTACT_FORCE_RANGE)
        return robot.observe(self.data.qpos[None], self.data.qvel[None], forces)[0]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:  # type: ignore[override]
        action = self.family.applied_action(check_action(action, (self.family.action_dim,)))
        before, diverged = self._position(), divergence_count(self.data)
        self.do_simulation(action, self.frame_skip)
        out = self.family.outcome(
            self._params,
            self.data.qpos[None],
            self.data.qvel[None],
            before,
            self._position(),
            self.data.cfrc_ext[None] if self.family.robot.contact_forces else None,
            action[None],
            self.dt,
        )
        unstable = divergence_count(self.data) > diverged
        terms = {k: float(v[0]) for k, v in out.terms.items()}
        if unstable:
            terms = {k: 0.0 for k in terms}
        else:
            self._last_obs = out.obs[0]
        info = {**terms, "x_velocity": 0.0 if unstable else float(out.x_velocity[0]), "unstable": unstable}
        if self.render_mode == "human":
            self.render()
        terminated = unstable or bool(out.terminated[0])
        return self._last_obs.copy(), float(sum(terms.values())), terminated, False, info

    def reset_model(self) -> np.ndarray:
        qpos, qvel = self.family.robot.initial_state(self.init_qpos, self.init_qvel, self.np_random, 1)
        self.set_state(qpos[0], qvel[0])  # as v5: cfrc_ext stays zero until the first step
        self._last_obs = self._observation()
        return self._last_obs.copy()

    def _get_reset_info(self) -> dict[str, Any]:
        return {"task": self.task.to_dict()}
