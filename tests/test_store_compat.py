"""Stores written before the store became a package (format version 1) still open and resume.

``tests/data/legacy_v1/store_v1.h5`` was written by soundnet8 0.1.0 at commit bbee3f0 (see the
README there): 4 bundled clips with layers pool2, pool5, conv6, scenes, pools mean and max,
frames of pool5, manifest columns label/fold/note as metadata, and one /errors row. Its clip
paths are absolute paths of the machine that wrote it, so clips are matched by file name.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from soundnet8.engine.errors import StoreError
from soundnet8.engine.inputs import bundled_clips, discover
from soundnet8.engine.modelfile import model_info
from soundnet8.engine.pipeline import ExtractOptions, extract
from soundnet8.engine.request import Pool, Request
from soundnet8.engine.session import Provider
from soundnet8.engine.store import FORMAT_VERSION, FeatureStore

LEGACY = Path(__file__).with_name("data") / "legacy_v1"
STORE = LEGACY / "store_v1.h5"
LAYERS = ("pool2", "pool5", "conv6", "scenes")
POOLS = ("mean", "max")
OLD_CLIPS = ("1-172649-A-40.flac", "1-54958-A-10.flac", "2-117271-A-0.flac", "5-198411-E-20.flac")
NEW_CLIPS = ("1-42139-A-38.flac", "2-95258-B-1.flac")
CLASSES = ("crying_baby", "dog", "helicopter", "none", "rain")  # sorted distinct labels of manifest.csv
TOLERANCE = 1e-5


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE)


def _name(path: str) -> str:
    return Path(path).name


@pytest.fixture(scope="module")
def model(onnx_path):
    return model_info(onnx_path)


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> Path:
    """The six bundled clips extracted by the current engine with the fixture's settings."""
    store = tmp_path_factory.mktemp("reference") / "reference.h5"
    request = Request(layers=LAYERS, pools=(Pool.MEAN, Pool.MAX), frames=("pool5",))
    options = ExtractOptions(request=request, workers=1, progress=False, provider=Provider.CPU)
    extract(discover(bundled_clips()), store, model, options)
    return store


def _rows_by_name(fs: FeatureStore) -> dict[str, int]:
    return {_name(p): i for i, p in enumerate(fs.paths)}


def test_the_fixture_opens_with_its_rows_settings_and_metadata():
    with FeatureStore(STORE) as fs:
        assert fs.attrs["format_version"] == FORMAT_VERSION == 1
        assert fs.n_clips == 4 and [_name(p) for p in fs.paths] == list(OLD_CLIPS)
        assert fs.layers == LAYERS and all(fs.pools(layer) == POOLS for layer in LAYERS)
        assert fs.attrs["layers"] == list(LAYERS) and fs.attrs["pools"] == list(POOLS)
        assert fs.attrs["frames"] == ["pool5"]
        assert fs.attrs["preprocessing"] == {"min_seconds": 20.0, "mix": "first", "sample_rate_mode": "resample"}
        message = "unsupported or corrupt audio: Format not recognised."
        assert [(_name(p), m) for p, m in fs.errors] == [("broken.wav", message)]
        assert fs.class_names == CLASSES
        assert fs.labels.tolist() == [2, 4, 1, 0] and fs.folds.tolist() == [1, 2, 3, 4]
        assert set(fs.meta_columns) == {"label", "fold", "note"}
        assert fs.meta("label").tolist() == ["helicopter", "rain", "dog", "crying_baby"]
        assert fs.meta("fold").dtype == np.int64 and fs.meta("fold").tolist() == [1, 2, 3, 4]
        assert fs.meta("note").tolist() == ["a", "b", "c", "d"]
        assert fs.durations.tolist() == [5.0] * 4 and fs.sample_rates.tolist() == [16000] * 4
        for layer, channels in (("pool2", 32), ("pool5", 256), ("conv6", 512), ("scenes", 401)):
            for pool in POOLS:
                assert fs.features(layer, pool).shape == (4, channels)
        data, offsets = fs.frames("pool5")
        assert offsets.tolist() == [0, 67, 134, 201, 268] and data.shape == (268, 256)
        assert np.array_equal(fs.frames_of("pool5", 2), data[134:201])
        assert fs.row_of(fs.paths[3]) == 3
        with pytest.raises(StoreError, match="no frames for layer 'conv6'"):
            fs.frames("conv6")


def test_the_fixture_holds_what_the_engine_computes_today(reference):
    with FeatureStore(STORE) as old, FeatureStore(reference) as new:
        rows = _rows_by_name(new)
        order = [rows[_name(p)] for p in old.paths]
        for layer in LAYERS:
            for pool in POOLS:
                close(old.features(layer, pool), new.features(layer, pool, rows=order))
        for i, j in enumerate(order):
            close(old.frames_of("pool5", i), new.frames_of("pool5", j))


def _resume_manifest(tmp_path: Path, stored_paths: list[str], stored_error: str) -> Path:
    """The fixture's manifest with its rows at their stored paths, plus the two other demo clips.

    Rows keep the stored paths so the resume recognises them (absent here when the fixture came
    from another machine: --allow-missing then skips them, as they are in the store anyway). The
    new clips get labels among the stored classes, since a resume must keep the class list.
    """
    demo = bundled_clips()[0].parent
    rows = [(p, label, fold, note) for p, label, fold, note in zip(
        stored_paths, ("helicopter", "rain", "dog", "crying_baby"), (1, 2, 3, 4), "abcd")]
    rows.append((stored_error, "none", 5, "e"))
    rows += [(str(demo / NEW_CLIPS[0]), "none", 1, "f"), (str(demo / NEW_CLIPS[1]), "none", 2, "g")]
    manifest = tmp_path / "resume.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold", "note"])
        writer.writerows(rows)
    return manifest


def _extract_command() -> list[str]:
    script = Path(sys.executable).with_name("soundnet8")  # the installed console script
    return [str(script)] if script.exists() else [sys.executable, "-m", "soundnet8.engine.cli"]


def _snapshot(path: Path, rows: int) -> dict[str, object]:
    """The first ``rows`` rows of every row dataset, plus /errors and /classes whole."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            values = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) is not None else obj[()]
            if name.startswith(("clips/", "features/")):
                values = values[:rows]
            elif name.endswith("offsets"):
                values = values[: rows + 1]
            elif name.startswith("frames/"):
                values = values[: int(f[name.replace("data", "offsets")][rows])]
            out[name] = (str(obj.dtype), obj.chunks, obj.compression, np.asarray(values).tolist())

        f.visititems(visit)
    return out


def test_the_fixture_resumes_through_extract(model, reference, tmp_path):
    with FeatureStore(STORE) as fs:
        stored_paths, stored_error = list(fs.paths), fs.errors[0][0]
        settings = {k: fs.attrs[k] for k in ("layers", "pools", "frames", "preprocessing", "weights_sha256")}
        assert fs.attrs["onnx_sha256"] == model.sha256, (
            "the ONNX export is no longer byte-identical to the one that wrote the fixture; "
            "a resume of a store written before would be refused"
        )
    store = tmp_path / "store_v1.h5"
    shutil.copyfile(STORE, store)
    before = _snapshot(store, 4)
    manifest = _resume_manifest(tmp_path, stored_paths, stored_error)
    cmd = _extract_command() + [
        "extract", "--manifest", str(manifest), "-o", str(store), "--model", str(model.path),
        "--layers", ",".join(LAYERS), "--pool", ",".join(POOLS), "--frames", "pool5",
        "--workers", "1", "--no-progress", "--provider", "cpu", "--allow-missing",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr  # the settings were accepted ("cannot resume" exits 1)
    assert _snapshot(store, 4) == before  # old rows, errors and classes unchanged
    with FeatureStore(store) as fs, FeatureStore(reference) as ref:
        assert [_name(p) for p in fs.paths] == [*OLD_CLIPS, *NEW_CLIPS]
        assert fs.labels.tolist()[4:] == [CLASSES.index("none")] * 2 and fs.folds.tolist()[4:] == [1, 2]
        assert fs.meta("note").tolist() == list("abcdfg") and fs.meta("fold").dtype == np.int64
        assert {k: fs.attrs[k] for k in settings} == settings and fs.attrs["format_version"] == 1
        assert len(fs.errors) == 1
        rows = _rows_by_name(ref)
        new = [rows[name] for name in NEW_CLIPS]
        for layer in LAYERS:
            for pool in POOLS:
                close(fs.features(layer, pool, rows=[4, 5]), ref.features(layer, pool, rows=new))
