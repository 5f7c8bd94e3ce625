"""The evaluation protocol: how fast a meta-trained policy adapts to held-out tasks.

Two curves, per task and as a mean with a 95% confidence interval over tasks:

* **by gradient steps** (the MAML paper's figures): the return after 0, 1, ..., K
  inner steps; step k adapts on fresh episodes sampled with the parameters of
  step k-1 (and, for context policies, a memory of those episodes, or with
  ``later_memory="first"`` of the pre-adaptation ones).
* **by episodes of experience**: the return of episode k = 1..K of a task when
  the policy may use that task's earlier episodes: ``context`` (the memory fills
  up, no gradient), ``gradient`` (one inner step on the episodes so far) or
  ``both``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.episodes import Episodes, Memory, build_memory
from metarl.params import detached
from metarl.sampling import sample

EPISODE_MODES = ("context", "gradient", "both")


def adaptation_budget(episodes_per_step: int, horizon: int, inner_steps: int) -> dict[str, int]:
    """The env-steps a meta-trained policy uses to adapt to one task, as report fields.

    One inner step samples ``episodes_per_step`` episodes of ``horizon`` steps of
    the task; the policy was meta-trained to adapt with ``inner_steps`` steps.
    Returns ``horizon``, ``episodes_per_step``, ``adaptation_env_steps_per_step``
    and ``adaptation_env_steps`` (all ``inner_steps``); episodes that end early
    use fewer steps, so these are upper bounds for families that terminate.
    """
    per_step = episodes_per_step * horizon
    return {
        "horizon": horizon,
        "episodes_per_step": episodes_per_step,
        "adaptation_env_steps_per_step": per_step,
        "adaptation_env_steps": per_step * inner_steps,
    }


BEST_SELECTION = "best training return"
"""``checkpoint_selection`` of a report whose checkpoint ``evaluate.py --checkpoint best`` chose."""


def training_cost(run_dir: Path, horizon: int, iterations: int | None = None) -> dict[str, Any] | None:
    """Iterations, env-steps and wall-clock seconds a meta-training run used, or None.

    Read from ``run_dir``'s ``config.json`` and ``metrics.csv`` (one row per
    finished iteration, with its ``time/iteration``): every iteration so far,
    or the first ``iterations`` (those of a checkpoint). The env-steps are the
    ones the run counted (``speed/env_steps``: valid steps before and after
    adaptation, ``env_steps_counted`` true); rows of runs that did not log them
    count ``meta_batch_size x episodes_per_task`` episodes before and again
    after adaptation at ``horizon`` steps each (``env_steps_counted`` false:
    an upper bound where episodes end early: ant_dir, hopper, walker).
    """
    config_path, metrics_path = Path(run_dir) / "config.json", Path(run_dir) / "metrics.csv"
    if not (config_path.is_file() and metrics_path.is_file()):
        return None
    config = json.loads(config_path.read_text())
    with metrics_path.open() as f:
        rows = [row for row in csv.DictReader(f) if iterations is None or int(row["iteration"]) < iterations]
    per_iteration = 2 * config["meta_batch_size"] * config["episodes_per_task"] * horizon
    counted = all(row.get("speed/env_steps") for row in rows)
    return {
        "iterations": len(rows),
        "env_steps": int(sum(float(row["speed/env_steps"]) for row in rows)) if counted else len(rows) * per_iteration,
        "env_steps_counted": counted,
        "wall_clock_s": sum(float(row.get("time/iteration") or 0.0) for row in rows),
    }


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def student_t_cdf(t: float, dof: int) -> float:
    """CDF of Student's t distribution with ``dof`` degrees of freedom."""
    if t == 0.0:
        return 0.5
    x = dof / (dof + t * t)
    a, b = dof / 2.0, 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    ibeta = front * _betacf(a, b, x) / a if x < (a + 1) / (a + b + 2) else 1.0 - front * _betacf(b, a, 1 - x) / b
    return 1.0 - 0.5 * ibeta if t >= 0 else 0.5 * ibeta


def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, dof) < p:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def mean_and_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the last axis (tasks) and the half-width of its Student-t ``level`` interval."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    mean = values.mean(axis=-1)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    sem = values.std(axis=-1, ddof=1) / math.sqrt(n)
    return mean, student_t_quantile(0.5 + level / 2, n - 1) * sem


def mean_over_repeats(per_trial: np.ndarray, repeats: int) -> np.ndarray:
    """``[P, repeats * T]`` returns of independent trials, trial r of task t at ``r * T + t``
    (the task list repeated), as ``[P, T]`` per-task means."""
    return per_trial.reshape(per_trial.shape[0], repeats, -1).mean(axis=1)


def curve(per_task: np.ndarray, x: list[int]) -> dict[str, Any]:
    """A curve's JSON form: ``x``, per-task values ``[len(x), N]``, mean and 95% CI."""
    mean, half = mean_and_ci(per_task)
    return {
        "x": list(x),
        "per_task": per_task.tolist(),
        "mean": mean.tolist(),
        "ci95_low": (mean - half).tolist(),
        "ci95_high": (mean + half).tolist(),
    }


LATER_LR_SCALE_HELP = (
    "inner steps after the first take this times the run's inner lr (default 1: all alike; "
    "the MAML paper's evaluation halves it, 0.5)"
)


LATER_MEMORIES = ("latest", "first")
"""Which episodes a context policy's memory holds after the second and later inner steps
(``evaluate.py --later-memory``): those of the step before, or the pre-adaptation episodes, the
only kind meta-training fills it with."""

LATER_MEMORY_HELP = (
    "context policies, after inner steps 2, 3, ...: the memory of the episodes of the step before "
    "(latest, default) or of the pre-adaptation episodes, as in meta-training (first)"
)


def check_later_memory(later_memory: str, policy: Any) -> None:
    """ValueError for ``--later-memory`` other than ``latest`` with a policy that has no memory (it
    would change nothing but the report's row name)."""
    if later_memory != "latest" and not policy.uses_context:
        raise ValueError(
            f"--later-memory {later_memory}: {type(policy).__name__} has no memory (the option is for context "
            "policies, such as --policy attention)"
        )


def check_later_lr_scale(scale: float) -> None:
    """ValueError unless ``scale`` (``--later-lr-scale``) is a finite number > 0."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"invalid --later-lr-scale {scale}: must be a finite number > 0")


def adaptation_steps(
    family: Any,
    policy: Any,
    learner: Any,
    tasks: list[Any],
    num_steps: int,
    episodes_per_task: int,
    memory_size: int,
    seed: int,
    device: torch.device | str,
    later_lr_scale: float = 1.0,
    later_memory: str = "latest",
) -> Iterator[tuple[dict[str, torch.Tensor], Memory | None, Episodes]]:
    """The MAML test protocol: yields ``(params, memory, episodes)`` after 0..num_steps inner steps.

    Step k samples ``episodes_per_task`` episodes per task with the parameters
    (and memory) of step k, then takes one inner gradient step on them, of the
    learner's step size (``inner_lr``, or its learned ones) for the first and ``later_lr_scale`` times that for the
    others (the MAML paper's evaluation halves it: Finn et al. 2017, appendix A.2);
    context policies get the memory of those episodes, or with ``later_memory="first"`` keep the
    memory of the pre-adaptation episodes from the first step on. Every step samples with the same
    seeds (initial states and action noise): common random numbers, so results
    differ between steps only through the parameters and memory, not luck.
    """
    if later_memory not in LATER_MEMORIES:
        raise ValueError(f"unknown later memory {later_memory!r}; valid: {', '.join(LATER_MEMORIES)}")
    params = detached(policy.params())
    memory: Memory | None = None
    for step in range(num_steps + 1):
        generator = torch.Generator().manual_seed(seed)
        sim = family.batch(tasks, episodes_per_task, seed=seed)
        episodes = sample(sim, policy, params, len(tasks), generator, memory=memory, device=device)
        yield params, memory, episodes
        if step < num_steps:
            # on-policy: the inner loss sees the episodes with the memory they were sampled with
            scale = later_lr_scale if step else 1.0
            params = detached(
                learner.adapt(episodes, params, create_graph=False, memory=memory, num_steps=1, lr_scale=scale)
            )
            if policy.uses_context and (memory is None or later_memory == "latest"):
                memory = build_memory(episodes, memory_size, generator)


def by_gradient_steps(
    family: Any,
    policy: Any,
    learner: Any,
    tasks: list[Any],
    num_steps: int,
    episodes_per_task: int,
    memory_size: int,
    seed: int,
    device: torch.device,
    progress: Any = None,
    later_lr_scale: float = 1.0,
    later_memory: str = "latest",
) -> np.ndarray:
    """Returns ``[num_steps + 1, num_tasks]``: mean return per task after 0..num_steps
    inner steps (:func:`adaptation_steps`)."""
    returns = []
    steps = adaptation_steps(
        family,
        policy,
        learner,
        tasks,
        num_steps,
        episodes_per_task,
        memory_size,
        seed,
        device,
        later_lr_scale,
        later_memory,
    )
    for step, (_, _, episodes) in enumerate(steps):
        returns.append(episodes.task_returns().cpu().numpy())
        if progress is not None:
            progress(f"step {step}: mean return {returns[-1].mean():.2f}")
    return np.stack(returns)


def by_episodes(
    family: Any,
    policy: Any,
    learner: Any,
    tasks: list[Any],
    num_episodes: int,
    mode: str,
    memory_size: int,
    seed: int,
    device: torch.device,
    progress: Any = None,
) -> np.ndarray:
    """Returns ``[num_episodes, num_tasks]``: return of each task's episode k when the
    policy may use k - 1 earlier episodes of the task as ``mode`` allows.

    As in meta-training, the experience comes from the meta-policy itself:
    ``num_episodes - 1`` exploration episodes per task, sampled with the
    meta-parameters and no memory. Episode k runs with the meta-parameters
    adapted by one inner step on the first k - 1 of them (``gradient``), with
    a memory of them (``context``), or both; episode 1 runs the meta-policy.
    The inner step so always sees on-policy episodes: a policy-gradient step
    taken at the meta-parameters on episodes of an adapted policy would weigh
    them with the wrong likelihoods (and diverged on half_cheetah_dir).
    """
    if mode not in EPISODE_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(EPISODE_MODES)}")
    generator = torch.Generator().manual_seed(seed)
    meta = detached(policy.params())
    explored = None
    if num_episodes > 1:
        explorer = family.batch(tasks, num_episodes - 1, seed=seed)
        explored = sample(explorer, policy, meta, len(tasks), generator, device=device)
    sim = family.batch(tasks, 1, seed=seed + 1)
    returns = []
    for episode in range(num_episodes):
        params, memory = meta, None
        if explored is not None and episode > 0:
            seen = explored.first(episode)
            if mode in ("context", "both") and policy.uses_context:
                memory = build_memory(seen, memory_size, generator)
            if mode in ("gradient", "both"):
                params = detached(learner.adapt(seen, meta, create_graph=False, num_steps=1))
        episodes = sample(sim, policy, params, len(tasks), generator, memory=memory, device=device)
        returns.append(episodes.task_returns().cpu().numpy())
        if progress is not None:
            progress(f"{mode} episode {episode + 1}: mean return {returns[-1].mean():.2f}")
    return np.stack(returns)
