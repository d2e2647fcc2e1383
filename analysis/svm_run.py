"""``soundnet8 analyze svm``: one feature set of a store, cross-validated with a linear SVM."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .data import FeatureSpec, FoldOptions, Labels, open_stores
from .frames import PAPER_WINDOWS
from .study import Candidate, candidate_rows
from .svm import SEED_C, SEED_C_GRID, CVResult, Solver, cross_validate_svm


class SvmProtocol(str, enum.Enum):
    """How the store's clips become classifier rows."""

    CLIP = "clip"  # the store's pooled features
    WINDOWS = "windows"  # the paper's 1 s windows over clips repeated to 10 s, decisions averaged per clip
    FLATTEN = "flatten"  # frames flattened (the seed's first try)


@dataclass(frozen=True)
class SvmOptions:
    layer: str = "pool5"  # "pool5+conv6" concatenates layers
    pool: str = "mean"  # one pooling or several joined by commas
    protocol: SvmProtocol = SvmProtocol.CLIP
    C: tuple[float, ...] = SEED_C_GRID  # one C (fixed) or several (chosen by nested cross-validation)
    solver: Solver = Solver.NEWTON
    seed_config: bool = False  # the seed's exact configuration: liblinear, C=0.1, max_iter=10000
    n_jobs: int = 1
    folds: FoldOptions = FoldOptions()

    @property
    def candidate(self) -> Candidate:
        spec = FeatureSpec.parse("+".join(f"{layer}:{self.pool}" for layer in self.layer.split("+")))
        return Candidate(
            spec, crops=PAPER_WINDOWS if self.protocol is SvmProtocol.WINDOWS else None, flatten=self.protocol is SvmProtocol.FLATTEN
        )


@dataclass(frozen=True, eq=False)
class SvmRun:
    candidate: Candidate
    labels: Labels
    result: CVResult
    n_rows: int
    n_features: int

    def payload(self) -> dict:
        """The result as JSON-ready data (``--json``)."""
        r = self.result
        return {
            "features": self.candidate.name,
            "selection": r.selection.value,
            "solver": r.solver.value,
            "grid": list(r.grid),
            "folds": list(r.folds),
            "fold_accuracy": list(r.fold_accuracy),
            "fold_C": list(r.fold_C),
            "mean_accuracy": r.mean_accuracy,
            "test_fold_C": r.test_fold_C,
            "test_fold_accuracy": r.test_fold_accuracy,
            "grid_accuracy": [list(a) for a in r.grid_accuracy],
            "converged": r.converged,
            "seconds": r.seconds,
        }


def run_svm(
    store_path: str | os.PathLike,
    *,
    frames_store_path: str | os.PathLike | None = None,
    options: SvmOptions = SvmOptions(),
    json_path: str | os.PathLike | None = None,
) -> SvmRun:
    """Cross-validate ``options``' features of a store (frames from ``frames_store_path`` when
    given); also write the result as JSON to ``json_path``."""
    candidate = options.candidate
    with open_stores(store_path, frames_store_path) as (store, frames_store):
        labels = options.folds.labels(store)
        rows = candidate_rows(candidate, store, labels, frames_store)
    C = SEED_C if options.seed_config else (options.C[0] if len(options.C) == 1 else options.C)
    solver = Solver.LIBLINEAR if options.seed_config else options.solver
    result = cross_validate_svm(
        rows.X, rows.labels, rows.folds, C, solver=solver, groups=rows.groups, test_folds=labels.test_folds, n_jobs=options.n_jobs
    )
    run = SvmRun(candidate, labels, result, n_rows=rows.X.shape[0], n_features=rows.X.shape[1])
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run.payload(), indent=2))
    return run
