"""Joining finished stores (e.g. the shards of a job array) into one, atomically and resumably.

A finished store is structurally one big segment, so the join is a consolidation (``merge``)
whose segments are the input stores and whose store is the output: ``OUT.h5.tmp`` receives the
existing ``OUT.h5`` (if any, copied raw) and each input's new rows, then replaces ``OUT.h5``. The
inputs are only read, never changed or deleted.

- Raw chunk copies: feature chunks move verbatim (no decode/encode) when the output's row count
  is a multiple of the chunk height where they land (every chunk height divides 1,024). So each
  input without duplicate paths contributes its leading multiple of 1,024 rows, copied raw, after
  a few rows that complete the output's last chunk when it is partial (merging into an existing
  store), and its remaining (< 1,024) rows come after all those, decoded and re-encoded (see
  :func:`plan_parts`): the output's rows are not in input order (a store's row order carries no
  meaning; paths do). An input sharing paths with the output or an earlier input is appended
  whole, decoded (paths repeated inside one input are dropped by the same per-path check).
- Each path once: a path already in ``OUT.h5`` or in an earlier input keeps its first result
  row; a path that is an error in one place and a result in another keeps the result; duplicates
  are counted and reported.
- Inputs must have the same settings (``schema.SETTINGS_ATTRS``) and the same class names; a
  difference is refused naming the setting and both values. Compression may differ (the output
  keeps the first store's).
- Crash safety: ``OUT.h5`` is replaced only by a complete, fsync'd file under ``OUT.h5.lock``; a
  killed join leaves ``OUT.h5`` as it was (plus a stale temp file the next join removes), so
  re-running the same command gives the complete store, and joining into an existing output adds
  only the paths it lacks.
- Provenance: an extract run with ``--shard K/N`` records ``shard = "K/N"``; the joined store
  records the distinct shards of its parts (``"1/3; 2/3; 3/3"``), or none when a part was
  unsharded. The shard is a run attribute, not a feature setting: stores of different shards are
  what a join is for, and :func:`check_shard` refuses to resume a store with another shard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from .columns import ColumnType
from .files import Lock, StoreFiles, test_pause, unlink
from .layout import MAX_FEATURE_CHUNK_ROWS, Layout
from .merge import (
    Corrupt,
    Merger,
    MergeResult,
    SegmentHead,
    append_1d,
    append_matrix,
    read,
    segment_head,
)
from .schema import ATTR_JOIN, JSON_ATTRS, SETTINGS_ATTRS, read_attrs, read_strings

log = logging.getLogger(__name__)

SHARD_ATTR = "shard"
"""Root attribute: the shard (``K/N``) a store was extracted with, or the shards a join holds."""

ALIGN_ROWS = MAX_FEATURE_CHUNK_ROWS
"""Every feature chunk height divides it: parts of multiples of it are copied as raw chunks."""

PAUSE_POINT = "merge"
"""The ``test_pause`` point of a join: after each part of an input is in the temp file."""


@dataclass(frozen=True)
class JoinSummary:
    """What a join did; rows and errors are counts of paths."""

    output: Path
    inputs: int
    rows_added: int  # result rows new to the output
    total_rows: int
    total_errors: int
    duplicates: int  # input rows whose path an earlier input already had (kept once)
    already_there: int  # input paths the output held before this join
    raw_rows: int  # rows whose feature chunks were copied verbatim (no decode/encode)
    bytes_read: int  # sizes of the input files
    seconds: float


# -- provenance: the shard attribute --------------------------------------------------------


def shard_of(attrs: Mapping[str, Any]) -> str | None:
    value = attrs.get(SHARD_ATTR)
    return None if value in (None, "") else str(value)


def joined_shards(values: Sequence[str | None]) -> str | None:
    """The shard attribute of a join of parts with shard attributes ``values`` (None: unsharded)."""
    if not values or any(v is None for v in values):
        return None  # an unsharded part holds rows no shard describes
    distinct = {s for v in values for s in str(v).split(ATTR_JOIN)}

    def order(s: str) -> tuple[int, int, str]:
        k, _, n = s.partition("/")
        return (int(n), int(k), s) if k.isdigit() and n.isdigit() else (1 << 62, 0, s)

    return ATTR_JOIN.join(sorted(distinct, key=order))


def check_shard(store: str | os.PathLike, shard: str | None) -> None:
    """Refuse to resume ``store`` (or its unfinished segments) with another shard than it holds.

    ``shard`` is ``"K/N"`` or None for an unsharded run. A missing store is no conflict.
    """
    files = StoreFiles(Path(store))
    for path in [files.store, *files.segments()]:
        try:
            with h5py.File(path, "r") as f:
                have = shard_of(read_attrs(f))
        except FileNotFoundError:
            continue  # consolidated meanwhile, or no store yet
        except OSError as exc:  # unreadable: the writer reports (or discards) it with its own message
            log.debug("%s: shard not checked: %s", path, exc)
            continue
        if have != shard:
            what = f"shard {have}" if have else "all inputs (no --shard)"
            now = f"shard {shard}" if shard else "all inputs (no --shard)"
            raise StoreError(
                f"{files.store}: cannot resume: it was extracted with {what}, this run asks for {now}; "
                "give the same --shard, another -o, or --overwrite to start it afresh"
            )


# -- checks of the inputs ----------------------------------------------------------------


def _settings(attrs: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for key in SETTINGS_ATTRS:
        value = attrs.get(key)
        if key in JSON_ATTRS and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass  # compared as text: a store written by hand may hold any string
        values[key] = value
    return values


def check_same_settings(first: Path, first_attrs: Mapping[str, Any], other: Path, attrs: Mapping[str, Any]) -> None:
    """Refuse to join two stores whose settings differ, naming the first differing setting."""
    want, have = _settings(first_attrs), _settings(attrs)
    for key in SETTINGS_ATTRS:
        if want[key] != have[key]:
            if isinstance(want[key], dict) and isinstance(have[key], dict):
                keys = sorted(k for k in set(want[key]) | set(have[key]) if want[key].get(k) != have[key].get(k))
                detail = ", ".join(f"{k}: {want[key].get(k)!r} vs {have[key].get(k)!r}" for k in keys)
                raise StoreError(f"cannot merge {other} with {first}: their {key} differ ({detail})")
            raise StoreError(
                f"cannot merge {other} with {first}: their {key} differ ({json.dumps(have[key])} in {other}, "
                f"{json.dumps(want[key])} in {first}); stores are merged only when extracted with the same settings"
            )


def _input_head(path: Path) -> SegmentHead:
    if not path.is_file():
        raise StoreError(f"{path}: no such feature store")
    pending = StoreFiles(path).segments()
    if pending:
        raise StoreError(
            f"{path}: has {len(pending)} unconsolidated segment(s) in {path.name}.parts (its extract was "
            "interrupted or is running); re-run that extract command to finish the store, then merge"
        )
    try:
        return segment_head(path)
    except Corrupt as bad:
        raise StoreError(f"{path}: not a readable feature store ({bad.reason})") from bad


def _check_inputs(output: Path, inputs: Sequence[Path]) -> None:
    if not inputs:
        raise StoreError("nothing to merge: give the stores to join")
    seen: dict[tuple[int, int], Path] = {}
    for path in inputs:
        if not path.exists():
            raise StoreError(f"{path}: no such feature store")
        key = (path.stat().st_dev, path.stat().st_ino)
        if key in seen:
            raise StoreError(f"{path}: given twice (also as {seen[key]})")
        seen[key] = path
        if output.exists() and os.path.samefile(output, path):
            raise StoreError(f"{path}: is the output; the output is merged into, not listed as an input")


def _check_heads(heads: Sequence[SegmentHead], base: SegmentHead | None) -> None:
    """Same settings, class names, and labels/folds everywhere (checked before any writing)."""
    ref = base or heads[0]
    with_rows = [h for h in ([base] if base else []) + list(heads) if h.n_rows]
    for head in heads:
        check_same_settings(ref.path, ref.attrs, head.path, head.attrs)
    named = [h for h in ([base] if base else []) + list(heads) if h.class_names is not None]
    for head in named[1:]:
        if head.class_names != named[0].class_names:
            raise StoreError(
                f"cannot merge {head.path} with {named[0].path}: their class names differ "
                f"({len(head.class_names)} vs {len(named[0].class_names)} classes)"
            )
    for what in ("label", "fold"):
        has = {h.path: getattr(h, f"has_{what}") for h in with_rows}
        if len(set(has.values())) > 1:
            yes = next(p for p, v in has.items() if v)
            no = next(p for p, v in has.items() if not v)
            raise StoreError(f"cannot merge {no} with {yes}: the clips of one have {what}s, of the other not")


# -- the join ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part(SegmentHead):
    """Rows ``start:start + n_rows`` of an input store; the part with ``errors_too`` brings its error rows."""

    start: int = 0
    errors_too: bool = True


def plan_parts(
    heads: Sequence[SegmentHead], results: Sequence[Sequence[str]], existing: set[str], n_base: int
) -> list[Part]:
    """The inputs split into parts, in the order they are appended, for as many raw chunk copies as possible.

    Raw copies need the output's row count at a multiple of the chunk height where a part starts
    (every chunk height divides ALIGN_ROWS). Each input whose result paths are all new (neither
    the output nor an earlier input has them) is cut into: a few of its last rows that bring the
    output to a multiple of ALIGN_ROWS (only while it is not: "fillers", first), its leading
    multiple of ALIGN_ROWS rows (copied raw, next) and the rest (fewer than ALIGN_ROWS, decoded
    and re-encoded, last, in input order, with the inputs that have duplicates, whole). A clean
    input's paths are new, so moving its rows ahead changes which row is kept for no path.
    """
    seen = set(existing)
    need = -n_base % ALIGN_ROWS  # rows that bring the output to a chunk boundary
    fillers: list[Part] = []
    first: list[Part] = []
    rest: list[Part] = []
    for head, paths in zip(heads, results):
        clean = seen.isdisjoint(paths)
        seen.update(paths)
        fields = {f.name: getattr(head, f.name) for f in dataclasses.fields(SegmentHead)}
        mine: list[tuple[list[Part], int, int]] = []  # (where, start, rows)
        n = head.n_rows
        if clean and need and n:
            take = min(need, n)
            need, n = need - take, n - take
            mine.append((fillers, n, take))
        prefix = n // ALIGN_ROWS * ALIGN_ROWS if clean else 0
        if prefix:
            mine.append((first, 0, prefix))
        if n > prefix or not mine:
            mine.append((rest, prefix, n - prefix))
        for i, (where, start, rows) in enumerate(mine):
            # the input's error rows go with exactly one of its parts
            where.append(Part(**{**fields, "n_rows": rows}, start=start, errors_too=i == 0))
    return fillers + first + rest


class Joiner(Merger):
    """A consolidation whose segments are parts of finished stores that are kept (read, never deleted)."""

    keeps_inputs = True

    def __init__(self, files: StoreFiles, parts: Sequence[Part], existing: set[str], shard: str | None,
                 first: SegmentHead) -> None:
        # a new output takes the first input's layout and filters, whichever part is appended first
        super().__init__(files, parts, empty_layout=_layout_of(first.path), empty_attrs=first.attrs, class_names=None)
        self.existing = existing  # paths (results and errors) the output held before
        self.shard = shard
        self.seen: set[str] = set()
        self.duplicates = 0
        self.already_there = 0
        self.raw_rows = 0  # rows whose feature chunks were copied verbatim

    def run(self) -> MergeResult:
        try:
            return super().run()  # OUT.h5 untouched unless complete; the inputs are kept
        except Corrupt as bad:  # an input store is never discarded, unlike a segment
            raise StoreError(f"{bad.path}: cannot be merged: {bad.reason}") from bad

    def _build(self, out: h5py.File) -> MergeResult:
        result = super()._build(out)
        if self.shard is not None:
            out.attrs[SHARD_ATTR] = self.shard
        elif SHARD_ATTR in out.attrs:
            del out.attrs[SHARD_ATTR]
        return result

    def _append_segment(self, out, datasets, head: Part, done, errors, n_rows) -> int:
        try:
            src = h5py.File(head.path, "r")
        except OSError as exc:
            raise Corrupt(head.path, str(exc)) from exc
        with src:
            n_rows = self._append_part(out, datasets, src, head, done, errors, n_rows)
        test_pause(PAUSE_POINT)  # crash tests: a partial OUT.h5.tmp exists, OUT.h5 is untouched
        return n_rows

    def _append_part(self, out, datasets, src: h5py.File, head: Part, done, errors, n_rows: int) -> int:
        """Append one part's new rows (as ``Merger._append_segment`` does for a whole segment)."""
        lo, hi, seg = head.start, head.start + head.n_rows, head.path
        paths = [str(p) for p in read(src["clips/path"], seg, lo, hi)]
        keep = self._keep(paths, src, head, done, errors)

        def rows(values: np.ndarray) -> np.ndarray:
            return values if keep is None else values[keep]

        append_1d(datasets["clips/path"], rows(np.array(paths, dtype=object)))
        for name in ("duration", "sample_rate"):
            append_1d(datasets[f"clips/{name}"], rows(read(src[f"clips/{name}"], seg, lo, hi)))
        for name, has in (("label", head.has_label), ("fold", head.has_fold)):
            if self._optional_column(out, datasets, name, has, head, n_rows):
                append_1d(datasets[f"clips/{name}"], rows(read(src[f"clips/{name}"], seg, lo, hi)))
        for key in [k for k in datasets if k.startswith("clips/meta/")]:
            want = ColumnType.of_array(datasets[key])
            values = want.convert(read(src[key], seg, lo, hi)) if key in src else want.array([None] * head.n_rows)
            append_1d(datasets[key], rows(values))
        features = sorted(k for k in datasets if k.startswith("features/"))
        have = {f"features/{layer}/{pool}" for layer in src["features"] for pool in src["features"][layer]}
        if have != set(features):
            raise StoreError(f"{seg}: features {sorted(have)} differ from the output's {features}")
        raw = [append_matrix(datasets[key], src[key], keep, seg, lo, hi) for key in features]
        self.raw_rows += head.n_rows if raw and all(raw) else 0
        for layer in out.get("frames", {}):
            self._append_frame_rows(datasets, src, layer, head, keep)
        return n_rows + (len(paths) if keep is None else int(keep.sum()))

    def _append_frame_rows(self, datasets, src: h5py.File, layer: str, head: Part, keep: np.ndarray | None) -> None:
        if f"frames/{layer}" not in src:
            raise StoreError(f"{head.path}: frames of {layer} are missing")
        offsets = read(src[f"frames/{layer}/offsets"], head.path, head.start, head.start + head.n_rows + 1)
        values = read(src[f"frames/{layer}/data"], head.path, int(offsets[0]), int(offsets[-1]))
        lengths = np.diff(offsets)
        if keep is not None:
            starts = (offsets[:-1] - offsets[0])[keep]
            lengths = lengths[keep]
            pieces = [values[a : a + n] for a, n in zip(starts, lengths)]
            values = np.concatenate(pieces) if pieces else values[:0]
        data = datasets[f"frames/{layer}/data"]
        base = data.shape[0]
        if len(values):
            data.resize(base + len(values), axis=0)
            data[base:] = values
        append_1d(datasets[f"frames/{layer}/offsets"], base + np.cumsum(lengths))

    def _count(self, paths) -> None:
        for p in paths:
            if p in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(p)
            self.already_there += p in self.existing

    def _keep(self, paths, seg, head: Part, done, errors):
        """As consolidation: a result's first row wins and replaces error rows; counts duplicates."""
        error_paths = [str(p) for p in read(seg["errors/path"], head.path)] if head.errors_too else []
        self._count([*paths, *error_paths])
        keep = [p not in done for p in paths]
        for p, fresh in zip(paths, keep):
            if fresh:
                done.add(p)
                errors.pop(p, None)
        messages = read(seg["errors/message"], head.path) if head.errors_too else []
        for p, m in zip(error_paths, messages):
            if p not in done and p not in errors:  # the first error message of a path is kept
                errors[p] = str(m)
        return None if all(keep) else np.array(keep, dtype=bool)


def _layout_of(path: Path) -> Layout:
    with h5py.File(path, "r") as f:
        return Layout.of(f)


def _output_state(files: StoreFiles) -> tuple[SegmentHead | None, set[str], set[str]]:
    """The existing output (as a head, for the checks) and the result and error paths it holds."""
    if files.segments():
        raise StoreError(
            f"{files.store}: has unconsolidated segments of an interrupted extract; re-run that extract "
            "to finish it, or merge into another output"
        )
    if not files.store.exists():
        return None, set(), set()
    try:
        head = segment_head(files.store)
    except Corrupt as bad:
        raise StoreError(f"{files.store}: the existing output is not a readable feature store ({bad.reason})") from bad
    with h5py.File(files.store, "r") as f:
        return head, set(read_strings(f["clips/path"])), set(read_strings(f["errors/path"]))


def _result_paths(head: SegmentHead) -> list[str]:
    try:
        with h5py.File(head.path, "r") as f:
            return read_strings(f["clips/path"])
    except (OSError, KeyError) as exc:
        raise StoreError(f"{head.path}: cannot read its paths: {exc}") from exc


def join_stores(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> JoinSummary:
    """Join the finished stores ``inputs`` into ``output`` (created, or added to); see the module doc."""
    started = time.perf_counter()
    out = Path(output)
    paths = [Path(p) for p in inputs]
    _check_inputs(out, paths)
    heads = [_input_head(p) for p in paths]
    files = StoreFiles(out)
    lock = Lock(files)
    try:
        for stale in files.stale_tmps():
            log.info("removing %s left by an interrupted run", stale)
            unlink(stale)
        base, results, errors = _output_state(files)
        _check_heads(heads, base)
        before = base.n_rows if base is not None else 0
        sources = ([base] if base is not None and (results or errors) else []) + heads
        parts = plan_parts(heads, [_result_paths(h) for h in heads], results, before)
        joiner = Joiner(files, parts, results | errors, joined_shards([shard_of(h.attrs) for h in sources]), heads[0])
        result = joiner.run()
    finally:
        lock.release()
    return JoinSummary(
        out,
        len(heads),
        result.total_rows - before,
        result.total_rows,
        result.total_errors,
        joiner.duplicates,
        joiner.already_there,
        joiner.raw_rows,
        sum(p.stat().st_size for p in paths),
        time.perf_counter() - started,
    )

