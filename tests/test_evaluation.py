"""The evaluation protocol: confidence intervals, adaptation curves, scripts/evaluate.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from agents.attention import AttentionPolicy
from agents.maml_trpo import MAMLTRPO
from agents.policies import GaussianMLPPolicy
from metarl import checkpoint, results
from metarl.config import MAMLConfig
from metarl.episodes import Episodes
from metarl.evaluation import (
    BEST_SELECTION,
    adaptation_steps,
    by_episodes,
    by_gradient_steps,
    curve,
    mean_and_ci,
    student_t_quantile,
)
from metarl.params import detached
from metarl.sampling import sample
from metarl.training import torch_threads
from scripts import evaluate, meta_train
from scripts.runs import best_checkpoint, load_run


@pytest.mark.parametrize(("dof", "expected"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (39, 2.0227)])
def test_student_t_quantile_matches_tables(dof: int, expected: float) -> None:
    assert student_t_quantile(0.975, dof) == pytest.approx(expected, abs=1e-4)


def test_confidence_interval_known_case() -> None:
    mean, half = mean_and_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    # sd = sqrt(2.5), sem = sqrt(0.5), t(0.975, 4) = 2.7764
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.7764451 * np.sqrt(0.5), rel=1e-6)
    c = curve(np.array([[1.0, 3.0], [2.0, 2.0]]), [0, 1])
    assert c["mean"] == [2.0, 2.0] and c["ci95_low"][1] == c["ci95_high"][1] == 2.0


def _policy_and_learner(inner_lr: float) -> tuple[envs.TaskFamily, GaussianMLPPolicy, MAMLTRPO]:
    family = envs.make("point_nav")
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(16,))
    return family, policy, MAMLTRPO(policy, MAMLConfig(inner_lr=inner_lr))


def test_zero_inner_lr_gives_identical_curve_points() -> None:
    family, policy, learner = _policy_and_learner(0.0)
    tasks = family.test_tasks()[:4]
    returns = by_gradient_steps(family, policy, learner, tasks, 2, 3, 8, seed=5, device=torch.device("cpu"))
    assert returns.shape == (3, 4)
    # per-task parameters run through a batched matmul: equal up to float32 rounding
    np.testing.assert_allclose(returns[1], returns[0], rtol=1e-6)
    np.testing.assert_allclose(returns[2], returns[0], rtol=1e-6)
    family, policy, learner = _policy_and_learner(0.5)
    adapted = by_gradient_steps(family, policy, learner, tasks, 1, 3, 8, seed=5, device=torch.device("cpu"))
    np.testing.assert_array_equal(adapted[0], returns[0])  # same seed, same pre-adaptation episodes
    assert np.abs(adapted[1] - adapted[0]).max() > 1e-2


def test_episodes_gradient_mode_adapts_after_the_first_episode() -> None:
    family, policy, learner = _policy_and_learner(0.0)
    tasks = family.test_tasks()[:3]
    frozen = by_episodes(family, policy, learner, tasks, 3, "gradient", 8, seed=1, device=torch.device("cpu"))
    family, policy, learner = _policy_and_learner(0.5)
    moving = by_episodes(family, policy, learner, tasks, 3, "gradient", 8, seed=1, device=torch.device("cpu"))
    assert frozen.shape == moving.shape == (3, 3)
    np.testing.assert_array_equal(frozen[0], moving[0])  # nothing to adapt on before episode 1
    assert np.abs(frozen[1:] - moving[1:]).max() > 1e-2
    with pytest.raises(ValueError, match="valid: context, gradient, both"):
        by_episodes(family, policy, learner, tasks, 1, "magic", 8, seed=1, device=torch.device("cpu"))


def test_first_keeps_each_tasks_first_episodes() -> None:
    slots = torch.arange(6.0)  # 2 tasks x 3 episodes, task-major
    steps = slots.expand(4, 6)
    episodes = Episodes(steps.unsqueeze(-1), steps.unsqueeze(-1), steps, steps.unsqueeze(-1), torch.ones(4, 6), 2)
    first = episodes.first(2)
    assert first.num_tasks == 2 and first.episodes_per_task == 2
    assert first.rewards[0].tolist() == [0.0, 1.0, 3.0, 4.0]
    assert first.observations.shape == (4, 4, 1)


def test_episodes_gradient_mode_steps_on_the_meta_policys_episodes() -> None:
    """Episode k runs adapt(meta, first k - 1 exploration episodes): each inner step is on-policy."""
    family, policy, learner = _policy_and_learner(0.5)
    tasks = family.test_tasks()[:2]
    returns = by_episodes(family, policy, learner, tasks, 3, "gradient", 8, seed=1, device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    meta = detached(policy.params())
    explored = sample(family.batch(tasks, 2, seed=1), policy, meta, 2, generator)
    sim = family.batch(tasks, 1, seed=2)
    expected = [sample(sim, policy, meta, 2, generator).task_returns().numpy()]
    for k in (1, 2):
        fast = detached(learner.adapt(explored.first(k), meta, create_graph=False, num_steps=1))
        expected.append(sample(sim, policy, fast, 2, generator).task_returns().numpy())
    np.testing.assert_allclose(returns, np.stack(expected), rtol=1e-6)


def test_later_lr_scale_sets_the_size_of_the_steps_after_the_first() -> None:
    """Step 1 at inner_lr, steps 2.. at inner_lr x later_lr_scale (the MAML paper's evaluation: 0.5)."""
    family, policy, learner = _policy_and_learner(0.5)
    tasks = family.test_tasks()[:3]
    cpu = torch.device("cpu")
    steps = list(adaptation_steps(family, policy, learner, tasks, 2, 2, 8, 4, cpu, later_lr_scale=0.5))
    plain = list(adaptation_steps(family, policy, learner, tasks, 2, 2, 8, 4, cpu))
    for (params, _, _), (same, _, _) in zip(steps[:2], plain[:2], strict=True):  # before and after the first step
        assert all(torch.equal(params[k], same[k]) for k in params)
    first, episodes = steps[1][0], steps[1][2]
    expected = learner.adapt(episodes, first, create_graph=False, num_steps=1, lr_scale=0.5)
    other = steps[2][0]
    for k in other:
        torch.testing.assert_close(other[k], expected[k].detach(), rtol=0, atol=0)
    assert max(float((other[k] - plain[2][0][k]).abs().max()) for k in other) > 1e-4
    # adapt's lr_scale multiplies the inner step's size: 0.5 at inner_lr 0.5 equals a learner whose inner_lr is 0.25
    _, _, quarter = _policy_and_learner(0.25)
    quarter.policy.load_state_dict(policy.state_dict())
    via_config = quarter.adapt(episodes, first, create_graph=False, num_steps=1)
    assert all(torch.equal(via_config[k], expected[k]) for k in expected)


def test_later_memory_first_keeps_the_pre_adaptation_memory_for_every_later_step() -> None:
    """``later_memory="first"``: steps 2.. sample, and adapt, with the memory of the pre-adaptation
    episodes (the only memory meta-training gives); ``"latest"`` rebuilds it from each step's episodes."""
    family = envs.make("point_nav")
    torch.manual_seed(0)
    policy = AttentionPolicy(2, 2, hidden_sizes=(16,), embed_dim=8, window=2)
    learner = MAMLTRPO(policy, MAMLConfig(inner_lr=0.5))
    tasks, cpu = family.test_tasks()[:3], torch.device("cpu")
    first = list(adaptation_steps(family, policy, learner, tasks, 3, 2, 8, 4, cpu, later_memory="first"))
    latest = list(adaptation_steps(family, policy, learner, tasks, 3, 2, 8, 4, cpu))
    assert first[0][1] is None and latest[0][1] is None  # before adaptation: no memory
    kept = first[1][1]
    assert kept is not None and latest[1][1] is not None
    assert torch.equal(kept.transitions, latest[1][1].transitions)  # the pre-adaptation episodes' either way
    for step in (2, 3):
        assert first[step][1] is kept
        assert not torch.equal(latest[step][1].transitions, kept.transitions)
    # step 3's parameters: one inner step on step 2's episodes with the memory they were sampled with
    params, _, episodes = first[2]
    expected = learner.adapt(episodes, params, create_graph=False, memory=kept, num_steps=1)
    assert all(torch.equal(first[3][0][k], expected[k].detach()) for k in expected)
    with pytest.raises(ValueError, match="unknown later memory 'all'; valid: latest, first"):
        next(adaptation_steps(family, policy, learner, tasks, 1, 2, 8, 4, cpu, later_memory="all"))


def test_evaluation_adapts_with_the_learned_step_sizes() -> None:
    """``learn_inner_lr``: each parameter steps by its own learned size (times ``later_lr_scale`` after the
    first step), not by ``inner_lr``; sizes all equal to x step as a fixed inner_lr of x."""
    family, policy, fixed = _policy_and_learner(0.25)
    tasks = family.test_tasks()[:2]
    cpu = torch.device("cpu")
    learned_policy = GaussianMLPPolicy(2, 2, hidden_sizes=(16,))
    learned_policy.learn_step_sizes("all", 0.25, "element")
    learned_policy.load_state_dict(policy.state_dict(), strict=False)
    learned = MAMLTRPO(learned_policy, MAMLConfig(inner_lr=0.9, learn_inner_lr="element"))
    plain = list(adaptation_steps(family, policy, fixed, tasks, 2, 2, 8, 4, cpu, later_lr_scale=0.5))
    same = list(adaptation_steps(family, learned_policy, learned, tasks, 2, 2, 8, 4, cpu, later_lr_scale=0.5))
    for (params, _, _), (other, _, _) in zip(plain, same, strict=True):
        for k in params:
            torch.testing.assert_close(other[k], params[k], rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # one layer's sizes doubled: only that layer moves differently
        learned_policy.params()["inner_lr.layers-0-weight"].mul_(2.0)
    moved = list(adaptation_steps(family, learned_policy, learned, tasks, 1, 2, 8, 4, cpu))
    before, after = moved[0][0], moved[1][0]
    expected = plain[0][0]["layers.0.weight"] + 2.0 * (plain[1][0]["layers.0.weight"] - plain[0][0]["layers.0.weight"])
    torch.testing.assert_close(after["layers.0.weight"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after["layers.1.weight"], plain[1][0]["layers.1.weight"], rtol=1e-6, atol=1e-7)
    assert all(torch.equal(before[k], plain[0][0][k]) for k in plain[0][0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "point"
    code = meta_train.main(
        [
            "--env",
            "point_nav",
            "--policy",
            "attention",
            "--iterations",
            "1",
            "--meta-batch-size",
            "2",
            "--episodes-per-task",
            "2",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    assert code == 0
    return run


def test_a_run_with_clip_actions_evaluates_clipped_and_learns_from_the_draws(tmp_path: Path) -> None:
    """A run's ``--clip-actions`` reaches the simulators of its evaluation (and videos, which share
    the trainer's family) unless ``evaluate.py --no-clip-actions`` says otherwise; the episodes keep
    the policy's draws for the losses, while their rewards are those of the clipped actions."""
    run = tmp_path / "run"
    args = ["--env", "half_cheetah_dir", "--policy", "mlp", "--hidden-sizes", "8", "--iterations", "1"]
    sizes = ["--meta-batch-size", "2", "--episodes-per-task", "1", "--clip-actions", "--out", str(run)]
    assert meta_train.main([*args, *sizes, "--no-progress"]) == 0
    trainer, _ = load_run(run, device="cpu")
    assert trainer.config.clip_actions and trainer.family.clip_actions
    tasks = trainer.family.test_tasks()
    params = detached(trainer.policy.params())
    with torch_threads(1):
        episodes = sample(trainer.family.batch(tasks, 2, seed=3), trainer.policy, params, 2, torch.Generator())
    actions = episodes.actions.double().numpy()
    assert np.abs(actions).max() > 1.0  # the draws, not their clipped values (the policy's std is about 1)
    plain = envs.make("half_cheetah_dir").batch(tasks, 2, seed=3)
    plain.reset()
    low, high = trainer.family.action_bounds
    replayed = np.stack([plain.step(np.clip(a, low, high)).reward for a in actions])
    np.testing.assert_allclose(episodes.rewards.numpy(), replayed, rtol=1e-5, atol=1e-5)

    # evaluate.py scores as the run trained, or in the other convention when asked (a row of its own)
    argv = [str(run), "--steps", "1", "--episodes", "0", "--episodes-per-task", "1"]
    reports = []
    for name, extra in (("own", []), ("unclipped", ["--no-clip-actions"])):
        assert evaluate.main([*argv, *extra, "--json", str(tmp_path / f"{name}.json")]) == 0
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    own, unclipped = reports
    assert (own["clip_actions"], unclipped["clip_actions"]) == (True, False)
    before = [np.asarray(r["by_gradient_steps"]["per_task"][0]) for r in reports]
    assert np.all(before[1] < before[0])  # the same draws and physics; the draws beyond the bounds cost more
    name = "mlp, clip-actions, meta-batch-size 2, episodes-per-task 1, hidden-sizes 8"
    assert results.run_name(own) == results.policy_name(own["config"]) == name
    assert results.run_name(unclipped) == f"{name}, evaluated without clip-actions"


def test_evaluate_writes_consistent_json(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert (
        evaluate.main(
            [str(tiny_run), "--steps", "1", "--episodes", "2", "--episodes-per-task", "2", "--json", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["iteration"] == 1 and report["split"] == "test" and len(report["tasks"]) == 40
    assert (report["checkpoint"], report["checkpoint_selection"]) == ("checkpoint.pt", "last")
    assert report["later_lr_scale"] == 1.0  # every inner step at the run's inner lr unless asked
    assert results.run_name(report) == results.policy_name(report["config"])  # the run's episodes per step
    steps = report["by_gradient_steps"]
    assert steps["x"] == [0, 1] and np.asarray(steps["per_task"]).shape == (2, 40)
    np.testing.assert_allclose(steps["mean"], np.mean(steps["per_task"], axis=1))
    assert set(report["by_episodes"]) == {"context", "gradient", "both"}
    for c in report["by_episodes"].values():
        assert c["x"] == [1, 2]
        assert all(lo <= m <= hi for lo, m, hi in zip(c["ci95_low"], c["mean"], c["ci95_high"], strict=True))


def test_repeats_average_independent_trials_of_each_task(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    argv = [str(tiny_run), "--steps", "1", "--episodes", "1", "--episodes-per-task", "2", "--seed", "3"]
    assert evaluate.main([*argv, "--repeats", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["repeats"] == 2 and len(report["tasks"]) == 40
    trainer, _ = load_run(tiny_run, None, "cpu")
    tasks = trainer.family.held_out_tasks("test")
    with torch_threads(1):
        trials = by_gradient_steps(
            trainer.family,
            trainer.policy,
            trainer.learner,
            tasks * 2,
            1,
            2,
            trainer.config.memory_size,
            seed=3,
            device=torch.device("cpu"),
        )
    first, second = trials[:, :40], trials[:, 40:]
    assert not np.allclose(first, second)  # independent trials, not one trial twice
    np.testing.assert_allclose(report["by_gradient_steps"]["per_task"], (first + second) / 2, rtol=1e-6)


def test_best_checkpoint_has_the_highest_training_return_before_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"checkpoint_every": 2}))
    for iterations in (2, 4, 6):
        checkpoint.save(tmp_path / f"checkpoint_{iterations:05d}.pt", {"iteration": iterations})
    checkpoint.save(tmp_path / "checkpoint.pt", {"iteration": 7})  # the last, not numbered
    with pytest.raises(ValueError, match="no checkpoint with logged training returns"):
        best_checkpoint(tmp_path)
    for last, best in ((7.0, "checkpoint_00004.pt"), (9.0, "checkpoint.pt")):
        post = [0.0, 1.0, 5.0, 6.0, 2.0, 3.0, last]  # blocks 0-1, 2-3 (5.5), 4-5, and 5-6 before the last
        rows = "".join(f"{i},{v},{-v}\n" for i, v in enumerate(post))
        (tmp_path / "metrics.csv").write_text("iteration,returns/post,returns/pre\n" + rows)
        assert best_checkpoint(tmp_path) == best


def test_evaluate_best_checkpoint_is_recorded_and_gets_its_own_row(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    argv = [str(tiny_run), "--checkpoint", "best", "--steps", "0", "--episodes", "0", "--episodes-per-task", "1"]
    assert evaluate.main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["checkpoint"] == best_checkpoint(tiny_run) and report["checkpoint_selection"] == BEST_SELECTION
    fewer = "evaluated with episodes-per-task 1"  # the run took 2 per step: a row of its own
    assert results.run_name(report) == f"{results.policy_name(report['config'])}, {fewer}, best checkpoint"


def test_evaluate_later_steps_and_episodes_per_task_get_their_own_rows(tiny_run: Path, tmp_path: Path) -> None:
    argv = [str(tiny_run), "--steps", "2", "--episodes", "0"]
    reports = []
    for name, extra in (
        ("plain", ["--episodes-per-task", "2"]),  # the run's
        ("half", ["--episodes-per-task", "2", "--later-lr-scale", "0.5"]),
        ("first", ["--episodes-per-task", "2", "--later-memory", "first"]),
        ("fewer", ["--episodes-per-task", "1"]),
    ):
        assert evaluate.main([*argv, *extra, "--json", str(tmp_path / f"{name}.json")]) == 0
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    plain, half, first, fewer = reports
    assert (plain["later_lr_scale"], half["later_lr_scale"]) == (1.0, 0.5)
    assert (plain["later_memory"], first["later_memory"]) == ("latest", "first")
    steps = [np.asarray(r["by_gradient_steps"]["per_task"]) for r in reports]
    for other in (steps[1], steps[2]):  # the first step is the run's inner lr and memory either way
        np.testing.assert_array_equal(steps[0][:2], other[:2])
        assert np.abs(steps[0][2] - other[2]).max() > 0
    name = results.policy_name(plain["config"])
    assert results.run_name(plain) == name
    assert results.run_name(half) == f"{name}, later-lr-scale 0.5"
    assert results.run_name(first) == f"{name}, later-memory first"
    assert results.run_name(fewer) == f"{name}, evaluated with episodes-per-task 1"
    context = {"x": [1, 2], "mean": [-2.0, -1.0], "ci95_low": [-3.0, -2.0], "ci95_high": [-1.0, 0.0]}
    plain_rows, *other_rows = (
        results.entries({**results.complete(r, 100), "by_episodes": {"context": context}}) for r in reports
    )
    assert [kind for kind, _ in plain_rows] == ["maml", "context"]
    # their context rows (no gradient step) would repeat the plain one's under another name
    assert all([kind for kind, _ in rows] == ["maml"] for rows in other_rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}"], "not a metarl run directory"),
        (["{run}", "--split", "ood"], "no ood tasks"),
        (["{run}", "--split", "valid"], "unknown split"),
        (["{run}", "--checkpoint", "checkpoint_09999.pt"], "no checkpoint checkpoint_09999.pt"),
        (["{run}", "--steps", "-1"], "must be >= 0"),
        (["{run}", "--repeats", "0"], "invalid --repeats 0: must be >= 1"),
        (["{run}", "--later-lr-scale", "0"], "invalid --later-lr-scale 0.0: must be a finite number > 0"),
        (["{run}", "--later-lr-scale", "nan"], "invalid --later-lr-scale nan: must be a finite number > 0"),
    ],
)
def test_evaluate_bad_input(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in args]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_evaluate_unknown_later_memory_lists_the_valid_ones(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(tiny_run), "--later-memory", "all"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--later-memory: invalid choice: 'all'" in err and "latest" in err and "first" in err


def test_evaluate_later_memory_needs_a_policy_with_a_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An MLP has no memory: ``--later-memory first`` would only rename its row, so it is refused."""
    run = tmp_path / "mlp"
    args = ["--env", "point_nav", "--policy", "mlp", "--iterations", "1", "--meta-batch-size", "2"]
    assert meta_train.main([*args, "--episodes-per-task", "1", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "report.json"
    assert evaluate.main([str(run), "--later-memory", "first", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "evaluate: error: --later-memory first: GaussianMLPPolicy has no memory "
        "(the option is for context policies, such as --policy attention)"
    )
    assert not out.exists()


# ------------------------------------------------------------------ --csv, --plot (metarl.plots)
def _lines_by_gid(fig: object) -> dict[str, object]:
    return {artist.get_gid(): artist for ax in fig.axes for artist in ax.get_children() if artist.get_gid()}  # type: ignore[attr-defined]


def _check_figure_shows(report: dict, fig: object) -> None:
    """Every line of the figure holds exactly the report's numbers."""
    from matplotlib.collections import PolyCollection

    artists = _lines_by_gid(fig)
    steps = report["by_gradient_steps"]
    per_task = np.asarray(steps["per_task"])
    mean = artists["by_gradient_steps/mean"]
    np.testing.assert_array_equal(mean.get_xdata(), steps["x"])
    np.testing.assert_array_equal(mean.get_ydata(), steps["mean"])
    for task in range(per_task.shape[1]):
        np.testing.assert_array_equal(artists[f"by_gradient_steps/task/{task}"].get_ydata(), per_task[:, task])
    assert f"by_gradient_steps/task/{per_task.shape[1]}" not in artists
    curves = [("by_gradient_steps", steps)] + [(f"by_episodes/{m}", c) for m, c in report["by_episodes"].items()]
    for name, c in curves:
        np.testing.assert_array_equal(artists[f"{name}/mean"].get_ydata(), c["mean"])
        band = artists[f"{name}/ci95"]
        assert isinstance(band, PolyCollection)
        corners = {tuple(np.round(v, 9)) for v in band.get_paths()[0].vertices}
        for x, low, high in zip(c["x"], c["ci95_low"], c["ci95_high"], strict=True):
            assert (round(x, 9), round(low, 9)) in corners and (round(x, 9), round(high, 9)) in corners


def test_evaluate_csv_and_plot_show_the_json_numbers(tiny_run: Path, tmp_path: Path) -> None:
    import csv

    from metarl import plots

    out = {kind: tmp_path / f"eval.{kind}" for kind in ("json", "csv", "png")}
    argv = [str(tiny_run), "--steps", "1", "--episodes", "2", "--episodes-per-task", "2"]
    assert evaluate.main([*argv, "--json", str(out["json"]), "--csv", str(out["csv"]), "--plot", str(out["png"])]) == 0
    report = json.loads(out["json"].read_text())
    assert "task_parameter" not in report  # point_nav: no dynamics panel
    rows = list(csv.DictReader(out["csv"].open()))
    assert tuple(rows[0]) == plots.CSV_COLUMNS
    assert len(rows) == (2 + 3 * 2) * (40 + 3)  # (2 steps + 3 modes x 2 episodes) x (40 tasks + mean, ci95 low/high)
    for row in rows:
        c = report["by_gradient_steps"] if row["curve"] == "by_gradient_steps" else report["by_episodes"][row["mode"]]
        i = c["x"].index(int(row["x"]))
        expected = c["per_task"][i][int(row["task_index"])] if row["stat"] == "task" else c[row["stat"]][i]
        assert float(row["value"]) == expected
    fig = plots.adaptation_figure(report)
    assert len(fig.axes) == 2
    _check_figure_shows(report, fig)
    png = out["png"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_dynamics_plot_has_a_task_parameter_panel(tmp_path: Path) -> None:
    from metarl import plots

    mass = envs.make("half_cheetah_mass")
    tasks = mass.ood_tasks()[:6]
    parameter = evaluate.task_parameter(mass, tasks)
    assert parameter is not None
    assert parameter["values"] == [t.mass_scale for t in tasks] and parameter["train_range"] == [0.5, 2.0]
    assert evaluate.task_parameter(envs.make("half_cheetah_friction"), [])["train_range"] == [0.25, 2.0]
    params_family = envs.make("hopper_params")
    u = evaluate.task_parameter(params_family, params_family.test_tasks()[:5])
    assert u is not None and u["train_range"] == [-3.0, 3.0] and not u["log_scale"]
    assert all(-3.0 <= v <= 3.0 for v in u["values"])
    assert evaluate.task_parameter(envs.make("half_cheetah_params", split="ood"), [])["train_range"] == [-2.0, 2.0]
    assert evaluate.task_parameter(envs.make("half_cheetah_vel"), tasks) is None

    per_task = np.random.default_rng(0).normal(size=(3, 6))
    report = {
        "config": {"env": "half_cheetah_mass", "policy": "mlp"},
        "split": "ood",
        "tasks": [t.to_dict() for t in tasks],
        "by_gradient_steps": curve(per_task, [0, 1, 2]),
        "by_episodes": {"gradient": curve(per_task[:2], [1, 2])},
        "task_parameter": parameter,
    }
    fig = plots.adaptation_figure(report)
    assert len(fig.axes) == 3 and fig.axes[2].get_xscale() == "log"
    _check_figure_shows(report, fig)
    artists = _lines_by_gid(fig)
    for step in (0, 1):
        np.testing.assert_array_equal(
            artists[f"task_parameter/step{step}"].get_offsets(), np.stack([parameter["values"], per_task[step]], 1)
        )
    assert "task_parameter/step2" not in artists  # before and after one step only
    shaded = artists["task_parameter/train_range"]  # a Rectangle (matplotlib >= 3.9) or a Polygon
    if hasattr(shaded, "get_width"):
        xs = [shaded.get_x(), shaded.get_x() + shaded.get_width()]
    else:
        xs = shaded.get_xy()[:, 0]
    assert (min(xs), max(xs)) == pytest.approx((0.5, 2.0))
    del report["task_parameter"]  # an older report: the multiplier is read from the tasks
    assert plots.task_parameter(report)["values"] == parameter["values"]
    plots.save_figure(report, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_evaluate_rejects_a_plot_format_before_evaluating(tiny_run: Path, tmp_path: Path, capsys) -> None:
    assert evaluate.main([str(tiny_run), "--plot", str(tmp_path / "eval.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write a plot to eval.xyz; use one of:" in err and ".png" in err and len(err.splitlines()) == 1
