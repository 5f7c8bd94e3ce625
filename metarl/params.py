"""Functional-parameter helpers: parameter dicts, shared or with a leading task axis."""

from __future__ import annotations

import torch
from torch import Tensor

Params = dict[str, Tensor]
"""Parameters by name; each tensor has the module parameter's shape (shared) or an
extra leading ``num_tasks`` axis (per task)."""


def detached(params: Params) -> Params:
    """The same tensors without their graph."""
    return {k: v.detach() for k, v in params.items()}


def flatten(tensors: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Concatenate tensors into one vector (any strides)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def expand_params(params: Params, num_tasks: int) -> Params:
    """Shared parameters viewed with a leading task axis (gradients flow back)."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}


def select_tasks(params: Params, tasks: slice) -> Params:
    """Per-task parameters of the tasks in ``tasks``."""
    return {k: v[tasks] for k, v in params.items()}
