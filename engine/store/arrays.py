"""One-shot writing of a store from in-memory arrays, and crash-safe in-place updates of a store."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..arch import OUTPUTS
from ..errors import StoreError
from ..request import POOL_ORDER, Pool
from ..version import package_version
from .batch import Batch, write_file
from .columns import ColumnType, meta_value
from .files import Lock, NewFile, StoreFiles, publish, unlink
from .layout import Layout
from .schema import FORMAT_VERSION, Compression, canonical_json, check_version, now, read_attrs
from .text import check_name, check_text, clean_message


def _feature_arrays(
    target: Path, features: Mapping[str, Mapping[str, np.ndarray]], n: int
) -> tuple[list[str], dict[tuple[str, str], np.ndarray]]:
    """Layers in store order (SoundNet outputs first) and float32 (n, C) arrays by (layer, pool)."""
    if not features:
        raise StoreError(f"{target}: no features given")
    known = [o for o in OUTPUTS if o in features]
    layers = known + [layer for layer in features if layer not in OUTPUTS]
    arrays: dict[tuple[str, str], np.ndarray] = {}
    for layer in layers:
        check_name(layer, f"{target}: layer name")
        layer_c = None
        for pool in sorted(features[layer], key=lambda p: POOL_ORDER.index(Pool(p).value)):
            array = np.asarray(features[layer][pool], dtype=np.float32)
            if array.ndim != 2 or array.shape[0] != n or (layer_c is not None and array.shape[1] != layer_c):
                raise StoreError(f"{target}: features[{layer!r}][{pool!r}] has shape {array.shape}, expected ({n}, C)")
            layer_c = array.shape[1]
            arrays[(layer, Pool(pool).value)] = array
    return layers, arrays


def _frame_arrays(
    target: Path, frames: Mapping[str, tuple[np.ndarray, np.ndarray]], n: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer, (data, offsets) in frames.items():
        data = np.asarray(data, np.float32)
        offsets = np.asarray(offsets, np.int64)
        well_formed = data.ndim == 2 and offsets.shape == (n + 1,)
        if not well_formed or offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) < 0):
            raise StoreError(
                f"{target}: frames[{layer!r}] need (F, C) data and {n + 1} non-decreasing offsets from 0 to F"
            )
        arrays[layer] = (data, offsets)
    return arrays


def _meta_arrays(target: Path, meta: Mapping[str, Sequence[object]], n: int) -> dict[str, np.ndarray]:
    """Typed meta columns: the narrowest type holding each column's values (see ``columns``)."""
    arrays = {}
    for name, values in meta.items():
        check_name(name, f"{target}: meta column name")
        values = [meta_value(v) for v in values]
        if len(values) != n:
            raise StoreError(f"{target}: meta column {name!r} has {len(values)} values, expected {n}")
        arrays[name] = ColumnType.infer(values, f"{target}: meta {name!r}").array(values)
    return arrays


def _root_attrs(
    target: Path, layers: list[str], features, frames, compression: Compression, attrs: Mapping[str, Any] | None
) -> dict[str, Any]:
    pools = {pool for _, pool in features}
    root: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "soundnet8_version": package_version(),
        "weights_sha256": "",
        "onnx_sha256": "",
        "provider": "",
        "onnxruntime_version": "",
        "preprocessing": "{}",
        "layers": json.dumps(layers),
        "pools": json.dumps([p for p in POOL_ORDER if p in pools]),
        "frames": json.dumps([layer for layer in layers if layer in frames]),
        "compression": Compression(compression).value,
        "created": now(),
        "updated": now(),
    }
    for key, value in (attrs or {}).items():
        if key == "format_version":
            raise StoreError(f"{target}: format_version is set by soundnet8")
        if isinstance(value, (Mapping, list, tuple)):
            value = canonical_json(value if not isinstance(value, tuple) else list(value), f"attribute {key!r}")
        root[key] = value
    return root


def write_arrays(
    path: str | os.PathLike,
    *,
    paths: Sequence[str],
    features: Mapping[str, Mapping[str, np.ndarray]],
    labels: Sequence[int] | np.ndarray | None = None,
    folds: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    meta: Mapping[str, Sequence[object]] | None = None,
    durations: Sequence[float] | np.ndarray | None = None,
    sample_rates: Sequence[int] | np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    frames: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    errors: Sequence[tuple[str, str]] | None = None,
    compression: Compression = Compression.GZIP,
) -> Path:
    """Write a complete store from in-memory arrays, atomically (replacing any store at ``path``).

    ``features[layer][pool]`` is (N, C); layer names need not be SoundNet outputs (tests use
    small synthetic layers). Missing durations are NaN, missing sample rates 0. ``attrs`` may set
    any root attribute (e.g. preprocessing as a dict, weights_sha256); required ones default to
    empty values. ``frames[layer] = (data, offsets)``. Any leftover segments of an interrupted
    extract at ``path`` are deleted: the new store replaces that history.
    """
    target = Path(path)
    n = len(paths)
    path_list = [check_text(p, "clip path") for p in paths]
    if len(set(path_list)) != n:
        raise StoreError(f"{target}: paths contain duplicates")
    layers, feature_arrays = _feature_arrays(target, features, n)
    frame_arrays = _frame_arrays(target, frames or {}, n)
    channels = {key: array.shape[1] for key, array in feature_arrays.items()}
    layout = Layout.for_channels(channels, {k: v[0].shape[1] for k, v in frame_arrays.items()}, compression)

    def column(values, dtype, name, default):
        if values is None:
            return np.full(n, default, dtype)
        array = np.asarray(values, dtype)
        if array.shape != (n,):
            raise StoreError(f"{target}: {name} has shape {array.shape}, expected ({n},)")
        return array

    label_array = None if labels is None else column(labels, np.int64, "labels", 0)
    if label_array is not None and n:
        k = len(class_names) if class_names is not None else None
        if label_array.min() < 0 or (k is not None and label_array.max() >= k):
            raise StoreError(f"{target}: labels must lie in 0..{(k - 1) if k else 'K-1'}")
    rows = Batch(
        path_list,
        column(durations, np.float64, "durations", np.nan),
        column(sample_rates, np.int32, "sample_rates", 0),
        _meta_arrays(target, meta or {}, n),
        label_array,
        None if folds is None else column(folds, np.int64, "folds", 0),
        feature_arrays,
        frame_arrays,
        [(check_text(p, "error path"), clean_message(m)) for p, m in (errors or [])],
    )
    root = _root_attrs(target, layers, feature_arrays, frame_arrays, compression, attrs)
    names = None if class_names is None else [check_text(c, "class name") for c in class_names]
    _replace_store(StoreFiles(target), rows, layout, root, names)
    return target


def _replace_store(files: StoreFiles, rows: Batch, layout: Layout, root: Mapping[str, Any], names) -> None:
    lock = Lock(files)
    try:
        tmp = files.private_tmp()
        write_file(tmp, rows, layout, root, names)
        try:
            publish(tmp, files.store)
        except BaseException:
            unlink(tmp)
            raise
        if files.parts.exists():
            shutil.rmtree(files.parts)
    finally:
        lock.release()


@contextmanager
def update_store(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Modify a store crash-safely: yields a writable copy that replaces the store on success.

    For tools that add derived results (``/stats``, ``/analysis``): the copy is made with raw
    chunk copies, edited, fsync'd and renamed over the store; an exception or a kill leaves the
    store as it was. Holds the store's lock, so it fails fast while an extract is writing.
    """
    files = StoreFiles(Path(path))
    if not files.store.exists():
        raise StoreError(f"{files.store}: no such feature store")
    lock = Lock(files)
    tmp = files.private_tmp()
    try:
        try:
            old = h5py.File(files.store, "r")
        except OSError as exc:
            raise StoreError(f"{files.store}: not a readable feature store ({exc})") from exc
        with old:
            check_version(read_attrs(old), files.store)
            with NewFile(tmp) as new:  # a full disk is a StoreError, never an HDF5 crash
                for name in old:
                    old.copy(old[name], new, name=name)  # raw chunk copy; also drops freed space
                for key, value in old.attrs.items():
                    new.attrs[key] = value
        with h5py.File(tmp, "r+") as new:
            yield new
            new.attrs["updated"] = now()
        publish(tmp, files.store)
    except BaseException:
        unlink(tmp)
        raise
    finally:
        lock.release()
