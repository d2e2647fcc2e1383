"""The HDF5 feature store: its schema, a crash-safe resumable writer, and a read-only reader.

Schema, format_version 1 (stable: readers may rely on everything below)
-----------------------------------------------------------------------
N clips, K classes, M failed inputs, C channels of a layer (``soundnet8.engine.arch``)::

    /clips/path              (N,)    UTF-8 variable-length   the audio file, as given to extract
    /clips/duration          (N,)    float64                 seconds of the original audio
    /clips/sample_rate       (N,)    int32                   the file's native rate (Hz; 0 = unknown)
    /clips/meta/<column>     (N,)    int64 | float64 | UTF-8 manifest columns (see "meta" below)
    /clips/label             (N,)    int64 in 0..K-1         only when labels are known
    /clips/fold              (N,)    int64                   only when folds are known
    /classes/name            (K,)    UTF-8                   class name of each label, when known
    /features/<layer>/<pool> (N, C)  float32                 pool in mean | max | std (over time)
    /frames/<layer>/data     (F, C)  float32                 optional frame-level outputs, all clips
    /frames/<layer>/offsets  (N+1,)  int64                   clip i = data[offsets[i]:offsets[i+1]]
    /errors/path             (M,)    UTF-8                   inputs that could not be processed
    /errors/message          (M,)    UTF-8                   why (one line per input)
    /stats/..., /analysis/...                                derived results of other tools; kept

Every /clips, /features and /frames dataset is row-aligned with /clips/path (row i is one clip),
chunked by rows with an unlimited first dimension. /features and /frames/*/data chunks hold
(R, C) with R the largest power of two with R*C*4 <= 1 MiB, and R <= 1024 for /features; they are
compressed with gzip level 4 (default, readable everywhere) or lzf (faster; h5py/PyTables only),
shuffle filter on. Numeric /clips columns use the same filter; strings are not compressed.

meta: a column holding only integers (bools count as 0/1) is int64; integers and floats, or
integers with missing values, give float64 (missing = NaN); anything else is stored as strings
(missing = "", numbers written as Python's str(), integral floats without ".0").

Root attributes: format_version (int, 1), soundnet8_version, weights_sha256, onnx_sha256, provider,
onnxruntime_version (str; when runs with different values were merged, the distinct values in
order joined by "; "), preprocessing (JSON object), layers, pools and frames (JSON lists; frames:
the layers stored frame by frame),
compression (str), created and updated (ISO-8601 UTC). Other run attributes given by the caller
are kept as extra attributes (the latest run's value wins).

Files next to the store (how the writer stays crash-safe)
---------------------------------------------------------
``STORE.h5`` is only ever replaced whole, by ``os.replace`` of a complete, fsync'd file, so a
reader (plain h5py included) never sees a half-written store, whenever the writer is killed.

- ``STORE.h5.parts/seg-<run>-<k>.h5``: segments, small complete stores of one run's new rows.
  A segment is written as ``.h5.tmp`` and renamed once closed and fsync'd; a killed run loses at
  most its unfinished segment, whose clips are processed again on resume.
- ``STORE.h5.tmp``: consolidation output. The existing store's datasets are copied raw (H5Ocopy,
  no recompression), the segments' rows appended (raw chunk copy when the chunk grids line up,
  which the writer arranges), then the file replaces ``STORE.h5`` and the segments are deleted.
  A kill before the replace leaves ``STORE.h5`` and the segments as they were; a kill after it
  leaves merged segments whose rows are recognised by path and not added twice.
- ``STORE.h5.lock``: ``flock``'d by the one process writing the store.

Resume rule: each path is in the store at most once, as a feature row or as an error row; a path
already present is skipped by the caller (``StoreWriter.done``). With ``retry_errors`` the error
paths are offered again, and a new row for such a path replaces its error row.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .arch import OUTPUTS, output_channels
from .errors import StoreError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the schema above; a reader refuses stores with another version."""

CHUNK_BYTES = 1 << 20
"""Target size of one uncompressed /features or /frames chunk."""

MAX_FEATURE_CHUNK_ROWS = 1024
"""Cap on /features chunk rows. Every feature chunk height divides it, so segments that start on
multiples of it can be appended by copying compressed chunks verbatim."""

MAX_FRAME_CHUNK_ROWS = 1 << 16
COLUMN_CHUNK_ROWS = 1 << 14  # numeric /clips columns: 128 KiB of int64/float64 per chunk
STRING_CHUNK_ROWS = 1 << 12  # variable-length strings: 4096 heap references per chunk
GZIP_LEVEL = 4  # measured ~35 MB/s on float32 features, ratio ~0.63; higher levels gain ~1%

DEFAULT_SEGMENT_ROWS = MAX_FEATURE_CHUNK_ROWS
"""Clips per segment: a multiple of every feature chunk height (see MAX_FEATURE_CHUNK_ROWS)."""

SEGMENT_MAX_BYTES = 64 << 20
"""A segment is also finished once its buffered arrays reach this size (frames can be large)."""

MERGE_CACHE_BYTES = 4 << 20  # per-dataset chunk cache while appending: holds the partial tail chunk
READ_CACHE_BYTES = 16 << 20  # per-dataset chunk cache of the reader

ACCUMULATED_ATTRS = ("soundnet8_version", "provider", "onnxruntime_version")
"""Run attributes whose distinct values across merged runs are all kept ("; "-joined)."""

ATTR_JOIN = "; "
PARTS_SUFFIX = ".parts"
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".h5"


class Compression(str, enum.Enum):
    """Filter of the /features, /frames and numeric /clips datasets."""

    GZIP = "gzip"  # portable: every HDF5 build reads it
    LZF = "lzf"  # ~3.5x faster to write, ~25% larger; readable by h5py and PyTables only


class Pool(str, enum.Enum):
    """Reductions over time stored under /features/<layer>/<pool>."""

    MEAN = "mean"
    MAX = "max"
    STD = "std"


class _Kind(enum.Enum):
    """Storage type of a meta column; later members absorb earlier ones when columns merge."""

    INT = 0
    FLOAT = 1
    STR = 2


_POOL_ORDER = tuple(p.value for p in Pool)
_EXACT_FLOAT_INT = 2**53  # integers below this survive a round trip through float64
_SETTINGS_ATTRS = ("layers", "pools", "frames", "preprocessing", "weights_sha256", "onnx_sha256")


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


def _canonical_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must be JSON-serialisable: {exc}") from exc


def _canonical_layers(layers: Sequence[str]) -> tuple[str, ...]:
    unknown = [layer for layer in layers if layer not in OUTPUTS]
    if unknown:
        raise StoreError(f"unknown layer(s) {unknown}; the layers are {list(OUTPUTS)}")
    if not layers:
        raise StoreError("no layers requested")
    return tuple(o for o in OUTPUTS if o in set(layers))


def _canonical_pools(pools: Sequence[str]) -> tuple[str, ...]:
    values = []
    for p in pools:
        try:
            values.append(Pool(p).value)
        except ValueError:
            raise StoreError(f"unknown pool {p!r}; the pools are {list(_POOL_ORDER)}") from None
    if not values:
        raise StoreError("no pools requested")
    return tuple(p for p in _POOL_ORDER if p in values)


def _canonical_frames(frames: Sequence[str] | bool, layers: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(frames, (bool, np.bool_)):
        return layers if frames else ()
    extra = [layer for layer in frames if layer not in layers]
    if extra:
        raise StoreError(f"frames requested for {extra}, which are not among the stored layers {list(layers)}")
    return tuple(layer for layer in layers if layer in frames)


@dataclass(frozen=True)
class StoreSettings:
    """What a store is made of; a resumed run must match it exactly (it goes into root attrs).

    Layers and pools are normalised to the canonical order (``arch.OUTPUTS``, mean/max/std), so
    the order they were requested in does not matter.
    """

    layers: tuple[str, ...]
    pools: tuple[str, ...]
    frames: tuple[str, ...] | bool  # layers with frame-level outputs; True = every layer, False = none
    preprocessing: Mapping[str, Any]
    weights_sha256: str
    onnx_sha256: str
    compression: Compression = Compression.GZIP

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__ once, at construction
        object.__setattr__(self, "layers", _canonical_layers(tuple(self.layers)))
        object.__setattr__(self, "pools", _canonical_pools(tuple(self.pools)))
        object.__setattr__(self, "frames", _canonical_frames(self.frames, self.layers))
        object.__setattr__(self, "compression", Compression(self.compression))
        _canonical_json(dict(self.preprocessing), "preprocessing")

    @property
    def feature_keys(self) -> tuple[tuple[str, str], ...]:
        return tuple((layer, pool) for layer in self.layers for pool in self.pools)

    def attrs(self) -> dict[str, Any]:
        """The root attributes that record these settings."""
        return {
            "layers": json.dumps(list(self.layers)),
            "pools": json.dumps(list(self.pools)),
            "frames": json.dumps(list(self.frames)),
            "preprocessing": _canonical_json(dict(self.preprocessing), "preprocessing"),
            "weights_sha256": str(self.weights_sha256),
            "onnx_sha256": str(self.onnx_sha256),
        }


@dataclass(frozen=True)
class ClipResult:
    """One processed clip, as produced by the pipeline."""

    path: str
    duration: float
    sample_rate: int
    meta: Mapping[str, object]
    features: Mapping[tuple[str, str], np.ndarray]  # (layer, pool) -> (C,) float32
    frames: Mapping[str, np.ndarray] | None  # layer -> (T, C) float32, when settings.frames
    label: int | None = None
    fold: int | None = None


@dataclass(frozen=True)
class ClipError:
    """An input that could not be processed; recorded under /errors and not retried by default."""

    path: str
    message: str


@dataclass(frozen=True)
class StoreSummary:
    """What a writer did: rows and errors it added, and the store's totals afterwards."""

    path: Path
    rows_added: int
    errors_added: int
    total_rows: int
    total_errors: int


# --------------------------------------------------------------------------------------------
# Small helpers: time, attrs, strings, fsync, files
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("soundnet8")
    except PackageNotFoundError:  # running from a bare source tree
        return "unknown"


def _attr_value(value: Any) -> Any:
    """An HDF5 root-attribute value as plain Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _read_attrs(f: h5py.File) -> dict[str, Any]:
    return {k: _attr_value(v) for k, v in f.attrs.items()}


def _clean_message(text: str) -> str:
    # Error messages are diagnostics from decoders: keep them storable (HDF5 strings end at NUL,
    # UTF-8 cannot hold lone surrogates) rather than failing the run over a message.
    text = str(text).replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def _check_text(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise StoreError(f"{what} must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise StoreError(f"{what} {text!r} contains a NUL character, which HDF5 strings cannot hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"{what} {text!r} is not valid UTF-8 (undecodable bytes in a file name?)") from None
    return text


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Make a closed file durable and atomically give it its final name."""
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync(final.parent)  # the rename itself must survive a power cut


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class _StoreFiles:
    """The store and the files the writer keeps next to it."""

    store: Path

    @property
    def tmp(self) -> Path:
        return self.store.with_name(self.store.name + TMP_SUFFIX)

    @property
    def parts(self) -> Path:
        return self.store.with_name(self.store.name + PARTS_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.store.with_name(self.store.name + LOCK_SUFFIX)

    def segments(self) -> list[Path]:
        """Finished segments, oldest first (run ids sort by start time, k is zero-padded)."""
        if not self.parts.is_dir():
            return []
        return sorted(
            p for p in self.parts.iterdir() if p.name.startswith(SEGMENT_PREFIX) and p.name.endswith(SEGMENT_SUFFIX)
        )

    def stale_tmps(self) -> list[Path]:
        """Temporary files of writers that were killed (only ever removed under the lock)."""
        found = [self.tmp] if self.tmp.exists() else []
        if self.parts.is_dir():
            found += sorted(p for p in self.parts.iterdir() if p.name.endswith(TMP_SUFFIX))
        prefix = self.store.name + "."
        if self.store.parent.is_dir():
            for p in sorted(self.store.parent.iterdir()):
                # write_arrays / update_store temp files: STORE.h5.<pid>.tmp
                middle = p.name[len(prefix) : -len(TMP_SUFFIX)]
                if p.name.startswith(prefix) and p.name.endswith(TMP_SUFFIX) and middle.isdigit():
                    found.append(p)
        return found

    def private_tmp(self) -> Path:
        return self.store.with_name(f"{self.store.name}.{os.getpid()}{TMP_SUFFIX}")


class _Lock:
    """An exclusive flock on STORE.h5.lock, held while a process writes the store."""

    def __init__(self, files: _StoreFiles) -> None:
        self.path = files.lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise StoreError(
                    f"{files.store}: another process{who} is writing this store (lock {self.path} is held); "
                    "wait for it to finish or stop it"
                ) from None
            raise StoreError(f"{files.store}: cannot lock {self.path}: {exc}") from exc
        # the pid is informational only (for the message above); the flock is what excludes
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock


# --------------------------------------------------------------------------------------------
# Layout: how the row datasets are chunked and filtered
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Filters:
    compression: str | None
    level: int | None
    shuffle: bool

    @classmethod
    def for_compression(cls, compression: Compression) -> _Filters:
        if Compression(compression) is Compression.GZIP:
            return cls("gzip", GZIP_LEVEL, True)
        return cls("lzf", None, True)

    @classmethod
    def of(cls, ds: h5py.Dataset) -> _Filters:
        return cls(ds.compression, ds.compression_opts, bool(ds.shuffle))

    def kwargs(self) -> dict[str, Any]:
        return {"compression": self.compression, "compression_opts": self.level, "shuffle": self.shuffle}


@dataclass(frozen=True)
class _Spec:
    """A 2-D row dataset: channels, chunk height, filters."""

    channels: int
    chunk_rows: int
    filters: _Filters


@dataclass(frozen=True)
class _Layout:
    features: Mapping[tuple[str, str], _Spec]
    frames: Mapping[str, _Spec]
    columns: _Filters  # numeric /clips columns

    @classmethod
    def for_channels(
        cls, features: Mapping[tuple[str, str], int], frames: Mapping[str, int], compression: Compression
    ) -> _Layout:
        filters = _Filters.for_compression(compression)
        return cls(
            {k: _Spec(c, _chunk_rows(c, MAX_FEATURE_CHUNK_ROWS), filters) for k, c in features.items()},
            {k: _Spec(c, _chunk_rows(c, MAX_FRAME_CHUNK_ROWS), filters) for k, c in frames.items()},
            filters,
        )

    @classmethod
    def for_settings(cls, settings: StoreSettings) -> _Layout:
        features = {(layer, pool): output_channels(layer) for layer, pool in settings.feature_keys}
        frames = {layer: output_channels(layer) for layer in settings.frames}
        return cls.for_channels(features, frames, settings.compression)

    @classmethod
    def of(cls, f: h5py.File) -> _Layout:
        features = {}
        for layer, group in f["features"].items():
            for pool, ds in group.items():
                features[(layer, pool)] = _Spec(ds.shape[1], ds.chunks[0], _Filters.of(ds))
        frames = {}
        if "frames" in f:
            for layer, group in f["frames"].items():
                ds = group["data"]
                frames[layer] = _Spec(ds.shape[1], ds.chunks[0], _Filters.of(ds))
        return cls(features, frames, _Filters.of(f["clips/duration"]))


def _chunk_rows(channels: int, cap: int) -> int:
    rows = max(1, CHUNK_BYTES // (4 * max(1, channels)))
    return min(1 << (rows.bit_length() - 1), cap)  # a power of two, so chunk grids nest


# --------------------------------------------------------------------------------------------
# Columns: one batch of rows in memory, and writing a complete store from it
# --------------------------------------------------------------------------------------------


def _value_kind(value: object, what: str) -> _Kind | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return _Kind.INT
    if isinstance(value, (float, np.floating)):
        return _Kind.FLOAT
    if isinstance(value, str):
        return _Kind.STR
    raise StoreError(f"{what}: meta values must be str, int, float, bool or None, not {type(value).__name__}")


def _merge_kinds(kinds: Sequence[_Kind], missing: bool) -> _Kind:
    kind = max(kinds, key=lambda k: k.value) if kinds else _Kind.FLOAT
    if missing and kind is _Kind.INT:
        return _Kind.FLOAT  # int64 has no missing value; NaN marks it
    return kind


def _meta_str(value: object) -> str:
    """The string form of a meta value; the same whether converted early or after storage."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return ""
        # an int column becomes float64 when values are missing; writing integral floats as ints
        # gives the same text whether the number was converted before or after that promotion
        return str(int(value)) if value.is_integer() and abs(value) < _EXACT_FLOAT_INT else str(value)
    return str(value)


def _typed_column(values: Sequence[object], kind: _Kind) -> np.ndarray:
    if kind is _Kind.INT:
        return np.array([int(v) for v in values], dtype=np.int64)
    if kind is _Kind.FLOAT:
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array([_meta_str(v) for v in values], dtype=object)


def _kind_of_array(array: np.ndarray | h5py.Dataset) -> _Kind:
    if h5py.check_string_dtype(array.dtype) is not None or array.dtype.kind in "OUS":
        return _Kind.STR
    return _Kind.INT if array.dtype.kind in "iub" else _Kind.FLOAT


def _convert_column(array: np.ndarray, kind: _Kind) -> np.ndarray:
    if _kind_of_array(array) is kind:
        return array
    return _typed_column([_meta_value(v) for v in array], kind)


def _meta_value(v: Any) -> object:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass
class _Columns:
    """Rows of a store in memory (a segment, or a whole store for write_arrays)."""

    paths: list[str]
    durations: np.ndarray
    sample_rates: np.ndarray
    meta: dict[str, np.ndarray]
    labels: np.ndarray | None
    folds: np.ndarray | None
    features: dict[tuple[str, str], np.ndarray]
    frames: dict[str, tuple[np.ndarray, np.ndarray]]
    errors: list[tuple[str, str]]

    @classmethod
    def empty(cls, layout: _Layout) -> _Columns:
        return cls(
            [],
            np.zeros(0, np.float64),
            np.zeros(0, np.int32),
            {},
            None,
            None,
            {k: np.zeros((0, s.channels), np.float32) for k, s in layout.features.items()},
            {k: (np.zeros((0, s.channels), np.float32), np.zeros(1, np.int64)) for k, s in layout.frames.items()},
            [],
        )


def _strings(group: h5py.Group, name: str, values: Sequence[str], filters: _Filters) -> h5py.Dataset:
    # the filter compresses the chunk's 16-byte heap references (mostly padding in small stores);
    # the strings themselves live uncompressed in the file's global heap
    return group.create_dataset(
        name,
        data=np.array(list(values), dtype=object).reshape(-1),
        dtype=h5py.string_dtype("utf-8"),
        maxshape=(None,),
        chunks=(STRING_CHUNK_ROWS,),
        **filters.kwargs(),
    )


def _column(group: h5py.Group, name: str, values: np.ndarray, filters: _Filters) -> h5py.Dataset:
    if _kind_of_array(values) is _Kind.STR:
        return _strings(group, name, values, filters)
    return group.create_dataset(
        name, data=values, maxshape=(None,), chunks=(COLUMN_CHUNK_ROWS,), **filters.kwargs()
    )


def _matrix(group: h5py.Group, name: str, values: np.ndarray, spec: _Spec) -> h5py.Dataset:
    return group.create_dataset(
        name,
        data=np.asarray(values, dtype=np.float32),
        maxshape=(None, spec.channels),
        chunks=(spec.chunk_rows, spec.channels),
        **spec.filters.kwargs(),
    )


def _write_errors(f: h5py.File, errors: Sequence[tuple[str, str]], filters: _Filters) -> None:
    group = f.require_group("errors")
    _strings(group, "path", [p for p, _ in errors], filters)
    _strings(group, "message", [m for _, m in errors], filters)


def _populate(
    f: h5py.File, cols: _Columns, layout: _Layout, attrs: Mapping[str, Any], class_names: Sequence[str] | None
) -> None:
    """Write every dataset of a complete store holding ``cols`` into the empty file ``f``."""
    clips = f.create_group("clips")
    _strings(clips, "path", cols.paths, layout.columns)
    _column(clips, "duration", np.asarray(cols.durations, np.float64), layout.columns)
    _column(clips, "sample_rate", np.asarray(cols.sample_rates, np.int32), layout.columns)
    meta = clips.create_group("meta")
    for name, values in cols.meta.items():
        _column(meta, name, values, layout.columns)
    if cols.labels is not None:
        _column(clips, "label", np.asarray(cols.labels, np.int64), layout.columns)
    if cols.folds is not None:
        _column(clips, "fold", np.asarray(cols.folds, np.int64), layout.columns)
    if class_names is not None:
        _strings(f.create_group("classes"), "name", class_names, layout.columns)
    features = f.create_group("features")
    for (layer, pool), spec in layout.features.items():
        _matrix(features.require_group(layer), pool, cols.features[(layer, pool)], spec)
    if layout.frames:
        frames = f.create_group("frames")
        for layer, spec in layout.frames.items():
            data, offsets = cols.frames[layer]
            group = frames.create_group(layer)
            _matrix(group, "data", data, spec)
            _column(group, "offsets", np.asarray(offsets, np.int64), layout.columns)
    _write_errors(f, cols.errors, layout.columns)
    for key, value in attrs.items():
        f.attrs[key] = value


def _write_file(path: Path, cols: _Columns, layout: _Layout, attrs: Mapping[str, Any], class_names) -> None:
    try:
        with h5py.File(path, "w") as f:
            _populate(f, cols, layout, attrs, class_names)
    except BaseException:
        _unlink(path)  # never leave a partial file under a name a reader could pick up
        raise


# --------------------------------------------------------------------------------------------
# Inspecting stores and segments
# --------------------------------------------------------------------------------------------


class _Corrupt(Exception):
    """A segment that cannot be read or is inconsistent (internal; turned into a discard)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _check_structure(f: h5py.File, path: Path) -> int:
    """Check the datasets a store must have and their row counts; return the number of rows."""
    for name in ("clips/path", "clips/duration", "clips/sample_rate", "features", "errors/path", "errors/message"):
        if name not in f:
            raise StoreError(f"{path}: malformed feature store: /{name} is missing")
    n = f["clips/path"].shape[0]
    rows = ["clips/duration", "clips/sample_rate"] + [f"clips/meta/{c}" for c in f.get("clips/meta", {})]
    rows += [f"clips/{c}" for c in ("label", "fold") if f"clips/{c}" in f]
    for layer, group in f["features"].items():
        rows += [f"features/{layer}/{pool}" for pool in group]
    for name in rows:
        if f[name].shape[0] != n:
            raise StoreError(f"{path}: malformed feature store: /{name} has {f[name].shape[0]} rows, /clips/path {n}")
    for layer, group in f.get("frames", {}).items():
        offsets = group["offsets"]
        if offsets.shape[0] != n + 1:
            raise StoreError(
                f"{path}: malformed feature store: /frames/{layer}/offsets has {offsets.shape[0]} rows, "
                f"expected {n + 1}"
            )
        if int(offsets[-1]) != group["data"].shape[0]:
            raise StoreError(
                f"{path}: malformed feature store: /frames/{layer} offsets end at {int(offsets[-1])}, "
                f"data has {group['data'].shape[0]} rows"
            )
    if f["errors/path"].shape != f["errors/message"].shape:
        raise StoreError(f"{path}: malformed feature store: /errors/path and /errors/message differ in length")
    return n


def _check_version(attrs: Mapping[str, Any], path: Path) -> None:
    if "format_version" not in attrs:
        raise StoreError(f"{path}: not a soundnet8 feature store (no format_version attribute)")
    if attrs["format_version"] != FORMAT_VERSION:
        raise StoreError(
            f"{path}: feature store format_version {attrs['format_version']} is not supported "
            f"(this soundnet8 reads version {FORMAT_VERSION})"
        )


def _settings_differences(attrs: Mapping[str, Any], settings: StoreSettings) -> list[str]:
    """Human-readable differences between a store's recorded settings and ``settings``."""
    want = settings.attrs()
    diffs = []
    for key in _SETTINGS_ATTRS:
        have = attrs.get(key)
        if key in ("layers", "pools", "frames", "preprocessing") and isinstance(have, str):
            try:
                have_value = json.loads(have)
            except json.JSONDecodeError:
                have_value = have
            want_value = json.loads(want[key])
            if key == "preprocessing" and isinstance(have_value, dict):
                changed = sorted(k for k in set(have_value) | set(want_value) if have_value.get(k) != want_value.get(k))
                if changed:
                    detail = ", ".join(f"{k}: {have_value.get(k)!r} -> {want_value.get(k)!r}" for k in changed)
                    diffs.append(f"preprocessing ({detail})")
                continue
            if have_value != want_value:
                diffs.append(f"{key} ({have_value} in the store, {want_value} now)")
        elif have != want[key]:
            diffs.append(f"{key} ({have!r} in the store, {want[key]!r} now)")
    return diffs


def _check_settings(attrs: Mapping[str, Any], settings: StoreSettings, path: Path, store: Path) -> None:
    diffs = _settings_differences(attrs, settings)
    if diffs:
        raise StoreError(
            f"{path}: cannot resume: {'; '.join(diffs)} differ from this run's settings; "
            f"use --overwrite to start {store} afresh (this deletes it)"
        )


def _read_class_names(f: h5py.File) -> tuple[str, ...] | None:
    if "classes/name" not in f:
        return None
    return tuple(f["classes/name"].asstr()[()].tolist())


def _read_strings(ds: h5py.Dataset) -> list[str]:
    return ds.asstr()[()].tolist() if ds.shape[0] else []


@dataclass(frozen=True)
class _SegmentHead:
    """What the merge needs to know about a segment before appending it."""

    path: Path
    n_rows: int
    attrs: dict[str, Any]
    meta_kinds: dict[str, _Kind]
    has_label: bool
    has_fold: bool
    class_names: tuple[str, ...] | None


def _segment_head(path: Path) -> _SegmentHead:
    try:
        with h5py.File(path, "r") as f:
            attrs = _read_attrs(f)
            _check_version(attrs, path)
            n = _check_structure(f, path)
            meta = f.get("clips/meta", {})
            return _SegmentHead(
                path,
                n,
                attrs,
                {name: _kind_of_array(meta[name]) for name in meta},
                "clips/label" in f,
                "clips/fold" in f,
                _read_class_names(f),
            )
    except (OSError, StoreError, KeyError, ValueError) as exc:
        # KeyError/ValueError: h5py's answers to broken object headers inside an openable file
        raise _Corrupt(path, str(exc)) from exc


# --------------------------------------------------------------------------------------------
# Consolidation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MergeResult:
    total_rows: int
    total_errors: int


def _accumulate(old: object, new: object) -> object:
    """Join the distinct values of an ACCUMULATED_ATTRS attribute, in order of first use."""
    if new is None or new == "":
        return old
    if old is None or old == "":
        return new
    parts = str(old).split(ATTR_JOIN)
    return old if str(new) in parts else ATTR_JOIN.join([*parts, str(new)])


def _append_1d(ds: h5py.Dataset, values: np.ndarray) -> None:
    if len(values) == 0:
        return
    n0 = ds.shape[0]
    ds.resize(n0 + len(values), axis=0)
    ds[n0:] = values


def _append_matrix(out: h5py.Dataset, src: h5py.Dataset, keep: np.ndarray | None, seg: Path) -> bool:
    """Append src's rows (those in ``keep``) to out; return True when chunks were copied raw."""
    n0, k = out.shape[0], src.shape[0]
    rows = out.chunks[0]
    raw = (
        keep is None
        and k > 0
        and n0 % rows == 0
        and src.chunks == out.chunks
        and src.dtype == out.dtype
        and _Filters.of(src) == _Filters.of(out)
    )
    if raw:
        out.resize(n0 + k, axis=0)
        for start in range(0, k, rows):
            # compressed bytes move verbatim: no decode/encode of the new rows
            try:
                mask, chunk = src.id.read_direct_chunk((start, 0))
            except (OSError, KeyError, ValueError) as exc:
                raise _Corrupt(seg, f"cannot read chunk at row {start} of {src.name}: {exc}") from exc
            out.id.write_direct_chunk((n0 + start, 0), chunk, mask)
        return True
    try:
        data = src[()]
    except OSError as exc:
        raise _Corrupt(seg, f"cannot read {src.name}: {exc}") from exc
    if keep is not None:
        data = data[keep]
    if len(data):
        out.resize(n0 + len(data), axis=0)
        out[n0:] = data
    return False


def _read(ds: h5py.Dataset, seg: Path) -> np.ndarray:
    try:
        if h5py.check_string_dtype(ds.dtype) is not None:
            return ds.asstr()[()] if ds.shape[0] else np.zeros(0, object)
        return ds[()]
    except OSError as exc:
        raise _Corrupt(seg, f"cannot read {ds.name}: {exc}") from exc


class _Merger:
    """One consolidation: STORE.h5 (if any) + finished segments -> STORE.h5.tmp -> STORE.h5."""

    def __init__(
        self,
        files: _StoreFiles,
        heads: Sequence[_SegmentHead],
        *,
        empty_layout: _Layout,
        empty_attrs: Mapping[str, Any],
        class_names: Sequence[str] | None,
    ) -> None:
        self.files = files
        self.heads = list(heads)
        self.empty_layout = empty_layout
        self.empty_attrs = dict(empty_attrs)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.raw_segments = 0  # segments whose feature chunks were copied verbatim

    def run(self) -> _MergeResult:
        tmp = self.files.tmp
        try:
            with h5py.File(tmp, "w", rdcc_nbytes=MERGE_CACHE_BYTES, rdcc_w0=1.0) as out:
                result = self._build(out)
            _publish(tmp, self.files.store)
        except BaseException:
            _unlink(tmp)  # STORE.h5 and the segments are untouched: the merge can be redone
            raise
        for head in self.heads:
            _unlink(head.path)  # their rows are in STORE.h5 now
        if self.heads:
            _fsync(self.files.parts)
        return result

    # -- building the merged file ----------------------------------------------------------

    def _build(self, out: h5py.File) -> _MergeResult:
        store = self.files.store
        if store.exists():
            try:
                old = h5py.File(store, "r")
            except OSError as exc:
                raise StoreError(f"{store}: cannot open the existing store to merge into it: {exc}") from exc
            with old:
                for name in old:
                    if name != "errors":  # rebuilt below from old + new errors
                        old.copy(old[name], out, name=name)  # H5Ocopy: raw chunk copy
                for key, value in old.attrs.items():
                    out.attrs[key] = value
                results = _read_strings(old["clips/path"])
                errors = dict(zip(_read_strings(old["errors/path"]), _read_strings(old["errors/message"])))
        else:
            base = self.heads[0].attrs if self.heads else self.empty_attrs
            layout = self._layout_of(self.heads[0].path) if self.heads else self.empty_layout
            _populate(out, _Columns.empty(layout), layout, {}, None)
            del out["errors"]
            for key, value in base.items():
                out.attrs[key] = value
            results, errors = [], {}
        done = set(results)
        n_rows = len(results)
        self._reconcile_meta(out, n_rows)
        self._reconcile_classes(out)
        datasets = self._open_row_datasets(out)
        for head in self.heads:
            n_rows = self._append_segment(out, datasets, head, done, errors, n_rows)
            for key in ACCUMULATED_ATTRS:
                if key in head.attrs:
                    out.attrs[key] = _accumulate(_attr_value(out.attrs.get(key)), head.attrs[key])
            for key, value in head.attrs.items():
                if key not in ACCUMULATED_ATTRS and key not in ("created", "format_version"):
                    out.attrs[key] = value
        _write_errors(out, list(errors.items()), _Filters.of(out["clips/duration"]))
        out.attrs["updated"] = _now()
        log.debug("%s: appended %d of %d segment(s) as raw chunks", store, self.raw_segments, len(self.heads))
        return _MergeResult(n_rows, len(errors))

    def _layout_of(self, path: Path) -> _Layout:
        try:
            with h5py.File(path, "r") as f:
                return _Layout.of(f)
        except (OSError, KeyError, ValueError) as exc:
            raise _Corrupt(path, str(exc)) from exc

    def _reconcile_meta(self, out: h5py.File, n_rows: int) -> None:
        """Give every meta column its final type before rows are appended (see module docstring).

        The type depends only on which kinds of values (and missing values) the rows hold, so it
        is the same however a run was split.
        """
        meta = out.require_group("clips/meta")
        sources = [{name: _kind_of_array(meta[name]) for name in meta}] if n_rows else []
        sources += [head.meta_kinds for head in self.heads if head.n_rows]  # all-error segments say nothing
        names = list(dict.fromkeys([*meta, *(name for src in sources for name in src)]))
        filters = _Filters.of(out["clips/duration"])
        for name in names:
            kinds = [src[name] for src in sources if name in src]
            final = _merge_kinds(kinds, any(name not in src for src in sources))
            if name not in meta:
                _column(meta, name, _typed_column([None] * n_rows, final), filters)
            elif _kind_of_array(meta[name]) is not final:
                values = _convert_column(meta[name][()], final)
                del meta[name]
                _column(meta, name, values, filters)

    def _reconcile_classes(self, out: h5py.File) -> None:
        have = _read_class_names(out)
        names = [self.class_names] + [h.class_names for h in self.heads]
        for candidate in names:
            if candidate is None:
                continue
            if have is None:
                _strings(out.require_group("classes"), "name", candidate, _Filters.of(out["clips/duration"]))
                have = candidate
            elif tuple(candidate) != have:
                raise StoreError(
                    f"{self.files.store}: class names differ between the store and new rows "
                    f"({len(have)} vs {len(candidate)} classes, first difference "
                    f"{next(((a, b) for a, b in zip(have, candidate) if a != b), None)}); "
                    "use --overwrite to start afresh"
                )

    def _open_row_datasets(self, out: h5py.File) -> dict[str, h5py.Dataset]:
        # kept open for the whole merge so each dataset's chunk cache holds its partial tail chunk
        names = ["clips/path", "clips/duration", "clips/sample_rate"]
        names += [f"clips/{c}" for c in ("label", "fold") if f"clips/{c}" in out]
        names += [f"clips/meta/{c}" for c in out["clips/meta"]]
        names += [f"features/{layer}/{pool}" for layer in out["features"] for pool in out["features"][layer]]
        for layer in out.get("frames", {}):
            names += [f"frames/{layer}/data", f"frames/{layer}/offsets"]
        return {name: out[name] for name in names}

    def _optional_column(self, out, datasets, name: str, seg_has: bool, head: _SegmentHead, n_rows: int) -> bool:
        """Reconcile /clips/label or /clips/fold presence; return whether to append the segment's."""
        key = f"clips/{name}"
        out_has = key in datasets
        if out_has == seg_has or head.n_rows == 0:
            return out_has and seg_has
        if n_rows == 0:  # nothing stored yet: the first rows decide
            if seg_has:
                datasets[key] = _column(out["clips"], name, np.zeros(0, np.int64), _Filters.of(out["clips/duration"]))
            else:
                del datasets[key]
                del out[key]
            return seg_has
        raise StoreError(
            f"{head.path}: its clips {'have' if seg_has else 'have no'} {name}s but those in "
            f"{self.files.store} {'have none' if seg_has else 'have them'}; resume with the same "
            "labels/folds or use --overwrite"
        )

    def _append_segment(
        self, out, datasets, head: _SegmentHead, done: set[str], errors: dict[str, str], n_rows: int
    ) -> int:
        """Append one segment's new rows; ``done`` and ``errors`` track paths merged so far."""
        seg = head.path
        try:
            src = h5py.File(seg, "r")
        except OSError as exc:
            raise _Corrupt(seg, str(exc)) from exc
        with src:
            paths = [str(p) for p in _read(src["clips/path"], seg)]
            keep_list = []
            for p in paths:
                fresh = p not in done
                keep_list.append(fresh)
                if fresh:
                    done.add(p)
                    errors.pop(p, None)  # a new row replaces the error row of a retried path
            keep = None if all(keep_list) else np.array(keep_list, dtype=bool)
            if keep is not None:
                log.info("%s: %d rows already merged (left by an interrupted consolidation)", seg, int((~keep).sum()))
            for p, m in zip(_read(src["errors/path"], seg), _read(src["errors/message"], seg)):
                if str(p) in done:
                    continue
                errors.pop(str(p), None)
                errors[str(p)] = str(m)  # the newest message, at the end

            def rows(values: np.ndarray) -> np.ndarray:
                return values if keep is None else values[keep]

            _append_1d(datasets["clips/path"], rows(np.array(paths, dtype=object)))
            for name in ("duration", "sample_rate"):
                _append_1d(datasets[f"clips/{name}"], rows(_read(src[f"clips/{name}"], seg)))
            for name, has in (("label", head.has_label), ("fold", head.has_fold)):
                if self._optional_column(out, datasets, name, has, head, n_rows):
                    _append_1d(datasets[f"clips/{name}"], rows(_read(src[f"clips/{name}"], seg)))
            for key in [k for k in datasets if k.startswith("clips/meta/")]:
                ds = datasets[key]
                if key in src and head.n_rows:
                    values = _convert_column(_read(src[key], seg), _kind_of_array(ds))
                else:
                    values = _typed_column([None] * head.n_rows, _kind_of_array(ds))
                _append_1d(ds, rows(values))
            seg_features = {f"features/{layer}/{pool}" for layer in src["features"] for pool in src["features"][layer]}
            out_features = {k for k in datasets if k.startswith("features/")}
            if seg_features != out_features:
                raise StoreError(
                    f"{seg}: features {sorted(seg_features)} differ from the store's {sorted(out_features)}; "
                    "use --overwrite to start afresh"
                )
            raw = [_append_matrix(datasets[key], src[key], keep, seg) for key in sorted(out_features)]
            self.raw_segments += bool(raw) and all(raw)
            for layer in out.get("frames", {}):
                self._append_frames(datasets, src, layer, keep, seg)
        return n_rows + (len(paths) if keep is None else int(keep.sum()))

    def _append_frames(self, datasets, src: h5py.File, layer: str, keep: np.ndarray | None, seg: Path) -> None:
        if f"frames/{layer}" not in src:
            raise StoreError(f"{seg}: frames of {layer} are missing; use --overwrite to start afresh")
        data = datasets[f"frames/{layer}/data"]
        offsets_out = datasets[f"frames/{layer}/offsets"]
        offsets = _read(src[f"frames/{layer}/offsets"], seg)
        values = _read(src[f"frames/{layer}/data"], seg)
        if keep is not None:
            pieces = [values[offsets[i] : offsets[i + 1]] for i in np.flatnonzero(keep)]
            lengths = np.array([len(p) for p in pieces], dtype=np.int64)
            values = np.concatenate(pieces) if pieces else values[:0]
        else:
            lengths = np.diff(offsets)
        base = data.shape[0]
        if len(values):
            data.resize(base + len(values), axis=0)
            data[base:] = values
        _append_1d(offsets_out, base + np.cumsum(lengths))


def _consolidate(
    files: _StoreFiles,
    *,
    settings: StoreSettings | None,
    empty_layout: _Layout,
    empty_attrs: Mapping[str, Any],
    class_names: Sequence[str] | None,
) -> _MergeResult:
    """Merge the finished segments into STORE.h5, discarding unreadable segments (with a warning).

    Caller holds the lock. With no segments and no store, writes an empty store.
    """
    discarded: set[Path] = set()
    while True:
        heads = []
        for path in files.segments():
            try:
                head = _segment_head(path)
            except _Corrupt as bad:
                _discard(bad)
                continue
            if settings is not None:
                _check_settings(head.attrs, settings, path, files.store)
            heads.append(head)
        try:
            return _Merger(
                files, heads, empty_layout=empty_layout, empty_attrs=empty_attrs, class_names=class_names
            ).run()
        except _Corrupt as bad:
            if bad.path in discarded:  # pragma: no cover - a discarded file cannot come back
                raise StoreError(str(bad)) from bad
            discarded.add(bad.path)
            _discard(bad)  # and redo the merge without it


def _discard(bad: _Corrupt) -> None:
    log.warning(
        "discarding unreadable segment %s (%s); its clips will be processed again", bad.path, bad.reason
    )
    _unlink(bad.path)


# --------------------------------------------------------------------------------------------
# Resume bookkeeping
# --------------------------------------------------------------------------------------------


def _paths_of(path: Path, include_errors: bool) -> list[str]:
    with h5py.File(path, "r") as f:
        _check_version(_read_attrs(f), path)
        found = _read_strings(f["clips/path"])
        if include_errors:
            found += _read_strings(f["errors/path"])
        return found


def done_paths(store_path: str | os.PathLike, *, include_errors: bool = True) -> set[str]:
    """Paths already recorded in STORE.h5 and its finished segments (errors included by default).

    Needs no lock. Segments are read before the store: a concurrent consolidation only deletes
    segments after their rows are in the new store, so no finished row is missed. Unreadable
    segments are skipped (their clips will be processed again).
    """
    files = _StoreFiles(Path(store_path))
    found: set[str] = set()
    for seg in files.segments():
        try:
            found.update(_paths_of(seg, include_errors))
        except FileNotFoundError:
            continue  # merged and deleted meanwhile: its rows are in the store read next
        except (OSError, KeyError, StoreError) as exc:
            log.debug("skipping unreadable segment %s: %s", seg, exc)
    if files.store.exists():
        try:
            found.update(_paths_of(files.store, include_errors))
        except (OSError, KeyError) as exc:
            raise StoreError(f"{files.store}: cannot read the feature store: {exc}") from exc
    return found


# --------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """A validated ClipResult, its arrays copied (the caller may reuse its buffers)."""

    path: str
    duration: float
    sample_rate: int
    meta: Mapping[str, object]
    features: Mapping[tuple[str, str], np.ndarray]
    frames: Mapping[str, np.ndarray]
    label: int | None
    fold: int | None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.features.values()) + sum(a.nbytes for a in self.frames.values())


@dataclass
class _Buffer:
    """Rows of the segment being built (kept in memory until the segment is written)."""

    results: list[_Row] = field(default_factory=list)
    errors: list[ClipError] = field(default_factory=list)
    nbytes: int = 0

    def __len__(self) -> int:
        return len(self.results) + len(self.errors)


def _normalise_run_attrs(run_attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"soundnet8_version": _package_version(), "provider": "", "onnxruntime_version": ""}
    for key, value in (run_attrs or {}).items():
        if key in _SETTINGS_ATTRS or key in ("format_version", "created", "updated", "compression"):
            raise StoreError(f"run attribute {key!r} is reserved (it is set from the store settings)")
        if isinstance(value, (str, bool, int, float, np.generic)):
            attrs[key] = value
        else:
            attrs[key] = _canonical_json(value, f"run attribute {key!r}")
    return attrs


class StoreWriter:
    """Writes one run's results into a store, crash-safely and resumably (see module docstring).

    Usage::

        with StoreWriter(path, settings, run_attrs={...}) as writer:
            for item in inputs:
                if item.path in writer.done: continue
                writer.add(result_or_error)
        summary = writer.summary

    Opening takes the store's lock, removes stale temporary files, checks that an existing store
    (and any segments left by a killed run) match ``settings``, and merges those segments. Rows
    are buffered and written as a segment every ``segment_rows`` clips (aligned to multiples of
    it in the store, which lets consolidation copy compressed chunks verbatim) or
    SEGMENT_MAX_BYTES. ``close()`` writes the last segment and consolidates. Not thread-safe:
    call ``add`` from one thread.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        settings: StoreSettings,
        *,
        run_attrs: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        overwrite: bool = False,
        retry_errors: bool = False,
        segment_rows: int = DEFAULT_SEGMENT_ROWS,
    ) -> None:
        if int(segment_rows) < 1:
            raise StoreError(f"segment_rows must be >= 1, not {segment_rows}")
        self.path = Path(path)
        self.settings = settings
        self.segment_rows = int(segment_rows)
        self._files = _StoreFiles(self.path)
        self._run_attrs = _normalise_run_attrs(run_attrs)
        self._class_names = None if class_names is None else tuple(_check_text(c, "class name") for c in class_names)
        self._started = _now()
        self._run_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}"
        self._k = 0
        self._buffer = _Buffer()
        self._added: set[str] = set()
        self._rows_added = 0
        self._errors_added = 0
        self._summary: StoreSummary | None = None
        self._lock: _Lock | None = _Lock(self._files)
        try:
            self._open(overwrite=overwrite, retry_errors=retry_errors)
        except BaseException:
            self._release()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _attrs(self) -> dict[str, Any]:
        attrs = {"format_version": FORMAT_VERSION, **self._run_attrs, **self.settings.attrs()}
        attrs["compression"] = self._layout_compression
        attrs["created"] = self._started
        attrs["updated"] = _now()
        return attrs

    def _open(self, *, overwrite: bool, retry_errors: bool) -> None:
        files = self._files
        if overwrite:
            _unlink(files.store)
            if files.parts.exists():
                shutil.rmtree(files.parts)
        for stale in files.stale_tmps():
            log.info("removing %s left by an interrupted run", stale)
            _unlink(stale)
        if files.store.exists():
            self._inspect_store()  # fail on an incompatible store before touching segments
        self._layout = _Layout.for_settings(self.settings)
        self._layout_compression = self.settings.compression.value
        if files.segments():
            log.info("%s: merging %d segment(s) left by an interrupted run", files.store, len(files.segments()))
            _consolidate(
                files,
                settings=self.settings,
                empty_layout=self._layout,
                empty_attrs=self._attrs(),
                class_names=self._class_names,
            )
        self._has_label: bool | None = None
        self._has_fold: bool | None = None
        self._n_base = 0
        done: set[str] = set()
        if files.store.exists():
            with self._open_store() as f:
                self._n_base = f["clips/path"].shape[0]
                self._layout = _Layout.of(f)  # keep the store's chunks and filters (raw appends)
                self._layout_compression = _attr_value(f.attrs.get("compression", self._layout_compression))
                if self._layout_compression != self.settings.compression.value:
                    log.info("%s: keeping the store's %s compression", files.store, self._layout_compression)
                stored = self._layout.features.keys()
                if set(stored) != set(self.settings.feature_keys):
                    raise StoreError(
                        f"{files.store}: its feature datasets {sorted(stored)} do not match its "
                        "layers/pools attributes"
                    )
                if self._n_base:
                    self._has_label = "clips/label" in f
                    self._has_fold = "clips/fold" in f
                self._store_classes = _read_class_names(f)
                done.update(_read_strings(f["clips/path"]))
                if not retry_errors:
                    done.update(_read_strings(f["errors/path"]))
        else:
            self._store_classes = None
        self._classes = self._class_names if self._class_names is not None else self._store_classes
        self.done: frozenset[str] = frozenset(done)

    @contextmanager
    def _open_store(self) -> Iterator[h5py.File]:
        try:
            f = h5py.File(self._files.store, "r")
        except OSError as exc:
            raise StoreError(
                f"{self._files.store}: cannot open the existing store ({exc}); use --overwrite to start afresh"
            ) from exc
        with f:
            yield f

    def _inspect_store(self) -> None:
        with self._open_store() as f:
            attrs = _read_attrs(f)
            if "format_version" not in attrs:
                raise StoreError(
                    f"{self._files.store}: exists but is not a soundnet8 feature store; "
                    "choose another output or use --overwrite to replace it"
                )
            _check_version(attrs, self._files.store)
            _check_structure(f, self._files.store)
            _check_settings(attrs, self.settings, self._files.store, self._files.store)
            stored = _read_class_names(f)
            if stored is not None and self._class_names is not None and stored != self._class_names:
                raise StoreError(
                    f"{self._files.store}: cannot resume: class names differ from the store's "
                    f"({len(stored)} in the store, {len(self._class_names)} now); use --overwrite to start afresh"
                )

    # -- adding rows -----------------------------------------------------------------------

    def add(self, result: ClipResult | ClipError) -> None:
        """Buffer one clip's result (or failure); finishes a segment when the budget is reached."""
        if self._summary is not None or self._lock is None:
            raise StoreError(f"{self.path}: the writer is closed")
        path = _check_text(result.path, "clip path")
        if path in self.done or path in self._added:
            raise StoreError(f"{self.path}: {path!r} is already in the store; skip paths in writer.done")
        if isinstance(result, ClipError):
            self._buffer.errors.append(ClipError(path, _clean_message(result.message)))
            self._added.add(path)
            self._errors_added += 1
            if len(self._buffer.errors) >= self.segment_rows:
                self._flush()  # a long run of failures still reaches disk
            return
        if not isinstance(result, ClipResult):
            raise StoreError(f"{self.path}: add() takes a ClipResult or ClipError, not {type(result).__name__}")
        row = self._validate(result)
        self._has_label = row.label is not None
        self._has_fold = row.fold is not None
        self._buffer.results.append(row)
        self._buffer.nbytes += row.nbytes
        self._added.add(path)
        self._rows_added += 1
        # boundaries at multiples of segment_rows in the store's row numbering keep the segments'
        # chunk grids aligned with the store's, so consolidation copies their chunks raw
        at_boundary = (self._n_base + self._rows_added) % self.segment_rows == 0
        if at_boundary or self._buffer.nbytes >= SEGMENT_MAX_BYTES:
            self._flush()

    def _validate(self, r: ClipResult) -> _Row:
        where = f"{self.path}: clip {r.path!r}"
        features: dict[tuple[str, str], np.ndarray] = {}
        for (layer, pool), value in r.features.items():
            key = (layer, Pool(pool).value if pool in _POOL_ORDER else str(pool))
            spec = self._layout.features.get(key)
            if spec is None:
                raise StoreError(f"{where}: feature {key} is not one of the store's {list(self._layout.features)}")
            array = np.array(value, dtype=np.float32)  # a copy
            if array.shape != (spec.channels,):
                raise StoreError(
                    f"{where}: feature {layer}/{pool} has shape {array.shape}, expected ({spec.channels},)"
                )
            features[key] = array
        if len(features) != len(self._layout.features):
            missing = sorted(set(self._layout.features) - set(features))
            raise StoreError(f"{where}: features {missing} are missing")
        frames: dict[str, np.ndarray] = {}
        if self.settings.frames:
            if r.frames is None or set(r.frames) != set(self._layout.frames):
                raise StoreError(f"{where}: frames of layers {list(self._layout.frames)} are required")
            for layer, value in r.frames.items():
                array = np.array(value, dtype=np.float32)
                c = self._layout.frames[layer].channels
                if array.ndim != 2 or array.shape[1] != c:
                    raise StoreError(f"{where}: frames of {layer} have shape {array.shape}, expected (T, {c})")
                frames[layer] = array
        elif r.frames is not None:
            raise StoreError(f"{where}: frames given but the store was configured without frames")
        meta: dict[str, object] = {}
        for name, value in r.meta.items():
            _check_text(name, "meta column name")
            if "/" in name or name in (".", ""):
                raise StoreError(f"{where}: meta column name {name!r} cannot be an HDF5 name")
            _value_kind(value, f"{where}: meta column {name!r}")
            if isinstance(value, str):
                _check_text(value, f"meta {name!r} value")
            meta[name] = _meta_value(value)
        self._check_optional(r.label, self._has_label, "label", where)
        self._check_optional(r.fold, self._has_fold, "fold", where)
        if r.label is not None:
            k = len(self._classes) if self._classes is not None else None
            if int(r.label) < 0 or (k is not None and int(r.label) >= k):
                raise StoreError(f"{where}: label {r.label} is outside 0..{(k - 1) if k else 'K-1'}")
        try:
            sample_rate, duration = int(r.sample_rate), float(r.duration)
        except (TypeError, ValueError):
            raise StoreError(
                f"{where}: duration {r.duration!r} / sample_rate {r.sample_rate!r} are not numbers"
            ) from None
        if sample_rate < 0:
            raise StoreError(f"{where}: sample_rate {r.sample_rate!r} is negative")
        return _Row(
            r.path,
            duration,
            sample_rate,
            meta,
            features,
            frames,
            None if r.label is None else int(r.label),
            None if r.fold is None else int(r.fold),
        )

    @staticmethod
    def _check_optional(value: int | None, state: bool | None, name: str, where: str) -> None:
        has = value is not None
        if state is not None and has != state:
            raise StoreError(
                f"{where}: {'has' if has else 'has no'} {name}, but the store's clips "
                f"{'have' if state else 'have no'} {name}s; a store has them for every clip or none"
            )

    def _columns(self) -> _Columns:
        results = self._buffer.results
        n = len(results)
        meta = {}
        for name in dict.fromkeys(name for r in results for name in r.meta):
            values = [r.meta.get(name) for r in results]
            kinds = [k for k in (_value_kind(v, name) for v in values) if k is not None]
            meta[name] = _typed_column(values, _merge_kinds(kinds, any(v is None for v in values)))
        features = {}
        for key, spec in self._layout.features.items():
            stack = np.empty((n, spec.channels), np.float32)
            for i, r in enumerate(results):
                stack[i] = r.features[key]
            features[key] = stack
        frames = {}
        for layer, spec in self._layout.frames.items():
            pieces = [r.frames[layer] for r in results]
            offsets = np.zeros(n + 1, np.int64)
            offsets[1:] = np.cumsum([len(p) for p in pieces])
            data = np.concatenate(pieces) if pieces else np.zeros((0, spec.channels), np.float32)
            frames[layer] = (data, offsets)
        return _Columns(
            [r.path for r in results],
            np.array([r.duration for r in results], np.float64),
            np.array([r.sample_rate for r in results], np.int32),
            meta,
            np.array([r.label for r in results], np.int64) if n and results[0].label is not None else None,
            np.array([r.fold for r in results], np.int64) if n and results[0].fold is not None else None,
            features,
            frames,
            [(e.path, e.message) for e in self._buffer.errors],
        )

    def _flush(self) -> None:
        """Write the buffered rows as a finished segment (tmp file, fsync, rename)."""
        if not len(self._buffer):
            return
        cols = self._columns()
        self._files.parts.mkdir(parents=True, exist_ok=True)
        name = f"{SEGMENT_PREFIX}{self._run_id}-{self._k:06d}{SEGMENT_SUFFIX}"
        final = self._files.parts / name
        tmp = final.with_name(name + TMP_SUFFIX)
        _write_file(tmp, cols, self._layout, self._attrs(), self._classes)
        _publish(tmp, final)
        log.debug("%s: wrote segment %s (%d rows, %d errors)", self.path, final.name, len(cols.paths), len(cols.errors))
        self._k += 1
        self._buffer = _Buffer()

    # -- finishing -------------------------------------------------------------------------

    def _consolidate(self) -> _MergeResult | None:
        files = self._files
        if not files.segments() and files.store.exists():
            return None  # nothing new: leave the store (and its 'updated') alone
        log.info("%s: consolidating %d segment(s)", files.store, len(files.segments()))
        return _consolidate(
            files,
            settings=self.settings,
            empty_layout=self._layout,
            empty_attrs=self._attrs(),
            class_names=self._classes,
        )

    def close(self) -> StoreSummary:
        """Write the last segment, consolidate, release the lock; returns (and keeps) the summary."""
        if self._summary is not None:
            return self._summary
        try:
            self._flush()
            self._consolidate()
            with self._open_store() as f:
                total_rows, total_errors = f["clips/path"].shape[0], f["errors/path"].shape[0]
            self._summary = StoreSummary(self.path, self._rows_added, self._errors_added, total_rows, total_errors)
        finally:
            self._release()
        return self._summary

    @property
    def summary(self) -> StoreSummary | None:
        return self._summary

    def _release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
            return False
        if self._lock is None:
            return False
        # Keep what was computed: write the buffered rows and merge them; if that fails too, the
        # segments stay on disk for the next run, and the original exception still propagates.
        try:
            self._flush()
            self._consolidate()
        except BaseException as err:
            log.warning("%s: could not finish the store after %s: %s", self.path, exc_type.__name__, err)
            if exc is not None and hasattr(exc, "add_note"):
                exc.add_note(f"{self.path}: finishing the store also failed: {err!r}; re-run to resume")
        finally:
            self._release()
        return False


# --------------------------------------------------------------------------------------------
# One-shot writing and in-place updates
# --------------------------------------------------------------------------------------------


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
    files = _StoreFiles(target)
    n = len(paths)
    path_list = [_check_text(p, "clip path") for p in paths]
    if len(set(path_list)) != n:
        raise StoreError(f"{target}: paths contain duplicates")
    if not features:
        raise StoreError(f"{target}: no features given")
    known = [o for o in OUTPUTS if o in features]
    layers = known + [layer for layer in features if layer not in OUTPUTS]
    feature_arrays: dict[tuple[str, str], np.ndarray] = {}
    channels: dict[tuple[str, str], int] = {}
    pools_seen: set[str] = set()
    for layer in layers:
        if not layer or "/" in layer:
            raise StoreError(f"{target}: layer name {layer!r} cannot be an HDF5 name")
        by_pool = features[layer]
        layer_c = None
        for pool in sorted(by_pool, key=lambda p: _POOL_ORDER.index(Pool(p).value)):
            array = np.asarray(by_pool[pool], dtype=np.float32)
            if array.ndim != 2 or array.shape[0] != n or (layer_c is not None and array.shape[1] != layer_c):
                raise StoreError(f"{target}: features[{layer!r}][{pool!r}] has shape {array.shape}, expected ({n}, C)")
            layer_c = array.shape[1]
            key = (layer, Pool(pool).value)
            feature_arrays[key] = array
            channels[key] = layer_c
            pools_seen.add(key[1])
    frame_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer, (data, offsets) in (frames or {}).items():
        data = np.asarray(data, np.float32)
        offsets = np.asarray(offsets, np.int64)
        well_formed = data.ndim == 2 and offsets.shape == (n + 1,)
        if not well_formed or offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) < 0):
            raise StoreError(
                f"{target}: frames[{layer!r}] need (F, C) data and {n + 1} non-decreasing offsets from 0 to F"
            )
        frame_arrays[layer] = (data, offsets)
    layout = _Layout.for_channels(channels, {k: v[0].shape[1] for k, v in frame_arrays.items()}, compression)

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
    meta_arrays = {}
    for name, values in (meta or {}).items():
        if not name or "/" in name:
            raise StoreError(f"{target}: meta column name {name!r} cannot be an HDF5 name")
        values = [_meta_value(v) for v in values]
        if len(values) != n:
            raise StoreError(f"{target}: meta column {name!r} has {len(values)} values, expected {n}")
        kinds = [k for k in (_value_kind(v, f"{target}: meta {name!r}") for v in values) if k is not None]
        meta_arrays[name] = _typed_column(values, _merge_kinds(kinds, any(v is None for v in values)))
    cols = _Columns(
        path_list,
        column(durations, np.float64, "durations", np.nan),
        column(sample_rates, np.int32, "sample_rates", 0),
        meta_arrays,
        label_array,
        None if folds is None else column(folds, np.int64, "folds", 0),
        feature_arrays,
        frame_arrays,
        [(_check_text(p, "error path"), _clean_message(m)) for p, m in (errors or [])],
    )
    root: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "soundnet8_version": _package_version(),
        "weights_sha256": "",
        "onnx_sha256": "",
        "provider": "",
        "onnxruntime_version": "",
        "preprocessing": "{}",
        "layers": json.dumps(layers),
        "pools": json.dumps([p for p in _POOL_ORDER if p in pools_seen]),
        "frames": json.dumps([layer for layer in layers if layer in frame_arrays]),
        "compression": Compression(compression).value,
        "created": _now(),
        "updated": _now(),
    }
    for key, value in (attrs or {}).items():
        if key == "format_version":
            raise StoreError(f"{target}: format_version is set by soundnet8")
        if isinstance(value, (Mapping, list, tuple)):
            value = _canonical_json(value if not isinstance(value, tuple) else list(value), f"attribute {key!r}")
        root[key] = value
    lock = _Lock(files)
    try:
        tmp = files.private_tmp()
        names = None if class_names is None else [_check_text(c, "class name") for c in class_names]
        _write_file(tmp, cols, layout, root, names)
        try:
            _publish(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise
        if files.parts.exists():
            shutil.rmtree(files.parts)
    finally:
        lock.release()
    return target


@contextmanager
def update_store(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Modify a store crash-safely: yields a writable copy that replaces the store on success.

    For tools that add derived results (``/stats``, ``/analysis``): the copy is made with raw
    chunk copies, edited, fsync'd and renamed over the store; an exception or a kill leaves the
    store as it was. Holds the store's lock, so it fails fast while an extract is writing.
    """
    files = _StoreFiles(Path(path))
    if not files.store.exists():
        raise StoreError(f"{files.store}: no such feature store")
    lock = _Lock(files)
    tmp = files.private_tmp()
    try:
        try:
            old = h5py.File(files.store, "r")
        except OSError as exc:
            raise StoreError(f"{files.store}: not a readable feature store ({exc})") from exc
        with old:
            _check_version(_read_attrs(old), files.store)
            with h5py.File(tmp, "w") as new:
                for name in old:
                    old.copy(old[name], new, name=name)  # raw chunk copy; also drops freed space
                for key, value in old.attrs.items():
                    new.attrs[key] = value
        with h5py.File(tmp, "r+") as new:
            yield new
            new.attrs["updated"] = _now()
        _publish(tmp, files.store)
    except BaseException:
        _unlink(tmp)
        raise
    finally:
        lock.release()


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------

_JSON_ATTRS = ("preprocessing", "layers", "pools", "frames")


def _take_rows(ds: h5py.Dataset, idx: np.ndarray) -> np.ndarray:
    """ds[idx] for any int indices, reading sorted contiguous blocks (h5py fancy indexing is slow)."""
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    out = np.empty((len(idx),) + ds.shape[1:], ds.dtype)
    window = (ds.chunks[0] if ds.chunks else 1024) * 16
    start = 0
    while start < len(sidx):
        lo = int(sidx[start])
        end = int(np.searchsorted(sidx, lo + window, side="left"))
        block = ds[lo : int(sidx[end - 1]) + 1]
        out[order[start:end]] = block[sidx[start:end] - lo]
        start = end
    return out


class FeatureStore:
    """Read-only access to a feature store; users never need h5py.

    ``with FeatureStore("esc50.h5") as store: X = store.features("pool5")``. Arrays are read on
    demand; ``dataset()`` gives the chunked h5py dataset for out-of-core work (valid while open).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such feature store")
        try:
            self._f = h5py.File(self.path, "r", rdcc_nbytes=READ_CACHE_BYTES)
        except OSError as exc:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        try:
            self._attrs = _read_attrs(self._f)
            _check_version(self._attrs, self.path)
            for name in ("clips/path", "features"):
                if name not in self._f:
                    raise StoreError(f"{self.path}: malformed feature store: /{name} is missing")
        except BaseException:
            self._f.close()
            raise
        self._paths: np.ndarray | None = None
        self._rows: dict[str, int] | None = None

    # -- basics ----------------------------------------------------------------------------

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, n_clips={self.n_clips}, layers={list(self.layers)})"

    @property
    def n_clips(self) -> int:
        return int(self._f["clips/path"].shape[0])

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes, JSON ones (preprocessing, layers, pools) decoded."""
        decoded = dict(self._attrs)
        for key in _JSON_ATTRS:
            if isinstance(decoded.get(key), str):
                decoded[key] = json.loads(decoded[key])
        return decoded

    @property
    def layers(self) -> tuple[str, ...]:
        present = list(self._f["features"])
        listed = self.attrs.get("layers")
        order = [layer for layer in listed if layer in present] if isinstance(listed, list) else []
        return tuple(order + sorted(layer for layer in present if layer not in order))

    def pools(self, layer: str) -> tuple[str, ...]:
        group = self._group("features", layer)
        return tuple(p for p in _POOL_ORDER if p in group) + tuple(sorted(p for p in group if p not in _POOL_ORDER))

    def _group(self, kind: str, layer: str) -> h5py.Group:
        key = f"{kind}/{layer}"
        if key not in self._f:
            have = list(self._f[kind]) if kind in self._f else []
            raise StoreError(f"{self.path}: no {kind} for layer {layer!r}; the store has {kind} for {have}")
        return self._f[key]

    # -- features and frames ---------------------------------------------------------------

    def dataset(self, layer: str, pool: str = "mean") -> h5py.Dataset:
        group = self._group("features", layer)
        if pool not in group:
            raise StoreError(f"{self.path}: no {pool!r} pool of layer {layer!r}; it has {list(self.pools(layer))}")
        return group[pool]

    def features(self, layer: str, pool: str = "mean", rows=None) -> np.ndarray:
        """(N, C) float32, or the selected rows (a slice, int indices in any order, or a bool mask)."""
        ds = self.dataset(layer, pool)
        if rows is None:
            return ds[()]
        if isinstance(rows, slice):
            return ds[rows]
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (self.n_clips,):
                raise StoreError(f"{self.path}: a row mask must have {self.n_clips} entries, not {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise StoreError(f"{self.path}: rows must be a slice, 1-D integer indices or a bool mask")
        idx = idx.astype(np.int64)
        n = self.n_clips
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise StoreError(f"{self.path}: row index out of range for {n} clips")
        return _take_rows(ds, np.where(idx < 0, idx + n, idx))

    def frames(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(data (F, C) float32, offsets (N+1,) int64); clip i is data[offsets[i]:offsets[i+1]]."""
        group = self._group("frames", layer)
        return group["data"][()], group["offsets"][()]

    def frames_of(self, layer: str, i: int) -> np.ndarray:
        """(T, C) frames of clip ``i``."""
        group = self._group("frames", layer)
        if not -self.n_clips <= i < self.n_clips:
            raise StoreError(f"{self.path}: clip index {i} out of range for {self.n_clips} clips")
        i = i % self.n_clips
        lo, hi = group["offsets"][i : i + 2]
        return group["data"][int(lo) : int(hi)]

    # -- clips -----------------------------------------------------------------------------

    @property
    def paths(self) -> np.ndarray:
        """(N,) object array of str."""
        if self._paths is None:
            ds = self._f["clips/path"]
            self._paths = ds.asstr()[()] if ds.shape[0] else np.zeros(0, object)
        return self._paths

    def row_of(self, path: str) -> int:
        if self._rows is None:
            self._rows = {p: i for i, p in enumerate(self.paths)}
        try:
            return self._rows[path]
        except KeyError:
            raise StoreError(f"{self.path}: {path!r} is not in the store") from None

    @property
    def durations(self) -> np.ndarray:
        return self._f["clips/duration"][()]

    @property
    def sample_rates(self) -> np.ndarray:
        return self._f["clips/sample_rate"][()]

    @property
    def labels(self) -> np.ndarray | None:
        return self._f["clips/label"][()] if "clips/label" in self._f else None

    @property
    def folds(self) -> np.ndarray | None:
        return self._f["clips/fold"][()] if "clips/fold" in self._f else None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return _read_class_names(self._f)

    @property
    def meta_columns(self) -> tuple[str, ...]:
        return tuple(self._f["clips/meta"]) if "clips/meta" in self._f else ()

    def meta(self, column: str) -> np.ndarray:
        key = f"clips/meta/{column}"
        if key not in self._f:
            raise StoreError(f"{self.path}: no meta column {column!r}; the columns are {list(self.meta_columns)}")
        ds = self._f[key]
        if h5py.check_string_dtype(ds.dtype) is not None:
            return ds.asstr()[()] if ds.shape[0] else np.zeros(0, object)
        return ds[()]

    @property
    def errors(self) -> list[tuple[str, str]]:
        if "errors/path" not in self._f:
            return []
        return list(zip(_read_strings(self._f["errors/path"]), _read_strings(self._f["errors/message"])))
