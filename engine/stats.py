"""Per-neuron statistics of a feature store: exact percentile thresholds and class selectivity.

The seed notebook's neuron analysis (its section 4) calls a neuron "activated" by a clip when the
clip's value exceeds the neuron's q-th percentile over all clips (q = 95), counts activations per
class (``neural_matrix``: ``(X > np.percentile(X, q, axis=0)).T @ onehot(y)``), and reads how
much of a neuron's activity its most represented class takes. This module computes the same
numbers, identical to numpy, over stores of any size without loading them:

* thresholds equal ``np.percentile(X, q, axis=0)`` (numpy's default "linear" method) under
  ``np.array_equal``, bit for bit except that a zero threshold may be +0.0 where numpy's
  partition happened to leave -0.0 (the two compare equal, so every count is unaffected);
* counts are the same integers as ``(X > thresholds).T @ onehot(y)``.

Method (exact, out-of-core). Values become order-preserving unsigned keys (their IEEE bit
patterns, see ``_stats_kernels._key``). Pass 1 histograms each column's keys on their leading
12 bits (and tracks min/max, NaN rows and the top-k clips); the two order statistics numpy
interpolates between then lie in known bins with known ranks inside them. The final pass counts
the values above those bins (certainly above the threshold) and collects the few inside them;
an exact selection among the collected values gives the order statistics, numpy's own lerp
arithmetic the threshold, and the collected values' labels the rest of the counts. When the
collected values would exceed the memory budget, intermediate passes refine the bins on the
next 12 bits first (two such passes resolve every bit of a float32), so memory is bounded by the
budget, not by N. Typical stores need 2 passes (measured: ReLU features, 200,000 clips, 64 MiB).

Shares. ``share_seed`` is the seed's: top-class count / (N * (100 - q) / 100), i.e. ``stats / 100``
for 2,000 clips. Ties at the threshold (ReLU zeros) leave some neurons fewer activations than
that, so ``share_active`` (top-class count / the neuron's actual activations) is reported beside
it; the two agree for neurons without ties.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SoundNetError, StoreError

log = logging.getLogger(__name__)

DEFAULT_Q = 95.0
"""The seed's activation percentile: a neuron fires on the clips above its 95th percentile."""

DEFAULT_TOP_K = 10
"""Top activating clips kept per neuron."""

DEFAULT_MEMORY_BUDGET = 64 * 2**20
"""Working memory of one scan (chunk buffer, histograms, collected candidates), in bytes."""

CHUNK_BYTES_MAX = 16 * 2**20
"""Largest row chunk read at once: big enough to amortise a read call and a parallel launch."""

SELECTIVITY_LEVELS = (0.2, 0.3)
"""Share levels of the seed's reading ("50 neurons above 20%, few above 30%")."""

STATS_GROUP = "stats"
STATS_FORMAT_VERSION = 1

SHARE_SEED_DEFINITION = (
    "count of the top class / (n_clips * (100 - q) / 100), the seed notebook's share "
    "(stats / 100 for 2000 clips at q=95); exceeds the honest share when ties leave a neuron "
    "fewer activations"
)
SHARE_ACTIVE_DEFINITION = (
    "count of the top class / number of clips above the threshold (NaN when none is)"
)

_LEVEL0_BITS = 12  # 4096 bins: 16 KiB of int32 per neuron; a bin spans 1/8 of an octave (fewer
# bits measured slower even at 2,000 clips: wider bins make more candidates to sort)
_REFINE_BITS = 12  # bits resolved by each refinement pass
_PARALLEL_MIN_VALUES = 1 << 22  # below ~20 ms of work one thread beats waking the others
_HIST_DTYPE = np.int32  # per-bin counts; N is checked against its range
_LABEL_DTYPE = np.int32  # labels of collected candidates


class StatsError(SoundNetError):
    """Neuron statistics cannot be computed: bad input, NaN in the features, too small a budget."""


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LayerSummary:
    """One line per layer, to compare selectivity across depth (the seed's last figure)."""

    layer: str | None
    pool: str | None
    q: float
    n_clips: int
    n_neurons: int
    n_classes: int
    n_silent: int  # neurons no clip exceeds (constant, or saturated at the threshold)
    n_tied: int  # neurons with fewer activations than distinct values would give (ties, e.g. ReLU zeros)
    mean_share_seed: float
    median_share_seed: float
    mean_share_active: float  # over neurons with at least one activation
    median_share_active: float
    levels: tuple[float, ...]
    n_above_seed: tuple[int, ...]  # neurons whose share_seed > level, per level
    n_above_active: tuple[int, ...]  # neurons whose share_active > level, per level
    top_classes: tuple[tuple[int, int], ...]  # (class, neurons it is the top class of), most first


_ARRAY_FIELDS = (
    "thresholds",
    "counts",
    "n_active",
    "top_class",
    "share_seed",
    "share_active",
    "top_clips",
    "top_values",
)


@dataclass(frozen=True, eq=False)
class NeuronStats:
    """Per-neuron statistics of one layer (C neurons, K classes, k top clips).

    Arrays are read-only. ``top_class`` is -1 and ``share_active`` NaN for a neuron no labelled
    clip activates; the seed's ``argmax`` would have said class 0 with share 0.
    """

    q: float
    n_clips: int
    thresholds: np.ndarray  # (C,) the data's float dtype: np.percentile(X, q, axis=0)
    counts: np.ndarray  # (C, K) int64: clips of class k above neuron c's threshold
    n_active: np.ndarray  # (C,) int64: clips above the threshold (labelled or not)
    top_class: np.ndarray  # (C,) int64: the most represented class (lowest id on ties), or -1
    share_seed: np.ndarray  # (C,) float64: SHARE_SEED_DEFINITION
    share_active: np.ndarray  # (C,) float64: SHARE_ACTIVE_DEFINITION
    top_clips: np.ndarray  # (C, k) int64: rows of the largest values, largest first (ties: lower row)
    top_values: np.ndarray  # (C, k) their values
    layer: str | None = None
    pool: str | None = None
    class_names: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        for name in _ARRAY_FIELDS:
            view = np.asarray(getattr(self, name)).view()
            view.flags.writeable = False  # a read-only view: the caller's array keeps its flags
            object.__setattr__(self, name, view)
        c = self.thresholds.shape[0]
        for name in _ARRAY_FIELDS:
            if getattr(self, name).shape[0] != c:
                raise StatsError(f"{self.name}: {name} has {getattr(self, name).shape[0]} rows, not {c}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    @property
    def name(self) -> str:
        return "/".join(p for p in (self.layer, self.pool) if p) or "features"

    @property
    def n_neurons(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[1])

    @property
    def seed_denominator(self) -> float:
        """The seed's expected number of activations, ``n_clips * (100 - q) / 100`` (100 for 2000 clips)."""
        return _seed_denominator(self.n_clips, self.q)

    def class_name(self, k: int) -> str:
        """Readable name of class ``k`` (its id when the store has no names; "-" for none)."""
        if k < 0:
            return "-"
        if self.class_names is not None and k < len(self.class_names):
            return self.class_names[k]
        return str(k)

    def most_selective(self, n: int = 10, by: str = "seed") -> np.ndarray:
        """Indices of the ``n`` neurons with the largest share, largest first; ties by larger
        top-class count, then lower index; silent neurons last. ``by="seed"`` (default) ranks by
        the top class's count over the expected activations, so a neuron that fires on 8 clips,
        4 of them cats, does not outrank one firing on 100 clips, 38 of them hand saws;
        ``by="active"`` ranks by the share of the neuron's actual activations."""
        share = _share_by(self, by)
        top_count = self.counts.max(axis=1) if self.n_classes else np.zeros(self.n_neurons, np.int64)
        key = np.where(np.isnan(share), -np.inf, share)
        order = np.lexsort((np.arange(self.n_neurons), -top_count, -key))
        return order[: max(0, n)]

    def summary(self, levels: Sequence[float] = SELECTIVITY_LEVELS) -> LayerSummary:
        """Counts of selective neurons at each share level, mean/median shares, top classes."""
        levels = tuple(float(v) for v in levels)
        low, _ = _interpolation_ranks(self.n_clips, self.q)
        expected = self.n_clips - 1 - low  # activations when the column's values are distinct
        classes, neurons = np.unique(self.top_class[self.top_class >= 0], return_counts=True)
        order = np.lexsort((classes, -neurons))
        return LayerSummary(
            layer=self.layer,
            pool=self.pool,
            q=self.q,
            n_clips=self.n_clips,
            n_neurons=self.n_neurons,
            n_classes=self.n_classes,
            n_silent=int(np.count_nonzero(self.n_active == 0)),
            n_tied=int(np.count_nonzero(self.n_active < expected)),
            mean_share_seed=_nan_stat(np.mean, self.share_seed),
            median_share_seed=_nan_stat(np.median, self.share_seed),
            mean_share_active=_nan_stat(np.mean, self.share_active),
            median_share_active=_nan_stat(np.median, self.share_active),
            levels=levels,
            n_above_seed=tuple(int(np.count_nonzero(self.share_seed > v)) for v in levels),
            n_above_active=tuple(int(np.count_nonzero(self.share_active > v)) for v in levels),
            top_classes=tuple((int(classes[i]), int(neurons[i])) for i in order),
        )


def _share_by(stats: NeuronStats, by: str) -> np.ndarray:
    if by == "active":
        return stats.share_active
    if by == "seed":
        return stats.share_seed
    raise StatsError(f"share must be 'active' or 'seed', not {by!r}")


def _nan_stat(fn, values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else math.nan


def _seed_denominator(n: int, q: float) -> float:
    # n * (100 - q) / 100 rather than n * (1 - q / 100): exactly 100.0 for the seed's 2000 clips.
    return n * (100.0 - q) / 100.0


# --------------------------------------------------------------------------------------------
# numpy's linear interpolation, replicated


def _check_q(q: Any) -> float:
    try:
        value = float(q)
    except (TypeError, ValueError) as exc:
        raise StatsError(f"percentile must be a number in [0, 100], not {q!r}") from exc
    if not 0.0 <= value <= 100.0:  # also rejects NaN
        raise StatsError(f"percentile must be in [0, 100], not {q!r}")
    return value


@dataclass(frozen=True)
class _Interpolation:
    low: int  # rank (0-based) of the lower order statistic
    high: int  # rank of the upper one
    gamma: float  # numpy's interpolation weight, as numpy computes it


def _interpolation(n: int, q: float) -> _Interpolation:
    """numpy 2.x ``_quantile`` for method="linear" and a Python-float q, step by step.

    The virtual index is ``(n - 1) * (q / 100)`` in float64; at or past the last index numpy takes
    the last value twice *and* keeps gamma = virtual - (-1) (its "-1" index), which only matters
    through its lerp (e.g. inf - inf). Reproducing these steps keeps gamma bit-identical.
    """
    quantile = np.true_divide(q, 100)
    virtual = (n - 1) * quantile
    if virtual >= n - 1:
        previous = -1
        low = high = n - 1
    else:
        previous = int(np.floor(virtual))
        low, high = previous, previous + 1
    gamma = float(virtual - np.intp(previous))
    return _Interpolation(low, high, gamma)


def _interpolation_ranks(n: int, q: float) -> tuple[int, int]:
    i = _interpolation(n, q)
    return i.low, i.high


def _numpy_lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's ``_lerp`` verbatim: same ufuncs, same operand types (a Python-float weight keeps
    float32 arithmetic float32), hence the same rounding."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf -> NaN, as numpy returns it
        diff_b_a = b - a
        out = np.add(a, diff_b_a * t)
        np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=type(out.dtype))
    return out


# --------------------------------------------------------------------------------------------
# Keys: order-preserving unsigned integers of float bit patterns


@dataclass(frozen=True)
class _KeySpec:
    dtype: np.dtype
    udtype: np.dtype
    nbits: int
    widths: tuple[int, ...]  # bits resolved by each histogram level, level 0 first

    @property
    def sign(self) -> np.uint64:
        return np.uint64(1 << (self.nbits - 1))

    @property
    def full(self) -> np.uint64:
        return np.uint64((1 << self.nbits) - 1)

    @property
    def absmask(self) -> np.uint64:
        return np.uint64((1 << (self.nbits - 1)) - 1)

    @property
    def infbits(self) -> np.uint64:  # bit pattern of +inf: larger magnitudes bits are NaN
        return np.uint64(np.array(np.inf, dtype=self.dtype).view(self.udtype))

    def shift(self, level: int) -> int:
        """Bits below the ones resolved after ``level``."""
        return self.nbits - sum(self.widths[: level + 1])


    @property
    def last_level(self) -> int:
        return len(self.widths) - 1


def _widths(nbits: int) -> tuple[int, ...]:
    """Level 0, then 12 bits per refinement until every bit is resolved."""
    rest = nbits - _LEVEL0_BITS
    tail = (rest % _REFINE_BITS,) if rest % _REFINE_BITS else ()
    return (_LEVEL0_BITS,) + (_REFINE_BITS,) * (rest // _REFINE_BITS) + tail


_KEY_SPECS = {
    np.dtype(np.float32): _KeySpec(np.dtype(np.float32), np.dtype(np.uint32), 32, _widths(32)),  # 12, 12, 8
    np.dtype(np.float64): _KeySpec(np.dtype(np.float64), np.dtype(np.uint64), 64, _widths(64)),
}
_REFINE_BINS = 1 << _REFINE_BITS


def _keys_of(values: np.ndarray, spec: _KeySpec) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=spec.dtype).view(spec.udtype).astype(np.uint64)
    bits = np.where(bits == spec.sign, np.uint64(0), bits)  # -0.0 -> +0.0
    return np.where(bits & spec.sign, spec.full ^ bits, bits | spec.sign)


def _values_of(keys: np.ndarray, spec: _KeySpec) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint64)
    bits = np.where(keys & spec.sign, keys ^ spec.sign, spec.full ^ keys)
    return bits.astype(spec.udtype).view(spec.dtype)


# --------------------------------------------------------------------------------------------
# Row-chunk reading


class _Rows:
    """Row chunks of a 2-D float matrix: ndarray, memmap, h5py.Dataset, or any array-like with
    ``shape``, ``dtype`` and row slicing. An h5py dataset is read into one reused buffer, in chunks
    aligned to its HDF5 chunks; an in-memory array is walked by views (no copy)."""

    def __init__(self, data: Any, *, name: str, chunk_rows: int | None, chunk_bytes: int) -> None:
        shape = getattr(data, "shape", None)
        if shape is None or getattr(data, "dtype", None) is None:
            data = np.asarray(data)
            shape = data.shape
        if len(shape) != 2:
            raise StatsError(f"{name}: features must be 2-D (clips x neurons), not shape {tuple(shape)}")
        dtype = np.dtype(data.dtype)
        spec = _KEY_SPECS.get(dtype.newbyteorder("=")) if dtype.kind == "f" else None
        if spec is None:
            raise StatsError(f"{name}: features must be float32 or float64, not {dtype}")
        self.data = data
        self.name = name
        self.spec = spec
        self.n, self.c = int(shape[0]), int(shape[1])
        if self.n >= np.iinfo(_HIST_DTYPE).max:
            raise StatsError(f"{name}: {self.n} clips exceed the {np.iinfo(_HIST_DTYPE).max} supported")
        row_bytes = max(1, self.c * spec.dtype.itemsize)
        if chunk_rows is None:
            chunk_rows = max(1, chunk_bytes // row_bytes)
            h5_rows = (getattr(data, "chunks", None) or (None,))[0]
            if h5_rows:  # whole HDF5 chunks: each is decompressed once per pass
                chunk_rows = max(h5_rows, chunk_rows // h5_rows * h5_rows)
        elif chunk_rows < 1:
            raise StatsError(f"{name}: chunk_rows must be positive, not {chunk_rows}")
        self.chunk_rows = int(min(chunk_rows, max(1, self.n)))
        self.passes = 0
        self._direct = hasattr(data, "read_direct") and not isinstance(data, np.ndarray)
        self._buffer: np.ndarray | None = None

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_rows * self.c * self.spec.dtype.itemsize

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, chunk as an unsigned-integer view) for each chunk, in row order."""
        self.passes += 1
        for r0 in range(0, self.n, self.chunk_rows):
            r1 = min(self.n, r0 + self.chunk_rows)
            yield r0, self._read(r0, r1).view(self.spec.udtype)

    def _read(self, r0: int, r1: int) -> np.ndarray:
        if self._direct:
            if self._buffer is None:
                self._buffer = np.empty((self.chunk_rows, self.c), dtype=self.spec.dtype)
            out = self._buffer[: r1 - r0]
            try:
                self.data.read_direct(out, source_sel=np.s_[r0:r1])
            except (OSError, ValueError) as exc:
                raise StoreError(f"{self.name}: cannot read rows {r0}:{r1}: {exc}") from exc
            return out
        return np.ascontiguousarray(self.data[r0:r1], dtype=self.spec.dtype)

    def check_nan(self, nan_row: np.ndarray) -> None:
        if nan_row.size and nan_row.max() >= 0:
            rows = np.where(nan_row >= 0, nan_row, np.iinfo(np.int64).max)
            col = int(np.argmin(rows))
            raise StatsError(
                f"{self.name}: NaN at row {int(rows[col])} (neuron {col}); percentiles and activations "
                "are undefined for it: re-extract or drop that clip"
            )


# --------------------------------------------------------------------------------------------
# The exact scan


@dataclass(frozen=True)
class _ScanResult:
    thresholds: np.ndarray
    counts: np.ndarray | None
    n_active: np.ndarray | None
    top_keys: np.ndarray
    top_rows: np.ndarray
    passes: int


def minimum_budget(n_neurons: int, chunk_bytes: int, top_k: int = 0, n_classes: int = 0) -> int:
    """Smallest ``memory_budget`` (bytes) a scan accepts: one chunk, the level-0 histograms, the
    top-k heaps, the counts and the per-neuron state. More budget buys candidate room (fewer
    passes), never correctness."""
    c = n_neurons
    hist0 = c * (1 << _LEVEL0_BITS) * np.dtype(_HIST_DTYPE).itemsize
    state = c * 2 * 8 * 8  # (C, 2) arrays of 8-byte keys, ranks, counts, prefixes...
    return chunk_bytes + hist0 + c * top_k * 16 + c * n_classes * 8 + state


def _budget_plan(rows: _Rows, budget: int, top_k: int, n_classes: int) -> tuple[int, int]:
    """(candidate capacity of the final pass, columns one refinement pass may histogram)."""
    c = rows.c
    hist0 = c * (1 << _LEVEL0_BITS) * np.dtype(_HIST_DTYPE).itemsize
    needed = minimum_budget(c, rows.chunk_bytes, top_k, n_classes)
    if budget < needed:
        raise StatsError(
            f"{rows.name}: a memory budget of {budget / 2**20:.2f} MiB is too small for {c} neurons "
            f"read {rows.chunk_rows} rows at a time: it needs at least {needed / 2**20:.2f} MiB"
        )
    rest = budget - needed + hist0  # the level-0 histograms are freed before candidates exist
    capacity = rest // (rows.spec.dtype.itemsize + np.dtype(_LABEL_DTYPE).itemsize)
    refine_columns = max(1, rest // (2 * _REFINE_BINS * np.dtype(_HIST_DTYPE).itemsize))
    return int(capacity), int(refine_columns)


@contextmanager
def _threads_for(values: int) -> Iterator[None]:
    """One numba thread for small inputs: waking the pool costs more than it saves there (and
    milliseconds per launch when other processes keep the cores busy)."""
    import numba

    if values >= _PARALLEL_MIN_VALUES:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _exact_scan(rows: _Rows, q: float, **kwargs: Any) -> _ScanResult:
    with _threads_for(rows.n * rows.c):
        return _scan(rows, q, **kwargs)


def _scan(
    rows: _Rows,
    q: float,
    *,
    labels: np.ndarray | None,
    n_classes: int,
    top_k: int,
    budget: int,
    want_counts: bool,
    limits: tuple[int, int] | None = None,
) -> _ScanResult:
    """The scan behind every public function. ``limits`` (candidate capacity, columns per
    refinement pass) overrides the budget's, so tests can drive the refinement passes on small
    data; the result never depends on them."""
    from . import _stats_kernels as K

    n, c = rows.n, rows.c
    spec = rows.spec
    interp = _interpolation(n, q)
    top_k = min(top_k, n)
    capacity, refine_columns = _budget_plan(rows, budget, top_k, n_classes if want_counts else 0)
    if limits is not None:
        capacity, refine_columns = limits
    sign, full, absmask, infbits = spec.sign, spec.full, spec.absmask, spec.infbits

    # ---- pass 1: level-0 histograms, min/max multiplicities, NaN, top-k
    shift0 = spec.shift(0)
    hist = np.zeros((c, 1 << spec.widths[0]), dtype=_HIST_DTYPE)
    minkey = np.full(c, full, dtype=np.uint64)
    maxkey = np.zeros(c, dtype=np.uint64)
    mincount = np.zeros(c, dtype=np.int64)
    maxcount = np.zeros(c, dtype=np.int64)
    nan_row = np.full(c, -1, dtype=np.int64)
    top_keys = np.zeros((c, top_k), dtype=np.uint64)
    top_rows = np.zeros((c, top_k), dtype=np.int64)
    top_len = np.zeros(c, dtype=np.int64)
    for r0, u in rows:
        K.scan_first(
            u, r0, sign, full, absmask, infbits, np.uint64(shift0),
            hist, minkey, mincount, maxkey, maxcount, nan_row, top_keys, top_rows, top_len,
        )  # fmt: skip
        rows.check_nan(nan_row)

    # ---- per (column, stat) state; stat 0/1 = numpy's lower/upper order statistic
    rank = np.empty((c, 2), dtype=np.int64)
    rank[:, 0], rank[:, 1] = interp.low, interp.high
    key = np.zeros((c, 2), dtype=np.uint64)
    done = np.zeros((c, 2), dtype=bool)
    at_min = rank < mincount[:, None]  # ties at the minimum (ReLU zeros, constant neurons)
    at_max = rank >= n - maxcount[:, None]
    key[at_min] = np.broadcast_to(minkey[:, None], (c, 2))[at_min]
    key[at_max] = np.broadcast_to(maxkey[:, None], (c, 2))[at_max]
    done |= at_min | at_max

    prefix = np.zeros((c, 2), dtype=np.uint64)
    rank_in = np.zeros((c, 2), dtype=np.int64)
    count_in = np.zeros((c, 2), dtype=np.int64)
    level = np.zeros(c, dtype=np.int64)
    row_of = np.where(done, -1, np.arange(c)[:, None]).ravel()
    _locate_into(K, hist, row_of, rank.ravel(), shift0, prefix, rank_in, count_in, done, rows.name)
    del hist

    # ---- refinement passes while the candidates would not fit the budget
    while True:
        pending = np.flatnonzero(~done.all(axis=1))
        cand = _candidate_counts(prefix, count_in, done)
        order = pending[np.argsort(cand[pending], kind="stable")]
        fits = np.cumsum(cand[order]) <= capacity
        refine = order[~fits][:refine_columns]
        if refine.size == 0:
            break
        _refine(K, rows, spec, refine, prefix, rank_in, count_in, done, key, level)

    # ---- final pass: collect the candidates (and count, when asked)
    pending = ~done.all(axis=1)
    cand = np.where(pending, _candidate_counts(prefix, count_in, done), 0)
    lo, hi, below = _candidate_ranges(spec, prefix, rank, rank_in, done, level)
    counts = np.zeros((c, n_classes if want_counts else 0), dtype=np.int64)
    n_active = np.zeros(c, dtype=np.int64)
    thresholds = np.empty(c, dtype=spec.dtype)
    settled = ~pending
    if settled.any():
        thresholds[settled] = _numpy_lerp(
            _values_of(key[settled, 0], spec), _values_of(key[settled, 1], spec), interp.gamma
        )
    if want_counts:  # settled columns: count directly against their threshold
        lo[settled], hi[settled] = _count_range(thresholds[settled], spec)
    else:
        lo[settled] = hi[settled] = full
    off = np.zeros(c + 1, dtype=np.int64)
    np.cumsum(cand, out=off[1:])
    fill = np.zeros(c, dtype=np.int64)
    cand_keys = np.empty(int(off[-1]), dtype=spec.udtype)
    cand_labels = np.empty(int(off[-1]), dtype=_LABEL_DTYPE)
    if pending.any() or want_counts:
        _final_pass(K, rows, labels, lo, hi, counts, n_active, off, fill, cand_keys, cand_labels)
        if not np.array_equal(fill, cand):
            bad = int(np.flatnonzero(fill != cand)[0])
            raise StoreError(
                f"{rows.name}: the data changed while it was read (neuron {bad}: {int(fill[bad])} "
                f"values in its threshold's range, {int(cand[bad])} in the previous pass)"
            )
        local_rank = rank - below[:, None]
        need = pending[:, None] & ~done
        K.select_candidates(off, fill, cand_keys, local_rank, need, key)
        thresholds[pending] = _numpy_lerp(
            _values_of(key[pending, 0], spec), _values_of(key[pending, 1], spec), interp.gamma
        )

    if want_counts:
        thr_key = _keys_of(thresholds, spec)
        nan_thr = np.isnan(thresholds)  # only from inf - inf in numpy's lerp: nothing is > NaN
        thr_key[nan_thr] = full
        K.count_candidates(off, fill, cand_keys, cand_labels, thr_key, counts, n_active)
        # Values above a pending column's range were counted as above its threshold and values
        # below it as not. Right when threshold <= hi (counted keys exceed hi) and threshold >=
        # min(lo, lower stat) (uncounted keys are below lo and at most the lower stat): numpy's
        # lerp guarantees both unless b - a overflows. Recount any column where it did not.
        floor = np.minimum(lo, key[:, 0])
        off_range = pending & ~nan_thr & ((thr_key < floor) | (thr_key > hi))
        counts[nan_thr | off_range] = 0
        n_active[nan_thr | off_range] = 0
        if off_range.any():
            lo2 = np.full(c, full, dtype=np.uint64)
            hi2 = np.full(c, full, dtype=np.uint64)
            lo2[off_range], hi2[off_range] = _count_range(thresholds[off_range], spec)
            empty = np.zeros(c + 1, dtype=np.int64)
            _final_pass(
                K, rows, labels, lo2, hi2, counts, n_active, empty, np.zeros(c, np.int64),
                cand_keys[:0], cand_labels[:0],
            )  # fmt: skip
    log.debug("%s: thresholds over %d rows x %d neurons in %d passes", rows.name, n, c, rows.passes)
    return _ScanResult(
        thresholds=thresholds,
        counts=counts if want_counts else None,
        n_active=n_active if want_counts else None,
        top_keys=top_keys,
        top_rows=top_rows,
        passes=rows.passes,
    )


def _locate_into(K, hist, row_of, rank_flat, shift, prefix, rank_in, count_in, done, name) -> None:
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


def _refine(K, rows: _Rows, spec: _KeySpec, cols, prefix, rank_in, count_in, done, key, level) -> None:
    """One pass histogramming the next level of bits inside the current bins of ``cols``."""
    r = cols.size
    ref_index = np.full(rows.c, -1, dtype=np.int64)
    ref_index[cols] = np.arange(r)
    lv = level[cols]
    pshift = np.array([spec.shift(int(v)) for v in lv], dtype=np.uint64)
    shift = np.array([spec.shift(int(v) + 1) for v in lv], dtype=np.uint64)
    mask = np.array([(1 << spec.widths[int(v) + 1]) - 1 for v in lv], dtype=np.uint64)
    sub_prefix = np.ascontiguousarray(prefix[cols])
    active = np.ascontiguousarray(~done[cols])
    hist = np.zeros((2 * r, _REFINE_BINS), dtype=_HIST_DTYPE)
    for _, u in rows:
        K.scan_refine(u, spec.sign, spec.full, ref_index, sub_prefix, active, pshift, shift, mask, hist)
    row_of = np.where(active, np.arange(2 * r).reshape(r, 2), -1).ravel()
    sub_rank = np.ascontiguousarray(rank_in[cols])
    sub_count = np.ascontiguousarray(count_in[cols])
    _locate_into(
        K, hist, row_of, sub_rank.ravel(), np.repeat(shift, 2), sub_prefix, sub_rank, sub_count,
        ~active, rows.name,
    )  # fmt: skip
    prefix[cols], rank_in[cols], count_in[cols] = sub_prefix, sub_rank, sub_count
    level[cols] += 1
    final = (level[cols] == spec.last_level)[:, None] & active  # every bit known: the key itself
    sub_done = done[cols] | final
    sub_key = key[cols]
    sub_key[final] = sub_prefix[final]
    done[cols], key[cols] = sub_done, sub_key


def _candidate_counts(prefix, count_in, done) -> np.ndarray:
    """Values a column would collect: its pending stats' bins (one bin when they share it)."""
    both = ~done[:, 0] & ~done[:, 1]
    same = both & (prefix[:, 0] == prefix[:, 1])
    total = np.where(~done[:, 0], count_in[:, 0], 0) + np.where(~done[:, 1], count_in[:, 1], 0)
    return np.where(same, count_in[:, 0], total).astype(np.int64)


def _candidate_ranges(spec: _KeySpec, prefix, rank, rank_in, done, level):
    """Key range [lo, hi] covering the pending stats' bins, and how many values lie below lo."""
    width = np.array([spec.shift(int(v)) for v in level], dtype=np.uint64)
    span = (np.uint64(1) << width) - np.uint64(1)  # shift < nbits, so no overflow
    big = np.uint64(np.iinfo(np.uint64).max)
    start = np.where(done, big, prefix)
    end = np.where(done, np.uint64(0), prefix | span[:, None])
    lo = start.min(axis=1)
    hi = end.max(axis=1)
    first = np.argmin(start, axis=1)
    idx = np.arange(prefix.shape[0])
    below = rank[idx, first] - rank_in[idx, first]
    return lo, hi, below


def _count_range(thresholds: np.ndarray, spec: _KeySpec) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) making the final pass count ``x > threshold`` and collect nothing."""
    hi = _keys_of(thresholds, spec)
    lo = hi + np.uint64(1)
    nan = np.isnan(thresholds)  # x > NaN is False for every x: count nothing
    hi[nan] = lo[nan] = spec.full
    return lo, hi


def _final_pass(K, rows: _Rows, labels, lo, hi, counts, n_active, off, fill, cand_keys, cand_labels) -> None:
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


# --------------------------------------------------------------------------------------------
# Public API


def _name(layer: str | None, pool: str | None = None) -> str:
    return "/".join(p for p in (layer, pool) if p) or "features"


def _check_budget(memory_budget: int, name: str) -> int:
    if not isinstance(memory_budget, (int, np.integer)) or memory_budget <= 0:
        raise StatsError(f"{name}: memory_budget must be a positive number of bytes, not {memory_budget!r}")
    return int(memory_budget)


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
    q = _check_q(q)
    budget = _check_budget(memory_budget, label)
    if method == "columns":
        return _thresholds_by_column_blocks(data, q, budget, label)
    if method != "histogram":
        raise StatsError(f"{label}: method must be 'histogram' or 'columns', not {method!r}")
    rows = _Rows(data, name=label, chunk_rows=chunk_rows, chunk_bytes=min(CHUNK_BYTES_MAX, budget // 4))
    _require_rows(rows)
    return _exact_scan(rows, q, labels=None, n_classes=0, top_k=0, budget=budget, want_counts=False).thresholds


def _require_rows(rows: _Rows) -> None:
    if rows.n == 0:
        raise StatsError(f"{rows.name}: no clips: percentiles need at least one row")


def _thresholds_by_column_blocks(data: Any, q: float, budget: int, name: str) -> np.ndarray:
    rows = _Rows(data, name=name, chunk_rows=1, chunk_bytes=1)  # validation only
    _require_rows(rows)
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
    budget = _check_budget(memory_budget, label)
    rows = _Rows(data, name=label, chunk_rows=chunk_rows, chunk_bytes=min(CHUNK_BYTES_MAX, budget // 4))
    y, k = _check_labels(labels, rows.n, n_classes, label)
    if y is None:
        raise StatsError(f"{label}: activation counts need labels")
    thr = _comparison_thresholds(thresholds, rows)
    counts = np.zeros((rows.c, k), dtype=np.int64)
    n_active = np.zeros(rows.c, dtype=np.int64)
    lo, hi = _count_range(thr, rows.spec)
    off = np.zeros(rows.c + 1, dtype=np.int64)
    with _threads_for(rows.n * rows.c):
        _final_pass(
            _kernels(), rows, y, lo, hi, counts, n_active, off, np.zeros(rows.c, np.int64),
            np.empty(0, rows.spec.udtype), np.empty(0, _LABEL_DTYPE),
        )  # fmt: skip
    return counts


def _kernels():
    from . import _stats_kernels

    return _stats_kernels


def _comparison_thresholds(thresholds: Any, rows: _Rows) -> np.ndarray:
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
    name = _name(layer, pool)
    q = _check_q(q)
    budget = _check_budget(memory_budget, name)
    if not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise StatsError(f"{name}: top_k must be a non-negative integer, not {top_k!r}")
    if n_classes is None and class_names is not None:
        n_classes = len(class_names)
    rows = _Rows(data, name=name, chunk_rows=chunk_rows, chunk_bytes=min(CHUNK_BYTES_MAX, budget // 4))
    _require_rows(rows)
    y, k = _check_labels(labels, rows.n, n_classes, name)
    if _seed_denominator(rows.n, q) < 1:
        log.warning(
            "%s: %d clips at q=%g expect fewer than one clip above the threshold: share_seed "
            "(count / %.3g) is not a proportion; read share_active",
            name, rows.n, q, _seed_denominator(rows.n, q),
        )  # fmt: skip
    scan = _exact_scan(rows, q, labels=y, n_classes=k, top_k=int(top_k), budget=budget, want_counts=True)
    return _assemble(scan, rows, q, layer=layer, pool=pool, class_names=class_names)


def _assemble(scan: _ScanResult, rows: _Rows, q: float, **meta: Any) -> NeuronStats:
    counts, n_active = scan.counts, scan.n_active
    assert counts is not None and n_active is not None
    if counts.shape[1]:
        best = counts.max(axis=1)
        top_class = np.where(best > 0, counts.argmax(axis=1), -1)
    else:
        best = np.zeros(rows.c, dtype=np.int64)
        top_class = np.full(rows.c, -1, dtype=np.int64)
    denominator = _seed_denominator(rows.n, q)
    if counts.shape[1] == 0:  # no labels: no class, no share
        share_seed = share_active = np.full(rows.c, np.nan)
    else:
        share_seed = best / denominator if denominator > 0 else np.full(rows.c, np.nan)
        share_active = np.where(n_active > 0, best / np.maximum(n_active, 1), np.nan)
    order = np.lexsort((scan.top_rows, ~scan.top_keys), axis=-1)  # value desc, then row asc
    top_clips = np.take_along_axis(scan.top_rows, order, axis=1)
    top_values = _values_of(np.take_along_axis(scan.top_keys, order, axis=1), rows.spec)
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


# --------------------------------------------------------------------------------------------
# numpy references (kept for tests and benchmarks)


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
    if X.shape[0] >= 2**24:
        raise StatsError("reference_counts is exact only below 2**24 clips")
    onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(y)]
    return ((X > thresholds).T @ onehot).astype(np.int64)


def reference_top_clips(X: np.ndarray, k: int) -> np.ndarray:
    """(C, k) rows of each column's k largest values, largest first, ties by lower row."""
    return np.argsort(-np.asarray(X), axis=0, kind="stable")[:k].T


# --------------------------------------------------------------------------------------------
# Stores


def stats_group_path(layer: str, pool: str) -> str:
    return f"/{STATS_GROUP}/{layer}/{pool}"


def store_stats(
    store_path: str | Path,
    layers: Sequence[str] | None = None,
    pool: str = "mean",
    q: float = DEFAULT_Q,
    top_k: int = DEFAULT_TOP_K,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk_rows: int | None = None,
    write: bool = True,
) -> dict[str, NeuronStats]:
    """:func:`neuron_stats` of each layer (all layers having ``pool`` by default) of a feature
    store, read chunk by chunk, then written under ``/stats/<layer>/<pool>/`` (replacing those
    groups) unless ``write`` is false. Returns {layer: NeuronStats} in the store's layer order."""
    from .store import FeatureStore

    q = _check_q(q)
    path = Path(store_path)
    results: dict[str, NeuronStats] = {}
    with FeatureStore(path) as fs:
        available = list(fs.layers)
        if layers is None:
            todo = [layer for layer in available if pool in fs.pools(layer)]
            if not todo:
                raise StoreError(f"{path}: no layer has pooling {pool!r} (layers: {', '.join(available)})")
        else:
            todo = list(dict.fromkeys(layers))
            for layer in todo:
                if layer not in available:
                    raise StoreError(f"{path}: no layer {layer!r} (layers: {', '.join(available)})")
                if pool not in fs.pools(layer):
                    raise StoreError(f"{path}: layer {layer!r} has no pooling {pool!r} ({', '.join(fs.pools(layer))})")
        labels, class_names = fs.labels, fs.class_names
        for layer in todo:
            results[layer] = neuron_stats(
                fs.dataset(layer, pool), labels, q, None, top_k,
                layer=layer, pool=pool, class_names=class_names,
                chunk_rows=chunk_rows, memory_budget=memory_budget,
            )  # fmt: skip
    if write:
        write_stats(path, list(results.values()))
    return results


def write_stats(store_path: str | Path, stats: Sequence[NeuronStats]) -> None:
    """Write each of ``stats`` under ``/stats/<layer>/<pool>/`` of the store, replacing those
    groups, in one crash-safe update (``store.update_store``: the store is replaced whole)."""
    from .store import update_store

    for st in stats:
        if not st.layer or not st.pool:
            raise StatsError(f"{st.name}: statistics written to a store need their layer and pool")
    with update_store(store_path) as f:
        for st in stats:
            where = stats_group_path(st.layer, st.pool)
            if where in f:
                del f[where]
            g = f.create_group(where)
            for name in _ARRAY_FIELDS:
                g.create_dataset(name, data=np.asarray(getattr(st, name)))
            g.attrs.update(
                {
                    "q": st.q,
                    "n_clips": st.n_clips,
                    "n_classes": st.n_classes,
                    "top_k": st.top_clips.shape[1],
                    "percentile_method": "numpy linear (np.percentile default), exact",
                    "activation": "value > threshold",
                    "share_seed_denominator": st.seed_denominator,
                    "share_seed_definition": SHARE_SEED_DEFINITION,
                    "share_active_definition": SHARE_ACTIVE_DEFINITION,
                    "format_version": STATS_FORMAT_VERSION,
                }
            )


def read_stats(store_path: str | Path, layer: str, pool: str = "mean") -> NeuronStats:
    """The :class:`NeuronStats` that :func:`store_stats` wrote for ``layer``/``pool``."""
    import h5py

    path = Path(store_path)
    where = stats_group_path(layer, pool)
    try:
        with h5py.File(path, "r") as f:
            if where not in f:
                raise StoreError(f"{path}: no statistics for {layer}/{pool}: run `soundnet8 stats {path}` first")
            g = f[where]
            version = int(g.attrs.get("format_version", -1))
            if version != STATS_FORMAT_VERSION:
                raise StoreError(f"{path}: {where} has format {version}, this version reads {STATS_FORMAT_VERSION}")
            arrays = {name: g[name][()] for name in _ARRAY_FIELDS}
            q, n_clips = float(g.attrs["q"]), int(g.attrs["n_clips"])
            class_names = _class_names(f)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read {where}: {exc}") from exc
    return NeuronStats(q=q, n_clips=n_clips, layer=layer, pool=pool, class_names=class_names, **arrays)


def _class_names(f) -> tuple[str, ...] | None:
    if "classes/name" not in f:
        return None
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in f["classes/name"][()])
