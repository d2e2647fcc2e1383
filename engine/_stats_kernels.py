"""Numba kernels behind :mod:`soundnet8.engine.stats` (exact out-of-core percentiles and counts).

Every kernel works on one row chunk of a feature matrix viewed as unsigned integers of the same
width (float32 -> uint32, float64 -> uint64) and turns each value into an order-preserving
unsigned *key* (:func:`_key`): ``a < b`` as floats exactly when ``key(a) < key(b)``. Histograms of
the key's leading bits then locate order statistics exactly, with no rounding anywhere.

Parallelism is over blocks of adjacent columns (``prange``), so each column (its histogram, its
counters, its top-k heap) belongs to exactly one thread: no atomics and no per-thread copies, and
a row of a block is one contiguous cache line or two. Kernels are compiled lazily on first call
(nothing at import) and cached on disk (``cache=True``), so a second process pays no JIT.

Key arithmetic is done in uint64 whatever the data width: numba promotes mixed signed/unsigned
integer arithmetic to float64, so every constant reaches the kernels as a ``np.uint64``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK_COLS = 16
"""Columns per parallel task: 16 float32 are one 64-byte cache line per row."""


@njit(inline="always", cache=True)
def _key(v, sign, full):
    """Order-preserving unsigned key of the IEEE-754 bit pattern ``v`` (widened to uint64).

    Positive numbers get the sign bit set (they sort above every negative); negative numbers are
    bit-inverted (a larger magnitude sorts lower). -0.0 gets the key of +0.0 because the two
    compare equal, as they do in ``np.partition`` and in ``x > threshold``.
    """
    if v == sign:
        return sign
    if v & sign:
        return full ^ v
    return v | sign


@njit(inline="always", cache=True)
def _worse(k1, r1, k2, r2):
    # Top-k order: larger value first, and among equal values the lower row first.
    return k1 < k2 or (k1 == k2 and r1 > r2)


@njit(inline="always", cache=True)
def _sift_up(keys, rows, c, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(keys[c, pos], rows[c, pos], keys[c, parent], rows[c, parent]):
            k = keys[c, pos]
            keys[c, pos] = keys[c, parent]
            keys[c, parent] = k
            r = rows[c, pos]
            rows[c, pos] = rows[c, parent]
            rows[c, parent] = r
            pos = parent
        else:
            break


@njit(inline="always", cache=True)
def _sift_down(keys, rows, c, n):
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= n:
            break
        w = left
        right = left + 1
        if right < n and _worse(keys[c, right], rows[c, right], keys[c, left], rows[c, left]):
            w = right
        if _worse(keys[c, w], rows[c, w], keys[c, pos], rows[c, pos]):
            k = keys[c, pos]
            keys[c, pos] = keys[c, w]
            keys[c, w] = k
            r = rows[c, pos]
            rows[c, pos] = rows[c, w]
            rows[c, w] = r
            pos = w
        else:
            break


@njit(parallel=True, nogil=True, cache=True)
def scan_first(
    u, row0, sign, full, absmask, infbits, shift,
    hist, minkey, mincount, maxkey, maxcount, nan_row, top_keys, top_rows, top_len,
):  # fmt: skip
    """Pass 1 over one chunk: level-0 histogram, min/max with their multiplicity, NaN rows, top-k.

    ``hist[c, key >> shift]`` counts the keys' leading bits; ``top_keys``/``top_rows`` hold a
    min-heap per column whose root is the weakest of the ``top_len[c]`` best so far.
    """
    n_rows, n_cols = u.shape
    k_top = top_keys.shape[1]
    n_blocks = (n_cols + BLOCK_COLS - 1) // BLOCK_COLS
    for b in prange(n_blocks):
        c0 = b * BLOCK_COLS
        c1 = min(n_cols, c0 + BLOCK_COLS)
        for i in range(n_rows):
            row = row0 + i
            for c in range(c0, c1):
                v = np.uint64(u[i, c])
                if (v & absmask) > infbits:  # NaN: recorded, the caller raises naming the row
                    if nan_row[c] < 0:
                        nan_row[c] = row
                    continue
                k = _key(v, sign, full)
                hist[c, np.intp(k >> shift)] += 1
                if k < minkey[c]:
                    minkey[c] = k
                    mincount[c] = 1
                elif k == minkey[c]:
                    mincount[c] += 1
                if k > maxkey[c]:
                    maxkey[c] = k
                    maxcount[c] = 1
                elif k == maxkey[c]:
                    maxcount[c] += 1
                if k_top > 0:
                    n = top_len[c]
                    if n < k_top:
                        top_keys[c, n] = k
                        top_rows[c, n] = row
                        _sift_up(top_keys, top_rows, c, n)
                        top_len[c] = n + 1
                    elif k > top_keys[c, 0]:  # rows arrive in order: a tie never beats the root
                        top_keys[c, 0] = k
                        top_rows[c, 0] = row
                        _sift_down(top_keys, top_rows, c, n)


@njit(parallel=True, nogil=True, cache=True)
def scan_refine(u, sign, full, ref_index, prefix, active, pshift, shift, mask, hist):
    """Refinement pass over one chunk: the next level's histogram inside each stat's prefix.

    Column ``c`` refines when ``ref_index[c] = j >= 0``; its two order statistics ``s`` (0: the
    lower, 1: the upper of numpy's interpolation pair) count into ``hist[2 * j + s]`` the keys
    whose bits above ``pshift`` equal ``prefix[j, s]``'s.
    """
    n_rows, n_cols = u.shape
    n_blocks = (n_cols + BLOCK_COLS - 1) // BLOCK_COLS
    for b in prange(n_blocks):
        c0 = b * BLOCK_COLS
        c1 = min(n_cols, c0 + BLOCK_COLS)
        any_ref = False
        for c in range(c0, c1):
            if ref_index[c] >= 0:
                any_ref = True
        if not any_ref:
            continue
        for i in range(n_rows):
            for c in range(c0, c1):
                j = ref_index[c]
                if j < 0:
                    continue
                k = _key(np.uint64(u[i, c]), sign, full)
                for s in range(2):
                    if active[j, s] and (k >> pshift) == (prefix[j, s] >> pshift):
                        hist[2 * j + s, np.intp((k >> shift) & mask)] += 1


@njit(parallel=True, nogil=True, cache=True)
def scan_final(u, labels, sign, full, lo, hi, counts, n_active, off, fill, cand_keys, cand_labels):
    """Final pass over one chunk: count keys above ``hi[c]``, collect keys in ``[lo[c], hi[c]]``.

    Counted keys are certainly above the threshold (whatever it resolves to); collected ones are
    the candidates for the order statistics, kept with their labels so they can be counted once
    the threshold is known. A column whose threshold is known has an empty range (lo = hi + 1).
    ``fill`` keeps counting past a column's slot (without writing) so the caller can detect data
    that changed between passes instead of overrunning the buffer.
    """
    n_rows, n_cols = u.shape
    n_classes = counts.shape[1]
    n_blocks = (n_cols + BLOCK_COLS - 1) // BLOCK_COLS
    for b in prange(n_blocks):
        c0 = b * BLOCK_COLS
        c1 = min(n_cols, c0 + BLOCK_COLS)
        for i in range(n_rows):
            lab = labels[i]
            for c in range(c0, c1):
                k = _key(np.uint64(u[i, c]), sign, full)
                if k > hi[c]:
                    n_active[c] += 1
                    if n_classes > 0:
                        counts[c, lab] += 1
                elif k >= lo[c]:
                    p = off[c] + fill[c]
                    if p < off[c + 1]:
                        cand_keys[p] = k
                        cand_labels[p] = lab
                    fill[c] += 1


@njit(parallel=True, nogil=True, cache=True)
def locate(hist, row_of, rank, bin_out, rank_out, count_out):
    """For item m (a column's order statistic) find the bin of ``hist[row_of[m]]`` holding rank
    ``rank[m]``: its index, the rank inside it, and its count. Items with ``row_of < 0`` are skipped;
    a rank beyond the histogram's total leaves ``bin_out[m] = -1``."""
    n_bins = hist.shape[1]
    for m in prange(row_of.shape[0]):
        h = row_of[m]
        if h < 0:
            continue
        r = rank[m]
        acc = 0
        for b in range(n_bins):
            cnt = hist[h, b]
            if acc + cnt > r:
                bin_out[m] = b
                rank_out[m] = r - acc
                count_out[m] = cnt
                break
            acc += cnt


@njit(parallel=True, nogil=True, cache=True)
def select_candidates(off, fill, cand_keys, local_rank, need, out_keys):
    """Exact selection: the ``local_rank[c, s]``-th smallest collected key of column c."""
    for c in prange(off.shape[0] - 1):
        n = fill[c]
        if n == 0 or not (need[c, 0] or need[c, 1]):
            continue
        seg = np.sort(cand_keys[off[c] : off[c] + n])
        for s in range(2):
            if need[c, s]:
                out_keys[c, s] = seg[local_rank[c, s]]


@njit(parallel=True, nogil=True, cache=True)
def count_candidates(off, fill, cand_keys, cand_labels, thr_key, counts, n_active):
    """Add the collected keys above the resolved threshold key to the counts."""
    n_classes = counts.shape[1]
    for c in prange(off.shape[0] - 1):
        t = thr_key[c]
        for p in range(off[c], off[c] + fill[c]):
            if cand_keys[p] > t:
                n_active[c] += 1
                if n_classes > 0:
                    counts[c, cand_labels[p]] += 1
