"""numpy's percentile (method "linear") replicated step by step, so thresholds match it bit for bit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import StatsError


def check_q(q: Any) -> float:
    """``q`` as a float in [0, 100], or :class:`StatsError`."""
    try:
        value = float(q)
    except (TypeError, ValueError) as exc:
        raise StatsError(f"percentile must be a number in [0, 100], not {q!r}") from exc
    if not 0.0 <= value <= 100.0:  # also rejects NaN
        raise StatsError(f"percentile must be in [0, 100], not {q!r}")
    return value


@dataclass(frozen=True)
class Interpolation:
    """The two order statistics numpy interpolates between, and its weight."""

    low: int  # rank (0-based) of the lower order statistic
    high: int  # rank of the upper one
    gamma: float  # numpy's interpolation weight, as numpy computes it


def interpolation(n: int, q: float) -> Interpolation:
    """numpy 2.x ``_quantile`` for method="linear" and a Python-float q, step by step.

    The virtual index is ``(n - 1) * (q / 100)`` in float64; at or past the last index numpy takes
    the last value twice *and* keeps gamma = virtual - (-1) (its "-1" index), which only matters
    through its lerp (e.g. inf - inf). Reproducing these steps keeps gamma bit-identical.
    """
    quantile = np.true_divide(q, 100)
    virtual = (n - 1) * quantile
    if virtual >= n - 1:
        previous = -1
        low = high = n - 1
    else:
        previous = int(np.floor(virtual))
        low, high = previous, previous + 1
    gamma = float(virtual - np.intp(previous))
    return Interpolation(low, high, gamma)


def numpy_lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's ``_lerp`` verbatim: same ufuncs, same operand types (a Python-float weight keeps
    float32 arithmetic float32), hence the same rounding."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf -> NaN, as numpy returns it
        diff_b_a = b - a
        out = np.add(a, diff_b_a * t)
        np.subtract(b, diff_b_a * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=type(out.dtype))
    return out


def seed_denominator(n: int, q: float) -> float:
    """The seed's expected number of activations of a neuron over ``n`` clips at percentile ``q``."""
    # n * (100 - q) / 100 rather than n * (1 - q / 100): exactly 100.0 for the seed's 2000 clips.
    return n * (100.0 - q) / 100.0
