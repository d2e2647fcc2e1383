"""Result tables: one row per evaluated feature set or protocol, as CSV and markdown.

Accuracies are percentages. ``nested`` is the honest figure (C chosen inside the training folds);
``C on test folds`` is the seed's optimistic choice, shown for comparison with it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .svm import CVResult

TABLE_TITLE = "Linear-SVM accuracy by features and protocol"
"""Title of the markdown table of ``analyze table`` and of the report."""

TABLE_CSV, TABLE_MD, TABLE_JSON = "table.csv", "table.md", "table.json"
"""The files of a per-layer table (the JSON one, of ``analyze table``, adds the protocol choice)."""

CSV_COLUMNS = (
    "features",
    "protocol",
    "dims",
    "rows_per_clip",
    "nested_mean",
    "nested_std",
    "fold_accuracy",
    "fold_C",
    "test_fold_C",
    "test_fold_mean",
    "paper",
    "seed",
    "seconds",
)


@dataclass(frozen=True)
class TableRow:
    features: str  # e.g. "pool5:mean", "pool5:mean+conv6:mean"
    protocol: str  # e.g. "clip mean", "paper 1 s windows over 10 s"
    dims: int
    rows_per_clip: float
    nested_mean: float  # %
    nested_std: float  # %, over folds
    fold_accuracy: tuple[float, ...]  # %
    fold_C: tuple[float, ...]
    test_fold_C: float
    test_fold_mean: float  # %
    paper: float | None = None  # %
    seed: float | None = None  # %
    seconds: float = math.nan

    @classmethod
    def of(
        cls,
        features: str,
        protocol: str,
        result: CVResult,
        *,
        paper: float | None = None,
        seed: float | None = None,
    ) -> TableRow:
        return cls(
            features=features,
            protocol=protocol,
            dims=result.n_features,
            rows_per_clip=result.n_rows / result.n_clips,
            nested_mean=100 * result.mean_accuracy,
            nested_std=100 * result.std_accuracy,
            fold_accuracy=tuple(100 * a for a in result.fold_accuracy),
            fold_C=result.fold_C,
            test_fold_C=result.test_fold_C,
            test_fold_mean=100 * result.test_fold_accuracy,
            paper=paper,
            seed=seed,
            seconds=result.seconds,
        )

    def csv_values(self) -> list[str]:
        def opt(v):
            return "" if v is None else f"{v:.2f}"

        return [
            self.features,
            self.protocol,
            str(self.dims),
            f"{self.rows_per_clip:g}",
            f"{self.nested_mean:.2f}",
            f"{self.nested_std:.2f}",
            " ".join(f"{a:.2f}" for a in self.fold_accuracy),
            " ".join(f"{c:g}" for c in self.fold_C),
            f"{self.test_fold_C:g}",
            f"{self.test_fold_mean:.2f}",
            opt(self.paper),
            opt(self.seed),
            f"{self.seconds:.1f}",
        ]


def write_csv(rows: Sequence[TableRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(row.csv_values())
    return path


def read_csv(path: str | Path) -> list[TableRow]:
    """Rows written by :func:`write_csv` (to rebuild a report without recomputing)."""

    def opt(v: str) -> float | None:
        return float(v) if v else None

    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                TableRow(
                    features=r["features"],
                    protocol=r["protocol"],
                    dims=int(r["dims"]),
                    rows_per_clip=float(r["rows_per_clip"]),
                    nested_mean=float(r["nested_mean"]),
                    nested_std=float(r["nested_std"]),
                    fold_accuracy=tuple(float(v) for v in r["fold_accuracy"].split()),
                    fold_C=tuple(float(v) for v in r["fold_C"].split()),
                    test_fold_C=float(r["test_fold_C"]),
                    test_fold_mean=float(r["test_fold_mean"]),
                    paper=opt(r["paper"]),
                    seed=opt(r["seed"]),
                    seconds=float(r["seconds"]),
                )
            )
    return rows


MARKDOWN_HEADER = (
    "| features | protocol | dims | nested accuracy (%) | C per fold | C on test folds: accuracy (%) | paper (%) | seed (%) |",
    "|---|---|---:|---:|---|---:|---:|---:|",
)


def to_markdown(rows: Sequence[TableRow], *, bold_best: bool = True) -> str:
    """A markdown table; the best nested accuracy in bold."""
    best = max((r.nested_mean for r in rows), default=math.nan)
    lines = list(MARKDOWN_HEADER)
    for r in rows:
        acc = f"{r.nested_mean:.2f} ± {r.nested_std:.2f}"
        if bold_best and r.nested_mean == best:
            acc = f"**{acc}**"
        cs = " ".join(f"{c:g}" for c in r.fold_C)
        paper = "" if r.paper is None else f"{r.paper:.1f}"
        seed = "" if r.seed is None else f"{r.seed:.2f}"
        lines.append(
            f"| {r.features} | {r.protocol} | {r.dims} | {acc} | {cs} | {r.test_fold_mean:.2f} (C={r.test_fold_C:g}) "
            f"| {paper} | {seed} |"
        )
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[TableRow], path: str | Path, *, title: str | None = None, notes: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# {title}\n\n" if title else "") + to_markdown(rows) + (f"\n{notes}\n" if notes else "")
    path.write_text(text)
    return path
