"""Regenerate the README's results tables from saved reports.

    python scripts/results.py                          # print the tables (markdown)
    python scripts/results.py --write README.md        # replace them between the results markers

Reads every report below --dir (default results/), any layout, for example:

    results/<env>/<split>/eval__<policy>__<seed>.json   scripts/evaluate.py RUN --json ... (--episodes 11)
    results/<env>/<split>/<algo>__<seed>/scratch.json   scripts/baselines.py (also multitask.json, oracle.json)

Evaluation reports have by_gradient_steps, baseline reports by_budget; other
JSON files are skipped. One table per family and split (half_cheetah_vel,
half_cheetah_dir, half_cheetah_mass, point_nav always, test and where defined
ood; others when saved), rows MAML + attention, MAML + MLP, attention context
only, multi-task + fine-tuning, from scratch (1x, 10x, 100x the adaptation
budget, in the "after 1/10/100 steps" columns), oracle; cells without data
are "–"; reports of the same row are averaged over seeds (one seed twice
is an error); each row's note gives its commands and seeds (metarl.results
says exactly what each cell is).
--write replaces the text between <!-- results:start --> and <!-- results:end -->.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import envs  # noqa: E402
from metarl import results  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("results"), help="where the reports are (default results/)")
    p.add_argument("--write", type=Path, metavar="FILE", help="put the tables between the results markers of FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        reports = results.load_reports([args.dir])
        complete = [results.complete(r, envs.make(results.section(r)[0]).horizon) for r in reports]
        table = results.results_markdown(complete)
        if args.write is not None:
            args.write.write_text(results.replace_marked(args.write.read_text(), table))
    except (ValueError, OSError) as error:
        print(f"results: error: {error}", file=sys.stderr)
        return 2
    if args.write is None:
        print(table, end="")
    else:
        print(f"{args.write}: results tables from {len(reports)} reports in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
