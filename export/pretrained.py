"""The pretrained SoundNet8 as an ONNX file in one call (what ``soundnet8 export`` runs).

Loads and verifies the original weights, then exports them; without an output path the file goes
where the engine's model cache expects it (keyed by the weights' hash), so the engine finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from soundnet8.engine.modelfile import cached_model_path

from .onnx_export import export_onnx
from .weights import load_weights


@dataclass(frozen=True)
class ExportedModel:
    path: Path  # the ONNX file written
    weights_sha256: str  # the hash of the weights it holds


def export_pretrained(output: Path | None = None, weights: Path | None = None, *,
                      conv2d: bool = False) -> ExportedModel:
    """Export the pretrained weights (``weights``: sound8.npy, default resolved as load_weights does)
    to ``output`` (default: the engine's model cache); ``conv2d``: the PyTorch ports' (k, 1) layout."""
    loaded = load_weights(weights)
    path = export_onnx(output or cached_model_path(loaded.sha256), loaded, conv2d=conv2d)
    return ExportedModel(path, loaded.sha256)
