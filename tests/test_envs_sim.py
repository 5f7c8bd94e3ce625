"""Simulators of the task families: rewards, Gymnasium v5 equivalence, batched
versus single-env, masking, memory, reset reproducibility and divergence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.ant import Direction2DTask, GoalTask
from envs.core import Task, TaskFamily
from envs.dynamics import (
    FrictionFamily,
    FrictionTask,
    MassFamily,
    MassTask,
    ParamsFamily,
    ParamsTask,
    plain_params_task,
)
from envs.half_cheetah import DirectionTask, VelocityTask
from envs.mujoco_base import MujocoFamily
from envs.point_nav import PointGoalTask
from envs.vector import MujocoBatch

pytestmark = pytest.mark.usefixtures("in_tmp_dir")

NAMES = envs.names()
TERMINATING = ("ant_dir", "hopper_params", "walker_params")
ROBOT_FAMILIES = ("half_cheetah_vel", "ant_dir", "hopper_params", "walker_params")
"""One family per MuJoCo robot."""
CASES = [*NAMES, "ant_dir:2d", "half_cheetah_vel:pearl"]
"""Every family, and the variants whose reward or tasks differ (``name:variant``)."""


def family_of(case: str) -> TaskFamily:
    name, _, variant = case.partition(":")
    return envs.make(name, variant=variant or "default")


def random_actions(rng: np.random.Generator, family: TaskFamily, *leading: int) -> np.ndarray:
    """Uniform actions ``[*leading, act_dim]``; point_nav's exceed the clip to exercise it."""
    scale = 0.2 if family.name == "point_nav" else 1.0
    return rng.uniform(-scale, scale, (*leading, family.action_dim))


def reward_terms(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in info.items() if key.startswith("reward_")}


def position(family: TaskFamily, env: gym.Env) -> np.ndarray:
    """The xy position the family measures velocity on, read from the env's state."""
    data = env.unwrapped.data  # type: ignore[attr-defined]
    if family.name.startswith("ant"):
        return data.body("torso").xpos[:2].copy()
    return np.array([data.qpos[0], 0.0])


def spec_reward(
    name: str, task: Task, env: gym.Env, action: np.ndarray, velocity: np.ndarray, terminated: bool
) -> float:
    """The reward of one MuJoCo step exactly as task_families.md writes it."""
    data = env.unwrapped.data  # type: ignore[attr-defined]
    ctrl = float(action @ action)
    vx = float(velocity[0])
    if name == "half_cheetah_vel":
        assert isinstance(task, VelocityTask)
        return -abs(vx - task.target_velocity) - 0.05 * ctrl
    if name == "half_cheetah_dir":
        assert isinstance(task, DirectionTask)
        return task.direction * vx - 0.05 * ctrl
    if name in ("half_cheetah_mass", "half_cheetah_friction", "half_cheetah_params"):
        return vx - 0.1 * ctrl
    if name in ("hopper_params", "walker_params"):
        return vx + (0.0 if terminated else 1.0) - 1e-3 * ctrl
    contact = 5e-4 * float(np.sum(np.clip(data.cfrc_ext, -1.0, 1.0) ** 2))
    healthy = float(0.2 <= data.qpos[2] <= 1.0)
    if name == "ant_dir" and isinstance(task, Direction2DTask):
        return float(np.dot(task.direction, velocity)) + healthy - 0.5 * ctrl - contact
    if name == "ant_dir":
        assert isinstance(task, DirectionTask)
        return task.direction * vx + healthy - 0.5 * ctrl - contact
    assert name == "ant_goal" and isinstance(task, GoalTask)
    xy = data.body("torso").xpos[:2]
    return -float(np.abs(xy - np.asarray(task.goal)).sum()) + healthy - 0.1 * ctrl - contact


# ------------------------------------------------------------------- rewards
@pytest.mark.parametrize("case", CASES)
def test_single_env_reward_is_sum_of_info_terms(case: str) -> None:
    family = family_of(case)
    env = family.make_env(family.sample_tasks(np.random.default_rng(1), 1)[0])
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(random_actions(rng, family))
        terms = reward_terms(info)
        assert terms, "info carries the reward terms"
        assert reward == pytest.approx(sum(terms.values()), abs=1e-12)
        if terminated or truncated:
            env.reset()


@pytest.mark.parametrize("case", CASES)
def test_single_env_reward_and_velocity_match_the_spec(case: str) -> None:
    family = family_of(case)
    name = family.name
    for task in equivalence_tasks(family):  # both directions, dynamics extremes
        env = family.make_env(task)
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(20):
            action = random_actions(rng, family)
            if name == "point_nav":
                assert isinstance(task, PointGoalTask)
                expected = obs + np.clip(action, -0.1, 0.1)
                obs, reward, terminated, _, _ = env.step(action)
                np.testing.assert_allclose(obs, expected, atol=1e-12)
                assert reward == pytest.approx(-np.linalg.norm(obs - np.asarray(task.goal)), abs=1e-12)
                assert not terminated
                continue
            before = position(family, env)
            _, reward, terminated, _, info = env.step(action)
            velocity = (position(family, env) - before) / env.unwrapped.dt  # type: ignore[attr-defined]
            assert info["x_velocity"] == pytest.approx(velocity[0], abs=1e-9)
            expected_reward = spec_reward(name, task, env, action, velocity, terminated)
            assert reward == pytest.approx(expected_reward, abs=1e-9), task
            if terminated:
                break


@pytest.mark.parametrize("case", CASES)
def test_clip_actions_acts_and_charges_the_clipped_action(case: str) -> None:
    """With ``clip_actions`` an action beyond the bounds steps (state and reward) exactly as its
    clipped value does; without it the physics clamps the control alike, but MuJoCo families charge
    the control cost on the action as given (point_nav's dynamics clip it anyway)."""
    name, _, variant = case.partition(":")
    plain, clipping = (envs.make(name, variant=variant or "default", clip_actions=c) for c in (False, True))
    low, high = plain.action_bounds
    assert low.shape == high.shape == (plain.action_dim,) and np.all(low < high)
    tasks = plain.sample_tasks(np.random.default_rng(1), 2)
    kinds = (("clip", clipping), ("bounded", plain), ("raw", plain))
    sims = {kind: f.batch(tasks, 2, seed=0, nthread=1) for kind, f in kinds}
    envs_ = {kind: f.make_env(tasks[0]) for kind, f in kinds}
    for sim in sims.values():
        sim.reset()
    for env in envs_.values():
        env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = 3.0 * random_actions(rng, plain, 4)
        bounded = np.clip(action, low, high)
        out = {kind: sims[kind].step(bounded if kind == "bounded" else action) for kind in sims}
        single = {kind: envs_[kind].step(bounded[0] if kind == "bounded" else action[0]) for kind in envs_}
        np.testing.assert_array_equal(out["clip"].obs, out["bounded"].obs)
        np.testing.assert_array_equal(out["clip"].reward, out["bounded"].reward)
        np.testing.assert_array_equal(out["raw"].obs, out["bounded"].obs)
        np.testing.assert_array_equal(single["clip"][0], single["bounded"][0])
        assert single["clip"][1] == single["bounded"][1]
        beyond = np.any(bounded != action, axis=1) & out["clip"].info["active"]
        if name == "point_nav":
            np.testing.assert_array_equal(out["raw"].reward, out["clip"].reward)
        else:  # the slots with a component beyond the bounds pay more for the raw action
            assert np.all(out["raw"].reward[beyond] < out["clip"].reward[beyond])
            np.testing.assert_array_equal(out["raw"].reward[~beyond], out["clip"].reward[~beyond])
            assert (single["raw"][1] < single["clip"][1]) == bool(np.any(bounded[0] != action[0]))


@pytest.mark.parametrize("case", CASES)
def test_batch_reward_is_sum_of_info_terms(case: str) -> None:
    family = family_of(case)
    sim = family.batch(family.sample_tasks(np.random.default_rng(1), 2), episodes_per_task=2, seed=0, nthread=1)
    obs = sim.reset()
    assert obs.shape == (4, family.observation_dim) and obs.dtype == np.float64
    rng = np.random.default_rng(0)
    for _ in range(30):
        result = sim.step(random_actions(rng, family, sim.num_slots))
        terms = reward_terms(result.info)
        assert terms, "info carries the reward terms"
        for value in terms.values():
            assert value.shape == (sim.num_slots,)
        np.testing.assert_allclose(result.reward, np.sum(list(terms.values()), axis=0), atol=1e-12, rtol=0)
        for key in ("active", "terminated", "truncated", "unstable", "x_velocity"):
            assert result.info[key].shape == (sim.num_slots,)
        assert not result.info["unstable"].any()
        if result.done.all():
            break


# ------------------------------------------------------- Gymnasium v5 equivalence
V5_CASES = [
    ("half_cheetah_params", "HalfCheetah-v5"),
    ("hopper_params", "Hopper-v5"),
    ("walker_params", "Walker2d-v5"),
    ("half_cheetah_dir", "HalfCheetah-v5"),
    ("ant_dir", "Ant-v5"),
]


def plain_task(family: TaskFamily) -> Task:
    """The task that makes the family the plain v5 environment."""
    if isinstance(family, ParamsFamily):
        return plain_params_task(family)
    return DirectionTask(1.0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("name", "v5_id"), V5_CASES)
def test_plain_task_matches_gymnasium_v5(name: str, v5_id: str, seed: int) -> None:
    family = envs.make(name)
    env = family.make_env(plain_task(family))
    reference = gym.make(v5_id)
    obs, _ = env.reset(seed=seed)
    ref_obs, _ = reference.reset(seed=seed)
    assert obs.shape == ref_obs.shape
    np.testing.assert_allclose(obs, ref_obs, atol=1e-6, rtol=0)
    rng = np.random.default_rng(seed)
    space = reference.action_space
    assert isinstance(space, gym.spaces.Box)
    low, high = space.low, space.high
    terminated = False
    contact = 0.0
    for t in range(100):
        action = rng.uniform(low, high)
        obs, reward, terminated, _, info = env.step(action)
        ref_obs, ref_reward, ref_terminated, _, ref_info = reference.step(action)
        np.testing.assert_allclose(obs, ref_obs, atol=1e-6, rtol=0, err_msg=f"step {t}")
        assert terminated == ref_terminated, f"step {t}"
        assert info["x_velocity"] == pytest.approx(ref_info["x_velocity"], abs=1e-9)
        if name != "half_cheetah_dir":  # its control weight is 0.05, not 0.1: reward differs by design
            assert reward == pytest.approx(ref_reward, abs=1e-9), f"step {t}"
        if name == "ant_dir":
            contact = max(contact, float(np.abs(obs[27:]).max()))
            for term in ("reward_forward", "reward_contact", "reward_survive", "reward_ctrl"):
                assert info[term] == pytest.approx(ref_info[term], abs=1e-9), f"{term} at step {t}"
        if terminated:
            break
    if name in ("hopper_params", "walker_params"):
        assert terminated, "random actions end the episode, so termination was compared"
    if name == "ant_dir":
        assert obs.shape == (105,)
        assert contact > 0, "contact forces are in the observation"


HEALTH_STATES = {
    # qpos index -> range sampled around the v5 health thresholds
    "hopper_params": {1: (0.6, 0.8), 2: (-0.3, 0.3)},
    "walker_params": {1: (0.7, 2.1), 2: (-1.2, 1.2)},
    "ant_dir": {2: (0.1, 1.1)},
}


@pytest.mark.parametrize(("name", "v5_id"), [case for case in V5_CASES if case[0] in HEALTH_STATES])
def test_termination_matches_gymnasium_v5_near_the_health_limits(name: str, v5_id: str) -> None:
    family = envs.make(name)
    env = family.make_env(plain_task(family))
    reference = gym.make(v5_id)
    env.reset(seed=0)
    reference.reset(seed=0)
    rng = np.random.default_rng(0)
    zeros = np.zeros(family.action_dim)
    outcomes = []
    for _ in range(40):
        qpos = reference.unwrapped.init_qpos.copy()  # type: ignore[attr-defined]
        for index, (low, high) in HEALTH_STATES[name].items():
            qpos[index] = rng.uniform(low, high)
        qvel = np.zeros_like(reference.unwrapped.init_qvel)  # type: ignore[attr-defined]
        env.unwrapped.set_state(qpos, qvel)  # type: ignore[attr-defined]
        reference.unwrapped.set_state(qpos, qvel)  # type: ignore[attr-defined]
        _, reward, terminated, _, _ = env.step(zeros)
        _, ref_reward, ref_terminated, _, _ = reference.step(zeros)
        assert terminated == ref_terminated, f"qpos {qpos}"
        assert reward == pytest.approx(ref_reward, abs=1e-9)
        outcomes.append(terminated)
    assert any(outcomes) and not all(outcomes), "both sides of the health limits were sampled"


@pytest.mark.parametrize(("name", "v5_id"), V5_CASES[:3] + V5_CASES[4:])
def test_single_env_reset_matches_gymnasium_v5(name: str, v5_id: str) -> None:
    family = envs.make(name)
    env = family.make_env(plain_task(family))
    reference = gym.make(v5_id)
    for seed in range(4):
        np.testing.assert_allclose(env.reset(seed=seed)[0], reference.reset(seed=seed)[0], atol=1e-12, rtol=0)
        # an unseeded reset continues the same stream
        np.testing.assert_allclose(env.reset()[0], reference.reset()[0], atol=1e-12, rtol=0)
    first, again, other = env.reset(seed=9)[0], env.reset(seed=9)[0], env.reset(seed=10)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


# --------------------------------------------------------- batched = single env
def equivalence_tasks(family: TaskFamily) -> list[Task]:
    """Tasks spanning the training distribution, with its dynamics extremes."""
    rng = np.random.default_rng(5)
    if isinstance(family, ParamsFamily):
        extremes = []
        for sign in (-1.0, 1.0):
            fields = {}
            for name, base in (("body_mass", 1.5), ("body_inertia", 1.5), ("dof_damping", 1.3), ("geom_friction", 1.5)):
                values = np.full(getattr(family.robot.base_model(), name).shape, base ** (3.0 * sign))
                if name.startswith("body_"):
                    values[0] = 1.0
                fields[name] = values.tolist()
            extremes.append(ParamsTask.from_dict(fields))
        return extremes + family.sample_tasks(rng, 1)
    if isinstance(family, MassFamily):
        return [MassTask(0.5), MassTask(2.0)]
    if isinstance(family, FrictionFamily):
        return [FrictionTask(0.25), FrictionTask(2.0)]
    if family.name == "half_cheetah_vel":
        return [VelocityTask(0.0), VelocityTask(2.0)]
    if family.name in ("half_cheetah_dir", "ant_dir") and family.variant == "default":
        return [DirectionTask(1.0), DirectionTask(-1.0)]
    return family.sample_tasks(rng, 2)


KICKS = {"ant_dir": 3.0, "hopper_params": 6.0, "walker_params": 12.0}
"""``qvel[2]`` of slot 1, a push that ends its episode within a few steps: the Ant's
torso flies above z = 1; Hopper's and Walker2d's torso tilts past the healthy angle."""


@pytest.mark.parametrize("case", CASES)
def test_batch_equals_single_env(case: str) -> None:
    family = family_of(case)
    name = family.name
    tasks = equivalence_tasks(family)
    sim = family.batch(tasks, episodes_per_task=2, seed=0, nthread=2)
    num_slots = sim.num_slots
    assert num_slots == 2 * len(tasks)
    np.testing.assert_array_equal(sim.task_index, np.repeat(np.arange(len(tasks)), 2))
    batch_obs = sim.reset()
    singles = [family.make_env(tasks[b // 2]) for b in range(num_slots)]
    single_obs = [env.reset(seed=100 + b)[0] for b, env in enumerate(singles)]
    if isinstance(sim, MujocoBatch):
        datas = [env.unwrapped.data for env in singles]  # type: ignore[attr-defined]
        qpos = np.stack([data.qpos.copy() for data in datas])
        qvel = np.stack([data.qvel.copy() for data in datas])
        kicked = name in KICKS
        if kicked:
            qvel[1, 2] = KICKS[name]
            singles[1].unwrapped.set_state(qpos[1], qvel[1])  # type: ignore[attr-defined]
        batch_obs = sim.set_state(qpos, qvel)
        for b in range(num_slots):
            if not (kicked and b == 1):
                np.testing.assert_allclose(batch_obs[b], single_obs[b], atol=1e-9, rtol=0)
    else:
        np.testing.assert_array_equal(batch_obs, np.stack(single_obs))

    rng = np.random.default_rng(1)
    done = np.zeros(num_slots, dtype=bool)
    masked_steps = 0
    for t in range(40):
        actions = random_actions(rng, family, num_slots)
        result = sim.step(actions)
        assert not result.info["unstable"].any()
        assert not result.info["truncated"].any()
        np.testing.assert_array_equal(result.info["active"], ~done)
        for b in range(num_slots):
            if done[b]:
                masked_steps += 1
                assert result.done[b]
                assert result.reward[b] == 0.0
                assert all(value[b] == 0.0 for value in reward_terms(result.info).values())
                np.testing.assert_array_equal(result.obs[b], batch_obs[b], err_msg=f"masked slot {b} moved")
                continue
            obs, reward, terminated, _, info = singles[b].step(actions[b])
            assert set(reward_terms(info)) == set(reward_terms(result.info)), "same reward terms"
            np.testing.assert_allclose(result.obs[b], obs, atol=1e-9, rtol=0, err_msg=f"slot {b}, step {t}")
            assert result.reward[b] == pytest.approx(reward, abs=1e-9), f"slot {b}, step {t}"
            if isinstance(sim, MujocoBatch):
                assert result.info["x_velocity"][b] == pytest.approx(info["x_velocity"], abs=1e-9)
            assert bool(result.done[b]) == terminated, f"slot {b}, step {t}"
            assert bool(result.info["terminated"][b]) == terminated
        assert sim.t == t + 1
        done = result.done.copy()
        batch_obs = result.obs
        if done.all():
            break
    if name in TERMINATING:
        assert done[1], "the kicked slot terminated"
        assert masked_steps > 0, "masking was exercised"
    else:
        assert not done.any(), f"{name} has no termination"


@pytest.mark.parametrize("name", ["point_nav", "half_cheetah_dir"])
def test_batch_truncates_at_the_horizon(name: str) -> None:
    family = envs.make(name)
    sim = family.batch(family.test_tasks()[:2], episodes_per_task=1, seed=0, nthread=1)
    sim.reset()
    rng = np.random.default_rng(0)
    for t in range(1, family.horizon + 1):
        result = sim.step(random_actions(rng, family, sim.num_slots))
        assert result.done.all() == (t == family.horizon)
        assert result.info["truncated"].all() == (t == family.horizon)
        assert not result.info["terminated"].any()
    assert sim.done.all()
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(random_actions(rng, family, sim.num_slots))
    sim.reset()
    assert not sim.done.any() and sim.t == 0


def test_terminated_slot_is_masked_until_reset() -> None:
    family = envs.make("hopper_params")
    assert isinstance(family, ParamsFamily)
    sim = family.batch([plain_params_task(family)], episodes_per_task=3, seed=0, nthread=1)
    assert isinstance(sim, MujocoBatch)
    sim.reset()
    data = [sim.slot_data(b) for b in range(3)]
    qpos, qvel = np.stack([d.qpos for d in data]), np.stack([d.qvel for d in data])
    qvel[0, 2] = 6.0
    sim.set_state(qpos, qvel)
    zeros = np.zeros((3, family.action_dim))
    result = sim.step(zeros)
    for _ in range(10):
        if result.done[0]:
            break
        result = sim.step(zeros)
    assert result.done[0] and result.info["terminated"][0]
    ended_obs = result.obs[0].copy()
    ended_state = sim.slot_data(0).qpos.copy()
    for _ in range(5):
        result = sim.step(np.ones((3, family.action_dim)))
        assert not result.info["active"][0] and result.done[0] and result.reward[0] == 0.0
        assert not result.info["terminated"][0], "terminated is reported once, at the step it happens"
        np.testing.assert_array_equal(result.obs[0], ended_obs)
    np.testing.assert_array_equal(sim.slot_data(0).qpos, ended_state, err_msg="a masked slot is never stepped")
    sim.reset()
    assert not sim.done.any()


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("name", NAMES)
def test_batch_observations_do_not_share_memory(name: str) -> None:
    family = envs.make(name)
    sim = family.batch(family.test_tasks()[:1], episodes_per_task=2, seed=0, nthread=1)
    rng = np.random.default_rng(0)
    reset_obs = sim.reset()
    reset_copy = reset_obs.copy()
    first = sim.step(random_actions(rng, family, 2))
    first_obs = first.obs.copy()
    second = sim.step(random_actions(rng, family, 2))
    np.testing.assert_array_equal(reset_obs, reset_copy)
    np.testing.assert_array_equal(first.obs, first_obs)
    assert not np.array_equal(first.obs, second.obs)
    assert not np.shares_memory(reset_obs, first.obs)
    assert not np.shares_memory(first.obs, second.obs)
    assert not np.shares_memory(first.reward, second.reward)
    assert not np.shares_memory(first.done, second.done)
    second.obs[...] = np.nan  # a caller writing into an observation changes nothing
    third = sim.step(random_actions(rng, family, 2))
    assert np.isfinite(third.obs).all()
    assert not np.shares_memory(third.obs, sim.done)


@pytest.mark.parametrize("name", NAMES)
def test_single_env_observations_do_not_share_memory(name: str) -> None:
    family = envs.make(name)
    env = family.make_env(family.test_tasks()[0])
    rng = np.random.default_rng(0)
    reset_obs, _ = env.reset(seed=0)
    reset_copy = reset_obs.copy()
    first = env.step(random_actions(rng, family))[0]
    first_copy = first.copy()
    second = env.step(random_actions(rng, family))[0]
    np.testing.assert_array_equal(reset_obs, reset_copy)
    np.testing.assert_array_equal(first, first_copy)
    assert not np.array_equal(first, second)
    assert not np.shares_memory(reset_obs, first)
    assert not np.shares_memory(first, second)
    if isinstance(family, MujocoFamily):
        data = env.unwrapped.data  # type: ignore[attr-defined]
        for field in (data.qpos, data.qvel, data.cfrc_ext):
            assert not np.shares_memory(second, field)


# ---------------------------------------------------------------- resets
@pytest.mark.parametrize("name", NAMES)
def test_batch_reset_is_reproducible_from_seed(name: str) -> None:
    family = envs.make(name)
    tasks = family.test_tasks()[:2]

    def reset(seed: int) -> np.ndarray:
        return family.batch(tasks, episodes_per_task=2, seed=seed, nthread=1).reset()

    first = reset(7)
    np.testing.assert_array_equal(first, reset(7))
    if name == "point_nav":  # starts at the origin
        np.testing.assert_array_equal(first, np.zeros_like(first))
        np.testing.assert_array_equal(reset(8), first)
        return
    assert not np.allclose(first, reset(8))
    assert len({row.tobytes() for row in first}) == len(first), "initial states differ between slots"
    sim = family.batch(tasks, episodes_per_task=2, seed=7, nthread=1)
    np.testing.assert_array_equal(sim.reset(), first)
    assert not np.allclose(sim.reset(), first), "a new reset draws new initial states"


V5_RESET_NOISE = {
    # robot of the family: (noise scale, qvel noise) of the v5 environment
    "half_cheetah_vel": (0.1, "normal"),
    "ant_dir": (0.1, "normal"),
    "hopper_params": (5e-3, "uniform"),
    "walker_params": (5e-3, "uniform"),
}


@pytest.mark.parametrize("name", ROBOT_FAMILIES)
def test_batch_initial_states_follow_the_v5_reset_noise(name: str) -> None:
    family = envs.make(name)
    sim = family.batch(family.test_tasks()[:1], episodes_per_task=64, seed=3, nthread=1)
    assert isinstance(sim, MujocoBatch)
    obs = sim.reset()
    datas = [sim.slot_data(b) for b in range(sim.num_slots)]
    qpos = np.stack([data.qpos for data in datas])
    qvel = np.stack([data.qvel for data in datas])
    scale, qvel_noise = V5_RESET_NOISE[name]
    deviation = qpos - sim.model.qpos0
    assert np.abs(deviation).max() <= scale
    assert np.abs(deviation).max() > 0.8 * scale, "qpos ~ qpos0 + U[-scale, scale]"
    if qvel_noise == "uniform":
        assert np.abs(qvel).max() <= scale
        assert np.abs(qvel).max() > 0.8 * scale
    else:
        assert 0.85 * scale < qvel.std() < 1.15 * scale, "qvel ~ scale * N(0, 1)"
        assert np.abs(qvel).max() > 2 * scale
    skipped = family.robot.skipped_qpos  # type: ignore[attr-defined]
    np.testing.assert_array_equal(obs[:, : qpos.shape[1] - skipped], qpos[:, skipped:])
    if name == "ant_dir":
        contact = obs[:, qpos.shape[1] - skipped + qvel.shape[1] :]
        assert contact.shape == (sim.num_slots, 78)
        np.testing.assert_array_equal(contact, 0.0)  # v5: no contact forces before the first step


# -------------------------------------------------------------- divergence
HUGE_ACCELERATION_QVEL = 1e6
"""A velocity MuJoCo accepts but whose first substep it rejects (huge ``qacc``):
it warns and resets the data in the middle of the environment step."""
BEYOND_LIMIT_QVEL = 1e12
"""A velocity beyond MuJoCo's own limit (``mjMAXVAL = 1e10``): rejected by ``mj_step``
(and by the batch's ``mj_forward``)."""


def assert_finite(*arrays: Any) -> None:
    for array in arrays:
        assert np.isfinite(array).all()


@pytest.mark.parametrize("steps_before", [0, 3])
@pytest.mark.parametrize("name", ROBOT_FAMILIES)
def test_batch_slot_that_diverges_ends_as_unstable(name: str, steps_before: int) -> None:
    family = envs.make(name)
    sim = family.batch(family.test_tasks()[:1], episodes_per_task=3, seed=0, nthread=1)
    assert isinstance(sim, MujocoBatch)
    sim.reset()
    zeros = np.zeros((3, family.action_dim))
    for _ in range(steps_before):
        sim.step(zeros)
    qpos = np.stack([sim.slot_data(b).qpos for b in range(3)])
    velocities = np.stack([sim.slot_data(b).qvel for b in range(3)])
    velocities[1] = HUGE_ACCELERATION_QVEL
    before = sim.set_state(qpos, velocities)
    result = sim.step(zeros)  # MuJoCo warns "Nan, Inf or huge value in QVEL/QACC" and resets slot 1
    assert_finite(result.obs, result.reward, result.info["x_velocity"])
    assert result.info["unstable"][1], "the diverged slot is flagged"
    assert result.done[1]
    assert result.reward[1] == 0.0
    assert all(value[1] == 0.0 for value in reward_terms(result.info).values())
    np.testing.assert_array_equal(result.obs[1], before[1], err_msg="the observation is the last good one")
    assert not result.info["unstable"][[0, 2]].any()
    assert result.info["active"].all()
    after = sim.step(zeros)
    assert not after.info["active"][1] and after.done[1] and after.reward[1] == 0.0
    assert_finite(after.obs, after.reward)


@pytest.mark.parametrize("name", ROBOT_FAMILIES)
def test_batch_set_state_rejects_a_state_mujoco_resets(name: str) -> None:
    """A state MuJoCo resets on sight is refused with a ValueError naming the slot."""
    family = envs.make(name)
    sim = family.batch(family.test_tasks()[:1], episodes_per_task=3, seed=0, nthread=1)
    assert isinstance(sim, MujocoBatch)
    sim.reset()
    qpos = np.stack([sim.slot_data(b).qpos for b in range(3)])
    velocities = np.stack([sim.slot_data(b).qvel for b in range(3)])
    velocities[1] = BEYOND_LIMIT_QVEL
    with pytest.raises(ValueError, match=r"slots? \[?1\b"):
        sim.set_state(qpos, velocities)


@pytest.mark.parametrize("steps_before", [0, 3])
@pytest.mark.parametrize("qvel", [HUGE_ACCELERATION_QVEL, BEYOND_LIMIT_QVEL])
@pytest.mark.parametrize("name", ROBOT_FAMILIES)
def test_single_env_that_diverges_ends_as_unstable(name: str, qvel: float, steps_before: int) -> None:
    family = envs.make(name)
    env = family.make_env(family.test_tasks()[0])
    env.reset(seed=0)
    zeros = np.zeros(family.action_dim)
    for _ in range(steps_before):
        env.step(zeros)
    data = env.unwrapped.data  # type: ignore[attr-defined]
    env.unwrapped.set_state(data.qpos.copy(), np.full(data.qvel.shape, qvel))  # type: ignore[attr-defined]
    obs, reward, terminated, truncated, info = env.step(zeros)
    assert_finite(obs, reward)
    assert info["unstable"] is True
    assert terminated
    assert reward == 0.0
    assert all(value == 0.0 for value in reward_terms(info).values())


def test_extreme_allowed_dynamics_end_as_unstable(uniform_params_task: Callable[..., ParamsTask]) -> None:
    """Multipliers at the allowed limits make Walker2d diverge: no exception, no NaN."""
    family = envs.make("walker_params")
    assert isinstance(family, ParamsFamily)
    extreme = family.validate(uniform_params_task(family, body_mass=1e-3, body_inertia=1e-3, dof_damping=1e3))
    sim = family.batch([extreme, plain_params_task(family)], episodes_per_task=2, seed=0, nthread=1)
    sim.reset()
    rng = np.random.default_rng(0)
    unstable = np.zeros(sim.num_slots, dtype=bool)
    for _ in range(10):
        result = sim.step(random_actions(rng, family, sim.num_slots))
        assert_finite(result.obs, result.reward)
        unstable |= result.info["unstable"]
    np.testing.assert_array_equal(unstable, [True, True, False, False])
    assert result.done[:2].all()

    env = family.make_env(extreme)
    env.reset(seed=0)
    for _ in range(10):
        obs, reward, terminated, _, info = env.step(random_actions(rng, family))
        assert_finite(obs, reward)
        if terminated:
            break
    assert terminated and info["unstable"] and reward == 0.0


def test_point_nav_goal_moves_the_reward() -> None:
    family = envs.make("point_nav")
    near, far = PointGoalTask((0.1, 0.0)), PointGoalTask((-0.4, 0.4))
    sim = family.batch([near, far], episodes_per_task=1, seed=0)
    sim.reset()
    result = sim.step(np.array([[0.1, 0.0], [0.1, 0.0]]))
    np.testing.assert_allclose(result.obs, [[0.1, 0.0], [0.1, 0.0]], atol=1e-15)
    np.testing.assert_allclose(result.reward, [0.0, -np.hypot(0.5, 0.4)], atol=1e-12)
    assert family.horizon == 100
