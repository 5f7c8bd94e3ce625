"""Per-iteration metrics to a CSV file and TensorBoard, resumable."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class MetricLogger:
    """Append one row of metrics per iteration to ``metrics.csv`` and TensorBoard events.

    On resume, rows after ``resume_iteration`` (written by the interrupted
    iteration) are dropped from the CSV and purged from TensorBoard.
    """

    def __init__(self, run_dir: Path, resume_iteration: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if resume_iteration is not None and self.path.exists():
            with self.path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= resume_iteration]
        self.fields: list[str] = list(self.rows[0]) if self.rows else []
        self._rewrite()
        purge = None if resume_iteration is None else resume_iteration + 1
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if self.fields:
                writer.writeheader()
                writer.writerows(self.rows)

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, iteration)
        self.rows.append(row)
        if list(row) != self.fields:
            self.fields = list(dict.fromkeys([*self.fields, *row]))
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def close(self) -> None:
        self.writer.close()
