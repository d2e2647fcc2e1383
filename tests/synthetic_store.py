"""Small synthetic feature stores with a known class structure, for the analysis tests.

Each class has a random non-negative prototype per layer; a clip's frames are its class prototype
plus clip-level and frame-level noise, through a ReLU, so classes are separable but not trivially
(``noise`` sets how hard). Pooled features are computed from the frames exactly as the engine
pools them, so frame-level and clip-level protocols see the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundnet8.analysis.frames import layer_frame_rate
from soundnet8.engine.store import write_arrays

SYNTHETIC_SECONDS = 5.0
"""Duration given to every synthetic clip (ESC-50's)."""

DEFAULT_LAYERS = {"pool5": 16, "conv6": 24}
"""Layer -> channels of the default synthetic store (real layer names: their frame rates are known)."""


@dataclass(frozen=True, eq=False)
class SyntheticClips:
    paths: tuple[str, ...]
    labels: np.ndarray
    folds: np.ndarray
    class_names: tuple[str, ...]
    frames: dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (data (F, C), offsets (N+1,))
    features: dict[str, dict[str, np.ndarray]]  # layer -> pool -> (N, C)
    durations: np.ndarray


def synthetic_clips(
    *,
    n_classes: int = 4,
    per_class: int = 10,
    n_folds: int = 5,
    layers: Mapping[str, int] = DEFAULT_LAYERS,
    class_names: Sequence[str] | None = None,
    seconds: float = 2 * SYNTHETIC_SECONDS,
    noise: float = 1.0,
    seed: int = 0,
) -> SyntheticClips:
    """Clips with frames covering ``seconds`` (the extraction's tiling), ``per_class`` per class,
    folds dealt round-robin within each class."""
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    labels = np.repeat(np.arange(n_classes), per_class)
    folds = np.tile(np.arange(per_class) % n_folds + 1, n_classes)
    names = tuple(class_names) if class_names is not None else tuple(f"class_{k}" for k in range(n_classes))
    frames, features = {}, {}
    for layer, channels in layers.items():
        t = max(1, round(seconds * layer_frame_rate(layer)))
        prototypes = rng.gamma(1.0, 1.0, (n_classes, channels))
        clip_level = prototypes[labels] + noise * rng.standard_normal((n, channels))
        data = np.maximum(clip_level[:, None, :] + noise * rng.standard_normal((n, t, channels)), 0).astype(np.float32)
        frames[layer] = (data.reshape(n * t, channels), np.arange(n + 1, dtype=np.int64) * t)
        features[layer] = {"mean": data.mean(axis=1), "max": data.max(axis=1), "std": data.std(axis=1)}
    return SyntheticClips(
        paths=tuple(f"synthetic/{names[labels[i]]}/{i:05d}.wav" for i in range(n)),
        labels=labels.astype(np.int64),
        folds=folds.astype(np.int64),
        class_names=names,
        frames=frames,
        features=features,
        durations=np.full(n, SYNTHETIC_SECONDS),
    )


def write_synthetic_store(
    path: str | Path,
    clips: SyntheticClips,
    *,
    with_frames: bool = True,
    meta: Mapping[str, Sequence[object]] | None = None,
    **attrs,
) -> Path:
    """Write ``clips`` as a feature store (``soundnet8.engine.store.write_arrays``)."""
    return write_arrays(
        path,
        paths=list(clips.paths),
        features=clips.features,
        labels=clips.labels,
        folds=clips.folds,
        class_names=list(clips.class_names),
        durations=clips.durations,
        frames=clips.frames if with_frames else None,
        meta=meta,
        attrs={"preprocessing": {"synthetic": True}, **attrs},
    )
