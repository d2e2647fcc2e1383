"""Consolidation: the store and its finished segments merged into a new store, published atomically.

``STORE.h5.tmp`` receives the existing store's datasets copied raw (H5Ocopy, no recompression)
and the segments' rows appended (raw chunk copy when the chunk grids line up, which the writer
arranges); then it replaces ``STORE.h5`` and the segments are deleted. A kill before the replace
leaves ``STORE.h5`` and the segments as they were; a kill after it leaves merged segments whose
rows are recognised by path and not added twice. Unreadable segments are discarded (their clips
are processed again on resume).

Meta columns: given the writer's resolved :class:`ColumnSchema`, the merge creates the columns it
names and checks that every segment holds them with those types; without one (segments left by
an earlier run) it infers the types from the rows (see ``columns``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from .batch import Batch, populate, write_errors
from .columns import ColumnSchema, ColumnType
from .files import NewFile, StoreFiles, fsync, publish, test_pause, unlink
from .layout import Filters, Layout, create_column, create_strings
from .schema import (
    ACCUMULATED_ATTRS,
    StoreSettings,
    accumulate,
    attr_value,
    check_settings,
    check_structure,
    check_version,
    now,
    read_attrs,
    read_class_names,
    read_strings,
)

log = logging.getLogger(__name__)

MERGE_CACHE_BYTES = 4 << 20  # per-dataset chunk cache while appending: holds the partial tail chunk


class Corrupt(Exception):
    """A segment that cannot be read or is inconsistent (internal; turned into a discard)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class SegmentHead:
    """What the merge needs to know about a segment before appending it."""

    path: Path
    n_rows: int
    attrs: dict[str, Any]
    meta_types: dict[str, ColumnType]
    has_label: bool
    has_fold: bool
    class_names: tuple[str, ...] | None


def segment_head(path: Path) -> SegmentHead:
    try:
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
            check_version(attrs, path)
            n = check_structure(f, path)
            meta = f.get("clips/meta", {})
            return SegmentHead(
                path,
                n,
                attrs,
                {name: ColumnType.of_array(meta[name]) for name in meta},
                "clips/label" in f,
                "clips/fold" in f,
                read_class_names(f),
            )
    except (OSError, StoreError, KeyError, ValueError) as exc:
        # KeyError/ValueError: h5py's answers to broken object headers inside an openable file
        raise Corrupt(path, str(exc)) from exc


@dataclass(frozen=True)
class MergeResult:
    total_rows: int
    total_errors: int


def append_1d(ds: h5py.Dataset, values: np.ndarray) -> None:
    if len(values) == 0:
        return
    n0 = ds.shape[0]
    ds.resize(n0 + len(values), axis=0)
    ds[n0:] = values


def append_matrix(
    out: h5py.Dataset, src: h5py.Dataset, keep: np.ndarray | None, seg: Path, lo: int = 0, hi: int | None = None
) -> bool:
    """Append src's rows ``lo:hi`` (those in ``keep``) to out; return True when chunks were copied raw."""
    hi = src.shape[0] if hi is None else hi
    n0, k = out.shape[0], hi - lo
    rows = out.chunks[0]
    raw = (
        keep is None
        and k > 0
        and n0 % rows == 0
        and lo % rows == 0
        and (hi % rows == 0 or hi == src.shape[0])  # whole chunks, or up to src's (padded) last one
        and src.chunks == out.chunks
        and src.dtype == out.dtype
        and Filters.of(src) == Filters.of(out)
    )
    if raw:
        out.resize(n0 + k, axis=0)
        for start in range(lo, hi, rows):
            # compressed bytes move verbatim: no decode/encode of the new rows
            try:
                mask, chunk = src.id.read_direct_chunk((start, 0))
            except (OSError, KeyError, ValueError) as exc:
                raise Corrupt(seg, f"cannot read chunk at row {start} of {src.name}: {exc}") from exc
            out.id.write_direct_chunk((n0 + start - lo, 0), chunk, mask)
        return True
    data = read(src, seg, lo, hi)
    if keep is not None:
        data = data[keep]
    if len(data):
        out.resize(n0 + len(data), axis=0)
        out[n0:] = data
    return False


def read(ds: h5py.Dataset, seg: Path, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """A segment's dataset (rows ``lo:hi``), strings decoded; a read failure marks the segment corrupt."""
    whole = lo == 0 and (hi is None or hi >= ds.shape[0])
    try:
        if h5py.check_string_dtype(ds.dtype) is not None:
            if whole:
                return ds.asstr()[()] if ds.shape[0] else np.zeros(0, object)
            return ds.asstr()[lo:hi] if hi is None or hi > lo else np.zeros(0, object)
        return ds[()] if whole else ds[lo:hi]
    except OSError as exc:
        raise Corrupt(seg, f"cannot read {ds.name}: {exc}") from exc


class Merger:
    """One consolidation: STORE.h5 (if any) + finished segments -> STORE.h5.tmp -> STORE.h5."""

    keeps_inputs = False  # True: the merged files are left in place (``join``: the inputs are stores)

    def __init__(
        self,
        files: StoreFiles,
        heads: Sequence[SegmentHead],
        *,
        empty_layout: Layout,
        empty_attrs: Mapping[str, Any],
        class_names: Sequence[str] | None,
        meta_schema: ColumnSchema | None = None,
    ) -> None:
        self.files = files
        self.heads = list(heads)
        self.empty_layout = empty_layout
        self.empty_attrs = dict(empty_attrs)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.meta_schema = meta_schema
        self.raw_segments = 0  # segments whose feature chunks were copied verbatim
        self._check_written: Callable[[], None] = lambda: None

    def run(self) -> MergeResult:
        tmp = self.files.tmp
        try:
            new = NewFile(tmp, rdcc_nbytes=MERGE_CACHE_BYTES, rdcc_w0=1.0)  # a full disk is a StoreError
            with new as out:
                self._check_written = new.check
                result = self._build(out)
            test_pause("consolidate")  # crash tests: STORE.h5.tmp is complete, STORE.h5 not replaced yet
            publish(tmp, self.files.store)
        except BaseException:
            unlink(tmp)  # STORE.h5 and the segments are untouched: the merge can be redone
            raise
        test_pause("consolidated")  # crash tests: STORE.h5 replaced, its merged segments not deleted yet
        if self.keeps_inputs:
            return result
        for head in self.heads:
            unlink(head.path)  # their rows are in STORE.h5 now
        if self.heads:
            fsync(self.files.parts)
        return result

    # -- building the merged file ----------------------------------------------------------

    def _build(self, out: h5py.File) -> MergeResult:
        results, errors = self._start(out)
        done = set(results)
        n_rows = len(results)
        self._reconcile_meta(out, n_rows)
        self._reconcile_classes(out)
        datasets = self._open_row_datasets(out)
        for head in self.heads:
            self._check_written()  # stop at the first segment after the disk filled
            n_rows = self._append_segment(out, datasets, head, done, errors, n_rows)
            for key in ACCUMULATED_ATTRS:
                if key in head.attrs:
                    out.attrs[key] = accumulate(attr_value(out.attrs.get(key)), head.attrs[key])
            for key, value in head.attrs.items():
                if key not in ACCUMULATED_ATTRS and key not in ("created", "format_version"):
                    out.attrs[key] = value
        write_errors(out, list(errors.items()), Filters.of(out["clips/duration"]))
        out.attrs["updated"] = now()
        store, raw = self.files.store, self.raw_segments
        log.debug("%s: appended %d of %d segment(s) as raw chunks", store, raw, len(self.heads))
        return MergeResult(n_rows, len(errors))

    def _start(self, out: h5py.File) -> tuple[list[str], dict[str, str]]:
        """Copy the existing store (or create an empty one) into ``out``; its paths and errors."""
        store = self.files.store
        if not store.exists():
            base = self.heads[0].attrs if self.heads else self.empty_attrs
            layout = self._layout_of(self.heads[0].path) if self.heads else self.empty_layout
            populate(out, Batch.empty(layout), layout, {}, None)
            del out["errors"]
            for key, value in base.items():
                out.attrs[key] = value
            return [], {}
        try:
            old = h5py.File(store, "r")
        except OSError as exc:
            raise StoreError(f"{store}: cannot open the existing store to merge into it: {exc}") from exc
        with old:
            for name in old:
                if name != "errors":  # rebuilt at the end from old + new errors
                    old.copy(old[name], out, name=name)  # H5Ocopy: raw chunk copy
            for key, value in old.attrs.items():
                out.attrs[key] = value
            results = read_strings(old["clips/path"])
            return results, dict(zip(read_strings(old["errors/path"]), read_strings(old["errors/message"])))

    def _layout_of(self, path: Path) -> Layout:
        try:
            with h5py.File(path, "r") as f:
                return Layout.of(f)
        except (OSError, KeyError, ValueError) as exc:
            raise Corrupt(path, str(exc)) from exc

    def _meta_plan(self, meta: h5py.Group, n_rows: int) -> dict[str, ColumnType]:
        """Each meta column's final type: the writer's decision, else inferred from the rows."""
        if self.meta_schema is not None:
            return dict(self.meta_schema.types)
        sources = [{name: ColumnType.of_array(meta[name]) for name in meta}] if n_rows else []
        sources += [head.meta_types for head in self.heads if head.n_rows]  # all-error segments say nothing
        empty = {name: ColumnType.join((), missing=True) for name in meta}  # columns of a store with no rows
        return {**empty, **ColumnSchema.joined(sources).types}

    def _reconcile_meta(self, out: h5py.File, n_rows: int) -> None:
        """Give every meta column its final type before rows are appended (see ``columns``)."""
        meta = out.require_group("clips/meta")
        filters = Filters.of(out["clips/duration"])
        for name, final in self._meta_plan(meta, n_rows).items():
            if name not in meta:
                create_column(meta, name, final.array([None] * n_rows), filters)
                continue
            have = ColumnType.of_array(meta[name])
            if have is final:
                continue
            if self.meta_schema is not None and n_rows:  # the writer resolved its types against the store
                raise StoreError(f"{self.files.store}: meta column {name!r} holds {have.value}, not {final.value}")
            values = final.convert(meta[name][()])
            del meta[name]
            create_column(meta, name, values, filters)

    def _reconcile_classes(self, out: h5py.File) -> None:
        have = read_class_names(out)
        for candidate in [self.class_names] + [h.class_names for h in self.heads]:
            if candidate is None:
                continue
            if have is None:
                create_strings(out.require_group("classes"), "name", candidate, Filters.of(out["clips/duration"]))
                have = candidate
            elif tuple(candidate) != have:
                raise StoreError(
                    f"{self.files.store}: class names differ between the store and new rows "
                    f"({len(have)} vs {len(candidate)} classes, first difference "
                    f"{next(((a, b) for a, b in zip(have, candidate) if a != b), None)}); "
                    "use --overwrite to start afresh"
                )

    def _open_row_datasets(self, out: h5py.File) -> dict[str, h5py.Dataset]:
        # kept open for the whole merge so each dataset's chunk cache holds its partial tail chunk
        names = ["clips/path", "clips/duration", "clips/sample_rate"]
        names += [f"clips/{c}" for c in ("label", "fold") if f"clips/{c}" in out]
        names += [f"clips/meta/{c}" for c in out["clips/meta"]]
        names += [f"features/{layer}/{pool}" for layer in out["features"] for pool in out["features"][layer]]
        for layer in out.get("frames", {}):
            names += [f"frames/{layer}/data", f"frames/{layer}/offsets"]
        return {name: out[name] for name in names}

    def _optional_column(self, out, datasets, name: str, seg_has: bool, head: SegmentHead, n_rows: int) -> bool:
        """Reconcile /clips/label or /clips/fold presence; return whether to append the segment's."""
        key = f"clips/{name}"
        out_has = key in datasets
        if out_has == seg_has or head.n_rows == 0:
            return out_has and seg_has
        if n_rows == 0:  # nothing stored yet: the first rows decide
            if seg_has:
                datasets[key] = create_column(
                    out["clips"], name, np.zeros(0, np.int64), Filters.of(out["clips/duration"])
                )
            else:
                del datasets[key]
                del out[key]
            return seg_has
        raise StoreError(
            f"{head.path}: its clips {'have' if seg_has else 'have no'} {name}s but those in "
            f"{self.files.store} {'have none' if seg_has else 'have them'}; resume with the same "
            "labels/folds or use --overwrite"
        )

    def _keep(self, paths: Sequence[str], seg: h5py.File, head: SegmentHead, done: set[str], errors: dict) -> Any:
        """Which of a segment's rows are new (None: all); updates ``done`` and ``errors``."""
        keep_list = []
        for p in paths:
            fresh = p not in done
            keep_list.append(fresh)
            if fresh:
                done.add(p)
                errors.pop(p, None)  # a new row replaces the error row of a retried path
        keep = None if all(keep_list) else np.array(keep_list, dtype=bool)
        if keep is not None:
            log.info("%s: %d rows already merged (left by an interrupted consolidation)", head.path, int((~keep).sum()))
        for p, m in zip(read(seg["errors/path"], head.path), read(seg["errors/message"], head.path)):
            if str(p) in done:
                continue
            errors.pop(str(p), None)
            errors[str(p)] = str(m)  # the newest message, at the end
        return keep

    def _append_segment(
        self, out, datasets, head: SegmentHead, done: set[str], errors: dict[str, str], n_rows: int
    ) -> int:
        """Append one segment's new rows; ``done`` and ``errors`` track paths merged so far."""
        seg = head.path
        try:
            src = h5py.File(seg, "r")
        except OSError as exc:
            raise Corrupt(seg, str(exc)) from exc
        with src:
            paths = [str(p) for p in read(src["clips/path"], seg)]
            keep = self._keep(paths, src, head, done, errors)

            def rows(values: np.ndarray) -> np.ndarray:
                return values if keep is None else values[keep]

            append_1d(datasets["clips/path"], rows(np.array(paths, dtype=object)))
            for name in ("duration", "sample_rate"):
                append_1d(datasets[f"clips/{name}"], rows(read(src[f"clips/{name}"], seg)))
            for name, has in (("label", head.has_label), ("fold", head.has_fold)):
                if self._optional_column(out, datasets, name, has, head, n_rows):
                    append_1d(datasets[f"clips/{name}"], rows(read(src[f"clips/{name}"], seg)))
            for key in [k for k in datasets if k.startswith("clips/meta/")]:
                append_1d(datasets[key], rows(self._meta_rows(datasets[key], src, key, head)))
            seg_features = {f"features/{layer}/{pool}" for layer in src["features"] for pool in src["features"][layer]}
            out_features = {k for k in datasets if k.startswith("features/")}
            if seg_features != out_features:
                raise StoreError(
                    f"{seg}: features {sorted(seg_features)} differ from the store's {sorted(out_features)}; "
                    "use --overwrite to start afresh"
                )
            raw = [append_matrix(datasets[key], src[key], keep, seg) for key in sorted(out_features)]
            self.raw_segments += bool(raw) and all(raw)
            for layer in out.get("frames", {}):
                self._append_frames(datasets, src, layer, keep, seg)
        return n_rows + (len(paths) if keep is None else int(keep.sum()))

    def _meta_rows(self, ds: h5py.Dataset, src: h5py.File, key: str, head: SegmentHead) -> np.ndarray:
        """A segment's values of one meta column, in the store column's type."""
        want = ColumnType.of_array(ds)
        if key not in src or not head.n_rows:
            return want.array([None] * head.n_rows)
        values = read(src[key], head.path)
        have = ColumnType.of_array(values)
        if self.meta_schema is not None and have is not want:  # written with the writer's types
            raise StoreError(f"{head.path}: meta column {key} holds {have.value}, the store's {want.value}")
        return want.convert(values)

    def _append_frames(self, datasets, src: h5py.File, layer: str, keep: np.ndarray | None, seg: Path) -> None:
        if f"frames/{layer}" not in src:
            raise StoreError(f"{seg}: frames of {layer} are missing; use --overwrite to start afresh")
        data = datasets[f"frames/{layer}/data"]
        offsets_out = datasets[f"frames/{layer}/offsets"]
        offsets = read(src[f"frames/{layer}/offsets"], seg)
        values = read(src[f"frames/{layer}/data"], seg)
        if keep is not None:
            pieces = [values[offsets[i] : offsets[i + 1]] for i in np.flatnonzero(keep)]
            lengths = np.array([len(p) for p in pieces], dtype=np.int64)
            values = np.concatenate(pieces) if pieces else values[:0]
        else:
            lengths = np.diff(offsets)
        base = data.shape[0]
        if len(values):
            data.resize(base + len(values), axis=0)
            data[base:] = values
        append_1d(offsets_out, base + np.cumsum(lengths))


def consolidate(
    files: StoreFiles,
    *,
    settings: StoreSettings | None,
    empty_layout: Layout,
    empty_attrs: Mapping[str, Any],
    class_names: Sequence[str] | None,
    meta_schema: ColumnSchema | None = None,
) -> MergeResult:
    """Merge the finished segments into STORE.h5, discarding unreadable segments (with a warning).

    Caller holds the lock. With no segments and no store, writes an empty store.
    """
    discarded: set[Path] = set()
    while True:
        heads = []
        for path in files.segments():
            try:
                head = segment_head(path)
            except Corrupt as bad:
                discard(bad)
                continue
            if settings is not None:
                check_settings(head.attrs, settings, path, files.store)
            heads.append(head)
        merger = Merger(
            files,
            heads,
            empty_layout=empty_layout,
            empty_attrs=empty_attrs,
            class_names=class_names,
            meta_schema=meta_schema,
        )
        try:
            return merger.run()
        except Corrupt as bad:
            if bad.path in discarded:  # pragma: no cover - a discarded file cannot come back
                raise StoreError(str(bad)) from bad
            discarded.add(bad.path)
            discard(bad)  # and redo the merge without it


def discard(bad: Corrupt) -> None:
    log.warning("discarding unreadable segment %s (%s); its clips will be processed again", bad.path, bad.reason)
    unlink(bad.path)
