"""soundnet8.engine: SoundNet8 feature extraction with ONNX Runtime into HDF5 feature stores.

The public names below are imported lazily (``soundnet8.engine.FeatureStore`` loads h5py only when
used), so importing the package has no cost and no side effects. The engine never imports torch.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "FeatureStore": "store",
    "write_arrays": "store",
    "extract": "pipeline",
    "ExtractOptions": "pipeline",
    "Layout": "pipeline",
    "Request": "runner",
    "Pool": "runner",
    "Runner": "runner",
    "Preprocessing": "audio",
    "SampleRateMode": "audio",
    "Mix": "audio",
    "load": "audio",
    "discover": "inputs",
    "read_manifest": "inputs",
    "Provider": "session",
    "SessionConfig": "session",
    "create_session": "session",
    "ensure_model": "modelfile",
    "SoundNetError": "errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
