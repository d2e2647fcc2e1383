"""Frame-level features (``/frames/<layer>``) turned into classifier rows.

* :func:`flatten_rows`: each clip's frames flattened (time x channels), the seed's first attempt
  ("0.63 in cross validation", against 0.72 for the mean over time).
* :func:`crop_rows`: each clip cut into crops, each crop pooled over time into one row; the clip's
  decision is the mean of its rows' decision values (``groups`` in :func:`cross_validate_svm`).
  :data:`PAPER_WINDOWS` is the SoundNet paper's protocol: clips repeated to 10 s, 1 s windows,
  one SVM sample per window. Crops of about the clip's length at several offsets of a clip that
  the extraction tiled are time shifts of it (augmentation by circular shifts).

Frame times use the model's nominal rate (22,050 Hz over the layer's total stride). The stored
frames cover the audio as extracted: the engine tiles short clips (``min_seconds``, 20 s by
default), so the first 10 s of frames are the clip repeated to 10 s, exactly as the paper did at
the waveform level. Where a clip has fewer frames than a span needs, its frames are repeated (an
approximation of repeating the audio, off by the network's edge effects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from soundnet8.engine.arch import SAMPLE_RATE, TOTAL_STRIDE

from .errors import AnalysisError

POOLS = ("mean", "max", "std")


def has_frame_rate(layer: str) -> bool:
    """Whether :func:`layer_frame_rate` knows ``layer`` (a SoundNet output, not a custom name)."""
    return layer in TOTAL_STRIDE


def layer_frame_rate(layer: str) -> float:
    """Frames per second of a SoundNet output at the model's 22,050 Hz."""
    if not has_frame_rate(layer):
        raise AnalysisError(f"no frame rate known for layer {layer!r}; give frames_per_second")
    return SAMPLE_RATE / TOTAL_STRIDE[layer]


@dataclass(frozen=True)
class CropProtocol:
    """How clips become rows: take ``span_seconds`` of each clip (its own duration when None),
    cut crops of ``crop_seconds`` every ``hop_seconds``, pool each crop with ``pools``."""

    crop_seconds: float
    hop_seconds: float
    span_seconds: float | None = None
    pools: tuple[str, ...] = ("mean",)
    name: str = "crops"

    def __post_init__(self) -> None:
        for what in ("crop_seconds", "hop_seconds"):
            value = getattr(self, what)
            if not (value > 0 and math.isfinite(value)):
                raise AnalysisError(f"{what} must be a positive number, got {value!r}")
        if self.span_seconds is not None and not self.span_seconds > 0:
            raise AnalysisError(f"span_seconds must be positive or None, got {self.span_seconds!r}")
        bad = [p for p in self.pools if p not in POOLS]
        if bad or not self.pools:
            raise AnalysisError(f"pools must be among {POOLS}, got {self.pools}")


PAPER_WINDOWS = CropProtocol(crop_seconds=1.0, hop_seconds=1.0, span_seconds=10.0, name="paper 1 s windows over 10 s")
"""Aytar et al.: clips repeated to 10 s, each 1 s window of pool5 an SVM sample, decisions averaged."""


def _pool(frames: np.ndarray, pools: tuple[str, ...]) -> np.ndarray:
    """(..., L, C) -> (..., C * len(pools))."""
    out = []
    for pool in pools:
        if pool == "mean":
            out.append(frames.mean(axis=-2))
        elif pool == "max":
            out.append(frames.max(axis=-2))
        else:
            out.append(frames.std(axis=-2))
    return np.concatenate(out, axis=-1)


def _span(frames: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` frames, repeating the clip's frames when it has fewer."""
    if frames.shape[0] >= n:
        return frames[:n]
    reps = -(-n // frames.shape[0])
    return np.tile(frames, (reps, 1))[:n]


def _check_frames(data: np.ndarray, offsets: np.ndarray) -> None:
    if data.ndim != 2 or offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != data.shape[0]:
        raise AnalysisError("frames need (F, C) data and offsets from 0 to F")
    if np.any(np.diff(offsets) <= 0):
        empty = int(np.flatnonzero(np.diff(offsets) <= 0)[0])
        raise AnalysisError(f"clip {empty} has no frames")


def crop_rows(
    data: np.ndarray,
    offsets: np.ndarray,
    protocol: CropProtocol,
    *,
    frames_per_second: float,
    durations: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows (R, C * pools) float32, clip index of each row (R,)) under ``protocol``.

    ``durations`` (N,) seconds of each original clip, needed when ``span_seconds`` is None.
    Every clip gives at least one row (one crop of its whole span when the span is shorter than
    a crop).
    """
    data = np.asarray(data)
    offsets = np.asarray(offsets, np.int64)
    _check_frames(data, offsets)
    n = offsets.size - 1
    if protocol.span_seconds is None and durations is None:
        raise AnalysisError("crops over each clip's own duration need the clips' durations")
    crop = max(1, round(protocol.crop_seconds * frames_per_second))
    hop = max(1, round(protocol.hop_seconds * frames_per_second))
    rows, owners = [], []
    for i in range(n):
        seconds = protocol.span_seconds if protocol.span_seconds is not None else float(durations[i])
        if not (seconds > 0 and math.isfinite(seconds)):
            raise AnalysisError(f"clip {i}: unknown or zero duration, cannot take its span")
        span_frames = max(1, round(seconds * frames_per_second))
        frames = _span(data[offsets[i] : offsets[i + 1]], span_frames).astype(np.float32, copy=False)
        length = min(crop, span_frames)
        starts = np.arange(0, span_frames - length + 1, hop)
        windows = np.lib.stride_tricks.sliding_window_view(frames, length, axis=0)[starts]  # (W, C, L)
        rows.append(_pool(np.swapaxes(windows, 1, 2), protocol.pools))
        owners.append(np.full(starts.size, i, np.int64))
    return np.concatenate(rows).astype(np.float32, copy=False), np.concatenate(owners)


def flatten_rows(data: np.ndarray, offsets: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """(N, n_frames * C): each clip's first ``n_frames`` frames (default: the shortest clip's
    count; shorter clips repeat their frames), flattened time-major as ``reshape(-1)`` does."""
    data = np.asarray(data)
    offsets = np.asarray(offsets, np.int64)
    _check_frames(data, offsets)
    lengths = np.diff(offsets)
    n_frames = int(lengths.min()) if n_frames is None else int(n_frames)
    if n_frames < 1:
        raise AnalysisError(f"n_frames must be at least 1, got {n_frames}")
    out = np.empty((lengths.size, n_frames * data.shape[1]), np.float32)
    for i in range(lengths.size):
        out[i] = _span(data[offsets[i] : offsets[i + 1]], n_frames).reshape(-1)
    return out


def pooled_rows(data: np.ndarray, offsets: np.ndarray, pools: tuple[str, ...] = ("mean",)) -> np.ndarray:
    """(N, C * pools): each clip's frames pooled over all its time (what /features holds)."""
    data = np.asarray(data)
    offsets = np.asarray(offsets, np.int64)
    _check_frames(data, offsets)
    return np.stack([_pool(data[offsets[i] : offsets[i + 1]], pools) for i in range(offsets.size - 1)]).astype(
        np.float32, copy=False
    )
