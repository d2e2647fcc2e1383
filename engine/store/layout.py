"""How a store's row datasets are chunked and filtered, and creating them that way.

/features and /frames/*/data chunks hold (R, C) with R the largest power of two with
R*C*4 <= CHUNK_BYTES (and R <= 1024 for /features), so chunk grids nest and segments that start
on multiples of 1024 rows can be appended by copying compressed chunks verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ..arch import output_channels
from .columns import ColumnType
from .schema import Compression, StoreSettings

CHUNK_BYTES = 1 << 20
"""Target size of one uncompressed /features or /frames chunk."""

MAX_FEATURE_CHUNK_ROWS = 1024
"""Cap on /features chunk rows. Every feature chunk height divides it, so segments that start on
multiples of it can be appended by copying compressed chunks verbatim."""

MAX_FRAME_CHUNK_ROWS = 1 << 16
COLUMN_CHUNK_ROWS = 1 << 14  # numeric /clips columns: 128 KiB of int64/float64 per chunk
STRING_CHUNK_ROWS = 1 << 12  # variable-length strings: 4096 heap references per chunk
GZIP_LEVEL = 4  # measured ~35 MB/s on float32 features, ratio ~0.63; higher levels gain ~1%


@dataclass(frozen=True)
class Filters:
    """The HDF5 filters of one dataset."""

    compression: str | None
    level: int | None
    shuffle: bool

    @classmethod
    def for_compression(cls, compression: Compression) -> Filters:
        if Compression(compression) is Compression.GZIP:
            return cls("gzip", GZIP_LEVEL, True)
        return cls("lzf", None, True)

    @classmethod
    def of(cls, ds: h5py.Dataset) -> Filters:
        return cls(ds.compression, ds.compression_opts, bool(ds.shuffle))

    def kwargs(self) -> dict[str, Any]:
        return {"compression": self.compression, "compression_opts": self.level, "shuffle": self.shuffle}


@dataclass(frozen=True)
class Spec:
    """A 2-D row dataset: channels, chunk height, filters."""

    channels: int
    chunk_rows: int
    filters: Filters


@dataclass(frozen=True)
class Layout:
    """The specs of a store's /features and /frames datasets, and the filters of its /clips columns."""

    features: Mapping[tuple[str, str], Spec]
    frames: Mapping[str, Spec]
    columns: Filters  # numeric /clips columns

    @classmethod
    def for_channels(
        cls, features: Mapping[tuple[str, str], int], frames: Mapping[str, int], compression: Compression
    ) -> Layout:
        filters = Filters.for_compression(compression)
        return cls(
            {k: Spec(c, chunk_rows(c, MAX_FEATURE_CHUNK_ROWS), filters) for k, c in features.items()},
            {k: Spec(c, chunk_rows(c, MAX_FRAME_CHUNK_ROWS), filters) for k, c in frames.items()},
            filters,
        )

    @classmethod
    def for_settings(cls, settings: StoreSettings) -> Layout:
        features = {(layer, pool): output_channels(layer) for layer, pool in settings.feature_keys}
        frames = {layer: output_channels(layer) for layer in settings.frames}
        return cls.for_channels(features, frames, settings.compression)

    @classmethod
    def of(cls, f: h5py.File) -> Layout:
        """The layout of an existing store (appends keep its chunks and filters)."""
        features = {}
        for layer, group in f["features"].items():
            for pool, ds in group.items():
                features[(layer, pool)] = Spec(ds.shape[1], ds.chunks[0], Filters.of(ds))
        frames = {}
        if "frames" in f:
            for layer, group in f["frames"].items():
                ds = group["data"]
                frames[layer] = Spec(ds.shape[1], ds.chunks[0], Filters.of(ds))
        return cls(features, frames, Filters.of(f["clips/duration"]))


def chunk_rows(channels: int, cap: int) -> int:
    """Rows of a chunk of ``channels`` float32 columns: a power of two, so chunk grids nest."""
    rows = max(1, CHUNK_BYTES // (4 * max(1, channels)))
    return min(1 << (rows.bit_length() - 1), cap)


def create_strings(group: h5py.Group, name: str, values: Sequence[str], filters: Filters) -> h5py.Dataset:
    """A resizable UTF-8 string dataset."""
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


def create_column(group: h5py.Group, name: str, values: np.ndarray, filters: Filters) -> h5py.Dataset:
    """A resizable 1-D row dataset: strings, or numbers with the store's filters."""
    if ColumnType.of_array(values) is ColumnType.STR:
        return create_strings(group, name, values, filters)
    return group.create_dataset(
        name, data=values, maxshape=(None,), chunks=(COLUMN_CHUNK_ROWS,), **filters.kwargs()
    )


def create_matrix(group: h5py.Group, name: str, values: np.ndarray, spec: Spec) -> h5py.Dataset:
    """A resizable (rows, C) float32 dataset chunked as ``spec`` says."""
    return group.create_dataset(
        name,
        data=np.asarray(values, dtype=np.float32),
        maxshape=(None, spec.channels),
        chunks=(spec.chunk_rows, spec.channels),
        **spec.filters.kwargs(),
    )
