"""Numba kernels behind :mod:`soundnet8.engine.stats` (exact out-of-core percentiles and counts).

Tested against the plain numpy references of :mod:`soundnet8.engine.stats.reference`.

Every kernel works on one row chunk of a feature matrix viewed as unsigned integers of the same
width (float32 -> uint32, float64 -> uint64) and turns each value into an order-preserving
unsigned *key* (:func:`_key`): ``a < b`` as floats exactly when ``key(a) < key(b)``. Histograms of
the key's leading bits then locate order statistics exactly, with no rounding anywhere.

Parallelism is over blocks of adjacent columns (``prange``), so each column (its histogram, its
counters, its top-k heap) belongs to exactly one thread: no atomics, no per-thread copies. A
block copies a tile of its rows into a small column-major buffer (row segments read in order),
then walks each column contiguously with the column's state in registers: measured 1.4x faster
than walking the row-major chunk column by column (rows 4 KiB apart defeat the prefetchers).

Kernels are compiled lazily on first call (nothing at import) and cached on disk
(``cache=True``), so a second process pays no JIT. Key arithmetic is done in uint64 whatever the
data width: numba promotes mixed signed/unsigned arithmetic to float64, so every constant
reaches the kernels as a ``np.uint64``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK_COLS = 32
"""Columns per parallel task; their 32 level-0 histograms (512 KiB) stay in L2."""

TILE_ROWS = 256
"""Rows per tile: a 32 x 256 tile of float32 is 32 KiB, in L1 while its columns are walked."""


@njit(inline="always", cache=True)
def _load_tile(u, t0, t1, c0, c1, tile):
    """tile[j, i - t0] = u[i, c0 + j]: read row segments in order, store column-major."""
    for i in range(t0, t1):
        for c in range(c0, c1):
            tile[c - c0, i - t0] = u[i, c]


@njit(inline="always", cache=True)
def _key(v, sign, full):
    """Order-preserving unsigned key of the IEEE-754 bit pattern ``v`` (widened to uint64).

    Positive numbers get the sign bit set (they sort above every negative); negative numbers are
    bit-inverted (a larger magnitude sorts lower). -0.0 gets the key of +0.0 because the two
    compare equal, as they do in ``np.partition`` and in ``x > threshold``. Branch-free (selects),
    since signs are unpredictable in logits.
    """
    v = np.uint64(0) if v == sign else v
    flip = full if v & sign else sign
    return v ^ flip


@njit(inline="always", cache=True)
def _worse(k1, r1, k2, r2):
    # Top-k order: larger value first, and among equal values the lower row first.
    return k1 < k2 or (k1 == k2 and r1 > r2)


@njit(inline="always", cache=True)
def _swap(keys, rows, c, a, b):
    """Exchange heap entries ``a`` and ``b`` of column ``c`` (key and row together)."""
    k = keys[c, a]
    keys[c, a] = keys[c, b]
    keys[c, b] = k
    r = rows[c, a]
    rows[c, a] = rows[c, b]
    rows[c, b] = r


@njit(inline="always", cache=True)
def _sift_up(keys, rows, c, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(keys[c, pos], rows[c, pos], keys[c, parent], rows[c, parent]):
            _swap(keys, rows, c, pos, parent)
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
            _swap(keys, rows, c, pos, w)
            pos = w
        else:
            break


@njit(inline="always", cache=True)
def _tile_extremes(col, n, sign, full):
    """(min key, its count, max key, its count) of col[:n]: branch-free loops LLVM vectorises."""
    mn = full
    mx = np.uint64(0)
    for j in range(n):
        k = _key(np.uint64(col[j]), sign, full)
        mn = min(mn, k)
        mx = max(mx, k)
    mc = 0
    xc = 0
    for j in range(n):
        k = _key(np.uint64(col[j]), sign, full)
        mc += k == mn
        xc += k == mx
    return mn, mc, mx, xc


@njit(parallel=True, nogil=True, cache=True)
def scan_first(
    u, row0, sign, full, absmask, infbits, shift,
    hist, minkey, mincount, maxkey, maxcount, nan_row, top_keys, top_rows, top_len,
):  # fmt: skip
    """Pass 1 over one chunk: level-0 histogram, min/max with their multiplicity, NaN rows, top-k.

    ``hist[c, key >> shift]`` counts the keys' leading bits; ``top_keys``/``top_rows`` hold a
    min-heap per column whose root is the weakest of the ``top_len[c]`` best so far. The
    histogram loop does only the scatter; extremes and top-k get their own loops over the tile
    (vectorised, and the top-k one skipped unless the tile's max beats the heap's root).
    """
    n_rows, n_cols = u.shape
    k_top = top_keys.shape[1]
    n_blocks = (n_cols + BLOCK_COLS - 1) // BLOCK_COLS
    for b in prange(n_blocks):
        c0 = b * BLOCK_COLS
        c1 = min(n_cols, c0 + BLOCK_COLS)
        tile = np.empty((BLOCK_COLS, TILE_ROWS), dtype=u.dtype)
        for t0 in range(0, n_rows, TILE_ROWS):
            t1 = min(n_rows, t0 + TILE_ROWS)
            n = t1 - t0
            _load_tile(u, t0, t1, c0, c1, tile)
            for c in range(c0, c1):
                col = tile[c - c0]
                h = hist[c]
                for j in range(n):
                    v = np.uint64(col[j])
                    if (v & absmask) > infbits:  # NaN: recorded, the caller raises naming the row
                        if nan_row[c] < 0:
                            nan_row[c] = row0 + t0 + j
                        continue
                    h[np.intp(_key(v, sign, full) >> shift)] += 1
                mn, mc, mx, xc = _tile_extremes(col, n, sign, full)
                if mn < minkey[c]:
                    minkey[c] = mn
                    mincount[c] = mc
                elif mn == minkey[c]:
                    mincount[c] += mc
                if mx > maxkey[c]:
                    maxkey[c] = mx
                    maxcount[c] = xc
                elif mx == maxkey[c]:
                    maxcount[c] += xc
                if k_top == 0:
                    continue
                n_top = top_len[c]
                if n_top == k_top and mx <= top_keys[c, 0]:
                    continue  # nothing here beats the weakest kept (a tie never does: rows ascend)
                for j in range(n):
                    k = _key(np.uint64(col[j]), sign, full)
                    if n_top < k_top:
                        top_keys[c, n_top] = k
                        top_rows[c, n_top] = row0 + t0 + j
                        _sift_up(top_keys, top_rows, c, n_top)
                        n_top += 1
                    elif k > top_keys[c, 0]:
                        top_keys[c, 0] = k
                        top_rows[c, 0] = row0 + t0 + j
                        _sift_down(top_keys, top_rows, c, n_top)
                top_len[c] = n_top


@njit(parallel=True, nogil=True, cache=True)
def scan_refine(u, sign, full, ref_index, prefix, active, pshift, shift, mask, hist):
    """Refinement pass over one chunk: the next level's histogram inside each stat's prefix.

    Column ``c`` refines when ``ref_index[c] = j >= 0``; its two order statistics ``s`` (0: the
    lower, 1: the upper of numpy's interpolation pair) count into ``hist[2 * j + s]`` the keys
    whose bits above ``pshift[j]`` equal ``prefix[j, s]``'s, binned by ``(key >> shift[j]) & mask[j]``.
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
        tile = np.empty((BLOCK_COLS, TILE_ROWS), dtype=u.dtype)
        for t0 in range(0, n_rows, TILE_ROWS):
            t1 = min(n_rows, t0 + TILE_ROWS)
            _load_tile(u, t0, t1, c0, c1, tile)
            for c in range(c0, c1):
                r = ref_index[c]
                if r < 0:
                    continue
                col = tile[c - c0]
                ps = pshift[r]
                sh = shift[r]
                m = mask[r]
                for s in range(2):
                    if not active[r, s]:
                        continue
                    want = prefix[r, s] >> ps
                    h = hist[2 * r + s]
                    for j in range(t1 - t0):
                        k = _key(np.uint64(col[j]), sign, full)
                        if (k >> ps) == want:
                            h[np.intp((k >> sh) & m)] += 1


@njit(parallel=True, nogil=True, cache=True)
def scan_final(
    u, row0, labels, sign, full, absmask, infbits,
    lo, hi, counts, n_active, off, fill, cand_keys, cand_labels, nan_row,
):  # fmt: skip
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
        tile = np.empty((BLOCK_COLS, TILE_ROWS), dtype=u.dtype)
        for t0 in range(0, n_rows, TILE_ROWS):
            t1 = min(n_rows, t0 + TILE_ROWS)
            _load_tile(u, t0, t1, c0, c1, tile)
            for c in range(c0, c1):
                col = tile[c - c0]
                low = lo[c]
                high = hi[c]
                end = off[c + 1]
                start = off[c]
                filled = fill[c]
                active = n_active[c]
                for j in range(t1 - t0):
                    v = np.uint64(col[j])
                    if (v & absmask) > infbits:  # NaN: numpy's NaN > t is False; we refuse instead
                        if nan_row[c] < 0:
                            nan_row[c] = row0 + t0 + j
                        continue
                    k = _key(v, sign, full)
                    if k > high:
                        active += 1
                        if n_classes > 0:
                            counts[c, labels[t0 + j]] += 1
                    elif k >= low:
                        p = start + filled
                        if p < end:
                            cand_keys[p] = k
                            cand_labels[p] = labels[t0 + j]
                        filled += 1
                fill[c] = filled
                n_active[c] = active


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
