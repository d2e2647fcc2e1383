"""The store's format (version 1): its settings, root attributes, value types, and structure checks.

See the package docstring (``soundnet8.engine.store``) for the datasets and their types.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..arch import RECEPTIVE_FIELDS, SAMPLE_RATE
from ..errors import SoundNetError, StoreError
from ..request import canonical_frames, canonical_layers, canonical_pools

FORMAT_VERSION = 1
"""Version of the schema; a reader refuses stores with another version."""

ACCUMULATED_ATTRS = ("soundnet8_version", "provider", "onnxruntime_version", "graph_variant")
"""Run attributes whose distinct values across merged runs are all kept ("; "-joined)."""

ATTR_JOIN = "; "
SETTINGS_ATTRS = ("layers", "pools", "frames", "preprocessing", "weights_sha256", "onnx_sha256")
"""Root attributes a resumed run must match exactly."""

JSON_ATTRS = ("preprocessing", "layers", "pools", "frames")
"""Root attributes stored as JSON text."""

RESERVED_ATTRS = (*SETTINGS_ATTRS, "format_version", "created", "updated", "compression")
"""Root attributes set by the store itself, never by a run's extra attributes."""


FRAME_TIMING_ATTRS = ("hop_samples", "hop_seconds", "first_centre_samples", "first_centre_seconds", "sample_rate")
"""Attributes of each /frames/<layer> group of a SoundNet output: when its frames are centred.
Stores written before them lack them; readers then take the same values from ``arch``."""


class Compression(str, enum.Enum):
    """Filter of the /features, /frames and numeric /clips datasets."""

    GZIP = "gzip"  # portable: every HDF5 build reads it
    LZF = "lzf"  # ~3.5x faster to write, ~25% larger; readable by h5py and PyTables only


def canonical_json(value: Any, what: str) -> str:
    """``value`` as JSON text that is the same for equal values (sorted keys, no NaN)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must be JSON-serialisable: {exc}") from exc


@dataclass(frozen=True)
class StoreSettings:
    """What a store is made of; a resumed run must match it exactly (it goes into root attrs).

    Layers, pools and frames are validated and put in canonical order by
    ``soundnet8.engine.request`` (the rules the runner's ``Request`` follows), so the order they
    were requested in does not matter. Pools are kept as their names.
    """

    layers: tuple[str, ...]
    pools: tuple[str, ...]
    frames: tuple[str, ...] | bool  # layers with frame-level outputs; True = every layer, False = none
    preprocessing: Mapping[str, Any]
    weights_sha256: str
    onnx_sha256: str
    compression: Compression = Compression.GZIP

    def __post_init__(self) -> None:
        try:
            layers = canonical_layers(self.layers)
            pools = tuple(p.value for p in canonical_pools(self.pools))
            frames = canonical_frames(self.frames, layers)
        except SoundNetError as exc:  # a store's settings fail as the store does
            raise StoreError(str(exc)) from None
        # frozen: normalise through object.__setattr__ once, at construction
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "pools", pools)
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "compression", Compression(self.compression))
        canonical_json(dict(self.preprocessing), "preprocessing")

    @property
    def feature_keys(self) -> tuple[tuple[str, str], ...]:
        return tuple((layer, pool) for layer in self.layers for pool in self.pools)

    def attrs(self) -> dict[str, Any]:
        """The root attributes that record these settings."""
        return {
            "layers": json.dumps(list(self.layers)),
            "pools": json.dumps(list(self.pools)),
            "frames": json.dumps(list(self.frames)),
            "preprocessing": canonical_json(dict(self.preprocessing), "preprocessing"),
            "weights_sha256": str(self.weights_sha256),
            "onnx_sha256": str(self.onnx_sha256),
        }


@dataclass(frozen=True)
class FrameTiming:
    """When the frames of one layer are centred on the model input.

    Frame j of a clip is centred on model-input sample ``first_centre_samples + j * hop_samples``,
    counted from the input's first sample, which is the clip's first sample (tiling appends copies
    after it; windows of long inputs keep the whole input's frame grid). It is the middle of the
    frame's receptive field, padding included (``arch.frame_centre``), so it can be negative. The
    ``*_seconds`` values divide by ``sample_rate``, the model's 22,050 Hz.
    """

    hop_samples: int
    first_centre_samples: float
    sample_rate: int = SAMPLE_RATE

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def first_centre_seconds(self) -> float:
        return self.first_centre_samples / self.sample_rate

    @classmethod
    def of_layer(cls, layer: str) -> FrameTiming | None:
        """From the layer arithmetic; None for a layer that is not a SoundNet output."""
        field = RECEPTIVE_FIELDS.get(layer)
        return None if field is None else cls(field.stride, field.centre)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> FrameTiming | None:
        """As recorded on a /frames/<layer> group; None when it records none (an older store)."""
        if "hop_samples" not in attrs or "first_centre_samples" not in attrs:
            return None
        rate = attrs.get("sample_rate", SAMPLE_RATE)
        return cls(int(attrs["hop_samples"]), float(attrs["first_centre_samples"]), int(rate))

    def attrs(self) -> dict[str, int | float]:
        """The FRAME_TIMING_ATTRS values."""
        return {
            "hop_samples": int(self.hop_samples),
            "hop_seconds": float(self.hop_seconds),
            "first_centre_samples": float(self.first_centre_samples),
            "first_centre_seconds": float(self.first_centre_seconds),
            "sample_rate": int(self.sample_rate),
        }


def frame_attrs(layer: str) -> dict[str, int | float]:
    """The attributes of a new /frames/<layer> group (none for a layer that is not a SoundNet output)."""
    timing = FrameTiming.of_layer(layer)
    return {} if timing is None else timing.attrs()


@dataclass(frozen=True)
class ClipResult:
    """One processed clip, as produced by the pipeline."""

    path: str
    duration: float
    sample_rate: int
    meta: Mapping[str, object]
    features: Mapping[tuple[str, str], np.ndarray]  # (layer, pool) -> (C,) float32
    frames: Mapping[str, np.ndarray] | None  # layer -> (T, C) float32, when settings.frames
    label: int | None = None
    fold: int | None = None


@dataclass(frozen=True)
class ClipError:
    """An input that could not be processed; recorded under /errors and not retried by default."""

    path: str
    message: str


@dataclass(frozen=True)
class StoreSummary:
    """What a writer did: rows and errors it added, and the store's totals afterwards."""

    path: Path
    rows_added: int
    errors_added: int
    total_rows: int
    total_errors: int


# --------------------------------------------------------------------------------------------
# attributes and text
# --------------------------------------------------------------------------------------------


def now() -> str:
    """The current time as ISO-8601 UTC (the ``created``/``updated`` attributes)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def attr_value(value: Any) -> Any:
    """An HDF5 root-attribute value as plain Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_attrs(f: h5py.File) -> dict[str, Any]:
    return {k: attr_value(v) for k, v in f.attrs.items()}


def accumulate(old: object, new: object) -> object:
    """Join the distinct values of an ACCUMULATED_ATTRS attribute, in order of first use."""
    if new is None or new == "":
        return old
    if old is None or old == "":
        return new
    parts = str(old).split(ATTR_JOIN)
    return old if str(new) in parts else ATTR_JOIN.join([*parts, str(new)])


def read_strings(ds: h5py.Dataset) -> list[str]:
    return ds.asstr()[()].tolist() if ds.shape[0] else []


def read_class_names(f: h5py.File) -> tuple[str, ...] | None:
    if "classes/name" not in f:
        return None
    return tuple(f["classes/name"].asstr()[()].tolist())


# --------------------------------------------------------------------------------------------
# checks of a store's version, structure and settings
# --------------------------------------------------------------------------------------------


def check_version(attrs: Mapping[str, Any], path: Path) -> None:
    if "format_version" not in attrs:
        raise StoreError(f"{path}: not a soundnet8 feature store (no format_version attribute)")
    if attrs["format_version"] != FORMAT_VERSION:
        raise StoreError(
            f"{path}: feature store format_version {attrs['format_version']} is not supported "
            f"(this soundnet8 reads version {FORMAT_VERSION})"
        )


def _malformed(path: Path, what: str) -> StoreError:
    return StoreError(f"{path}: malformed feature store: {what}")


def check_structure(f: h5py.File, path: Path) -> int:
    """Check the datasets a store must have and their row counts; return the number of rows."""
    for name in ("clips/path", "clips/duration", "clips/sample_rate", "features", "errors/path", "errors/message"):
        if name not in f:
            raise _malformed(path, f"/{name} is missing")
    n = f["clips/path"].shape[0]
    rows = ["clips/duration", "clips/sample_rate"] + [f"clips/meta/{c}" for c in f.get("clips/meta", {})]
    rows += [f"clips/{c}" for c in ("label", "fold") if f"clips/{c}" in f]
    for layer, group in f["features"].items():
        rows += [f"features/{layer}/{pool}" for pool in group]
    for name in rows:
        if f[name].shape[0] != n:
            raise _malformed(path, f"/{name} has {f[name].shape[0]} rows, /clips/path {n}")
    for layer, group in f.get("frames", {}).items():
        offsets = group["offsets"]
        if offsets.shape[0] != n + 1:
            raise _malformed(path, f"/frames/{layer}/offsets has {offsets.shape[0]} rows, expected {n + 1}")
        if int(offsets[-1]) != group["data"].shape[0]:
            raise _malformed(
                path, f"/frames/{layer} offsets end at {int(offsets[-1])}, data has {group['data'].shape[0]} rows"
            )
    if f["errors/path"].shape != f["errors/message"].shape:
        raise _malformed(path, "/errors/path and /errors/message differ in length")
    return n


def _json_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def settings_differences(attrs: Mapping[str, Any], settings: StoreSettings) -> list[str]:
    """Human-readable differences between a store's recorded settings and ``settings``."""
    want = settings.attrs()
    diffs = []
    for key in SETTINGS_ATTRS:
        have = attrs.get(key)
        if key not in JSON_ATTRS or not isinstance(have, str):
            if have != want[key]:
                diffs.append(f"{key} ({have!r} in the store, {want[key]!r} now)")
            continue
        have_value, want_value = _json_or_text(have), json.loads(want[key])
        if key == "preprocessing" and isinstance(have_value, dict):
            changed = sorted(k for k in set(have_value) | set(want_value) if have_value.get(k) != want_value.get(k))
            if changed:
                detail = ", ".join(f"{k}: {have_value.get(k)!r} -> {want_value.get(k)!r}" for k in changed)
                diffs.append(f"preprocessing ({detail})")
        elif have_value != want_value:
            diffs.append(f"{key} ({have_value} in the store, {want_value} now)")
    return diffs


def check_settings(attrs: Mapping[str, Any], settings: StoreSettings, path: Path, store: Path) -> None:
    diffs = settings_differences(attrs, settings)
    if diffs:
        raise StoreError(
            f"{path}: cannot resume: {'; '.join(diffs)} differ from this run's settings; "
            f"use --overwrite to start {store} afresh (this deletes it)"
        )
