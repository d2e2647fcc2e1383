"""UMAP embeddings of feature matrices (umap-learn, imported only when used).

Unsupervised, cosine metric, fixed random seed. The seed notebook called ``UMAP().fit(X, y)``,
which hands the labels to UMAP (supervised UMAP pulls same-label points together), so its
pictures of well-separated classes were partly drawn by the labels; here labels only colour the
points. Above ``max_rows`` rows, a seeded random subsample is embedded and the figure says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

UMAP_METRIC = "cosine"
UMAP_SEED = 0
UMAP_MAX_ROWS = 50_000
"""Rows embedded at most; larger inputs are subsampled (with UMAP_SEED) to keep time bounded."""

UMAP_N_NEIGHBORS = 15  # umap-learn's default, stated so results say what they used


@dataclass(frozen=True, eq=False)
class Embedding:
    coords: np.ndarray  # (m, 2)
    rows: np.ndarray  # (m,) the input rows embedded (all of them unless subsampled)
    n_input: int
    seed: int
    metric: str

    @property
    def subsampled(self) -> bool:
        return self.rows.size < self.n_input

    def note(self) -> str:
        text = f"UMAP ({self.metric}, {UMAP_N_NEIGHBORS} neighbours, seed {self.seed}, unsupervised)"
        if self.subsampled:
            text += f"; random subsample of {self.rows.size:,} of {self.n_input:,} rows"
        return text


def umap_embedding(
    X: np.ndarray,
    *,
    seed: int = UMAP_SEED,
    max_rows: int = UMAP_MAX_ROWS,
    metric: str = UMAP_METRIC,
    n_epochs: int | None = None,
) -> Embedding:
    """2-D UMAP of the rows of ``X`` (a seeded subsample of ``max_rows`` when larger)."""
    X = np.asarray(X, np.float32)
    if X.ndim != 2 or X.shape[0] < 3:
        raise AnalysisError(f"UMAP needs at least 3 rows of an (n, d) matrix, got {X.shape}")
    rows = np.arange(X.shape[0])
    if X.shape[0] > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], max_rows, replace=False))
    data = X[rows]
    if metric == "cosine":
        # cosine distance is undefined for all-zero rows (a silent clip after ReLU): nudge them.
        zero = ~np.any(data != 0, axis=1)
        if zero.any():
            data = data.copy()
            data[zero] = np.finfo(np.float32).tiny
    import umap

    reducer = umap.UMAP(
        n_components=2,
        metric=metric,
        n_neighbors=min(UMAP_N_NEIGHBORS, data.shape[0] - 1),
        random_state=seed,
        n_epochs=n_epochs,
        n_jobs=1,  # a seed makes UMAP single-threaded anyway; saying so silences its warning
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. "n_jobs overridden", spectral init notes
        coords = reducer.fit_transform(data)
    return Embedding(np.asarray(coords, np.float64), rows, int(X.shape[0]), int(seed), metric)
