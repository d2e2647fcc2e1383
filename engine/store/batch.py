"""Rows of a store held in memory (a segment, or a whole store), and writing a complete store from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .files import NewFile
from .layout import Filters, Layout, create_column, create_matrix, create_strings
from .schema import frame_attrs


@dataclass
class Batch:
    """Row-aligned arrays of one store's worth of clips, plus its error rows."""

    paths: list[str]
    durations: np.ndarray
    sample_rates: np.ndarray
    meta: dict[str, np.ndarray]
    labels: np.ndarray | None
    folds: np.ndarray | None
    features: dict[tuple[str, str], np.ndarray]
    frames: dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (data (F, C), offsets (N+1,))
    errors: list[tuple[str, str]]

    @classmethod
    def empty(cls, layout: Layout) -> Batch:
        return cls(
            [],
            np.zeros(0, np.float64),
            np.zeros(0, np.int32),
            {},
            None,
            None,
            {k: np.zeros((0, s.channels), np.float32) for k, s in layout.features.items()},
            {k: (np.zeros((0, s.channels), np.float32), np.zeros(1, np.int64)) for k, s in layout.frames.items()},
            [],
        )


def write_errors(f: h5py.File, errors: Sequence[tuple[str, str]], filters: Filters) -> None:
    group = f.require_group("errors")
    create_strings(group, "path", [p for p, _ in errors], filters)
    create_strings(group, "message", [m for _, m in errors], filters)


def populate(
    f: h5py.File, rows: Batch, layout: Layout, attrs: Mapping[str, Any], class_names: Sequence[str] | None
) -> None:
    """Write every dataset of a complete store holding ``rows`` into the empty file ``f``."""
    clips = f.create_group("clips")
    create_strings(clips, "path", rows.paths, layout.columns)
    create_column(clips, "duration", np.asarray(rows.durations, np.float64), layout.columns)
    create_column(clips, "sample_rate", np.asarray(rows.sample_rates, np.int32), layout.columns)
    meta = clips.create_group("meta")
    for name, values in rows.meta.items():
        create_column(meta, name, values, layout.columns)
    if rows.labels is not None:
        create_column(clips, "label", np.asarray(rows.labels, np.int64), layout.columns)
    if rows.folds is not None:
        create_column(clips, "fold", np.asarray(rows.folds, np.int64), layout.columns)
    if class_names is not None:
        create_strings(f.create_group("classes"), "name", class_names, layout.columns)
    features = f.create_group("features")
    for (layer, pool), spec in layout.features.items():
        create_matrix(features.require_group(layer), pool, rows.features[(layer, pool)], spec)
    if layout.frames:
        frames = f.create_group("frames")
        for layer, spec in layout.frames.items():
            data, offsets = rows.frames[layer]
            group = frames.create_group(layer)
            group.attrs.update(frame_attrs(layer))
            create_matrix(group, "data", data, spec)
            create_column(group, "offsets", np.asarray(offsets, np.int64), layout.columns)
    write_errors(f, rows.errors, layout.columns)
    for key, value in attrs.items():
        f.attrs[key] = value


def write_file(
    path: Path, rows: Batch, layout: Layout, attrs: Mapping[str, Any], class_names: Sequence[str] | None
) -> None:
    """Write a complete store to ``path``; on failure no partial file is left under that name."""
    with NewFile(path) as f:  # removes a partial file; a full disk is a StoreError
        populate(f, rows, layout, attrs, class_names)
