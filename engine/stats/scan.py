"""The exact out-of-core scan behind every statistic: thresholds, counts and top clips.

Pass 1 histograms each column's keys on their leading bits (and tracks min/max, NaN rows and the
top-k clips); the two order statistics numpy interpolates between then lie in known bins with
known ranks inside them. The final pass counts the values above those bins (certainly above the
threshold) and collects the few inside them; an exact selection among the collected values gives
the order statistics, numpy's lerp the threshold, and the collected values' labels the rest of the
counts. When the collected values would exceed the memory budget, refinement passes narrow the
bins on the next bits first, so memory is bounded by the budget, not by the number of clips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StoreError
from .errors import StatsError
from .keys import HIST_DTYPE, LEVEL0_BITS, REFINE_BINS, KeySpec, keys_of, values_of
from .quantile import Interpolation, check_q, interpolation, numpy_lerp
from .rows import Rows

log = logging.getLogger(__name__)

PARALLEL_MIN_VALUES = 1 << 22
"""Below ~20 ms of work one thread beats waking the others."""

LABEL_DTYPE = np.dtype(np.int32)
"""Labels of collected candidates."""


@dataclass(frozen=True)
class ScanLimits:
    """Candidate room of the final pass and columns per refinement pass, overriding the ones the
    memory budget gives: lets tests drive the refinement passes on small data. The result never
    depends on them, only the number of passes does."""

    capacity: int  # values the final pass may collect, all columns together
    refine_columns: int  # columns one refinement pass may histogram (at least 1)


@dataclass(frozen=True, eq=False)
class ScanResult:
    """What one scan found: thresholds, counts (None unless asked), top-k heaps, passes read."""

    thresholds: np.ndarray  # (C,) the data's dtype
    counts: np.ndarray | None  # (C, K) int64
    n_active: np.ndarray | None  # (C,) int64
    top_keys: np.ndarray  # (C, k) uint64 keys of the top values, in heap order
    top_rows: np.ndarray  # (C, k) int64 their rows
    passes: int


def check_budget(memory_budget: int, name: str) -> int:
    """``memory_budget`` as a positive int, or :class:`StatsError`."""
    if not isinstance(memory_budget, (int, np.integer)) or memory_budget <= 0:
        raise StatsError(f"{name}: memory_budget must be a positive number of bytes, not {memory_budget!r}")
    return int(memory_budget)


def minimum_budget(n_neurons: int, chunk_bytes: int, top_k: int = 0, n_classes: int = 0) -> int:
    """Smallest ``memory_budget`` (bytes) a scan accepts: one chunk, the level-0 histograms, the
    top-k heaps, the counts and the per-neuron state. More budget buys candidate room (fewer
    passes), never correctness."""
    c = n_neurons
    hist0 = c * (1 << LEVEL0_BITS) * HIST_DTYPE.itemsize
    state = c * 2 * 8 * 8  # (C, 2) arrays of 8-byte keys, ranks, counts, prefixes...
    return chunk_bytes + hist0 + c * top_k * 16 + c * n_classes * 8 + state


def _budget_plan(rows: Rows, budget: int, top_k: int, n_classes: int) -> ScanLimits:
    """The candidate capacity and refinement width that ``budget`` affords."""
    c = rows.c
    hist0 = c * (1 << LEVEL0_BITS) * HIST_DTYPE.itemsize
    needed = minimum_budget(c, rows.chunk_bytes, top_k, n_classes)
    if budget < needed:
        raise StatsError(
            f"{rows.name}: a memory budget of {budget / 2**20:.2f} MiB is too small for {c} neurons "
            f"read {rows.chunk_rows} rows at a time: it needs at least {needed / 2**20:.2f} MiB"
        )
    rest = budget - needed + hist0  # the level-0 histograms are freed before candidates exist
    capacity = rest // (rows.spec.dtype.itemsize + LABEL_DTYPE.itemsize)
    refine_columns = max(1, rest // (2 * REFINE_BINS * HIST_DTYPE.itemsize))
    return ScanLimits(int(capacity), int(refine_columns))


@contextmanager
def threads_for(values: int) -> Iterator[None]:
    """One numba thread for small inputs: waking the pool costs more than it saves there (and
    milliseconds per launch when other processes keep the cores busy)."""
    import numba

    if values >= PARALLEL_MIN_VALUES:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _kernels():
    # Imported on first use: numba's import (and any compilation) stays out of `import stats`.
    from . import kernels

    return kernels


def exact_scan(
    rows: Rows,
    q: float,
    *,
    labels: np.ndarray | None,
    n_classes: int,
    top_k: int,
    budget: int,
    want_counts: bool,
    limits: ScanLimits | None = None,
) -> ScanResult:
    """The scan behind every public function, over ``rows`` at percentile ``q`` in [0, 100].

    ``labels``: (N,) int64 in [0, n_classes) or None; ``want_counts`` adds counts and activation
    totals; ``top_k`` heaps of the largest values are kept per column. ``budget`` bounds the
    working memory; ``limits`` (see :class:`ScanLimits`) overrides what it affords.
    """
    q = check_q(q)
    with threads_for(rows.n * rows.c):
        K = _kernels()
        interp = interpolation(rows.n, q)
        top_k = min(top_k, rows.n)
        plan = _budget_plan(rows, budget, top_k, n_classes if want_counts else 0)
        plan = limits if limits is not None else plan
        hist, first = _first_pass(K, rows, top_k)
        search = _start_search(K, rows, hist, first, interp)
        del hist  # freed before the candidates exist: the budget counts on it
        while _refine_once(K, rows, search, plan):
            pass
        found = _collect(K, rows, search, interp, labels, n_classes if want_counts else 0, want_counts)
        if want_counts:
            _count_collected(K, rows, search, found, labels)
    log.debug("%s: thresholds over %d rows x %d neurons in %d passes", rows.name, rows.n, rows.c, rows.passes)
    return ScanResult(
        thresholds=found.thresholds,
        counts=found.counts if want_counts else None,
        n_active=found.n_active if want_counts else None,
        top_keys=first.top_keys,
        top_rows=first.top_rows,
        passes=rows.passes,
    )


@dataclass(frozen=True, eq=False)
class _FirstPass:
    """Per-column extremes with their multiplicity, and the top-k heaps, after pass 1."""

    minkey: np.ndarray
    mincount: np.ndarray
    maxkey: np.ndarray
    maxcount: np.ndarray
    top_keys: np.ndarray
    top_rows: np.ndarray


def _first_pass(K, rows: Rows, top_k: int) -> tuple[np.ndarray, _FirstPass]:
    """Pass 1: level-0 histograms, min/max multiplicities, NaN, top-k."""
    c, spec = rows.c, rows.spec
    hist = np.zeros((c, 1 << spec.widths[0]), dtype=HIST_DTYPE)
    first = _FirstPass(
        minkey=np.full(c, spec.full, dtype=np.uint64),
        mincount=np.zeros(c, dtype=np.int64),
        maxkey=np.zeros(c, dtype=np.uint64),
        maxcount=np.zeros(c, dtype=np.int64),
        top_keys=np.zeros((c, top_k), dtype=np.uint64),
        top_rows=np.zeros((c, top_k), dtype=np.int64),
    )
    nan_row = np.full(c, -1, dtype=np.int64)
    top_len = np.zeros(c, dtype=np.int64)
    for r0, u in rows:
        K.scan_first(
            u, r0, spec.sign, spec.full, spec.absmask, spec.infbits, np.uint64(spec.shift(0)),
            hist, first.minkey, first.mincount, first.maxkey, first.maxcount, nan_row,
            first.top_keys, first.top_rows, top_len,
        )  # fmt: skip
        rows.check_nan(nan_row)
    return hist, first


@dataclass(frozen=True, eq=False)
class _Search:
    """Where each column's two order statistics (0: numpy's lower, 1: its upper) stand.

    Arrays are (C, 2) except ``level`` (C,), updated in place as passes narrow the bins.
    """

    rank: np.ndarray  # int64: the rank sought
    key: np.ndarray  # uint64: the statistic's key, once done
    done: np.ndarray  # bool: key known
    prefix: np.ndarray  # uint64: leading bits of the bin holding it
    rank_in: np.ndarray  # int64: its rank inside that bin
    count_in: np.ndarray  # int64: values in that bin
    level: np.ndarray  # int64: histogram level the column's bins are resolved to


def _start_search(K, rows: Rows, hist: np.ndarray, first: _FirstPass, interp: Interpolation) -> _Search:
    """Settle the statistics tied at a column's min or max; locate the others in ``hist``."""
    n, c = rows.n, rows.c
    rank = np.empty((c, 2), dtype=np.int64)
    rank[:, 0], rank[:, 1] = interp.low, interp.high
    key = np.zeros((c, 2), dtype=np.uint64)
    at_min = rank < first.mincount[:, None]  # ties at the minimum (ReLU zeros, constant neurons)
    at_max = rank >= n - first.maxcount[:, None]
    key[at_min] = np.broadcast_to(first.minkey[:, None], (c, 2))[at_min]
    key[at_max] = np.broadcast_to(first.maxkey[:, None], (c, 2))[at_max]
    search = _Search(
        rank=rank,
        key=key,
        done=at_min | at_max,
        prefix=np.zeros((c, 2), dtype=np.uint64),
        rank_in=np.zeros((c, 2), dtype=np.int64),
        count_in=np.zeros((c, 2), dtype=np.int64),
        level=np.zeros(c, dtype=np.int64),
    )
    row_of = np.where(search.done, -1, np.arange(c)[:, None]).ravel()
    _locate_into(
        K, hist, row_of, rank.ravel(), rows.spec.shift(0), search.prefix, search.rank_in, search.count_in, rows.name
    )
    return search


def _locate_into(K, hist, row_of, rank_flat, shift, prefix, rank_in, count_in, name) -> None:
    """Locate the pending stats' ranks in ``hist`` and narrow their prefixes by ``shift``."""
    m = row_of.shape[0]
    bins = np.full(m, -1, dtype=np.int64)
    r_in = np.zeros(m, dtype=np.int64)
    cnt = np.zeros(m, dtype=np.int64)
    K.locate(hist, row_of, np.ascontiguousarray(rank_flat, dtype=np.int64), bins, r_in, cnt)
    active = row_of >= 0
    if (bins[active] < 0).any():
        raise StoreError(f"{name}: the data changed while it was read (a rank fell outside its histogram)")
    flat_prefix, flat_rank, flat_count = prefix.reshape(-1), rank_in.reshape(-1), count_in.reshape(-1)
    shift_arr = np.broadcast_to(np.asarray(shift, dtype=np.uint64), (m,))
    flat_prefix[active] |= bins[active].astype(np.uint64) << shift_arr[active]
    flat_rank[active] = r_in[active]
    flat_count[active] = cnt[active]


def _refine_once(K, rows: Rows, s: _Search, plan: ScanLimits) -> bool:
    """One refinement pass over the columns whose candidates do not fit; False when all fit."""
    pending = np.flatnonzero(~s.done.all(axis=1))
    cand = _candidate_counts(s)
    order = pending[np.argsort(cand[pending], kind="stable")]
    fits = np.cumsum(cand[order]) <= plan.capacity
    refine = order[~fits][: plan.refine_columns]
    if refine.size == 0:
        return False
    _refine(K, rows, s, refine)
    return True


def _refine(K, rows: Rows, s: _Search, cols: np.ndarray) -> None:
    """One pass histogramming the next level of bits inside the current bins of ``cols``."""
    spec = rows.spec
    r = cols.size
    ref_index = np.full(rows.c, -1, dtype=np.int64)
    ref_index[cols] = np.arange(r)
    lv = s.level[cols]
    pshift = np.array([spec.shift(int(v)) for v in lv], dtype=np.uint64)
    shift = np.array([spec.shift(int(v) + 1) for v in lv], dtype=np.uint64)
    mask = np.array([(1 << spec.widths[int(v) + 1]) - 1 for v in lv], dtype=np.uint64)
    sub_prefix = np.ascontiguousarray(s.prefix[cols])
    active = np.ascontiguousarray(~s.done[cols])
    hist = np.zeros((2 * r, REFINE_BINS), dtype=HIST_DTYPE)
    for _, u in rows:
        K.scan_refine(u, spec.sign, spec.full, ref_index, sub_prefix, active, pshift, shift, mask, hist)
    row_of = np.where(active, np.arange(2 * r).reshape(r, 2), -1).ravel()
    sub_rank = np.ascontiguousarray(s.rank_in[cols])
    sub_count = np.ascontiguousarray(s.count_in[cols])
    _locate_into(K, hist, row_of, sub_rank.ravel(), np.repeat(shift, 2), sub_prefix, sub_rank, sub_count, rows.name)
    s.prefix[cols], s.rank_in[cols], s.count_in[cols] = sub_prefix, sub_rank, sub_count
    s.level[cols] += 1
    final = (s.level[cols] == spec.last_level)[:, None] & active  # every bit known: the key itself
    sub_done = s.done[cols] | final
    sub_key = s.key[cols]
    sub_key[final] = sub_prefix[final]
    s.done[cols], s.key[cols] = sub_done, sub_key


def _candidate_counts(s: _Search) -> np.ndarray:
    """Values a column would collect: its pending stats' bins (one bin when they share it)."""
    done, count_in = s.done, s.count_in
    both = ~done[:, 0] & ~done[:, 1]
    same = both & (s.prefix[:, 0] == s.prefix[:, 1])
    total = np.where(~done[:, 0], count_in[:, 0], 0) + np.where(~done[:, 1], count_in[:, 1], 0)
    return np.where(same, count_in[:, 0], total).astype(np.int64)


def _candidate_ranges(spec: KeySpec, s: _Search) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key range [lo, hi] covering the pending stats' bins, and how many values lie below lo."""
    width = np.array([spec.shift(int(v)) for v in s.level], dtype=np.uint64)
    span = (np.uint64(1) << width) - np.uint64(1)  # shift < nbits, so no overflow
    big = np.uint64(np.iinfo(np.uint64).max)
    start = np.where(s.done, big, s.prefix)
    end = np.where(s.done, np.uint64(0), s.prefix | span[:, None])
    lo = start.min(axis=1)
    hi = end.max(axis=1)
    first = np.argmin(start, axis=1)
    idx = np.arange(s.prefix.shape[0])
    below = s.rank[idx, first] - s.rank_in[idx, first]
    return lo, hi, below


def count_range(thresholds: np.ndarray, spec: KeySpec) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) making the final pass count ``x > threshold`` and collect nothing."""
    hi = keys_of(thresholds, spec)
    lo = hi + np.uint64(1)
    nan = np.isnan(thresholds)  # x > NaN is False for every x: count nothing
    hi[nan] = lo[nan] = spec.full
    return lo, hi


@dataclass(frozen=True, eq=False)
class _Collected:
    """The final pass's outcome: thresholds, counts so far, and the collected candidates."""

    thresholds: np.ndarray
    counts: np.ndarray
    n_active: np.ndarray
    pending: np.ndarray  # (C,) bool: columns whose threshold came from the candidates
    lo: np.ndarray
    hi: np.ndarray
    off: np.ndarray
    fill: np.ndarray
    cand_keys: np.ndarray
    cand_labels: np.ndarray


def _collect(K, rows: Rows, s: _Search, interp: Interpolation, labels, n_classes: int, want_counts: bool) -> _Collected:
    """Final pass: collect the candidates (and count, when asked), then select the statistics."""
    c, spec = rows.c, rows.spec
    pending = ~s.done.all(axis=1)
    cand = np.where(pending, _candidate_counts(s), 0)
    lo, hi, below = _candidate_ranges(spec, s)
    counts = np.zeros((c, n_classes), dtype=np.int64)
    n_active = np.zeros(c, dtype=np.int64)
    thresholds = np.empty(c, dtype=spec.dtype)
    settled = ~pending
    if settled.any():
        thresholds[settled] = numpy_lerp(values_of(s.key[settled, 0], spec), values_of(s.key[settled, 1], spec), interp.gamma)
    if want_counts:  # settled columns: count directly against their threshold
        lo[settled], hi[settled] = count_range(thresholds[settled], spec)
    else:
        lo[settled] = hi[settled] = spec.full
    off = np.zeros(c + 1, dtype=np.int64)
    np.cumsum(cand, out=off[1:])
    fill = np.zeros(c, dtype=np.int64)
    cand_keys = np.empty(int(off[-1]), dtype=spec.udtype)
    cand_labels = np.empty(int(off[-1]), dtype=LABEL_DTYPE)
    if pending.any() or want_counts:
        final_pass(K, rows, labels, lo, hi, counts, n_active, off, fill, cand_keys, cand_labels)
        if not np.array_equal(fill, cand):
            bad = int(np.flatnonzero(fill != cand)[0])
            raise StoreError(
                f"{rows.name}: the data changed while it was read (neuron {bad}: {int(fill[bad])} "
                f"values in its threshold's range, {int(cand[bad])} in the previous pass)"
            )
        local_rank = s.rank - below[:, None]
        need = pending[:, None] & ~s.done
        K.select_candidates(off, fill, cand_keys, local_rank, need, s.key)
        thresholds[pending] = numpy_lerp(values_of(s.key[pending, 0], spec), values_of(s.key[pending, 1], spec), interp.gamma)
    return _Collected(thresholds, counts, n_active, pending, lo, hi, off, fill, cand_keys, cand_labels)


def _count_collected(K, rows: Rows, s: _Search, found: _Collected, labels) -> None:
    """Add the collected candidates above their column's threshold to the counts (in place)."""
    c, spec, thresholds = rows.c, rows.spec, found.thresholds
    counts, n_active = found.counts, found.n_active
    thr_key = keys_of(thresholds, spec)
    nan_thr = np.isnan(thresholds)  # only from inf - inf in numpy's lerp: nothing is > NaN
    thr_key[nan_thr] = spec.full
    K.count_candidates(found.off, found.fill, found.cand_keys, found.cand_labels, thr_key, counts, n_active)
    # Values above a pending column's range were counted as above its threshold and values
    # below it as not. Right when threshold <= hi (counted keys exceed hi) and threshold >=
    # min(lo, lower stat) (uncounted keys are below lo and at most the lower stat): numpy's
    # lerp guarantees both unless b - a overflows. Recount any column where it did not.
    floor = np.minimum(found.lo, s.key[:, 0])
    off_range = found.pending & ~nan_thr & ((thr_key < floor) | (thr_key > found.hi))
    counts[nan_thr | off_range] = 0
    n_active[nan_thr | off_range] = 0
    if off_range.any():
        lo2 = np.full(c, spec.full, dtype=np.uint64)
        hi2 = np.full(c, spec.full, dtype=np.uint64)
        lo2[off_range], hi2[off_range] = count_range(thresholds[off_range], spec)
        count_above(K, rows, labels, lo2, hi2, counts, n_active)


def count_above(K, rows: Rows, labels, lo, hi, counts, n_active) -> None:
    """One pass adding to ``counts``/``n_active`` the values above ``hi`` (``lo = hi + 1`` per column,
    see :func:`count_range`), collecting nothing."""
    empty = np.zeros(rows.c + 1, dtype=np.int64)
    final_pass(
        K, rows, labels, lo, hi, counts, n_active, empty, np.zeros(rows.c, np.int64),
        np.empty(0, rows.spec.udtype), np.empty(0, LABEL_DTYPE),
    )  # fmt: skip


def final_pass(K, rows: Rows, labels, lo, hi, counts, n_active, off, fill, cand_keys, cand_labels) -> None:
    """Count the keys above ``hi`` and collect those in [lo, hi] of every column, chunk by chunk."""
    spec = rows.spec
    nan_row = np.full(rows.c, -1, dtype=np.int64)
    no_labels = np.zeros(rows.chunk_rows, dtype=np.int64) if labels is None else None
    for r0, u in rows:
        lab = no_labels[: u.shape[0]] if labels is None else labels[r0 : r0 + u.shape[0]]
        K.scan_final(
            u, r0, lab, spec.sign, spec.full, spec.absmask, spec.infbits,
            lo, hi, counts, n_active, off, fill, cand_keys, cand_labels, nan_row,
        )  # fmt: skip
        rows.check_nan(nan_row)
