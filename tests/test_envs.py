"""Task families: names, tasks (sampling, held-out sets, JSON), bad inputs and
Gymnasium registration (the definitions in README.md, "Task families")."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.ant import GoalTask
from envs.core import Task, TaskDraws, TaskFamily
from envs.dynamics import PARAM_BASES, FrictionTask, MassTask, ParamsFamily, ParamsTask
from envs.half_cheetah import DirectionTask, VelocityTask
from envs.point_nav import PointGoalTask

pytestmark = pytest.mark.usefixtures("in_tmp_dir")

ROOT = Path(envs.__file__).resolve().parents[1]
NAMES = envs.names()
DIR_FAMILIES = ("half_cheetah_dir", "ant_dir")
OOD_FAMILIES = (
    "half_cheetah_vel",
    "half_cheetah_mass",
    "half_cheetah_friction",
    "half_cheetah_params",
    "hopper_params",
    "walker_params",
)
PARAMS_FAMILIES = ("half_cheetah_params", "hopper_params", "walker_params")


def test_names_are_the_documented_families() -> None:
    assert sorted(NAMES) == sorted(
        [
            "point_nav",
            "half_cheetah_vel",
            "half_cheetah_dir",
            "ant_dir",
            "ant_goal",
            "half_cheetah_mass",
            "half_cheetah_friction",
            "half_cheetah_params",
            "hopper_params",
            "walker_params",
        ]
    )


@pytest.mark.parametrize(
    ("name", "horizon"),
    [
        ("point_nav", 100),
        ("half_cheetah_vel", 200),
        ("half_cheetah_dir", 100),
        ("ant_dir", 200),
        ("ant_goal", 200),
        ("half_cheetah_mass", 200),
        ("half_cheetah_friction", 200),
        ("half_cheetah_params", 200),
        ("hopper_params", 200),
        ("walker_params", 200),
    ],
)
def test_horizon(name: str, horizon: int) -> None:
    assert envs.make(name).horizon == horizon


def test_envs_does_not_import_torch() -> None:
    code = "import sys, envs; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"importing envs pulled in torch\n{result.stderr}"


# ----------------------------------------------------------------------- tasks
@pytest.mark.parametrize("name", NAMES)
def test_sample_tasks_reproducible_from_seed(name: str) -> None:
    family = envs.make(name)
    first = family.sample_tasks(np.random.default_rng(123), 20)
    again = envs.make(name).sample_tasks(np.random.default_rng(123), 20)
    other = family.sample_tasks(np.random.default_rng(124), 20)
    assert len(first) == 20
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", NAMES)
def test_tasks_are_frozen_dataclasses_and_json_round_trip(name: str) -> None:
    family = envs.make(name)
    tasks = family.sample_tasks(np.random.default_rng(0), 3) + family.test_tasks()[:2]
    for task in tasks:
        assert isinstance(task, Task)
        assert isinstance(task, family.task_type)
        assert dataclasses.is_dataclass(task)
        field = dataclasses.fields(task)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(task, field, getattr(task, field))
        hash(task)
        text = json.dumps(task.to_dict())
        restored = type(task).from_dict(json.loads(text))
        assert restored == task
        assert type(restored) is type(task)
        assert isinstance(task.describe(), str) and task.describe()


@pytest.mark.parametrize("name", NAMES)
def test_from_dict_rejects_wrong_fields(name: str) -> None:
    family = envs.make(name)
    values = family.test_tasks()[0].to_dict()
    values["unexpected"] = 1.0
    with pytest.raises(ValueError, match="unexpected"):
        family.task_type.from_dict(values)


@pytest.mark.parametrize("name", NAMES)
def test_sample_tasks_rejects_bad_arguments(name: str) -> None:
    family = envs.make(name)
    with pytest.raises(ValueError, match="num_tasks"):
        family.sample_tasks(np.random.default_rng(0), 0)
    with pytest.raises(TypeError, match="Generator"):
        family.sample_tasks(0, 3)  # type: ignore[arg-type]


def _log_base(task: Task) -> dict[str, np.ndarray]:
    """``u`` of every element of a params task (multiplier = base**u)."""
    assert isinstance(task, ParamsTask)
    return {name: np.log(np.asarray(getattr(task, name))) / math.log(base) for name, base in PARAM_BASES.items()}


def _check_training_distribution(name: str, family: TaskFamily, tasks: list[Task], u_bound: float = 3.0) -> None:
    """Every task lies in the training distribution of task_families.md."""
    for task in tasks:
        if name == "point_nav":
            assert isinstance(task, PointGoalTask)
            assert np.all(np.abs(task.goal) <= 0.5)
        elif name == "half_cheetah_vel":
            assert isinstance(task, VelocityTask)
            high = 3.0 if family.variant == "pearl" else 2.0
            assert 0.0 <= task.target_velocity <= high
        elif name in DIR_FAMILIES:
            assert isinstance(task, DirectionTask)
            assert task.direction in (-1.0, 1.0)
        elif name == "ant_goal":
            assert isinstance(task, GoalTask)
            assert np.linalg.norm(task.goal) <= 3.0
        elif name == "half_cheetah_mass":
            assert isinstance(task, MassTask)
            assert 0.5 <= task.mass_scale <= 2.0
        elif name == "half_cheetah_friction":
            assert isinstance(task, FrictionTask)
            assert 0.25 <= task.friction_scale <= 2.0
        else:
            assert isinstance(task, ParamsTask)
            for field, u in _log_base(task).items():
                assert np.all(np.abs(u) <= u_bound + 1e-9), field
                if field.startswith("body_"):
                    assert np.all(np.asarray(getattr(task, field))[0] == 1.0), "world body changed"


@pytest.mark.parametrize("name", NAMES)
def test_training_tasks_follow_the_spec_distribution(name: str) -> None:
    family = envs.make(name)
    tasks = family.sample_tasks(np.random.default_rng(7), 50)
    _check_training_distribution(name, family, tasks)
    if name in DIR_FAMILIES:
        assert {task.direction for task in tasks} == {-1.0, 1.0}  # type: ignore[attr-defined]
    if name in PARAMS_FAMILIES:
        u = np.concatenate([_log_base(task)["dof_damping"] for task in tasks])
        assert u.min() < -2.0 and u.max() > 2.0, "u ~ U[-3, 3] should reach beyond 2"


@pytest.mark.parametrize("name", NAMES)
def test_stratified_tasks_follow_the_spec_distribution(name: str) -> None:
    family = envs.make(name)
    tasks = family.sample_tasks(np.random.default_rng(7), 50, stratified=True)
    _check_training_distribution(name, family, tasks)
    assert tasks == envs.make(name).sample_tasks(np.random.default_rng(7), 50, stratified=True)
    assert tasks != family.sample_tasks(np.random.default_rng(7), 50)
    if name in DIR_FAMILIES:
        assert sum(task.direction == 1.0 for task in tasks) == 25  # type: ignore[attr-defined]
    if name == "half_cheetah_vel":  # 5 tasks: one target in each fifth of [0, 2]
        for seed in range(10):
            five = family.sample_tasks(np.random.default_rng(seed), 5, stratified=True)
            assert sorted(int(task.target_velocity / 0.4) for task in five) == [0, 1, 2, 3, 4]  # type: ignore[attr-defined]


def test_plain_task_draws_are_the_generators_own() -> None:
    """The plain draw is the one every earlier run drew: stratifying is an option, not a new stream."""
    draws = TaskDraws(np.random.default_rng(5), 6)
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(draws.uniform(0.0, 2.0), rng.uniform(0.0, 2.0, 6))
    np.testing.assert_array_equal(draws.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0], 6))
    velocities = [t.target_velocity for t in envs.make("half_cheetah_vel").sample_tasks(np.random.default_rng(5), 6)]
    np.testing.assert_array_equal(velocities, np.random.default_rng(5).uniform(0.0, 2.0, 6))


def test_stratified_draws_cover_every_stratum_with_the_same_marginal() -> None:
    rng = np.random.default_rng(0)
    n, repeats = 4, 4000
    first = np.empty((repeats, 3))
    heads = np.empty(repeats)
    for r in range(repeats):
        draws = TaskDraws(rng, n, stratified=True)
        u = draws.uniform(-1.0, 3.0, (3,))
        assert u.shape == (n, 3)
        strata = np.floor((u + 1.0) / 4.0 * n).astype(int)
        assert (np.sort(strata, axis=0) == np.arange(n)[:, None]).all(), "one value per stratum and column"
        first[r] = u[0]
        odd = TaskDraws(rng, 5, stratified=True).choice([-1.0, 1.0])
        assert sorted(odd.tolist()).count(1.0) in (2, 3)
        heads[r] = odd[0]
    # each task on its own is still U[-1, 3) and a fair coin: the strata's order is random
    counts = np.stack([np.bincount(np.floor(first[:, j] + 1.0).astype(int), minlength=4) for j in range(3)])
    assert np.all(np.abs(counts / repeats - 0.25) < 0.03), counts
    assert abs(np.mean(heads == 1.0) - 0.5) < 0.03
    assert sorted(TaskDraws(rng, 6, stratified=True).choice([0.0, 1.0, 2.0]).tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("name", NAMES)
def test_test_tasks_are_fixed(name: str) -> None:
    family = envs.make(name)
    first = family.test_tasks()
    family.sample_tasks(np.random.default_rng(0), 5)  # sampling does not move the held-out stream
    assert family.test_tasks() == first
    assert envs.make(name).test_tasks() == first
    assert len(first) == (2 if name in DIR_FAMILIES else 40)
    _check_training_distribution(name, family, first)
    if name in DIR_FAMILIES:
        assert set(first) == {DirectionTask(1.0), DirectionTask(-1.0)}
    else:
        assert len(set(first)) == len(first)
    assert family.default_task() == first[0]
    assert family.held_out_tasks("test") == first


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("half_cheetah_vel", "target_velocity", 1.1840499208035262),
        ("half_cheetah_mass", "mass_scale", 0.9412064323387312),
        ("half_cheetah_friction", "friction_scale", 1.6301389947416065),
        ("point_nav", "goal", (0.45203849538270435, -0.20564099631679056)),
        ("ant_goal", "goal", (1.049559846899764, 2.6946696219385364)),
    ],
)
def test_first_test_task_snapshot(name: str, field: str, value: Any) -> None:
    """Held-out tasks never change: a literal snapshot of the first one."""
    assert getattr(envs.make(name).test_tasks()[0], field) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("name", OOD_FAMILIES)
def test_ood_tasks_lie_outside_the_training_range(name: str) -> None:
    family = envs.make(name)
    tasks = family.ood_tasks()
    assert len(tasks) == 40
    assert family.ood_tasks() == tasks
    assert envs.make(name).ood_tasks() == tasks
    assert family.held_out_tasks("ood") == tasks
    signs: dict[str, list[np.ndarray]] = {}
    for task in tasks:
        if name == "half_cheetah_vel":
            assert 2.0 <= task.target_velocity <= 3.0  # type: ignore[attr-defined]
        elif name == "half_cheetah_mass":
            m = task.mass_scale  # type: ignore[attr-defined]
            assert 0.33 <= m <= 0.5 or 2.0 <= m <= 3.0
        elif name == "half_cheetah_friction":
            f = task.friction_scale  # type: ignore[attr-defined]
            assert 0.1 <= f <= 0.25 or 2.0 <= f <= 3.0
        else:
            assert isinstance(task, ParamsTask)
            for field, u in _log_base(task).items():
                values = np.asarray(getattr(task, field))
                if field.startswith("body_"):
                    assert np.all(values[0] == 1.0), "world body changed"
                    u = u[1:]
                assert np.all((np.abs(u) >= 2.0 - 1e-9) & (np.abs(u) <= 3.0 + 1e-9)), field
                signs.setdefault(field, []).append(np.sign(u).ravel())
    for field, sign in signs.items():
        assert set(np.concatenate(sign)) == {-1.0, 1.0}, f"{field}: random sign"
    if name in ("half_cheetah_mass", "half_cheetah_friction"):
        scales = np.array([dataclasses.astuple(task)[0] for task in tasks])
        assert (scales < 0.5).any() and (scales >= 2.0).any(), "both intervals"


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(OOD_FAMILIES)))
def test_families_without_ood_raise(name: str) -> None:
    family = envs.make(name)
    assert not family.has_ood
    with pytest.raises(ValueError, match="ood"):
        family.ood_tasks()
    with pytest.raises(ValueError, match="ood|split"):
        family.held_out_tasks("ood")


@pytest.mark.parametrize("name", PARAMS_FAMILIES)
def test_ood_split_trains_params_families_on_the_reduced_range(name: str) -> None:
    family = envs.make(name, split="ood")
    tasks = family.sample_tasks(np.random.default_rng(3), 20)
    _check_training_distribution(name, family, tasks, u_bound=2.0)
    u = np.concatenate([_log_base(task)["geom_friction"].ravel() for task in tasks])
    assert u.max() > 1.8 and u.min() < -1.8, "reduced range is U[-2, 2], not narrower"
    assert family.ood_tasks() == envs.make(name).ood_tasks(), "the ood set does not depend on the split"


@pytest.mark.parametrize("name", ["half_cheetah_vel", "half_cheetah_mass", "half_cheetah_friction"])
def test_ood_split_keeps_the_training_distribution_where_it_is_already_disjoint(name: str) -> None:
    family = envs.make(name, split="ood")
    tasks = family.sample_tasks(np.random.default_rng(3), 30)
    _check_training_distribution(name, family, tasks)


def test_pearl_variant_samples_up_to_three() -> None:
    family = envs.make("half_cheetah_vel", variant="pearl")
    tasks = family.sample_tasks(np.random.default_rng(0), 100)
    velocities = np.array([task.target_velocity for task in tasks])  # type: ignore[attr-defined]
    assert velocities.min() >= 0.0 and velocities.max() <= 3.0
    assert (velocities > 2.0).any()
    default = envs.make("half_cheetah_vel").sample_tasks(np.random.default_rng(0), 100)
    assert max(task.target_velocity for task in default) <= 2.0  # type: ignore[attr-defined]
    _check_training_distribution("half_cheetah_vel", family, family.test_tasks())


def test_ant_dir_2d_variant_samples_unit_vectors() -> None:
    family = envs.make("ant_dir", variant="2d")
    tasks = family.sample_tasks(np.random.default_rng(0), 50)
    directions = np.array([task.direction for task in tasks])  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-12)
    assert len(family.test_tasks()) == 40
    assert json.dumps(tasks[0].to_dict())


# ----------------------------------------------------------------- bad inputs
def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        envs.make("nope")
    assert "nope" in str(error.value)
    for name in NAMES:
        assert name in str(error.value)


def test_unknown_variant_lists_valid_variants() -> None:
    with pytest.raises(ValueError) as error:
        envs.make("half_cheetah_vel", variant="nope")
    assert "nope" in str(error.value)
    assert "default" in str(error.value) and "pearl" in str(error.value)
    with pytest.raises(ValueError, match="default"):
        envs.make("point_nav", variant="pearl")


def test_unknown_split_lists_valid_splits() -> None:
    with pytest.raises(ValueError, match="train"):
        envs.make("half_cheetah_vel", split="nope")
    with pytest.raises(ValueError, match="test"):
        envs.make("half_cheetah_vel").held_out_tasks("nope")


def _params_task_with(family: ParamsFamily, field: str, edit: Callable[[np.ndarray], np.ndarray]) -> ParamsTask:
    task = family.test_tasks()[0]
    assert isinstance(task, ParamsTask)
    values = task.to_dict()
    values[field] = edit(np.asarray(values[field], dtype=np.float64)).tolist()
    restored = ParamsTask.from_dict(values)
    assert isinstance(restored, ParamsTask)
    return restored


def _negative(index: int) -> Callable[[np.ndarray], np.ndarray]:
    def edit(values: np.ndarray) -> np.ndarray:
        values.flat[index] = -1.0
        return values

    return edit


def _set(index: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def edit(values: np.ndarray) -> np.ndarray:
        values.flat[index] = value
        return values

    return edit


BAD_TASKS: list[tuple[str, Callable[[TaskFamily], Task], str]] = [
    ("half_cheetah_mass", lambda f: MassTask(-1.0), "mass_scale"),
    ("half_cheetah_mass", lambda f: MassTask(0.0), "mass_scale"),
    ("half_cheetah_mass", lambda f: MassTask(float("nan")), "mass_scale"),
    ("half_cheetah_friction", lambda f: FrictionTask(-0.5), "friction_scale"),
    ("half_cheetah_friction", lambda f: FrictionTask(float("nan")), "friction_scale"),
    ("half_cheetah_friction", lambda f: FrictionTask(float("inf")), "friction_scale"),
    ("half_cheetah_vel", lambda f: VelocityTask(float("nan")), "target_velocity"),
    ("half_cheetah_dir", lambda f: DirectionTask(0.5), "direction"),
    ("half_cheetah_dir", lambda f: DirectionTask(0.0), "direction"),
    ("ant_dir", lambda f: DirectionTask(0.5), "direction"),
    ("ant_goal", lambda f: GoalTask((1.0, 2.0, 3.0)), "goal"),  # type: ignore[arg-type]
    ("ant_goal", lambda f: GoalTask((1.0,)), "goal"),  # type: ignore[arg-type]
    ("ant_goal", lambda f: GoalTask((float("nan"), 0.0)), "goal"),
    ("point_nav", lambda f: PointGoalTask((1.0,)), "goal"),  # type: ignore[arg-type]
    ("point_nav", lambda f: PointGoalTask((0.1, 0.2, 0.3)), "goal"),  # type: ignore[arg-type]
    ("point_nav", lambda f: PointGoalTask((0.0, float("inf"))), "goal"),
    ("half_cheetah_params", lambda f: _params_task_with(f, "body_mass", lambda v: v[:-1]), "body_mass"),  # type: ignore[arg-type]
    ("hopper_params", lambda f: _params_task_with(f, "geom_friction", lambda v: v[:, :2]), "geom_friction"),  # type: ignore[arg-type]
    ("walker_params", lambda f: _params_task_with(f, "dof_damping", _negative(3)), "dof_damping"),  # type: ignore[arg-type]
    ("hopper_params", lambda f: _params_task_with(f, "body_inertia", _negative(5)), "body_inertia"),  # type: ignore[arg-type]
    ("half_cheetah_params", lambda f: _params_task_with(f, "geom_friction", _set(2, float("nan"))), "geom_friction"),  # type: ignore[arg-type]
    ("walker_params", lambda f: _params_task_with(f, "body_mass", _set(0, 2.0)), "body_mass"),  # type: ignore[arg-type]
    ("half_cheetah_mass", lambda f: VelocityTask(1.0), "MassTask"),
    ("point_nav", lambda f: GoalTask((0.1, 0.1)), "PointGoalTask"),
]


@pytest.mark.parametrize(("name", "make_task", "parameter"), BAD_TASKS)
def test_bad_task_raises_value_error_naming_the_parameter(
    name: str, make_task: Callable[[TaskFamily], Task], parameter: str
) -> None:
    family = envs.make(name)
    task = make_task(family)
    with pytest.raises(ValueError, match=parameter):
        family.validate(task)
    with pytest.raises(ValueError, match=parameter):
        family.make_env(task)
    with pytest.raises(ValueError, match=parameter):
        family.batch([family.test_tasks()[0], task], episodes_per_task=1)
    with pytest.raises(ValueError, match=parameter):
        gym.make(envs.gym_id(name), task=task)


@pytest.mark.parametrize("name", NAMES)
def test_batch_rejects_bad_arguments(name: str) -> None:
    family = envs.make(name)
    with pytest.raises(ValueError, match="tasks"):
        family.batch([], episodes_per_task=1)
    with pytest.raises(ValueError, match="episodes_per_task"):
        family.batch(family.test_tasks()[:1], episodes_per_task=0)


def _bad_action(kind: str, shape: tuple[int, ...]) -> np.ndarray:
    action = np.zeros(shape)
    if kind == "nan":
        action.flat[-1] = np.nan
    elif kind == "inf":
        action.flat[0] = -np.inf
    elif kind == "short":
        action = action[..., :-1]
    elif kind == "extra_axis":
        action = action[None]
    return action


BAD_ACTIONS = ("nan", "inf", "short", "extra_axis")


@pytest.mark.parametrize("kind", BAD_ACTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_single_env_rejects_bad_actions_without_stepping(name: str, kind: str) -> None:
    family = envs.make(name)
    task = family.test_tasks()[0]
    env, reference = family.make_env(task), family.make_env(task)
    env.reset(seed=5)
    reference.reset(seed=5)
    with pytest.raises(ValueError, match="action"):
        env.step(_bad_action(kind, (family.action_dim,)))
    action = np.random.default_rng(0).uniform(-0.5, 0.5, family.action_dim)
    obs, reward, terminated, _, _ = env.step(action)
    ref_obs, ref_reward, ref_terminated, _, _ = reference.step(action)
    np.testing.assert_array_equal(obs, ref_obs)
    assert reward == ref_reward and terminated == ref_terminated


@pytest.mark.parametrize("kind", BAD_ACTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_batch_rejects_bad_actions_without_stepping(name: str, kind: str) -> None:
    family = envs.make(name)
    tasks = family.test_tasks()[:2]
    sim = family.batch(tasks, episodes_per_task=2, seed=1, nthread=1)
    reference = family.batch(tasks, episodes_per_task=2, seed=1, nthread=1)
    np.testing.assert_array_equal(sim.reset(), reference.reset())
    rng = np.random.default_rng(0)
    first = rng.uniform(-0.5, 0.5, (sim.num_slots, family.action_dim))
    sim.step(first)
    reference.step(first)
    t, done = sim.t, sim.done
    with pytest.raises(ValueError, match="action"):
        sim.step(_bad_action(kind, (sim.num_slots, family.action_dim)))
    assert sim.t == t == 1
    np.testing.assert_array_equal(sim.done, done)
    action = rng.uniform(-0.5, 0.5, (sim.num_slots, family.action_dim))
    result, expected = sim.step(action), reference.step(action)
    np.testing.assert_array_equal(result.obs, expected.obs)
    np.testing.assert_array_equal(result.reward, expected.reward)
    np.testing.assert_array_equal(result.done, expected.done)
    assert sim.t == 2


@pytest.mark.parametrize("name", ["point_nav", "half_cheetah_vel"])
def test_batch_step_before_reset_raises(name: str) -> None:
    family = envs.make(name)
    sim = family.batch(family.test_tasks()[:1], episodes_per_task=1, nthread=1)
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(np.zeros((1, family.action_dim)))


# ---------------------------------------------------------------- Gymnasium
@pytest.mark.parametrize("name", NAMES)
def test_gym_id_makes_the_family_env(name: str) -> None:
    family = envs.make(name)
    env_id = envs.gym_id(name)
    assert env_id.startswith("metarl/") and env_id.endswith("-v0")
    env = gym.make(env_id)
    assert env.spec is not None and env.spec.max_episode_steps == family.horizon
    assert env.unwrapped.task == family.default_task()  # type: ignore[attr-defined]
    assert env.observation_space.shape == (family.observation_dim,)
    assert env.action_space.shape == (family.action_dim,)
    obs, info = env.reset(seed=0)
    assert obs.shape == (family.observation_dim,)
    assert info["task"] == family.default_task().to_dict()
    task = family.sample_tasks(np.random.default_rng(11), 1)[0]
    assert gym.make(env_id, task=task).unwrapped.task == task  # type: ignore[attr-defined]
    assert gym.make(env_id, task=task.to_dict()).unwrapped.task == task  # type: ignore[attr-defined]
    env.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space m..imum value is .*infinity")
@pytest.mark.parametrize("name", NAMES)
def test_gym_env_passes_env_checkers(name: str) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    family = envs.make(name)
    task = family.sample_tasks(np.random.default_rng(2), 1)[0]
    for env in (gym.make(envs.gym_id(name)), gym.make(envs.gym_id(name), task=task)):
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)
        env.close()


def test_point_nav_renders_rgb_array() -> None:
    env = gym.make(envs.gym_id("point_nav"), render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.array([0.1, -0.1]))
    frame = env.render()
    assert isinstance(frame, np.ndarray)
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert frame.min() < 255, "goal and point are drawn"


@pytest.mark.render
def test_half_cheetah_renders_rgb_array() -> None:
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco/>")
    try:
        renderer = mujoco.Renderer(model, 32, 32)
    except Exception as error:  # no OpenGL context available: nothing to test here
        pytest.skip(f"MuJoCo rendering unavailable: {error!r}")
    renderer.close()
    env = gym.make(envs.gym_id("half_cheetah_vel"), render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    env.close()
    assert isinstance(frame, np.ndarray)
    assert frame.shape == (64, 96, 3)
    assert frame.std() > 0, "the frame is not blank"
