"""Sampling-speed measurements: the per-core physics limit, Gymnasium's
``SyncVectorEnv`` and a batched simulator, each driven by the same torch MLP.

Rates are env-steps per second of wall-clock time; ratios are taken between
measurements of one run, since absolute speeds drift on shared machines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.episodes import Memory
from metarl.sampling import BatchedEnv
from metarl.training import torch_threads


def rss_bytes() -> int:
    """Resident memory of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def mlp_policy(obs_dim: int, act_dim: int, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A batched 64x64 tanh MLP (the classic MAML policy size): ``[B, obs] -> [B, act]``."""
    generator = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, act_dim))
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * (0.5 / max(param.shape[-1], 1) ** 0.5))

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return torch.tanh(net(torch.as_tensor(obs, dtype=torch.float32))).numpy().astype(np.float64)

    return act


def raw_step_rate(
    step: Callable[[np.ndarray], None], reset: Callable[[], None], controls: np.ndarray, seconds: float
) -> float:
    """Env-steps/s of a bare single-thread loop replaying ``controls [H, act_dim]``
    (recorded from the benchmark's policy, so both loops see alike states);
    ``step(ctrl)`` is one ``mj_step(nstep=frame_skip)``."""
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        reset()
        for ctrl in controls:
            step(ctrl)
        steps += len(controls)
    return steps / (time.perf_counter() - start)


def record_controls(env: Any, policy: Callable[[np.ndarray], np.ndarray], steps: int) -> np.ndarray:
    """The actions ``policy`` takes in ``steps`` steps of a single env, ``[steps, act_dim]``."""
    obs, _ = env.reset(seed=0)
    controls = []
    for _ in range(steps):
        action = policy(obs[None])[0]
        controls.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(controls)


def vector_env_rate(envs: Any, policy: Callable[[np.ndarray], np.ndarray], seconds: float) -> float:
    """Env-steps/s of a Gymnasium vector env (autoreset) with ``policy`` in the loop."""
    obs, _ = envs.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        obs, *_ = envs.step(policy(obs))
        steps += envs.num_envs
    return steps / (time.perf_counter() - start)


def batched_rate(sim: BatchedEnv, policy: Callable[[np.ndarray], np.ndarray], seconds: float) -> dict[str, float]:
    """Env-steps/s of a batched simulator with ``policy`` in the loop.

    Episodes run to their end (horizon or termination); a new batch of episodes
    starts when every slot has ended. Only steps of running slots count.
    """
    obs = sim.reset()
    steps, episodes, terminated = 0, sim.num_slots, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        result = sim.step(policy(obs))
        steps += int(result.info["active"].sum())
        terminated += int(result.info["terminated"].sum())
        obs = result.obs
        if result.done.all():
            episodes += sim.num_slots
            obs = sim.reset()
    elapsed = time.perf_counter() - start
    return {"steps_per_s": steps / elapsed, "terminated_fraction": terminated / episodes}


def policy_step_seconds(
    policy: Any,
    params: dict[str, torch.Tensor],
    num_tasks: int,
    obs: np.ndarray,
    steps: int,
    memory: Memory | None = None,
) -> float:
    """Seconds per sampling step of ``policy`` alone (``act`` + ``observe``) on ``obs [B, obs_dim]``,
    with ``params`` shared or per task and the context ``memory``, on one torch thread as
    :func:`metarl.sampling.sample` runs it (the trainer samples with one thread)."""
    slots = obs.shape[0]
    device = next(iter(params.values())).device
    observations = torch.as_tensor(obs, dtype=torch.float32, device=device)
    rewards = torch.zeros(slots, device=device)
    with torch_threads(1), torch.no_grad():
        state = policy.start(params, num_tasks, slots, memory)
        start = time.perf_counter()
        for _ in range(steps):
            action = policy.act(params, observations, state).base_dist.loc
            state = policy.observe(params, state, observations, action, rewards, observations)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / steps


def physics_step_seconds(sim: BatchedEnv, act_dim: int, steps: int) -> float:
    """Seconds per batched step of ``sim`` alone, with zero actions."""
    sim.reset()
    actions = np.zeros((sim.num_slots, act_dim))
    start = time.perf_counter()
    done = 0
    for _ in range(steps):
        result = sim.step(actions)
        done += 1
        if result.done.all():
            sim.reset()
    return (time.perf_counter() - start) / done
