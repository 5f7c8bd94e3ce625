"""MAML with a TRPO outer step (Finn et al. 2017, "Model-Agnostic Meta-Learning
for Fast Adaptation of Deep Networks"; TRPO: Schulman et al. 2015).

Inner loop, per task: a policy-gradient (REINFORCE) loss with advantages from
GAE on a linear feature baseline fitted to that task's episodes, normalised;
``num_inner_steps`` gradient steps of size ``inner_lr``, or of step sizes meta-learned with the policy
(``learn_inner_lr``, Meta-SGD). ``inner_objective="lvc"``
swaps the log-probabilities for probability ratios to the sampling policy
(ProMP's low-variance curvature: the same inner step, another Hessian). The tasks are batched:
the parameters are expanded to a leading task axis and one backward pass gives
every task's inner gradient (``task_chunk`` tasks at a time).

Outer loop: TRPO on the post-adaptation surrogate, with the mean KL between the
old and new *adapted* policies on the post-adaptation states as the trust
region; conjugate gradient on Fisher-vector products through the inner loop
(second order unless ``first_order``: ``J^T F J``, the inner step's Jacobian
around the adapted policies' Fisher), and a backtracking line search that
restores the old parameters when no step is accepted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.distributions import kl_divergence
from torch.nn.utils import vector_to_parameters

from agents.policies import Policy, detached_gaussian, is_step_size, step_size_name
from metarl.baseline import fit_linear_baseline
from metarl.config import MAMLConfig
from metarl.episodes import Episodes, Memory, first_slots, gae, normalize
from metarl.optim import backtracking_line_search, conjugate_gradient
from metarl.params import Params, detached, expand_params, flatten, select_tasks

FULL_STEP_KL_RATIO_CAP = 1e6
"""Cap of the ``full_step_kl_ratio`` metric (also its value where the full step's KL is not finite)."""

CPU_TASK_CHUNK = 10
"""Tasks per batched computation on a CPU when ``task_chunk`` is 0: on half_cheetah_vel's 40 tasks
x 4,000 steps, the meta-gradient took 0.41 s and the 40-task conjugate gradient 9.3 s in chunks of
10, against 0.81 s and 18.8 s at once (docs/speed.md)."""


def policy_gradient_advantages(episodes: Episodes, gamma: float, gae_lambda: float) -> Tensor:
    """Normalised (per task) GAE advantages ``[T, B]`` on a per-task linear baseline."""
    rewards, mask = episodes.rewards.double(), episodes.mask.double()
    values = fit_linear_baseline(episodes.observations.double(), rewards, mask, episodes.num_tasks, gamma)
    advantages = gae(rewards, values, mask, gamma, gae_lambda)
    return normalize(advantages, mask, episodes.num_tasks).to(episodes.rewards.dtype)


def task_step_weights(mask: Tensor, num_tasks: int) -> Tensor:
    """``[T, B]`` weights that average each task's valid steps: ``mask`` over its task's valid-step count."""
    horizon = mask.shape[0]
    counts = mask.view(horizon, num_tasks, -1).sum(dim=(0, 2)).clamp_min(1.0)
    return (mask.view(horizon, num_tasks, -1) / counts[:, None]).view_as(mask)


def masked_task_mean(values: Tensor, mask: Tensor, num_tasks: int) -> Tensor:
    """Mean over each task's valid steps, ``[T, B] -> [num_tasks]``."""
    return (values * task_step_weights(mask, num_tasks)).view(values.shape[0], num_tasks, -1).sum(dim=(0, 2))


class MAMLTRPO:
    """Meta-learner: ``adapt`` per-task fast parameters, ``step`` the meta-parameters.

    Args:
        policy: the policy whose parameters are meta-trained (in place by ``step``).
        config: the knobs (:class:`MAMLConfig`).
    """

    def __init__(self, policy: Policy, config: MAMLConfig | None = None) -> None:
        self.policy = policy
        self.config = config or MAMLConfig()
        self.adapted = set(policy.adapted_names(self.config.adapt))
        learned = self.config.learn_inner_lr != "fixed"
        # adapted parameter -> the name of its learned step size
        self.step_sizes = {k: step_size_name(k) for k in self.adapted} if learned else {}
        has = {k for k in policy.params() if is_step_size(k)}
        if has != set(self.step_sizes.values()):
            raise ValueError(
                f"learn_inner_lr={self.config.learn_inner_lr!r} needs the policy's learned step sizes of the "
                f"{self.config.adapt!r} parameters and no others (Policy.learn_step_sizes; agents.factory.make_policy "
                f"adds them); the policy has {len(has)}"
            )

    # ------------------------------------------------------------ inner loop
    def advantages(self, episodes: Episodes) -> Tensor:
        """The inner loss's advantages of ``episodes``, ``[T, B]`` (they do not depend on the parameters)."""
        return policy_gradient_advantages(episodes, self.config.gamma, self.config.gae_lambda)

    def inner_loss(
        self,
        params: Params,
        episodes: Episodes,
        memory: Memory | None = None,
        advantages: Tensor | None = None,
        sampling_log_prob: Tensor | None = None,
    ) -> Tensor:
        """Per-task policy-gradient loss ``[num_tasks]`` (params shared or per task).

        ``inner_objective="reinforce"`` weighs the advantages by the log-probabilities; ``"lvc"`` by the
        probabilities over ``exp(sampling_log_prob)``, those under the policy that sampled the episodes
        (default: the log-probabilities' detached values). Where ``params`` sampled them that is ProMP's
        low-variance curvature (Rothfuss et al. 2019): 1 in value, the same gradient, and a Hessian that
        adds each step's ``A grad log pi grad log pi^T``, the term through which the meta-gradient credits
        the pre-adaptation policy for the episodes it samples; elsewhere an importance weight.
        """
        adv = self.advantages(episodes) if advantages is None else advantages
        log_prob = self.policy.episode_distribution(params, episodes, memory).log_prob(episodes.actions)
        if self.config.inner_objective == "lvc":
            reference = log_prob.detach() if sampling_log_prob is None else sampling_log_prob
            log_prob = torch.exp(log_prob - reference)
        return -masked_task_mean(log_prob * adv, episodes.mask, episodes.num_tasks)

    def adapt(
        self,
        episodes: Episodes,
        params: Params | None = None,
        create_graph: bool | None = None,
        memory: Memory | None = None,
        num_steps: int | None = None,
        advantages: Tensor | None = None,
        lr_scale: float = 1.0,
        sampling_log_prob: Tensor | None = None,
    ) -> Params:
        """Per-task fast parameters (leading ``num_tasks`` axis) after the inner steps.

        Args:
            episodes: each task's pre-adaptation episodes (task-major slots).
            params: the meta-parameters (default: the policy's), shared or
                already per task (further steps from earlier fast parameters).
            create_graph: keep the graph for the second-order meta-gradient
                (default: ``not first_order``).
            memory: context for the inner loss (attention policies).
            num_steps: inner steps (default: ``num_inner_steps``).
            advantages: :meth:`advantages` of ``episodes`` if already computed.
            lr_scale: the inner steps take this times their size (``inner_lr`` or the learned ones).
            sampling_log_prob: ``inner_objective="lvc"``: the log-probabilities of the episodes' actions
                under the policy that sampled them (default: under ``params``, detached).
        """
        params = self.policy.params() if params is None else params
        create_graph = (not self.config.first_order) if create_graph is None else create_graph
        steps = self.config.num_inner_steps if num_steps is None else num_steps
        per_task = self.policy.num_tasks_of(params, self.policy.params()) is not None
        pieces = []
        for tasks, part, part_memory, part_advantages, part_sampling in self._task_chunks(
            episodes, memory, advantages, sampling_log_prob
        ):
            fast = select_tasks(params, tasks) if per_task else expand_params(params, tasks.stop - tasks.start)
            pieces.append(
                self._inner_steps(
                    fast,
                    part,
                    part_memory,
                    part_advantages,
                    steps,
                    create_graph,
                    lr_scale=lr_scale,
                    sampling_log_prob=part_sampling,
                )
            )
        return {k: torch.cat([p[k] for p in pieces]) for k in params}

    def task_chunk(self, num_tasks: int) -> int:
        """Tasks per batched computation: ``task_chunk``, or (0) all on a GPU and 10 on a CPU."""
        if self.config.task_chunk:
            return self.config.task_chunk
        on_gpu = next(iter(self.policy.params().values())).device.type != "cpu"
        return num_tasks if on_gpu else CPU_TASK_CHUNK

    def _task_chunks(
        self,
        episodes: Episodes,
        memory: Memory | None,
        advantages: Tensor | None,
        sampling_log_prob: Tensor | None = None,
        num_tasks: int | None = None,
    ) -> Iterator[tuple[slice, Episodes, Memory | None, Tensor | None, Tensor | None]]:
        """``(tasks, episodes, memory, advantages, sampling_log_prob)`` of consecutive chunks of the first
        ``num_tasks`` tasks."""
        num_tasks = episodes.num_tasks if num_tasks is None else num_tasks
        chunk, per = self.task_chunk(num_tasks), episodes.episodes_per_task
        for start in range(0, num_tasks, chunk):
            tasks = slice(start, min(start + chunk, num_tasks))
            slots = slice(tasks.start * per, tasks.stop * per)
            yield (
                tasks,
                episodes.select(tasks),
                None if memory is None else memory.select(tasks),
                None if advantages is None else advantages[:, slots],
                None if sampling_log_prob is None else sampling_log_prob[:, slots],
            )

    def _inner_steps(
        self,
        fast: Params,
        episodes: Episodes,
        memory: Memory | None,
        advantages: Tensor | None,
        steps: int,
        create_graph: bool,
        trace: list[tuple[Params, Params]] | None = None,
        lr_scale: float = 1.0,
        sampling_log_prob: Tensor | None = None,
    ) -> Params:
        """``steps`` inner steps of one chunk of tasks from ``fast`` (per task), each parameter's of size
        ``lr_scale`` times ``inner_lr`` or its learned step size (in ``fast``, per task).

        With ``inner_objective="lvc"`` every step's loss weighs by the probability over ``sampling_log_prob``'s
        (default: under ``fast``, which sampled the episodes): 1 at the first step, an importance weight later.

        With ``trace`` (a list), each step appends its inputs (fresh aliases, so
        that a derivative with respect to them is the partial one of that step)
        and the inner gradient of every parameter but the step sizes with respect
        to them, kept with its graph: the Hessian-vector products of the inner
        loss that the Fisher-vector product's ``J v`` needs (:meth:`_fisher_vector_product`).
        """
        names = [k for k in fast if k in self.adapted]
        if advantages is None and steps > 0:
            advantages = self.advantages(episodes)
        if sampling_log_prob is None and self.config.inner_objective == "lvc" and steps > 0:
            sampling_log_prob = self.sampling_log_prob(detached(fast), episodes, memory)
        for _ in range(steps):
            if trace is not None:
                fast = {k: v.view_as(v) for k, v in fast.items()}
            # detached inputs (evaluation) become leaves so the inner gradient exists
            fast = {k: v if v.requires_grad or k not in names else v.detach().requires_grad_() for k, v in fast.items()}
            wrt = names if trace is None else [k for k in fast if not is_step_size(k)]
            with torch.enable_grad():
                loss = self.inner_loss(fast, episodes, memory, advantages, sampling_log_prob).sum()
                grads = torch.autograd.grad(loss, [fast[k] for k in wrt], create_graph=create_graph)
            gradient = dict(zip(wrt, grads, strict=True))
            if trace is not None:
                trace.append((fast, gradient))
            fast = {
                k: v - lr_scale * self._step_size(fast, k) * gradient[k] if k in names else v for k, v in fast.items()
            }
        return fast

    def _step_size(self, params: Params, name: str) -> Tensor | float:
        """The inner step size of adapted parameter ``name``: ``inner_lr``, or its learned one in ``params``
        (shaped to broadcast against the parameter, per task where ``params`` are)."""
        return params[self.step_sizes[name]] if self.step_sizes else self.config.inner_lr

    def sampling_log_prob(self, params: Params, episodes: Episodes, memory: Memory | None = None) -> Tensor:
        """Log-probabilities ``[T, B]`` of the episodes' actions under ``params`` (the policy that sampled them)."""
        with torch.no_grad():
            return self.policy.episode_distribution(params, episodes, memory).log_prob(episodes.actions)

    # ------------------------------------------------------------ outer loop
    def surrogate(self, dist: Any, post: Episodes, old_log_prob: Tensor, advantages: Tensor) -> Tensor:
        """Mean over tasks of the importance-weighted post-adaptation advantage under ``dist``."""
        ratio = torch.exp(dist.log_prob(post.actions) - old_log_prob)
        return masked_task_mean(ratio * advantages, post.mask, post.num_tasks).mean()

    def mean_kl(self, old_dist: Any, new_dist: Any, post: Episodes) -> Tensor:
        """Mean over tasks of the mean KL(old || new) on the valid post-adaptation steps."""
        return masked_task_mean(kl_divergence(old_dist, new_dist), post.mask, post.num_tasks).mean()

    def step(
        self,
        pre: Episodes,
        post: Episodes,
        memory: Memory | None = None,
        inner_steps: int | None = None,
        max_kl: float | None = None,
        fast: Params | None = None,
    ) -> dict[str, float]:
        """One TRPO step of the meta-parameters on the meta-objective.

        Args:
            pre: pre-adaptation episodes (the inner loop's data).
            post: episodes sampled with the adapted parameters ``adapt(pre)``.
            memory: the post-adaptation episodes' context (attention policies).
            inner_steps: inner steps between ``pre`` and ``post`` (default
                ``num_inner_steps``; 0: ``post`` adapted through the context alone).
            max_kl: this step's trust region (default ``max_kl``; the trainer passes the anneal's); the
                line search accepts up to ``line_search_kl_tolerance`` times it.
            fast: ``adapt(pre, num_steps=inner_steps)`` at the current parameters, with its graph,
                where the caller has it (the trainer, which sampled ``post`` with it); else adapted here.
        Returns:
            Metrics: ``surrogate_before``, ``surrogate_improvement``, ``kl`` (the trust region's:
            the adapted policies' plus ``pre_kl_weight`` times ``pre_kl``, the meta-policy's on ``pre``,
            reported where the weight is set), ``line_search_steps``, ``full_step_kl_ratio`` (the
            KL of the full step over ``max_kl``, which the quadratic model predicts as 1; capped at
            1e6), ``step_accepted``, ``grad_norm``, seconds per part.
        """
        cfg = self.config
        max_kl = cfg.max_kl if max_kl is None else max_kl
        params = self.policy.params()
        names = list(params)
        theta = [params[k] for k in names]
        timings: dict[str, float] = {}
        tic = time.perf_counter()
        advantages = self.advantages(post)
        steps = cfg.num_inner_steps if inner_steps is None else inner_steps
        # the inner loss's inputs; a context-only iteration (no inner step) needs neither
        pre_advantages = self.advantages(pre) if steps > 0 else None
        # lvc: the line search adapts from new parameters on the episodes the current ones sampled
        pre_sampling = self.sampling_log_prob(params, pre) if cfg.inner_objective == "lvc" and steps > 0 else None
        if fast is None:
            fast = self.adapt(
                pre, params, num_steps=inner_steps, advantages=pre_advantages, sampling_log_prob=pre_sampling
            )
        dist = self.policy.episode_distribution(fast, post, memory)
        old_dist = detached_gaussian(dist)
        old_log_prob = old_dist.log_prob(post.actions)
        surrogate = self.surrogate(dist, post, old_log_prob, advantages)
        loss = -surrogate
        grads = torch.autograd.grad(loss, theta)
        gradient = flatten(grads).detach()
        timings["seconds/meta_gradient"] = time.perf_counter() - tic

        tic = time.perf_counter()
        fvp = self._fisher_vector_product(pre, post, memory, names, inner_steps, pre_advantages, pre_sampling)
        direction, fisher_direction = conjugate_gradient(fvp, gradient, cfg.cg_iterations)
        shs = 0.5 * torch.dot(direction, fisher_direction)
        step_vector = direction / torch.sqrt(shs.clamp_min(1e-12) / max_kl)
        timings["seconds/conjugate_gradient"] = time.perf_counter() - tic

        tic = time.perf_counter()
        old_vector = flatten(theta).detach().clone()
        old_loss = float(loss.detach())
        results: dict[float, tuple[float, float]] = {}
        pre_kls: dict[float, float] = {0.0: 0.0}
        old_pre_dist = None
        if cfg.pre_kl_weight:
            with torch.no_grad():
                old_pre_dist = detached_gaussian(self.policy.episode_distribution(params, pre))

        def evaluate(fraction: float) -> tuple[float, float]:
            vector_to_parameters(old_vector - fraction * step_vector, theta)
            new_fast = detached(
                self.adapt(
                    pre,
                    params,
                    create_graph=False,
                    num_steps=inner_steps,
                    advantages=pre_advantages,
                    sampling_log_prob=pre_sampling,
                )
            )
            with torch.no_grad():
                new_dist = self.policy.episode_distribution(new_fast, post, memory)
                new_surrogate = self.surrogate(new_dist, post, old_log_prob, advantages)
                kl = float(self.mean_kl(old_dist, new_dist, post))
                if old_pre_dist is not None:
                    new_pre_dist = self.policy.episode_distribution(params, pre)
                    pre_kls[fraction] = float(self.mean_kl(old_pre_dist, new_pre_dist, pre))
                    kl += cfg.pre_kl_weight * pre_kls[fraction]
            results[fraction] = (old_loss + float(new_surrogate), kl)
            return results[fraction]

        fraction, tried = backtracking_line_search(
            evaluate, max_kl * cfg.line_search_kl_tolerance, cfg.line_search_steps, cfg.line_search_ratio
        )
        if fraction == 0.0:
            vector_to_parameters(old_vector, theta)
        timings["seconds/line_search"] = time.perf_counter() - tic
        improvement, kl = results[fraction] if fraction else (0.0, 0.0)
        full_step_kl = results[1.0][1]
        return {
            "surrogate_before": float(surrogate.detach()),
            "surrogate_improvement": improvement,
            "kl": kl,
            "line_search_steps": float(tried),
            # 1 where the quadratic model of the KL (the Fisher the step was scaled with) is exact
            "full_step_kl_ratio": min(full_step_kl / max_kl, FULL_STEP_KL_RATIO_CAP)
            if math.isfinite(full_step_kl)
            else FULL_STEP_KL_RATIO_CAP,
            "step_accepted": float(fraction > 0.0),
            "grad_norm": float(gradient.norm()),
            **({"pre_kl": pre_kls[fraction]} if cfg.pre_kl_weight else {}),
            **timings,
        }

    def _fisher_vector_product(
        self,
        pre: Episodes,
        post: Episodes,
        memory: Memory | None,
        names: list[str],
        inner_steps: int | None = None,
        pre_advantages: Tensor | None = None,
        pre_sampling: Tensor | None = None,
    ) -> Any:
        """``v -> (H_KL + damping) v``, the KL's Hessian at the current parameters.

        The adapted parameters are ``phi(theta)`` and the KL is zero, with a zero
        gradient, at the current ``phi``; so its Hessian with respect to ``theta``
        is exactly ``J^T F J``, with ``F`` the Hessian of the KL with respect to
        ``phi`` (the adapted policies' Fisher) and ``J = d phi / d theta``. Each
        product is computed in that order, per chunk of tasks:

        * ``J v``: with ``fvp_curvature="exact"``, step by step through the inner
          loop, ``u <- u - inner_lr H u`` on the adapted parameters, ``H u`` the
          inner loss's Hessian-vector product (a backward pass through the inner
          gradient's graph, which is symmetric); with ``"adapted"`` (or
          ``first_order``) ``J`` is the identity, which gives the Fisher of the
          adapted policies at a fraction of the cost; the line search still checks
          the exact KL. Learned step sizes ``a`` (``learn_inner_lr``) take each
          parameter's own in place of ``inner_lr`` and add ``- u_a g``, ``g`` the
          step's inner gradient, in either curvature (:meth:`_jacobian_step`);
        * ``F (J v)`` as a Gauss-Newton product: the policies' distributions are
          diagonal Gaussians, whose KL's Hessian at zero KL in each step's
          ``(loc, scale)`` is ``diag(1 / scale^2, 2 / scale^2)`` (its Fisher), and
          the KL's gradient in them is zero; so ``F = J_out^T D J_out`` exactly,
          ``J_out`` the Jacobian of every step's ``(loc, scale)`` with respect to
          ``phi``. ``J_out u`` is the backward pass, with respect to dummy
          cotangents ``w``, of the graph of ``J_out^T w``; ``J_out^T (D J_out u)``
          is an ordinary backward pass. This skips the second derivatives of the
          network that a backward pass through the KL's gradient computes (and
          multiplies by the zero gradient): about 0.4x (attention) and 0.5x (MLP) its
          time per product (docs/speed.md);
        * ``J^T (F J v)``: one backward pass from ``phi`` to ``theta``.

        Differentiating the KL's gradient through the inner loop instead (the
        same numbers) takes the inner loss's third derivatives: on 10 tasks x
        4,000 steps that cost 1.3x the time per product and 2.3x (MLP) to 2.4x
        (attention) to build (docs/speed.md).

        ``pre_sampling`` (lvc) is :meth:`step`'s log-probabilities of the pre-adaptation
        actions under the sampling policy, subsampled with the advantages (not recomputed).

        With ``pre_kl_weight`` the trust region also holds the meta-policy's own KL
        on the pre-adaptation episodes: each chunk adds that weight times its
        Fisher there (the same Gauss-Newton product, at ``theta``, no inner loop).

        ``fvp_tasks`` restricts it to the first tasks (0: all) and ``fvp_episodes``
        to each task's first episodes, before and after adaptation. The graphs are
        built once per chunk of tasks (:meth:`task_chunk`), each chunk's KL
        weighted by its share of the tasks. ``names`` must be every parameter of
        the policy (as :meth:`step` passes them): ``J v`` needs the inner loss's
        Hessian over all of them.
        """
        cfg = self.config
        params = self.policy.params()
        theta = [params[k] for k in names]
        num_tasks = min(cfg.fvp_tasks or pre.num_tasks, pre.num_tasks)
        steps = cfg.num_inner_steps if inner_steps is None else inner_steps
        exact = cfg.fvp_curvature == "exact" and not cfg.first_order
        # J v takes each step's inputs and inner gradient: through H (exact) and through learned step sizes
        traced = exact or bool(self.step_sizes)
        loss_names = [k for k in names if not is_step_size(k)]
        # per chunk: (number of tasks, inner-loop trace, adapted parameters, the adapted policies' Fisher on the
        # post-adaptation episodes, the meta-policy's on the pre-adaptation ones where pre_kl_weight counts it)
        chunks = []
        # memory is the post-adaptation episodes' context; the inner loss (on pre) has none
        for tasks, part_pre, part_memory, part_advantages, part_sampling in self._task_chunks(
            pre, memory, pre_advantages, pre_sampling, num_tasks
        ):
            part_post, count, size = post.select(tasks), cfg.fvp_episodes, tasks.stop - tasks.start
            if count and count < part_pre.episodes_per_task:
                if part_advantages is not None:
                    part_advantages = first_slots(part_advantages, part_pre.num_tasks, count)
                if part_sampling is not None:
                    part_sampling = first_slots(part_sampling, part_pre.num_tasks, count)
                part_pre, part_post = part_pre.first(count), part_post.first(count)
            trace: list[tuple[Params, Params]] | None = [] if traced else None
            fast = self._inner_steps(
                expand_params(params, size),
                part_pre,
                None,
                part_advantages,
                steps,
                exact,
                trace,
                sampling_log_prob=part_sampling,
            )
            post_fisher = _GaussNewton(self.policy, fast, names, part_post, part_memory, 1.0 / num_tasks)
            pre_fisher = (
                _GaussNewton(self.policy, params, names, part_pre, None, cfg.pre_kl_weight / num_tasks)
                if cfg.pre_kl_weight
                else None
            )
            chunks.append((size, trace or [], fast, post_fisher, pre_fisher))

        def product(vector: Tensor) -> Tensor:
            total = cfg.cg_damping * vector
            pieces = dict(zip(names, vector.split([p.numel() for p in theta]), strict=True))
            for size, steps_trace, fast, post_fisher, pre_fisher in chunks:
                u = {k: pieces[k].view_as(params[k]).expand(size, *params[k].shape) for k in names}
                for inputs, gradient in steps_trace:  # J v
                    u = self._jacobian_step(u, inputs, gradient, loss_names, exact)
                total = total + flatten(_backward([fast[k] for k in names], theta, post_fisher.product(u)))
                if pre_fisher is not None:
                    total = total + flatten(pre_fisher.product({k: pieces[k].view_as(params[k]) for k in names}))
            return total

        return product

    def _jacobian_step(self, u: Params, inputs: Params, gradient: Params, loss_names: list[str], exact: bool) -> Params:
        """One inner step's Jacobian times ``u`` (per task): ``phi = theta - a * g(theta)`` moves by
        ``u - a H u`` (``H u`` the inner loss's Hessian-vector product, a backward pass through the
        gradient's graph; only where ``exact``) ``- u_a g`` (where the step sizes ``a`` are learned)."""
        out = dict(u)
        if exact:
            products = _backward(
                [gradient[k] for k in loss_names], [inputs[k] for k in loss_names], [u[k] for k in loss_names]
            )
            sizes = detached(inputs)
            for k, hu in zip(loss_names, products, strict=True):
                if k in self.adapted:
                    out[k] = out[k] - self._step_size(sizes, k) * hu
        for k, size in self.step_sizes.items():
            out[k] = out[k] - u[size] * gradient[k].detach()
        return out


def _backward(outputs: list[Tensor], inputs: list[Tensor], vectors: list[Tensor]) -> list[Tensor]:
    """The vector-Jacobian products of ``outputs`` with ``vectors`` in ``inputs`` (zeros where unused), graph kept."""
    grads = torch.autograd.grad(outputs, inputs, vectors, retain_graph=True, allow_unused=True)
    return [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs, strict=True)]


class _GaussNewton:
    """``u -> F u``: the Hessian, at zero KL, of ``weight`` times the per-task mean KL (summed over tasks) between
    the policy at ``params`` and a perturbation of it, on ``episodes``, as ``J_out^T D J_out``.

    ``J_out`` is the Jacobian of every step's ``(loc, scale)`` with respect to ``params`` and ``D``
    the diagonal Gaussian's Fisher in them, ``diag(1 / scale^2, 2 / scale^2)``, per action dimension
    and step. ``J_out u`` is the backward pass, with respect to dummy cotangents ``w``, of the graph
    of ``J_out^T w`` (built here, once); ``J_out^T (D J_out u)`` an ordinary backward pass.
    """

    def __init__(
        self, policy: Policy, params: Params, names: list[str], episodes: Episodes, memory: Memory | None, weight: float
    ) -> None:
        self.names = names
        self.leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        normal = policy.episode_distribution(self.leaves, episodes, memory).base_dist
        self.outputs = [normal.loc, normal.scale]
        # the KL's Hessian in (loc, scale), per action dimension and step, weighted as in mean_kl
        step_weight = (weight * task_step_weights(episodes.mask, episodes.num_tasks)).unsqueeze(-1)
        inverse_variance = normal.scale.detach().pow(-2)
        self.fisher = [step_weight * inverse_variance, 2.0 * step_weight * inverse_variance]
        # J_out^T w, linear in the dummy cotangents w: its backward pass with respect to w is J_out u
        self.dummies = [torch.zeros_like(o, requires_grad=True) for o in self.outputs]
        self.pulled = torch.autograd.grad(
            self.outputs, [self.leaves[k] for k in names], self.dummies, create_graph=True, allow_unused=True
        )

    def product(self, u: Params) -> list[Tensor]:
        """``F u`` per parameter (in ``names`` order), ``u`` shaped as the parameters."""
        used = [(g, u[k]) for g, k in zip(self.pulled, self.names, strict=True) if g is not None]
        out_u = _backward([g for g, _ in used], self.dummies, [x for _, x in used])  # J_out u
        weighted = [f * x for f, x in zip(self.fisher, out_u, strict=True)]
        return _backward(self.outputs, [self.leaves[k] for k in self.names], weighted)
