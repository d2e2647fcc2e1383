"""Store segments written by many processes at once (the Ray backend's actors), merged by the driver.

The driver holds the store's :class:`~soundnet8.engine.store.StoreWriter` (its lock, the resume
bookkeeping and, at the end, the consolidation with the existing merger). Each actor writes its
results as finished segments into ``STORE.h5.parts/`` with a :class:`SegmentWriter`, in the format
the writer's own segments have (a complete small store, written as ``.tmp``, fsync'd and renamed),
so the merger cannot tell them apart. A :class:`SegmentSpec` is what the driver tells every actor:
the layout, root attributes, class names and meta column types the store uses.

Exactly once: a segment is published before its clips are reported done, so a clip whose actor
died is either in a published segment or processed again; a clip processed twice (an actor died
between publishing and reporting) is in two segments, and the merger keeps each path once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..store import ClipError, ClipResult, ColumnSchema, ColumnType, StoreSettings
from ..store.batch import Batch, write_file
from ..store.files import TMP_SUFFIX, StoreFiles, publish, unlink
from ..store.layout import Layout
from ..store.schema import FORMAT_VERSION, attr_value, now, read_attrs, read_strings
from ..store.writer import run_attrs_of


@dataclass(frozen=True)
class SegmentSpec:
    """What every segment of one run is written with (decided by the driver, sent to the actors)."""

    store: str
    layout: Layout
    attrs: Mapping[str, Any]  # root attributes (the actor sets its own provider and ORT version)
    class_names: tuple[str, ...] | None
    meta_schema: ColumnSchema

    @classmethod
    def for_store(cls, store: str | os.PathLike, settings: StoreSettings, run_attrs: Mapping[str, Any],
                  class_names: Sequence[str] | None, meta_schema: ColumnSchema) -> SegmentSpec:
        """The spec of new segments of ``store``, read after its writer opened it (so it is consolidated).

        An existing store keeps its chunks, filters, compression and meta column types, as the
        writer's own segments do."""
        path = Path(store)
        layout, compression = Layout.for_settings(settings), settings.compression.value
        stored_types: dict[str, ColumnType] = {}
        stored_rows = 0
        if path.exists():
            with h5py.File(path, "r") as f:
                layout = Layout.of(f)
                compression = attr_value(read_attrs(f).get("compression", compression))
                stored_rows = f["clips/path"].shape[0]
                stored_types = {name: ColumnType.of_array(ds) for name, ds in f.get("clips/meta", {}).items()}
                if class_names is None and "classes/name" in f:
                    class_names = read_strings(f["classes/name"])
        attrs = {"format_version": FORMAT_VERSION, **run_attrs_of(run_attrs), **settings.attrs(),
                 "compression": compression, "created": now()}
        schema = meta_schema.for_store(stored_types, stored_rows, str(path))
        return cls(str(path), layout, attrs, None if class_names is None else tuple(class_names), schema)


class SegmentWriter:
    """Writes finished segments of one process into the store's parts folder (no lock: names are unique)."""

    def __init__(self, spec: SegmentSpec, run_attrs: Mapping[str, Any] | None = None, prefix: str = "") -> None:
        self.spec = spec
        self.files = StoreFiles(Path(spec.store))
        self.attrs = {**spec.attrs, **(run_attrs or {})}
        # segments sort by name, so a timestamp first; the uuid keeps restarted actors' names apart
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self.run_id = f"{prefix}{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.k = 0

    def batch(self, results: Sequence[ClipResult], errors: Sequence[ClipError]) -> Batch:
        """The rows as the segment's arrays (meta typed by the spec's schema)."""
        n = len(results)
        features = {key: np.asarray([r.features[key] for r in results], np.float32).reshape(n, spec.channels)
                    for key, spec in self.spec.layout.features.items()}
        frames = {}
        for layer, spec in self.spec.layout.frames.items():
            pieces = [np.asarray(r.frames[layer], np.float32) for r in results]
            offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces], dtype=np.int64)])
            frames[layer] = (np.concatenate(pieces) if pieces else np.zeros((0, spec.channels), np.float32), offsets)
        labelled = n > 0 and results[0].label is not None
        folded = n > 0 and results[0].fold is not None
        return Batch(
            paths=[r.path for r in results],
            durations=np.array([r.duration for r in results], np.float64),
            sample_rates=np.array([r.sample_rate for r in results], np.int32),
            meta=self.spec.meta_schema.arrays([r.meta for r in results]),
            labels=np.array([r.label for r in results], np.int64) if labelled else None,
            folds=np.array([r.fold for r in results], np.int64) if folded else None,
            features=features,
            frames=frames,
            errors=[(e.path, e.message) for e in errors],
        )

    def write(self, results: Sequence[ClipResult], errors: Sequence[ClipError]) -> Path | None:
        """Publish one segment holding ``results`` and ``errors``; None when both are empty."""
        if not results and not errors:
            return None
        self.files.parts.mkdir(parents=True, exist_ok=True)
        final = self.files.segment(self.run_id, self.k)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        attrs = {**self.attrs, "updated": now()}
        write_file(tmp, self.batch(results, errors), self.spec.layout, attrs, self.spec.class_names)
        publish(tmp, final)
        self.k += 1
        return final


COMPACT_PREFIX = "0-"
"""Run-id prefix of compacted segments: their names sort before every other segment's."""


def compact_unit(layout: Layout) -> int:
    """Rows of a compacted segment: the tallest feature chunk, so every chunk grid lines up (0: never
    compact, when frames are stored: frame rows follow no clip grid and would fill the actor's memory)."""
    if layout.frames or not layout.features:
        return 0
    return max(spec.chunk_rows for spec in layout.features.values())


class CompactingWriter:
    """One process's segments, rewritten as segments of whole multiples of ``unit`` rows.

    Consolidation copies a segment's compressed chunks verbatim only when it starts on a chunk
    boundary of the store; an actor's per-call segments (tens of clips) never do, and decoding and
    re-encoding them makes the driver's single merge the bottleneck of a large cluster. So each
    actor keeps the rows of its small segments (features only: a few MB) and, once they reach
    ``unit``, publishes them as one compacted segment whose name sorts first, then deletes the small
    ones. A crash in between leaves rows in two segments; the merge keeps each path once.
    """

    def __init__(self, spec: SegmentSpec, run_attrs: Mapping[str, Any] | None = None, unit: int = 0) -> None:
        self.small = SegmentWriter(spec, run_attrs)
        self.large = SegmentWriter(spec, run_attrs, prefix=COMPACT_PREFIX)
        self.unit = unit
        self.held: list[tuple[Path, list[ClipResult], list[ClipError]]] = []
        self.compacted = 0  # rows written into compacted segments

    def write(self, results: Sequence[ClipResult], errors: Sequence[ClipError]) -> None:
        """Publish ``results`` and ``errors`` (durable on return), compacting when ``unit`` rows are held."""
        path = self.small.write(results, errors)
        if path is not None:
            self.adopt(path, results, errors)

    def adopt(self, path: Path, results: Sequence[ClipResult], errors: Sequence[ClipError]) -> None:
        """Take the published segment ``path`` (holding ``results`` and ``errors``) into the next compaction."""
        if self.unit <= 0:
            return
        self.held.append((path, list(results), list(errors)))
        rows = [row for _, held, _ in self.held for row in held]
        if len(rows) < self.unit:
            return
        cut = len(rows) // self.unit * self.unit
        self.large.write(rows[:cut], [error for _, _, held in self.held for error in held])
        self.compacted += cut
        rest = rows[cut:]
        kept = self.small.write(rest, []) if rest else None
        for old, _, _ in self.held:
            unlink(old)  # its rows are in the segments just published
        self.held = [(kept, rest, [])] if kept is not None else []

