"""Stable-Baselines3 baselines (agents.baselines, scripts/baselines.py), the results table
(metarl.results, scripts/results.py) and ``evaluate.py --compare``. Tiny budgets: seconds each."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import envs
from agents import baselines as agents_baselines
from agents.baselines import (
    KINDS,
    Agent,
    TaskResamplingEnv,
    evaluate,
    fit_to_budget,
    fitting_divisor,
    hyperparameters,
    resolve,
    task_env,
    task_vector,
    train,
)
from metarl import plots, results
from metarl.config import MAMLConfig, TrainConfig
from metarl.config import resolve as resolve_config
from metarl.evaluation import curve
from scripts import baselines, meta_train
from scripts import evaluate as evaluate_script
from scripts import results as results_script


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # SB3's small MLPs train fastest single-threaded
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ environments
def test_task_vector_is_the_tasks_fields_flattened() -> None:
    goal = envs.make("point_nav").task_type.from_dict({"goal": [0.1, -0.2]})
    np.testing.assert_array_equal(task_vector(goal), [0.1, -0.2])
    mass = envs.make("half_cheetah_mass").test_tasks()[0]
    np.testing.assert_array_equal(task_vector(mass), [mass.mass_scale])  # type: ignore[attr-defined]
    params = envs.make("hopper_params").test_tasks()[0]
    fields = params.to_dict()
    expected = np.concatenate(
        [np.ravel(fields[k]) for k in ("body_mass", "body_inertia", "dof_damping", "geom_friction")]
    )
    np.testing.assert_array_equal(task_vector(params), expected)


@pytest.mark.parametrize("name", ["point_nav", "half_cheetah_mass"])
def test_oracle_observation_ends_with_the_task_parameters(name: str, in_tmp_dir: Path) -> None:
    family = envs.make(name)
    oracle, hidden = TaskResamplingEnv(family, observe_task=True), TaskResamplingEnv(family)
    size = len(task_vector(family.test_tasks()[0]))
    assert oracle.observation_space.shape == (family.observation_dim + size,)
    assert hidden.observation_space.shape == (family.observation_dim,)
    tasks = []
    for episode in range(4):
        obs, _ = oracle.reset(seed=7) if episode == 0 else oracle.reset()
        hidden_obs, _ = hidden.reset(seed=7) if episode == 0 else hidden.reset()
        assert hidden.task == oracle.task  # same seed, same task sequence
        np.testing.assert_array_equal(obs[-size:], task_vector(oracle.task))
        np.testing.assert_array_equal(obs[:-size], hidden_obs)
        obs, *_ = oracle.step(oracle.action_space.sample())
        np.testing.assert_array_equal(obs[-size:], task_vector(oracle.task))
        tasks.append(oracle.task)
    assert len(set(tasks)) == 4  # a new task every episode
    assert TaskResamplingEnv(family).reset(seed=8)[1]["task"] != tasks[0].to_dict()


class RecordingAgent(Agent):
    """Acts 0 and keeps every observation it was given."""

    def __init__(self) -> None:
        super().__init__("ppo", None)
        self.seen: list[np.ndarray] = []

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.seen.append(obs.copy())
        return np.zeros((len(obs), 2))


def test_oracle_is_evaluated_with_each_slots_task() -> None:
    family = envs.make("point_nav")
    tasks = family.test_tasks()[:3]
    agent = RecordingAgent()
    returns = evaluate(family, tasks, [agent], episodes=2, seed=0, observe_task=True)
    goals = np.repeat([t.goal for t in tasks], 2, axis=0)  # type: ignore[attr-defined]
    assert len(agent.seen) == family.horizon
    for obs in agent.seen:
        np.testing.assert_array_equal(obs[:, 2:], goals)
    # standing still at the origin: -||g|| per step
    np.testing.assert_allclose(returns, [-family.horizon * np.linalg.norm(t.goal) for t in tasks])  # type: ignore[attr-defined]


# ------------------------------------------------------------------ budgets and hyperparameters
def test_budget_fitting_rules() -> None:
    assert fitting_divisor(4000, 512) == 500
    assert fitting_divisor(2000, 2048) == 2000
    assert fitting_divisor(256, 512) == 256
    assert fitting_divisor(2 * 2053, 2048) == 2048  # no divisor in [1024, 2048]: the preferred size
    cheetah = hyperparameters("ppo", "half_cheetah_vel")
    assert "HalfCheetah-v4" in cheetah.source and cheetah.normalize
    fitted = fit_to_budget("ppo", cheetah.values, 4000)
    assert (fitted["n_steps"], fitted["batch_size"], fitted["n_epochs"]) == (500, 50, 20)
    assert fit_to_budget("ppo", {}, 2000)["n_steps"] == 2000  # SB3 default 2048 cut to the budget
    sac = hyperparameters("sac", "hopper_params")
    assert "Hopper-v3" in sac.source and not sac.normalize
    assert fit_to_budget("sac", sac.values, 4000) == {"learning_starts": 400, "buffer_size": 4000}
    assert fit_to_budget("sac", sac.values, 10**7)["learning_starts"] == 10000
    assert fit_to_budget("sac", sac.values, 4000, fine_tune=True)["learning_starts"] == 0
    assert hyperparameters("ppo", "point_nav").source.startswith("SB3 defaults")


def test_budgets_resolve_from_preset_run_and_flags(tmp_path: Path) -> None:
    preset = resolve("half_cheetah_vel", 200, kinds=("scratch",))
    assert preset.adaptation_env_steps == TrainConfig().episodes_per_task * 200 == 4000
    explicit = resolve("half_cheetah_vel", 200, adaptation_env_steps=123, multitask_env_steps=456)
    assert (explicit.adaptation_env_steps, explicit.multitask_env_steps) == (123, 456)
    with pytest.raises(ValueError, match="--run RUN_DIR, --from-eval FILE"):
        resolve("half_cheetah_vel", 200)
    with pytest.raises(ValueError, match="not a metarl run directory"):
        resolve("half_cheetah_vel", 200, run_dir=tmp_path)


def test_plan_estimates_the_time_from_slow_to_fast_machines() -> None:
    """5 tasks x (1 + 10 + 100) x 4,000 env-steps on 2 jobs: 1.11M env-steps per job, 0.5 h at
    650/s and 1.0 h at 300/s; the multitask agent first, then its 5 fine-tunes 2 at a time."""
    config = resolve("half_cheetah_vel", 200, adaptation_env_steps=4000, multitask_env_steps=600_000)
    config = dataclasses.replace(config, multipliers=(1, 10, 100), kinds=("scratch", "multitask"))
    assert agents_baselines.SPEED_ESTIMATE["ppo", "mujoco"] == (300.0, 650.0)
    lines = agents_baselines.plan(config, num_tasks=5, jobs=2)
    assert lines[1] == "scratch: 2,220,000 env-steps, about 0.5-1.0 h at 300-650 env-steps/s per job, 2 jobs"
    assert lines[2] == "multitask: 620,000 env-steps, about 0.3-0.6 h at 300-650 env-steps/s per job, 2 jobs"
    point_nav = dataclasses.replace(config, env="point_nav", kinds=("scratch",))
    assert agents_baselines.plan(point_nav, num_tasks=5)[1].endswith("about 0.4 h at 1450 env-steps/s")


# ------------------------------------------------------------------ agents
@pytest.mark.parametrize(("name", "algo", "steps"), [("half_cheetah_vel", "ppo", 256), ("point_nav", "sac", 64)])
def test_saved_agents_reload_and_act_the_same(
    name: str, algo: str, steps: int, tmp_path: Path, in_tmp_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tempdir"  # SB3's default logger would leave a directory here per learn()
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    family = envs.make(name)
    task = family.test_tasks()[0]
    setting = hyperparameters(algo, name)
    agent, record = train(algo, setting, lambda: task_env(family, task), steps, seed=3)
    assert record["budget"] == record["env_steps"] == steps
    assert (agent.normalizer is not None) == setting.normalize
    agent.save(tmp_path / "agent")
    obs = np.random.default_rng(0).normal(size=(16, family.observation_dim))
    loaded = Agent.load(tmp_path / "agent", algo)
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    if setting.normalize:  # the statistics travel with the model
        np.testing.assert_array_equal(loaded.normalizer.obs_rms.mean, agent.normalizer.obs_rms.mean)
    tuned, record = train(algo, setting, lambda: task_env(family, task), steps, seed=4, start=tmp_path / "agent")
    assert record["env_steps"] == steps
    if setting.normalize:  # fine-tuning goes on updating the pretrained statistics
        assert tuned.normalizer.obs_rms.count >= agent.normalizer.obs_rms.count + steps
    assert not list(scratch.glob("SB3-*"))


def test_evaluation_matches_single_env_rollouts() -> None:
    family = envs.make("point_nav")  # deterministic start: batched and single env see the same episode
    tasks = family.test_tasks()[:2]
    agents = [
        train("ppo", hyperparameters("ppo", "point_nav"), lambda t=t: task_env(family, t), 64, i)[0]
        for i, t in enumerate(tasks)
    ]
    batched = evaluate(family, tasks, agents, episodes=2, seed=0)
    for agent, task, expected in zip(agents, tasks, batched, strict=True):
        env, total, done = task_env(family, task), 0.0, False
        obs, _ = env.reset(seed=0)
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs[None])[0])
            total, done = total + reward, terminated or truncated
        assert total == pytest.approx(expected, rel=1e-6)  # float32 policy, batch of 2 vs 1


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-iteration point_nav run and its evaluation report (2 episodes per inner step)."""
    root = tmp_path_factory.mktemp("meta")
    run = root / "run"
    argv = ["--env", "point_nav", "--policy", "mlp", "--iterations", "1", "--meta-batch-size", "2"]
    assert meta_train.main([*argv, "--episodes-per-task", "2", "--out", str(run), "--no-progress"]) == 0
    report = root / "results" / "point_nav" / "test" / "eval__mlp__0.json"
    argv = [str(run), "--steps", "1", "--episodes", "4", "--episodes-per-task", "2", "--json", str(report)]
    assert evaluate_script.main(argv) == 0
    return report


@pytest.fixture(scope="module")
def baseline_dir(evaluated: Path) -> Path:
    out = evaluated.parent / "ppo__0"
    argv = ["--env", "point_nav", "--from-eval", str(evaluated), "--num-tasks", "2", "--multipliers", "1", "3"]
    argv += ["--eval-episodes", "2", "--out", str(out), "--csv", str(out / "all.csv")]
    assert baselines.main(argv) == 0
    return out


def test_evaluation_records_the_adaptation_budget(evaluated: Path) -> None:
    report = json.loads(evaluated.read_text())
    horizon = envs.make("point_nav").horizon
    assert report["horizon"] == horizon and report["episodes_per_step"] == 2
    assert report["adaptation_env_steps_per_step"] == report["adaptation_env_steps"] == 2 * horizon
    assert report["meta_training"]["iterations"] == 1
    assert report["meta_training"]["env_steps"] == 1 * 2 * 2 * 2 * horizon  # pre and post, 2 tasks x 2 episodes
    assert report["meta_training"]["wall_clock_s"] > 0


def test_each_kind_writes_its_report_models_and_csv(baseline_dir: Path, evaluated: Path) -> None:
    evaluation = json.loads(evaluated.read_text())
    budget = evaluation["adaptation_env_steps_per_step"]
    expected_x = {"scratch": [1, 3], "multitask": [0, 1], "oracle": [0]}
    reports = []
    for kind in KINDS:
        report = json.loads((baseline_dir / f"{kind}.json").read_text())
        reports.append(report)
        assert (report["kind"], report["algo"], report["env"], report["split"]) == (kind, "ppo", "point_nav", "test")
        assert report["command"].startswith("python scripts/baselines.py --env point_nav")
        assert report["config"]["multitask_env_steps"] == evaluation["meta_training"]["env_steps"]
        assert report["hyperparameters"] == json.loads(json.dumps(hyperparameters("ppo", "point_nav")._asdict()))
        assert report["tasks"] == evaluation["tasks"][:2]
        c = report["by_budget"]
        assert c["x"] == expected_x[kind] and c["env_steps"] == [x * budget for x in c["x"]]
        assert np.asarray(c["per_task"]).shape == (len(c["x"]), 2)
        np.testing.assert_allclose(c["mean"], np.mean(c["per_task"], axis=1))
        assert all(lo <= m <= hi for lo, m, hi in zip(c["ci95_low"], c["mean"], c["ci95_high"], strict=True))
        for agent in report["agents"]:
            assert (baseline_dir / agent["model"] / "model.zip").is_file()
            assert agent["env_steps"] == agent["budget"] and agent["wall_clock_s"] > 0
        assert report["training"]["env_steps"] == sum(a["env_steps"] for a in report["agents"])
    scratch, multitask, oracle = reports
    assert [a["budget"] for a in scratch["agents"]] == [budget, budget, 3 * budget, 3 * budget]
    meta_steps = evaluation["meta_training"]["env_steps"]
    assert [a["budget"] for a in multitask["agents"]] == [meta_steps, budget, budget]
    assert [a["budget"] for a in oracle["agents"]] == [meta_steps]
    rows = list(csv.DictReader((baseline_dir / "all.csv").open()))
    assert tuple(rows[0]) == plots.CSV_COLUMNS
    assert len(rows) == (2 + 2 + 1) * (2 + 3)  # (x values of the three kinds) x (2 tasks + mean, ci95 low/high)
    by_kind = {r["kind"]: r["by_budget"] for r in reports}
    for row in rows:
        c = by_kind[row["mode"]]
        i = c["x"].index(int(row["x"]))
        expected = c["per_task"][i][int(row["task_index"])] if row["stat"] == "task" else c[row["stat"]][i]
        assert row["curve"] == "by_budget" and float(row["value"]) == expected


def test_saved_models_reproduce_the_reported_returns(baseline_dir: Path) -> None:
    family = envs.make("point_nav")
    report = json.loads((baseline_dir / "scratch.json").read_text())
    tasks = [family.task_type.from_dict(t) for t in report["tasks"]]
    agents = [Agent.load(baseline_dir / a["model"], "ppo") for a in report["agents"] if a["multiplier"] == 3]
    again = evaluate(family, tasks, agents, report["config"]["eval_episodes"], report["config"]["eval_seed"])
    np.testing.assert_array_equal(again, report["by_budget"]["per_task"][1])
    oracle = json.loads((baseline_dir / "oracle.json").read_text())
    agent = Agent.load(baseline_dir / oracle["agents"][0]["model"], "ppo")
    np.testing.assert_array_equal(
        evaluate(family, tasks, [agent], 2, 0, observe_task=True), oracle["by_budget"]["per_task"][0]
    )


def test_scratch_budget_equals_the_recorded_adaptation_budget(evaluated: Path, baseline_dir: Path) -> None:
    evaluation = json.loads(evaluated.read_text())
    budget = evaluation["adaptation_env_steps_per_step"]
    scratch = json.loads((baseline_dir / "scratch.json").read_text())
    assert scratch["adaptation_env_steps_per_step"] == budget
    assert [a["env_steps"] for a in scratch["agents"] if a["multiplier"] == 1] == [budget, budget]
    horizon = envs.make("point_nav").horizon
    from_run = resolve("point_nav", horizon, run_dir=Path(evaluation["run_dir"]))
    from_eval = resolve("point_nav", horizon, eval_report=evaluation)
    assert from_run.adaptation_env_steps == from_eval.adaptation_env_steps == budget
    assert from_run.multitask_env_steps == from_eval.multitask_env_steps == evaluation["meta_training"]["env_steps"]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "nope"], "valid names: point_nav, half_cheetah_vel"),
        (["--env", "point_nav", "--algo", "td3"], "must be one of ppo, sac"),
        (["--env", "point_nav", "--kinds", "scratch", "magic"], "valid kinds: scratch, multitask, oracle"),
        (["--env", "point_nav", "--multitask-steps", "0"], "invalid --multitask-steps 0: must be > 0"),
        (["--env", "point_nav", "--adaptation-steps", "-5"], "invalid --adaptation-steps -5: must be > 0"),
        (["--env", "point_nav", "--kinds", "scratch", "--multipliers", "1", "0"], "invalid --multipliers 1 0"),
        (["--env", "point_nav", "--kinds", "oracle"], "give --run RUN_DIR, --from-eval FILE"),
        (["--env", "point_nav", "--run", "{tmp}"], "not a metarl run directory"),
        (["--env", "half_cheetah_vel", "--from-eval", "{eval}"], "is on point_nav, not on --env half_cheetah_vel"),
        (["--env", "point_nav", "--kinds", "scratch", "--split", "ood"], "point_nav has no ood tasks"),
        (["--env", "point_nav", "--kinds", "scratch", "--jobs", "0"], "invalid --jobs 0: must be >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], message: str, evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(tmp=tmp_path, eval=evaluated) for a in args]
    assert baselines.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_existing_report_is_not_overwritten(baseline_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--env", "point_nav", "--kinds", "scratch", "--out", str(baseline_dir)]
    assert baselines.main(argv) == 2
    assert "already holds scratch.json" in capsys.readouterr().err


def test_parallel_jobs_give_the_same_reports(baseline_dir: Path, evaluated: Path, tmp_path: Path) -> None:
    argv = ["--env", "point_nav", "--from-eval", str(evaluated), "--num-tasks", "2", "--multipliers", "1", "3"]
    assert baselines.main([*argv, "--eval-episodes", "2", "--out", str(tmp_path), "--jobs", "2"]) == 0
    for kind in KINDS:
        parallel, serial = (json.loads((d / f"{kind}.json").read_text()) for d in (tmp_path, baseline_dir))
        assert parallel["by_budget"] == serial["by_budget"]
        strip = ("wall_clock_s",)
        assert [{k: v for k, v in a.items() if k not in strip} for a in parallel["agents"]] == [
            {k: v for k, v in a.items() if k not in strip} for a in serial["agents"]
        ]
        for agent in parallel["agents"]:  # the report's entry is the agent's own record
            assert json.loads((tmp_path / agent["model"] / "record.json").read_text()) == agent


def test_an_interrupted_run_resumes_with_its_saved_agents(
    baseline_dir: Path, evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(baseline_dir / "scratch", out / "scratch")
    (out / "scratch" / "x3" / "task_01" / "record.json").unlink()  # killed while training (or saving) this one
    argv = ["--env", "point_nav", "--from-eval", str(evaluated), "--num-tasks", "2", "--multipliers", "1", "3"]
    argv += ["--eval-episodes", "2", "--kinds", "scratch", "--out", str(out)]
    assert baselines.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  3 agents saved in" in "\n".join(lines)
    assert sum("saved before, reused" in line for line in lines) == 3
    assert [line.split(":")[0] for line in lines if "env-steps in" in line] == ["  scratch x3/task_01"]
    resumed, whole = (json.loads((d / "scratch.json").read_text()) for d in (out, baseline_dir))
    assert resumed["by_budget"] == whole["by_budget"]
    # an agent of another seed (or task, budget, setting) is never taken for this run's
    (out / "scratch.json").unlink()
    assert baselines.main([*argv, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds an agent trained with another seed" in err and len(err.splitlines()) == 1
    # Ctrl-C while an agent trains: exit 130 with one line, the agents saved before it kept
    (out / "scratch" / "x3").rename(out / "x3 moved")
    trained = agents_baselines.train_and_save

    def interrupted(*args: Any) -> dict[str, Any]:
        if args[2].name == "x3/task_01":
            raise KeyboardInterrupt
        return trained(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agents_baselines, "train_and_save", interrupted)
        assert baselines.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert f"interrupted; 3 agents saved in {out}" in err and len(err.splitlines()) == 1
    assert not (out / "scratch.json").exists()
    (out / "scratch" / "x1" / "task_00" / "record.json").write_text("{not json")
    assert baselines.main(argv) == 2
    assert "record.json is unreadable" in capsys.readouterr().err


# ------------------------------------------------------------------ results table and --compare
def test_results_table_from_saved_reports(evaluated: Path, baseline_dir: Path, tmp_path: Path, capsys) -> None:
    root = evaluated.parent.parent.parent
    assert results_script.main(["--dir", str(root)]) == 0
    table = capsys.readouterr().out
    section = table[table.index("**`point_nav`, test tasks**") :]
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in section.splitlines() if line.startswith("| ")
    }
    headers = rows[""]
    scratch = json.loads((baseline_dir / "scratch.json").read_text())["by_budget"]
    row = rows["PPO from scratch"]
    mean, low, high = scratch["mean"][0], scratch["ci95_low"][0], scratch["ci95_high"][0]
    assert row[headers.index("after 1 step")] == f"{mean:.1f} [{low:.1f}, {high:.1f}]"
    assert row[headers.index("after 3 steps")].startswith(f"{scratch['mean'][1]:.1f} [")
    assert row[headers.index("before adaptation")] == row[headers.index("after 10 steps")] == "–"
    evaluation = json.loads(evaluated.read_text())
    maml = rows["MAML + MLP, meta-batch-size 2, episodes-per-task 2"]  # the settings it differs from the preset in
    assert maml[headers.index("before adaptation")].startswith(f"{evaluation['by_gradient_steps']['mean'][0]:.1f}")
    episode_2 = evaluation["by_episodes"]["gradient"]["mean"][1]  # after 1 episode of experience
    assert maml[headers.index("after 1 episode")].startswith(f"{episode_2:.1f}")
    assert maml[headers.index("after 10 episodes")] == "–"  # evaluated with --episodes 4
    assert maml[headers.index("seeds")] == "1" and maml[headers.index("training env-steps")] == "800"
    assert rows["MAML + attention"][1:-1] == ["–"] * (len(headers) - 2)
    assert "python scripts/meta_train.py --env point_nav --policy mlp --seed 0 --iterations 1" in section
    assert "python scripts/baselines.py --env point_nav --from-eval" in section
    assert "python scripts/evaluate.py RUN_DIR --steps" in section  # not the path of the machine that ran it
    assert evaluation["run_dir"] not in table
    assert "**`half_cheetah_mass`, ood tasks**" in table  # every table of the issue, empty or not

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{results.START}\nold table\n{results.END}\nafter\n")
    assert results_script.main(["--dir", str(root), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{results.END}\nafter\n")
    assert table in text
    readme.write_text("no markers")
    assert results_script.main(["--dir", str(root), "--write", str(readme)]) == 2
    assert "no <!-- results:start -->" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(env="point_nav", policy="mlp", iterations=7, meta_batch_size=3),
        TrainConfig(env="half_cheetah_dir", seed=2, hidden_sizes=(32, 16), maml=MAMLConfig(first_order=True)),
        TrainConfig(env="half_cheetah_dir", context_fraction=0.5, time_limit=3.0, maml=MAMLConfig(gamma=0.99)),
    ],
)
def test_training_command_gives_the_runs_config(config: TrainConfig) -> None:
    command = results.training_command(config.to_dict()).split()
    assert command[:2] == ["python", "scripts/meta_train.py"]
    assert resolve_config(meta_train.parser().parse_args(command[2:])) == config


def test_only_seeds_and_budgets_share_a_row() -> None:
    parser = meta_train.parser()
    preset = resolve_config(parser.parse_args(["--env", "half_cheetah_dir", "--policy", "mlp"]))
    assert results.policy_name(preset.to_dict()) == "mlp"
    other_seed = dataclasses.replace(preset, seed=3, time_limit=45.0, iterations=9, checkpoint_every=5)
    assert results.policy_name(other_seed.to_dict()) == "mlp"
    inner_lr, max_kl = preset.maml.inner_lr * 3, preset.maml.max_kl / 2
    changed = dataclasses.replace(preset, maml=dataclasses.replace(preset.maml, inner_lr=inner_lr, max_kl=max_kl))
    assert results.policy_name(changed.to_dict()) == f"mlp, inner-lr {inner_lr}, max-kl {max_kl}"
    assert results.policy_name({**changed.to_dict(), "hidden_sizes": [100, 100]}) == (
        f"mlp, hidden-sizes 100 100, inner-lr {inner_lr}, max-kl {max_kl}"
    )
    # the attention policy's own preset (the Fisher on 5 tasks) is its plain row; the MLP's 10 tasks are named
    attention = resolve_config(parser.parse_args(["--env", "half_cheetah_dir"]))
    assert (attention.maml.fvp_tasks, preset.maml.fvp_tasks) == (5, 10)
    assert results.policy_name(attention.to_dict()) == "attention"
    ten_tasks = dataclasses.replace(attention, maml=dataclasses.replace(attention.maml, fvp_tasks=10))
    assert results.policy_name(ten_tasks.to_dict()) == "attention, fvp-tasks 10"


def _report(seed: int, per_task: np.ndarray, kind: str = "scratch") -> dict[str, Any]:
    return {
        "kind": kind,
        "algo": "ppo",
        "env": "point_nav",
        "split": "test",
        "seed": seed,
        "command": f"python scripts/baselines.py --seed {seed}",
        "tasks": [{}] * per_task.shape[1],
        "by_budget": {**curve(per_task, [1]), "env_steps": [200]},
        "training": {"env_steps": 400, "wall_clock_s": 10.0 * (seed + 1)},
    }


def test_results_average_the_seeds_of_a_row() -> None:
    first, second = np.array([[1.0, 3.0]]), np.array([[5.0, 7.0]])
    table = results.results_markdown([_report(0, first), _report(1, second)])
    section = table[table.index("**`point_nav`, test tasks**") :]
    row = next(line for line in section.splitlines() if line.startswith("| PPO from scratch"))
    cells = row.split(" | ")
    # seed means 2 and 6: mean 4, t(0.975, 1) = 12.706 times sd/sqrt(2) = 2
    assert cells[2] == "4.0 [-21.4, 29.4]"
    assert cells[-4:] == ["400", "15 s", "2", "(1) |"]
    assert "seeds 0, 1; 2 tasks" in table


def test_results_refuse_two_reports_of_one_seed_in_a_row() -> None:
    """A row averages over seeds: the same seed twice (say one run evaluated at two points of its
    training) would be counted as two seeds, so it is an error that names both files."""
    first, second = np.array([[1.0, 3.0]]), np.array([[5.0, 7.0]])
    reports = [{**_report(0, first), "file": "a/scratch.json"}, {**_report(0, second), "file": "b/scratch.json"}]
    with pytest.raises(ValueError, match=r"a/scratch\.json and b/scratch\.json are both seed 0 of the row"):
        results.results_markdown(reports)
    other_kind = {**_report(0, second, kind="oracle"), "file": "b/oracle.json"}
    assert "| oracle" in results.results_markdown([reports[0], other_kind])


def test_compare_plot_redraws_saved_reports(evaluated: Path, baseline_dir: Path, tmp_path: Path, capsys) -> None:
    root = evaluated.parent.parent.parent
    out = tmp_path / "compare.png"
    assert evaluate_script.main(["--compare", str(root), "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    reports = [results.complete(r, 100) for r in results.load_reports([root])]
    panels = results.comparison_panels(reports)
    assert list(panels) == ["point_nav, test tasks"]
    fig = plots.comparison_figure(panels)
    artists = {a.get_gid(): a for a in fig.axes[0].get_children() if a.get_gid()}
    scratch = json.loads((baseline_dir / "scratch.json").read_text())["by_budget"]
    line = artists["compare/point_nav, test tasks/PPO from scratch/mean"]
    np.testing.assert_array_equal(line.get_xdata(), scratch["env_steps"])
    np.testing.assert_array_equal(line.get_ydata(), scratch["mean"])
    oracle = json.loads((baseline_dir / "oracle.json").read_text())["by_budget"]
    reference = artists["compare/point_nav, test tasks/oracle (PPO, observes the task)/mean"]
    assert list(reference.get_ydata()) == [oracle["mean"][0]] * 2  # a horizontal line
    evaluation = json.loads(evaluated.read_text())
    policy = "MLP, meta-batch-size 2, episodes-per-task 2"
    maml = artists[f"compare/point_nav, test tasks/MAML + {policy}, inner steps/mean"]
    np.testing.assert_array_equal(maml.get_xdata(), [0, evaluation["adaptation_env_steps_per_step"]])
    episodes = artists[f"compare/point_nav, test tasks/{policy}, episodes (gradient)/mean"]
    np.testing.assert_array_equal(episodes.get_xdata(), [0, 100, 200, 300])
    assert evaluate_script.main(["--compare", str(root)]) == 2
    assert "--compare draws into --plot FILE" in capsys.readouterr().err
