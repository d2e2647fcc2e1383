"""The resumable, crash-safe writer of one run's results (segments, then consolidation).

Resume rule: each path is in the store at most once, as a feature row or as an error row; a path
already present is skipped by the caller (``StoreWriter.done``). With ``retry_errors`` the error
paths are offered again, and a new row for such a path replaces its error row. A killed run loses
at most its unfinished segment, whose clips are processed again on resume.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from ..request import POOL_ORDER, Pool
from ..version import package_version
from .batch import Batch, write_file
from .columns import ColumnSchema, ColumnType, check_meta
from .files import TMP_SUFFIX, Lock, StoreFiles, publish, test_pause, unlink
from .layout import MAX_FEATURE_CHUNK_ROWS, Layout
from .merge import MergeResult, consolidate
from .schema import (
    FORMAT_VERSION,
    RESERVED_ATTRS,
    ClipError,
    ClipResult,
    StoreSettings,
    StoreSummary,
    attr_value,
    canonical_json,
    check_settings,
    check_structure,
    check_version,
    now,
    read_attrs,
    read_class_names,
    read_strings,
)
from .text import check_text, clean_message

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_ROWS = MAX_FEATURE_CHUNK_ROWS
"""Clips per segment: a multiple of every feature chunk height (see MAX_FEATURE_CHUNK_ROWS)."""

SEGMENT_MAX_BYTES = 64 << 20
"""A segment is also finished once its buffered arrays reach this size (frames can be large)."""


def _nbytes(row: ClipResult) -> int:
    """Bytes of a validated row's arrays (what a segment buffers in memory)."""
    return sum(a.nbytes for a in row.features.values()) + sum(a.nbytes for a in (row.frames or {}).values())


@dataclass
class _Buffer:
    """Rows of the segment being built (kept in memory until the segment is written)."""

    results: list[ClipResult] = field(default_factory=list)  # validated, arrays copied
    errors: list[ClipError] = field(default_factory=list)
    nbytes: int = 0

    def __len__(self) -> int:
        return len(self.results) + len(self.errors)


def run_attrs_of(run_attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's root attributes: the package version, provider and ORT version, and the caller's."""
    attrs: dict[str, Any] = {"soundnet8_version": package_version(), "provider": "", "onnxruntime_version": ""}
    for key, value in (run_attrs or {}).items():
        if key in RESERVED_ATTRS:
            raise StoreError(f"run attribute {key!r} is reserved (it is set from the store settings)")
        if isinstance(value, (str, bool, int, float, np.generic)):
            attrs[key] = value
        else:
            attrs[key] = canonical_json(value, f"run attribute {key!r}")
    return attrs


class StoreWriter:
    """Writes one run's results into a store, crash-safely and resumably (see the package docstring).

    Usage::

        with StoreWriter(path, settings, run_attrs={...}, meta_schema=inputs.meta_schema) as writer:
            for item in inputs:
                if item.path in writer.done: continue
                writer.add(result_or_error)
        summary = writer.summary

    Opening takes the store's lock, removes stale temporary files, checks that an existing store
    (and any segments left by a killed run) match ``settings``, and merges those segments. Rows
    are buffered and written as a segment every ``segment_rows`` clips (aligned to multiples of
    it in the store, which lets consolidation copy compressed chunks verbatim) or
    SEGMENT_MAX_BYTES. ``close()`` writes the last segment and consolidates. Not thread-safe:
    call ``add`` from one thread.

    ``meta_schema``: the types of the meta columns, decided by the input set; they are resolved
    against the store once, at opening (a StoreError names a column the store holds with another
    type), and every segment is written with them. Without it, types are inferred from the values.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        settings: StoreSettings,
        *,
        run_attrs: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        overwrite: bool = False,
        retry_errors: bool = False,
        segment_rows: int = DEFAULT_SEGMENT_ROWS,
        meta_schema: ColumnSchema | Mapping[str, ColumnType] | None = None,
    ) -> None:
        if int(segment_rows) < 1:
            raise StoreError(f"segment_rows must be >= 1, not {segment_rows}")
        self.path = Path(path)
        self.settings = settings
        self.segment_rows = int(segment_rows)
        self._files = StoreFiles(self.path)
        self._run_attrs = run_attrs_of(run_attrs)
        self._class_names = None if class_names is None else tuple(check_text(c, "class name") for c in class_names)
        self._schema = None if meta_schema is None else ColumnSchema(getattr(meta_schema, "types", meta_schema))
        self._meta_types: ColumnSchema | None = None  # the schema resolved against the store
        self._started = now()
        self._run_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}"
        self._k = 0
        self._buffer = _Buffer()
        self._added: set[str] = set()
        self._rows_added = 0
        self._errors_added = 0
        self._summary: StoreSummary | None = None
        self._lock: Lock | None = Lock(self._files)
        try:
            self._open(overwrite=overwrite, retry_errors=retry_errors)
        except BaseException:
            self._release()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _attrs(self) -> dict[str, Any]:
        attrs = {"format_version": FORMAT_VERSION, **self._run_attrs, **self.settings.attrs()}
        attrs["compression"] = self._layout_compression
        attrs["created"] = self._started
        attrs["updated"] = now()
        return attrs

    def _open(self, *, overwrite: bool, retry_errors: bool) -> None:
        files = self._files
        if overwrite:
            unlink(files.store)
            if files.parts.exists():
                shutil.rmtree(files.parts)
        for stale in files.stale_tmps():
            log.info("removing %s left by an interrupted run", stale)
            unlink(stale)
        if files.store.exists():
            self._inspect_store()  # fail on an incompatible store before touching segments
        self._layout = Layout.for_settings(self.settings)
        self._layout_compression = self.settings.compression.value
        if files.segments():
            log.info("%s: merging %d segment(s) left by an interrupted run", files.store, len(files.segments()))
            # segments of an earlier run were typed by its own rules: their columns are inferred
            consolidate(
                files,
                settings=self.settings,
                empty_layout=self._layout,
                empty_attrs=self._attrs(),
                class_names=self._class_names,
            )
        self._has_label: bool | None = None
        self._has_fold: bool | None = None
        self._n_base = 0
        self._store_classes = None
        done: set[str] = set()
        stored_types: dict[str, ColumnType] = {}
        if files.store.exists():
            with self._open_store() as f:
                done = self._read_store(f, retry_errors)
                stored_types = {name: ColumnType.of_array(ds) for name, ds in f.get("clips/meta", {}).items()}
        if self._schema is not None:
            self._meta_types = self._schema.for_store(stored_types, self._n_base, str(files.store))
        self._classes = self._class_names if self._class_names is not None else self._store_classes
        self.done: frozenset[str] = frozenset(done)

    def _read_store(self, f: h5py.File, retry_errors: bool) -> set[str]:
        """Take the existing store's layout and bookkeeping; return the paths it holds."""
        self._n_base = f["clips/path"].shape[0]
        self._layout = Layout.of(f)  # keep the store's chunks and filters (raw appends)
        self._layout_compression = attr_value(f.attrs.get("compression", self._layout_compression))
        if self._layout_compression != self.settings.compression.value:
            log.info("%s: keeping the store's %s compression", self.path, self._layout_compression)
        stored = self._layout.features.keys()
        if set(stored) != set(self.settings.feature_keys):
            raise StoreError(
                f"{self.path}: its feature datasets {sorted(stored)} do not match its layers/pools attributes"
            )
        if self._n_base:
            self._has_label = "clips/label" in f
            self._has_fold = "clips/fold" in f
        self._store_classes = read_class_names(f)
        done = set(read_strings(f["clips/path"]))
        if not retry_errors:
            done.update(read_strings(f["errors/path"]))
        return done

    @contextmanager
    def _open_store(self) -> Iterator[h5py.File]:
        try:
            f = h5py.File(self._files.store, "r")
        except OSError as exc:
            raise StoreError(
                f"{self._files.store}: cannot open the existing store ({exc}); use --overwrite to start afresh"
            ) from exc
        with f:
            yield f

    def _inspect_store(self) -> None:
        with self._open_store() as f:
            attrs = read_attrs(f)
            if "format_version" not in attrs:
                raise StoreError(
                    f"{self._files.store}: exists but is not a soundnet8 feature store; "
                    "choose another output or use --overwrite to replace it"
                )
            check_version(attrs, self._files.store)
            check_structure(f, self._files.store)
            check_settings(attrs, self.settings, self._files.store, self._files.store)
            stored_compression = attr_value(attrs.get("compression", self.settings.compression.value))
            if stored_compression != self.settings.compression.value:
                # the store's filters are kept on append (raw chunk copies): a new one cannot apply
                raise StoreError(
                    f"{self._files.store}: cannot resume: compression ({stored_compression!r} in the store, "
                    f"{self.settings.compression.value!r} now) differs from this run's settings; resume with "
                    f"--compression {stored_compression} or use --overwrite to start afresh (this deletes it)"
                )
            stored = read_class_names(f)
            if stored is not None and self._class_names is not None and stored != self._class_names:
                raise StoreError(
                    f"{self._files.store}: cannot resume: class names differ from the store's "
                    f"({len(stored)} in the store, {len(self._class_names)} now); use --overwrite to start afresh"
                )

    # -- adding rows -----------------------------------------------------------------------

    def add(self, result: ClipResult | ClipError) -> None:
        """Buffer one clip's result (or failure); finishes a segment when the budget is reached."""
        if self._summary is not None or self._lock is None:
            raise StoreError(f"{self.path}: the writer is closed")
        path = check_text(result.path, "clip path")
        if path in self.done or path in self._added:
            raise StoreError(f"{self.path}: {path!r} is already in the store; skip paths in writer.done")
        if isinstance(result, ClipError):
            self._buffer.errors.append(ClipError(path, clean_message(result.message)))
            self._added.add(path)
            self._errors_added += 1
            if len(self._buffer.errors) >= self.segment_rows:
                self._flush()  # a long run of failures still reaches disk
            return
        if not isinstance(result, ClipResult):
            raise StoreError(f"{self.path}: add() takes a ClipResult or ClipError, not {type(result).__name__}")
        row = self._validate(result)
        self._has_label = row.label is not None
        self._has_fold = row.fold is not None
        self._buffer.results.append(row)
        self._buffer.nbytes += _nbytes(row)
        self._added.add(path)
        self._rows_added += 1
        # boundaries at multiples of segment_rows in the store's row numbering keep the segments'
        # chunk grids aligned with the store's, so consolidation copies their chunks raw
        at_boundary = (self._n_base + self._rows_added) % self.segment_rows == 0
        if at_boundary or self._buffer.nbytes >= SEGMENT_MAX_BYTES:
            self._flush()

    def _validate(self, r: ClipResult) -> ClipResult:
        """``r`` checked against the store, its arrays copied (the caller may reuse its buffers)."""
        where = f"{self.path}: clip {r.path!r}"
        features = self._checked_features(r, where)
        frames = self._checked_frames(r, where)
        meta = check_meta(r.meta, where) if self._meta_types is None else self._meta_types.check_row(r.meta, where)
        self._check_optional(r.label, self._has_label, "label", where)
        self._check_optional(r.fold, self._has_fold, "fold", where)
        if r.label is not None:
            k = len(self._classes) if self._classes is not None else None
            if int(r.label) < 0 or (k is not None and int(r.label) >= k):
                raise StoreError(f"{where}: label {r.label} is outside 0..{(k - 1) if k else 'K-1'}")
        try:
            sample_rate, duration = int(r.sample_rate), float(r.duration)
        except (TypeError, ValueError):
            raise StoreError(
                f"{where}: duration {r.duration!r} / sample_rate {r.sample_rate!r} are not numbers"
            ) from None
        if sample_rate < 0:
            raise StoreError(f"{where}: sample_rate {r.sample_rate!r} is negative")
        label = None if r.label is None else int(r.label)
        fold = None if r.fold is None else int(r.fold)
        return ClipResult(r.path, duration, sample_rate, meta, features, frames, label, fold)

    def _checked_features(self, r: ClipResult, where: str) -> dict[tuple[str, str], np.ndarray]:
        features: dict[tuple[str, str], np.ndarray] = {}
        for (layer, pool), value in r.features.items():
            key = (layer, Pool(pool).value if pool in POOL_ORDER else str(pool))
            spec = self._layout.features.get(key)
            if spec is None:
                raise StoreError(f"{where}: feature {key} is not one of the store's {list(self._layout.features)}")
            array = np.array(value, dtype=np.float32)  # a copy
            if array.shape != (spec.channels,):
                raise StoreError(
                    f"{where}: feature {layer}/{pool} has shape {array.shape}, expected ({spec.channels},)"
                )
            features[key] = array
        if len(features) != len(self._layout.features):
            missing = sorted(set(self._layout.features) - set(features))
            raise StoreError(f"{where}: features {missing} are missing")
        return features

    def _checked_frames(self, r: ClipResult, where: str) -> dict[str, np.ndarray]:
        frames: dict[str, np.ndarray] = {}
        if not self.settings.frames:
            if r.frames is not None:
                raise StoreError(f"{where}: frames given but the store was configured without frames")
            return frames
        if r.frames is None or set(r.frames) != set(self._layout.frames):
            raise StoreError(f"{where}: frames of layers {list(self._layout.frames)} are required")
        for layer, value in r.frames.items():
            array = np.array(value, dtype=np.float32)
            c = self._layout.frames[layer].channels
            if array.ndim != 2 or array.shape[1] != c:
                raise StoreError(f"{where}: frames of {layer} have shape {array.shape}, expected (T, {c})")
            frames[layer] = array
        return frames

    @staticmethod
    def _check_optional(value: int | None, state: bool | None, name: str, where: str) -> None:
        has = value is not None
        if state is not None and has != state:
            raise StoreError(
                f"{where}: {'has' if has else 'has no'} {name}, but the store's clips "
                f"{'have' if state else 'have no'} {name}s; a store has them for every clip or none"
            )

    def _batch(self) -> Batch:
        results = self._buffer.results
        n = len(results)
        metas = [r.meta for r in results]
        schema = self._meta_types if self._meta_types is not None else ColumnSchema.infer(metas)
        features = {}
        for key, spec in self._layout.features.items():
            stack = np.empty((n, spec.channels), np.float32)
            for i, r in enumerate(results):
                stack[i] = r.features[key]
            features[key] = stack
        frames = {}
        for layer, spec in self._layout.frames.items():
            pieces = [r.frames[layer] for r in results]
            offsets = np.zeros(n + 1, np.int64)
            offsets[1:] = np.cumsum([len(p) for p in pieces])
            data = np.concatenate(pieces) if pieces else np.zeros((0, spec.channels), np.float32)
            frames[layer] = (data, offsets)
        return Batch(
            [r.path for r in results],
            np.array([r.duration for r in results], np.float64),
            np.array([r.sample_rate for r in results], np.int32),
            schema.arrays(metas),
            np.array([r.label for r in results], np.int64) if n and results[0].label is not None else None,
            np.array([r.fold for r in results], np.int64) if n and results[0].fold is not None else None,
            features,
            frames,
            [(e.path, e.message) for e in self._buffer.errors],
        )

    def _flush(self) -> None:
        """Write the buffered rows as a finished segment (tmp file, fsync, rename)."""
        if not len(self._buffer):
            return
        batch = self._batch()
        self._files.parts.mkdir(parents=True, exist_ok=True)
        final = self._files.segment(self._run_id, self._k)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        write_file(tmp, batch, self._layout, self._attrs(), self._classes)
        publish(tmp, final)
        rows, errors = len(batch.paths), len(batch.errors)
        log.debug("%s: wrote segment %s (%d rows, %d errors)", self.path, final.name, rows, errors)
        self._k += 1
        self._buffer = _Buffer()
        test_pause("segment")  # signal tests: a short pause per segment keeps a small job running

    # -- finishing -------------------------------------------------------------------------

    def _consolidate(self) -> MergeResult | None:
        files = self._files
        if not files.segments() and files.store.exists():
            return None  # nothing new: leave the store (and its 'updated') alone
        log.info("%s: consolidating %d segment(s)", files.store, len(files.segments()))
        return consolidate(
            files,
            settings=self.settings,
            empty_layout=self._layout,
            empty_attrs=self._attrs(),
            class_names=self._classes,
            meta_schema=self._meta_types,
        )

    def close(self) -> StoreSummary:
        """Write the last segment, consolidate, release the lock; returns (and keeps) the summary."""
        if self._summary is not None:
            return self._summary
        try:
            self._flush()
            self._consolidate()
            with self._open_store() as f:
                total_rows, total_errors = f["clips/path"].shape[0], f["errors/path"].shape[0]
            self._summary = StoreSummary(self.path, self._rows_added, self._errors_added, total_rows, total_errors)
        finally:
            self._release()
        return self._summary

    @property
    def summary(self) -> StoreSummary | None:
        return self._summary

    def _release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
            return False
        if self._lock is None:
            return False
        # Keep what was computed: write the buffered rows and merge them; if that fails too, the
        # segments stay on disk for the next run, and the original exception still propagates.
        try:
            self._flush()
            self._consolidate()
        except BaseException as err:
            log.warning("%s: could not finish the store after %s: %s", self.path, exc_type.__name__, err)
            if exc is not None and hasattr(exc, "add_note"):
                exc.add_note(f"{self.path}: finishing the store also failed: {err!r}; re-run to resume")
        finally:
            self._release()
        return False


def _paths_of(path: Path, include_errors: bool) -> list[str]:
    with h5py.File(path, "r") as f:
        check_version(read_attrs(f), path)
        found = read_strings(f["clips/path"])
        if include_errors:
            found += read_strings(f["errors/path"])
        return found


def done_paths(store_path: str | os.PathLike, *, include_errors: bool = True) -> set[str]:
    """Paths already recorded in STORE.h5 and its finished segments (errors included by default).

    Needs no lock. Segments are read before the store: a concurrent consolidation only deletes
    segments after their rows are in the new store, so no finished row is missed. Unreadable
    segments are skipped (their clips will be processed again).
    """
    files = StoreFiles(Path(store_path))
    found: set[str] = set()
    for seg in files.segments():
        try:
            found.update(_paths_of(seg, include_errors))
        except FileNotFoundError:
            continue  # merged and deleted meanwhile: its rows are in the store read next
        except (OSError, KeyError, StoreError) as exc:
            log.debug("skipping unreadable segment %s: %s", seg, exc)
    if files.store.exists():
        try:
            found.update(_paths_of(files.store, include_errors))
        except (OSError, KeyError) as exc:
            raise StoreError(f"{files.store}: cannot read the feature store: {exc}") from exc
    return found
