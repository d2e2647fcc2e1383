"""The package's version, looked up once (stores, the model cache key, reports and ``--version``)."""

from __future__ import annotations

import functools

UNKNOWN_VERSION = "unknown"


@functools.cache
def package_version() -> str:
    """The installed soundnet8 distribution's version, or "unknown" in a bare source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("soundnet8")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled source tree
        return UNKNOWN_VERSION
