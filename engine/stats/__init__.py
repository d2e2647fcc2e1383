"""Per-neuron statistics of a feature store: exact percentile thresholds and class selectivity.

The seed notebook's neuron analysis (its section 4) calls a neuron "activated" by a clip when the
clip's value exceeds the neuron's q-th percentile over all clips (q = 95), counts activations per
class (``neural_matrix``: ``(X > np.percentile(X, q, axis=0)).T @ onehot(y)``), and reads how
much of a neuron's activity its most represented class takes. This package computes the same
numbers, identical to numpy, over stores of any size without loading them:

* thresholds equal ``np.percentile(X, q, axis=0)`` (numpy's default "linear" method) under
  ``np.array_equal``, bit for bit except that a zero threshold may be +0.0 where numpy's
  partition happened to leave -0.0 (the two compare equal, so every count is unaffected);
* counts are the same integers as ``(X > thresholds).T @ onehot(y)``.

Method (exact, out-of-core). Values become order-preserving unsigned keys (their IEEE bit
patterns, see :mod:`.keys`). Pass 1 histograms each column's keys on their leading 12 bits; the
final pass counts the values above the bins holding numpy's two order statistics and collects
the few inside them (:mod:`.scan`, with the numba kernels of :mod:`.kernels`). When the collected
values would exceed the memory budget, intermediate passes refine the bins on the next 12 bits
first (two such passes resolve every bit of a float32), so memory is bounded by the budget, not
by N. Typical stores need 2 passes (measured: ReLU features, 200,000 clips, 64 MiB).

Shares. ``share_seed`` is the seed's: top-class count / (N * (100 - q) / 100), i.e. ``stats / 100``
for 2,000 clips. Ties at the threshold (ReLU zeros) leave some neurons fewer activations than
that, so ``share_active`` (top-class count / the neuron's actual activations) is reported beside
it; the two agree for neurons without ties.

Rooms: :mod:`.api` (functions on any matrix), :mod:`.results` (what they return), :mod:`.io`
(stores, through the store's reader and writer), :mod:`.coverage` (the rows a stored result was
computed from, so readers can tell a stale one), :mod:`.reference` (plain numpy, what the scan
must equal), :mod:`.scan` / :mod:`.rows` / :mod:`.keys` / :mod:`.quantile` / :mod:`.kernels`
(the exact scan). Importing the package imports neither numba nor h5py.
"""

from __future__ import annotations

from .api import activation_counts, neuron_stats, percentile_thresholds
from .coverage import Coverage, staleness
from .defaults import CHUNK_BYTES_MAX, DEFAULT_MEMORY_BUDGET, DEFAULT_Q, DEFAULT_TOP_K, SELECTIVITY_LEVELS
from .errors import StatsError
from .io import (
    STATS_FORMAT_VERSION,
    STATS_GROUP,
    read_stats,
    stats_group_path,
    store_stats,
    write_stats,
)
from .reference import reference_counts, reference_thresholds, reference_top_clips
from .results import SHARE_ACTIVE_DEFINITION, SHARE_SEED_DEFINITION, LayerSummary, NeuronStats
from .rows import Rows
from .scan import ScanLimits, ScanResult, exact_scan, minimum_budget

__all__ = [
    "CHUNK_BYTES_MAX",
    "Coverage",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_Q",
    "DEFAULT_TOP_K",
    "SELECTIVITY_LEVELS",
    "SHARE_ACTIVE_DEFINITION",
    "SHARE_SEED_DEFINITION",
    "STATS_FORMAT_VERSION",
    "STATS_GROUP",
    "LayerSummary",
    "NeuronStats",
    "Rows",
    "ScanLimits",
    "ScanResult",
    "StatsError",
    "activation_counts",
    "exact_scan",
    "minimum_budget",
    "neuron_stats",
    "percentile_thresholds",
    "read_stats",
    "reference_counts",
    "reference_thresholds",
    "reference_top_clips",
    "staleness",
    "stats_group_path",
    "store_stats",
    "write_stats",
]
