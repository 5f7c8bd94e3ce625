"""The evaluation protocol: how fast a meta-trained policy adapts to held-out tasks.

Two curves, per task and as a mean with a 95% confidence interval over tasks:

* **by gradient steps** (the MAML paper's figures): the return after 0, 1, ..., K
  inner steps; step k adapts on fresh episodes sampled with the parameters of
  step k-1 (and, for context policies, a memory of those episodes).
* **by episodes of experience**: the return of episode k = 1..K of a task when
  the policy may use that task's earlier episodes: ``context`` (the memory fills
  up, no gradient), ``gradient`` (one inner step on the episodes so far) or
  ``both``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from metarl.episodes import Episodes, Memory, build_memory
from metarl.params import detached
from metarl.sampling import sample

EPISODE_MODES = ("context", "gradient", "both")


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
) -> Iterator[tuple[dict[str, torch.Tensor], Memory | None, Episodes]]:
    """The MAML test protocol: yields ``(params, memory, episodes)`` after 0..num_steps inner steps.

    Step k samples ``episodes_per_task`` episodes per task with the parameters
    (and memory) of step k, then takes one inner gradient step on them; context
    policies get the memory of those episodes. Every step samples with the same
    seeds (initial states and action noise): common random numbers, so results
    differ between steps only through the parameters and memory, not luck.
    """
    params = detached(policy.params())
    memory: Memory | None = None
    for step in range(num_steps + 1):
        generator = torch.Generator().manual_seed(seed)
        sim = family.batch(tasks, episodes_per_task, seed=seed)
        episodes = sample(sim, policy, params, len(tasks), generator, memory=memory, device=device)
        yield params, memory, episodes
        if step < num_steps:
            params = detached(learner.adapt(episodes, params, create_graph=False, num_steps=1))
            if policy.uses_context:
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
) -> np.ndarray:
    """Returns ``[num_steps + 1, num_tasks]``: mean return per task after 0..num_steps
    inner steps (:func:`adaptation_steps`)."""
    returns = []
    steps = adaptation_steps(family, policy, learner, tasks, num_steps, episodes_per_task, memory_size, seed, device)
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
    policy may use its episodes 1..k-1 as ``mode`` allows (context, gradient or both)."""
    if mode not in EPISODE_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(EPISODE_MODES)}")
    generator = torch.Generator().manual_seed(seed)
    sim = family.batch(tasks, 1, seed=seed)
    meta = detached(policy.params())
    params, memory = meta, None
    history: list[Episodes] = []
    returns = []
    for episode in range(num_episodes):
        episodes = sample(sim, policy, params, len(tasks), generator, memory=memory, device=device)
        returns.append(episodes.task_returns().cpu().numpy())
        if progress is not None:
            progress(f"{mode} episode {episode + 1}: mean return {returns[-1].mean():.2f}")
        history.append(episodes)
        if mode in ("context", "both") and policy.uses_context:
            memory = build_memory(episodes, memory_size, generator, previous=memory)
        if mode in ("gradient", "both"):
            params = detached(learner.adapt(Episodes.concatenate(history), meta, create_graph=False, num_steps=1))
    return np.stack(returns)
