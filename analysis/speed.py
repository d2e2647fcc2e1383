"""How much faster the C grid is than the seed's: same folds, same grid, both solvers, timed.

The seed's grid is GridSearchCV over ``logspace(-4, 1, 6)`` with
``make_pipeline(StandardScaler(), LinearSVC(max_iter=10000))``: 30 fits, about 8 minutes here,
most of them at C >= 1 where liblinear stalls. The Newton path fits the whole grid per fold with
warm starts. Both are timed in CPU seconds of this process (``time.process_time``, so other jobs
on a shared machine do not distort the ratio) with ``n_jobs=1``, and wall seconds beside.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundnet8.engine.store import FeatureStore

from .data import load_labels
from .errors import AnalysisError
from .svm import SEED_C_GRID, CVResult, Selection, Solver, cross_validate_svm


@dataclass(frozen=True)
class Timed:
    label: str
    cpu_seconds: float
    wall_seconds: float
    grid_mean: tuple[float, ...]
    chosen_C: float
    accuracy: float  # mean accuracy of the procedure (optimistic for the grid, nested for nested)


@dataclass(frozen=True)
class GridSpeed:
    grid: tuple[float, ...]
    seed: Timed
    newton_grid: Timed
    newton_nested: Timed

    @property
    def speedup(self) -> float:
        """Seed grid CPU time over the Newton grid's (same 6 x 5 evaluations)."""
        return self.seed.cpu_seconds / self.newton_grid.cpu_seconds

    @property
    def max_grid_difference(self) -> float:
        """Largest |difference| of mean accuracy at any C between the two solvers (fraction)."""
        return float(np.max(np.abs(np.subtract(self.seed.grid_mean, self.newton_grid.grid_mean))))

    def markdown(self) -> str:
        rows = [
            "| run | CPU s | wall s | C chosen | accuracy (%) |",
            "|---|---:|---:|---:|---:|",
        ]
        for t in (self.seed, self.newton_grid, self.newton_nested):
            chosen = "per fold" if np.isnan(t.chosen_C) else f"{t.chosen_C:g}"
            rows.append(f"| {t.label} | {t.cpu_seconds:.1f} | {t.wall_seconds:.1f} | {chosen} | {100 * t.accuracy:.2f} |")
        grid = ["| C | " + " | ".join(f"{c:g}" for c in self.grid) + " |", "|---|" + "---:|" * len(self.grid)]
        for t in (self.seed, self.newton_grid):
            grid.append(f"| {t.label} | " + " | ".join(f"{100 * m:.2f}" for m in t.grid_mean) + " |")
        return (
            "\n".join(rows)
            + f"\n\nSpeed-up of the grid (CPU): **{self.speedup:.0f}x**; largest difference of mean accuracy at any C: "
            f"{100 * self.max_grid_difference:.2f} points.\n\nMean test-fold accuracy (%) at each C:\n\n"
            + "\n".join(grid)
            + "\n"
        )


def _timed(label: str, fn) -> tuple[CVResult, Timed]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return result, Timed(label, cpu, wall, result.grid_mean, result.fold_C[0] if len(set(result.fold_C)) == 1 else float("nan"), result.mean_accuracy)


def grid_speed(X: np.ndarray, y: np.ndarray, folds: np.ndarray, grid: Sequence[float] = SEED_C_GRID) -> GridSpeed:
    """Time the seed's grid (liblinear) against the Newton path on the same data and folds."""
    grid = tuple(grid)
    _, seed = _timed(
        "seed: liblinear LinearSVC(max_iter=10000), C on the test folds",
        lambda: cross_validate_svm(X, y, folds, grid, solver=Solver.LIBLINEAR, selection=Selection.TEST_FOLDS),
    )
    _, newton = _timed(
        "newton path, C on the test folds (the same 30 evaluations)",
        lambda: cross_validate_svm(X, y, folds, grid, selection=Selection.TEST_FOLDS),
    )
    _, nested = _timed("newton path, nested C (honest: 5 outer + 10 shared inner fits)", lambda: cross_validate_svm(X, y, folds, grid))
    return GridSpeed(grid, seed, newton, nested)


SEED_ROWS_PER_FOLD = 400
"""The seed's saved features are ordered by fold: folds 1..5, 400 rows each."""


@dataclass(frozen=True)
class GridSpeedReport:
    source: str  # what was timed: the seed's X.npy, or a store's layer
    shape: tuple[int, int]
    speed: GridSpeed

    def markdown(self) -> str:
        return f"# C grid speed: {self.source} ({self.shape[0]} x {self.shape[1]})\n\n" + self.speed.markdown()


def run_grid_speed(
    *,
    store_path: str | os.PathLike | None = None,
    seed_features: str | os.PathLike | None = None,
    layer: str = "pool5",
    out: str | os.PathLike | None = None,
) -> GridSpeedReport:
    """Time the seed's grid on a store's ``layer`` (mean pooling, its folds) or on the seed's saved
    features (``seed_features/X.npy`` and ``y.npy``); also write the markdown to ``out``."""
    if (store_path is None) == (seed_features is None):
        raise AnalysisError("give a store or the seed's features, not both")
    if seed_features is not None:
        X = np.load(Path(seed_features) / "X.npy")
        y = np.load(Path(seed_features) / "y.npy")
        folds = np.arange(X.shape[0]) // SEED_ROWS_PER_FOLD + 1
        source = f"{seed_features}/X.npy"
    else:
        with FeatureStore(store_path) as store:
            labels = load_labels(store)
            X, y, folds = store.features(layer, "mean"), labels.labels, labels.folds
        source = f"{store_path} {layer}:mean"
    report = GridSpeedReport(source, (int(X.shape[0]), int(X.shape[1])), grid_speed(X, y, folds))
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.markdown())
    return report
