"""Read-only access to a feature store: ``FeatureStore``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from ..request import POOL_ORDER
from .schema import JSON_ATTRS, check_version, read_attrs, read_class_names, read_strings

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
