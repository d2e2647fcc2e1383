"""Errors of the analysis package (all :class:`~soundnet8.engine.errors.SoundNetError`)."""

from __future__ import annotations

from soundnet8.engine.errors import SoundNetError


class AnalysisError(SoundNetError):
    """An analysis cannot run on the data it was given (shapes, labels, folds, options)."""
