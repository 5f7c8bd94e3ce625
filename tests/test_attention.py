"""AttentionPolicy: incremental == batched, context semantics, per-task params, second derivatives, scale."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator

import pytest
import torch

from agents.attention import AttentionPolicy
from agents.policies import Params
from metarl.episodes import Episodes, Memory, build_memory

OBS_DIM, ACT_DIM = 3, 2
NUM_TASKS, PER_TASK, HORIZON = 2, 3, 12
LENGTHS = (12, 5, 1, 12, 9, 3)  # steps per slot; some episodes end early
WINDOW = 3


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[int]:
    """Tiny tensors: one intra-op thread (on a busy 2-core machine OpenMP waits dominate otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def all_threads(single_thread: int) -> None:
    """Undo :func:`single_thread` for a test on realistic sizes."""
    torch.set_num_threads(single_thread)


def make_policy(window: int = WINDOW, embed_dim: int = 8, seed: int = 0) -> AttentionPolicy:
    """A small float64 policy with every parameter (biases, null entries, log_std) randomised."""
    torch.manual_seed(seed)  # nn.Linear's own initialisation; perturbed below from an explicit generator
    policy = AttentionPolicy(OBS_DIM, ACT_DIM, hidden_sizes=(16,), embed_dim=embed_dim, num_heads=2, window=window)
    policy = policy.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in policy.parameters():
            value.add_(0.3 * torch.randn(value.shape, generator=generator, dtype=value.dtype))
    return policy


def random_episodes(
    seed: int,
    lengths: tuple[int, ...] = LENGTHS,
    num_tasks: int = NUM_TASKS,
    horizon: int = HORIZON,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    dtype: torch.dtype = torch.float64,
) -> Episodes:
    """Random episodes ``[horizon, len(lengths)]``; slot ``b`` runs for ``lengths[b]`` steps."""
    generator = torch.Generator().manual_seed(seed)
    slots = len(lengths)
    observations = torch.randn(horizon + 1, slots, obs_dim, generator=generator, dtype=dtype)
    mask = (torch.arange(horizon)[:, None] < torch.tensor(lengths)[None]).to(dtype)
    rewards = torch.randn(horizon, slots, generator=generator, dtype=dtype) * mask
    actions = torch.randn(horizon, slots, act_dim, generator=generator, dtype=dtype)
    return Episodes(observations[:-1], actions, rewards, observations[1:], mask, num_tasks)


def random_memory(seed: int, size: int = 20) -> Memory:
    """A memory built by ``build_memory`` from other random episodes (task 1 has fewer rows than ``size``)."""
    earlier = random_episodes(seed, lengths=(12, 12, 4, 3, 2, 1))
    return build_memory(earlier, size, torch.Generator().manual_seed(seed))


def per_task(params: Params, num_tasks: int = NUM_TASKS, names: list[str] | None = None) -> Params:
    """Per-task copies ``[num_tasks, ...]`` of ``params`` (of ``names`` only, if given)."""
    return {
        name: value.expand(num_tasks, *value.shape) if names is None or name in names else value
        for name, value in params.items()
    }


def incremental(
    policy: AttentionPolicy, params: Params, episodes: Episodes, memory: Memory | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and standard deviations ``[T, B, act_dim]`` from start/act/observe, step by step."""
    state = policy.start(params, episodes.num_tasks, episodes.num_slots, memory)
    means, stds = [], []
    for t in range(episodes.horizon):
        distribution = policy.act(params, episodes.observations[t], state)
        assert distribution.batch_shape == (episodes.num_slots,)
        means.append(distribution.mean)
        stds.append(distribution.stddev)
        state = policy.observe(
            params,
            state,
            episodes.observations[t],
            episodes.actions[t],
            episodes.rewards[t],
            episodes.next_observations[t],
        )
    return torch.stack(means), torch.stack(stds)


def batched_mean(policy: AttentionPolicy, params: Params, episodes: Episodes, memory: Memory | None) -> torch.Tensor:
    return policy.episode_distribution(params, episodes, memory).mean


# ---------------------------------------------------------------------------------------------- 1


def check_incremental_matches_batched(device: str, use_memory: bool, param_kind: str, window: int = WINDOW) -> None:
    policy = make_policy(window).to(device)
    episodes = random_episodes(1).to(device)
    memory = random_memory(2) if use_memory else None
    if memory is not None:
        memory = Memory(memory.transitions.to(device), memory.mask.to(device))
    params = policy.params()
    if param_kind == "per_task":  # different values per task
        generator = torch.Generator().manual_seed(3)
        params = {
            name: value + 0.1 * torch.randn((NUM_TASKS, *value.shape), generator=generator, dtype=value.dtype).to(value)
            for name, value in params.items()
        }
    elif param_kind == "mixed":  # head per task, context shared (what a head-only inner loop produces)
        params = per_task(params, names=policy.adapted_names("head"))
    with torch.no_grad():
        batched = policy.episode_distribution(params, episodes, memory)
        means, stds = incremental(policy, params, episodes, memory)
    assert batched.batch_shape == (HORIZON, len(LENGTHS))
    valid = episodes.mask > 0
    torch.testing.assert_close(means[valid], batched.mean[valid], rtol=0, atol=1e-10)
    torch.testing.assert_close(stds[valid], batched.stddev[valid], rtol=0, atol=1e-12)


@pytest.mark.parametrize("param_kind", ["shared", "per_task", "mixed"])
@pytest.mark.parametrize("use_memory", [False, True], ids=["no_memory", "memory"])
def test_incremental_matches_batched(use_memory: bool, param_kind: str) -> None:
    check_incremental_matches_batched("cpu", use_memory, param_kind)


@pytest.mark.parametrize("window", [0, 1, 20])
def test_incremental_matches_batched_other_windows(window: int) -> None:
    """Memory only (0), a single transition (1), and a window longer than the episodes (20)."""
    check_incremental_matches_batched("cpu", True, "shared", window=window)


def test_float32_agreement() -> None:
    policy = make_policy().float()
    episodes = random_episodes(1, dtype=torch.float32)
    memory = random_memory(2)
    memory = Memory(memory.transitions.float(), memory.mask.float())
    with torch.no_grad():
        batched = batched_mean(policy, policy.params(), episodes, memory)
        means, _ = incremental(policy, policy.params(), episodes, memory)
    valid = episodes.mask > 0
    torch.testing.assert_close(means[valid], batched[valid], rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------- 2


def test_memory_permutation_invariance() -> None:
    policy = make_policy()
    episodes, memory = random_episodes(1), random_memory(2)
    generator = torch.Generator().manual_seed(4)
    transitions, mask = memory.transitions.clone(), memory.mask.clone()
    for task in range(NUM_TASKS):
        order = torch.randperm(mask.shape[1], generator=generator)  # mixes filled and empty rows
        transitions[task], mask[task] = transitions[task, order], mask[task, order]
    assert not torch.equal(mask, memory.mask) or not torch.equal(transitions, memory.transitions)
    with torch.no_grad():
        before = batched_mean(policy, policy.params(), episodes, memory)
        after = batched_mean(policy, policy.params(), episodes, Memory(transitions, mask))
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- 3


def test_empty_context_is_well_defined() -> None:
    policy = make_policy()
    params = policy.params()
    episodes = random_episodes(1)
    generator = torch.Generator().manual_seed(5)
    empty = Memory(
        100 * torch.randn(NUM_TASKS, 7, policy.transition_dim, generator=generator, dtype=torch.float64),
        torch.zeros(NUM_TASKS, 7, dtype=torch.float64),
    )
    with torch.no_grad():
        without = batched_mean(policy, params, episodes, None)
        with_empty = batched_mean(policy, params, episodes, empty)
        first = policy.act(params, episodes.observations[0], policy.start(params, NUM_TASKS, len(LENGTHS)))
        # the summary of an empty context is out(null_value): computed here by hand
        z = torch.nn.functional.linear(params["null_value"].flatten(), params["out.weight"], params["out.bias"])
        h = torch.tanh(
            torch.nn.functional.linear(episodes.observations[0], params["obs_embed.weight"], params["obs_embed.bias"])
        )
        x = torch.cat([h, z.expand(len(LENGTHS), -1)], dim=-1)
        x = torch.tanh(torch.nn.functional.linear(x, params["head.0.weight"], params["head.0.bias"]))
        by_hand = torch.nn.functional.linear(x, params["head.1.weight"], params["head.1.bias"])
    assert torch.isfinite(without).all() and torch.isfinite(first.mean).all()
    torch.testing.assert_close(with_empty, without, rtol=0, atol=1e-12)
    torch.testing.assert_close(first.mean, without[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(without[0], by_hand, rtol=0, atol=1e-12)


def test_full_memory_equals_padded_memory() -> None:
    """A full memory and the same rows padded with empty ones (masked): same values and gradients."""
    policy = make_policy()
    episodes = random_episodes(1)
    full = build_memory(random_episodes(2, lengths=(12,) * 6), 10, torch.Generator().manual_seed(0))
    assert bool((full.mask > 0).all())
    generator = torch.Generator().manual_seed(6)
    padding = 100 * torch.randn(NUM_TASKS, 4, policy.transition_dim, generator=generator, dtype=torch.float64)
    padded = Memory(
        torch.cat([padding[:, :2], full.transitions, padding[:, 2:]], dim=1),
        torch.cat([torch.zeros(NUM_TASKS, 2), full.mask, torch.zeros(NUM_TASKS, 2)], dim=1).double(),
    )
    results = []
    for memory in (full, padded):
        params = {k: v.detach().requires_grad_() for k, v in per_task(policy.params()).items()}
        log_prob = policy.episode_distribution(params, episodes, memory).log_prob(episodes.actions)
        grads = torch.autograd.grad((log_prob * episodes.mask).sum(), list(params.values()))
        results.append((log_prob, grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-12)
    for padded_grad, full_grad in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(padded_grad, full_grad, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- 4


@pytest.mark.parametrize("use_memory", [False, True], ids=["no_memory", "memory"])
def test_window_is_causal(use_memory: bool) -> None:
    policy = make_policy()
    episodes = random_episodes(1, lengths=(12,) * 6)
    memory = random_memory(2) if use_memory else None
    changed_step, changed_slot = 4, 1
    rewards = episodes.rewards.clone()
    rewards[changed_step, changed_slot] += 1.0
    other = Episodes(
        episodes.observations, episodes.actions, rewards, episodes.next_observations, episodes.mask, NUM_TASKS
    )
    with torch.no_grad():
        difference = (
            (
                batched_mean(policy, policy.params(), other, memory)
                - batched_mean(policy, policy.params(), episodes, memory)
            )
            .abs()
            .amax(-1)
        )
    affected = torch.zeros_like(difference, dtype=torch.bool)
    affected[changed_step + 1 : changed_step + 1 + WINDOW, changed_slot] = True
    assert (difference[affected] > 1e-6).all(), difference
    assert (difference[~affected] < 1e-13).all(), difference


# ---------------------------------------------------------------------------------------------- 5


def test_shared_and_per_task_params_agree() -> None:
    policy = make_policy()
    episodes, memory = random_episodes(1), random_memory(2)
    params = policy.params()
    with torch.no_grad():
        shared = batched_mean(policy, params, episodes, memory)
        copies = batched_mean(policy, per_task(params), episodes, memory)
        torch.testing.assert_close(copies, shared, rtol=0, atol=1e-12)

        changed = {name: value.clone() for name, value in per_task(params).items()}
        for value in changed.values():
            value[0] += 0.2
        different = batched_mean(policy, changed, episodes, memory)
    task_zero = torch.arange(len(LENGTHS)) // PER_TASK == 0
    valid = episodes.mask > 0
    assert ((different - shared).abs().amax(-1)[:, task_zero][valid[:, task_zero]] > 1e-6).all()
    torch.testing.assert_close(different[:, ~task_zero], shared[:, ~task_zero], rtol=0, atol=1e-12)


def test_log_std_per_task() -> None:
    policy = make_policy()
    episodes = random_episodes(1)
    params = per_task(policy.params())
    params["log_std"] = torch.tensor([[0.1, 0.2], [-0.3, 0.4]], dtype=torch.float64)
    with torch.no_grad():
        stddev = policy.episode_distribution(params, episodes).stddev
    expected = params["log_std"].exp().repeat_interleave(PER_TASK, dim=0).expand(HORIZON, -1, -1)
    torch.testing.assert_close(stddev, expected)


# ---------------------------------------------------------------------------------------------- 6


def meta_loss(policy: AttentionPolicy, params: Params, device: str = "cpu", first_order: bool = False) -> torch.Tensor:
    """One MAML step (per-task fast params) on inner episodes, then the loss on outer episodes."""
    inner = random_episodes(1, lengths=(6, 4, 6, 2), horizon=6).to(device)
    outer = random_episodes(7, lengths=(5, 6, 3, 6), horizon=6).to(device)
    memory = build_memory(
        random_episodes(8, lengths=(3, 2, 4, 1), horizon=6).to(device), 7, torch.Generator().manual_seed(0)
    )

    def surrogate(parameters: Params, episodes: Episodes) -> torch.Tensor:
        log_prob = policy.episode_distribution(parameters, episodes, memory).log_prob(episodes.actions)
        advantages = episodes.rewards  # any fixed weights will do
        return -(log_prob * advantages * episodes.mask).sum() / episodes.mask.sum()

    expanded = per_task(params)
    gradients = torch.autograd.grad(surrogate(expanded, inner), list(expanded.values()), create_graph=not first_order)
    fast = {name: value - 0.5 * grad for (name, value), grad in zip(expanded.items(), gradients, strict=True)}
    return surrogate(fast, outer)


def check_meta_gradient(device: str) -> None:
    policy = make_policy(window=2).to(device)
    params = {name: value.detach().clone().requires_grad_() for name, value in policy.params().items()}

    def loss(p: Params) -> torch.Tensor:
        return meta_loss(policy, p, device)

    exact = torch.autograd.grad(loss(params), list(params.values()))
    first_order = torch.autograd.grad(meta_loss(policy, params, device, first_order=True), list(params.values()))
    second_order_term = max((a - b).abs().max().item() for a, b in zip(exact, first_order, strict=True))
    assert second_order_term > 1e-4, "the second-order meta-gradient equals the first-order one"

    generator = torch.Generator().manual_seed(9)
    eps = 1e-5

    def loss_at(name: str, index: int, step: float) -> float:
        shifted = {n: v.detach().clone() for n, v in params.items()}
        shifted[name].view(-1)[index] += step
        return loss({n: v.requires_grad_() for n, v in shifted.items()}).item()  # the inner step needs a graph

    for (name, value), grad in zip(params.items(), exact, strict=True):
        for _ in range(2):
            index = int(torch.randint(value.numel(), (1,), generator=generator))
            finite = (loss_at(name, index, eps) - loss_at(name, index, -eps)) / (2 * eps)
            analytic = grad.reshape(-1)[index].item()
            assert abs(finite - analytic) <= 1e-5 * max(abs(finite), 1e-3), (name, index, finite, analytic)


def test_meta_gradient_matches_finite_differences() -> None:
    """Second-order MAML gradient through the attention (window, memory, -inf masks) in float64."""
    check_meta_gradient("cpu")


def test_gradgradcheck() -> None:
    policy = make_policy(window=2, embed_dim=4)
    episodes = random_episodes(1, lengths=(4, 2, 4, 3), horizon=4)
    memory = build_memory(random_episodes(8, lengths=(3, 2, 4, 1), horizon=4), 7, torch.Generator().manual_seed(0))
    names = ["null_key", "key.weight", "query.bias", "head.0.weight"]
    base = policy.params()

    def log_prob(*values: torch.Tensor) -> torch.Tensor:
        params = {**base, **dict(zip(names, values, strict=True))}
        return policy.episode_distribution(params, episodes, memory).log_prob(episodes.actions) * episodes.mask

    inputs = tuple(base[name].detach().clone().requires_grad_() for name in names)
    assert torch.autograd.gradgradcheck(log_prob, inputs)


# ---------------------------------------------------------------------------------------------- 7


def test_large_memory() -> None:
    """256 memory rows per task: still agrees with the incremental computation and is finite."""
    policy = make_policy()
    memory = build_memory(random_episodes(2, lengths=(100,) * 6, horizon=100), 256, torch.Generator().manual_seed(0))
    assert memory.transitions.shape[1] == 256 and bool((memory.mask > 0).all())
    episodes = random_episodes(1)
    with torch.no_grad():
        batched = batched_mean(policy, policy.params(), episodes, memory)
        means, _ = incremental(policy, policy.params(), episodes, memory)
    valid = episodes.mask > 0
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(means[valid], batched[valid], rtol=0, atol=1e-10)


def test_meta_batch_scale_forward_backward(all_threads: None) -> None:
    """T=200, B=800 (40 tasks x 20), HalfCheetah sizes, window 8, 64 memory rows: forward + backward on CPU."""
    num_tasks, per_task_slots, horizon, obs_dim, act_dim, rows = 40, 20, 200, 17, 6, 64
    slots = num_tasks * per_task_slots
    torch.manual_seed(0)
    policy = AttentionPolicy(obs_dim, act_dim, window=8)
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(horizon + 1, slots, obs_dim, generator=generator)
    lengths = torch.randint(50, horizon + 1, (slots,), generator=generator)
    mask = (torch.arange(horizon)[:, None] < lengths[None]).float()
    episodes = Episodes(
        observations[:-1],
        torch.randn(horizon, slots, act_dim, generator=generator),
        torch.randn(horizon, slots, generator=generator) * mask,
        observations[1:],
        mask,
        num_tasks,
    )
    memory = Memory(
        torch.randn(num_tasks, rows, policy.transition_dim, generator=generator),
        (torch.rand(num_tasks, rows, generator=generator) < 0.9).float(),
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    distribution = policy.episode_distribution(policy.params(), episodes, memory)
    loss = -(distribution.log_prob(episodes.actions) * mask).sum() / mask.sum()
    forward = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # Linux: KiB
    print(
        f"\nT={horizon} B={slots} M={rows}: forward {forward - start:.2f}s, backward {end - forward:.2f}s, "
        f"peak RSS growth {peak_growth_mib:.0f} MiB"
    )
    assert torch.isfinite(loss)
    assert all(value.grad is not None and torch.isfinite(value.grad).all() for value in policy.parameters())
    assert peak_growth_mib < 4096, "attention materialised something far larger than [T, B, H, 1 + W + M]"


# ---------------------------------------------------------------------------------------------- 8


def test_adapted_names_partition() -> None:
    policy = make_policy()
    names = list(policy.params())
    context, head = policy.adapted_names("context"), policy.adapted_names("head")
    assert policy.adapted_names("all") == names
    assert set(context).isdisjoint(head) and set(context) | set(head) == set(names)
    assert set(context) == {
        "trans_embed.weight",
        "trans_embed.bias",
        "query.weight",
        "query.bias",
        "key.weight",
        "key.bias",
        "value.weight",
        "value.bias",
        "null_key",
        "null_value",
        "out.weight",
        "out.bias",
    }
    assert {"log_std", "obs_embed.weight", "obs_embed.bias", "head.0.weight", "head.1.bias"} <= set(head)


def test_context_parameters_act_only_through_the_summary() -> None:
    """With an empty context, perturbing a context parameter other than null_value/out changes nothing."""
    policy = make_policy()
    episodes = random_episodes(1)
    params = policy.params()
    changed = {
        name: value + 0.5 if name.split(".")[0] in ("trans_embed", "key", "value", "query", "null_key") else value
        for name, value in params.items()
    }
    with torch.no_grad():
        first_step = batched_mean(policy, params, episodes, None)[0]
        torch.testing.assert_close(batched_mean(policy, changed, episodes, None)[0], first_step, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- errors


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of num_heads"):
        AttentionPolicy(3, 2, embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="window"):
        AttentionPolicy(3, 2, window=-1)
    policy = make_policy()
    episodes = random_episodes(1)
    with pytest.raises(ValueError, match="memory transitions"):
        policy.episode_distribution(
            policy.params(), episodes, Memory(torch.zeros(3, 4, policy.transition_dim), torch.ones(3, 4))
        )
    with pytest.raises(ValueError, match="per task"):
        policy.episode_distribution(per_task(policy.params(), num_tasks=3), episodes)
    with pytest.raises(ValueError, match="multiple of num_tasks"):
        policy.start(policy.params(), num_tasks=4, num_slots=6)


# ---------------------------------------------------------------------------------------------- gpu


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_incremental_and_meta_gradient() -> None:
    for use_memory in (False, True):
        for kind in ("shared", "per_task", "mixed"):
            check_incremental_matches_batched("cuda", use_memory, kind)
    check_meta_gradient("cuda")
