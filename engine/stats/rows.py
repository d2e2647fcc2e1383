"""Row chunks of a feature matrix, as the scan reads them: the one place data is read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import StoreError
from .errors import StatsError
from .keys import HIST_DTYPE, KeySpec, key_spec


class Rows:
    """Row chunks of a 2-D float matrix: ndarray, memmap, h5py.Dataset, or any array-like with
    ``shape``, ``dtype`` and row slicing. An h5py dataset is read into one reused buffer, in chunks
    aligned to its HDF5 chunks; an in-memory array is walked by views (no copy).

    Public so that tests and benchmarks can drive :func:`exact_scan` (or time reading alone) with
    the chunking of their choice: ``chunk_rows`` fixes the rows per chunk; when None, chunks are
    the whole HDF5 chunks fitting in ``chunk_bytes``. ``passes`` counts the iterations started.
    """

    def __init__(self, data: Any, *, name: str, chunk_rows: int | None, chunk_bytes: int) -> None:
        shape = getattr(data, "shape", None)
        if shape is None or getattr(data, "dtype", None) is None:
            data = np.asarray(data)
            shape = data.shape
        if len(shape) != 2:
            raise StatsError(f"{name}: features must be 2-D (clips x neurons), not shape {tuple(shape)}")
        spec = key_spec(data.dtype)
        if spec is None:
            raise StatsError(f"{name}: features must be float32 or float64, not {np.dtype(data.dtype)}")
        self.data = data
        self.name = name
        self.spec: KeySpec = spec
        self.n, self.c = int(shape[0]), int(shape[1])
        if self.n >= np.iinfo(HIST_DTYPE).max:
            raise StatsError(f"{name}: {self.n} clips exceed the {np.iinfo(HIST_DTYPE).max} supported")
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

    def require_rows(self) -> None:
        """Percentiles of no clips are undefined: refuse them."""
        if self.n == 0:
            raise StatsError(f"{self.name}: no clips: percentiles need at least one row")

    def check_nan(self, nan_row: np.ndarray) -> None:
        """Raise naming the first row holding a NaN (``nan_row[c]``: first NaN row of column c, or -1)."""
        if nan_row.size and nan_row.max() >= 0:
            rows = np.where(nan_row >= 0, nan_row, np.iinfo(np.int64).max)
            col = int(np.argmin(rows))
            raise StatsError(
                f"{self.name}: NaN at row {int(rows[col])} (neuron {col}); percentiles and activations "
                "are undefined for it: re-extract or drop that clip"
            )
