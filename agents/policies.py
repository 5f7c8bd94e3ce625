"""Gaussian policies with explicit parameters, batched over tasks.

Every method takes the parameters as a ``dict[str, Tensor]``, so adaptation
never mutates a module. A parameter dict is either *shared* (each tensor has
the module parameter's shape) or *per task* (each tensor has an extra leading
``num_tasks`` axis): slots are task-major, so inputs are viewed as
``[..., num_tasks, episodes_per_task, features]`` and task ``n``'s parameters
act on its own slots (one batched matmul, no Python loop over tasks).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from metarl.config import ACTIVATIONS, ADAPT_SCOPES, LEARNED_STEP_SIZES
from metarl.episodes import Episodes, Memory
from metarl.params import Params


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight.T + bias`` for shared (``[out, in]``) or per-task (``[N, out, in]``) weights.

    Per-task weights need ``x`` task-major, ``[N, ..., in]`` (:func:`task_view`), and return
    ``[N, ..., out]``: one matmul per task over all of its rows.
    """
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    rows = x.reshape(x.shape[0], -1, x.shape[-1])
    return torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2)).view(*x.shape[:-1], weight.shape[1])


HIDDEN_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {name: getattr(torch, name) for name in ACTIVATIONS}
"""The hidden layers' nonlinearities by name (``TrainConfig.activation``): ``torch.tanh``, ``torch.relu``."""


def hidden_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The nonlinearity called ``name``; ValueError listing the valid ones."""
    if name not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(HIDDEN_ACTIVATIONS)}")
    return HIDDEN_ACTIVATIONS[name]


def diagonal_gaussian(mean: Tensor, log_std: Tensor) -> Independent:
    """A diagonal Gaussian over the last axis; ``log_std`` broadcast to ``mean``."""
    return Independent(Normal(mean, log_std.expand_as(mean).exp()), 1)


def detached_gaussian(dist: Independent) -> Independent:
    """A copy of a :func:`diagonal_gaussian` cut from the graph (the old policy of a trust region)."""
    return Independent(Normal(dist.base_dist.loc.detach(), dist.base_dist.scale.detach()), 1)


STEP_SIZES = "inner_lr"
"""Module name of a policy's learned inner step sizes (:meth:`Policy.learn_step_sizes`)."""


def _step_size_key(name: str) -> str:
    """The key of parameter ``name``'s learned step size in the policy's ``inner_lr`` parameter dict."""
    return name.replace(".", "-")


def step_size_name(name: str) -> str:
    """The parameter name of the learned inner step size of parameter ``name``."""
    return f"{STEP_SIZES}.{_step_size_key(name)}"


def is_step_size(name: str) -> bool:
    """Whether parameter ``name`` is a learned inner step size (not an input of the policy's output)."""
    return name.startswith(f"{STEP_SIZES}.")


def task_view(x: Tensor, num_tasks: int) -> Tensor:
    """``[..., B, F] -> [num_tasks, ..., B // num_tasks, F]`` (slots task-major), contiguous.

    Task-major, every task's rows are one block, so the per-task matmuls (:func:`linear`) need no
    copy; with leading axes (the losses' time axis) this is one copy of the input. Time-major
    ``[T, N, S, F]`` instead cost a copy in and out of every matmul and of its backward passes:
    task-major, the attention policy's TRPO step took 0.88-0.92x the time (docs/speed.md).
    """
    split = x.reshape(*x.shape[:-2], num_tasks, x.shape[-2] // num_tasks, x.shape[-1])
    return split.movedim(-3, 0).contiguous()


def batch_view(x: Tensor) -> Tensor:
    """The inverse of :func:`task_view`: ``[N, ..., S, F] -> [..., N * S, F]``."""
    slots = x.movedim(0, -3)
    return slots.reshape(*slots.shape[:-3], -1, slots.shape[-1])


class Policy(nn.Module, abc.ABC):
    """Base of the Gaussian policies: ``act`` for sampling, ``episode_distribution`` for losses."""

    uses_context: bool = False

    def __init__(self, obs_dim: int, act_dim: int, init_log_std: float = 0.0) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def params(self) -> Params:
        """The module's parameters as a dict (live tensors, for the outer optimiser)."""
        return dict(self.named_parameters())

    def learn_step_sizes(self, scope: str, value: float, shape: str) -> None:
        """Meta-SGD (Li et al. 2017): add a learned inner step size, initially ``value``, for each
        parameter the inner loop adapts for ``scope``: one per tensor (``shape="tensor"``, stored with
        as many unit axes as the tensor, so that it broadcasts per task) or one per element
        (``"element"``). They are parameters of the module (saved, moved and meta-trained with it) that
        no output depends on; the learner steps each parameter by its own sizes."""
        if shape not in LEARNED_STEP_SIZES:
            raise ValueError(f"unknown step-size shape {shape!r}; valid: {', '.join(LEARNED_STEP_SIZES)}")
        params = self.params()
        if any(is_step_size(n) for n in params):
            raise ValueError(f"{type(self).__name__} already has learned step sizes")
        sizes = {}
        for name in self.adapted_names(scope):
            like = params[name]
            size = like.shape if shape == "element" else (1,) * like.dim()
            sizes[_step_size_key(name)] = nn.Parameter(like.new_full(size, float(value)))
        self.add_module(STEP_SIZES, nn.ParameterDict(sizes))

    def adapted_names(self, scope: str) -> list[str]:
        """Names of the parameters the inner loop adapts for ``scope`` (never the learned step sizes)."""
        if scope not in ADAPT_SCOPES:
            raise ValueError(f"unknown adaptation scope {scope!r}; valid: {', '.join(ADAPT_SCOPES)}")
        names = [n for n in self.params() if not is_step_size(n)]
        if scope == "all":
            return names
        context = [n for n in names if self.is_context_parameter(n)]
        if scope == "context":
            if not context:
                raise ValueError(f"{type(self).__name__} has no context parameters to adapt")
            return context
        return [n for n in names if n not in context]

    def is_context_parameter(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to the context encoder."""
        return False

    @staticmethod
    def num_tasks_of(params: Params, shared: Params) -> int | None:
        """The leading task axis of per-task ``params``, or None if they are shared."""
        name, value = next(iter(params.items()))
        return int(value.shape[0]) if value.dim() == shared[name].dim() + 1 else None

    @abc.abstractmethod
    def episode_distribution(self, params: Params, episodes: Episodes, memory: Memory | None = None) -> Independent:
        """Action distribution at every step of ``episodes``: batch shape ``[T, B]``."""

    @abc.abstractmethod
    def start(self, params: Params, num_tasks: int, num_slots: int, memory: Memory | None = None) -> Any:
        """Sampling state for ``num_slots`` fresh episodes (the context, if any)."""

    @abc.abstractmethod
    def act(self, params: Params, obs: Tensor, state: Any) -> Independent:
        """Action distribution for ``obs [B, obs_dim]`` given the sampling state."""

    def observe(self, params: Params, state: Any, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor) -> Any:
        """The sampling state after each slot took one step (default: unchanged)."""
        return state


class GaussianMLPPolicy(Policy):
    """The MAML policy (Finn et al. 2017): an MLP mean with tanh (or ReLU) hidden
    layers and a state-independent log standard deviation; the context is ignored."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        init_log_std: float = 0.0,
        activation: str = "tanh",
    ) -> None:
        super().__init__(obs_dim, act_dim, init_log_std)
        self.activation = hidden_activation(activation)
        sizes = (obs_dim, *hidden_sizes, act_dim)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True))
        for name, param in self.layers.named_parameters():
            if name.endswith("weight"):
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)
        self.hidden_sizes = tuple(hidden_sizes)

    def mean(self, params: Params, obs: Tensor) -> Tensor:
        """The action mean; ``obs [..., B, obs_dim]`` (per-task params: ``B`` task-major)."""
        num_tasks = self.num_tasks_of(params, self.params())
        x = obs if num_tasks is None else task_view(obs, num_tasks)
        last = len(self.layers) - 1
        for i in range(len(self.layers)):
            x = linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < last:
                x = self.activation(x)
        return x if num_tasks is None else batch_view(x)

    def _log_std(self, params: Params, like: Tensor) -> Tensor:
        log_std = params["log_std"]
        if log_std.dim() == 1:
            return log_std
        num_tasks = log_std.shape[0]
        return log_std.repeat_interleave(like.shape[-2] // num_tasks, dim=0)

    def episode_distribution(self, params: Params, episodes: Episodes, memory: Memory | None = None) -> Independent:
        mean = self.mean(params, episodes.observations)
        return diagonal_gaussian(mean, self._log_std(params, mean))

    def start(self, params: Params, num_tasks: int, num_slots: int, memory: Memory | None = None) -> Any:
        return None

    def act(self, params: Params, obs: Tensor, state: Any) -> Independent:
        mean = self.mean(params, obs)
        return diagonal_gaussian(mean, self._log_std(params, mean))
