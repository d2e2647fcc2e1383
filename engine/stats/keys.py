"""Order-preserving unsigned keys of float bit patterns, and the histogram levels over their bits.

A float's key orders as the float does (``a < b`` exactly when ``key(a) < key(b)``; -0.0 and +0.0
share a key), so histograms of the keys' leading bits locate order statistics with no rounding.
Level 0 resolves the leading 12 bits; each refinement level the next 12 (the last the rest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL0_BITS = 12
"""4096 bins: 16 KiB of int32 per neuron; a bin spans 1/8 of an octave (fewer bits measured slower
even at 2,000 clips: wider bins make more candidates to sort)."""

REFINE_BITS = 12
"""Bits resolved by each refinement pass."""

REFINE_BINS = 1 << REFINE_BITS

HIST_DTYPE = np.dtype(np.int32)
"""Per-bin counts; the number of clips is checked against its range."""


@dataclass(frozen=True)
class KeySpec:
    """Key arithmetic of one float type: its unsigned view, width and histogram levels."""

    dtype: np.dtype
    udtype: np.dtype
    nbits: int
    widths: tuple[int, ...]  # bits resolved by each histogram level, level 0 first

    @property
    def sign(self) -> np.uint64:
        return np.uint64(1 << (self.nbits - 1))

    @property
    def full(self) -> np.uint64:
        return np.uint64((1 << self.nbits) - 1)

    @property
    def absmask(self) -> np.uint64:
        return np.uint64((1 << (self.nbits - 1)) - 1)

    @property
    def infbits(self) -> np.uint64:  # bit pattern of +inf: larger magnitudes bits are NaN
        return np.uint64(np.array(np.inf, dtype=self.dtype).view(self.udtype))

    def shift(self, level: int) -> int:
        """Bits below the ones resolved after ``level``."""
        return self.nbits - sum(self.widths[: level + 1])

    @property
    def last_level(self) -> int:
        return len(self.widths) - 1


def _widths(nbits: int) -> tuple[int, ...]:
    """Level 0, then 12 bits per refinement until every bit is resolved."""
    rest = nbits - LEVEL0_BITS
    tail = (rest % REFINE_BITS,) if rest % REFINE_BITS else ()
    return (LEVEL0_BITS,) + (REFINE_BITS,) * (rest // REFINE_BITS) + tail


_KEY_SPECS = {
    np.dtype(np.float32): KeySpec(np.dtype(np.float32), np.dtype(np.uint32), 32, _widths(32)),  # 12, 12, 8
    np.dtype(np.float64): KeySpec(np.dtype(np.float64), np.dtype(np.uint64), 64, _widths(64)),
}


def key_spec(dtype: np.dtype) -> KeySpec | None:
    """The key arithmetic of a float32/float64 dtype (either byte order), None for any other."""
    dtype = np.dtype(dtype)
    return _KEY_SPECS.get(dtype.newbyteorder("=")) if dtype.kind == "f" else None


def keys_of(values: np.ndarray, spec: KeySpec) -> np.ndarray:
    """uint64 keys of ``values`` (what the kernels compute one value at a time)."""
    bits = np.ascontiguousarray(values, dtype=spec.dtype).view(spec.udtype).astype(np.uint64)
    bits = np.where(bits == spec.sign, np.uint64(0), bits)  # -0.0 -> +0.0
    return np.where(bits & spec.sign, spec.full ^ bits, bits | spec.sign)


def values_of(keys: np.ndarray, spec: KeySpec) -> np.ndarray:
    """The floats whose keys are ``keys`` (+0.0 for the key of both zeros)."""
    keys = np.asarray(keys, dtype=np.uint64)
    bits = np.where(keys & spec.sign, keys ^ spec.sign, spec.full ^ keys)
    return bits.astype(spec.udtype).view(spec.dtype)
