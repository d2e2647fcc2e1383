"""Read-only access to a feature store: ``FeatureStore``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from ..request import POOL_ORDER
from .schema import JSON_ATTRS, FrameTiming, check_version, read_attrs, read_class_names, read_strings

# audio.SampleRateMode.NATIVE's value, as recorded in the store; spelled here so that reading a
# store never loads the audio stack (soundfile, soxr)
NATIVE_RATE_MODE = "native"

READ_CACHE_BYTES = 16 << 20  # per-dataset chunk cache of the reader


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


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field-wise is ambiguous
class FrameBlock:
    """Frames of one layer for every clip, with their times; unpacks as ``data, offsets, times``.

    ``data`` (F, C) float32; ``offsets`` (N+1,) int64, clip i is rows offsets[i]:offsets[i+1];
    ``times`` (F,) float64, each row's frame centre in seconds from its clip's start (see
    :meth:`FeatureStore.frame_times` for what times before 0 or after the clip's duration mean).
    """

    data: np.ndarray
    offsets: np.ndarray
    times: np.ndarray

    def __iter__(self):
        return iter((self.data, self.offsets, self.times))

    def clip(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames (T, C), times (T,)) of clip ``i``."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.data[lo:hi], self.times[lo:hi]


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
            self._attrs = read_attrs(self._f)
            check_version(self._attrs, self.path)
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
        for key in JSON_ATTRS:
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
        return tuple(p for p in POOL_ORDER if p in group) + tuple(sorted(p for p in group if p not in POOL_ORDER))

    @property
    def frame_layers(self) -> tuple[str, ...]:
        """Layers stored frame by frame: the recorded ``attrs["frames"]`` in their order (then any
        other /frames group, sorted), those present in the file."""
        present = list(self._f["frames"]) if "frames" in self._f else []
        listed = self.attrs.get("frames")
        order = [layer for layer in listed if layer in present] if isinstance(listed, list) else []
        return tuple(order + sorted(layer for layer in present if layer not in order))

    def group(self, name: str) -> h5py.Group | None:
        """The h5py group at ``name`` (e.g. a derived "stats/pool5/mean"), read-only, valid while
        the store is open; None when the store has none."""
        if name not in self._f:
            return None
        obj = self._f[name]
        if not isinstance(obj, h5py.Group):
            raise StoreError(f"{self.path}: /{name} is a dataset, not a group")
        return obj

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

    def frame_timing(self, layer: str) -> FrameTiming:
        """When ``layer``'s frames are centred: recorded on /frames/<layer>, or, in stores written
        before that, from the layer arithmetic (the same values)."""
        group = self._group("frames", layer)
        timing = FrameTiming.from_attrs(group.attrs) or FrameTiming.of_layer(layer)
        if timing is None:
            raise StoreError(f"{self.path}: /frames/{layer} records no timing and {layer!r} is not a SoundNet layer")
        return timing

    def _input_rates(self, timing: FrameTiming, rows: slice) -> np.ndarray:
        """Samples per second of the model input of the clips ``rows``."""
        rates = np.full(len(range(*rows.indices(self.n_clips))), float(timing.sample_rate))
        preprocessing = self.attrs.get("preprocessing")
        if isinstance(preprocessing, dict) and preprocessing.get("sample_rate_mode") == NATIVE_RATE_MODE:
            native = self._f["clips/sample_rate"][rows].astype(np.float64)  # files fed at their own rate
            rates = np.where(native > 0, native, rates)
        return rates

    def frame_times(self, layer: str, i: int) -> np.ndarray:
        """(T,) float64: seconds from clip ``i``'s start to the centre of each of its frames.

        Frame j is centred on model-input sample ``first_centre + j * hop`` (:meth:`frame_timing`)
        over the input's rate (22,050 Hz; a native-rate store's clip: its file's rate). The model
        input starts with the clip, so these are times in the clip's audio, with two cases:
        a time below 0 is a frame centred in the model's left zero padding (its receptive field
        still covers the clip's start); a time at or after the clip's duration (``durations[i]``)
        is a frame of the copies that tiling appended to a short clip (inputs shorter than
        ``preprocessing["min_seconds"]`` are repeated whole): time t there lies in copy
        ``t // duration``, at ``t % duration`` into it. Long inputs processed in windows follow
        the same rule: their frames are the whole input's frames.
        """
        group = self._group("frames", layer)
        if not -self.n_clips <= i < self.n_clips:
            raise StoreError(f"{self.path}: clip index {i} out of range for {self.n_clips} clips")
        i = i % self.n_clips
        lo, hi = (int(v) for v in group["offsets"][i : i + 2])
        timing = self.frame_timing(layer)
        centres = timing.first_centre_samples + timing.hop_samples * np.arange(hi - lo, dtype=np.float64)
        return centres / self._input_rates(timing, slice(i, i + 1))[0]

    def frames_with_times(self, layer: str) -> FrameBlock:
        """:meth:`frames` with each row's time (see :meth:`frame_times`): ``data, offsets, times``."""
        data, offsets = self.frames(layer)
        timing = self.frame_timing(layer)
        counts = np.diff(offsets)
        index = np.arange(len(data), dtype=np.float64) - np.repeat(offsets[:-1], counts)
        rates = np.repeat(self._input_rates(timing, slice(None)), counts)
        return FrameBlock(data, offsets, (timing.first_centre_samples + timing.hop_samples * index) / rates)

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
        return read_class_names(self._f)

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
        return list(zip(read_strings(self._f["errors/path"]), read_strings(self._f["errors/message"])))
