"""Family names, ``envs.make`` and Gymnasium registration (``metarl/<Name>-v0``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.ant import AntDir, AntGoal
from envs.core import Task, TaskFamily
from envs.half_cheetah import HalfCheetahDir, HalfCheetahFriction, HalfCheetahMass, HalfCheetahParams, HalfCheetahVel
from envs.hopper import HopperParams
from envs.point_nav import PointNav
from envs.walker import WalkerParams

FAMILIES: dict[str, type[TaskFamily]] = {
    family.name: family
    for family in (
        PointNav,
        HalfCheetahVel,
        HalfCheetahDir,
        AntDir,
        AntGoal,
        HalfCheetahMass,
        HalfCheetahFriction,
        HalfCheetahParams,
        HopperParams,
        WalkerParams,
    )
}


def names() -> list[str]:
    """Every family name (the ``--env`` values)."""
    return list(FAMILIES)


def make(name: str, variant: str = "default", split: str = "train", clip_actions: bool = False) -> TaskFamily:
    """The family ``name``; a ValueError lists the valid names."""
    if name not in FAMILIES:
        raise ValueError(f"unknown env {name!r}; valid names: {', '.join(FAMILIES)}")
    return FAMILIES[name](variant=variant, split=split, clip_actions=clip_actions)


def gym_id(name: str) -> str:
    """Gymnasium id of a family: ``half_cheetah_vel`` -> ``metarl/HalfCheetahVel-v0``."""
    return "metarl/" + "".join(part.capitalize() for part in name.split("_")) + "-v0"


def make_gym_env(
    family: str, task: Task | dict[str, Any] | None = None, variant: str = "default", **kwargs: Any
) -> gym.Env:
    """Gymnasium entry point: ``gym.make("metarl/HalfCheetahVel-v0", task=...)``.

    ``task`` is a Task, its ``to_dict()`` form, or None for the family's default task.
    """
    fam = make(family, variant=variant)
    if isinstance(task, dict):
        task = fam.task_type.from_dict(task)
    return fam.make_env(task, **kwargs)


def register() -> None:
    """Register every family with Gymnasium (idempotent)."""
    for name, family in FAMILIES.items():
        env_id = gym_id(name)
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point="envs.registry:make_gym_env",
                kwargs={"family": name},
                max_episode_steps=family.horizon,
            )
