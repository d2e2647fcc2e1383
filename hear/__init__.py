"""soundnet8.hear: SoundNet8 through the HEAR 2021 API (``hear-validator soundnet8.hear``).

``load_model``, ``get_timestamp_embeddings`` and ``get_scene_embeddings`` as HEAR 2021 defines them;
see :mod:`soundnet8.hear.model` for the measured choice of layers and hop. They need torch
(``pip install 'soundnet8[hear]'``) for the tensors the API exchanges; inference is ONNX Runtime.
:mod:`soundnet8.hear.task` writes HEAR task folders and does not need torch, so the names below are
imported lazily.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "Model": "model",
    "load_model": "model",
    "get_scene_embeddings": "model",
    "get_timestamp_embeddings": "model",
    "HearTaskOptions": "task",
    "write_hear_task": "task",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
