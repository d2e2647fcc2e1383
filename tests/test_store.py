"""The feature store: schema, reader, resume, crash safety (real SIGKILLs), locking, merging rules."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soundnet8.engine import runner
from soundnet8.engine.errors import SoundNetError, StoreError
from soundnet8.engine.inputs import read_manifest
from soundnet8.engine.request import Pool, Request
from soundnet8.engine.store import (
    FORMAT_VERSION,
    ClipError,
    ClipResult,
    ColumnSchema,
    ColumnType,
    Compression,
    FeatureStore,
    StoreSettings,
    StoreWriter,
    done_paths,
    update_store,
    write_arrays,
)

WORKER_FILE = Path(__file__).with_name("_store_worker.py")
_spec = importlib.util.spec_from_file_location("_store_worker", WORKER_FILE)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

SETTINGS = worker.SETTINGS
CLASSES = worker.CLASSES
RUN_ATTRS = {"provider": "CPUExecutionProvider", "onnxruntime_version": "test"}
TIME_ATTRS = {"created", "updated"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def write_run(store, n, *, start=0, segment_rows=8, settings=SETTINGS, make=worker.make_item, **kwargs):
    """One writer session adding inputs start..n-1 (skipping done ones), like `extract` does."""
    with StoreWriter(
        store, settings, run_attrs=RUN_ATTRS, class_names=CLASSES, segment_rows=segment_rows, **kwargs
    ) as writer:
        for i in range(start, n):
            if worker.clip_path(i) not in writer.done:
                writer.add(make(i))
    return writer.summary


def snapshot(path) -> dict:
    """Every dataset (layout + values) and every non-time root attribute of an HDF5 file."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            if h5py.check_string_dtype(obj.dtype) is not None:
                values = obj.asstr()[()].tolist()
            else:
                values = obj[()]
            out[name] = (str(obj.dtype), obj.shape, obj.chunks, obj.compression, obj.shuffle, values)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        attrs = {k: v for k, v in f.attrs.items() if k not in TIME_ATTRS}
        out["@attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
    return out


def assert_same_store(a, b):
    sa, sb = snapshot(a), snapshot(b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        if name == "@attrs":
            assert sa[name] == sb[name]
            continue
        *layout_a, va = sa[name]
        *layout_b, vb = sb[name]
        assert layout_a == layout_b, name
        if isinstance(va, np.ndarray) and va.dtype.kind == "f":
            # bit-identical, NaN included
            assert va.tobytes() == vb.tobytes(), name
        elif isinstance(va, np.ndarray):
            assert np.array_equal(va, vb), name
        else:
            assert va == vb, name


def n_clips(store) -> int:
    with FeatureStore(store) as fs:
        return fs.n_clips


def expected_rows(n, make=worker.make_item):
    items = [make(i) for i in range(n)]
    return [r for r in items if isinstance(r, ClipResult)], [e for e in items if isinstance(e, ClipError)]


def check_rows_correct(store, ordered=True):
    """Every row of the store is the deterministic result of its path; no path twice."""
    with FeatureStore(store) as fs:
        paths = list(fs.paths)
        assert len(set(paths)) == len(paths)
        index = [int(Path(p).name.split("-")[0]) for p in paths]
        if ordered:
            assert index == sorted(index)  # input order survives interruptions
        for layer, pool in SETTINGS.feature_keys:
            got = fs.features(layer, pool)
            want = np.stack([worker.make_item(i).features[(layer, pool)] for i in index]) if index else got
            assert got.tobytes() == want.tobytes()
        for i in index[:: max(1, len(index) // 20)]:
            r = fs.row_of(worker.clip_path(i))
            assert np.array_equal(fs.frames_of("pool2", r), worker.make_item(i).frames["pool2"])
        error_paths = [p for p, _ in fs.errors]
        assert len(set(error_paths)) == len(error_paths)
        assert not set(error_paths) & set(paths)
        return set(paths) | set(error_paths)


# --------------------------------------------------------------------------------------------
# schema and reader
# --------------------------------------------------------------------------------------------


def test_schema_of_a_written_store(tmp_path):
    store = tmp_path / "s.h5"
    summary = write_run(store, 50)
    results, errors = expected_rows(50)
    assert (summary.rows_added, summary.errors_added) == (len(results), len(errors))
    assert (summary.total_rows, summary.total_errors) == (len(results), len(errors))
    n = len(results)
    with h5py.File(store, "r") as f:
        string = h5py.check_string_dtype
        for name in ("clips/path", "errors/path", "errors/message", "classes/name", "clips/meta/take"):
            assert string(f[name].dtype).encoding == "utf-8" and string(f[name].dtype).length is None, name
        assert f["clips/path"].shape == (n,)
        assert f["errors/path"].shape == f["errors/message"].shape == (len(errors),)
        assert f["classes/name"].asstr()[()].tolist() == list(CLASSES)
        expect = {
            "clips/duration": np.float64,
            "clips/sample_rate": np.int32,
            "clips/label": np.int64,
            "clips/fold": np.int64,
            "clips/meta/index": np.int64,
            "clips/meta/gain": np.float64,
        }
        for name, dtype in expect.items():
            assert f[name].dtype == dtype and f[name].shape == (n,), name
        for layer, c in (("pool1", 16), ("pool2", 32)):
            assert sorted(f["features"][layer]) == ["max", "mean"]
            for pool in ("mean", "max"):
                ds = f[f"features/{layer}/{pool}"]
                assert ds.dtype == np.float32 and ds.shape == (n, c)
                assert ds.chunks == (1024, c)  # <= 1 MiB and <= 1024 rows
                assert ds.maxshape == (None, c)
                assert (ds.compression, ds.compression_opts, ds.shuffle) == ("gzip", 4, True)
            data, offsets = f[f"frames/{layer}/data"], f[f"frames/{layer}/offsets"]
            assert data.dtype == np.float32 and data.shape[1] == c and data.compression == "gzip"
            assert offsets.dtype == np.int64 and offsets.shape == (n + 1,)
            assert offsets[0] == 0 and offsets[-1] == data.shape[0]
        attrs = dict(f.attrs)
    assert attrs["format_version"] == FORMAT_VERSION == 1
    assert json.loads(attrs["layers"]) == ["pool1", "pool2"] and json.loads(attrs["pools"]) == ["mean", "max"]
    assert json.loads(attrs["preprocessing"]) == {"sample_rate": 22050, "recipe": "test"}
    assert json.loads(attrs["frames"]) == ["pool1", "pool2"]
    assert attrs["weights_sha256"] == "w" * 64 and attrs["onnx_sha256"] == "o" * 64
    assert attrs["provider"] == "CPUExecutionProvider" and attrs["onnxruntime_version"] == "test"
    assert attrs["soundnet8_version"] and attrs["compression"] == "gzip"
    for key in ("created", "updated"):
        assert datetime.fromisoformat(attrs[key]).utcoffset().total_seconds() == 0
    # nothing is left next to the store but its (unlocked) lock file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.lock", "s.h5.parts"]
    assert list((tmp_path / "s.h5.parts").iterdir()) == []


def test_lzf_compression_and_chunk_rows_of_wide_layers(tmp_path):
    settings = StoreSettings(
        layers=("conv7", "scenes"), pools=("std",), frames=False, preprocessing={}, weights_sha256="w",
        onnx_sha256="o", compression=Compression.LZF,
    )
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "w.h5", settings) as writer:
        features = {("conv7", "std"): rng.random(1024), ("scenes", "std"): rng.random(401)}
        writer.add(ClipResult("a.wav", 1.0, 8000, {}, features, None))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f["features/conv7/std"].chunks == (256, 1024)  # 1 MiB
        assert f["features/scenes/std"].chunks == (512, 401)  # largest power of two <= 1 MiB
        assert f["features/conv7/std"].compression == "lzf" and f["features/conv7/std"].shuffle
        assert "frames" not in f and "clips/label" not in f and "classes" not in f


def test_reader_round_trip(tmp_path):
    store = tmp_path / "r.h5"
    write_run(store, 60, segment_rows=7)
    results, errors = expected_rows(60)
    with FeatureStore(store) as fs:
        assert fs.n_clips == len(results) and fs.layers == ("pool1", "pool2")
        assert fs.pools("pool1") == ("mean", "max")
        assert fs.attrs["preprocessing"] == {"sample_rate": 22050, "recipe": "test"}
        assert fs.attrs["layers"] == ["pool1", "pool2"] and fs.attrs["frames"] == ["pool1", "pool2"]
        assert list(fs.paths) == [r.path for r in results]
        assert fs.durations.tolist() == [r.duration for r in results]
        assert fs.sample_rates.tolist() == [r.sample_rate for r in results]
        assert fs.labels.tolist() == [r.label for r in results]
        assert fs.folds.tolist() == [r.fold for r in results]
        assert fs.class_names == CLASSES
        assert set(fs.meta_columns) == {"take", "index", "gain"}
        assert fs.meta("take").tolist() == [r.meta["take"] for r in results]
        assert fs.meta("index").dtype == np.int64 and fs.meta("index").tolist() == [r.meta["index"] for r in results]
        assert fs.meta("gain").tolist() == [r.meta["gain"] for r in results]
        assert fs.errors == [(e.path, e.message) for e in errors]
        mean2 = np.stack([r.features[("pool2", "mean")] for r in results])
        assert fs.features("pool2").tobytes() == mean2.tobytes()
        assert fs.features("pool2", "mean", rows=slice(3, 9)).tobytes() == mean2[3:9].tobytes()
        pick = [17, 2, 2, -1, 40]
        assert fs.features("pool2", rows=pick).tobytes() == mean2[pick].tobytes()
        mask = np.arange(fs.n_clips) % 3 == 0
        assert fs.features("pool2", rows=mask).tobytes() == mean2[mask].tobytes()
        assert fs.dataset("pool1", "max").chunks == (1024, 16)
        data, offsets = fs.frames("pool1")
        assert offsets.tolist() == [0] + np.cumsum([r.frames["pool1"].shape[0] for r in results]).tolist()
        for i, r in enumerate(results):
            assert np.array_equal(data[offsets[i] : offsets[i + 1]], r.frames["pool1"])
            assert np.array_equal(fs.frames_of("pool1", i), r.frames["pool1"])
        assert fs.row_of(results[10].path) == 10
        with pytest.raises(StoreError, match=r"conv7.*\['pool1', 'pool2'\]"):
            fs.features("conv7")
        with pytest.raises(StoreError, match=r"'std'.*\['mean', 'max'\]"):
            fs.features("pool1", "std")
        with pytest.raises(StoreError, match="not in the store"):
            fs.row_of("/nowhere.wav")
        with pytest.raises(StoreError, match="no meta column 'nope'"):
            fs.meta("nope")
        with pytest.raises(StoreError, match="out of range"):
            fs.features("pool1", rows=[fs.n_clips])


def test_reader_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such feature store"):
        FeatureStore(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(StoreError, match="not a readable HDF5 file"):
        FeatureStore(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not a soundnet8 feature store"):
        FeatureStore(tmp_path / "other.h5")
    write_arrays(tmp_path / "v2.h5", paths=["a"], features={"pool1": {"mean": np.zeros((1, 16))}})
    with h5py.File(tmp_path / "v2.h5", "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(StoreError, match="format_version 2 is not supported"):
        FeatureStore(tmp_path / "v2.h5")
    # and an extract refuses to append to a file that is not a store
    with pytest.raises(StoreError, match="not a soundnet8 feature store.*--overwrite"):
        StoreWriter(tmp_path / "other.h5", SETTINGS)
    write_run(tmp_path / "other.h5", 3, overwrite=True)
    assert n_clips(tmp_path / "other.h5") == 3


def test_write_arrays_is_equivalent_to_the_writer(tmp_path):
    write_run(tmp_path / "w.h5", 40, segment_rows=16)
    results, errors = expected_rows(40)
    frames = {}
    for layer in SETTINGS.layers:
        pieces = [r.frames[layer] for r in results]
        frames[layer] = (np.concatenate(pieces), np.concatenate([[0], np.cumsum([len(p) for p in pieces])]))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        attrs = {k: f.attrs[k] for k in ("weights_sha256", "onnx_sha256", "provider", "onnxruntime_version")}
    write_arrays(
        tmp_path / "a.h5",
        paths=[r.path for r in results],
        features={
            layer: {pool: np.stack([r.features[(layer, pool)] for r in results]) for pool in SETTINGS.pools}
            for layer in SETTINGS.layers
        },
        labels=[r.label for r in results],
        folds=[r.fold for r in results],
        class_names=CLASSES,
        meta={name: [r.meta[name] for r in results] for name in ("take", "index", "gain")},
        durations=[r.duration for r in results],
        sample_rates=[r.sample_rate for r in results],
        attrs={**attrs, "preprocessing": dict(SETTINGS.preprocessing)},
        frames=frames,
        errors=[(e.path, e.message) for e in errors],
    )
    assert_same_store(tmp_path / "a.h5", tmp_path / "w.h5")


def test_write_arrays_minimal_and_atomic_replace(tmp_path):
    path = tmp_path / "m.h5"
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_arrays(path, paths=list("abcd"), features={"toy": {"mean": x, "max": x + 1}}, labels=[0, 1, 0, 1])
    with FeatureStore(path) as fs:
        assert fs.layers == ("toy",) and fs.pools("toy") == ("mean", "max")
        assert np.array_equal(fs.features("toy", "max"), x + 1)
        assert fs.labels.tolist() == [0, 1, 0, 1] and fs.class_names is None and fs.folds is None
        assert np.isnan(fs.durations).all() and (fs.sample_rates == 0).all() and fs.errors == []
    write_arrays(path, paths=["z"], features={"toy": {"mean": x[:1]}})
    with FeatureStore(path) as fs:
        assert list(fs.paths) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.h5.lock"]
    with pytest.raises(StoreError, match="duplicates"):
        write_arrays(path, paths=["a", "a"], features={"toy": {"mean": x[:2]}})
    with pytest.raises(StoreError, match=r"has shape \(3, 3\), expected \(2, C\)"):
        write_arrays(path, paths=["a", "b"], features={"toy": {"mean": x[:3]}})
    with FeatureStore(path) as fs:  # failed writes left the store as it was
        assert list(fs.paths) == ["z"]


# --------------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------------


def test_resume_equals_an_uninterrupted_run(tmp_path):
    write_run(tmp_path / "once.h5", 120, segment_rows=10)
    first = write_run(tmp_path / "twice.h5", 47, segment_rows=10)
    second = write_run(tmp_path / "twice.h5", 120, segment_rows=10)
    assert first.rows_added + second.rows_added == second.total_rows == len(expected_rows(120)[0])
    assert_same_store(tmp_path / "once.h5", tmp_path / "twice.h5")
    assert write_run(tmp_path / "twice.h5", 120).rows_added == 0  # nothing left to do
    assert_same_store(tmp_path / "once.h5", tmp_path / "twice.h5")


def test_each_path_at_most_once(tmp_path):
    store = tmp_path / "o.h5"
    write_run(store, 5)
    with StoreWriter(store, SETTINGS, class_names=CLASSES) as writer:
        assert writer.done == {worker.clip_path(i) for i in range(5)}
        with pytest.raises(StoreError, match="already in the store"):
            writer.add(worker.make_item(2))
        writer.add(worker.make_item(5))
        with pytest.raises(StoreError, match="already in the store"):
            writer.add(worker.make_item(5))
    assert n_clips(store) == 6


def test_aligned_segments_are_appended_as_raw_chunks(tmp_path, caplog):
    # 2000 clips, split 700 + 1300: the second run's first segment is cut at row 1024 so that
    # the next one lines up with the store's chunk grid and is copied without re-encoding
    caplog.set_level(logging.DEBUG, logger="soundnet8.engine.store")
    settings = StoreSettings(
        layers=("pool1",), pools=("mean",), frames=False, preprocessing={}, weights_sha256="w", onnx_sha256="o"
    )

    def make(i):
        rng = np.random.default_rng(i)
        return ClipResult(worker.clip_path(i), 1.0, 16000, {}, {("pool1", "mean"): rng.random(16, np.float32)}, None)

    write_run(tmp_path / "once.h5", 2000, segment_rows=1024, settings=settings, make=make)
    write_run(tmp_path / "split.h5", 700, segment_rows=1024, settings=settings, make=make)
    caplog.clear()
    write_run(tmp_path / "split.h5", 2000, segment_rows=1024, settings=settings, make=make)
    assert_same_store(tmp_path / "once.h5", tmp_path / "split.h5")
    # a 324-row segment realigns the store at row 1024; the 976-row one after it goes in raw
    raw = [r.getMessage() for r in caplog.records if "as raw chunks" in r.getMessage()]
    assert raw == [f"{tmp_path / 'split.h5'}: appended 1 of 2 segment(s) as raw chunks"]


# --------------------------------------------------------------------------------------------
# real kills
# --------------------------------------------------------------------------------------------


def start_worker(store, n, segment_rows, *extra):
    return subprocess.Popen(
        [sys.executable, "-u", str(WORKER_FILE), str(store), str(n), str(segment_rows), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(proc, pattern, occurrence=1, delay=0.0):
    """SIGKILL the worker `delay` s after its `occurrence`-th stderr line containing `pattern`
    (or once it has exited without one); returns its exit status (-SIGKILL when killed)."""
    seen = 0
    for line in proc.stderr:
        seen += pattern in line
        if seen == occurrence:
            time.sleep(delay)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    proc.stdout.close()
    return proc.returncode


READER = """
import json, sys, time
from pathlib import Path
import h5py
store, stop = Path(sys.argv[1]), Path(sys.argv[2])
polls, problems, seen = 0, [], False
while not stop.exists():
    try:
        with h5py.File(store, "r") as f:
            n = f["clips/path"].shape[0]
            if f["features/pool2/max"].shape[0] != n or f["frames/pool1/offsets"].shape[0] != n + 1:
                problems.append("inconsistent rows")
        seen = True
    except FileNotFoundError:
        if seen:
            problems.append("store disappeared")
    except Exception as exc:
        problems.append(repr(exc)[:200])
    polls += 1
    time.sleep(0.001)
print(json.dumps({"polls": polls, "problems": problems}))
"""


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """Kill the writer (SIGKILL) while it writes segments, while it merges a killed run's
    segments at start-up, and while it consolidates at the end; after every kill the store is a
    valid store holding only correct rows, and nothing finished was lost; a last run completes
    it, identical to a clean uninterrupted run.

    Kills follow the worker's log lines (plus a random delay), so they land in the intended
    phase however loaded the machine is. Each attempt gets 30 more inputs than the last, so
    every attempt has fresh work."""
    store, n, seg = tmp_path / "kill.h5", 300, 8
    rng = random.Random(20240229)
    plans = [
        ("wrote segment", 2, 0.03), ("merging", 1, 0.0), ("wrote segment", 1, 0.01), ("consolidating", 1, 0.0),
        ("wrote segment", 3, 0.03), ("merging", 1, 0.02), ("consolidating", 1, 0.05), ("wrote segment", 2, 0.0),
        ("consolidating", 1, 0.02),
    ]
    before: set[str] = set()
    outcomes = []
    # meanwhile a reader polls the store: once it exists it must always open and be consistent
    stop = tmp_path / "stop-reader"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store), str(stop)], stdout=subprocess.PIPE, text=True)
    for k, (pattern, occurrence, delay) in enumerate(plans):
        code = kill_when(start_worker(store, 30 * (k + 1), seg), pattern, occurrence, rng.uniform(0, delay))
        outcomes.append((pattern, code))
        if store.exists():
            with h5py.File(store, "r") as f:  # plain h5py, no recovery tool needed
                assert f["clips/path"].shape[0] == f["features/pool1/mean"].shape[0]
            in_store = check_rows_correct(store)
        else:
            in_store = set()
        after = done_paths(store)
        assert before <= after, f"a kill lost finished work: {outcomes}"
        assert in_store <= after
        before = after
    stop.touch()
    polled = json.loads(reader.communicate(timeout=30)[0])
    assert polled["polls"] > 100 and polled["problems"] == []
    killed = {pattern for pattern, code in outcomes if code == -signal.SIGKILL}
    # a kill shortly after "consolidating" can miss when the merge is quick; the others cannot
    assert killed == {"wrote segment", "merging", "consolidating"}, outcomes
    assert all(code == -signal.SIGKILL for pattern, code in outcomes if pattern != "consolidating"), outcomes
    proc = start_worker(store, n, seg)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not (tmp_path / "kill.h5.tmp").exists() and list((tmp_path / "kill.h5.parts").iterdir()) == []
    worker.run(str(tmp_path / "clean.h5"), n, seg)
    assert_same_store(store, tmp_path / "clean.h5")
    assert check_rows_correct(store) == {worker.clip_path(i) for i in range(n)}


def killed_run_with_segments(store, n=200, seg=8, segments=3):
    """A real run SIGKILLed after it finished `segments` segments (before any consolidation)."""
    assert kill_when(start_worker(store, n, seg), "wrote segment", segments) == -signal.SIGKILL
    parts = sorted(Path(str(store) + ".parts").glob("seg-*.h5"))
    assert len(parts) >= segments and not store.exists()
    return parts


def test_done_paths_counts_finished_segments_and_errors(tmp_path):
    store = tmp_path / "d.h5"
    parts = killed_run_with_segments(store, segments=3)
    with h5py.File(parts[0], "r") as f:  # a segment is itself a plain, complete store
        assert f["clips/path"].shape[0] + f["errors/path"].shape[0] == 8
    done = done_paths(store)
    assert {worker.clip_path(i) for i in range(24)} <= done
    assert worker.clip_path(22) in done and worker.clip_path(22) not in done_paths(store, include_errors=False)
    write_run(store, 200)
    assert done_paths(store) == {worker.clip_path(i) for i in range(200)}


def test_merged_but_undeleted_segments_do_not_duplicate_rows(tmp_path):
    # a kill between "STORE.h5 replaced" and "segments deleted": simulate by putting the
    # segments back after a merge
    store = tmp_path / "m.h5"
    parts = killed_run_with_segments(store, segments=4)
    saved = tmp_path / "saved"
    shutil.copytree(parts[0].parent, saved)
    write_run(store, 40)
    for p in saved.iterdir():
        shutil.copy(p, parts[0].parent / p.name)
    write_run(store, 200)
    worker.run(str(tmp_path / "clean.h5"), 200, 8)
    assert_same_store(store, tmp_path / "clean.h5")


def test_corrupt_segments_are_discarded_and_redone(tmp_path, caplog):
    store = tmp_path / "c.h5"
    parts = killed_run_with_segments(store, segments=4)
    size = parts[1].stat().st_size
    with open(parts[1], "r+b") as fh:
        fh.truncate(size // 2)
    parts[2].write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
    stale = [Path(str(store) + ".tmp"), parts[0].parent / "seg-x-000009.h5.tmp"]
    for p in stale:
        p.write_bytes(b"half written")
    caplog.set_level(logging.WARNING, logger="soundnet8.engine.store")
    write_run(store, 200)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(parts[1].name in m and "discarding" in m for m in warned)
    assert any(parts[2].name in m and "discarding" in m for m in warned)
    assert not any(p.exists() for p in stale)
    # the discarded segments' clips were redone after the others: same rows, another order
    assert check_rows_correct(store, ordered=False) == {worker.clip_path(i) for i in range(200)}


# --------------------------------------------------------------------------------------------
# settings, overwrite, lock, retry, derived results
# --------------------------------------------------------------------------------------------

CHANGES = {
    "layers": {"layers": ("pool1",), "frames": ("pool1",)},
    "pools": {"pools": ("mean", "max", "std")},
    "frames": {"frames": False},
    "preprocessing": {"preprocessing": {"sample_rate": 44100, "recipe": "test"}},
    "weights_sha256": {"weights_sha256": "x" * 64},
    "onnx_sha256": {"onnx_sha256": "y" * 64},
}


@pytest.mark.parametrize("setting", sorted(CHANGES))
def test_resume_with_other_settings_is_refused(tmp_path, setting):
    store = tmp_path / "s.h5"
    write_run(store, 3)
    changed = StoreSettings(**{**SETTINGS.__dict__, **CHANGES[setting]})
    with pytest.raises(StoreError, match="--overwrite") as info:
        StoreWriter(store, changed)
    detail = str(info.value).split("cannot resume: ")[1].split(" differ from")[0]
    named = [k for k in CHANGES if detail.startswith(f"{k} (") or f"; {k} (" in detail]
    # Fewer layers also means frames of fewer layers: both are named then.
    assert named == ([setting, "frames"] if setting == "layers" else [setting]), detail
    if setting == "preprocessing":
        assert "sample_rate: 22050 -> 44100" in detail
    # the refusal changed nothing and released the lock; --overwrite starts afresh
    assert n_clips(store) == 3
    with StoreWriter(store, changed, overwrite=True) as writer:
        assert writer.done == frozenset()
    with h5py.File(store, "r") as f:
        assert f["clips/path"].shape == (0,) and f.attrs[setting] == changed.attrs()[setting]


def test_settings_are_checked_against_leftover_segments(tmp_path):
    store = tmp_path / "s.h5"
    killed_run_with_segments(store, segments=2)
    changed = StoreSettings(**{**SETTINGS.__dict__, "onnx_sha256": "z" * 64})
    with pytest.raises(StoreError, match="onnx_sha256.*--overwrite"):
        StoreWriter(store, changed)
    assert len(list(Path(str(store) + ".parts").glob("seg-*.h5"))) >= 2  # kept
    with StoreWriter(store, changed, overwrite=True):
        pass
    assert not list(Path(str(store) + ".parts").glob("seg-*")) and n_clips(store) == 0


def test_second_writer_fails_fast_on_the_lock(tmp_path):
    store = tmp_path / "l.h5"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[2]); import _store_worker as w;"
            "from soundnet8.engine.store import StoreWriter;"
            "wr = StoreWriter(sys.argv[1], w.SETTINGS); print('locked', flush=True); time.sleep(60)",
            str(store),
            str(WORKER_FILE.parent),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=rf"another process \(pid {holder.pid}\) is writing this store"):
            StoreWriter(store, SETTINGS)
        assert time.monotonic() - t0 < 2
        with pytest.raises(StoreError, match="another process"):
            write_arrays(store, paths=["a"], features={"x": {"mean": np.zeros((1, 1))}})
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    write_run(store, 3)  # a dead holder's lock is gone with it
    assert n_clips(store) == 3


def test_errors_are_not_retried_unless_asked(tmp_path):
    store = tmp_path / "e.h5"
    write_run(store, 50)
    failed = [worker.clip_path(i) for i in (22, 45)]
    with FeatureStore(store) as fs:
        assert [p for p, _ in fs.errors] == failed
    assert write_run(store, 50).rows_added == 0

    def fixed(i):  # the decoder got fixed: clip 22 works now, 45 fails differently
        item = worker.make_item(i)
        if i == 22:
            rng = np.random.default_rng(0)
            widths = {"pool1": 16, "pool2": 32}
            features = {k: rng.random(widths[k[0]], np.float32) for k in SETTINGS.feature_keys}
            frames = {layer: np.ones((2, c), np.float32) for layer, c in widths.items()}
            return ClipResult(item.path, 1.0, 8000, {"take": "Z"}, features, frames, label=0, fold=1)
        if i == 45:
            return ClipError(item.path, "still broken")
        return item

    summary = write_run(store, 50, make=fixed, retry_errors=True)
    assert (summary.rows_added, summary.errors_added) == (1, 1)
    with FeatureStore(store) as fs:
        assert fs.errors == [(failed[1], "still broken")]
        assert list(fs.paths).count(failed[0]) == 1 and fs.paths[-1] == failed[0]
        assert fs.meta("take")[-1] == "Z" and math.isnan(fs.meta("gain")[-1])  # missing meta -> NaN
        assert fs.meta("index").dtype == np.float64  # int column with a missing value


def test_derived_groups_survive_consolidation_and_are_then_stale(tmp_path):
    """Consolidation keeps derived groups byte for byte (a crashed update too), but statistics
    computed before rows were added no longer describe the store: readers refuse them as stale."""
    from soundnet8.engine.stats import StatsError, read_stats, store_stats

    store = tmp_path / "d.h5"
    write_run(store, 20)
    store_stats(store, ["pool1"], q=90)
    with FeatureStore(store) as fs:
        before = fs.n_clips
        assert read_stats(store, "pool1").stale is False
    with update_store(store) as f:
        f.create_group("analysis/svm").attrs["accuracy"] = 0.72
    thresholds = read_stats(store, "pool1").thresholds.copy()
    with pytest.raises(RuntimeError):
        with update_store(store) as f:
            del f["stats"]
            raise RuntimeError("the tool crashed")
    write_run(store, 60)
    with FeatureStore(store) as fs:
        after = fs.n_clips
    assert after > before
    with h5py.File(store, "r") as f:
        assert np.array_equal(f["stats/pool1/mean/thresholds"][()], thresholds)  # kept as written
        assert f["analysis/svm"].attrs["accuracy"] == 0.72
    with pytest.raises(StatsError, match=f"stale: computed from {before} rows, store now has {after}"):
        read_stats(store, "pool1")
    flagged = read_stats(store, "pool1", allow_stale=True)
    assert flagged.stale is True and flagged.n_clips == before
    store_stats(store, ["pool1"], q=90)  # recomputed: fresh again
    assert read_stats(store, "pool1").stale is False and read_stats(store, "pool1").n_clips == after
    check_rows_correct(store)


def test_an_exception_in_the_run_keeps_the_work_done(tmp_path):
    store = tmp_path / "i.h5"
    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(store, SETTINGS, class_names=CLASSES, segment_rows=1000) as writer:
            for i in range(30):
                writer.add(worker.make_item(i))
            raise KeyboardInterrupt
    assert done_paths(store) == {worker.clip_path(i) for i in range(30)}
    assert check_rows_correct(store) == done_paths(store)
    assert not list(Path(str(store) + ".parts").iterdir())
    write_run(store, 30)  # and the lock was released


def test_invalid_results_are_rejected_with_the_clip_named(tmp_path):
    store = tmp_path / "v.h5"
    good = worker.make_item(0)
    with StoreWriter(store, SETTINGS, class_names=CLASSES) as writer:
        bad_shape = dict(good.features)
        bad_shape[("pool1", "mean")] = np.zeros(15, np.float32)
        cases = [
            (ClipResult(**{**good.__dict__, "features": bad_shape}), r"pool1/mean has shape \(15,\)"),
            (ClipResult(**{**good.__dict__, "frames": None}), "frames of layers"),
            (ClipResult(**{**good.__dict__, "label": 4}), r"label 4 is outside 0..3"),
            (ClipResult(**{**good.__dict__, "label": None}), "has no label"),
            (ClipResult(**{**good.__dict__, "meta": {"a/b": 1}}), "cannot be an HDF5 name"),
            (ClipResult(**{**good.__dict__, "meta": {"x": [1]}}), "meta values must be"),
            (ClipResult(**{**good.__dict__, "path": "bad\udcff.wav"}), "not valid UTF-8"),
        ]
        writer.add(worker.make_item(1))
        for item, message in cases:
            with pytest.raises(StoreError, match=message):
                writer.add(item)
        writer.add(good)
        writer.add(ClipError("weird.wav", "decoder said \x00\udcff"))
    with FeatureStore(store) as fs:
        assert fs.n_clips == 2 and fs.errors == [("weird.wav", "decoder said \ufffd?")]


def test_empty_runs_give_valid_stores(tmp_path):
    store = tmp_path / "e.h5"
    with StoreWriter(store, SETTINGS) as writer:
        writer.add(ClipError("x.wav", "unreadable"))
    with FeatureStore(store) as fs:
        assert fs.n_clips == 0 and fs.features("pool2", "max").shape == (0, 32)
        assert fs.errors == [("x.wav", "unreadable")]
        assert fs.frames("pool1")[1].tolist() == [0] and fs.labels is None
    write_run(store, 30)  # labels appear with the first rows
    with FeatureStore(store) as fs:
        assert fs.n_clips == 29 and len(fs.labels) == 29 and len(fs.errors) == 2


def test_meta_types_are_merged_across_runs(tmp_path):
    settings = StoreSettings(
        layers=("pool1",), pools=("mean",), frames=False, preprocessing={}, weights_sha256="", onnx_sha256=""
    )

    def item(i, meta):
        return ClipResult(f"{i}.wav", 1.0, 1, meta, {("pool1", "mean"): np.full(16, i, np.float32)}, None)

    runs = [[{"a": 1, "b": 1, "c": "x"}], [{"a": 2.5, "b": "y", "c": "z"}], [{"b": True, "d": 3}]]
    for k, metas in enumerate(runs):
        with StoreWriter(tmp_path / "m.h5", settings) as writer:
            for m in metas:
                writer.add(item(k, m))
    with FeatureStore(tmp_path / "m.h5") as fs:
        assert fs.meta("a").dtype == np.float64 and fs.meta("a")[:2].tolist() == [1.0, 2.5]
        assert math.isnan(fs.meta("a")[2])
        assert fs.meta("b").tolist() == ["1", "y", "1"]
        assert fs.meta("c").tolist() == ["x", "z", ""]
        assert fs.meta("d").dtype == np.float64 and fs.meta("d")[2] == 3.0


# --------------------------------------------------------------------------------------------
# property: where a run is split does not change the store
# --------------------------------------------------------------------------------------------

META_VALUES = st.one_of(
    st.none(), st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.sampled_from(["", "a", "é"]), st.booleans()
)


@st.composite
def split_runs(draw):
    n = draw(st.integers(0, 14))
    meta = st.dictionaries(st.sampled_from(["u", "v"]), META_VALUES, max_size=2)
    metas = draw(st.lists(meta, min_size=n, max_size=n))
    failing = draw(st.sets(st.integers(0, max(0, n - 1)), max_size=3)) if n else set()
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    segment_rows = draw(st.integers(1, 6))
    interrupt = draw(st.booleans())
    return n, metas, failing, cuts, segment_rows, interrupt


@pytest.fixture(scope="module")
def fast_dir():
    # tmpfs: fsync is free there, so many small stores stay within the time budget
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="soundnet8-store-", dir=base))
    yield path
    shutil.rmtree(path)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=split_runs())
def test_split_points_do_not_change_the_store(fast_dir, case):
    n, metas, failing, cuts, segment_rows, interrupt = case
    work = Path(tempfile.mkdtemp(dir=fast_dir))
    settings_ = StoreSettings(
        layers=("pool1",), pools=("max", "mean"), frames=True, preprocessing={}, weights_sha256="", onnx_sha256=""
    )

    def make(i):
        if i in failing:
            return ClipError(f"{i}.wav", f"bad {i}")
        rng = np.random.default_rng(i)
        feats = {("pool1", p): rng.standard_normal(16).astype(np.float32) for p in ("mean", "max")}
        frames = {"pool1": rng.random((i % 3, 16), np.float32)}
        return ClipResult(f"{i}.wav", i / 3, 8000, metas[i], feats, frames, label=i % 2)

    def session(store, stop, raise_at_end):
        with StoreWriter(store, settings_, segment_rows=segment_rows, class_names=["a", "b"]) as writer:
            for i in range(stop):
                if f"{i}.wav" not in writer.done:
                    writer.add(make(i))
            if raise_at_end:
                raise KeyboardInterrupt

    session(work / "one.h5", n, False)
    for k, cut in enumerate(cuts + [n]):
        try:
            session(work / "split.h5", cut, interrupt and k < len(cuts))
        except KeyboardInterrupt:
            pass
    assert_same_store(work / "one.h5", work / "split.h5")
    shutil.rmtree(work)


# --------------------------------------------------------------------------------------------
# meta column types: decided once by the input set, resolved against the store at opening
# --------------------------------------------------------------------------------------------

ONE_LAYER = StoreSettings(
    layers=("pool1",), pools=("mean",), frames=False, preprocessing={}, weights_sha256="", onnx_sha256=""
)


def plain_item(i, meta):
    return ClipResult(f"{i}.wav", 1.0, 1, meta, {("pool1", "mean"): np.full(16, i, np.float32)}, None)


def write_meta(store, metas, schema, start=0, segment_rows=1024):
    with StoreWriter(store, ONE_LAYER, meta_schema=schema, segment_rows=segment_rows) as writer:
        for i, meta in enumerate(metas, start):
            writer.add(plain_item(i, meta))


def test_segments_are_written_with_the_schema_types(tmp_path):
    store = tmp_path / "s.h5"
    schema = ColumnSchema({"n": ColumnType.FLOAT, "s": ColumnType.STR})
    with StoreWriter(store, ONE_LAYER, meta_schema=schema, segment_rows=2) as writer:
        for i in range(2):
            writer.add(plain_item(i, {"n": i, "s": i}))  # ints only: inferred, they would be int64
        (segment,) = Path(str(store) + ".parts").glob("seg-*.h5")
        with h5py.File(segment, "r") as f:
            assert f["clips/meta/n"].dtype == np.float64
            assert h5py.check_string_dtype(f["clips/meta/s"].dtype) is not None
        writer.add(plain_item(2, {"n": 2.5, "s": "x"}))
    with FeatureStore(store) as fs:
        assert fs.meta("n").tolist() == [0.0, 1.0, 2.5] and fs.meta("s").tolist() == ["0", "1", "x"]
    write_meta(tmp_path / "inferred.h5", [{"n": 0}, {"n": 1}], None)
    with FeatureStore(tmp_path / "inferred.h5") as fs:
        assert fs.meta("n").dtype == np.int64  # no schema: the values decide


def test_the_schema_is_resolved_against_the_store_being_resumed(tmp_path):
    store = tmp_path / "r.h5"
    write_meta(store, [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}], {"x": ColumnType.INT, "y": ColumnType.STR})
    with pytest.raises(StoreError, match="meta column 'x' holds int64 values in the store but float64"):
        StoreWriter(store, ONE_LAYER, meta_schema={"x": ColumnType.FLOAT, "y": ColumnType.STR})
    with pytest.raises(StoreError, match="meta column 'x' holds int64 in the store, but this run's inputs have no"):
        StoreWriter(store, ONE_LAYER, meta_schema={"y": ColumnType.STR})
    # a new column: the stored rows have no value, so int64 becomes float64 (NaN for them)
    write_meta(store, [{"x": 3, "y": "c", "z": 7}], {"x": ColumnType.INT, "y": ColumnType.STR, "z": ColumnType.INT}, 2)
    # a stored string column takes missing values; a stored float64 column takes integers
    write_meta(store, [{"x": 4, "z": 8}], {"x": ColumnType.INT, "z": ColumnType.INT}, 3)
    with FeatureStore(store) as fs:
        assert fs.meta("x").dtype == np.int64 and fs.meta("x").tolist() == [1, 2, 3, 4]
        assert fs.meta("y").tolist() == ["a", "b", "c", ""]
        z = fs.meta("z")
        assert z.dtype == np.float64 and np.isnan(z[:2]).all() and z[2:].tolist() == [7.0, 8.0]


def test_rows_must_fit_the_schema(tmp_path):
    schema = ColumnSchema({"k": ColumnType.INT, "v": ColumnType.FLOAT})
    with StoreWriter(tmp_path / "f.h5", ONE_LAYER, meta_schema=schema) as writer:
        for meta, message in (
            ({"k": "one", "v": 1.0}, "meta 'k' value 'one' does not fit its int64 column"),
            ({"k": 1, "v": "x"}, "meta 'v' value 'x' does not fit its float64 column"),
            ({"v": 1.0}, "meta 'k' has no value, but its column is int64"),
            ({"k": 1, "w": 2}, r"meta column 'w' is not among the columns \['k', 'v'\]"),
        ):
            with pytest.raises(StoreError, match=message):
                writer.add(plain_item(0, meta))
        writer.add(plain_item(0, {"k": True, "v": None}))  # a bool is an int; float64 holds missing
    with FeatureStore(tmp_path / "f.h5") as fs:
        assert fs.meta("k").tolist() == [1] and np.isnan(fs.meta("v")[0])


def test_a_manifest_decides_the_column_types_the_store_keeps(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(b"")  # listed files must exist; nothing is decoded here
    (tmp_path / "m.csv").write_text("path,n,x,s\na.wav,1,2,3\nb.wav,2,2.5,a\nc.wav,3,4,5\n")
    inputs = read_manifest(tmp_path / "m.csv")
    assert dict(inputs.meta_schema.types) == {"n": ColumnType.INT, "x": ColumnType.FLOAT, "s": ColumnType.STR}
    store = tmp_path / "m.h5"
    with StoreWriter(store, ONE_LAYER, meta_schema=inputs.meta_schema, segment_rows=1) as writer:
        for i, item in enumerate(inputs):
            writer.add(ClipResult(item.path, 1.0, 1, item.meta, {("pool1", "mean"): np.full(16, i, np.float32)}, None))
    with FeatureStore(store) as fs:
        assert fs.meta("n").dtype == np.int64 and fs.meta("x").tolist() == [2.0, 2.5, 4.0]
        assert fs.meta("s").tolist() == ["3", "a", "5"]


# --------------------------------------------------------------------------------------------
# one request validation for the runner and the store
# --------------------------------------------------------------------------------------------


def test_the_runner_request_and_the_store_settings_validate_alike():
    request = Request(layers=("conv7", "pool5", "pool5"), pools=("max", Pool.MEAN), frames=("conv7",))
    assert request.layers == ("pool5", "conv7") and request.pools == (Pool.MEAN, Pool.MAX)
    assert request.frames == ("conv7",) and runner.Pool is Pool and runner.Request is Request
    settings_ = StoreSettings(
        layers=("conv7", "pool5"), pools=("max", "mean"), frames=("conv7",), preprocessing={},
        weights_sha256="", onnx_sha256="",
    )  # fmt: skip
    assert (settings_.layers, settings_.pools, settings_.frames) == (
        request.layers, tuple(p.value for p in request.pools), request.frames
    )  # fmt: skip
    bad_requests = [
        {"layers": ("conv9",)},
        {"layers": ()},
        {"pools": ("median",)},
        {"pools": ()},
        {"layers": ("pool5",), "frames": ("conv7",)},
    ]
    for bad in bad_requests:
        with pytest.raises(SoundNetError) as from_request:
            Request(**bad)
        arguments = {"layers": ("pool5",), "pools": ("mean",), "frames": False, **bad}
        with pytest.raises(StoreError) as from_settings:
            StoreSettings(**arguments, preprocessing={}, weights_sha256="", onnx_sha256="")
        assert str(from_request.value) == str(from_settings.value)
