"""Shards for job arrays (``extract --shard K/N``) and joining stores (``soundnet8 merge``)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from soundnet8.engine.cli import main
from soundnet8.engine.errors import SoundNetError, StoreError
from soundnet8.engine.inputs import InputItem, InputSet, Shard, bundled_clips, read_manifest, shard_index
from soundnet8.engine.store import FeatureStore, join_stores, write_arrays

from .conftest import ESC50_AUDIO, ESC50_META, requires_shared

CLI = [sys.executable, "-m", "soundnet8.engine.cli"]
SETTINGS = ["--layers", "pool1,pool5,conv7", "--pool", "mean,std", "--frames", "pool5"]
RUN = ["--workers", "1", "--batch-size", "2", "--no-progress", "--provider", "cpu", "--segment-rows", "4"]


# --- the shard of a path: a pure function ------------------------------------------------------


def _paths(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"/data/corpus/{rng.randrange(10**9):09d}/clip-{i}-é.flac" for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
def test_shards_are_disjoint_cover_all_and_are_balanced(n):
    paths = _paths(6000)
    members = [[p for p in paths if Shard(k, n).holds(p)] for k in range(1, n + 1)]
    assert sum(map(len, members)) == len(paths)  # disjoint ...
    assert set().union(*map(set, members)) == set(paths)  # ... and covering
    sizes = Counter(shard_index(p, n) for p in _paths(200_000, seed=n))
    mean = 200_000 / n
    # within 4 % of equal, and within 4.5 binomial standard deviations (a fair hash's spread)
    worst = max(abs(sizes[i] - mean) for i in range(n))
    assert worst <= min(0.04 * mean, 4.5 * np.sqrt(mean * (1 - 1 / n)) + 1), sorted(sizes.values())


def test_a_paths_shard_does_not_depend_on_the_other_inputs():
    paths = _paths(3000)
    before = {p: shard_index(p, 5) for p in paths}
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    relisted = InputSet(tuple(InputItem(p) for p in shuffled + _paths(500, seed=9)))
    for k in range(1, 6):
        chosen = relisted.shard(Shard(k, 5)).paths
        assert [p for p in chosen if p in before] == [p for p in shuffled if before[p] == k - 1]
    # the same answer in another process (no per-process hash salt)
    code = ("import sys; from soundnet8.engine.inputs import shard_index; "
            "print([shard_index(p, 5) for p in sys.argv[1:]])")
    out = subprocess.run([sys.executable, "-c", code, *paths[:50]], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([before[p] for p in paths[:50]])


def test_shard_parsing_and_slurm_arrays():
    assert str(Shard.parse("2/8")) == "2/8" and Shard.parse(" 8/8 ") == Shard(8, 8)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/3"):
        with pytest.raises(SoundNetError):
            Shard.parse(bad)
    zero_based = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"}
    one_based = {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"}
    assert Shard.parse("auto", zero_based) == Shard(1, 8) and Shard.parse("auto", one_based) == Shard(8, 8)
    with pytest.raises(SoundNetError, match="SLURM_ARRAY_TASK_ID"):
        Shard.parse("auto", {})
    with pytest.raises(SoundNetError, match="step"):
        Shard.parse("auto", {**one_based, "SLURM_ARRAY_TASK_STEP": "2"})


def test_a_shard_keeps_the_whole_sets_classes_and_column_types():
    rows = [(f"/x/{i}.wav", ["dog", "rain", "sea"][i % 3], i % 2, i if i % 5 else 0.5) for i in range(30)]
    whole = InputSet(
        tuple(InputItem(p, {"gain": g}, ["dog", "rain", "sea"].index(c), f) for p, c, f, g in rows),
        class_names=("dog", "rain", "sea"),
    )
    part = whole.shard(Shard(1, 7))
    assert 0 < len(part) < len(whole)
    assert part.class_names == whole.class_names and part.meta_schema == whole.meta_schema


# --- joining stores ------------------------------------------------------------------------------


def _synthetic(path: Path, paths, errors=(), seed=0, pools=("mean",), **kw) -> Path:
    rng = np.random.default_rng(seed)
    n = len(paths)
    features = {"pool1": {p: rng.standard_normal((n, 16)).astype(np.float32) for p in pools}}
    return write_arrays(path, paths=paths, features=features, errors=list(errors), **kw)


def test_each_path_once_results_win_over_errors_and_duplicates_are_counted(tmp_path):
    a = _synthetic(tmp_path / "a.h5", ["p1", "p4"], [("p2", "cannot decode p2 in a")], seed=1)
    b = _synthetic(tmp_path / "b.h5", ["p2", "p3", "p1"], [("p4", "failed in b"), ("p5", "failed in b")], seed=2)
    summary = join_stores(tmp_path / "out.h5", [a, b])
    assert (summary.duplicates, summary.total_rows, summary.total_errors) == (3, 4, 1)
    with FeatureStore(tmp_path / "out.h5") as out, FeatureStore(a) as fa, FeatureStore(b) as fb:
        assert sorted(out.paths) == ["p1", "p2", "p3", "p4"]
        assert out.errors == [("p5", "failed in b")]
        expected = {"p1": fa.features("pool1")[0], "p4": fa.features("pool1")[1], "p2": fb.features("pool1")[0]}
        for p, row in expected.items():  # a result's first row wins, and replaces an error row
            assert np.array_equal(out.features("pool1")[out.row_of(p)], row)
    again = join_stores(tmp_path / "out.h5", [b])  # into an existing store: only new paths
    assert (again.rows_added, again.already_there, again.total_rows) == (0, 5, 4)


def test_aligned_inputs_are_copied_as_raw_chunks(tmp_path):
    a = _synthetic(tmp_path / "a.h5", [f"a{i}" for i in range(1024)], seed=1)
    b = _synthetic(tmp_path / "b.h5", [f"b{i}" for i in range(1024)], seed=2)
    summary = join_stores(tmp_path / "out.h5", [a, b])
    assert summary.raw_rows == 2048 and summary.total_rows == 2048
    with FeatureStore(tmp_path / "out.h5") as out, FeatureStore(b) as fb:
        assert np.array_equal(out.features("pool1")[1024:], fb.features("pool1"))


def _rows_by_path(path: Path) -> dict[str, tuple]:
    with FeatureStore(path) as store:
        features, (frames, offsets) = store.features("pool1"), store.frames("pool1")
        take = store.meta("take")
        return {p: (features[i].tobytes(), frames[offsets[i] : offsets[i + 1]].tobytes(), take[i], store.labels[i])
                for i, p in enumerate(store.paths)}


def test_unaligned_inputs_are_split_into_raw_and_re_encoded_rows_and_lose_nothing(tmp_path):
    stores = []
    for k, n in enumerate([1500, 2600, 700]):
        rng = np.random.default_rng(k)
        lengths = rng.integers(0, 5, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        stores.append(write_arrays(
            tmp_path / f"in{k}.h5", paths=[f"/c/{k}/{i}.wav" for i in range(n)],
            features={"pool1": {"mean": rng.standard_normal((n, 16)).astype(np.float32)}},
            frames={"pool1": (rng.standard_normal((offsets[-1], 16)).astype(np.float32), offsets)},
            labels=rng.integers(0, 3, n), class_names=["a", "b", "c"],
            meta={"take": [f"t{k}{i % 7}" for i in range(n)]}))
    summary = join_stores(tmp_path / "out.h5", stores)
    # raw: the leading 1024 and 2048 rows, then the first input's last 476 (they start on a chunk)
    assert summary.raw_rows == 1024 + 2048 + 476 and summary.total_rows == 4800
    merged = _rows_by_path(tmp_path / "out.h5")
    expected = {p: row for store in stores for p, row in _rows_by_path(store).items()}
    assert merged == expected
    # into an output whose rows end mid-chunk: a few rows fill its last chunk, the rest is copied raw
    join_stores(tmp_path / "grown.h5", stores[:1])
    grown = join_stores(tmp_path / "grown.h5", stores[1:])
    assert grown.raw_rows >= 2048 and _rows_by_path(tmp_path / "grown.h5") == expected
    with h5py.File(tmp_path / "out.h5", "r") as f:  # the file is a well-formed store, chunked as the inputs
        assert f["features/pool1/mean"].chunks == (1024, 16) and f["frames/pool1/offsets"][-1] == len(
            f["frames/pool1/data"])


def test_stores_with_other_settings_are_refused_naming_the_setting(tmp_path):
    a = _synthetic(tmp_path / "a.h5", ["p1"])
    b = _synthetic(tmp_path / "b.h5", ["p2"], pools=("mean", "max"))
    c = _synthetic(tmp_path / "c.h5", ["p3"], attrs={"preprocessing": {"min_seconds": 0}})
    with pytest.raises(StoreError, match=r'pools differ \(\["mean", "max"\] in \S*b\.h5, \["mean"\] in'):
        join_stores(tmp_path / "out.h5", [a, b])
    with pytest.raises(StoreError, match="preprocessing differ.*min_seconds"):
        join_stores(tmp_path / "out.h5", [a, c])
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.tmp").exists()


# --- real audio through the real commands ------------------------------------------------------


@pytest.fixture(scope="module")
def job(tmp_path_factory, onnx_path):
    """A manifest of real clips (bundled, ESC-50) and a bad file; shards 1/3..3/3 and a single run."""
    root = tmp_path_factory.mktemp("shards")
    bad = root / "not-audio.wav"
    bad.write_bytes(b"this is not a wav file")
    rows = [(str(p), p.stem.rsplit("-", 1)[-1], 1, "bundled", 0.5) for p in bundled_clips()]
    with open(ESC50_META, newline="") as handle:
        for record in list(csv.DictReader(handle))[:8]:
            path = ESC50_AUDIO / record["filename"].replace(".wav", ".flac")
            rows.append((str(path), record["target"], int(record["fold"]), record["take"], 1))
    rows.append((str(bad), "0", 1, "broken", 1))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "fold", "take", "gain"), *rows])
    base = [*CLI, "extract", "--manifest", str(manifest), "--model", str(onnx_path), *SETTINGS, *RUN]
    stores = {}
    for name, extra in [("single", []), *((f"s{k}", ["--shard", f"{k}/3"]) for k in (1, 2, 3))]:
        stores[name] = root / f"{name}.h5"
        proc = subprocess.run([*base, *extra, "-o", str(stores[name])], capture_output=True, text=True)
        # 3: finished, the bad file recorded under /errors (in the single run and in one shard)
        assert proc.returncode in ((3,) if name == "single" else (0, 3)), proc.stderr
    return {"root": root, "base": base, "manifest": manifest, "n": len(rows), **stores}


def _content(path: Path) -> dict:
    """Everything a store holds, keyed by path (row order is not part of a store's meaning)."""
    with h5py.File(path, "r") as f:
        paths = f["clips/path"].asstr()[()].tolist()
        rows = {}
        for i, p in enumerate(paths):
            row = {key: f[f"clips/{key}"][i] for key in ("duration", "sample_rate", "label", "fold")}
            row["meta"] = {c: f[f"clips/meta/{c}"][i] for c in f["clips/meta"]}
            row["features"] = {f"{l}/{q}": f[f"features/{l}/{q}"][i] for l in f["features"] for q in f[f"features/{l}"]}
            offsets = f["frames/pool5/offsets"]
            row["frames"] = f["frames/pool5/data"][offsets[i] : offsets[i + 1]]
            rows[p] = row
        schema = {}
        f.visititems(lambda name, obj: schema.update({name: (obj.dtype, obj.shape[1:], obj.chunks, obj.compression)})
                     if isinstance(obj, h5py.Dataset) else None)
        errors = dict(zip(f["errors/path"].asstr()[()].tolist(), f["errors/message"].asstr()[()].tolist()))
        settings = {k: f.attrs[k] for k in ("layers", "pools", "frames", "preprocessing", "weights_sha256",
                                              "onnx_sha256", "compression", "provider", "onnxruntime_version")}
        return {"paths": paths, "rows": rows, "schema": schema, "errors": errors, "settings": settings,
                "classes": f["classes/name"].asstr()[()].tolist(), "shard": f.attrs.get("shard")}


def _assert_same_store(merged: dict, single: dict) -> None:
    assert len(merged["paths"]) == len(set(merged["paths"])) and set(merged["paths"]) == set(single["paths"])
    assert merged["schema"] == single["schema"] and merged["settings"] == single["settings"]
    assert merged["errors"] == single["errors"] and merged["classes"] == single["classes"]
    for p, want in single["rows"].items():
        have = merged["rows"][p]
        for key in ("duration", "sample_rate", "label", "fold"):
            assert have[key] == want[key], (p, key)
        assert have["meta"] == want["meta"]
        for key, value in want["features"].items():
            np.testing.assert_allclose(have["features"][key], value, rtol=0, atol=1e-6)
        np.testing.assert_allclose(have["frames"], want["frames"], rtol=0, atol=1e-6)


@requires_shared(ESC50_META)
def test_shards_merged_equal_a_single_run(job):
    single = _content(job["single"])
    shards = [_content(job[f"s{k}"]) for k in (1, 2, 3)]
    assert [s["shard"] for s in shards] == ["1/3", "2/3", "3/3"] and single["shard"] is None
    assert sum(len(s["paths"]) + len(s["errors"]) for s in shards) == job["n"]  # each input in one shard
    out = job["root"] / "merged.h5"
    proc = subprocess.run([*CLI, "merge", str(out), *(str(job[f"s{k}"]) for k in (1, 2, 3))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"store holds {job['n'] - 1} clips and 1 errors" in proc.stdout
    merged = _content(out)
    _assert_same_store(merged, single)
    assert merged["shard"] == "1/3; 2/3; 3/3"
    assert single["errors"] and "not-audio.wav" in next(iter(single["errors"]))


@requires_shared(ESC50_META)
def test_resuming_with_another_shard_is_refused(job, capsys):
    code = main([*job["base"][3:], "--shard", "2/3", "-o", str(job["s1"])])
    assert code == 1 and "extracted with shard 1/3, this run asks for shard 2/3" in capsys.readouterr().err
    code = main([*job["base"][3:], "-o", str(job["s1"])])
    assert code == 1 and "all inputs (no --shard)" in capsys.readouterr().err


@requires_shared(ESC50_META)
def test_merging_stores_extracted_with_another_pool_is_refused(job, onnx_path, tmp_path):
    other = tmp_path / "max.h5"
    cmd = [*CLI, "extract", str(bundled_clips()[0]), "--model", str(onnx_path), "--layers", "pool1,pool5,conv7",
           "--pool", "max", "--frames", "pool5", *RUN, "-o", str(other)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    out = tmp_path / "out.h5"
    proc = subprocess.run([*CLI, "merge", str(out), str(job["s1"]), str(other)], capture_output=True, text=True)
    assert proc.returncode == 1 and "pools differ" in proc.stderr and '["max"]' in proc.stderr
    assert not out.exists()


def _killed_merge(out: Path, stores: list[Path], marker: Path) -> None:
    """Start a merge that pauses after its first input, and SIGKILL it there."""
    env = {**os.environ, "SOUNDNET8_TEST_PAUSE_AT": "merge", "SOUNDNET8_TEST_PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen([*CLI, "merge", str(out), *map(str, stores)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the merge did not reach its pause point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Path(f"{out}.tmp").exists()  # killed mid-merge: a partial temp file, the output untouched


@requires_shared(ESC50_META)
def test_a_merge_killed_midway_completes_when_run_again(job, tmp_path):
    shards = [job[f"s{k}"] for k in (1, 2, 3)]
    out = tmp_path / "out.h5"
    _killed_merge(out, shards, tmp_path / "first")
    assert not out.exists()
    # into an existing output: the killed merge leaves it as it was, the re-run adds only new paths
    assert main(["merge", str(out), str(shards[0])]) == 0
    before = _content(out)
    _killed_merge(out, shards[1:], tmp_path / "second")
    assert _content(out)["paths"] == before["paths"]
    proc = subprocess.run([*CLI, "merge", str(out), *map(str, shards)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(before['paths']) + len(before['errors'])} already there" in proc.stdout
    assert not Path(f"{out}.tmp").exists()
    _assert_same_store(_content(out), _content(job["single"]))
    assert Counter(_content(out)["paths"]).most_common(1)[0][1] == 1
