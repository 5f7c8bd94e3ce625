"""Hopper-v5 with per-element dynamics multipliers."""

from __future__ import annotations

import numpy as np

from envs.core import Transition, control_cost
from envs.dynamics import ParamsFamily
from envs.mujoco_base import Robot


def hopper_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Hopper-v5: state[2:] in (-100, 100), z > 0.7, |angle| < 0.2."""
    state = np.concatenate([qpos, qvel], axis=1)[:, 2:]
    healthy_state = np.all((state > -100.0) & (state < 100.0), axis=1)
    z, angle = qpos[:, 1], qpos[:, 2]
    return healthy_state & (z > 0.7) & (z < np.inf) & (angle > -0.2) & (angle < 0.2)


HOPPER = Robot(
    name="hopper",
    xml_file="hopper.xml",
    frame_skip=4,
    reset_noise_scale=5e-3,
    qvel_noise="uniform",
    skipped_qpos=1,
    qvel_clip=10.0,
    healthy=hopper_healthy,
    camera={"trackbodyid": 2, "distance": 3.0, "lookat": np.array((0.0, 0.0, 1.15)), "elevation": -20.0},
)


def survive_reward(step: Transition, ctrl_weight: float = 1e-3) -> dict[str, np.ndarray]:
    """Hopper-v5 / Walker2d-v5 reward terms: ``v_x + 1 (healthy) - 1e-3 ||a||^2``."""
    return {
        "reward_forward": step.x_velocity,
        "reward_survive": step.healthy.astype(np.float64),
        "reward_ctrl": -control_cost(step.action, ctrl_weight),
    }


class HopperParams(ParamsFamily):
    """Per-element mass, inertia, damping and friction multipliers; Hopper-v5 reward and termination."""

    name = "hopper_params"
    horizon = 200
    robot = HOPPER

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return survive_reward(step)
