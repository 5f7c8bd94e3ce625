"""The linear feature baseline of Duan et al. 2016 (rllab), fitted per task."""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.episodes import discounted_returns


def baseline_features(observations: Tensor, mask: Tensor) -> Tensor:
    """rllab's features ``[o, o^2, t, t^2, t^3, 1]`` with ``t`` = step / 100: ``[T, B, 2 obs + 4]``."""
    horizon, slots = mask.shape
    obs = observations.clamp(-10.0, 10.0)
    time = torch.arange(horizon, dtype=obs.dtype, device=obs.device).view(-1, 1, 1).expand(horizon, slots, 1) / 100.0
    return torch.cat([obs, obs**2, time, time**2, time**3, torch.ones_like(time)], dim=2) * mask.unsqueeze(-1)


def fit_linear_baseline(
    observations: Tensor, rewards: Tensor, mask: Tensor, num_tasks: int, gamma: float, reg_coeff: float = 1e-5
) -> Tensor:
    """Values ``[T, B]`` from a least-squares fit of the discounted returns, one fit per task.

    Slots are task-major (``B = num_tasks * episodes_per_task``); all tasks are
    solved in one batched Cholesky solve (the ridge-regularised Gram matrix is
    positive definite; batched LU solves of wide systems hang in torch 2.13's
    CPU MKL build). The ridge term grows tenfold until every system solves, as
    in rllab.
    """
    features = baseline_features(observations, mask)
    targets = discounted_returns(rewards, mask, gamma)
    horizon, slots, width = features.shape
    per_task = slots // num_tasks
    x = features.view(horizon, num_tasks, per_task, width).transpose(0, 1).reshape(num_tasks, -1, width)
    y = targets.view(horizon, num_tasks, per_task).transpose(0, 1).reshape(num_tasks, -1, 1)
    gram, rhs = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y
    eye = torch.eye(width, dtype=gram.dtype, device=gram.device)
    reg = reg_coeff
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(gram + reg * eye)
        coeffs = torch.cholesky_solve(rhs, chol)
        if bool((info == 0).all()) and bool(torch.isfinite(coeffs).all()):
            break
        reg *= 10.0
    values = (x @ coeffs).view(num_tasks, horizon, per_task).transpose(0, 1).reshape(horizon, slots)
    return values * mask
