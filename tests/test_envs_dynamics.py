"""Dynamics multipliers: they change the model exactly as task_families.md says,
never compound across tasks, reach every slot of a batch, and change the physics."""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
import pytest

import envs
from envs.core import Task
from envs.dynamics import PARAM_BASES, FrictionTask, MassTask, ParamsTask
from envs.mujoco_base import MujocoFamily, _load_model
from envs.vector import MujocoBatch

pytestmark = pytest.mark.usefixtures("in_tmp_dir")

DYNAMICS_FAMILIES = (
    "half_cheetah_mass",
    "half_cheetah_friction",
    "half_cheetah_params",
    "hopper_params",
    "walker_params",
)
FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
DERIVED = ("body_subtreemass", "dof_invweight0", "body_invweight0")
"""Constants mj_setConst derives from masses and inertias."""


def mujoco_family(name: str) -> MujocoFamily:
    family = envs.make(name)
    assert isinstance(family, MujocoFamily)
    return family


def pristine_model(family: MujocoFamily) -> mujoco.MjModel:
    """The robot's model loaded from its XML file, untouched by any task."""
    return mujoco.MjModel.from_xml_path(family.robot.xml_path)


def expected_fields(task: Task, base: mujoco.MjModel) -> dict[str, np.ndarray]:
    """The four model fields of ``task``, computed from the spec."""
    fields = {name: getattr(base, name).copy() for name in FIELDS}
    if isinstance(task, MassTask):
        fields["body_mass"][1:] *= task.mass_scale
        fields["body_inertia"][1:] *= task.mass_scale
    elif isinstance(task, FrictionTask):
        fields["geom_friction"][:, 0] *= task.friction_scale
    else:
        assert isinstance(task, ParamsTask)
        for name in FIELDS:
            fields[name] = fields[name] * np.asarray(getattr(task, name))
    return fields


def two_tasks(name: str) -> tuple[Task, Task]:
    family = envs.make(name)
    if name == "half_cheetah_mass":
        return MassTask(0.5), MassTask(2.0)
    if name == "half_cheetah_friction":
        return FrictionTask(0.25), FrictionTask(2.0)
    first, second = family.sample_tasks(np.random.default_rng(4), 2)
    return first, second


def assert_fields(model: mujoco.MjModel, expected: dict[str, np.ndarray]) -> None:
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(model, name), values, rtol=1e-12, atol=0, err_msg=name)


@pytest.mark.parametrize("name", DYNAMICS_FAMILIES)
def test_task_model_applies_exactly_the_multipliers(name: str) -> None:
    family = mujoco_family(name)
    base = pristine_model(family)
    for task in two_tasks(name):
        model = family.task_model(task)
        expected = expected_fields(task, base)
        assert_fields(model, expected)
        assert model.body_mass[0] == base.body_mass[0], "world body unchanged"
        np.testing.assert_array_equal(model.body_inertia[0], base.body_inertia[0])
        changed = [field for field in FIELDS if not np.array_equal(getattr(model, field), getattr(base, field))]
        if isinstance(task, MassTask):
            assert changed == ["body_mass", "body_inertia"]
        elif isinstance(task, FrictionTask):
            assert changed == ["geom_friction"]
            np.testing.assert_array_equal(model.geom_friction[:, 1:], base.geom_friction[:, 1:])
        else:
            assert changed == list(FIELDS)


@pytest.mark.parametrize("name", ["half_cheetah_params", "hopper_params", "walker_params"])
def test_params_multipliers_follow_the_bases(name: str) -> None:
    """``field *= base**u`` with the bases of task_families.md: u = 1 everywhere."""
    family = mujoco_family(name)
    base = pristine_model(family)
    fields = {}
    for field, multiplier_base in PARAM_BASES.items():
        values = np.full(getattr(base, field).shape, multiplier_base)
        if field.startswith("body_"):
            values[0] = 1.0
        fields[field] = values.tolist()
    task = ParamsTask.from_dict(fields)
    model = family.task_model(task)
    np.testing.assert_allclose(model.body_mass[1:], base.body_mass[1:] * 1.5, rtol=1e-12)
    np.testing.assert_allclose(model.body_inertia[1:], base.body_inertia[1:] * 1.5, rtol=1e-12)
    np.testing.assert_allclose(model.dof_damping, base.dof_damping * 1.3, rtol=1e-12)
    np.testing.assert_allclose(model.geom_friction, base.geom_friction * 1.5, rtol=1e-12)
    assert PARAM_BASES == {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
    assert math.isclose(model.body_subtreemass[0], base.body_subtreemass[0] * 1.5, rel_tol=1e-12)


@pytest.mark.parametrize("name", DYNAMICS_FAMILIES)
def test_task_models_never_compound(name: str) -> None:
    family = mujoco_family(name)
    base = pristine_model(family)
    a, b = two_tasks(name)
    first = family.task_model(a)
    family.task_model(b)
    family.make_env(b)
    family.batch([b, a], episodes_per_task=1, nthread=1)
    again = family.task_model(a)
    for field in FIELDS + DERIVED:
        np.testing.assert_array_equal(getattr(again, field), getattr(first, field), err_msg=field)
    env = family.make_env(a)
    for field in FIELDS + DERIVED:
        np.testing.assert_array_equal(getattr(env.unwrapped.model, field), getattr(first, field), err_msg=field)  # type: ignore[attr-defined]
    untouched = family.robot.base_model()
    for field in FIELDS + DERIVED:
        np.testing.assert_array_equal(getattr(untouched, field), getattr(base, field), err_msg=f"base model {field}")


@pytest.mark.parametrize("name", DYNAMICS_FAMILIES)
def test_batch_slots_run_their_tasks_model(name: str) -> None:
    family = mujoco_family(name)
    a, b = two_tasks(name)
    sim = family.batch([a, b], episodes_per_task=2, seed=0, nthread=1)
    assert isinstance(sim, MujocoBatch)
    expected = {task: family.task_model(task) for task in (a, b)}
    for slot, task in enumerate([a, a, b, b]):
        model = sim.slot_model(slot)
        for field in FIELDS + DERIVED:
            values, wanted = getattr(model, field), getattr(expected[task], field)
            np.testing.assert_allclose(values, wanted, rtol=1e-12, atol=0, err_msg=f"slot {slot} {field}")
    for field in FIELDS:  # the batch's shared model is the unmodified one
        np.testing.assert_array_equal(getattr(sim.model, field), getattr(pristine_model(family), field))


@pytest.mark.parametrize("name", DYNAMICS_FAMILIES)
def test_different_dynamics_give_different_trajectories(name: str) -> None:
    family = mujoco_family(name)
    a, b = two_tasks(name)
    sim = family.batch([a, b], episodes_per_task=2, seed=0, nthread=1)
    assert isinstance(sim, MujocoBatch)
    sim.reset()
    start = sim.slot_data(0)
    num_slots = sim.num_slots
    obs = sim.set_state(np.tile(start.qpos, (num_slots, 1)), np.tile(start.qvel, (num_slots, 1)))
    np.testing.assert_array_equal(obs, np.tile(obs[0], (num_slots, 1)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1.0, 1.0, family.action_dim)
        result = sim.step(np.tile(action, (num_slots, 1)))
        if result.done.any():
            break
    np.testing.assert_array_equal(result.obs[0], result.obs[1], err_msg="same task, same state, same actions")
    np.testing.assert_array_equal(result.obs[2], result.obs[3])
    assert np.abs(result.obs[0] - result.obs[2]).max() > 1e-3, "the dynamics change the trajectory"


def test_heavier_half_cheetah_moves_differently_in_single_envs() -> None:
    family = mujoco_family("half_cheetah_mass")
    light, heavy = family.make_env(MassTask(0.5)), family.make_env(MassTask(2.0))
    obs_light, _ = light.reset(seed=0)
    obs_heavy, _ = heavy.reset(seed=0)
    np.testing.assert_array_equal(obs_light, obs_heavy)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1.0, 1.0, family.action_dim)
        obs_light = light.step(action)[0]
        obs_heavy = heavy.step(action)[0]
    assert np.abs(obs_light - obs_heavy).max() > 1e-2
    assert light.unwrapped.model.body_mass.sum() * 4 == pytest.approx(heavy.unwrapped.model.body_mass.sum())  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["half_cheetah_vel", "ant_dir", "hopper_params", "walker_params"])
def test_models_equal_their_assets_without_mujocos_deprecation_warning(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """HalfCheetah's ``settotalmass``, applied after compiling, gives the model MuJoCo compiles from
    the asset, field for field, without the deprecation warning or a MUJOCO_LOG.TXT beside the user."""
    family = mujoco_family(name)
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    model = _load_model.__wrapped__(family.robot.xml_path)  # uncached: the compile happens here
    assert "WARNING" not in "".join(capfd.readouterr())
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    asset = pristine_model(family)
    fields = [field for field in dir(asset) if isinstance(getattr(asset, field), np.ndarray)]
    assert "body_mass" in fields and "dof_invweight0" in fields
    for field in fields:
        np.testing.assert_array_equal(getattr(model, field), getattr(asset, field), err_msg=field)
