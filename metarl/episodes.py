"""Time-major batches of episodes and the statistics computed on them.

Shapes: ``T`` steps, ``B = num_tasks * episodes_per_task`` slots (task-major:
slot ``b`` belongs to task ``b // episodes_per_task``). ``mask[t, b]`` is 1 where
slot ``b`` took step ``t`` (episodes may end early) and 0 after its end.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor


@dataclasses.dataclass
class Episodes:
    """Episodes of ``num_tasks`` tasks, ``episodes_per_task`` each, on one device.

    Attributes:
        observations: ``[T, B, obs_dim]`` observation before each step.
        actions: ``[T, B, act_dim]``.
        rewards: ``[T, B]`` (0 where masked).
        next_observations: ``[T, B, obs_dim]`` observation after each step.
        mask: ``[T, B]`` float, 1 for steps that happened.
        num_tasks: tasks in the batch; ``episodes_per_task = B // num_tasks``.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    next_observations: Tensor
    mask: Tensor
    num_tasks: int

    @property
    def horizon(self) -> int:
        return int(self.observations.shape[0])

    @property
    def num_slots(self) -> int:
        return int(self.observations.shape[1])

    @property
    def episodes_per_task(self) -> int:
        return self.num_slots // self.num_tasks

    @property
    def lengths(self) -> Tensor:
        """``[B]`` steps taken per slot."""
        return self.mask.sum(dim=0)

    def returns(self) -> Tensor:
        """``[B]`` undiscounted return of each episode."""
        return (self.rewards * self.mask).sum(dim=0)

    def task_returns(self) -> Tensor:
        """``[num_tasks]`` mean return of each task's episodes."""
        return self.returns().view(self.num_tasks, -1).mean(dim=1)

    def to(self, device: torch.device | str) -> Episodes:
        return dataclasses.replace(
            self,
            **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if f.name != "num_tasks"},
        )

    @staticmethod
    def concatenate(parts: list[Episodes]) -> Episodes:
        """Episodes of the same tasks side by side: each task's slots of ``parts[0]``,
        then ``parts[1]``, ...; shorter parts are padded with masked steps."""
        num_tasks = parts[0].num_tasks
        horizon = max(p.horizon for p in parts)

        def join(name: str) -> Tensor:
            pieces = []
            for part in parts:
                value = getattr(part, name)
                pad = value.new_zeros((horizon - value.shape[0], *value.shape[1:]))
                value = torch.cat([value, pad])
                pieces.append(value.reshape(horizon, num_tasks, -1, *value.shape[2:]))
            joined = torch.cat(pieces, dim=2)
            return joined.reshape(horizon, -1, *joined.shape[3:])

        return Episodes(
            join("observations"), join("actions"), join("rewards"), join("next_observations"), join("mask"), num_tasks
        )

    def select(self, tasks: slice) -> Episodes:
        """The episodes of the tasks in ``tasks`` (a slice of task indices, step 1)."""
        per = self.episodes_per_task
        start, stop, _ = tasks.indices(self.num_tasks)
        cut = slice(start * per, stop * per)
        return Episodes(
            self.observations[:, cut],
            self.actions[:, cut],
            self.rewards[:, cut],
            self.next_observations[:, cut],
            self.mask[:, cut],
            stop - start,
        )

    def first(self, count: int) -> Episodes:
        """Each task's first ``count`` episodes (slots stay task-major)."""

        def cut(x: Tensor) -> Tensor:
            return first_slots(x, self.num_tasks, count)

        return Episodes(
            cut(self.observations),
            cut(self.actions),
            cut(self.rewards),
            cut(self.next_observations),
            cut(self.mask),
            self.num_tasks,
        )

    def task(self, index: int) -> Episodes:
        """The episodes of task ``index`` alone."""
        return self.select(slice(index, index + 1))


def first_slots(x: Tensor, num_tasks: int, count: int) -> Tensor:
    """``x [T, B, ...]`` (task-major slots) cut to each task's first ``count``: ``[T, num_tasks * count, ...]``."""
    return x.unflatten(1, (num_tasks, -1))[:, :, :count].flatten(1, 2)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """``G_t = r_t + gamma * G_{t+1}`` within each episode; ``[T, B] -> [T, B]`` (0 where masked)."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (rewards[t] + gamma * running) * mask[t]
        returns[t] = running
    return returns


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, gae_lambda: float) -> Tensor:
    """Generalised advantage estimates (Schulman et al. 2016), ``[T, B] -> [T, B]``.

    ``values[t]`` estimates the return from step ``t``; the value after an
    episode's last step is 0 (episodes end by termination or at the horizon, as
    in the MAML reference implementations). Masked steps get 0.
    """
    values = values * mask
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (deltas[t] + gamma * gae_lambda * running) * mask[t]
        advantages[t] = running
    return advantages


def normalize(values: Tensor, mask: Tensor, num_tasks: int, eps: float = 1e-8) -> Tensor:
    """Zero mean, unit standard deviation over each task's unmasked entries; ``[T, B] -> [T, B]``."""
    horizon, slots = values.shape
    per = values.view(horizon, num_tasks, -1)
    weights = mask.view(horizon, num_tasks, -1)
    count = weights.sum(dim=(0, 2), keepdim=True).clamp_min(1.0)
    mean = (per * weights).sum(dim=(0, 2), keepdim=True) / count
    std = (((per - mean) * weights) ** 2).sum(dim=(0, 2), keepdim=True).div(count).sqrt()
    return ((per - mean) / (std + eps) * weights).view(horizon, slots)


def transition_features(observations: Tensor, actions: Tensor, rewards: Tensor, next_observations: Tensor) -> Tensor:
    """``(s, a, r, s')`` concatenated on the last axis: ``[..., 2 obs_dim + act_dim + 1]``."""
    return torch.cat([observations, actions, rewards.unsqueeze(-1), next_observations], dim=-1)


class Memory(NamedTuple):
    """Transitions of each task's earlier episodes, the context of later ones.

    Attributes:
        transitions: ``[N, M, F]`` rows of :func:`transition_features`.
        mask: ``[N, M]`` float, 1 for filled rows (a task may have fewer than ``M``).
    """

    transitions: Tensor
    mask: Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.transitions.shape[0])

    def select(self, tasks: slice) -> Memory:
        """The memories of the tasks in ``tasks``."""
        return Memory(self.transitions[tasks], self.mask[tasks])


def build_memory(episodes: Episodes, size: int, generator: torch.Generator, previous: Memory | None = None) -> Memory:
    """A memory of up to ``size`` transitions per task from ``episodes`` (and ``previous``).

    When a task has more transitions than ``size``, a uniform random subset is
    kept (drawn from ``generator`` on the CPU, so it is device-independent).
    """
    if size <= 0:
        raise ValueError(f"memory size must be positive, got {size}")
    num_tasks = episodes.num_tasks
    feats = transition_features(episodes.observations, episodes.actions, episodes.rewards, episodes.next_observations)
    horizon, slots, width = feats.shape
    per_task = slots // num_tasks
    rows = feats.view(horizon, num_tasks, per_task, width).transpose(0, 1).reshape(num_tasks, -1, width)
    valid = episodes.mask.view(horizon, num_tasks, per_task).transpose(0, 1).reshape(num_tasks, -1)
    if previous is not None:
        rows = torch.cat([previous.transitions.to(rows), rows], dim=1)
        valid = torch.cat([previous.mask.to(valid), valid], dim=1)
    out = rows.new_zeros(num_tasks, size, width)
    out_mask = valid.new_zeros(num_tasks, size)
    for task in range(num_tasks):
        index = torch.nonzero(valid[task] > 0).squeeze(-1).cpu()
        if len(index) > size:
            index = index[torch.randperm(len(index), generator=generator)[:size]].sort().values
        index = index.to(rows.device)
        out[task, : len(index)] = rows[task, index]
        out_mask[task, : len(index)] = 1.0
    return Memory(out, out_mask)
