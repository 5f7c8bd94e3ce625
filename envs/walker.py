"""Walker2d-v5 with per-element dynamics multipliers."""

from __future__ import annotations

import numpy as np

from envs.core import Transition
from envs.dynamics import ParamsFamily
from envs.hopper import survive_reward
from envs.mujoco_base import Robot


def walker_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Walker2d-v5: 0.8 < z < 2.0 and -1 < angle < 1."""
    z, angle = qpos[:, 1], qpos[:, 2]
    return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)


WALKER = Robot(
    name="walker",
    xml_file="walker2d_v5.xml",
    frame_skip=4,
    reset_noise_scale=5e-3,
    qvel_noise="uniform",
    skipped_qpos=1,
    qvel_clip=10.0,
    healthy=walker_healthy,
    camera={"trackbodyid": 2, "distance": 4.0, "lookat": np.array((0.0, 0.0, 1.15)), "elevation": -20.0},
)


class WalkerParams(ParamsFamily):
    """Per-element mass, inertia, damping and friction multipliers; Walker2d-v5 reward and termination."""

    name = "walker_params"
    horizon = 200
    robot = WALKER

    def reward_terms(self, params: dict[str, np.ndarray], step: Transition) -> dict[str, np.ndarray]:
        return survive_reward(step)
