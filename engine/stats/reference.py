"""Plain numpy references: what the scan must equal exactly (tests and benchmarks compare with them).

Each holds the whole matrix in memory; they define the numbers, the scan makes them affordable.
"""

from __future__ import annotations

import numpy as np

from .defaults import DEFAULT_Q
from .errors import StatsError

REFERENCE_COUNTS_MAX_CLIPS = 2**24
"""Float32 BLAS counts exactly only below this many clips."""


def reference_thresholds(X: np.ndarray, q: float = DEFAULT_Q) -> np.ndarray:
    """``np.percentile(X, q, axis=0)`` with q as a Python float (numpy's weak-scalar rules keep a
    float32 X's result float32, as ``neural_matrix`` got)."""
    return np.percentile(np.asarray(X), float(q), axis=0)


def reference_counts(X: np.ndarray, y: np.ndarray, thresholds: np.ndarray, n_classes: int) -> np.ndarray:
    """The seed's ``neural_matrix``: ``(X > thresholds).T @ onehot(y)``, as int64.

    The product runs in float32 BLAS (as fast as numpy gets): exact while a count stays below
    2**24 clips, checked.
    """
    X = np.asarray(X)
    if X.shape[0] >= REFERENCE_COUNTS_MAX_CLIPS:
        raise StatsError("reference_counts is exact only below 2**24 clips")
    onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(y)]
    return ((X > thresholds).T @ onehot).astype(np.int64)


def reference_top_clips(X: np.ndarray, k: int) -> np.ndarray:
    """(C, k) rows of each column's k largest values, largest first, ties by lower row."""
    return np.argsort(-np.asarray(X), axis=0, kind="stable")[:k].T
