"""The seed's neuron study, from the engine's exact statistics.

A neuron "fires" on the clips above its q-th percentile (q = 95); the study reads how the firing
clips spread over classes. :func:`layer_stats` takes the results ``soundnet8 stats`` stored under
``/stats`` when they match, and computes them otherwise (the same code, ``engine.stats``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from soundnet8.engine.errors import StoreError
from soundnet8.engine.stats import DEFAULT_Q, NeuronStats, StatsError, neuron_stats, read_stats

from .errors import AnalysisError


class StatsSource(str, enum.Enum):
    STORED = "stored"  # read from the store's /stats (soundnet8 stats)
    COMPUTED = "computed"  # computed here


@dataclass(frozen=True, eq=False)
class LayerStats:
    stats: NeuronStats
    source: StatsSource


def layer_stats(store, layer: str, pool: str = "mean", q: float = DEFAULT_Q, labels: np.ndarray | None = None) -> LayerStats:
    """Neuron statistics of ``layer``/``pool`` of an open store: stored ones when their q matches
    and they cover the store's rows as they are now, else computed (``labels`` default to the store's)."""
    y = store.labels if labels is None else labels
    if y is None:
        raise AnalysisError(f"{store.path}: neuron-class statistics need labels")
    try:
        stored = read_stats(store.path, layer, pool)
    except (StoreError, StatsError):  # none stored, or stale (computed from other rows): compute
        stored = None
    if stored is not None and stored.q == float(q) and stored.n_clips == store.n_clips and labels is None:
        return LayerStats(stored, StatsSource.STORED)
    computed = neuron_stats(
        store.dataset(layer, pool), y, q, len(store.class_names) if store.class_names else None,
        layer=layer, pool=pool, class_names=store.class_names,
    )  # fmt: skip
    return LayerStats(computed, StatsSource.COMPUTED)


def array_stats(X: np.ndarray, y: np.ndarray, *, q: float = DEFAULT_Q, class_names=None, layer: str | None = None) -> NeuronStats:
    """Neuron statistics of an in-memory (N, C) matrix."""
    n_classes = len(class_names) if class_names is not None else None
    return neuron_stats(np.asarray(X), np.asarray(y), q, n_classes, layer=layer, pool="mean", class_names=class_names)


def top_clip_classes(values: np.ndarray, labels: np.ndarray, q: float, n_classes: int) -> np.ndarray:
    """(K,) class counts of the clips above the neuron's q-th percentile (the seed's bar chart)."""
    threshold = np.percentile(values, q)
    return np.bincount(labels[values > threshold], minlength=n_classes)


def most_selective(stats: NeuronStats) -> int:
    """The neuron whose top class has the largest seed share (the seed's example neurons)."""
    order = stats.most_selective(1)
    if order.size == 0:
        raise AnalysisError(f"{stats.name}: no neurons")
    return int(order[0])
