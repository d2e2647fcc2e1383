"""The one exception type of soundnet8.

Every error the package raises on purpose is a :class:`SoundNetError` (or a subclass), so callers
can catch one type; messages name the file or object concerned and say what is wrong.
"""

from __future__ import annotations

from pathlib import Path


class SoundNetError(Exception):
    """Base class of every deliberate soundnet8 error."""


class WeightsError(SoundNetError):
    """The pretrained weights are missing, altered, or not the expected arrays."""


class ModelError(SoundNetError):
    """The ONNX model cannot be built, found, or run (including provider problems)."""


class AudioError(SoundNetError):
    """One audio file cannot be turned into a model input; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StoreError(SoundNetError):
    """A feature store is missing, malformed, or incompatible with the request."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency lazily, with a message saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SoundNetError(
            f"this feature needs the Python package {module!r}: pip install 'soundnet8[{extra}]'"
        ) from exc
