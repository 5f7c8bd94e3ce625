"""The sampling loop: a policy drives a batched simulator for one episode per slot."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from metarl.episodes import Episodes, Memory


class BatchedEnv(Protocol):
    """What ``sample`` needs of a simulator (``envs.BatchedSimulator`` has it)."""

    num_slots: int
    horizon: int

    def reset(self) -> np.ndarray: ...

    def step(self, actions: Any) -> Any: ...


class SamplingPolicy(Protocol):
    """What ``sample`` needs of a policy (``agents.policies.Policy`` has it)."""

    def start(self, params: dict[str, Tensor], num_tasks: int, num_slots: int, memory: Memory | None = None) -> Any: ...

    def act(self, params: dict[str, Tensor], obs: Tensor, state: Any) -> Any: ...

    def observe(
        self, params: dict[str, Tensor], state: Any, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor
    ) -> Any: ...


def choose_action(dist: Any, deterministic: bool, generator: torch.Generator | None) -> Tensor:
    """The mean of a diagonal Gaussian, or a draw with noise from ``generator`` (CPU, so
    that a seed gives the same actions on every device)."""
    mean = dist.base_dist.loc
    if deterministic:
        return mean
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    return mean + dist.base_dist.scale * noise.to(mean.device)


@torch.no_grad()
def sample(
    sim: BatchedEnv,
    policy: SamplingPolicy,
    params: dict[str, Tensor],
    num_tasks: int,
    generator: torch.Generator,
    memory: Memory | None = None,
    deterministic: bool = False,
    device: torch.device | str = "cpu",
) -> Episodes:
    """Run one episode in every slot of ``sim`` and return them time-major.

    Args:
        sim: the batched simulator; slots task-major, ``num_tasks`` tasks.
        policy: draws actions from ``params`` (shared, or per task with a
            leading ``num_tasks`` axis) and its context state.
        generator: the source of action noise (a CPU ``torch.Generator``), so
            that a seed gives the same episodes on every device.
        memory: each task's context from earlier episodes (attention policies).
        deterministic: take the mean action instead of sampling.
        device: where the policy runs and the episodes are returned.
    Returns:
        ``Episodes`` with ``T <= sim.horizon`` steps (the loop stops when every
        slot's episode has ended) on ``device``.
    """
    slots = sim.num_slots
    obs_np = sim.reset()
    obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
    state = policy.start(params, num_tasks, slots, memory)
    steps: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    for _ in range(sim.horizon):
        action = choose_action(policy.act(params, obs, state), deterministic, generator)
        result = sim.step(action.double().cpu().numpy())
        reward = torch.as_tensor(result.reward, dtype=torch.float32, device=device)
        next_obs = torch.as_tensor(result.obs, dtype=torch.float32, device=device)
        active = torch.as_tensor(result.info["active"], dtype=torch.float32, device=device)
        steps.append((obs, action, reward, next_obs, active))
        if result.done.all():
            break
        state = policy.observe(params, state, obs, action, reward, next_obs)
        obs = next_obs
    observations, actions, rewards, next_observations, mask = (torch.stack(x) for x in zip(*steps, strict=True))
    return Episodes(observations, actions, rewards * mask, next_observations, mask, num_tasks)
