"""metarl task families: parameterised MuJoCo robots and a batched simulator.

>>> import numpy as np, envs
>>> family = envs.make("half_cheetah_vel")
>>> tasks = family.sample_tasks(np.random.default_rng(0), 4)
>>> sim = family.batch(tasks, episodes_per_task=2, seed=0)
>>> sim.reset().shape
(8, 17)
"""

from __future__ import annotations

from envs.core import Task, TaskFamily, Transition
from envs.registry import gym_id, make, names, register
from envs.vector import BatchedSimulator, StepResult

register()

__all__ = ["BatchedSimulator", "StepResult", "Task", "TaskFamily", "Transition", "gym_id", "make", "names", "register"]
