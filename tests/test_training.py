"""End to end, in process: ``scripts/meta_train.main`` on tiny runs (DESIGN.md, "End to end in-process").

- same seed, same parameters; another seed, other parameters;
- a resumed run equals an uninterrupted one (parameters, RNG states, metrics);
- checkpoints are written atomically; a corrupt one is reported as such;
- bad inputs exit with status 2 and one line on stderr, touching nothing;
- a diverged run exits with status 1 and keeps the last good checkpoint;
- one tiny meta-iteration on every task family;
- ``keep_freed_memory`` makes freed tensors' pages reused, not faulted in again.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import envs
from agents.factory import make_learner, make_policy
from agents.maml_trpo import MAMLTRPO
from metarl import checkpoint
from metarl.checkpoint import CheckpointError
from metarl.config import MAMLConfig, TrainConfig, preset, resolve
from metarl.evaluation import training_cost
from metarl.sampling import sample
from metarl.training import CHECKPOINT, MetaTrainer
from scripts.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "meta_train.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("meta_train_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


meta_train = load_script()

TINY = ["--policy", "mlp", "--hidden-sizes", "8", "--device", "cpu", "--no-progress"]


def tiny_args(
    out: Path, env: str = "point_nav", iterations: int = 2, seed: int = 1, meta_batch: int = 3, episodes: int = 2
) -> list[str]:
    return [
        "--env",
        env,
        "--iterations",
        str(iterations),
        "--meta-batch-size",
        str(meta_batch),
        "--episodes-per-task",
        str(episodes),
        "--seed",
        str(seed),
        "--out",
        str(out),
        *TINY,
    ]


def train(out: Path, *extra: str, **kwargs: Any) -> int:
    return int(meta_train.main([*tiny_args(out, **kwargs), *extra]))


def policy_tensors(run_dir: Path, name: str = CHECKPOINT) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / name)["policy"]


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def deterministic_columns(row: dict[str, str]) -> dict[str, str]:
    """Every metric but the timings (returns, TRPO statistics)."""
    return {k: v for k, v in row.items() if not k.startswith(("time/", "speed/"))}


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """``relative path -> (mtime_ns, contents)`` of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(autouse=True)
def _in_tmp_dir(in_tmp_dir: Path) -> None:
    """Every test runs in its temporary directory (MuJoCo writes MUJOCO_LOG.TXT to the cwd; runs/ default)."""


# ---------------------------------------------------------------------------- 9. determinism


def test_same_seed_gives_identical_parameters(tmp_path: Path) -> None:
    assert train(tmp_path / "a") == 0
    assert train(tmp_path / "b") == 0
    assert train(tmp_path / "c", seed=2) == 0
    a, b, c = (policy_tensors(tmp_path / name) for name in "abc")
    assert same_tensors(a, b)
    assert a.keys() == c.keys() and not torch.equal(a["layers.0.weight"], c["layers.0.weight"])
    rows_a, rows_b = metric_rows(tmp_path / "a"), metric_rows(tmp_path / "b")
    assert [r["iteration"] for r in rows_a] == ["0", "1"]
    assert [deterministic_columns(r) for r in rows_a] == [deterministic_columns(r) for r in rows_b]
    state = checkpoint.load(tmp_path / "a" / CHECKPOINT)
    assert state["iteration"] == 2
    # The run really trained: the parameters moved away from the seed's initialisation.
    assert any(r["trpo/step_accepted"] == "1.0" for r in rows_a)


# ---------------------------------------------------------------------------- 10. resume, checkpoints


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(straight, iterations=3) == 0
    assert train(resumed, iterations=2) == 0
    assert checkpoint.load(resumed / CHECKPOINT)["iteration"] == 2
    assert meta_train.main(["--resume", str(resumed), "--iterations", "3", "--no-progress"]) == 0

    a, b = checkpoint.load(straight / CHECKPOINT), checkpoint.load(resumed / CHECKPOINT)
    assert a["iteration"] == b["iteration"] == 3
    assert same_tensors(a["policy"], b["policy"])
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert a["numpy_rng"] == b["numpy_rng"]
    rows_a, rows_b = metric_rows(straight), metric_rows(resumed)
    assert [r["iteration"] for r in rows_b] == ["0", "1", "2"]  # no duplicated or missing rows
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert row_a["returns/pre"] == row_b["returns/pre"] and row_a["returns/post"] == row_b["returns/post"]
        assert deterministic_columns(row_a) == deterministic_columns(row_b)
    assert (resumed / "checkpoint_00003.pt").is_file()


def test_time_limit_counts_the_run_over_its_resumed_sessions(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(run, iterations=2) == 0
    state = checkpoint.load(run / CHECKPOINT)
    assert state["elapsed_s"] == pytest.approx(sum(float(r["time/iteration"]) for r in metric_rows(run)))
    # Say the run has trained for 10 minutes: a 10-minute limit is spent, so resuming trains nothing more
    # (each session used to get the whole limit again); a longer limit given at resume extends it.
    checkpoint.save(run / CHECKPOINT, {**state, "elapsed_s": 600.0})

    def resume(iterations: int, minutes: float) -> int:
        args = ["--resume", str(run), "--iterations", str(iterations), "--time-limit", str(minutes), "--no-progress"]
        return int(meta_train.main(args))

    assert resume(3, 10) == 0
    assert checkpoint.load(run / CHECKPOINT)["iteration"] == 2
    assert resume(3, 11) == 0
    after = checkpoint.load(run / CHECKPOINT)
    assert after["iteration"] == 3 and after["config"]["time_limit"] == 11
    assert after["elapsed_s"] == pytest.approx(600.0 + float(metric_rows(run)[-1]["time/iteration"]))
    # A checkpoint from before elapsed_s was saved: its iterations' times in metrics.csv.
    checkpoint.save(run / CHECKPOINT, {k: v for k, v in after.items() if k != "elapsed_s"})
    assert resume(4, 11) == 0
    spent = sum(float(r["time/iteration"]) for r in metric_rows(run))
    assert checkpoint.load(run / CHECKPOINT)["elapsed_s"] == pytest.approx(spent)


def test_checkpoint_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt" / "checkpoint.pt"
    checkpoint.save(path, {"iteration": 1, "x": torch.arange(3)})
    checkpoint.save(path, {"iteration": 2, "x": torch.arange(4)})
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]  # no temporary files left
    assert checkpoint.load(path)["iteration"] == 2

    def failing_save(state: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"iteration": 3})
    monkeypatch.undo()
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]
    state = checkpoint.load(path)
    assert state["iteration"] == 2 and torch.equal(state["x"], torch.arange(4))


def test_checkpoint_load_reports_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    checkpoint.save(good, {"iteration": 0, "policy": {"w": torch.randn(100)}})
    garbage, truncated, foreign = tmp_path / "garbage.pt", tmp_path / "truncated.pt", tmp_path / "foreign.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save([1, 2, 3], foreign)
    for path in (garbage, truncated):
        with pytest.raises(CheckpointError, match="corrupt"):
            checkpoint.load(path)
    with pytest.raises(CheckpointError, match="not a metarl checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------- 11. bad inputs


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {captured.err!r}"
    assert lines[0].startswith("meta_train: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--env", "no_such_env"], ["no_such_env", *envs.names()]),
        (["--policy", "transformer"], ["policy", "transformer", "attention", "mlp"]),
        (["--activation", "sigmoid"], ["activation", "sigmoid", "tanh", "relu"]),
        (["--inner-objective", "dice"], ["inner-objective", "dice", "reinforce", "lvc"]),
        (["--pre-kl-weight", "-1"], ["pre-kl-weight", "-1", ">= 0"]),
        (["--meta-batch-size", "0"], ["meta-batch-size", "0"]),
        (["--meta-batch-size", "-3"], ["meta-batch-size", "-3"]),
        (["--inner-lr", "-0.1"], ["inner-lr", "-0.1"]),
        (["--episodes-per-task", "0"], ["episodes-per-task"]),
        (["--max-kl-final", "0.01"], ["max-kl-anneal", "max-kl-final"]),
        (["--max-kl-anneal", "10"], ["max-kl-anneal", "10"]),
        (["--init-std", "0"], ["init-std", "0", "> 0"]),
        (["--init-std", "nan"], ["init-std", "nan"]),
        (["--line-search-kl-tolerance", "0.9"], ["line-search-kl-tolerance", "0.9", ">= 1"]),
        (["--learn-inner-lr", "scalar"], ["learn-inner-lr", "scalar", "fixed", "tensor", "element"]),
    ],
    ids=[
        "unknown-env",
        "unknown-policy",
        "unknown-activation",
        "unknown-inner-objective",
        "negative-pre-kl-weight",
        "zero-meta-batch",
        "negative-meta-batch",
        "negative-inner-lr",
        "zero-episodes",
        "anneal-target-without-length",
        "anneal-length-without-target",
        "zero-init-std",
        "nan-init-std",
        "kl-tolerance-below-1",
        "unknown-learn-inner-lr",
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "run"
    assert meta_train.main([*tiny_args(out), *flags]) == 2
    assert_one_line_error(capsys, *fragments)
    assert not out.exists(), "a rejected run must not create its directory"
    assert not (tmp_path / "runs").exists()


def test_resume_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert meta_train.main(["--resume", str(empty), "--no-progress"]) == 2
    assert_one_line_error(capsys, "no checkpoint", str(empty))
    assert list(empty.iterdir()) == []


def test_resume_with_a_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert train(run, iterations=1) == 0
    path = run / CHECKPOINT
    path.write_bytes(path.read_bytes()[:200])
    before = snapshot(run)
    capsys.readouterr()
    assert meta_train.main(["--resume", str(run), "--iterations", "2", "--no-progress"]) == 2
    assert_one_line_error(capsys, "corrupt")
    assert snapshot(run) == before


def test_out_on_an_existing_run_overwrites_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert train(run, iterations=1) == 0
    before = snapshot(run)
    assert "checkpoint.pt" in before and "metrics.csv" in before and "config.json" in before
    capsys.readouterr()
    assert train(run, iterations=1, seed=5) == 2
    assert_one_line_error(capsys, "already holds a run", "--resume")
    assert snapshot(run) == before


def test_resume_refuses_to_change_the_runs_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resumed run keeps its config: a flag that would change it (silently ignored before) is an error."""
    run = tmp_path / "run"
    assert train(run, iterations=1) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert meta_train.main(["--resume", str(run), "--max-kl", "0.1", "--env", "point_nav", "--no-progress"]) == 2
    assert_one_line_error(capsys, "given: --env, --max-kl", "only --iterations, --time-limit and --device")
    assert meta_train.main(["--resume", str(run), "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert_one_line_error(capsys, "given: --out")
    assert snapshot(run) == before and not (tmp_path / "other").exists()


def tiny_trainer(env: str, run_dir: Path, hidden_sizes: tuple[int, ...] = (8,)) -> MetaTrainer:
    config = TrainConfig(
        env=env, policy="mlp", hidden_sizes=hidden_sizes, meta_batch_size=2, episodes_per_task=1, device="cpu"
    )
    family = envs.make(env)
    policy = make_policy(config, family.observation_dim, family.action_dim)
    return MetaTrainer(config, family, policy, make_learner(config, policy), run_dir, torch.device("cpu"))


def test_restoring_a_checkpoint_of_another_run_raises(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(run, iterations=1) == 0
    state = checkpoint.load(run / CHECKPOINT)

    trainer = tiny_trainer("half_cheetah_vel", tmp_path / "hc")
    before = {k: v.detach().clone() for k, v in trainer.policy.params().items()}
    with pytest.raises(CheckpointError, match="point_nav"):
        trainer.restore(state)
    assert same_tensors(before, {k: v.detach() for k, v in trainer.policy.params().items()})
    assert trainer.iteration == 0

    # Same env, another policy architecture.
    with pytest.raises(CheckpointError, match="does not fit"):
        tiny_trainer("point_nav", tmp_path / "wide", hidden_sizes=(16,)).restore(state)
    # Same env and architecture: restores the parameters and the position in the run.
    same = tiny_trainer("point_nav", tmp_path / "same")
    same.restore(state)
    assert same.iteration == 1
    assert same_tensors({k: v.detach() for k, v in same.policy.params().items()}, state["policy"])


# ---------------------------------------------------------------------------- 12. divergence


@pytest.mark.parametrize("where", ["parameter", "metric"])
def test_non_finite_values_stop_the_run_and_keep_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    real_step = MAMLTRPO.step
    calls = []

    def diverging_step(self: MAMLTRPO, pre: Any, post: Any, memory: Any = None, **kwargs: Any) -> dict[str, float]:
        metrics = real_step(self, pre, post, memory, **kwargs)
        calls.append(1)
        if len(calls) >= 2:  # the second iteration diverges
            if where == "parameter":
                with torch.no_grad():
                    self.policy.params()["layers.0.weight"].view(-1)[0] = float("nan")
            else:
                metrics = {**metrics, "kl": float("inf")}
        return metrics

    monkeypatch.setattr(MAMLTRPO, "step", diverging_step)
    run = tmp_path / "run"
    assert train(run, "--checkpoint-every", "1", iterations=3) == 1
    message = assert_one_line_error(capsys, "non-finite", "iteration 1")
    assert ("layers.0.weight" if where == "parameter" else "trpo/kl") in message
    state = checkpoint.load(run / CHECKPOINT)
    assert state["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
    assert same_tensors(state["policy"], policy_tensors(run, "checkpoint_00001.pt"))
    assert not (run / "checkpoint_00002.pt").exists()
    assert [r["iteration"] for r in metric_rows(run)] == ["0"]


# ---------------------------------------------------------------------------- 13. every family


def check_tiny_run(run: Path, env: str) -> None:
    state = checkpoint.load(run / CHECKPOINT)
    assert state["iteration"] == 1 and state["config"]["env"] == env
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
    rows = metric_rows(run)
    assert [r["iteration"] for r in rows] == ["0"]
    assert math.isfinite(float(rows[0]["returns/pre"])) and math.isfinite(float(rows[0]["returns/post"]))


def test_presets_set_maml_fields_and_flags_win() -> None:
    parser = meta_train.parser()
    dir_config = resolve(parser.parse_args(["--env", "half_cheetah_dir"]))
    maml = dir_config.maml
    assert (maml.gamma, maml.inner_lr, maml.max_kl, maml.line_search_ratio) == (0.95, 0.0167, 0.06, 0.5)
    assert (dir_config.meta_batch_size, maml.inner_objective) == (20, "lvc")
    assert resolve(parser.parse_args(["--env", "half_cheetah_dir", "--gamma", "0.9"])).maml.gamma == 0.9
    assert maml.fvp_tasks == 5  # the attention policy's own (the default policy)
    mlp = resolve(parser.parse_args(["--env", "half_cheetah_dir", "--policy", "mlp"]))
    assert (mlp.maml.fvp_tasks, mlp.maml.inner_objective, mlp.meta_batch_size) == (10, "lvc", 20)
    assert resolve(parser.parse_args(["--env", "half_cheetah_dir", "--fvp-tasks", "10"])).maml.fvp_tasks == 10
    assert "for the attention policy" in preset("half_cheetah_dir", "attention")[0]
    assert preset("half_cheetah_dir", "mlp") == preset("half_cheetah_dir")
    vel = resolve(parser.parse_args(["--env", "half_cheetah_vel"])).maml
    assert (vel.gamma, vel.inner_lr, vel.max_kl, vel.line_search_ratio) == (0.99, 0.0167, 0.06, 0.5)
    vel_mlp = resolve(parser.parse_args(["--env", "half_cheetah_vel", "--policy", "mlp"])).maml
    assert (vel.inner_objective, vel_mlp.inner_objective) == ("lvc", "reinforce")  # LVC: the attention policy's own
    mass = resolve(parser.parse_args(["--env", "half_cheetah_mass"]))
    assert (mass.meta_batch_size, mass.maml.inner_objective, mass.maml.fvp_tasks) == (20, "lvc", 5)
    assert (mass.maml.gamma, mass.maml.inner_lr, mass.maml.max_kl) == (0.99, 0.0167, 0.06)
    assert resolve(parser.parse_args(["--env", "half_cheetah_mass", "--policy", "mlp"])).maml.fvp_tasks == 10
    assert resolve(parser.parse_args(["--env", "half_cheetah_params"])).maml == MAMLConfig()
    assert resolve(parser.parse_args(["--env", "point_nav"])).meta_batch_size == 20


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ignored-sigint"])
def test_a_signal_stops_the_run_after_its_last_checkpoint(tmp_path: Path, signum: int) -> None:
    """kill (SIGTERM), and Ctrl-C sent to a run that a non-interactive shell started in the background
    (SIGINT ignored on entry): exit 130 with the resume hint, a readable checkpoint, and resume continues."""
    run = tmp_path / "run"
    command = [sys.executable, str(SCRIPT), *tiny_args(run, iterations=10_000)]
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() or len(metric_rows(run)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted after iteration" in stderr and f"--resume {run}" in stderr
    done = checkpoint.load(run / CHECKPOINT)["iteration"]  # the row of iteration 2 may precede its checkpoint
    assert done >= 1
    assert meta_train.main(["--resume", str(run), "--iterations", str(done + 1), "--no-progress"]) == 0
    assert [int(r["iteration"]) for r in metric_rows(run)] == list(range(done + 1))


def test_max_kl_anneals_linearly_then_holds(tmp_path: Path) -> None:
    config = MAMLConfig(max_kl=0.03, max_kl_final=0.01, max_kl_anneal=4)
    assert [config.max_kl_at(i) for i in range(6)] == pytest.approx([0.03, 0.025, 0.02, 0.015, 0.01, 0.01])
    assert MAMLConfig(max_kl=0.02).max_kl_at(1000) == 0.02
    run = tmp_path / "run"
    assert train(run, "--max-kl", "0.03", "--max-kl-final", "0.01", "--max-kl-anneal", "2", iterations=3) == 0
    rows = metric_rows(run)
    assert [float(r["trpo/max_kl"]) for r in rows] == pytest.approx([0.03, 0.02, 0.01])
    assert all(float(r["trpo/kl"]) <= float(r["trpo/max_kl"]) for r in rows)


def test_training_cost_counts_the_steps_episodes_took(tmp_path: Path) -> None:
    """Hopper's episodes end when it falls: the run counts their steps, not the horizon's upper bound."""
    run = tmp_path / "run"
    assert train(run, env="hopper_params", iterations=2) == 0
    horizon = envs.make("hopper_params").horizon
    upper_bound = 2 * 2 * (3 * 2 * horizon)  # iterations x (pre, post) x tasks x episodes x horizon
    cost = training_cost(run, horizon)
    assert cost is not None and cost["env_steps_counted"] and cost["iterations"] == 2
    assert cost["env_steps"] == sum(int(float(r["speed/env_steps"])) for r in metric_rows(run))
    assert 0 < cost["env_steps"] < upper_bound
    rows = metric_rows(run)  # a run from before the count: the upper bound, said so
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "speed/env_steps"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert training_cost(run, horizon) == {**cost, "env_steps": upper_bound, "env_steps_counted": False}


@pytest.mark.parametrize("env", envs.names())
def test_one_meta_iteration_on_every_family(tmp_path: Path, capsys: pytest.CaptureFixture[str], env: str) -> None:
    run = tmp_path / "run"
    args = tiny_args(run, env=env, iterations=1, meta_batch=2, episodes=1)
    assert meta_train.main(args) == 0
    assert "done after iteration 1:" in capsys.readouterr().out
    check_tiny_run(run, env)


@pytest.mark.parametrize("policy", ["mlp", "attention"])
def test_meta_train_with_the_lvc_inner_objective_and_the_pre_kl(tmp_path: Path, policy: str) -> None:
    run = tmp_path / "run"
    flags = ["--policy", policy, "--inner-objective", "lvc", "--pre-kl-weight", "1"]
    assert meta_train.main([*tiny_args(run, iterations=1), *flags]) == 0
    check_tiny_run(run, "point_nav")
    maml = checkpoint.load(run / CHECKPOINT)["config"]["maml"]
    assert (maml["inner_objective"], maml["pre_kl_weight"]) == ("lvc", 1.0)
    (row,) = metric_rows(run)
    assert row["trpo/step_accepted"] == "1.0" and 0.0 < float(row["trpo/pre_kl"]) < float(row["trpo/kl"])


@pytest.mark.parametrize(("policy", "shape"), [("mlp", "element"), ("attention", "tensor")])
def test_learned_step_sizes_train_resume_and_evaluate(tmp_path: Path, policy: str, shape: str) -> None:
    """``--learn-inner-lr``: the step sizes are saved with the policy, TRPO moves them, a resumed run equals an
    uninterrupted one, ``inner/step_size`` logs their mean, and a restored run adapts with them."""
    flags = ["--policy", policy, "--learn-inner-lr", shape, "--inner-lr", "0.05"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert meta_train.main([*tiny_args(straight, iterations=2), *flags]) == 0
    assert meta_train.main([*tiny_args(resumed, iterations=1), *flags]) == 0
    assert meta_train.main(["--resume", str(resumed), "--iterations", "2", "--no-progress"]) == 0
    a, b = checkpoint.load(straight / CHECKPOINT), checkpoint.load(resumed / CHECKPOINT)
    assert same_tensors(a["policy"], b["policy"])
    sizes = {k: v for k, v in a["policy"].items() if k.startswith("inner_lr.")}
    assert sizes and "inner_lr.log_std" in sizes
    assert any(not torch.allclose(v, torch.full_like(v, 0.05)) for v in sizes.values()), "TRPO left them alone"
    rows = metric_rows(straight)
    assert float(rows[0]["inner/step_size"]) == pytest.approx(0.05)
    assert float(rows[1]["inner/step_size"]) != pytest.approx(0.05, rel=1e-6)
    trainer, _ = load_run(straight, device="cpu")
    assert trainer.learner.step_sizes and all(torch.equal(trainer.policy.params()[k], v) for k, v in sizes.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", ["mlp", "attention"])
def test_meta_train_on_cuda_runs_and_resumes(tmp_path: Path, policy: str) -> None:
    run = tmp_path / "run"
    args = [*tiny_args(run, iterations=1), "--policy", policy, "--device", "cuda"]
    assert meta_train.main(args) == 0
    check_tiny_run(run, "point_nav")
    assert meta_train.main(["--resume", str(run), "--iterations", "2", "--no-progress"]) == 0
    assert checkpoint.load(run / CHECKPOINT)["iteration"] == 2


@pytest.mark.parametrize(("fraction", "objective"), [(0.0, "reinforce"), (1.0, "reinforce"), (1.0, "lvc")])
def test_context_fraction_chooses_context_only_iterations(tmp_path: Path, fraction: float, objective: str) -> None:
    """Context-only iterations take no inner step, with either inner objective."""
    run = tmp_path / "run"
    args = ["--policy", "attention", "--context-fraction", str(fraction), "--inner-objective", objective]
    assert train(run, *args, iterations=2) == 0
    rows = metric_rows(run)
    assert [float(r["returns/context_only"]) for r in rows] == [fraction, fraction]
    # the inner loop moves the parameters only where it takes a gradient step
    assert [float(r["inner/step_norm"]) > 0 for r in rows] == [fraction == 0.0] * 2
    assert float(rows[0]["policy/std"]) == pytest.approx(1.0)  # the initial log-std is 0


@pytest.mark.parametrize("policy", ["mlp", "attention"])
def test_init_std_sets_the_first_iterations_exploration_noise(tmp_path: Path, policy: str) -> None:
    run = tmp_path / "run"
    assert train(run, "--policy", policy, "--init-std", "0.25", iterations=1) == 0
    assert float(metric_rows(run)[0]["policy/std"]) == pytest.approx(0.25)


@pytest.mark.parametrize("stratified", [False, True])
def test_stratified_tasks_balance_each_meta_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stratified: bool
) -> None:
    drawn: list[list[float]] = []
    family_type = type(envs.make("half_cheetah_dir"))
    sample_tasks = family_type.sample_tasks

    def spy(self: envs.TaskFamily, *args: Any) -> list[envs.Task]:
        tasks = sample_tasks(self, *args)
        drawn.append([task.direction for task in tasks])  # type: ignore[attr-defined]
        return tasks

    monkeypatch.setattr(family_type, "sample_tasks", spy)
    flag = ["--stratified-tasks"] if stratified else []
    assert train(tmp_path / "run", *flag, env="half_cheetah_dir", iterations=3, meta_batch=6, episodes=1) == 0
    balanced = [sorted(directions) == [-1.0] * 3 + [1.0] * 3 for directions in drawn]
    assert len(drawn) == 3 and (all(balanced) if stratified else not all(balanced))


def test_context_only_step_adapts_nothing(tmp_path: Path) -> None:
    """With ``inner_steps=0`` the 'adapted' parameters are the meta-parameters themselves."""
    from agents.attention import AttentionPolicy

    policy = AttentionPolicy(2, 2, hidden_sizes=(8,))
    learner = MAMLTRPO(policy)
    family = envs.make("point_nav")
    sim = family.batch(family.test_tasks()[:2], 2, seed=0)
    pre = sample(sim, policy, {k: v.detach() for k, v in policy.params().items()}, 2, torch.Generator().manual_seed(0))
    fast = learner.adapt(pre, num_steps=0)
    for name, value in policy.params().items():
        assert torch.equal(fast[name][0], value) and torch.equal(fast[name][1], value)


FAULTS_CODE = """
import resource, torch
from metarl.training import keep_freed_memory

def faults():  # minor page faults of allocating, filling and freeing a 64 MB tensor 5 times, after 2 at
    # once and 3 in turn: after the 2 alone, one measured tensor once took fresh pages (16,384 faults, a
    # clean clone's full run; not reproduced in 80 runs alone): the 3 are to take such a one-off placement
    torch.ones(2**24), torch.ones(2**24)
    for _ in range(3):
        torch.ones(2**24)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(2**24)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

system = faults()
print(keep_freed_memory(), system, min(faults() for _ in range(3)))  # the steady state: a round can still
# place a tensor on fresh pages (twice in five runs of a clean clone's machine)
"""


def test_keep_freed_memory_reuses_the_pages_of_freed_tensors() -> None:
    """With glibc's defaults every 64 MB tensor maps fresh pages (16,384 faults each with 4 KiB pages);
    after ``keep_freed_memory`` the freed ones are reused (in a child process: the setting is process-wide)."""
    result = subprocess.run([sys.executable, "-c", FAULTS_CODE], capture_output=True, text=True, cwd=ROOT, check=True)
    applied, system, kept = result.stdout.split()
    if applied != "True":
        pytest.skip("the C library is not glibc")
    if int(system) < 100:  # (with transparent huge pages always on, 5 x 32 faults)
        pytest.skip(f"glibc's defaults already reuse the pages here ({system} faults)")
    assert int(kept) * 20 <= int(system), result.stdout
