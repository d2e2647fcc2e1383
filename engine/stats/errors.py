"""The statistics' error type: a :class:`~soundnet8.engine.errors.SoundNetError` like every other."""

from __future__ import annotations

from ..errors import SoundNetError


class StatsError(SoundNetError):
    """Neuron statistics cannot be computed: bad input, NaN in the features, too small a budget."""
