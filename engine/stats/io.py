"""Statistics of a feature store: computed layer by layer from the store's reader, kept under
``/stats/<layer>/<pool>/`` through the store's crash-safe update, and read back.

Every access goes through :mod:`soundnet8.engine.store` (``FeatureStore``, ``update_store``), so
the store's own checks (existence, format version, lock) apply; the store module is imported on
first use to keep ``import soundnet8.engine.stats`` free of h5py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError
from .api import neuron_stats
from .coverage import Coverage, staleness
from .defaults import DEFAULT_MEMORY_BUDGET, DEFAULT_Q, DEFAULT_TOP_K
from .errors import StatsError
from .quantile import check_q
from .results import ARRAY_FIELDS, SHARE_ACTIVE_DEFINITION, SHARE_SEED_DEFINITION, NeuronStats

if TYPE_CHECKING:
    from ..store import FeatureStore

log = logging.getLogger(__name__)

STATS_GROUP = "stats"
STATS_FORMAT_VERSION = 1


def stats_group_path(layer: str, pool: str) -> str:
    """Where the statistics of ``layer``/``pool`` live in a store."""
    return f"/{STATS_GROUP}/{layer}/{pool}"


def _layers_to_scan(fs: FeatureStore, layers: Sequence[str] | None, pool: str) -> list[str]:
    """The requested layers (all having ``pool`` when None), each checked to have ``pool``."""
    available = list(fs.layers)
    if layers is None:
        todo = [layer for layer in available if pool in fs.pools(layer)]
        if not todo:
            raise StoreError(f"{fs.path}: no layer has pooling {pool!r} (layers: {', '.join(available)})")
        return todo
    todo = list(dict.fromkeys(layers))
    for layer in todo:
        if layer not in available:
            raise StoreError(f"{fs.path}: no layer {layer!r} (layers: {', '.join(available)})")
        if pool not in fs.pools(layer):
            raise StoreError(f"{fs.path}: layer {layer!r} has no pooling {pool!r} ({', '.join(fs.pools(layer))})")
    return todo


def store_stats(
    store_path: str | Path,
    layers: Sequence[str] | None = None,
    pool: str = "mean",
    q: float = DEFAULT_Q,
    top_k: int = DEFAULT_TOP_K,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk_rows: int | None = None,
    write: bool = True,
) -> dict[str, NeuronStats]:
    """:func:`neuron_stats` of each layer (all layers having ``pool`` by default) of a feature
    store, read chunk by chunk, then written under ``/stats/<layer>/<pool>/`` (replacing those
    groups, with the :class:`Coverage` of the rows they were computed from) unless ``write`` is
    false. Returns {layer: NeuronStats} in the store's layer order."""
    from ..store import FeatureStore

    q = check_q(q)
    path = Path(store_path)
    results: dict[str, NeuronStats] = {}
    with FeatureStore(path) as fs:
        todo = _layers_to_scan(fs, layers, pool)
        labels, class_names = fs.labels, fs.class_names
        coverage = Coverage.of_paths(fs.paths)
        for layer in todo:
            results[layer] = neuron_stats(
                fs.dataset(layer, pool), labels, q, None, top_k,
                layer=layer, pool=pool, class_names=class_names,
                chunk_rows=chunk_rows, memory_budget=memory_budget,
            )  # fmt: skip
    if write:
        write_stats(path, list(results.values()), coverage)
    return results


def _stats_attrs(st: NeuronStats, coverage: Coverage) -> dict[str, Any]:
    """The attributes of a ``/stats/<layer>/<pool>`` group: how to read its arrays, what it covers."""
    return coverage.attrs() | {
        "q": st.q,
        "n_clips": st.n_clips,
        "n_classes": st.n_classes,
        "top_k": st.top_clips.shape[1],
        "percentile_method": "numpy linear (np.percentile default), exact",
        "activation": "value > threshold",
        "share_seed_denominator": st.seed_denominator,
        "share_seed_definition": SHARE_SEED_DEFINITION,
        "share_active_definition": SHARE_ACTIVE_DEFINITION,
        "format_version": STATS_FORMAT_VERSION,
    }


def write_stats(store_path: str | Path, stats: Sequence[NeuronStats], coverage: Coverage | None = None) -> None:
    """Write each of ``stats`` under ``/stats/<layer>/<pool>/`` of the store, replacing those
    groups, in one crash-safe update (``store.update_store``: the store is replaced whole).

    ``coverage``: the rows the statistics were computed from (default: the store's rows as it is
    when written, for statistics of the store as it is)."""
    from ..store import update_store

    for st in stats:
        if not st.layer or not st.pool:
            raise StatsError(f"{st.name}: statistics written to a store need their layer and pool")
    with update_store(store_path) as f:
        if coverage is None:
            coverage = Coverage.of_paths(f["clips/path"].asstr()[()])
        for st in stats:
            where = stats_group_path(st.layer, st.pool)
            if where in f:
                del f[where]
            g = f.create_group(where)
            for name in ARRAY_FIELDS:
                g.create_dataset(name, data=np.asarray(getattr(st, name)))
            g.attrs.update(_stats_attrs(st, coverage))


def _stats_group(fs: FeatureStore, layer: str, pool: str):
    """The h5py group of ``layer``/``pool``'s statistics in the open store, or None."""
    if layer not in fs.layers or pool not in fs.pools(layer):
        return None  # statistics exist only for a layer's pooled features
    return fs.group(stats_group_path(layer, pool))


def read_stats(store_path: str | Path, layer: str, pool: str = "mean", *, allow_stale: bool = False) -> NeuronStats:
    """The :class:`NeuronStats` that :func:`store_stats` wrote for ``layer``/``pool``.

    Statistics computed from other rows than the store now holds (rows added by a resumed extract
    since) are stale: a :class:`StatsError` saying so, or with ``allow_stale`` a logged warning and
    ``stale=True`` on the result."""
    from ..store import FeatureStore

    path = Path(store_path)
    where = stats_group_path(layer, pool)
    with FeatureStore(path) as fs:
        try:
            g = _stats_group(fs, layer, pool)
            if g is None:
                raise StoreError(f"{path}: no statistics for {layer}/{pool}: run `soundnet8 stats {path}` first")
            version = int(g.attrs.get("format_version", -1))
            if version != STATS_FORMAT_VERSION:
                raise StoreError(f"{path}: {where} has format {version}, this version reads {STATS_FORMAT_VERSION}")
            arrays = {name: g[name][()] for name in ARRAY_FIELDS}
            q, n_clips = float(g.attrs["q"]), int(g.attrs["n_clips"])
            why = staleness(Coverage.from_attrs(g.attrs), Coverage.of_paths(fs.paths))
        except OSError as exc:
            raise StoreError(f"{path}: cannot read {where}: {exc}") from exc
        class_names = fs.class_names
    if why is not None:
        message = f"{path}: {where} is stale: {why}; `soundnet8 stats {path}` recomputes it"
        if not allow_stale:
            raise StatsError(message)
        log.warning("%s", message)
    return NeuronStats(q=q, n_clips=n_clips, layer=layer, pool=pool, class_names=class_names,
                       stale=why is not None, **arrays)
