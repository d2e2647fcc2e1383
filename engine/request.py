"""What to compute for every clip: layers, poolings over time, and the layers kept frame by frame.

The one place a layers/pools/frames request is validated and put in canonical order (layers in
``arch.OUTPUTS`` order, pools mean/max/std), used by the runner (:class:`Request`) and by the
store's settings, so the two can never disagree about what a valid request is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import arch
from .errors import SoundNetError


class Pool(str, enum.Enum):
    """A reduction over time; the store keeps it under /features/<layer>/<pool>."""

    MEAN = "mean"
    MAX = "max"
    STD = "std"


POOL_ORDER: tuple[str, ...] = tuple(p.value for p in Pool)
"""Pool names in canonical order (the order of :class:`Pool`)."""


def canonical_layers(layers: Iterable[str]) -> tuple[str, ...]:
    """``layers`` as known SoundNet outputs in ``arch.OUTPUTS`` order, each once."""
    layers = tuple(layers)
    unknown = [layer for layer in layers if layer not in arch.OUTPUTS]
    if unknown:
        raise SoundNetError(f"unknown layer(s) {unknown}; the layers are {list(arch.OUTPUTS)}")
    if not layers:
        raise SoundNetError("no layers requested")
    return tuple(o for o in arch.OUTPUTS if o in set(layers))


def canonical_pools(pools: Iterable[str | Pool]) -> tuple[Pool, ...]:
    """``pools`` (names or members) as :class:`Pool` members in canonical order, each once."""
    members = set()
    for p in pools:
        try:
            members.add(Pool(p))
        except ValueError:
            raise SoundNetError(f"unknown pool {p!r}; the pools are {list(POOL_ORDER)}") from None
    if not members:
        raise SoundNetError("no pools requested")
    return tuple(p for p in Pool if p in members)


def canonical_frames(frames: Sequence[str] | bool, layers: tuple[str, ...]) -> tuple[str, ...]:
    """The layers kept frame by frame: True = all of ``layers``, False = none, else a subset."""
    if isinstance(frames, (bool, np.bool_)):
        return layers if frames else ()
    extra = [layer for layer in frames if layer not in layers]
    if extra:
        raise SoundNetError(f"frames requested for {extra}, which are not among the layers {list(layers)}")
    return tuple(layer for layer in layers if layer in frames)


@dataclass(frozen=True)
class Request:
    """What to compute for every clip; normalised to canonical order at construction."""

    layers: tuple[str, ...] = arch.OUTPUTS
    pools: tuple[Pool, ...] = (Pool.MEAN,)
    frames: tuple[str, ...] | bool = ()  # layers whose frames are kept too; True = all of ``layers``

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__ once, at construction
        object.__setattr__(self, "layers", canonical_layers(self.layers))
        object.__setattr__(self, "pools", canonical_pools(self.pools))
        object.__setattr__(self, "frames", canonical_frames(self.frames, self.layers))
