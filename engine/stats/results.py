"""What the statistics return: per-neuron arrays of one layer, and a one-line summary of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .defaults import SELECTIVITY_LEVELS
from .errors import StatsError
from .quantile import interpolation, seed_denominator

SHARE_SEED_DEFINITION = (
    "count of the top class / (n_clips * (100 - q) / 100), the seed notebook's share "
    "(stats / 100 for 2000 clips at q=95); exceeds the honest share when ties leave a neuron "
    "fewer activations"
)
SHARE_ACTIVE_DEFINITION = (
    "count of the top class / number of clips above the threshold (NaN when none is)"
)

ARRAY_FIELDS = (
    "thresholds",
    "counts",
    "n_active",
    "top_class",
    "share_seed",
    "share_active",
    "top_clips",
    "top_values",
)
"""The array fields of :class:`NeuronStats`, in the order they are stored."""


@dataclass(frozen=True)
class LayerSummary:
    """One line per layer, to compare selectivity across depth (the seed's last figure)."""

    layer: str | None
    pool: str | None
    q: float
    n_clips: int
    n_neurons: int
    n_classes: int
    n_silent: int  # neurons no clip exceeds (constant, or saturated at the threshold)
    n_tied: int  # neurons with fewer activations than distinct values would give (ties, e.g. ReLU zeros)
    mean_share_seed: float
    median_share_seed: float
    mean_share_active: float  # over neurons with at least one activation
    median_share_active: float
    levels: tuple[float, ...]
    n_above_seed: tuple[int, ...]  # neurons whose share_seed > level, per level
    n_above_active: tuple[int, ...]  # neurons whose share_active > level, per level
    top_classes: tuple[tuple[int, int], ...]  # (class, neurons it is the top class of), most first


@dataclass(frozen=True, eq=False)
class NeuronStats:
    """Per-neuron statistics of one layer (C neurons, K classes, k top clips).

    Arrays are read-only. ``top_class`` is -1 and ``share_active`` NaN for a neuron no labelled
    clip activates; the seed's ``argmax`` would have said class 0 with share 0.
    """

    q: float
    n_clips: int
    thresholds: np.ndarray  # (C,) the data's float dtype: np.percentile(X, q, axis=0)
    counts: np.ndarray  # (C, K) int64: clips of class k above neuron c's threshold
    n_active: np.ndarray  # (C,) int64: clips above the threshold (labelled or not)
    top_class: np.ndarray  # (C,) int64: the most represented class (lowest id on ties), or -1
    share_seed: np.ndarray  # (C,) float64: SHARE_SEED_DEFINITION
    share_active: np.ndarray  # (C,) float64: SHARE_ACTIVE_DEFINITION
    top_clips: np.ndarray  # (C, k) int64: rows of the largest values, largest first (ties: lower row)
    top_values: np.ndarray  # (C, k) their values
    layer: str | None = None
    pool: str | None = None
    class_names: tuple[str, ...] | None = field(default=None)
    stale: bool = False  # read from a store that has changed since (read_stats(..., allow_stale=True))

    def __post_init__(self) -> None:
        for name in ARRAY_FIELDS:
            view = np.asarray(getattr(self, name)).view()
            view.flags.writeable = False  # a read-only view: the caller's array keeps its flags
            object.__setattr__(self, name, view)
        c = self.thresholds.shape[0]
        for name in ARRAY_FIELDS:
            if getattr(self, name).shape[0] != c:
                raise StatsError(f"{self.name}: {name} has {getattr(self, name).shape[0]} rows, not {c}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    @property
    def name(self) -> str:
        return layer_name(self.layer, self.pool)

    @property
    def n_neurons(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[1])

    @property
    def seed_denominator(self) -> float:
        """The seed's expected number of activations, ``n_clips * (100 - q) / 100`` (100 for 2000 clips)."""
        return seed_denominator(self.n_clips, self.q)

    def class_name(self, k: int) -> str:
        """Readable name of class ``k`` (its id when the store has no names; "-" for none)."""
        if k < 0:
            return "-"
        if self.class_names is not None and k < len(self.class_names):
            return self.class_names[k]
        return str(k)

    def most_selective(self, n: int = 10, by: str = "seed") -> np.ndarray:
        """Indices of the ``n`` neurons with the largest share, largest first; ties by larger
        top-class count, then lower index; silent neurons last. ``by="seed"`` (default) ranks by
        the top class's count over the expected activations, so a neuron that fires on 8 clips,
        4 of them cats, does not outrank one firing on 100 clips, 38 of them hand saws;
        ``by="active"`` ranks by the share of the neuron's actual activations."""
        share = _share_by(self, by)
        top_count = self.counts.max(axis=1) if self.n_classes else np.zeros(self.n_neurons, np.int64)
        key = np.where(np.isnan(share), -np.inf, share)
        order = np.lexsort((np.arange(self.n_neurons), -top_count, -key))
        return order[: max(0, n)]

    def summary(self, levels: Sequence[float] = SELECTIVITY_LEVELS) -> LayerSummary:
        """Counts of selective neurons at each share level, mean/median shares, top classes."""
        levels = tuple(float(v) for v in levels)
        expected = self.n_clips - 1 - interpolation(self.n_clips, self.q).low  # untied activations
        classes, neurons = np.unique(self.top_class[self.top_class >= 0], return_counts=True)
        order = np.lexsort((classes, -neurons))
        return LayerSummary(
            layer=self.layer,
            pool=self.pool,
            q=self.q,
            n_clips=self.n_clips,
            n_neurons=self.n_neurons,
            n_classes=self.n_classes,
            n_silent=int(np.count_nonzero(self.n_active == 0)),
            n_tied=int(np.count_nonzero(self.n_active < expected)),
            mean_share_seed=_nan_stat(np.mean, self.share_seed),
            median_share_seed=_nan_stat(np.median, self.share_seed),
            mean_share_active=_nan_stat(np.mean, self.share_active),
            median_share_active=_nan_stat(np.median, self.share_active),
            levels=levels,
            n_above_seed=tuple(int(np.count_nonzero(self.share_seed > v)) for v in levels),
            n_above_active=tuple(int(np.count_nonzero(self.share_active > v)) for v in levels),
            top_classes=tuple((int(classes[i]), int(neurons[i])) for i in order),
        )


def layer_name(layer: str | None, pool: str | None = None) -> str:
    """How messages name a layer's statistics: "layer/pool", or "features" for a bare matrix."""
    return "/".join(p for p in (layer, pool) if p) or "features"


def _share_by(stats: NeuronStats, by: str) -> np.ndarray:
    if by == "active":
        return stats.share_active
    if by == "seed":
        return stats.share_seed
    raise StatsError(f"share must be 'active' or 'seed', not {by!r}")


def _nan_stat(fn, values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else math.nan
