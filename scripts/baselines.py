"""Stable-Baselines3 baselines on the held-out tasks of scripts/evaluate.py.

    python scripts/baselines.py --env half_cheetah_vel --from-eval eval.json        # budgets of that evaluation
    python scripts/baselines.py --env point_nav --run runs/<run> --kinds scratch   # budgets of that run
    python scripts/baselines.py --env half_cheetah_vel --multitask-steps 1000000 --plan

Kinds (--kinds, default all): scratch (one agent per held-out task, trained with
1x, 10x, 100x the adaptation budget: the env-steps one inner step of the
meta-trained policy uses, episodes_per_task x horizon), multitask (one agent on
the training distribution, task hidden, with meta-training's env-steps, then
fine-tuned per task with the adaptation budget) and oracle (the same with the
task's parameters in the observation). Budgets come from --from-eval, else
--run, else the family's preset; --adaptation-steps and --multitask-steps set
them explicitly (recorded in the reports). multitask and oracle need
meta-training's env-steps (--run, --from-eval or --multitask-steps). The plan
and its estimated time are printed first (--plan: only that). --jobs N trains N
independent agents (scratch, the fine-tunes) at once in worker processes, one
torch thread each; the numbers are the same for every N.

Every agent is saved, with a record.json beside its model, as soon as it is
trained: after an interruption (Ctrl-C, a kill, a lost machine) the same
command again reuses the saved agents and trains only the rest.

Hyperparameters: rl-baselines3-zoo's for the robot (HalfCheetah, Ant, Hopper,
Walker2d), SB3 defaults for point_nav; rollout sizes fitted to small budgets
(agents.baselines.fit_to_budget). PPO is the default; SAC (--algo sac) is the
usual practitioner's choice on the MuJoCo locomotion families, but trains about
6-8x slower per env-step here (SPEED_ESTIMATE), so mind the printed estimate. Writes to --out (default
results/<env>/<split>/<algo>__<seed>/): <kind>.json (schema: agents.baselines; it
records its own command, config and hyperparameters, so kinds run one at a time into
one directory each keep theirs) and the models under <kind>/; --csv adds every number in
evaluate.py's long CSV format (curve by_budget, mode = kind).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import envs  # noqa: E402
from agents.baselines import ALGORITHMS, KINDS, BaselineRun, hyperparameters, plan, resolve  # noqa: E402
from metarl import plots  # noqa: E402
from metarl.training import torch_threads  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, help=f"task family: {', '.join(envs.names())}")
    p.add_argument("--variant", default="default", help="variant of the family")
    p.add_argument("--split", help="held-out tasks: test or ood (default: --from-eval's, else test)")
    p.add_argument("--algo", default="ppo", help=f"{', '.join(ALGORITHMS)} (default ppo)")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), help=f"some of {', '.join(KINDS)} (default all)")
    p.add_argument("--multipliers", nargs="+", type=int, default=[1, 10, 100], help="scratch budgets (x adaptation)")
    p.add_argument("--from-eval", type=Path, metavar="FILE", help="an evaluation report (evaluate.py --json)")
    p.add_argument("--run", type=Path, metavar="RUN_DIR", help="the meta-training run compared with")
    p.add_argument("--adaptation-steps", type=int, metavar="N", help="adaptation budget per task, explicitly")
    p.add_argument("--multitask-steps", type=int, metavar="N", help="multitask/oracle budget, explicitly")
    p.add_argument("--num-tasks", type=int, default=0, help="the first K held-out tasks only (default 0: all)")
    p.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per task (default 10)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the evaluation episodes (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the agents (default 0)")
    p.add_argument("--out", type=Path, help="output directory (default results/<env>/<split>/<algo>__<seed>)")
    p.add_argument("--csv", type=Path, help="also write every number to this CSV file")
    p.add_argument("--jobs", type=int, default=1, help="agents trained at once, one process and core each (default 1)")
    p.add_argument("--plan", action="store_true", help="print the plan and its estimated time, train nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = " ".join(["python", "scripts/baselines.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        horizon = envs.make(args.env, variant=args.variant).horizon
        report = json.loads(args.from_eval.read_text()) if args.from_eval else None
        config = resolve(
            args.env,
            horizon,
            report,
            args.run,
            args.adaptation_steps,
            args.multitask_steps,
            args.split,
            variant=args.variant,
            algo=args.algo,
            kinds=tuple(args.kinds),
            multipliers=tuple(args.multipliers),
            num_tasks=args.num_tasks,
            eval_episodes=args.eval_episodes,
            eval_seed=args.eval_seed,
            seed=args.seed,
        )
        family = envs.make(config.env, variant=config.variant, split=config.training_split)
        tasks = family.held_out_tasks(config.split)[: config.num_tasks or None]
        name = config.env if config.variant == "default" else f"{config.env}__{config.variant}"
        out = args.out or Path("results") / name / config.split / f"{config.algo}__{config.seed}"
        done = [kind for kind in config.kinds if (out / f"{kind}.json").exists()]
        if done and not args.plan:
            raise ValueError(f"{out} already holds {', '.join(done)}.json; use another --out or remove them")
        progress = functools.partial(print, flush=True)
        run = BaselineRun(family, tasks, config, out, command, progress, jobs=args.jobs)
        reused = run.reusable()
    except (ValueError, OSError) as error:
        print(f"baselines: error: {error}", file=sys.stderr)
        return 2
    setting = hyperparameters(config.algo, config.env)
    print(f"{out}: {config.algo} ({setting.source}) on {len(tasks)} {config.split} tasks of {config.env}")
    print("\n".join("  " + line for line in plan(config, len(tasks), args.jobs)), flush=True)
    if reused:
        print(f"  {reused} agents saved in {out} by an interrupted run are reused, not trained again", flush=True)
    if args.plan:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    try:
        with torch_threads(1):
            reports = [run.run(kind) for kind in config.kinds]
    except KeyboardInterrupt:
        saved = run.reusable()
        print(f"baselines: interrupted; {saved} agents saved in {out}: the same command continues", file=sys.stderr)
        return 130
    for r in reports:
        c = r["by_budget"]
        print(f"{r['kind']}: " + ", ".join(f"x{k}: {m:.1f}" for k, m in zip(c["x"], c["mean"], strict=True)))
    if args.csv:
        plots.write_csv(reports, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
