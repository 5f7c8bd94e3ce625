"""Benchmarks. ``python scripts/benchmark.py sampling --env half_cheetah_vel [--json FILE]``
measures in one run (a) a raw single-thread ``mj_step`` loop, the per-core limit,
(b) Gymnasium's ``SyncVectorEnv`` and (c) metarl's batched simulator on all cores,
(b) and (c) with the same batched 64x64 torch MLP choosing the actions.

``python scripts/benchmark.py fisher RUN_DIR [--checkpoint NAME]`` takes one TRPO step from
a saved checkpoint on one freshly sampled meta-batch with each subsample of the Fisher-vector
products (``fvp_tasks:fvp_episodes``), the same data and parameters for all, and reports the
KL of the full step over ``max_kl`` (1 where the subsample's curvature predicts the KL exactly)
and the conjugate gradient's seconds.

``python scripts/benchmark.py render [--env half_cheetah_vel] [--width 320 --height 240]``
measures rendered frames/s of a bare ``mujoco.Renderer`` loop against metarl's
render path (scripts/render.py's rollout with frames, captions and side-by-side
composition) at the same resolution."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (render); before mujoco is imported

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import envs  # noqa: E402
from agents.factory import make_learner, make_policy  # noqa: E402
from envs.vector import available_cores  # noqa: E402
from metarl import benchmark  # noqa: E402
from metarl.config import MAMLConfig, TrainConfig  # noqa: E402
from metarl.episodes import Memory  # noqa: E402
from metarl.params import detached, expand_params  # noqa: E402
from metarl.training import MetaTrainer, keep_freed_memory, resolve_device  # noqa: E402


def raw_limit(family: envs.TaskFamily, policy: Any, seconds: float) -> float | None:
    """(a): env-steps/s of one thread stepping the plain model with the policy's recorded actions."""
    robot = getattr(family, "robot", None)
    if robot is None:
        return None
    model = robot.base_model()
    data = mujoco.MjData(model)

    def step(ctrl: np.ndarray) -> None:
        data.ctrl[:] = ctrl
        mujoco.mj_step(model, data, nstep=robot.frame_skip)

    controls = benchmark.record_controls(family.make_env(family.default_task()), policy, family.horizon)
    return benchmark.raw_step_rate(step, lambda: mujoco.mj_resetData(model, data), controls, seconds)


def sampling(family: envs.TaskFamily, sizes: list[int], vector_envs: int, seconds: float) -> dict[str, Any]:
    """Run the three measurements for ``family``; returns the JSON-able results."""
    cores = available_cores()
    policy = benchmark.mlp_policy(family.observation_dim, family.action_dim)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"env": family.name, "cores": cores, "seconds": seconds}
    raw = raw_limit(family, policy, seconds)
    out["raw_single_thread"] = raw
    tasks = family.sample_tasks(rng, vector_envs)
    vec = gym.vector.SyncVectorEnv([lambda t=t: gym.make(envs.gym_id(family.name), task=t) for t in tasks])
    sync = benchmark.vector_env_rate(vec, policy, seconds)
    vec.close()
    out["sync_vector_env"] = {"num_envs": vector_envs, "steps_per_s": sync}
    print(f"{family.name} on {cores} cores")
    print(
        f"  (a) raw mj_step loop, 1 thread : {raw or float('nan'):>10.0f} steps/s"
        + ("" if raw else "  (no physics engine)")
    )
    print(f"  (b) SyncVectorEnv x{vector_envs:<5}      : {sync:>10.0f} steps/s")
    out["batched"] = []
    for size in sizes:
        before = benchmark.rss_bytes()
        sim = family.batch(family.sample_tasks(rng, size), episodes_per_task=1, seed=0)
        measured = benchmark.batched_rate(sim, policy, seconds)
        row = {"slots": size, **measured, "memory_per_slot_bytes": (benchmark.rss_bytes() - before) / size}
        row["ratio_to_limit"] = measured["steps_per_s"] / (raw * cores) if raw else None
        row["ratio_to_sync"] = measured["steps_per_s"] / sync
        out["batched"].append(row)
        limit = f"{row['ratio_to_limit']:.2f}" if raw else "n/a"
        print(
            f"  (c) batched B={size:<5}          : {measured['steps_per_s']:>10.0f} steps/s"
            f"  c/(a x cores)={limit}  c/b={row['ratio_to_sync']:.1f}"
            f"  memory/slot={row['memory_per_slot_bytes'] / 1024:.0f} KiB"
            f"  terminated={measured['terminated_fraction']:.2f}"
        )
        del sim
    return out


def learner(
    env: str,
    policies: list[str],
    device: str,
    iterations: int,
    maml: MAMLConfig,
    seconds: float,
    context: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Seconds per meta-iteration (sampling, inner loop, TRPO) of the classic configuration
    (40 tasks x 20 episodes, one inner step, 10 CG iterations), per policy.

    ``context`` overrides the attention policy's ``window`` and ``memory_size`` (TrainConfig fields).
    """
    context = context or {}
    family = envs.make(env)
    cores = available_cores()
    raw = raw_limit(family, benchmark.mlp_policy(family.observation_dim, family.action_dim), seconds)
    out: dict[str, Any] = {
        "env": env,
        "cores": cores,
        "device": device,
        "raw_single_thread": raw,
        "maml": vars(maml),
        "context": context,
    }
    print(f"{env} on {cores} cores, learner on {device}; raw limit {raw or float('nan'):.0f} steps/s/core")
    for name in policies:
        config = TrainConfig(env=env, policy=name, device=device, maml=maml, **context)
        torch.manual_seed(0)
        policy = make_policy(config, family.observation_dim, family.action_dim).to(resolve_device(device))
        trainer = MetaTrainer(config, family, policy, make_learner(config, policy), Path("."), resolve_device(device))
        runs = [trainer.step() for _ in range(iterations + 1)][1:]  # the first warms up
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        sim = family.batch(
            family.sample_tasks(np.random.default_rng(0), config.meta_batch_size), config.episodes_per_task
        )
        physics = benchmark.physics_step_seconds(sim, family.action_dim, 50)
        acting = acting_seconds(policy, config, sim.reset())
        row = {
            "seconds_per_iteration": mean["time/iteration"],
            "sampling_s": mean["time/sampling"],
            "inner_loop_s": mean["time/inner_loop"],
            "trpo_s": mean["time/trpo"],
            "trpo_parts_s": {
                k: mean[k]
                for k in mean
                if k.startswith("time/") and k.split("/")[1] in ("meta_gradient", "conjugate_gradient", "line_search")
            },
            "sampling_steps_per_s": mean["speed/env_steps_per_s"],
            "sampling_ratio_to_limit": mean["speed/env_steps_per_s"] / (raw * cores) if raw else None,
            # the mean of the two phases, each half of the sampled steps
            "policy_to_physics": (acting["pre"] + acting["post"]) / 2 / physics,
            "policy_to_physics_by_phase": {k: v / physics for k, v in acting.items()},
        }
        out[name] = row
        print(
            f"  {name:>9}: {row['seconds_per_iteration']:.2f} s/it = sampling {row['sampling_s']:.2f}"
            f" + inner {row['inner_loop_s']:.2f} + trpo {row['trpo_s']:.2f}"
            f" ({', '.join(f'{k[5:]} {v:.2f}' for k, v in row['trpo_parts_s'].items())});"
            f" sampling {row['sampling_steps_per_s']:.0f} steps/s"
            + (f" = {row['sampling_ratio_to_limit']:.2f} of the limit" if raw else "")
            + f"; policy/physics time {row['policy_to_physics']:.2f}"
            + " (before / after adaptation {pre:.2f} / {post:.2f})".format(**row["policy_to_physics_by_phase"])
        )
    return out


ACTING_STEPS = 50
"""Sampling steps timed per phase by :func:`acting_seconds`."""


def acting_seconds(policy: Any, config: TrainConfig, obs: np.ndarray) -> dict[str, float]:
    """Seconds per sampling step of the policy alone in the two phases of an iteration: ``pre``
    (the meta-parameters, shared by the tasks, no memory) and ``post`` (per-task adapted parameters
    and, for context policies, a full memory of ``memory_size`` transitions per task)."""
    tasks = config.meta_batch_size
    params = detached(policy.params())
    reference = next(iter(params.values()))
    # the trainer's adapted parameters are per-task tensors of their own, not views of shared ones
    adapted = {k: v.clone() for k, v in expand_params(params, tasks).items()}
    memory = None
    if policy.uses_context:
        shape = (tasks, config.memory_size, policy.transition_dim)
        transitions = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        memory = Memory(transitions.to(reference), torch.ones(tasks, config.memory_size, device=reference.device))
    return {
        "pre": benchmark.policy_step_seconds(policy, params, tasks, obs, ACTING_STEPS),
        "post": benchmark.policy_step_seconds(policy, adapted, tasks, obs, ACTING_STEPS, memory),
    }


def parse_subsamples(text: str) -> list[tuple[int, int]]:
    """``"10:0,0:5"`` -> ``[(10, 0), (0, 5)]`` (fvp_tasks:fvp_episodes; 0: all); ValueError otherwise."""
    try:
        pairs = [tuple(int(n) for n in item.split(":")) for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(pair) != 2 or min(pair) < 0 for pair in pairs):
        raise ValueError(f"--subsamples {text!r}: expected comma-separated TASKS:EPISODES pairs of integers >= 0")
    return [(pair[0], pair[1]) for pair in pairs]


def fisher(run_dir: Path, name: str | None, subsamples: list[tuple[int, int]]) -> dict[str, Any]:
    """One TRPO step per Fisher subsample from the checkpoint, on the same sampled meta-batch."""
    import dataclasses

    from agents.maml_trpo import MAMLTRPO
    from scripts.runs import load_run

    trainer, state = load_run(run_dir, name, device="cpu")
    config, policy = trainer.config, trainer.policy
    pre, post, memory, steps, *_ = trainer.collect()  # each step adapts again from the restored parameters
    max_kl = config.maml.max_kl_at(trainer.iteration)
    saved = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    out: dict[str, Any] = {"run": str(run_dir), "iteration": int(state["iteration"]), "max_kl": max_kl, "rows": []}
    print(f"{run_dir} at iteration {out['iteration']}: one TRPO step per Fisher subsample, max_kl {max_kl:g}")
    for tasks, episodes in subsamples:
        learner = MAMLTRPO(policy, dataclasses.replace(config.maml, fvp_tasks=tasks, fvp_episodes=episodes))
        metrics = learner.step(pre, post, memory, inner_steps=steps, max_kl=max_kl)
        policy.load_state_dict(saved)
        row = {"fvp_tasks": tasks, "fvp_episodes": episodes, **metrics}
        out["rows"].append(row)
        print(
            f"  tasks {tasks or 'all':>3}, episodes {episodes or 'all':>3}: full-step KL / max_kl"
            f" {row['full_step_kl_ratio']:6.2f}, line search {row['line_search_steps']:.0f} steps,"
            f" improvement {row['surrogate_improvement']:.4f}, conjugate gradient"
            f" {row['seconds/conjugate_gradient']:.2f} s"
        )
    return out


def render_speed(env: str, width: int, height: int, seconds: float) -> dict[str, Any]:
    """Rendered frames/s of (a) a bare ``mujoco.Renderer`` loop (``update_scene`` and
    ``render`` on the plain model stepped with zero controls) and (b) metarl's render
    path: two panels (before/after) of an MLP policy in the task's Gymnasium env,
    tracked camera, captions, side-by-side composition; (b) counts each panel's
    frame. The two alternate in three rounds so machine load affects both alike."""
    from metarl import video
    from metarl.training import torch_threads
    from scripts.render import caption_lines

    family: Any = envs.make(env)  # a MujocoFamily (checked below)
    robot = getattr(family, "robot", None)
    if robot is None:
        raise ValueError(f"{env} is not rendered by MuJoCo; use a MuJoCo family, e.g. half_cheetah_vel")
    backend = video.ensure_gl(width, height)
    task = family.default_task()
    model = family.task_model(task)
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    policy = benchmark_policy(family)
    params = detached(policy.params())

    def bare(until: float) -> int:
        frames = 0
        while time.perf_counter() < until:
            mujoco.mj_step(model, data, nstep=robot.frame_skip)
            renderer.update_scene(data)
            renderer.render()
            frames += 1
        return frames

    made = [family.make_env(task, render_mode="rgb_array", width=width, height=height) for _ in range(2)]

    def composed() -> Any:  # endless composed frames of the two panels (a new episode when one ends)
        while True:
            panels = [
                video.Panel(video.rollout_frames(e, policy, params, seed=0), caption_lines(task.describe(), stage))
                for e, stage in zip(made, ("before adaptation", "after 1 step"), strict=True)
            ]
            yield from video.lockstep([panels])

    stream = composed()
    counts, spent = {"bare": 0, "metarl": 0}, {"bare": 0.0, "metarl": 0.0}
    with torch_threads(1):
        bare(time.perf_counter() + 0.1)  # warm up: GL contexts, first frames
        next(stream)
        for _ in range(3):
            for name in ("bare", "metarl"):
                start = time.perf_counter()
                until = start + seconds / 3
                if name == "bare":
                    counts[name] += bare(until)
                else:
                    while time.perf_counter() < until:
                        next(stream)
                        counts[name] += len(made)
                spent[name] += time.perf_counter() - start
    renderer.close()
    for e in made:
        e.close()
    rates = {name: counts[name] / spent[name] for name in counts}
    out = {
        "env": env,
        "width": width,
        "height": height,
        "seconds": seconds,
        "gl_backend": backend,
        "bare_renderer_fps": rates["bare"],
        "metarl_fps": rates["metarl"],
        "ratio": rates["metarl"] / rates["bare"],
    }
    print(f"{env} at {width}x{height} ({backend}), frames/s per rendered panel")
    print(f"  (a) bare mujoco.Renderer loop         : {rates['bare']:8.1f}")
    print(f"  (b) metarl rollout+caption+compose    : {rates['metarl']:8.1f}   b/a = {out['ratio']:.2f}")
    return out


def benchmark_policy(family: envs.TaskFamily) -> Any:
    """A fresh MAML MLP policy (``agents.policies.GaussianMLPPolicy``) for ``family``."""
    from agents.policies import GaussianMLPPolicy

    torch.manual_seed(0)
    return GaussianMLPPolicy(family.observation_dim, family.action_dim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("sampling", help="env-steps/s: raw mj_step loop vs SyncVectorEnv vs the batched simulator")
    cmd.add_argument("--env", default="half_cheetah_vel", help=f"family, one of: {', '.join(envs.names())}")
    cmd.add_argument("--batch-sizes", default="64,256,1024", help="slots of the batched simulator, comma-separated")
    cmd.add_argument("--vector-envs", type=int, default=256, help="environments in the SyncVectorEnv")
    cmd.add_argument("--seconds", type=float, default=4.0, help="measuring time per configuration")
    cmd.add_argument("--json", type=Path, help="also write the results to this JSON file")
    cmd = sub.add_parser("learner", help="seconds per meta-iteration of the classic configuration, split into parts")
    cmd.add_argument("--env", default="half_cheetah_vel", help=f"family, one of: {', '.join(envs.names())}")
    cmd.add_argument("--policies", default="mlp,attention", help="policies to measure, comma-separated")
    cmd.add_argument("--device", default="cpu", help="learner device: cpu, cuda or auto")
    cmd.add_argument("--iterations", type=int, default=2, help="measured meta-iterations (after one warm-up)")
    cmd.add_argument("--task-chunk", type=int, default=0, help="tasks adapted per batched computation (0: all)")
    cmd.add_argument("--fvp-curvature", default=MAMLConfig.fvp_curvature, help="adapted or exact")
    cmd.add_argument(
        "--fvp-tasks", type=int, default=MAMLConfig.fvp_tasks, help="tasks of the Fisher-vector products (0: all)"
    )
    cmd.add_argument(
        "--fvp-episodes", type=int, default=MAMLConfig.fvp_episodes, help="episodes per task of the products (0: all)"
    )
    cmd.add_argument(
        "--window", type=int, default=TrainConfig.window, help="attention policy: transitions in the causal window"
    )
    cmd.add_argument(
        "--memory-size", type=int, default=TrainConfig.memory_size, help="attention policy: transitions in the memory"
    )
    cmd.add_argument("--seconds", type=float, default=3.0, help="measuring time of the raw limit")
    cmd.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's malloc defaults (no keep_freed_memory, as meta_train calls it), to measure what it saves",
    )
    cmd.add_argument("--json", type=Path, help="also write the results to this JSON file")
    cmd = sub.add_parser("fisher", help="how well subsampled Fisher-vector products predict a TRPO step's KL")
    cmd.add_argument("run", type=Path, metavar="RUN_DIR", help="a meta_train.py run directory")
    cmd.add_argument("--checkpoint", help="checkpoint file in RUN_DIR (default: the last, checkpoint.pt)")
    cmd.add_argument(
        "--subsamples",
        default="10:0,20:0,0:0,0:5,0:10",
        help="comma-separated fvp_tasks:fvp_episodes pairs to compare (0: all)",
    )
    cmd.add_argument("--json", type=Path, help="also write the results to this JSON file")
    cmd = sub.add_parser("render", help="frames/s: bare mujoco.Renderer loop vs metarl's render path")
    cmd.add_argument("--env", default="half_cheetah_vel", help=f"family, one of: {', '.join(envs.names())}")
    cmd.add_argument("--width", type=int, default=320, help="frame width in pixels")
    cmd.add_argument("--height", type=int, default=240, help="frame height in pixels")
    cmd.add_argument("--seconds", type=float, default=3.0, help="measuring time of each of the two")
    cmd.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.command == "render":
        return render_command(args, parser)
    if args.command == "fisher":
        try:
            results = fisher(args.run, args.checkpoint, parse_subsamples(args.subsamples))
        except ValueError as error:
            parser.error(str(error))
        write_json(args.json, results)
        return 0
    try:
        family = envs.make(args.env)
        if args.command == "learner":
            maml = MAMLConfig(
                task_chunk=args.task_chunk,
                fvp_curvature=args.fvp_curvature,
                fvp_tasks=args.fvp_tasks,
                fvp_episodes=args.fvp_episodes,
            )
            context = {"window": args.window, "memory_size": args.memory_size}
            TrainConfig(env=args.env, maml=maml, **context)  # validates them
            resolve_device(args.device)
        else:
            sizes = [int(b) for b in args.batch_sizes.split(",")]
            if min(sizes) <= 0 or args.vector_envs <= 0 or args.seconds <= 0:
                raise ValueError("--batch-sizes, --vector-envs and --seconds must be positive")
    except ValueError as error:
        parser.error(str(error))
    if args.command == "learner":
        kept = False if args.system_malloc else keep_freed_memory()
        print(f"freed memory kept for reuse (keep_freed_memory): {kept}")
        results = learner(args.env, args.policies.split(","), args.device, args.iterations, maml, args.seconds, context)
        results["keep_freed_memory"] = kept
    else:
        # One torch thread: the policy's matrices are small, and idle OpenMP workers
        # spinning beside MuJoCo's threads cost more than they give (2x here).
        torch.set_num_threads(1)
        results = sampling(family, sizes, args.vector_envs, args.seconds)
    write_json(args.json, results)
    return 0


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` (with its parent folders) unless it is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))


def render_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``benchmark.py render``: check the arguments, measure, write the JSON."""
    from metarl.video import RenderUnavailable

    try:
        envs.make(args.env)
        if args.width < 16 or args.height < 16 or args.seconds <= 0:
            raise ValueError("--width and --height must be >= 16 and --seconds positive")
        results = render_speed(args.env, args.width, args.height, args.seconds)
    except ValueError as error:
        parser.error(str(error))
    except RenderUnavailable as error:
        print(f"benchmark: error: {error}", file=sys.stderr)
        return 1
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
