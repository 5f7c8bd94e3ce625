"""The default policy: a Gaussian policy whose action attends over recent transitions of its task.

Architecture (``E = embed_dim``, ``H = num_heads``, ``d = E // H``, ``W = window``,
``F = 2 obs_dim + act_dim + 1`` the width of :func:`metarl.episodes.transition_features`)::

    observation   h = tanh(obs_embed(obs))                         [..., E]
                  q = query(h)                                      [..., H, d]
    transition    e = tanh(trans_embed((s, a, r, s')))              [..., E]    once per transition
                  k = key(e),  v = value(e)                         [..., H, d]
    context       {null} U {causal window: the slot's last W transitions of its current episode}
                         U {memory: the task's earlier transitions}  (masked entries get -inf)
    attention     a = softmax(q . [k_null, k_window, k_memory] / sqrt(d)) over all entries jointly
                  z = out(concat_heads(a @ [v_null, v_window, v_memory]))   [..., E]  task summary
    action        mean = head(concat(h, z)): tanh (or ReLU) hidden layers (hidden_sizes), linear output
                  std  = exp(log_std), state independent

The learned null key/value (one per head) is always attendable, so an empty
context is well defined: the summary is then ``out(null_value)`` for every
observation. At step ``t`` of an episode the window holds transitions
``t - W .. t - 1`` of the same slot (transition ``j = (s_j, a_j, r_j, s_{j+1})``),
only those with mask 1; at ``t = 0`` it is empty. Slot ``b`` of task ``n``
(task-major, ``b // (B / N) == n``) also attends to memory row ``n``.

Parameters are split into the *context encoder* (``trans_embed``, ``key``,
``value``, ``query``, ``null_key``, ``null_value``, ``out``: everything that
computes ``z`` from ``h`` and the context) and the *head* (``obs_embed``, the
``head`` MLP and ``log_std``). ``obs_embed`` belongs to the head on purpose: the
head's input ``h`` then depends on no context parameter, so adapting the context
scope changes the action only through the task summary ``z`` (as in CAVIA-style
context adaptation), while the head scope adapts the policy's own features.

Two computations, which agree to rounding:

* :meth:`AttentionPolicy.episode_distribution` (losses): the whole ``[T, B]``
  batch at once. Keys/values are computed once per transition; time is cut
  into blocks of ``W`` steps and each block's queries score the keys of their
  own and the previous block in one batched matmul (a band mask keeps each
  step's last ``W``); no ``[T, B, W, ...]`` tensor of keys is built.
* :meth:`AttentionPolicy.start` / :meth:`~AttentionPolicy.act` /
  :meth:`~AttentionPolicy.observe` (sampling): a ring buffer of the last ``W``
  keys/values per slot, each transition embedded once when observed and written
  in place over the oldest.

Every op is written with ``einsum``/``softmax``/elementwise maths (no fused
attention kernels), so MAML's second-order meta-gradient (double backward)
works on CPU and CUDA. Parameters may be shared (module shapes) or per task
(extra leading ``num_tasks`` axis), and may be mixed: each tensor is dispatched
on its own shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from agents.policies import Params, Policy, batch_view, diagonal_gaussian, hidden_activation, linear, task_view
from metarl.episodes import Episodes, Memory, transition_features

CONTEXT_PARAMETER_PREFIXES = ("trans_embed", "key", "value", "query", "null_key", "null_value", "out")
"""First name component of the context-encoder parameters; every other parameter belongs to the head."""


class MemoryAttention(NamedTuple):
    """Keys and values of a :class:`~metarl.episodes.Memory`, computed once.

    Attributes:
        keys: ``[N, M, H, d]``.
        values: ``[N, M, H, d]``.
        mask: ``[N, M]`` bool, True for filled rows.
    """

    keys: Tensor
    values: Tensor
    mask: Tensor


@dataclasses.dataclass(frozen=True)
class AttentionState:
    """Sampling state of :class:`AttentionPolicy` for ``B`` slots of ``num_tasks`` tasks.

    Attributes:
        num_tasks: tasks; slots are task-major, ``B // num_tasks`` per task.
        keys: ``[B, H, W, d]`` keys of each slot's last ``W`` transitions, a ring buffer:
            :meth:`AttentionPolicy.observe` overwrites entry ``position``, the oldest.
            Attention ignores the order of its entries, so the ring needs no shifting.
        values: ``[B, H, W, d]`` the matching values.
        valid: ``[B, W]`` bool, True for filled entries (``t`` of them at step ``t < W``).
        position: the ring entry the next transition goes to.
        memory: keys/values of the task memories, or None for no memory.
    """

    num_tasks: int
    keys: Tensor
    values: Tensor
    valid: Tensor
    position: int
    memory: MemoryAttention | None


WindowWeigher = Callable[[Tensor], Tensor]
"""Maps attention weights ``[..., H, K]`` over ``K`` entries to the weighted sum of their values ``[..., H, d]``."""


class AttentionPolicy(Policy):
    """Gaussian policy conditioned on its task through attention over transitions (see the module docstring).

    Args:
        obs_dim: observation width.
        act_dim: action width.
        hidden_sizes: widths of the hidden layers of the action head.
        embed_dim: width of the observation/transition embeddings and of the task summary.
        num_heads: attention heads; must divide ``embed_dim``.
        window: transitions of the current episode each step attends to (0: memory only).
        init_log_std: initial log standard deviation of every action dimension.
        activation: nonlinearity of the action head's hidden layers (tanh or relu).

    Example (sampling two tasks with two slots each; losses use ``episode_distribution``):

    >>> policy = AttentionPolicy(obs_dim=3, act_dim=2)
    >>> params = policy.params()
    >>> state = policy.start(params, num_tasks=2, num_slots=4, memory=None)
    >>> obs = torch.zeros(4, 3)
    >>> action = policy.act(params, obs, state).sample()
    >>> state = policy.observe(params, state, obs, action, torch.zeros(4), obs)
    >>> policy.act(params, obs, state).batch_shape
    torch.Size([4])
    """

    uses_context = True

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...] = (64, 64),
        embed_dim: int = 32,
        num_heads: int = 2,
        window: int = 8,
        init_log_std: float = 0.0,
        activation: str = "tanh",
    ) -> None:
        super().__init__(obs_dim, act_dim, init_log_std)
        self.activation = hidden_activation(activation)
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        if window < 0:
            raise ValueError(f"window must be >= 0 (0: attend to the memory only), got {window}")
        self.hidden_sizes = tuple(hidden_sizes)
        self.embed_dim, self.num_heads, self.window = embed_dim, num_heads, window
        self.head_dim = embed_dim // num_heads
        self.transition_dim = 2 * obs_dim + act_dim + 1

        self.obs_embed = nn.Linear(obs_dim, embed_dim)
        self.trans_embed = nn.Linear(self.transition_dim, embed_dim)
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.null_key = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.null_value = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.out = nn.Linear(embed_dim, embed_dim)
        sizes = (2 * embed_dim, *self.hidden_sizes, act_dim)
        self.head = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True))

        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.null_key, std=self.head_dim**-0.5)
        nn.init.normal_(self.null_value, std=self.head_dim**-0.5)

    # ------------------------------------------------------------------ parameters

    def is_context_parameter(self, name: str) -> bool:
        """True for the context encoder (transition embedding, query/key/value, null entries, output projection)."""
        return name.split(".")[0] in CONTEXT_PARAMETER_PREFIXES

    def _check_params(self, params: Params, num_tasks: int) -> None:
        """Raise unless every parameter is present with its module shape or ``[num_tasks, *shape]``."""
        shared = self.params()
        missing = [name for name in shared if name not in params]
        if missing:
            raise ValueError(f"{type(self).__name__} parameters missing: {', '.join(missing)}")
        for name, reference in shared.items():
            value = params[name]
            if value.shape != reference.shape and value.shape != (num_tasks, *reference.shape):
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(value.shape)}; expected {tuple(reference.shape)} (shared) "
                    f"or {(num_tasks, *reference.shape)} (per task, for {num_tasks} tasks)"
                )

    # ------------------------------------------------------------------ building blocks (task-major, [N, ..., S, .])

    def _linear(self, params: Params, name: str, x: Tensor) -> Tensor:
        return linear(x, params[f"{name}.weight"], params[f"{name}.bias"])

    def _split_heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def _query(self, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [N, ..., S, obs_dim] -> (h [N, ..., S, E], q [N, ..., S, H, d])``.

        ``q`` is already scaled by ``1 / sqrt(d)``, so every score ``q . k`` is the attention logit
        (scaling the queries is cheaper than scaling the ``[..., H, 1 + W + M]`` scores).
        """
        h = torch.tanh(self._linear(params, "obs_embed", obs))
        return h, self._split_heads(self._linear(params, "query", h)) * self.head_dim**-0.5

    def _keys_values(self, params: Params, transitions: Tensor) -> tuple[Tensor, Tensor]:
        """``transitions [N, ..., S, F] -> (keys, values)``, each ``[N, ..., S, H, d]``."""
        e = torch.tanh(self._linear(params, "trans_embed", transitions))
        return self._split_heads(self._linear(params, "key", e)), self._split_heads(self._linear(params, "value", e))

    def _null(self, params: Params, name: str, like: Tensor) -> Tensor:
        """Null key/value broadcastable against ``like [N, ..., S, H, d]``: ``[H, d]``, or per task
        ``[N, 1, ..., 1, H, d]``."""
        value = params[name]
        return value if value.dim() == 2 else value.view(value.shape[0], *[1] * (like.dim() - 3), *value.shape[1:])

    def _memory(self, params: Params, memory: Memory | None, num_tasks: int) -> MemoryAttention | None:
        if memory is None:
            return None
        if memory.num_tasks != num_tasks or memory.transitions.shape[-1] != self.transition_dim:
            raise ValueError(
                f"memory transitions have shape {tuple(memory.transitions.shape)}; expected "
                f"[{num_tasks} tasks, M, {self.transition_dim} features]"
            )
        if memory.mask.shape != memory.transitions.shape[:2]:
            raise ValueError(
                f"memory mask has shape {tuple(memory.mask.shape)}; expected {tuple(memory.transitions.shape[:2])}"
            )
        reference = params["null_key"]
        keys, values = self._keys_values(params, memory.transitions.to(reference))
        return MemoryAttention(keys, values, memory.mask.to(reference.device) > 0)

    def _summary(
        self,
        params: Params,
        q: Tensor,
        window: tuple[Tensor, Tensor, WindowWeigher] | None,
        memory: MemoryAttention | None,
    ) -> Tensor:
        """Task summary ``z [N, ..., S, E]`` from scaled queries ``q [N, ..., S, H, d]``.

        Args:
            window: ``(scores [N, ..., S, H, K], valid (bool, broadcastable to scores), weigher)``.
            memory: keys/values ``[N, M, H, d]`` and mask ``[N, M]``.
        """
        null_key, null_value = self._null(params, "null_key", q), self._null(params, "null_value", q)
        null_scores = (q * null_key).sum(-1, keepdim=True)  # the null entry, always valid
        parts: list[tuple[Tensor, WindowWeigher]] = []  # (masked scores, weigher of their values)
        if window is not None:
            window_scores, window_valid, weigh = window
            parts.append((window_scores.masked_fill(~window_valid, -math.inf), weigh))
        if memory is not None:
            memory_scores = torch.einsum("n...hd,nmhd->n...hm", q, memory.keys)
            values = memory.values
            filled = memory.mask.view(memory.mask.shape[0], *[1] * (memory_scores.dim() - 2), -1)
            parts.append(
                (
                    memory_scores.masked_fill(~filled, -math.inf),
                    lambda weights: torch.einsum("n...hm,nmhd->n...hd", weights, values),
                )
            )
        # The softmax over the entries of all parts, without concatenating them: each part's
        # exp(score - shift) weighs its own values and the sum is divided once by the total weight.
        # The shift, a detached bound of every valid score, keeps exp() <= 1 and changes nothing else.
        shift = null_scores.detach()
        for scores, _ in parts:
            shift = torch.maximum(shift, scores.detach().amax(-1, keepdim=True))
        weights = torch.exp(null_scores - shift)
        total, attended = weights, weights * null_value
        for scores, weigh in parts:
            weights = torch.exp(scores - shift)
            total = total + weights.sum(-1, keepdim=True)
            attended = attended + weigh(weights)
        attended = attended / total
        return self._linear(params, "out", attended.flatten(-2))

    def _distribution(self, params: Params, h: Tensor, z: Tensor) -> Independent:
        """Action distribution from ``h, z [N, ..., S, E]``, batch shape ``[..., B]`` (slots task-major)."""
        x = torch.cat([h, z], dim=-1)
        last = len(self.head) - 1
        for i in range(len(self.head)):
            x = self._linear(params, f"head.{i}", x)
            if i < last:
                x = self.activation(x)
        log_std = params["log_std"]
        if log_std.dim() == 2:  # per task [N, A] -> [B, A], broadcast over the leading axes
            log_std = log_std.repeat_interleave(x.shape[-2], dim=0)
        return diagonal_gaussian(batch_view(x), log_std)

    # ------------------------------------------------------------------ batched (losses)

    def _window_batched(
        self, q: Tensor, keys: Tensor, values: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, WindowWeigher]:
        """Causal-window scores by blocks of ``W`` steps, each attending to itself and the block before.

        Args:
            q, keys, values: ``[N, T, S, H, d]``; ``keys[:, t]`` is the key of transition ``t``.
            valid: ``[N, T, S]`` bool mask of the transitions.

        Returns:
            scores ``[N, T, S, H, 2W]`` (entry ``k`` of step ``t = bW + i``: ``q[:, t] . keys[:, (b - 1)W + k]``,
            zero keys before step 0), their validity ``[N, T, S, 1, 2W]`` (the ``W`` entries
            ``i <= k < i + W``, i.e. steps ``t - W .. t - 1``, where those are valid) and the weigher.
            One batched matmul per product instead of ``W`` shifted elementwise products, whose
            slicing costs a full-size copy each in every backward pass; a step scores ``2W`` keys,
            half of them masked.
        """
        tasks, horizon, size = q.shape[0], q.shape[1], self.window
        blocks = -(-horizon // size)
        tail = blocks * size - horizon

        def in_blocks(x: Tensor, front: int) -> Tensor:  # [N, T, ...] -> [N, blocks (+1), W, ...], zero padded
            padding = (x.new_zeros((tasks, front, *x.shape[2:])), x, x.new_zeros((tasks, tail, *x.shape[2:])))
            return torch.cat(padding, dim=1).unflatten(1, (-1, size))

        def with_previous(x: Tensor) -> Tensor:  # [N, blocks + 1, W, ...] -> [N, blocks, 2W, ...]
            return torch.cat([x[:, :-1], x[:, 1:]], dim=2)

        pair_keys, pair_values = with_previous(in_blocks(keys, size)), with_previous(in_blocks(values, size))
        pair_valid = with_previous(in_blocks(valid, size)).transpose(2, 3)  # [N, blocks, S, 2W]
        scores = torch.einsum("nbcshd,nbkshd->nbcshk", in_blocks(q, 0), pair_keys).flatten(1, 2)[:, :horizon]
        step, key = torch.arange(size, device=q.device)[:, None], torch.arange(2 * size, device=q.device)
        band = (key >= step) & (key < step + size)  # [W, 2W]
        scores_valid = band[:, None, :] & pair_valid[:, :, None]  # [N, blocks, W, S, 2W]
        scores_valid = scores_valid.flatten(1, 2)[:, :horizon].unsqueeze(-2)

        def weigh(weights: Tensor) -> Tensor:
            blocked = in_blocks(weights, 0)
            return torch.einsum("nbcshk,nbkshd->nbcshd", blocked, pair_values).flatten(1, 2)[:, :horizon]

        return scores, scores_valid, weigh

    def episode_distribution(self, params: Params, episodes: Episodes, memory: Memory | None = None) -> Independent:
        """Action distribution at every step of ``episodes`` (batch shape ``[T, B]``).

        Step ``t`` of slot ``b`` attends to the null entry, transitions ``t - W .. t - 1``
        of slot ``b`` with mask 1 and, if given, the memory row of its task.
        """
        num_tasks = episodes.num_tasks
        self._check_params(params, num_tasks)
        if episodes.observations.shape[-1] != self.obs_dim or episodes.actions.shape[-1] != self.act_dim:
            raise ValueError(
                f"episodes have obs/action widths {episodes.observations.shape[-1]}/{episodes.actions.shape[-1]}; "
                f"the policy expects {self.obs_dim}/{self.act_dim}"
            )
        observations = episodes.observations
        h, q = self._query(params, task_view(observations, num_tasks))
        window = None
        if self.window > 0:
            features = transition_features(observations, episodes.actions, episodes.rewards, episodes.next_observations)
            keys, values = self._keys_values(params, task_view(features, num_tasks))
            valid = task_view(episodes.mask.unsqueeze(-1), num_tasks).squeeze(-1) > 0
            window = self._window_batched(q, keys, values, valid)
        z = self._summary(params, q, window, self._memory(params, memory, num_tasks))
        return self._distribution(params, h, z)

    # ------------------------------------------------------------------ incremental (sampling)

    def start(self, params: Params, num_tasks: int, num_slots: int, memory: Memory | None = None) -> AttentionState:
        """Sampling state for ``num_slots`` fresh episodes: empty windows, memory keys/values computed once."""
        if num_tasks <= 0 or num_slots % num_tasks:
            raise ValueError(f"num_slots ({num_slots}) must be a multiple of num_tasks ({num_tasks})")
        self._check_params(params, num_tasks)
        reference = params["null_key"]
        shape = (num_slots, self.num_heads, self.window, self.head_dim)
        attention = self._memory(params, memory, num_tasks)
        if attention is not None:  # head-major in memory, so that every step's einsums read it without a copy
            keys, values = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (attention.keys, attention.values))
            attention = attention._replace(keys=keys, values=values)
        return AttentionState(
            num_tasks=num_tasks,
            keys=reference.new_zeros(shape),
            values=reference.new_zeros(shape),
            valid=torch.zeros(num_slots, self.window, dtype=torch.bool, device=reference.device),
            position=0,
            memory=attention,
        )

    def act(self, params: Params, obs: Tensor, state: AttentionState) -> Independent:
        """Action distribution for ``obs [B, obs_dim]`` (batch shape ``[B]``)."""
        num_tasks = state.num_tasks
        h, q = self._query(params, task_view(obs, num_tasks))  # q [N, S, H, d]
        window = None
        if self.window > 0:
            per_task = (num_tasks, -1, self.num_heads, self.window, self.head_dim)
            keys, values = state.keys.view(per_task), state.values.view(per_task)
            # A matrix-vector product per (slot, head) for the scores and a broadcast sum for the
            # weighing: both read the buffers as stored (an einsum would copy them every step).
            scores = (keys @ q.unsqueeze(-1)).squeeze(-1)  # [N, S, H, W]
            valid = state.valid.view(num_tasks, -1, 1, self.window)

            def weigh(weights: Tensor) -> Tensor:
                return (weights.unsqueeze(-1) * values).sum(-2)

            window = (scores, valid, weigh)
        z = self._summary(params, q, window, state.memory)
        return self._distribution(params, h, z)

    def observe(
        self, params: Params, state: AttentionState, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor
    ) -> AttentionState:
        """Embed each slot's new transition once and write it over the oldest entry of the slot's window.

        Shapes: ``obs, next_obs [B, obs_dim]``, ``action [B, act_dim]``, ``reward [B]``.
        Every slot's transition is marked valid: after a slot's episode ended,
        its window holds transitions past the end, which only affects its own
        masked steps; masking ended slots is the sampler's job. The buffers are
        updated in place (no copy of the window per step; earlier history is never
        re-encoded) and the returned state points at the next ring entry: pass
        only the returned state on. Sampling runs without gradients; for gradients
        through a rollout use :meth:`episode_distribution` (autograd rejects the
        in-place writes there with an error, never a wrong gradient).
        """
        if self.window == 0:
            return state
        features = transition_features(obs, action, reward.to(obs.dtype), next_obs)
        keys, values = self._keys_values(params, task_view(features, state.num_tasks))
        position, new = state.position, (-1, self.num_heads, self.head_dim)
        state.keys[:, :, position] = keys.reshape(new)
        state.values[:, :, position] = values.reshape(new)
        state.valid[:, position] = True
        return dataclasses.replace(state, position=(position + 1) % self.window)
