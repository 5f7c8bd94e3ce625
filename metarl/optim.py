"""TRPO's optimisation parts: conjugate gradient and a backtracking line search
(Schulman et al. 2015, "Trust Region Policy Optimization", Appendix C)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10, tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``.

    Returns ``(x, A x)``. ``A x`` is ``b - r`` with ``r`` the residual the iteration
    keeps (``r_k = b - A x_k`` by construction, up to rounding), so TRPO's step
    size ``x^T A x`` costs no further product: one ``matvec`` in 11 at 10 iterations.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot = r @ r
    for _ in range(iterations):
        if r_dot < tol:
            break
        ap = matvec(p)
        alpha = r_dot / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_r_dot = r @ r
        p = r + (new_r_dot / r_dot) * p
        r_dot = new_r_dot
    return x, b - r


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    max_kl: float,
    max_steps: int = 15,
    backtrack_ratio: float = 0.8,
) -> tuple[float, int]:
    """Find the largest step fraction ``backtrack_ratio**k`` that improves the
    surrogate and keeps the KL within ``max_kl``.

    Args:
        evaluate: ``fraction -> (improvement, kl)`` after moving the parameters
            by ``fraction`` of the full step (the caller applies the step).
    Returns:
        ``(fraction, steps)``: the accepted fraction, or 0.0 when none was accepted
        (the caller then restores the old parameters), and how many were tried.
    """
    fraction = 1.0
    for step in range(1, max_steps + 1):
        improvement, kl = evaluate(fraction)
        if improvement > 0.0 and kl <= max_kl:
            return fraction, step
        fraction *= backtrack_ratio
    return 0.0, max_steps
