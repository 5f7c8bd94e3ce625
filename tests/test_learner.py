"""MAML-TRPO and its parts, checked by value in float64 (DESIGN.md, "Tests a meta-RL library must have").

- the second-order meta-gradient equals central finite differences (tanh and
  ReLU hidden layers); the
  first-order one differs, and equals finite differences with the inner
  gradient held fixed; the LVC inner objective gives the same inner step and
  adds each step's score outer product to the inner Hessian; ``MAMLTRPO.step``
  reports the norm of that gradient;
- adaptation batched over tasks (any ``task_chunk``) equals a Python loop;
- the Fisher-vector product equals the explicit Hessian of the KL (exact and
  adapted curvature, built in chunks of tasks, over two inner steps that adapt
  part of the parameters, with the LVC inner objective, of a subsample of tasks and episodes); the full
  step's KL over ``max_kl`` is 1 with the Fisher of every
  task, and ``benchmark.py fisher`` compares subsamples on one step;
- conjugate gradient against ``torch.linalg.solve``; the line search, and the
  restore of the old parameters when no step is accepted;
- returns, GAE and the linear baseline against loop references and known answers;
- ``build_memory``; the sampling loop (reproducible, shapes, rewards, per-task params).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

import envs
from agents import factory
from agents.attention import AttentionPolicy
from agents.maml_trpo import (
    FULL_STEP_KL_RATIO_CAP,
    MAMLTRPO,
    expand_params,
    flatten,
    policy_gradient_advantages,
    task_step_weights,
)
from agents.policies import GaussianMLPPolicy, Params, Policy, is_step_size
from metarl.baseline import baseline_features, fit_linear_baseline
from metarl.config import MAMLConfig, TrainConfig
from metarl.episodes import Episodes, Memory, build_memory, discounted_returns, gae, transition_features
from metarl.optim import backtracking_line_search, conjugate_gradient
from metarl.sampling import sample

ROOT = Path(__file__).resolve().parents[1]
OBS_DIM, ACT_DIM = 3, 2
DTYPE = torch.float64
POLICY_KINDS = ("mlp", "attention")


# ---------------------------------------------------------------------------- helpers


def make_policy(kind: str = "mlp", seed: int = 0) -> Policy:
    """A tiny float64 policy with every parameter (biases, log_std) randomised from ``seed``."""
    torch.manual_seed(seed)  # nn.Linear's own initialisation; perturbed below from an explicit generator
    if kind in ("mlp", "mlp_relu"):
        activation = "relu" if kind == "mlp_relu" else "tanh"
        policy: Policy = GaussianMLPPolicy(OBS_DIM, ACT_DIM, hidden_sizes=(5,), activation=activation)
    else:
        policy = AttentionPolicy(OBS_DIM, ACT_DIM, hidden_sizes=(4,), embed_dim=4, num_heads=2, window=2)
    policy = policy.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in policy.parameters():
            value.add_(0.3 * torch.randn(value.shape, generator=generator, dtype=value.dtype))
    return policy


def random_episodes(
    num_tasks: int, per_task: int, horizon: int, seed: int, lengths: list[int] | None = None
) -> Episodes:
    """Random float64 episodes; slot ``b`` lasts ``lengths[b]`` steps (default: random, some end early)."""
    generator = torch.Generator().manual_seed(seed)
    slots = num_tasks * per_task
    if lengths is None:
        lengths = torch.randint(1, horizon + 1, (slots,), generator=generator).tolist()
        lengths[0] = horizon  # at least one full episode
    mask = (torch.arange(horizon).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)).to(DTYPE)
    obs = torch.randn(horizon + 1, slots, OBS_DIM, generator=generator, dtype=DTYPE)
    actions = torch.randn(horizon, slots, ACT_DIM, generator=generator, dtype=DTYPE)
    rewards = torch.randn(horizon, slots, generator=generator, dtype=DTYPE) * mask
    return Episodes(obs[:-1], actions, rewards, obs[1:], mask, num_tasks)


def random_memory(num_tasks: int, size: int, seed: int) -> Memory:
    generator = torch.Generator().manual_seed(seed)
    width = 2 * OBS_DIM + ACT_DIM + 1
    mask = torch.ones(num_tasks, size, dtype=DTYPE)
    mask[-1, size // 2 :] = 0.0  # the last task's memory is half empty
    return Memory(torch.randn(num_tasks, size, width, generator=generator, dtype=DTYPE) * mask.unsqueeze(-1), mask)


def leaf_params(policy: Policy) -> Params:
    """Detached copies of the policy's parameters that require grad (a functional θ)."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in policy.params().items()}


class Problem:
    """A tiny meta-learning problem: policy, learner, pre/post episodes (2 tasks) and memory."""

    def __init__(self, kind: str = "mlp", inner_lr: float = 0.5, **config: object) -> None:
        self.kind = kind
        self.policy = make_policy(kind)
        shape = str(config.get("learn_inner_lr", "fixed"))
        if shape != "fixed":  # learned step sizes, spread around inner_lr so that each one matters
            self.policy.learn_step_sizes(str(config.get("adapt", "all")), inner_lr, shape)
            generator = torch.Generator().manual_seed(11)
            with torch.no_grad():
                for name, value in self.policy.params().items():
                    if is_step_size(name):
                        value.mul_(0.5 + torch.rand(value.shape, generator=generator, dtype=value.dtype))
        self.learner = MAMLTRPO(self.policy, MAMLConfig(inner_lr=inner_lr, **config))  # type: ignore[arg-type]
        self.pre = random_episodes(2, 3, 7, seed=1)
        self.post = random_episodes(2, 3, 7, seed=2)
        self.memory = random_memory(2, 5, seed=3) if self.policy.uses_context else None
        self.names = list(self.policy.params())
        self.shapes = [self.policy.params()[k].shape for k in self.names]

    def unflatten(self, vector: Tensor) -> Params:
        """A parameter dict whose tensors are views of ``vector`` (gradients flow back to it)."""
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = int(torch.Size(shape).numel())
            out[name] = vector[start : start + size].view(shape)
            start += size
        return out

    def theta(self) -> Tensor:
        return flatten([self.policy.params()[k] for k in self.names]).detach().clone()

    def objective(self, params: Params, create_graph: bool | None = True, learner: MAMLTRPO | None = None) -> Tensor:
        """J(θ) = mean over tasks of the post-adaptation REINFORCE loss of ``adapt(θ)``."""
        learner = learner or self.learner
        fast = learner.adapt(self.pre, params, create_graph=create_graph, memory=self.memory)
        return learner.inner_loss(fast, self.post, self.memory).mean()

    def objective_of_vector(self, vector: Tensor, create_graph: bool = True) -> Tensor:
        with torch.enable_grad():
            leaf = vector.detach().clone().requires_grad_(True)
            return self.objective(self.unflatten(leaf), create_graph=create_graph).detach()


def central_difference(f: Callable[[Tensor], Tensor], x: Tensor, direction: Tensor, h: float = 1e-5) -> float:
    return float((f(x + h * direction) - f(x - h * direction)) / (2 * h))


# ---------------------------------------------------------------------------- 1. meta-gradient


@pytest.mark.parametrize(
    ("kind", "step_sizes"),
    [
        *[(kind, "fixed") for kind in (*POLICY_KINDS, "mlp_relu")],
        # Meta-SGD: the step sizes' gradient too (their coordinates are among those checked)
        ("mlp", "tensor"),
        ("mlp", "element"),
        ("attention", "element"),
    ],
)
def test_second_order_meta_gradient_equals_finite_differences(kind: str, step_sizes: str) -> None:
    problem = Problem(kind, learn_inner_lr=step_sizes)
    theta = problem.theta()
    leaf = theta.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(problem.objective(problem.unflatten(leaf), create_graph=True), leaf)
    assert torch.isfinite(gradient).all()
    learned = problem.unflatten(gradient)
    for name in (k for k in problem.names if is_step_size(k)):  # every learned step size shapes the objective
        assert float(learned[name].abs().min()) > 0.0, name

    # Coordinates: the largest |g| of every parameter tensor, plus a random direction.
    coordinates, start = [], 0
    for shape in problem.shapes:
        size = int(torch.Size(shape).numel())
        coordinates.append(start + int(gradient[start : start + size].abs().argmax()))
        start += size
    directions = [torch.nn.functional.one_hot(torch.tensor(i), theta.numel()).to(DTYPE) for i in coordinates]
    directions.append(torch.randn(theta.numel(), generator=torch.Generator().manual_seed(5), dtype=DTYPE))
    for direction in directions:
        analytic = float(gradient @ direction)
        numeric = central_difference(problem.objective_of_vector, theta, direction)
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), (analytic, numeric)


def test_learned_step_sizes_need_the_policys_and_step_each_parameter_by_its_own() -> None:
    """``learn_inner_lr``: the learner refuses a policy without (or with other) step sizes; the inner step
    moves each adapted parameter by its own sizes, and the policy's other outputs ignore them."""
    policy = make_policy("mlp")
    with pytest.raises(ValueError, match="learned step sizes"):
        MAMLTRPO(policy, MAMLConfig(learn_inner_lr="tensor"))
    policy.learn_step_sizes("all", 0.5, "element")
    with pytest.raises(ValueError, match="learned step sizes"):
        MAMLTRPO(policy, MAMLConfig())
    with pytest.raises(ValueError, match="already has"):
        policy.learn_step_sizes("all", 0.5, "tensor")
    with pytest.raises(ValueError, match="valid: tensor, element"):
        make_policy("mlp").learn_step_sizes("all", 0.5, "fixed")
    problem = Problem("attention", learn_inner_lr="element", adapt="head")
    learner, pre = problem.learner, problem.pre
    theta = leaf_params(problem.policy)
    names = sorted(learner.step_sizes)
    assert names and not any(problem.policy.is_context_parameter(k) for k in names)
    fast = learner.adapt(pre, theta, create_graph=False)
    first_task_loss = learner.inner_loss(expand_params(theta, pre.num_tasks), pre)[0]
    for name, value in fast.items():
        if name in learner.step_sizes:  # task 0: its own inner loss's gradient, times each element's size
            (gradient,) = torch.autograd.grad(first_task_loss, theta[name], retain_graph=True)
            expected = theta[name] - theta[learner.step_sizes[name]] * gradient
            torch.testing.assert_close(value[0], expected.detach(), rtol=1e-10, atol=1e-12)
        else:  # context encoder and the step sizes themselves: not adapted
            assert torch.equal(value[0], theta[name].detach())
    params = problem.policy.params()
    with torch.no_grad():
        before = problem.policy.episode_distribution(params, pre).mean
        for name in names:
            params[learner.step_sizes[name]].mul_(3.0)
        assert torch.equal(problem.policy.episode_distribution(params, pre).mean, before)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_first_order_meta_gradient_differs_and_matches_fixed_inner_gradient(kind: str) -> None:
    problem = Problem(kind)
    first = MAMLTRPO(problem.policy, MAMLConfig(inner_lr=problem.learner.config.inner_lr, first_order=True))
    theta = problem.theta()

    leaf = theta.clone().requires_grad_(True)
    (second_order,) = torch.autograd.grad(problem.objective(problem.unflatten(leaf), create_graph=True), leaf)
    leaf = theta.clone().requires_grad_(True)
    (first_order,) = torch.autograd.grad(problem.objective(problem.unflatten(leaf), None, learner=first), leaf)

    relative = float((second_order - first_order).norm() / second_order.norm())
    assert relative > 1e-2, f"first- and second-order meta-gradients agree ({relative:.2e}): no second-order term?"

    # First order == the exact gradient of J with each task's inner gradient frozen at θ.
    lr = first.config.inner_lr
    with torch.enable_grad():
        frozen_fast = first.adapt(problem.pre, leaf_params(problem.policy), create_graph=False, memory=problem.memory)
    inner_gradient = {k: ((problem.policy.params()[k].detach() - v) / lr).detach() for k, v in frozen_fast.items()}

    def frozen_objective(vector: Tensor) -> Tensor:
        params = expand_params(problem.unflatten(vector), problem.pre.num_tasks)
        fast = {k: v - lr * inner_gradient[k] for k, v in params.items()}
        return first.inner_loss(fast, problem.post, problem.memory).mean()

    for seed in (6, 7, 8):
        direction = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
        analytic = float(first_order @ direction)
        numeric = central_difference(frozen_objective, theta, direction)
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), (analytic, numeric)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_lvc_inner_objective_adds_the_score_outer_product_to_the_inner_hessian(kind: str) -> None:
    """``inner_objective="lvc"``: the same inner step as REINFORCE, and a meta-gradient ``(I - lr H)^T g`` whose
    inner Hessian ``H`` is REINFORCE's minus each step's weighted ``A s s^T`` (``s`` its score at θ, ProMP's LVC)."""
    problem = Problem(kind)
    reinforce, policy, pre, memory = problem.learner, problem.policy, problem.pre, problem.memory
    lr = reinforce.config.inner_lr
    lvc = MAMLTRPO(policy, MAMLConfig(inner_lr=lr, inner_objective="lvc"))
    theta = problem.theta()

    def adapted_and_meta_gradient(learner: MAMLTRPO) -> tuple[Params, Tensor]:
        leaf = theta.clone().requires_grad_(True)
        fast = learner.adapt(pre, problem.unflatten(leaf), create_graph=True, memory=memory)
        (gradient,) = torch.autograd.grad(reinforce.inner_loss(fast, problem.post, memory).mean(), leaf)
        return {k: v.detach() for k, v in fast.items()}, gradient

    reinforce_fast, reinforce_gradient = adapted_and_meta_gradient(reinforce)
    lvc_fast, lvc_gradient = adapted_and_meta_gradient(lvc)
    for name, value in reinforce_fast.items():
        torch.testing.assert_close(lvc_fast[name], value, rtol=0, atol=1e-12)

    # g_i: the post-adaptation loss's gradient in task i's adapted parameters; s: every pre step's score at θ
    leaves = {k: v.clone().requires_grad_(True) for k, v in lvc_fast.items()}
    post_loss = reinforce.inner_loss(leaves, problem.post, memory).mean()
    post_gradient = torch.autograd.grad(post_loss, list(leaves.values()))
    per_task = torch.cat([g.flatten(1) for g in post_gradient], dim=1)  # [num_tasks, P]

    def log_probs(vector: Tensor) -> Tensor:
        return policy.episode_distribution(problem.unflatten(vector), pre, memory).log_prob(pre.actions)

    scores = torch.autograd.functional.jacobian(log_probs, theta, vectorize=True)  # [T, B, P]
    weighted = task_step_weights(pre.mask, pre.num_tasks) * reinforce.advantages(pre)  # [T, B]
    task_of_slot = torch.arange(pre.num_slots) // pre.episodes_per_task
    projections = (scores * per_task[task_of_slot]).sum(-1)  # s_t . g_(task of t)
    expected = lr * ((weighted * projections).unsqueeze(-1) * scores).sum(dim=(0, 1))
    torch.testing.assert_close(lvc_gradient - reinforce_gradient, expected, rtol=1e-9, atol=1e-12)
    assert float(expected.norm()) > 1e-2 * float(reinforce_gradient.norm())  # the extra term is not negligible


@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_lvc_meta_gradient_is_the_gradient_of_adapting_on_the_sampling_policys_episodes(
    kind: str, num_inner_steps: int
) -> None:
    """The LVC meta-gradient differentiates a function, which the line search evaluates: the objective after
    adapting θ on episodes sampled by a fixed policy, each step weighing by the importance ratio to it."""
    problem = Problem(kind, inner_lr=0.5, inner_objective="lvc", num_inner_steps=num_inner_steps)
    learner, pre, memory = problem.learner, problem.pre, problem.memory
    theta = problem.theta()
    sampling = learner.sampling_log_prob(problem.policy.params(), pre, memory)
    reinforce = MAMLTRPO(problem.policy, MAMLConfig())

    def objective(vector: Tensor, create_graph: bool, sampling: Tensor | None = sampling) -> Tensor:
        params = problem.unflatten(vector)
        fast = learner.adapt(pre, params, create_graph=create_graph, memory=memory, sampling_log_prob=sampling)
        return reinforce.inner_loss(fast, problem.post, memory).mean()

    leaf = theta.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective(leaf, create_graph=True), leaf)
    (default,) = torch.autograd.grad(objective(leaf, create_graph=True, sampling=None), leaf)
    torch.testing.assert_close(gradient, default, rtol=1e-9, atol=1e-12)  # the sampling policy is θ's by default

    def value(vector: Tensor) -> Tensor:
        with torch.enable_grad():
            return objective(vector.detach().clone().requires_grad_(True), create_graph=False).detach()

    for seed in (4, 5):
        direction = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
        analytic = float(gradient @ direction)
        numeric = central_difference(value, theta, direction)
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), (analytic, numeric)


def test_lvc_line_search_adapts_new_parameters_on_the_old_policys_episodes() -> None:
    """With ``inner_objective="lvc"``, ``step``'s line search scores the new parameters adapted with the
    importance weight to the policy that sampled ``pre`` (the function its meta-gradient differentiates)."""
    problem = Problem("mlp", inner_lr=0.5, inner_objective="lvc")
    learner, policy, pre, post = problem.learner, problem.policy, problem.pre, problem.post
    sampling = learner.sampling_log_prob(policy.params(), pre)
    advantages = learner.advantages(post)
    old_fast = {k: v.detach() for k, v in learner.adapt(pre, create_graph=False).items()}
    old_log_prob = policy.episode_distribution(old_fast, post).log_prob(post.actions).detach()
    metrics = learner.step(pre, post)
    assert metrics["step_accepted"] == 1.0

    def improvement(sampling_log_prob: Tensor | None) -> float:
        fast = learner.adapt(pre, create_graph=False, sampling_log_prob=sampling_log_prob)
        fast = {k: v.detach() for k, v in fast.items()}
        with torch.no_grad():
            return float(learner.surrogate(policy.episode_distribution(fast, post), post, old_log_prob, advantages))

    assert metrics["surrogate_improvement"] == pytest.approx(improvement(sampling), rel=1e-9)
    assert abs(improvement(None) - improvement(sampling)) > 1e-3 * abs(improvement(sampling))


@pytest.mark.parametrize("first_order", [False, True])
def test_step_reports_the_meta_gradient(first_order: bool) -> None:
    """``step``'s ``grad_norm`` is the norm of dJ/dθ at the parameters before the step (J = -surrogate)."""
    problem = Problem("mlp", inner_lr=0.1, first_order=first_order)
    leaf = problem.theta().requires_grad_(True)
    create_graph = None if first_order else True
    (gradient,) = torch.autograd.grad(problem.objective(problem.unflatten(leaf), create_graph), leaf)
    metrics = problem.learner.step(problem.pre, problem.post, problem.memory)
    assert metrics["grad_norm"] == pytest.approx(float(gradient.norm()), rel=1e-10)
    assert metrics["surrogate_before"] == pytest.approx(0.0, abs=1e-12)  # advantages are normalised per task


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_step_with_the_callers_adapted_parameters_equals_adapting_in_the_step(kind: str) -> None:
    """The trainer passes its ``adapt(pre)`` (with the graph) to ``step``: the same step as adapting there."""
    problem = Problem(kind, inner_lr=0.1)
    learner, policy = problem.learner, problem.policy
    before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    plain = learner.step(problem.pre, problem.post, problem.memory)
    after = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    policy.load_state_dict(before)
    fast = learner.adapt(problem.pre)
    given = learner.step(problem.pre, problem.post, problem.memory, fast=fast)
    assert plain["step_accepted"] == 1.0
    for name in ("grad_norm", "surrogate_improvement", "kl", "line_search_steps"):
        assert given[name] == pytest.approx(plain[name], rel=1e-12), name
    for name, value in policy.state_dict().items():
        torch.testing.assert_close(value, after[name], rtol=1e-12, atol=0)
    # and the step really differentiates the given parameters: adapted on other data, another meta-gradient
    policy.load_state_dict(before)
    other = learner.step(problem.pre, problem.post, problem.memory, fast=learner.adapt(problem.post))
    assert abs(other["grad_norm"] - plain["grad_norm"]) > 1e-6 * plain["grad_norm"]


def test_relu_reaches_both_policies_from_the_config() -> None:
    """``--activation relu`` builds ReLU hidden layers (the MAML paper's policy); a bad name lists the valid ones."""
    for kind in POLICY_KINDS:
        config = TrainConfig(env="point_nav", policy=kind, activation="relu")
        assert factory.make_policy(config, OBS_DIM, ACT_DIM).activation is torch.relu
    policy = make_policy("mlp_relu")
    params = policy.params()
    obs = torch.randn(7, OBS_DIM, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    hidden = torch.relu(obs @ params["layers.0.weight"].T + params["layers.0.bias"])
    expected = hidden @ params["layers.1.weight"].T + params["layers.1.bias"]
    torch.testing.assert_close(policy.mean(params, obs), expected, rtol=1e-12, atol=1e-12)
    assert (hidden == 0).any() and (hidden > 0).any()  # the kink is exercised
    with pytest.raises(ValueError, match="gelu.*tanh, relu"):
        GaussianMLPPolicy(OBS_DIM, ACT_DIM, activation="gelu")


# ---------------------------------------------------------------------------- 2. batched == loop


@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_batched_adaptation_equals_a_loop_over_tasks(kind: str, num_inner_steps: int) -> None:
    policy = make_policy(kind)
    pre = random_episodes(3, 2, 6, seed=11)
    memory = random_memory(3, 4, seed=12) if policy.uses_context else None
    params = leaf_params(policy)
    results = {}
    for chunk in (0, 1, 2):
        learner = MAMLTRPO(policy, MAMLConfig(inner_lr=0.3, num_inner_steps=num_inner_steps, task_chunk=chunk))
        for create_graph in (False, True):
            fast = learner.adapt(pre, params, create_graph=create_graph, memory=memory)
            results[chunk, create_graph] = {k: v.detach() for k, v in fast.items()}
            assert all(v.shape == (3, *params[k].shape) for k, v in fast.items())

    # The reference: one task at a time, shared (not per-task) parameters, an explicit gradient step.
    learner = MAMLTRPO(policy, MAMLConfig(inner_lr=0.3, num_inner_steps=num_inner_steps))
    names = list(params)
    for task in range(3):
        episodes = pre.task(task)
        task_memory = (
            None if memory is None else Memory(memory.transitions[task : task + 1], memory.mask[task : task + 1])
        )
        fast = dict(params)
        for _ in range(num_inner_steps):
            loss = learner.inner_loss(fast, episodes, task_memory).sum()
            grads = torch.autograd.grad(loss, [fast[k] for k in names])
            fast = {k: fast[k] - 0.3 * g for k, g in zip(names, grads, strict=True)}
        for key, batched in results.items():
            for name in names:
                torch.testing.assert_close(
                    batched[name][task], fast[name].detach(), rtol=0, atol=1e-10, msg=f"{key} {name}"
                )


# ---------------------------------------------------------------------------- 3. Fisher-vector product


@pytest.mark.parametrize(
    (
        "kind",
        "curvature",
        "first_order",
        "num_inner_steps",
        "task_chunk",
        "adapt",
        "objective",
        "pre_kl_weight",
        "step_sizes",
    ),
    [
        ("mlp", "exact", False, 1, 0, "all", "reinforce", 0.0, "fixed"),
        (
            "mlp",
            "exact",
            False,
            1,
            1,
            "all",
            "reinforce",
            0.0,
            "fixed",
        ),  # one chunk per task: the chunks' products add up
        ("mlp", "exact", False, 2, 0, "all", "reinforce", 0.0, "fixed"),
        # ReLU: the inner loss's Hessian has no activation term
        ("mlp_relu", "exact", False, 2, 0, "all", "reinforce", 0.0, "fixed"),
        ("mlp", "adapted", False, 1, 0, "all", "reinforce", 0.0, "fixed"),
        # first order: the exact curvature falls back to the adapted one
        ("mlp", "exact", True, 1, 0, "all", "reinforce", 0.0, "fixed"),
        ("attention", "exact", False, 1, 0, "all", "reinforce", 0.0, "fixed"),
        ("attention", "exact", False, 1, 1, "all", "reinforce", 0.0, "fixed"),
        ("attention", "adapted", False, 1, 0, "all", "reinforce", 0.0, "fixed"),
        # the context encoder is not adapted but shapes every step's inner gradient
        ("attention", "exact", False, 2, 0, "head", "reinforce", 0.0, "fixed"),
        ("attention", "exact", False, 2, 0, "context", "reinforce", 0.0, "fixed"),
        # LVC: J v through the inner loss's LVC Hessian
        ("mlp", "exact", False, 2, 0, "all", "lvc", 0.0, "fixed"),
        ("attention", "exact", False, 1, 1, "all", "lvc", 0.0, "fixed"),
        # the meta-policy's own KL on pre in the trust region: its Fisher added to each chunk's product
        ("mlp", "exact", False, 1, 1, "all", "reinforce", 0.7, "fixed"),
        ("attention", "exact", False, 2, 0, "head", "reinforce", 0.7, "fixed"),
        # learned step sizes (Meta-SGD): J v adds - u_a g, in the exact and the adapted curvature
        ("mlp", "exact", False, 2, 0, "all", "reinforce", 0.0, "element"),
        ("mlp", "adapted", False, 1, 0, "all", "reinforce", 0.0, "element"),
        ("mlp", "exact", True, 1, 0, "all", "reinforce", 0.0, "tensor"),
        ("attention", "exact", False, 1, 1, "head", "lvc", 0.0, "tensor"),
        ("attention", "exact", False, 2, 0, "context", "reinforce", 0.7, "element"),
    ],
)
def test_fisher_vector_product_equals_kl_hessian(
    kind: str,
    curvature: str,
    first_order: bool,
    num_inner_steps: int,
    task_chunk: int,
    adapt: str,
    objective: str,
    pre_kl_weight: float,
    step_sizes: str,
) -> None:
    problem = Problem(
        kind,
        inner_lr=0.3,
        fvp_curvature=curvature,
        first_order=first_order,
        num_inner_steps=num_inner_steps,
        cg_damping=1e-3,
        task_chunk=task_chunk,
        adapt=adapt,
        inner_objective=objective,
        pre_kl_weight=pre_kl_weight,
        learn_inner_lr=step_sizes,
    )
    learner, policy, pre, post, memory = problem.learner, problem.policy, problem.pre, problem.post, problem.memory
    through_inner_loop = curvature == "exact" and not first_order
    theta = problem.theta()

    old_fast = learner.adapt(pre, leaf_params(policy), create_graph=False)
    with torch.no_grad():
        old_dist = policy.episode_distribution({k: v.detach() for k, v in old_fast.items()}, post, memory)
        old_pre_dist = policy.episode_distribution(policy.params(), pre)

    def kl(vector: Tensor) -> Tensor:
        fast = learner.adapt(pre, problem.unflatten(vector), create_graph=through_inner_loop)
        post_kl = learner.mean_kl(old_dist, policy.episode_distribution(fast, post, memory), post)
        pre_kl = learner.mean_kl(old_pre_dist, policy.episode_distribution(problem.unflatten(vector), pre), pre)
        return post_kl + pre_kl_weight * pre_kl

    hessian = torch.autograd.functional.hessian(kl, theta, vectorize=True)
    assert float(kl(theta.clone().requires_grad_(True)).detach()) == pytest.approx(0.0, abs=1e-12)
    product = learner._fisher_vector_product(pre, post, memory, problem.names)
    generator = torch.Generator().manual_seed(21)
    for _ in range(3):
        vector = torch.randn(theta.numel(), generator=generator, dtype=DTYPE)
        expected = hessian @ vector + 1e-3 * vector
        torch.testing.assert_close(product(vector), expected, rtol=1e-9, atol=1e-10)
    # The two curvatures really differ (else the exact one tests nothing).
    if through_inner_loop:

        def adapted_kl(vector: Tensor) -> Tensor:
            fast = learner.adapt(pre, problem.unflatten(vector), create_graph=False)
            return learner.mean_kl(old_dist, policy.episode_distribution(fast, post, memory), post)

        adapted = torch.autograd.functional.hessian(adapted_kl, theta, vectorize=True)
        assert float((hessian - adapted).norm() / hessian.norm()) > 1e-3


@pytest.mark.parametrize(
    ("fvp_tasks", "fvp_episodes", "given_advantages"), [(1, 0, False), (0, 2, False), (0, 2, True), (1, 1, True)]
)
def test_fisher_vector_product_of_a_subsample(fvp_tasks: int, fvp_episodes: int, given_advantages: bool) -> None:
    """``fvp_tasks``/``fvp_episodes``: the Hessian of the KL of the first tasks' first episodes alone.

    Given advantages (computed on all episodes, as ``step`` passes them) are subsampled with the episodes.
    """
    problem = Problem(
        "mlp", inner_lr=0.3, fvp_tasks=fvp_tasks, fvp_episodes=fvp_episodes, fvp_curvature="exact", cg_damping=0.0
    )
    learner, policy = problem.learner, problem.policy
    all_advantages = learner.advantages(problem.pre) if given_advantages else None
    tasks = slice(0, fvp_tasks or problem.pre.num_tasks)
    pre, post = problem.pre.select(tasks), problem.post.select(tasks)
    advantages = None if all_advantages is None else all_advantages[:, : pre.num_slots]
    if fvp_episodes:
        if advantages is not None:
            per = pre.episodes_per_task
            keep = [n * per + e for n in range(pre.num_tasks) for e in range(fvp_episodes)]
            advantages = advantages[:, keep]
        pre, post = pre.first(fvp_episodes), post.first(fvp_episodes)
    with torch.enable_grad():
        old_fast = learner.adapt(pre, leaf_params(policy), create_graph=False, advantages=advantages)
    with torch.no_grad():
        old_dist = policy.episode_distribution({k: v.detach() for k, v in old_fast.items()}, post)

    def kl(vector: Tensor) -> Tensor:
        fast = learner.adapt(pre, problem.unflatten(vector), create_graph=True, advantages=advantages)
        return learner.mean_kl(old_dist, policy.episode_distribution(fast, post), post)

    hessian = torch.autograd.functional.hessian(kl, problem.theta(), vectorize=True)
    vector = torch.randn(len(hessian), generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    product = learner._fisher_vector_product(
        problem.pre, problem.post, None, problem.names, pre_advantages=all_advantages
    )
    torch.testing.assert_close(product(vector), hessian @ vector, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------- 4. conjugate gradient


def random_spd(n: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=generator, dtype=DTYPE)
    return m @ m.T + 0.5 * torch.eye(n, dtype=DTYPE)


def test_conjugate_gradient_solves_an_spd_system() -> None:
    a = random_spd(10, seed=0)
    b = torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    x, _ = conjugate_gradient(lambda v: a @ v, b, iterations=100, tol=1e-28)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    # n iterations solve an n x n system (up to rounding); fewer leave a residual.
    torch.testing.assert_close(
        conjugate_gradient(lambda v: a @ v, b, iterations=10)[0], torch.linalg.solve(a, b), rtol=1e-6, atol=1e-8
    )
    assert float((a @ conjugate_gradient(lambda v: a @ v, b, iterations=3)[0] - b).norm()) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conjugate_gradient_returns_the_product_of_its_solution(dtype: torch.dtype) -> None:
    # TRPO's step size x^T A x comes from this product instead of another matvec; it must be A x
    # for the x returned, also before convergence (3 of 10 iterations) and in float32.
    a = random_spd(10, seed=3).to(dtype)
    b = torch.randn(10, generator=torch.Generator().manual_seed(4), dtype=DTYPE).to(dtype)
    for iterations in (1, 3, 10):
        x, ax = conjugate_gradient(lambda v: a @ v, b, iterations=iterations)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(ax, a @ x, rtol=tol, atol=tol * float(b.norm()))
        if iterations < 10:
            assert float((ax - b).norm()) > 1e-3  # not converged: A x is not b


def test_conjugate_gradient_stops_early_on_tol() -> None:
    # Three distinct eigenvalues: exact CG converges in 3 products, then the residual is ~0 < tol.
    a = torch.diag(torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 5.0, 5.0, 5.0], dtype=DTYPE))
    b = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    calls = []

    def matvec(v: Tensor) -> Tensor:
        calls.append(1)
        return a @ v

    x, _ = conjugate_gradient(matvec, b, iterations=10, tol=1e-20)
    assert len(calls) == 3
    torch.testing.assert_close(x, b / torch.diagonal(a), rtol=1e-12, atol=1e-12)
    # A right-hand side already within tol: no product at all, x = 0.
    calls.clear()
    assert torch.equal(
        conjugate_gradient(matvec, torch.full((10,), 1e-6, dtype=DTYPE), iterations=10, tol=1e-10)[0],
        torch.zeros(10, dtype=DTYPE),
    )
    assert calls == []


# ---------------------------------------------------------------------------- 5. line search


def test_line_search_returns_zero_when_nothing_is_accepted() -> None:
    tried = []

    def evaluate(fraction: float) -> tuple[float, float]:
        tried.append(fraction)
        return 1.0, 1.0  # improves, but always beyond the KL bound

    assert backtracking_line_search(evaluate, max_kl=0.1, max_steps=4, backtrack_ratio=0.5) == (0.0, 4)
    assert tried == [1.0, 0.5, 0.25, 0.125]
    # Within the bound but never improving: also rejected.
    assert backtracking_line_search(lambda f: (-1.0, 0.0), max_kl=0.1, max_steps=3) == (0.0, 3)
    assert backtracking_line_search(lambda f: (0.0, 0.0), max_kl=0.1, max_steps=3) == (0.0, 3)


def test_line_search_accepts_the_first_fraction_within_the_bound() -> None:
    # kl = fraction: fractions 1, .8, .64, .512, .4096 -> .4096 is the first with kl <= 0.5.
    fraction, steps = backtracking_line_search(lambda f: (1.0, f), max_kl=0.5, max_steps=15, backtrack_ratio=0.8)
    assert steps == 5 and fraction == pytest.approx(0.8**4)
    # Improvement must be positive; the KL bound is inclusive.
    fraction, steps = backtracking_line_search(
        lambda f: (0.9 - f, 0.25), max_kl=0.25, max_steps=10, backtrack_ratio=0.8
    )
    assert (fraction, steps) == (0.8, 2)
    assert backtracking_line_search(lambda f: (1.0, 0.0), max_kl=0.25) == (1.0, 1)


def test_step_restores_the_old_parameters_when_no_step_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fraction is rejected (KL reported infinite after the real move): the parameters come back bit for bit.

    (A tiny ``max_kl`` does not force this: the full step is scaled to ``max_kl`` and is accepted.)
    """
    import agents.maml_trpo as maml_trpo

    problem = Problem("mlp", inner_lr=0.1, line_search_steps=3)
    before = {k: v.detach().clone() for k, v in problem.policy.params().items()}
    moved = []
    real_search = maml_trpo.backtracking_line_search

    def rejecting_search(evaluate: Callable[[float], tuple[float, float]], *args: object) -> tuple[float, int]:
        def reject(fraction: float) -> tuple[float, float]:
            improvement, _ = evaluate(fraction)  # moves the parameters
            moved.append(any(not torch.equal(v, before[k]) for k, v in problem.policy.params().items()))
            return improvement, float("inf")

        return real_search(reject, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(maml_trpo, "backtracking_line_search", rejecting_search)
    metrics = problem.learner.step(problem.pre, problem.post, problem.memory)
    assert moved == [True, True, True], "the line search never moved the parameters: the restore is untested"
    assert metrics["step_accepted"] == 0.0
    assert metrics["line_search_steps"] == 3.0
    assert metrics["kl"] == 0.0 and metrics["surrogate_improvement"] == 0.0
    for name, value in problem.policy.params().items():
        assert torch.equal(value, before[name]), name
        assert isinstance(value, torch.nn.Parameter) and value.requires_grad


@pytest.mark.parametrize(
    ("step_max_kl", "pre_kl_weight"), [(None, 0.0), (2e-4, 0.0), (None, 2.0)], ids=["configured", "given", "pre-kl"]
)
def test_accepted_step_reports_its_kl_and_improvement(step_max_kl: float | None, pre_kl_weight: float) -> None:
    """The accepted step keeps within its trust region: the configured one, or the one passed (an anneal);
    with ``pre_kl_weight`` the region bounds the adapted policies' KL plus that times the meta-policy's on pre."""
    bound = 1e-3 if step_max_kl is None else step_max_kl
    problem = Problem("mlp", inner_lr=0.1, max_kl=1e-3, pre_kl_weight=pre_kl_weight)
    learner, policy, pre, post = problem.learner, problem.policy, problem.pre, problem.post
    advantages = policy_gradient_advantages(post, learner.config.gamma, learner.config.gae_lambda)
    with torch.enable_grad():
        old_fast = {k: v.detach() for k, v in learner.adapt(pre, leaf_params(policy), create_graph=False).items()}
    with torch.no_grad():
        old_dist = policy.episode_distribution(old_fast, post)
        old_log_prob = old_dist.log_prob(post.actions)
        old_pre_dist = policy.episode_distribution(policy.params(), pre)
    metrics = learner.step(pre, post, max_kl=step_max_kl)
    assert metrics["step_accepted"] == 1.0
    with torch.enable_grad():
        new_fast = {k: v.detach() for k, v in learner.adapt(pre, leaf_params(policy), create_graph=False).items()}
    with torch.no_grad():
        new_dist = policy.episode_distribution(new_fast, post)
        surrogate = learner.surrogate(new_dist, post, old_log_prob, advantages)
        kl = float(learner.mean_kl(old_dist, new_dist, post))
        pre_kl = float(learner.mean_kl(old_pre_dist, policy.episode_distribution(policy.params(), pre), pre))
    if pre_kl_weight:
        assert metrics["pre_kl"] == pytest.approx(pre_kl, rel=1e-9)
        assert pre_kl_weight * pre_kl > 0.1 * kl  # the meta-policy's own KL takes a real share of the region
        kl += pre_kl_weight * pre_kl
    else:
        assert "pre_kl" not in metrics
    assert 0.5 * bound < kl <= bound
    assert metrics["kl"] == pytest.approx(kl, rel=1e-9)
    assert metrics["surrogate_improvement"] == pytest.approx(float(surrogate) - metrics["surrogate_before"], rel=1e-9)
    assert metrics["surrogate_improvement"] > 0


@pytest.mark.parametrize(("tolerance", "steps"), [(1.0, 2), (1.5, 1)])
def test_line_search_accepts_a_kl_up_to_the_tolerance_times_max_kl(
    tolerance: float, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``line_search_kl_tolerance`` widens the line search's bound, not the step: the full step is
    still scaled to ``max_kl``. With the Fisher of every task its KL overshoots max_kl by a fraction of
    a percent (third-order terms), so the strict bound backtracks once and a tolerance of 1.5 takes it."""
    import agents.maml_trpo as maml_trpo

    bounds: list[float] = []
    kls: list[float] = []
    real_search = maml_trpo.backtracking_line_search

    def recording_search(
        evaluate: Callable[[float], tuple[float, float]], bound: float, *args: object
    ) -> tuple[float, int]:
        bounds.append(bound)

        def record(fraction: float) -> tuple[float, float]:
            improvement, kl = evaluate(fraction)
            kls.append(kl)
            return improvement, kl

        return real_search(record, bound, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(maml_trpo, "backtracking_line_search", recording_search)
    problem = Problem("mlp", inner_lr=0.1, max_kl=1e-6, fvp_tasks=0, cg_damping=0.0, line_search_kl_tolerance=tolerance)
    metrics = problem.learner.step(problem.pre, problem.post, max_kl=2e-6)
    assert bounds == [pytest.approx(tolerance * 2e-6, rel=1e-12)]
    assert metrics["full_step_kl_ratio"] == pytest.approx(kls[0] / 2e-6, rel=1e-12)
    assert 1.0 < metrics["full_step_kl_ratio"] < 1.02
    assert metrics["line_search_steps"] == steps and metrics["step_accepted"] == 1.0
    assert metrics["kl"] == kls[steps - 1]


@pytest.mark.parametrize(("fvp_tasks", "pre_kl_weight"), [(0, 0.0), (1, 0.0), (0, 3.0)])
def test_full_step_kl_ratio_measures_the_quadratic_model(
    fvp_tasks: int, pre_kl_weight: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full step's KL over max_kl: about 1 on a small trust region with the Fisher of every task
    (also with the meta-policy's own KL on pre in the region, whose Fisher the products then add).

    With the Fisher of the first of the two tasks only, the step is scaled by the wrong curvature
    and the ratio moves away from 1 (the metric shows how far a subsampled Fisher is off).
    """
    import agents.maml_trpo as maml_trpo

    tried: list[tuple[float, float]] = []
    real_search = maml_trpo.backtracking_line_search

    def recording_search(evaluate: Callable[[float], tuple[float, float]], *args: object) -> tuple[float, int]:
        def record(fraction: float) -> tuple[float, float]:
            improvement, kl = evaluate(fraction)
            tried.append((fraction, kl))
            return improvement, kl

        return real_search(record, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(maml_trpo, "backtracking_line_search", recording_search)
    problem = Problem(
        "mlp", inner_lr=0.1, max_kl=1e-6, fvp_tasks=fvp_tasks, cg_damping=0.0, pre_kl_weight=pre_kl_weight
    )
    metrics = problem.learner.step(problem.pre, problem.post)
    assert metrics["step_accepted"] == 1.0
    assert tried[0][0] == 1.0
    assert metrics["full_step_kl_ratio"] == pytest.approx(tried[0][1] / 1e-6, rel=1e-12)
    if fvp_tasks == 0:
        assert metrics["full_step_kl_ratio"] == pytest.approx(1.0, abs=0.02)
    else:
        assert abs(metrics["full_step_kl_ratio"] - 1.0) > 0.5


# ---------------------------------------------------------------------------- 6. returns, GAE, baseline


def reference_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Per slot, per step: sum_l (gamma lam)^l delta_{t+l} over the episode, V after its end = 0."""
    horizon, slots = rewards.shape
    out = torch.zeros_like(rewards)
    for b in range(slots):
        length = int(mask[:, b].sum())
        for t in range(length):
            total = 0.0
            for k in range(t, length):
                next_value = float(values[k + 1, b]) if k + 1 < length else 0.0
                delta = float(rewards[k, b]) + gamma * next_value - float(values[k, b])
                total += (gamma * lam) ** (k - t) * delta
            out[t, b] = total
    return out


def reference_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    horizon, slots = rewards.shape
    out = torch.zeros_like(rewards)
    for b in range(slots):
        length = int(mask[:, b].sum())
        for t in range(length):
            out[t, b] = sum(gamma ** (k - t) * float(rewards[k, b]) for k in range(t, length))
    return out


def random_rewards_values_mask(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rewards and values with garbage after each episode's end (the mask alone says what counts)."""
    episodes = random_episodes(2, 3, 9, seed=seed, lengths=[9, 4, 1, 9, 6, 2])
    generator = torch.Generator().manual_seed(seed + 100)
    values = torch.randn(9, 6, generator=generator, dtype=DTYPE)
    garbage = torch.randn(9, 6, generator=generator, dtype=DTYPE) * (1 - episodes.mask)
    return episodes.rewards + garbage, values, episodes.mask


@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 1.0), (0.9, 0.95), (0.5, 0.0), (1.0, 0.7)])
def test_gae_and_returns_match_loop_references(gamma: float, lam: float) -> None:
    rewards, values, mask = random_rewards_values_mask(seed=30)
    torch.testing.assert_close(
        gae(rewards, values, mask, gamma, lam), reference_gae(rewards, values, mask, gamma, lam), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        discounted_returns(rewards, mask, gamma), reference_returns(rewards, mask, gamma), rtol=0, atol=1e-12
    )


def test_gae_known_answers() -> None:
    ones, zeros, full = torch.ones(3, 1, dtype=DTYPE), torch.zeros(3, 1, dtype=DTYPE), torch.ones(3, 1, dtype=DTYPE)
    expected = torch.tensor([[1.75], [1.5], [1.0]], dtype=DTYPE)
    torch.testing.assert_close(gae(ones, zeros, full, 0.5, 1.0), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(discounted_returns(ones, full, 0.5), expected, rtol=0, atol=1e-15)
    # rewards [1, 2], values [0.5, 1], gamma 0.9, lambda 0.5:
    # delta_1 = 2 - 1 = 1, delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4, A_0 = 1.4 + 0.45 * 1 = 1.85.
    advantages = gae(
        torch.tensor([[1.0], [2.0]], dtype=DTYPE),
        torch.tensor([[0.5], [1.0]], dtype=DTYPE),
        torch.ones(2, 1, dtype=DTYPE),
        0.9,
        0.5,
    )
    torch.testing.assert_close(advantages, torch.tensor([[1.85], [1.0]], dtype=DTYPE), rtol=0, atol=1e-15)
    # An episode that ended after step 1: no bootstrapping from the masked step, zeros after.
    mask = torch.tensor([[1.0], [1.0], [0.0]], dtype=DTYPE)
    rewards = torch.tensor([[1.0], [1.0], [0.0]], dtype=DTYPE)
    torch.testing.assert_close(
        gae(rewards, torch.full((3, 1), 7.0, dtype=DTYPE), mask, 0.5, 1.0),
        torch.tensor([[1.5 - 7.0], [1.0 - 7.0], [0.0]], dtype=DTYPE),
    )


def test_gae_with_lambda_one_is_returns_minus_values() -> None:
    rewards, values, mask = random_rewards_values_mask(seed=31)
    returns = discounted_returns(rewards, mask, 0.97)
    torch.testing.assert_close(gae(rewards, torch.zeros_like(values), mask, 0.97, 1.0), returns, rtol=0, atol=1e-12)
    torch.testing.assert_close(gae(rewards, values, mask, 0.97, 1.0), (returns - values) * mask, rtol=0, atol=1e-12)


def linear_target_problem(horizon: int, lengths: list[int] | None, gamma: float) -> tuple[Episodes, Tensor, Tensor]:
    """Observations, rewards and the target: per task, the discounted returns are exactly features @ w_task."""
    num_tasks, per_task = 2, 4
    episodes = random_episodes(num_tasks, per_task, horizon, seed=40, lengths=lengths)
    observations = episodes.observations * 0.5
    features = baseline_features(observations, episodes.mask)
    weights = torch.randn(num_tasks, features.shape[-1], generator=torch.Generator().manual_seed(41), dtype=DTYPE)
    task = torch.arange(num_tasks * per_task) // per_task
    target = torch.einsum("tbf,bf->tb", features, weights[task]) * episodes.mask
    next_target = torch.cat([target[1:], torch.zeros_like(target[:1])])
    rewards = (target - gamma * next_target) * episodes.mask
    torch.testing.assert_close(discounted_returns(rewards, episodes.mask, gamma), target, rtol=0, atol=1e-12)
    return (
        Episodes(observations, episodes.actions, rewards, episodes.next_observations, episodes.mask, num_tasks),
        target,
        weights,
    )


def test_linear_baseline_recovers_a_linear_target() -> None:
    """One fit per task; without the ridge term the fit is exact, with rllab's 1e-5 ridge nearly so."""
    gamma = 0.9
    episodes, target, _ = linear_target_problem(40, [40, 25, 33, 40, 12, 40, 38, 40], gamma)
    values = fit_linear_baseline(episodes.observations, episodes.rewards, episodes.mask, 2, gamma, reg_coeff=0.0)
    torch.testing.assert_close(values, target, rtol=0, atol=1e-6)
    # The default ridge biases the fit by ~reg / (smallest eigenvalue of the Gram matrix): with a
    # family's horizon (200 steps; t = step / 100 spans [0, 2)) that stays below 1e-6 of the target.
    episodes, target, _ = linear_target_problem(200, None, gamma)
    values = fit_linear_baseline(episodes.observations, episodes.rewards, episodes.mask, 2, gamma)
    torch.testing.assert_close(values, target, rtol=0, atol=1e-6 * float(target.abs().max()))
    assert torch.equal(values[episodes.mask == 0], torch.zeros(int((episodes.mask == 0).sum()), dtype=DTYPE))


def test_linear_baseline_on_wide_features_terminates() -> None:
    """Regression: a batched LU solve of > ~150 features hung (MKL DLASWP errors) with 2+ torch threads.

    Ant's 105-dimensional observations give 214 baseline features, so every
    ant_dir/ant_goal meta-iteration hung in ``fit_linear_baseline``. Run in a
    child process with a timeout, so a hang fails this test instead of the suite.
    """
    code = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        from metarl.baseline import fit_linear_baseline
        torch.set_num_threads(2)
        g = torch.Generator().manual_seed(0)
        T, N, E, obs_dim = 30, 2, 1, 105
        obs = torch.randn(T, N * E, obs_dim, generator=g, dtype=torch.float64)
        rewards = torch.randn(T, N * E, generator=g, dtype=torch.float64)
        mask = torch.ones(T, N * E, dtype=torch.float64)
        values = fit_linear_baseline(obs, rewards, mask, N, 0.99)
        assert torch.isfinite(values).all()
        print("ok")
        """
    )
    try:
        result = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        result = None
    if result is None:
        pytest.fail("fit_linear_baseline hung on 214 features x 2 tasks with 2 torch threads (batched LU solve)")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ---------------------------------------------------------------------------- 7. build_memory


def memory_episodes() -> Episodes:
    return random_episodes(2, 2, 6, seed=50, lengths=[6, 2, 3, 1])  # task 0: 8 valid steps, task 1: 4


def valid_rows(episodes: Episodes, task: int) -> Tensor:
    part = episodes.task(task)
    feats = transition_features(part.observations, part.actions, part.rewards, part.next_observations)
    return feats[part.mask > 0]


def is_row_of(row: Tensor, rows: Tensor) -> bool:
    return bool((rows == row).all(dim=1).any())


def test_build_memory_keeps_only_valid_transitions_up_to_size() -> None:
    episodes = memory_episodes()
    memory = build_memory(episodes, 5, torch.Generator().manual_seed(0))
    assert memory.transitions.shape == (2, 5, 2 * OBS_DIM + ACT_DIM + 1) and memory.mask.shape == (2, 5)
    assert memory.mask[0].tolist() == [1.0] * 5  # 8 valid -> a subset of 5
    assert memory.mask[1].tolist() == [1.0] * 4 + [0.0]  # 4 valid -> all of them, then padding
    assert torch.equal(memory.transitions[1, 4], torch.zeros_like(memory.transitions[1, 4]))
    for task in range(2):
        rows = valid_rows(episodes, task)
        kept = memory.transitions[task][memory.mask[task] > 0]
        assert all(is_row_of(row, rows) for row in kept)
        assert len(torch.unique(kept, dim=0)) == len(kept)  # no duplicates
    assert torch.equal(
        torch.sort(memory.transitions[1, :4], dim=0).values, torch.sort(valid_rows(episodes, 1), dim=0).values
    )
    with pytest.raises(ValueError, match="memory size"):
        build_memory(episodes, 0, torch.Generator())


def test_build_memory_is_reproducible_from_the_generator() -> None:
    episodes = memory_episodes()
    first = build_memory(episodes, 3, torch.Generator().manual_seed(7))
    again = build_memory(episodes, 3, torch.Generator().manual_seed(7))
    assert torch.equal(first.transitions, again.transitions) and torch.equal(first.mask, again.mask)
    subsets = {
        tuple(build_memory(episodes, 3, torch.Generator().manual_seed(s)).transitions[0, :, 0].tolist())
        for s in range(8)
    }
    assert len(subsets) > 1, "the subset never depends on the generator"


def test_build_memory_merges_the_previous_memory() -> None:
    episodes = memory_episodes()
    previous = build_memory(
        random_episodes(2, 2, 6, seed=51, lengths=[2, 0, 1, 1]), 4, torch.Generator().manual_seed(0)
    )
    assert previous.mask.sum(dim=1).tolist() == [2.0, 2.0]
    merged = build_memory(episodes, 16, torch.Generator().manual_seed(0), previous=previous)
    assert merged.mask.sum(dim=1).tolist() == [10.0, 6.0]  # 2 + 8, 2 + 4: every valid row of both
    for task in range(2):
        assert torch.equal(merged.transitions[task, :2], previous.transitions[task, :2])  # the earlier rows first
        rows = valid_rows(episodes, task)
        assert all(is_row_of(row, merged.transitions[task, 2 : int(merged.mask[task].sum())]) for row in rows)
    # Over the size: a subset of the union.
    small = build_memory(episodes, 5, torch.Generator().manual_seed(0), previous=previous)
    assert small.mask.sum(dim=1).tolist() == [5.0, 5.0]
    for task in range(2):
        union = torch.cat([previous.transitions[task][previous.mask[task] > 0], valid_rows(episodes, task)])
        assert all(is_row_of(row, union) for row in small.transitions[task])


# ---------------------------------------------------------------------------- 8. sampling


def point_nav_setup(num_tasks: int = 2) -> tuple[envs.TaskFamily, list[envs.Task], GaussianMLPPolicy]:
    family = envs.make("point_nav")
    tasks = family.sample_tasks(np.random.default_rng(0), num_tasks)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(family.observation_dim, family.action_dim, hidden_sizes=(8,))
    return family, tasks, policy


def shared_params(policy: Policy) -> Params:
    return {k: v.detach() for k, v in policy.params().items()}


def episodes_equal(a: Episodes, b: Episodes) -> bool:
    return a.num_tasks == b.num_tasks and all(
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("observations", "actions", "rewards", "next_observations", "mask")
    )


def test_sampling_is_reproducible_and_well_formed() -> None:
    family, tasks, policy = point_nav_setup()
    params = shared_params(policy)

    def run(seed: int) -> Episodes:
        return sample(family.batch(tasks, 2, seed=0), policy, params, 2, torch.Generator().manual_seed(seed))

    first, again, other = run(3), run(3), run(4)
    assert episodes_equal(first, again)
    assert not torch.equal(first.actions, other.actions)
    horizon, slots = family.horizon, 4
    assert first.observations.shape == (horizon, slots, 2) and first.next_observations.shape == (horizon, slots, 2)
    assert first.actions.shape == (horizon, slots, 2)
    assert first.rewards.shape == (horizon, slots) and first.mask.shape == (horizon, slots)
    assert torch.equal(first.mask, torch.ones(horizon, slots))  # point_nav never terminates early
    assert torch.equal(first.observations[1:], first.next_observations[:-1])
    assert torch.equal(first.observations[0], torch.zeros(slots, 2))

    # Rewards are the simulator's: replay the actions through a fresh simulator and a single env.
    sim = family.batch(tasks, 2, seed=0)
    sim.reset()
    for t in range(horizon):
        result = sim.step(first.actions[t].double().numpy())
        assert torch.equal(first.rewards[t], torch.as_tensor(result.reward, dtype=torch.float32))
        assert torch.equal(first.next_observations[t], torch.as_tensor(result.obs, dtype=torch.float32))
    env = family.make_env(tasks[1])
    env.reset(seed=0)
    for t in range(horizon):
        _, reward, *_ = env.step(first.actions[t, 2].double().numpy())
        assert float(first.rewards[t, 2]) == pytest.approx(reward, rel=1e-6, abs=1e-7)


def test_sampling_with_per_task_params_uses_each_tasks_params() -> None:
    family, tasks, policy = point_nav_setup(num_tasks=2)
    per_task = {k: v.clone() for k, v in expand_params(shared_params(policy), 2).items()}
    per_task["log_std"][0] = -6.0  # task 0: almost deterministic
    per_task["log_std"][1] = 3.0  # task 1: std 20
    per_task["layers.1.bias"][1] += torch.tensor([0.05, -0.03])  # task 1's own mean
    episodes = sample(family.batch(tasks, 3, seed=0), policy, per_task, 2, torch.Generator().manual_seed(0))
    task_of_slot = [0, 0, 0, 1, 1, 1]
    for slot, task in enumerate(task_of_slot):
        own = {k: v[task] for k, v in per_task.items()}
        noise = (episodes.actions[:, slot] - policy.mean(own, episodes.observations[:, slot])).std()
        expected = float(torch.exp(per_task["log_std"][task][0]))
        assert float(noise) == pytest.approx(expected, rel=0.25), (slot, task)

    deterministic = sample(family.batch(tasks, 3, seed=0), policy, per_task, 2, torch.Generator(), deterministic=True)
    for slot, task in enumerate(task_of_slot):
        own = {k: v[task] for k, v in per_task.items()}
        mean = policy.mean(own, deterministic.observations[:, slot])
        torch.testing.assert_close(deterministic.actions[:, slot], mean, rtol=1e-6, atol=1e-7)
        other = {k: v[1 - task] for k, v in per_task.items()}
        assert not torch.allclose(
            deterministic.actions[:, slot], policy.mean(other, deterministic.observations[:, slot])
        )


# ---------------------------------------------------------------------------- gpu


def to_device(problem: Problem, device: str) -> Problem:
    problem.policy.to(device)
    problem.pre, problem.post = problem.pre.to(device), problem.post.to(device)
    if problem.memory is not None:
        problem.memory = Memory(problem.memory.transitions.to(device), problem.memory.mask.to(device))
    return problem


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_cuda_trpo_step_matches_cpu(kind: str) -> None:
    """A whole second-order MAML-TRPO step (adaptation, CG on FVPs, line search) on CUDA equals the CPU one."""
    cpu, cuda = Problem(kind, inner_lr=0.1, max_kl=1e-3), to_device(Problem(kind, inner_lr=0.1, max_kl=1e-3), "cuda")
    cpu_metrics = cpu.learner.step(cpu.pre, cpu.post, cpu.memory)
    cuda_metrics = cuda.learner.step(cuda.pre, cuda.post, cuda.memory)
    assert cpu_metrics["step_accepted"] == cuda_metrics["step_accepted"] == 1.0
    # float64 throughout; CUDA's reduction order differs, and 10 CG iterations amplify it to ~1e-7 relative.
    for name, value in cpu.policy.params().items():
        torch.testing.assert_close(cuda.policy.params()[name].cpu(), value, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------- 9. Fisher subsample benchmark


def test_fisher_benchmark_compares_subsamples_on_the_same_step(tmp_path: Path) -> None:
    """``benchmark.py fisher``: one step per subsample from the same parameters and data."""
    from scripts import benchmark, meta_train

    run = tmp_path / "run"
    tiny = ["--env", "point_nav", "--policy", "mlp", "--iterations", "1", "--meta-batch-size", "2"]
    assert meta_train.main([*tiny, "--episodes-per-task", "2", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "fisher.json"
    assert benchmark.main(["fisher", str(run), "--subsamples", "1:0,0:0,0:1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["fvp_tasks"], r["fvp_episodes"]) for r in rows] == [(1, 0), (0, 0), (0, 1)]
    assert len({r["surrogate_before"] for r in rows}) == 1  # same parameters and episodes for every row
    assert all(0 < r["full_step_kl_ratio"] < FULL_STEP_KL_RATIO_CAP for r in rows)
    assert report["iteration"] == 1 and report["max_kl"] == pytest.approx(0.01)


@pytest.mark.parametrize("bad", [["--subsamples", "1:x"], ["--subsamples", "1"], ["--subsamples", "-1:0"]])
def test_fisher_benchmark_bad_input(tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from scripts import benchmark

    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["fisher", str(tmp_path), *bad])
    assert exit_info.value.code == 2
    assert "--subsamples" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["fisher", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "not a metarl run directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "message"),
    [(["--memory-size", "0"], "memory-size"), (["--window", "0"], "window"), (["--fvp-tasks", "-1"], "fvp-tasks")],
)
def test_learner_benchmark_bad_input(bad: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid sizes of ``benchmark.py learner`` fail on the command line, before any sampling."""
    from scripts import benchmark

    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["learner", *bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_learner_benchmark_times_the_policy_as_sampling_runs_it() -> None:
    """``benchmark.py learner``'s policy time: one torch thread, and after adaptation per-task parameters
    and a full memory, as the trainer samples; the caller's thread count is restored."""
    from scripts import benchmark

    family = envs.make("point_nav")
    config = TrainConfig(env="point_nav", policy="attention", meta_batch_size=2, episodes_per_task=3, memory_size=5)
    policy = factory.make_policy(config, family.observation_dim, family.action_dim)
    seen: list[tuple[int, int, int | None]] = []  # (threads, parameter dims, memory rows) per act
    act = policy.act

    def recording_act(params: Params, obs: Tensor, state: object) -> object:
        memory = getattr(state, "memory", None)
        rows = None if memory is None else memory.keys.shape[1]
        seen.append((torch.get_num_threads(), params["log_std"].dim(), rows))
        return act(params, obs, state)

    policy.act = recording_act  # type: ignore[method-assign]
    threads = torch.get_num_threads()
    sim = family.batch(family.sample_tasks(np.random.default_rng(0), 2), 3)
    seconds = benchmark.acting_seconds(policy, config, sim.reset())
    assert set(seconds) == {"pre", "post"} and all(0 < s < 1 for s in seconds.values())
    assert torch.get_num_threads() == threads
    assert {s[0] for s in seen} == {1}
    steps = benchmark.ACTING_STEPS
    assert len(seen) == 2 * steps
    assert {s[1:] for s in seen[:steps]} == {(1, None)}  # before adaptation: shared parameters, no memory
    assert {s[1:] for s in seen[steps:]} == {(2, 5)}  # after: per task, a memory of memory_size rows
