"""The meta-training loop: sample, adapt, sample again, step; log and checkpoint.

One meta-iteration (each arrow one call)::

    family.sample_tasks(rng, meta_batch_size) -> family.batch(tasks, episodes_per_task)
      -> sample(sim, policy, params)                 pre-adaptation episodes
      -> learner.adapt(pre)                          per-task fast parameters, with their graph
      -> sample(sim, policy, fast, memory)           post-adaptation episodes
      -> learner.step(pre, post, memory, fast)       TRPO on the meta-objective
      -> logger.log(metrics); checkpoint.save(...)

Randomness comes from one ``numpy.random.Generator`` (tasks, simulator seeds)
and one CPU ``torch.Generator`` (action noise, memory subsets), both saved in
every checkpoint, so a resumed run continues exactly as an uninterrupted one.
The time limit counts the run's training time, summed over the sessions that
resumed it (``elapsed_s`` in the checkpoint), so a resumed run stops where an
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from metarl import checkpoint
from metarl.config import TrainConfig
from metarl.episodes import Episodes, Memory, build_memory
from metarl.evaluation import training_cost
from metarl.logger import MetricLogger
from metarl.params import Params, detached
from metarl.sampling import sample

CHECKPOINT = "checkpoint.pt"


class Collected(NamedTuple):
    """One meta-iteration's data (:meth:`MetaTrainer.collect`).

    Attributes:
        pre: pre-adaptation episodes.
        post: post-adaptation episodes, sampled with ``detached(fast)``.
        memory: the post-adaptation episodes' context (attention policies), else None.
        inner_steps: the inner steps taken (None: the configured number; 0: context-only adaptation).
        stats: timings, env-steps and ``inner/step_norm``.
        fast: the adapted parameters with the inner loop's graph, which ``learner.step`` differentiates.
    """

    pre: Episodes
    post: Episodes
    memory: Memory | None
    inner_steps: int | None
    stats: dict[str, float]
    fast: Params


class TrainingDiverged(RuntimeError):
    """A loss or parameter became NaN or inf; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("invalid device=cuda: torch sees no CUDA device here (use --device cpu or auto)")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads (sampling: 1, so the policy's
    idle OpenMP workers do not compete with MuJoCo's threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""glibc's ``mallopt`` parameters (``malloc.h``)."""


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    The learner allocates and frees tensors of tens of MB many times per iteration (40 tasks x 4,000
    steps of activations). glibc serves each allocation above its mmap threshold (32 MB at most) with
    fresh pages from the kernel and unmaps them on free, and trims the heap's free top, so such tensors
    pay a page fault per 4 KiB page: 0.36-0.45 million faults per attention iteration of
    ``half_cheetah_vel``, which made its meta-gradient and line search take 1.4-1.8x as long. With no
    mmap and no trimming the pages are reused: the TRPO step took 0.82-0.84x its time (both policies) at
    1.15-1.2x the peak memory, with the same numbers (docs/speed.md). The entry points
    (``meta_train``, ``evaluate``, ``benchmark``) call this; a library user may. Process-wide; returns
    whether it applied (False where the C library is not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # -1 as the trim threshold is SIZE_MAX: never trim
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))


def run_name(config: TrainConfig) -> str:
    """``<env>__<policy>__<seed>__<time>``."""
    return f"{config.env}__{config.policy}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


class MetaTrainer:
    """Meta-trains ``policy`` with ``learner`` on ``family`` into ``run_dir``.

    Args:
        config: the resolved configuration (saved as ``config.json``).
        family: the task family (``envs.make(config.env, ...)``).
        policy: an ``agents.policies.Policy`` on ``device``.
        learner: an ``agents.MAMLTRPO`` of that policy.
        run_dir: the run's directory.
        device: the learner's device.
    """

    def __init__(
        self, config: TrainConfig, family: Any, policy: Any, learner: Any, run_dir: Path, device: torch.device
    ) -> None:
        self.config, self.family, self.policy, self.learner = config, family, policy, learner
        self.run_dir, self.device = run_dir, device
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.iteration = 0  # the next iteration to run
        self.elapsed = 0.0  # seconds of training so far (the sum of the iterations' time/iteration)

    # ------------------------------------------------------------ state
    def state(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "elapsed_s": self.elapsed,
            "config": self.config.to_dict(),
            "policy": {k: v.detach().cpu() for k, v in self.policy.state_dict().items()},
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": self.generator.get_state(),
            "metrics": metrics,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of this run (same env and policy)."""
        saved = TrainConfig.from_dict(state["config"])
        for name in ("env", "variant", "policy"):
            if getattr(saved, name) != getattr(self.config, name):
                raise checkpoint.CheckpointError(
                    f"checkpoint is for {name}={getattr(saved, name)!r}, not {getattr(self.config, name)!r}"
                )
        try:
            self.policy.load_state_dict(state["policy"])
        except RuntimeError as error:
            raise checkpoint.CheckpointError(
                f"checkpoint does not fit the policy: {str(error).splitlines()[0]}"
            ) from None
        self.rng.bit_generator.state = state["numpy_rng"]
        self.generator.set_state(state["torch_rng"])
        self.iteration = int(state["iteration"])
        if "elapsed_s" in state:
            self.elapsed = float(state["elapsed_s"])
        else:  # a checkpoint from before elapsed_s was saved: its iterations' times in metrics.csv
            cost = training_cost(self.run_dir, self.family.horizon, self.iteration)
            self.elapsed = cost["wall_clock_s"] if cost else 0.0

    # ------------------------------------------------------------ one iteration
    def collect(self) -> Collected:
        """Sample pre-adaptation episodes, adapt, sample post-adaptation episodes.

        The adaptation keeps its graph (second order unless ``first_order``), so that
        the TRPO step's meta-gradient does not adapt again. ``inner/step_norm`` in the
        statistics is the mean over tasks of the distance ``||phi_n - theta||`` the
        inner loop moved the parameters.
        """
        cfg = self.config
        context_only = self.policy.uses_context and bool(self.rng.random() < cfg.context_fraction)
        tasks = self.family.sample_tasks(self.rng, cfg.meta_batch_size, cfg.stratified_tasks)
        sim = self.family.batch(tasks, cfg.episodes_per_task, seed=int(self.rng.integers(2**31)))
        tic = time.perf_counter()
        with torch_threads(1):
            pre = sample(
                sim, self.policy, detached(self.policy.params()), len(tasks), self.generator, device=self.device
            )
        sampling = time.perf_counter() - tic
        tic = time.perf_counter()
        memory = build_memory(pre, cfg.memory_size, self.generator) if self.policy.uses_context else None
        steps = 0 if context_only else None
        fast = self.learner.adapt(pre, num_steps=steps)
        inner = time.perf_counter() - tic
        theta, acting = self.policy.params(), detached(fast)
        moved = torch.stack([(acting[k] - theta[k].detach()).flatten(1).square().sum(1) for k in fast]).sum(0)
        tic = time.perf_counter()
        with torch_threads(1):
            post = sample(sim, self.policy, acting, len(tasks), self.generator, memory=memory, device=self.device)
        sampling += time.perf_counter() - tic
        count = float(pre.mask.sum() + post.mask.sum())
        stats = {
            "time/sampling": sampling,
            "time/inner_loop": inner,
            "speed/env_steps": count,
            "speed/env_steps_per_s": count / sampling,
            "inner/step_norm": float(moved.sqrt().mean()),
        }
        if self.learner.step_sizes:  # learned inner step sizes: their mean over every adapted parameter
            sizes = [theta[k].detach().expand_as(theta[p]) for p, k in self.learner.step_sizes.items()]
            stats["inner/step_size"] = float(torch.cat([s.reshape(-1) for s in sizes]).mean())
        return Collected(pre, post, memory, steps, stats, fast)

    def step(self) -> dict[str, float]:
        """One meta-iteration; returns its metrics."""
        tic = time.perf_counter()
        pre, post, memory, steps, stats, fast = self.collect()
        std = float(self.policy.log_std.detach().exp().mean())  # the exploration noise of the sampled episodes
        outer = time.perf_counter()
        max_kl = self.config.maml.max_kl_at(self.iteration)
        result = self.learner.step(pre, post, memory, inner_steps=steps, max_kl=max_kl, fast=fast)
        del fast  # frees the inner loop's graph before the metrics
        stats["time/trpo"] = time.perf_counter() - outer
        pre_return, post_return = float(pre.task_returns().mean()), float(post.task_returns().mean())
        metrics = {
            "returns/pre": pre_return,
            "returns/post": post_return,
            "returns/gap": post_return - pre_return,
            "returns/context_only": float(steps == 0),
            "policy/std": std,
            "trpo/max_kl": max_kl,
            **{f"trpo/{k}": v for k, v in result.items() if not k.startswith("seconds/")},
            **{f"time/{k.split('/')[1]}": v for k, v in result.items() if k.startswith("seconds/")},
            **stats,
            "time/iteration": time.perf_counter() - tic,
        }
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        bad += [k for k, v in self.policy.params().items() if not torch.isfinite(v).all()]
        if bad:
            raise TrainingDiverged(
                f"iteration {self.iteration}: non-finite {', '.join(bad[:4])}; the last good checkpoint is kept "
                f"in {self.run_dir / CHECKPOINT} (try a smaller --max-kl or --inner-lr)"
            )
        return metrics

    # ------------------------------------------------------------ the loop
    def train(self, progress: bool = True) -> dict[str, float]:
        """Run the remaining iterations; returns the last metrics."""
        from tqdm import tqdm

        cfg = self.config
        resumed = self.iteration > 0
        logger = MetricLogger(self.run_dir, resume_iteration=self.iteration - 1 if resumed else None)
        metrics: dict[str, float] = {}
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not progress, unit="it", dynamic_ncols=True)
        deadline = time.monotonic() + 60.0 * cfg.time_limit - self.elapsed if cfg.time_limit else math.inf
        try:
            while self.iteration < cfg.iterations and time.monotonic() < deadline:
                metrics = self.step()
                logger.log(self.iteration, metrics)
                self.iteration += 1
                self.elapsed += metrics["time/iteration"]
                self.save(metrics)
                bar.update(1)
                bar.set_postfix(
                    pre=f"{metrics['returns/pre']:.1f}",
                    post=f"{metrics['returns/post']:.1f}",
                    kl=f"{metrics['trpo/kl']:.4f}",
                    s_it=f"{metrics['time/iteration']:.1f}",
                )
        finally:
            bar.close()
            logger.close()
        return metrics

    def save(self, metrics: dict[str, float]) -> None:
        """Write the latest checkpoint (atomically) and keep every ``checkpoint_every``-th."""
        path = self.run_dir / CHECKPOINT
        checkpoint.save(path, self.state(metrics))
        if self.iteration % self.config.checkpoint_every == 0 or self.iteration == self.config.iterations:
            shutil.copyfile(path, self.run_dir / f"checkpoint_{self.iteration:05d}.pt")
