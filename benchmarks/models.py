"""The ONNX files the benchmarks compare: the engine's Conv1d export and the Conv2d (k, 1) layout.

The engine's model comes from ``ensure_model`` (its cache or ``--model``); the Conv2d export (the
layout of the common PyTorch ports of SoundNet) is built once with torch into a cache next to it.
"""

from __future__ import annotations

import enum
import fcntl
from pathlib import Path

from soundnet8.engine.modelfile import ModelInfo, cache_dir, ensure_model, package_version


class ModelVariant(enum.Enum):
    CONV1D = "conv1d"  # the engine's export
    CONV2D = "conv2d"  # Conv2d with (k, 1) kernels, as the PyTorch ports of SoundNet


def variant_path(variant: ModelVariant, engine_model: ModelInfo) -> Path:
    """The ONNX file of ``variant``; the Conv2d one is exported on first use (needs torch)."""
    if variant is ModelVariant.CONV1D:
        return engine_model.path
    target = cache_dir().parent / "bench" / f"soundnet8-{package_version()}-{engine_model.weights_sha256[:16]}-{variant.value}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent benchmark runs export it once
        if not target.is_file():
            from soundnet8.export.onnx_export import export_onnx

            export_onnx(target, conv2d=True)
    return target


def engine_model(path: str | None = None) -> ModelInfo:
    return ensure_model(path)
