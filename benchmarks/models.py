"""The ONNX files the benchmarks compare: the engine's Conv1d export, the Conv2d (k, 1) layout, and
the MatMul rewrites of :mod:`soundnet8.export.variants` (the engine's graph variants).

The engine's model comes from ``ensure_model`` (its cache or ``--model``); the others are built once
into a cache next to it (the Conv2d export, the layout of the common PyTorch ports, needs torch).
"""

from __future__ import annotations

import enum
import fcntl
import logging
from dataclasses import dataclass
from pathlib import Path

from soundnet8.engine.modelfile import ModelInfo, cache_dir, ensure_model
from soundnet8.engine.version import package_version

log = logging.getLogger(__name__)


class ModelVariant(enum.Enum):
    CONV1D = "conv1d"  # the engine's export
    CONV2D = "conv2d"  # Conv2d with (k, 1) kernels, as the PyTorch ports of SoundNet
    MM_CONV1 = "mm-conv1"  # conv1 + pool as one MatMul (variants.pooled_convs_matmul, 1 block)
    MM_CONV12 = "mm-conv12"  # conv1 and conv2 + pools as MatMuls
    MM_HEADS = "mm-heads"  # both conv8 heads as one MatMul
    MM_ALL = "mm-all"  # conv1, conv2 and the heads rewritten


def _rewrite(variant: ModelVariant, source: Path, target: Path) -> str:
    import onnx

    from soundnet8.export import variants as rewrites

    model = onnx.load(str(source))
    if variant in (ModelVariant.MM_CONV1, ModelVariant.MM_CONV12, ModelVariant.MM_ALL):
        # Two frames per MatMul row for conv1 measured fastest here (fewer, longer rows to gather).
        blocks = 1 if variant is ModelVariant.MM_CONV1 else 2
        model = rewrites.pooled_convs_matmul(model, blocks, groups=(2, 1))
    if variant in (ModelVariant.MM_HEADS, ModelVariant.MM_ALL):
        model = rewrites.heads_matmul(model)
    onnx.save(model, str(target))
    return f"export.variants rewrites of {source.name}"


@dataclass(frozen=True)
class VariantFile:
    path: Path
    note: str  # how it was made, e.g. a fallback taken


def _note_path(target: Path) -> Path:
    return target.with_suffix(".note")


def _export_conv2d(target: Path) -> str:
    from soundnet8.export.onnx_export import export_onnx

    try:
        export_onnx(target, conv2d=True)
        return "export_onnx(conv2d=True)"
    except RuntimeError as exc:
        # export_onnx's head guard expects the heads to end in Conv nodes; the Conv2d graph ends them
        # in Squeeze. Every benchmark input is longer than the heads need, so the plain traced graph
        # (no If guard) computes the same outputs.
        log.warning("export_onnx(conv2d=True) failed (%s): using the unguarded traced graph", exc)
        import onnx

        from soundnet8.export.onnx_export import trace_to_onnx
        from soundnet8.export.weights import load_weights

        onnx.save(trace_to_onnx(load_weights(), conv2d=True), str(target))
        return f"unguarded trace (export_onnx(conv2d=True) failed: {exc})"


def variant_file(variant: ModelVariant, engine_model: ModelInfo) -> VariantFile:
    """The ONNX file of ``variant``, made on first use (the Conv2d export needs torch; rewrites do not).

    Rewrites are keyed by the engine model's sha256, so a new export gets new rewrites."""
    if variant is ModelVariant.CONV1D:
        return VariantFile(engine_model.path, "the engine's model")
    key = engine_model.weights_sha256[:16] if variant is ModelVariant.CONV2D else engine_model.sha256[:16]
    target = cache_dir().parent / "bench" / f"soundnet8-{package_version()}-{key}-{variant.value}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent benchmark runs export it once
        if not target.is_file():
            if variant is ModelVariant.CONV2D:
                note = _export_conv2d(target)
            else:
                note = _rewrite(variant, engine_model.path, target)
            _note_path(target).write_text(note)
    note = _note_path(target)
    return VariantFile(target, note.read_text() if note.is_file() else "cached")


def engine_model(path: str | None = None) -> ModelInfo:
    return ensure_model(path)
