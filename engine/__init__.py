"""soundnet8.engine: SoundNet8 feature extraction with ONNX Runtime into HDF5 feature stores.

The public names below are imported lazily (``soundnet8.engine.FeatureStore`` loads h5py only when
used), so importing the package has no cost and no side effects. The engine never imports torch.
"""

from __future__ import annotations

from .lazy import lazy_attributes

_PUBLIC = {
    "FeatureStore": "store",
    "write_arrays": "store",
    "extract": "pipeline",
    "ExtractOptions": "pipeline",
    "Layout": "pipeline",
    "Request": "request",
    "Pool": "request",
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

__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
