"""The statistics' public functions on any (N, C) float matrix: in memory, memmapped or HDF5.

Thresholds equal ``np.percentile(X, q, axis=0)``; counts equal ``(X > thresholds).T @ onehot(y)``;
both computed by :func:`~soundnet8.engine.stats.scan.exact_scan` over row chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .defaults import CHUNK_BYTES_MAX, DEFAULT_MEMORY_BUDGET, DEFAULT_Q, DEFAULT_TOP_K
from .errors import StatsError
from .keys import values_of
from .quantile import check_q, seed_denominator
from .results import NeuronStats, layer_name
from .rows import Rows
from .scan import ScanResult, check_budget, count_above, count_range, exact_scan, threads_for

log = logging.getLogger(__name__)


def _rows(data: Any, name: str, chunk_rows: int | None, budget: int) -> Rows:
    return Rows(data, name=name, chunk_rows=chunk_rows, chunk_bytes=min(CHUNK_BYTES_MAX, budget // 4))


def _check_labels(labels: Any, n: int, n_classes: int | None, name: str) -> tuple[np.ndarray | None, int]:
    if labels is None:
        return None, 0
    y = np.asarray(labels)
    if y.shape != (n,):
        raise StatsError(f"{name}: {y.shape[0] if y.ndim else 0} labels for {n} clips (shape {y.shape})")
    if y.dtype.kind not in "iu":
        raise StatsError(f"{name}: labels must be integers, not {y.dtype}")
    y = np.ascontiguousarray(y, dtype=np.int64)
    k = (int(y.max()) + 1 if n else 0) if n_classes is None else int(n_classes)
    bad = np.flatnonzero((y < 0) | (y >= k))
    if bad.size:
        r = int(bad[0])
        raise StatsError(f"{name}: row {r} has label {int(y[r])}, outside the {k} classes [0, {k})")
    return y, k


def percentile_thresholds(
    data: Any,
    q: float = DEFAULT_Q,
    *,
    chunk_rows: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    method: str = "histogram",
    name: str | None = None,
) -> np.ndarray:
    """Per-column q-th percentile of ``data`` (N, C), equal to ``np.percentile(X, float(q), axis=0)``.

    ``data``: ndarray, memmap, h5py.Dataset or any 2-D float32/float64 array-like with row slicing.
    ``method="histogram"`` (default) reads row chunks 2-4 times with memory bounded by
    ``memory_budget``; ``method="columns"`` runs ``np.percentile`` on column blocks of at most
    ``memory_budget / 2`` bytes (simpler, but reads the data once per block, and one column of N
    values must fit). Raises :class:`StatsError` naming the row on NaN.
    """
    label = name or "features"
    q = check_q(q)
    budget = check_budget(memory_budget, label)
    if method == "columns":
        return _thresholds_by_column_blocks(data, q, budget, label)
    if method != "histogram":
        raise StatsError(f"{label}: method must be 'histogram' or 'columns', not {method!r}")
    rows = _rows(data, label, chunk_rows, budget)
    rows.require_rows()
    return exact_scan(rows, q, labels=None, n_classes=0, top_k=0, budget=budget, want_counts=False).thresholds


def _thresholds_by_column_blocks(data: Any, q: float, budget: int, name: str) -> np.ndarray:
    rows = Rows(data, name=name, chunk_rows=1, chunk_bytes=1)  # validation only
    rows.require_rows()
    per_column = 2 * rows.n * rows.spec.dtype.itemsize  # the block and np.percentile's copy
    width = max(1, budget // per_column)
    out = np.empty(rows.c, dtype=rows.spec.dtype)
    for c0 in range(0, rows.c, width):
        block = np.asarray(data[:, c0 : c0 + width], dtype=rows.spec.dtype)
        nan = np.isnan(block)
        if nan.any():
            r = int(np.flatnonzero(nan.any(axis=1))[0])
            col = int(np.flatnonzero(nan[r])[0])
            raise StatsError(f"{name}: NaN at row {r} (neuron {c0 + col}); percentiles are undefined for it")
        out[c0 : c0 + block.shape[1]] = np.percentile(block, q, axis=0)
    return out


def activation_counts(
    data: Any,
    labels: Any,
    thresholds: Any,
    n_classes: int | None = None,
    *,
    chunk_rows: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    name: str | None = None,
) -> np.ndarray:
    """(C, K) int64: clips of each class whose value exceeds each neuron's threshold, equal to
    ``(X > thresholds).T @ onehot(labels)``, in one pass over row chunks.

    ``thresholds`` of another float type than ``data`` compare as numpy would (e.g. float64
    thresholds against float32 data, as older numpy's percentile returned).
    """
    label = name or "features"
    budget = check_budget(memory_budget, label)
    rows = _rows(data, label, chunk_rows, budget)
    y, k = _check_labels(labels, rows.n, n_classes, label)
    if y is None:
        raise StatsError(f"{label}: activation counts need labels")
    thr = _comparison_thresholds(thresholds, rows)
    counts = np.zeros((rows.c, k), dtype=np.int64)
    n_active = np.zeros(rows.c, dtype=np.int64)
    lo, hi = count_range(thr, rows.spec)
    with threads_for(rows.n * rows.c):
        from . import kernels  # lazily: numba stays out of `import stats`

        count_above(kernels, rows, y, lo, hi, counts, n_active)
    return counts


def _comparison_thresholds(thresholds: Any, rows: Rows) -> np.ndarray:
    """Thresholds in the data's dtype giving the same ``x > t`` as numpy's mixed-type comparison.

    numpy compares float32 data with float64 thresholds in float64; since no float32 lies strictly
    between t rounded down to float32 and t, ``x > t`` equals ``x > round_down(t)`` for every x.
    """
    t = np.asarray(thresholds)
    if t.shape != (rows.c,):
        raise StatsError(f"{rows.name}: {t.shape} thresholds for {rows.c} neurons")
    if t.dtype.kind not in "fiu":
        raise StatsError(f"{rows.name}: thresholds must be numbers, not {t.dtype}")
    dtype = rows.spec.dtype
    if t.dtype.kind == "f" and t.dtype.itemsize <= dtype.itemsize:
        return np.ascontiguousarray(t, dtype=dtype)
    wide = t.astype(np.float64)
    with np.errstate(over="ignore"):
        narrow = wide.astype(dtype)
    above = narrow > wide  # rounded up (or to +inf): step down to the float just below
    narrow[above] = np.nextafter(narrow[above], dtype.type(-np.inf))
    return narrow


def neuron_stats(
    data: Any,
    labels: Any,
    q: float = DEFAULT_Q,
    n_classes: int | None = None,
    top_k: int = DEFAULT_TOP_K,
    *,
    layer: str | None = None,
    pool: str | None = None,
    class_names: Sequence[str] | None = None,
    chunk_rows: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> NeuronStats:
    """Everything the seed's neuron analysis reads, for each neuron (column) of ``data`` (N, C).

    ``labels`` (N,) integer classes in [0, n_classes) or None (no class selectivity: counts get
    0 columns, shares are NaN). ``n_classes`` defaults to ``len(class_names)`` or
    ``labels.max() + 1`` (classes without clips get zero counts). ``data`` as for
    :func:`percentile_thresholds`; 2 passes over it in row chunks for typical data. Raises
    :class:`StatsError` naming the layer and row on NaN, and on labels outside the classes.
    """
    name = layer_name(layer, pool)
    q = check_q(q)
    budget = check_budget(memory_budget, name)
    if not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise StatsError(f"{name}: top_k must be a non-negative integer, not {top_k!r}")
    if n_classes is None and class_names is not None:
        n_classes = len(class_names)
    rows = _rows(data, name, chunk_rows, budget)
    rows.require_rows()
    y, k = _check_labels(labels, rows.n, n_classes, name)
    if seed_denominator(rows.n, q) < 1:
        log.warning(
            "%s: %d clips at q=%g expect fewer than one clip above the threshold: share_seed "
            "(count / %.3g) is not a proportion; read share_active",
            name, rows.n, q, seed_denominator(rows.n, q),
        )  # fmt: skip
    scan = exact_scan(rows, q, labels=y, n_classes=k, top_k=int(top_k), budget=budget, want_counts=True)
    return _assemble(scan, rows, q, layer=layer, pool=pool, class_names=class_names)


def _assemble(scan: ScanResult, rows: Rows, q: float, **meta: Any) -> NeuronStats:
    counts, n_active = scan.counts, scan.n_active
    if counts is None or n_active is None:  # exact_scan(want_counts=True) always sets them
        raise StatsError(f"{rows.name}: the scan returned no counts")
    if counts.shape[1]:
        best = counts.max(axis=1)
        top_class = np.where(best > 0, counts.argmax(axis=1), -1)
    else:
        best = np.zeros(rows.c, dtype=np.int64)
        top_class = np.full(rows.c, -1, dtype=np.int64)
    denominator = seed_denominator(rows.n, q)
    if counts.shape[1] == 0:  # no labels: no class, no share
        share_seed = share_active = np.full(rows.c, np.nan)
    else:
        share_seed = best / denominator if denominator > 0 else np.full(rows.c, np.nan)
        share_active = np.where(n_active > 0, best / np.maximum(n_active, 1), np.nan)
    order = np.lexsort((scan.top_rows, ~scan.top_keys), axis=-1)  # value desc, then row asc
    top_clips = np.take_along_axis(scan.top_rows, order, axis=1)
    top_values = values_of(np.take_along_axis(scan.top_keys, order, axis=1), rows.spec)
    return NeuronStats(
        q=q,
        n_clips=rows.n,
        thresholds=scan.thresholds,
        counts=counts,
        n_active=n_active,
        top_class=top_class.astype(np.int64),
        share_seed=np.asarray(share_seed, dtype=np.float64),
        share_active=share_active.astype(np.float64),
        top_clips=top_clips,
        top_values=top_values,
        **meta,
    )
