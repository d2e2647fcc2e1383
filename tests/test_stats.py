"""Neuron statistics (soundnet8.engine.stats) against plain numpy, exactly.

Tolerance everywhere: none. Thresholds must satisfy ``np.array_equal`` with ``np.percentile``
(and equal bit patterns when the data has no -0.0, whose position numpy's partition leaves
unspecified); counts, activation totals and top clips must be the identical integers.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from soundnet8.engine.errors import SoundNetError, StoreError
from soundnet8.engine.stats import (
    DEFAULT_MEMORY_BUDGET,
    NeuronStats,
    Rows,
    ScanLimits,
    StatsError,
    activation_counts,
    exact_scan,
    minimum_budget,
    neuron_stats,
    percentile_thresholds,
    read_stats,
    reference_counts,
    reference_thresholds,
    reference_top_clips,
    store_stats,
)

from .conftest import SEED_FEATURES, requires_shared

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that make ties, zeros (ReLU), negative numbers and both signs of zero likely.
TIE_VALUES = np.array([0.0, 0.0, -0.0, 1.0, 2.0, 2.5, -1.0, 1e-3, 7.25, 1e6], dtype=np.float64)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))


@st.composite
def matrices(draw, dtype=np.float32, max_rows=120, max_cols=24):
    """(X, y, n_classes): random shapes; continuous, tied, ReLU-like or constant columns."""
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(1, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "ties", "relu", "constant", "wide"]))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        X = rng.standard_normal((n, c))
    elif kind == "ties":
        X = rng.choice(TIE_VALUES, size=(n, c))
    elif kind == "relu":  # ~40% zeros, the rest log-normal: SoundNet-like activations
        X = np.maximum(rng.standard_normal((n, c)) + 0.25, 0) * rng.lognormal(0, 1, (n, c))
    elif kind == "constant":
        X = np.broadcast_to(rng.standard_normal(c), (n, c)).copy()
    else:  # magnitudes from 1e-30 to 1e30, both signs
        X = rng.choice([-1.0, 1.0], (n, c)) * 10.0 ** rng.uniform(-30, 30, (n, c))
    n_classes = draw(st.integers(1, 7))
    y = rng.integers(0, n_classes, n)
    return X.astype(dtype), y, n_classes


percentiles = st.one_of(
    st.sampled_from([0, 1, 5, 25, 50, 75, 95, 99, 100, 95.0, 33.3, 99.99]),
    st.floats(0, 100, allow_nan=False),
)


def _check_against_numpy(X, y, n_classes, q, result: NeuronStats) -> None:
    thr = reference_thresholds(X, q)
    assert np.array_equal(result.thresholds, thr)
    if not np.signbit(X[X == 0]).any():
        assert _same_bits(result.thresholds, thr)
    counts = reference_counts(X, y, thr, n_classes)
    assert np.array_equal(result.counts, counts)
    assert np.array_equal(result.n_active, (X > thr).sum(axis=0))
    k = result.top_clips.shape[1]
    assert np.array_equal(result.top_clips, reference_top_clips(X, k))
    assert np.array_equal(result.top_values, np.take_along_axis(X.T, result.top_clips, axis=1))


# ---------------------------------------------------------------------------------------------
# Properties against numpy


@PROPERTY
@given(data=matrices(), q=percentiles, chunk=st.integers(1, 200), top_k=st.integers(0, 12))
def test_neuron_stats_equal_numpy(data, q, chunk, top_k):
    X, y, n_classes = data
    result = neuron_stats(X, y, q, n_classes, top_k, chunk_rows=chunk)
    _check_against_numpy(X, y, n_classes, q, result)
    assert result.top_clips.shape == (X.shape[1], min(top_k, X.shape[0]))


@PROPERTY
@given(
    data=matrices(),
    q=percentiles,
    chunk=st.integers(1, 50),
    capacity=st.integers(0, 300),
    per_pass=st.integers(1, 5),
)
def test_refinement_passes_equal_numpy(data, q, chunk, capacity, per_pass):
    """Tiny candidate room forces the histogram refinement passes (and columns waiting their turn)."""
    X, y, n_classes = data
    rows = Rows(X, name="t", chunk_rows=chunk, chunk_bytes=0)
    scan = exact_scan(
        rows, float(q), labels=y, n_classes=n_classes, top_k=0, budget=DEFAULT_MEMORY_BUDGET,
        want_counts=True, limits=ScanLimits(capacity, per_pass),
    )  # fmt: skip
    thr = reference_thresholds(X, q)
    assert np.array_equal(scan.thresholds, thr)
    assert np.array_equal(scan.counts, reference_counts(X, y, thr, n_classes))
    assert np.array_equal(scan.n_active, (X > thr).sum(axis=0))


@settings(max_examples=25, deadline=None)
@given(data=matrices(dtype=np.float64, max_rows=60, max_cols=8), q=percentiles, capacity=st.integers(0, 40))
def test_float64_equal_numpy(data, q, capacity):
    X, y, n_classes = data
    rows = Rows(X, name="t", chunk_rows=7, chunk_bytes=0)
    scan = exact_scan(
        rows, float(q), labels=y, n_classes=n_classes, top_k=0, budget=DEFAULT_MEMORY_BUDGET,
        want_counts=True, limits=ScanLimits(capacity, 3),
    )  # fmt: skip
    thr = reference_thresholds(X, q)
    assert scan.thresholds.dtype == np.float64
    assert np.array_equal(scan.thresholds, thr)
    assert np.array_equal(scan.counts, reference_counts(X, y, thr, n_classes))


@PROPERTY
@given(data=matrices(), q=percentiles)
def test_percentile_thresholds_both_methods(data, q):
    X, _, _ = data
    expected = reference_thresholds(X, q)
    assert np.array_equal(percentile_thresholds(X, q, chunk_rows=13), expected)
    assert np.array_equal(percentile_thresholds(X, q, method="columns", memory_budget=64 * X.shape[0]), expected)


@PROPERTY
@given(data=matrices(), q=percentiles)
def test_activation_counts_equal_numpy(data, q):
    X, y, n_classes = data
    thr = reference_thresholds(X, q)
    assert np.array_equal(activation_counts(X, y, thr, n_classes, chunk_rows=11), reference_counts(X, y, thr, n_classes))


def test_dense_bins_need_every_level():
    """Values 1 ulp apart fill one bin at the first two levels: only the last level separates them
    (with the memory budget's own capacity, no test limits)."""
    rng = np.random.default_rng(7)
    n, c = 40_000, 2
    bits = np.uint32(0x3F800000) + rng.integers(0, 200, (n, c)).astype(np.uint32)  # 1.0 + k ulp
    X = bits.view(np.float32)
    X[:, 1] = rng.standard_normal(n)  # a column that collects at once beside one that refines
    y = rng.integers(0, 3, n)
    budget = minimum_budget(c, 1000 * c * 4, 10, 3)
    rows = Rows(X, name="t", chunk_rows=1000, chunk_bytes=0)
    scan = exact_scan(rows, 95.0, labels=y, n_classes=3, top_k=10, budget=budget, want_counts=True)
    thr = reference_thresholds(X, 95)
    assert scan.passes == 4  # pass 1, two refinements, the counting pass
    assert _same_bits(scan.thresholds, thr)
    assert np.array_equal(scan.counts, reference_counts(X, y, thr, 3))


# ---------------------------------------------------------------------------------------------
# The seed notebook's reading


@requires_shared(SEED_FEATURES / "X.npy")
def test_seed_neural_matrix_and_reading():
    X = np.load(SEED_FEATURES / "X.npy")
    y = np.load(SEED_FEATURES / "y.npy")
    # The seed's neural_matrix(X, y, activation_perc=95), as it ran: a float one-hot product.
    thr_seed = np.percentile(X, 95, axis=0)
    enc = np.eye(50)[y]
    neural_matrix = (X > thr_seed).T @ enc

    result = neuron_stats(X, y, 95, 50, layer="pool5", pool="mean")
    assert _same_bits(result.thresholds, thr_seed)
    assert np.array_equal(result.counts, neural_matrix.astype(np.int64))
    # Older numpy (the notebook's) returned float64 thresholds; the counts are the same.
    thr64 = np.percentile(X.astype(np.float64), 95, axis=0)
    assert np.array_equal(activation_counts(X, y, thr64, 50), neural_matrix)

    share = np.amax(neural_matrix / 100, axis=1)  # the seed's "stats / 100"
    assert np.array_equal(result.share_seed, share)
    assert (share > 0.2).sum() == 61 and (share > 0.3).sum() == 11
    summary = result.summary()
    assert summary.n_above_seed == (61, 11)
    # Ties at zero leave some neurons fewer than 100 activations: the honest share is larger.
    assert summary.n_tied == int((result.n_active < 100).sum()) > 0
    active = result.n_active > 0
    assert np.array_equal(result.share_active[active], neural_matrix.max(axis=1)[active] / result.n_active[active])
    assert summary.n_above_active[0] >= 61


# ---------------------------------------------------------------------------------------------
# Edge cases


def test_single_clip_and_top_k_beyond_n():
    X = np.array([[3.0, -1.0, 0.0]], dtype=np.float32)
    r = neuron_stats(X, np.array([0]), 95, top_k=5)
    assert np.array_equal(r.thresholds, X[0]) and r.top_clips.shape == (3, 1)
    assert np.array_equal(r.n_active, [0, 0, 0])
    assert np.array_equal(r.top_class, [-1, -1, -1]) and np.isnan(r.share_active).all()


def test_fewer_clips_than_the_percentile_needs(caplog):
    """10 clips at q=95: the seed expects half a clip above the threshold, so its share is not a
    proportion (2.0 here); share_active stays one, and a warning says so."""
    X = np.arange(10, dtype=np.float32)[:, None]
    r = neuron_stats(X, np.zeros(10, int), 95, layer="conv1")
    assert r.seed_denominator == 0.5 and r.n_active[0] == 1
    assert r.share_seed[0] == 2.0 and r.share_active[0] == 1.0
    assert "conv1: 10 clips at q=95" in caplog.text
    _check_against_numpy(X, np.zeros(10, int), 1, 95, r)


def test_no_clips_is_an_error():
    with pytest.raises(StatsError, match="no clips"):
        neuron_stats(np.zeros((0, 4), np.float32), np.zeros(0, int), 95, 2)


def test_constant_and_empty_classes():
    X = np.zeros((50, 2), np.float32)
    X[:, 1] = np.arange(50)
    y = np.arange(50) % 2  # classes 2..4 have no clips
    r = neuron_stats(X, y, 95, n_classes=5)
    assert r.counts.shape == (2, 5) and not r.counts[:, 2:].any()
    assert r.n_active[0] == 0 and r.top_class[0] == -1 and np.isnan(r.share_active[0]) and r.share_seed[0] == 0
    _check_against_numpy(X, y, 5, 95, r)


@pytest.mark.parametrize("make", ["neuron_stats", "percentile_thresholds", "activation_counts", "columns"])
def test_nan_is_rejected_naming_layer_and_row(make):
    X = np.ones((30, 3), np.float32)
    X[17, 2] = np.nan
    X[23, 0] = np.nan
    y = np.zeros(30, int)
    with pytest.raises(StatsError, match=r"pool5/mean: NaN at row 17 \(neuron 2\)") as err:
        if make == "neuron_stats":
            neuron_stats(X, y, 95, layer="pool5", pool="mean", chunk_rows=4)
        elif make == "percentile_thresholds":
            percentile_thresholds(X, 95, name="pool5/mean", chunk_rows=4)
        elif make == "activation_counts":
            activation_counts(X, y, np.zeros(3, np.float32), 1, name="pool5/mean", chunk_rows=4)
        else:
            percentile_thresholds(X, 95, name="pool5/mean", method="columns")
    assert isinstance(err.value, SoundNetError)


def test_infinities_and_overflowing_interpolation_match_numpy():
    """inf - inf and b - a overflowing make numpy's lerp give NaN or inf: the same here, and the
    counts follow numpy's comparisons with those thresholds (recounted when the threshold leaves
    its candidate range)."""
    big = np.finfo(np.float32).max
    cols = [
        [-big, big, big, big, -big, 0, 1, 2, 3, 4],
        [np.inf] * 10,
        [-np.inf] * 5 + [np.inf] * 5,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, np.inf],
        [-big] * 9 + [big],
    ]
    X = np.array(cols, dtype=np.float32).T
    y = np.arange(10) % 3
    for q in (0, 10, 45, 50, 90, 95, 100):
        for limits in (None, ScanLimits(0, 1)):
            rows = Rows(X, name="t", chunk_rows=3, chunk_bytes=0)
            scan = exact_scan(rows, float(q), labels=y, n_classes=3, top_k=0, budget=DEFAULT_MEMORY_BUDGET, want_counts=True, limits=limits)
            with np.errstate(invalid="ignore", over="ignore"):
                thr = reference_thresholds(X, q)
            assert np.array_equal(scan.thresholds, thr, equal_nan=True), q
            assert np.array_equal(scan.counts, reference_counts(X, y, thr, 3)), q


def test_negative_zero_compares_equal():
    X = np.array([[-0.0], [0.0], [-0.0], [1.0], [0.0]], dtype=np.float32)
    r = neuron_stats(X, np.array([0, 1, 0, 1, 0]), 50)
    assert np.array_equal(r.thresholds, reference_thresholds(X, 50)) and r.thresholds[0] == 0
    assert np.array_equal(r.counts, [[0, 1]])
    assert np.array_equal(r.top_clips[0, :3], [3, 0, 1])  # 1.0, then the zeros in row order


@pytest.mark.parametrize("q", [-1, 100.5, float("nan"), "high"])
def test_bad_percentile(q):
    with pytest.raises(StatsError, match="percentile"):
        percentile_thresholds(np.ones((3, 2), np.float32), q)


def test_bad_inputs_name_the_problem():
    X = np.ones((4, 2), np.float32)
    with pytest.raises(StatsError, match="row 2 has label 5"):
        neuron_stats(X, np.array([0, 1, 5, 0]), n_classes=3, layer="conv7")
    with pytest.raises(StatsError, match="row 1 has label -1"):
        neuron_stats(X, np.array([0, -1, 1, 0]))
    with pytest.raises(StatsError, match="3 labels for 4 clips"):
        neuron_stats(X, np.array([0, 1, 1]))
    with pytest.raises(StatsError, match="float32 or float64"):
        neuron_stats(np.ones((4, 2), np.int32), None)
    with pytest.raises(StatsError, match="2-D"):
        percentile_thresholds(np.ones(4, np.float32))
    with pytest.raises(StatsError, match="too small"):
        percentile_thresholds(np.ones((4, 1000), np.float32), memory_budget=1 << 20)


def test_float64_thresholds_against_float32_data_compare_like_numpy():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 6)).astype(np.float32)
    y = rng.integers(0, 4, 500)
    # thresholds halfway between float32 neighbours, and exactly on data values
    thr = np.sort(X, axis=0)[250].astype(np.float64)
    thr[:3] = np.nextafter(thr[:3], np.inf)
    expected = ((X > thr).T @ np.eye(4)[y]).astype(np.int64)
    assert np.array_equal(activation_counts(X, y, thr, 4), expected)


def test_data_changing_between_passes_is_detected():
    """An array-like whose rows change after the first pass: the scan refuses, it does not guess."""

    class Drifting:
        def __init__(self, X):
            self.X, self.shape, self.dtype, self.reads = X, X.shape, X.dtype, 0

        def __getitem__(self, key):
            self.reads += 1
            return self.X[key] if self.reads <= 2 else self.X[key] + 1

    rng = np.random.default_rng(0)
    data = Drifting(rng.standard_normal((100, 3)).astype(np.float32))
    with pytest.raises(StoreError, match="changed while it was read"):
        neuron_stats(data, np.zeros(100, int), 95, chunk_rows=50)


def test_results_are_read_only():
    r = neuron_stats(np.ones((5, 2), np.float32), np.zeros(5, int))
    with pytest.raises(ValueError):
        r.counts[0, 0] = 1
    with pytest.raises(AttributeError):
        r.q = 50


def test_summary_and_most_selective():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 12)).astype(np.float32)
    y = rng.integers(0, 4, 400)
    X[y == 2, 5] += 10  # neuron 5 fires for class 2 only
    r = neuron_stats(X, y, 95, class_names=["a", "b", "c", "d"])
    assert r.top_class[5] == 2 and r.share_active[5] == 1.0 and r.class_name(2) == "c"
    assert r.most_selective(1)[0] == 5 and r.most_selective(1, by="active")[0] == 5
    s = r.summary(levels=(0.5, 0.9))
    assert s.n_above_active == (int((r.share_active > 0.5).sum()), 1)
    assert s.n_neurons == 12 and s.n_classes == 4 and sum(n for _, n in s.top_classes) == 12
    assert s.median_share_seed == float(np.median(r.share_seed))


def test_without_labels():
    X = np.random.default_rng(2).standard_normal((60, 3)).astype(np.float32)
    r = neuron_stats(X, None, 90)
    assert r.counts.shape == (3, 0) and np.array_equal(r.n_active, (X > reference_thresholds(X, 90)).sum(0))
    assert (r.top_class == -1).all() and math.isnan(r.summary().median_share_active)


# ---------------------------------------------------------------------------------------------
# Stores: out-of-core reading, writing /stats, the CLI


@pytest.fixture()
def store(tmp_path):
    from soundnet8.engine.store import write_arrays

    rng = np.random.default_rng(5)
    n = 3000
    y = rng.integers(0, 4, n)
    relu = np.maximum(rng.standard_normal((n, 40)), 0).astype(np.float32)
    relu[y == 1, 7] += 3  # neuron 7 of "deep" fires for "bird"
    features = {
        "shallow": {"mean": rng.standard_normal((n, 16)).astype(np.float32), "max": rng.random((n, 16)).astype(np.float32)},
        "deep": {"mean": relu},
    }
    path = write_arrays(
        tmp_path / "s.h5", paths=[f"clip{i}.wav" for i in range(n)], features=features, labels=y,
        class_names=["dog", "bird", "rain", "unused"],
    )  # fmt: skip
    return path, features, y


def test_store_stats_equal_in_memory_and_round_trip(store):
    path, features, y = store
    results = store_stats(path, q=90, top_k=4, chunk_rows=256)
    assert list(results) == ["shallow", "deep"]
    for layer, r in results.items():
        X = features[layer]["mean"]
        _check_against_numpy(X, y, 4, 90, r)
        back = read_stats(path, layer, "mean")
        assert back.q == 90 and back.class_names == ("dog", "bird", "rain", "unused")
        for name in ("thresholds", "counts", "n_active", "top_class", "share_seed", "share_active", "top_clips", "top_values"):
            assert np.array_equal(getattr(back, name), getattr(r, name), equal_nan=True), name
    assert results["deep"].top_class[7] == 1
    # a second run replaces the group: other q, one layer, another pool
    store_stats(path, ["shallow"], pool="max", q=50)
    assert read_stats(path, "shallow", "max").q == 50 and read_stats(path, "deep", "mean").q == 90
    with h5py.File(path) as f:
        assert set(f["stats/shallow"]) == {"mean", "max"}
        assert f["stats/deep/mean"].attrs["share_seed_denominator"] == pytest.approx(3000 * 0.1)


def test_store_errors(store, tmp_path):
    path, _, _ = store
    with pytest.raises(StoreError, match="no layer 'conv9'"):
        store_stats(path, ["conv9"])
    with pytest.raises(StoreError, match="no pooling 'std'"):
        store_stats(path, ["deep"], pool="std")
    with pytest.raises(StoreError, match="no statistics for deep/mean"):
        read_stats(path, "deep", "mean")


def test_out_of_core_memory_stays_within_budget(tmp_path):
    """Python-side allocations of a scan over an HDF5 dataset stay under the budget, far below
    the dataset's size (the peak of the whole process is measured by the benchmark)."""
    import tracemalloc

    from soundnet8.engine.store import write_arrays

    n, c = 60_000, 64  # 15 MiB of float32
    rng = np.random.default_rng(9)
    X = np.maximum(rng.standard_normal((n, c)), 0).astype(np.float32)
    y = rng.integers(0, 10, n)
    path = write_arrays(tmp_path / "m.h5", paths=[str(i) for i in range(n)], features={"l": {"mean": X}}, labels=y)
    budget = 2 << 20
    expected = neuron_stats(X, y, 95)
    from soundnet8.engine.store import FeatureStore

    with FeatureStore(path) as fs:
        ds = fs.dataset("l", "mean")
        neuron_stats(ds[:100], y[:100])  # compile outside the measurement
        tracemalloc.start()
        got = neuron_stats(ds, y, 95, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"traced peak {peak / 2**20:.2f} MiB")
    assert peak < budget + (1 << 20) < X.nbytes / 4  # 1 MiB slack for Python objects
    assert np.array_equal(got.thresholds, expected.thresholds) and np.array_equal(got.counts, expected.counts)


def test_cli_prints_and_writes(store, capsys):
    from soundnet8.engine.cli import main

    path, _, _ = store
    assert main(["stats", str(path), "--layer", "deep", "--show", "3", "--percentile", "95"]) == 0
    out = capsys.readouterr().out
    assert "deep/mean: 40 neurons x 3000 clips, q=95" in out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("7 ")]
    assert lines and lines[0][1] == "bird"  # the most selective neuron, with its class name
    assert read_stats(path, "deep").q == 95
    with h5py.File(path) as f:
        assert "stats/shallow" not in f


def test_cli_all_layers_no_write_and_errors(store, capsys):
    from soundnet8.engine.cli import main

    path, _, _ = store
    assert main(["stats", str(path), "--no-write", "--show", "0"]) == 0
    out = capsys.readouterr().out
    assert "shallow/mean" in out and "deep/mean" in out
    with h5py.File(path) as f:
        assert "stats" not in f
    assert main(["stats", str(path), "--layer", "nope"]) == 1
    assert "no layer 'nope'" in capsys.readouterr().err
    assert main(["stats", str(path), "--percentile", "101"]) == 1


# --- what stored statistics cover --------------------------------------------------------------------

def test_stored_stats_record_the_rows_they_cover(store):
    from soundnet8.engine.stats import Coverage

    path, _, _ = store
    store_stats(path, ["deep"])
    with h5py.File(path) as f:
        recorded = Coverage.from_attrs(f["stats/deep/mean"].attrs)
        paths = f["clips/path"].asstr()[()]
    assert recorded == Coverage.of_paths(paths) and recorded.n_rows == 3000
    assert Coverage.of_paths(paths[::-1]) != recorded and Coverage.of_paths(paths[:-1]).n_rows == 2999


def test_stats_of_other_clips_or_without_coverage_are_stale(store, caplog):
    from soundnet8.engine.store import update_store

    path, _, _ = store
    store_stats(path, ["deep"])
    with update_store(path) as f:  # same number of rows, one clip replaced by another
        f["clips/path"][5] = "another.wav"
    with pytest.raises(StatsError, match="stale: computed from 3000 rows of other clips"):
        read_stats(path, "deep")
    with caplog.at_level("WARNING"):
        assert read_stats(path, "deep", allow_stale=True).stale is True
    assert "is stale" in caplog.text and "soundnet8 stats" in caplog.text
    store_stats(path, ["deep"])
    with update_store(path) as f:  # a group written before coverage was recorded
        for key in [k for k in f["stats/deep/mean"].attrs if k.startswith("coverage_")]:
            del f["stats/deep/mean"].attrs[key]
    with pytest.raises(StatsError, match="stale: records no coverage"):
        read_stats(path, "deep")


def test_cli_recomputes_stale_stats(store, capsys):
    from soundnet8.engine.cli import main
    from soundnet8.engine.store import update_store

    path, _, _ = store
    assert main(["stats", str(path), "--layer", "deep", "--show", "0"]) == 0
    with update_store(path) as f:
        f["clips/path"][0] = "renamed.wav"
    with pytest.raises(StatsError, match="stale"):
        read_stats(path, "deep")
    assert main(["stats", str(path), "--layer", "deep", "--show", "0"]) == 0
    assert read_stats(path, "deep").stale is False
