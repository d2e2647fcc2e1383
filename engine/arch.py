"""SoundNet8's layer arithmetic, free of any framework.

The original Torch7 SoundNet (Aytar, Vondrick & Torralba, 2016) is a stack of 1-D convolutions over
the raw 22,050 Hz waveform. The engine needs its arithmetic (output lengths, total stride, minimum
input lengths) without torch; ``soundnet8.export.model`` builds the network from the same table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLE_RATE = 22_050
"""The rate SoundNet was trained at (Hz)."""

INPUT_SCALE = 256.0
"""Waveforms in [-1, 1] are multiplied by this (the original loader's scaling) and clipped to ±it."""

BN_EPS = 1e-5
"""BatchNorm epsilon of the converted Torch7 model."""


@dataclass(frozen=True)
class ConvSpec:
    """One convolution block: conv (+ BatchNorm + ReLU unless it is a head) (+ max-pool)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    pool: int = 1  # max-pool kernel == stride; 1 means no pooling
    batchnorm: bool = True

    def conv_length(self, length: int) -> int:
        """Output frames of the convolution for ``length`` input frames (<= 0: no output)."""
        return (length + 2 * self.padding - self.kernel) // self.stride + 1

    def length(self, length: int) -> int:
        """Output frames of the whole block (convolution then floor-mode pooling)."""
        n = self.conv_length(length)
        return n // self.pool if n > 0 else n


def _trunk(name: str, cin: int, cout: int, kernel: int, pool: int = 1) -> ConvSpec:
    # Torch7 SoundNet: stride 2 and padding kernel/2 for every trunk convolution.
    return ConvSpec(name, cin, cout, kernel, stride=2, padding=kernel // 2, pool=pool)


TRUNK: tuple[ConvSpec, ...] = (
    _trunk("conv1", 1, 16, 64, pool=8),
    _trunk("conv2", 16, 32, 32, pool=8),
    _trunk("conv3", 32, 64, 16),
    _trunk("conv4", 64, 128, 8),
    _trunk("conv5", 128, 256, 4, pool=4),
    _trunk("conv6", 256, 512, 4),
    _trunk("conv7", 512, 1024, 4),
)
"""The seven convolution blocks; each is followed by BatchNorm and ReLU."""

HEADS: tuple[ConvSpec, ...] = (
    ConvSpec("conv8", 1024, 1000, 8, stride=2, padding=0, batchnorm=False),
    ConvSpec("conv8_2", 1024, 401, 8, stride=2, padding=0, batchnorm=False),
)
"""The two teacher heads on conv7: ImageNet objects (1000) and Places scenes (401), as logits."""

OUTPUT_BLOCKS: dict[str, str] = {
    "pool1": "conv1",
    "pool2": "conv2",
    "conv3": "conv3",
    "conv4": "conv4",
    "pool5": "conv5",
    "conv6": "conv6",
    "conv7": "conv7",
    "objects": "conv8",
    "scenes": "conv8_2",
}
"""Output name -> the block that produces it. The seed notebook's "output k" (k = 1..7) is the
k-th of the first seven; pool1/pool2/pool5 are after the block's max-pool."""

OUTPUTS: tuple[str, ...] = tuple(OUTPUT_BLOCKS)
TRUNK_OUTPUTS: tuple[str, ...] = OUTPUTS[:7]
HEAD_OUTPUTS: tuple[str, ...] = OUTPUTS[7:]

_BLOCKS = {spec.name: spec for spec in TRUNK + HEADS}


def block(name: str) -> ConvSpec:
    return _BLOCKS[name]


def output_channels(output: str) -> int:
    return _BLOCKS[OUTPUT_BLOCKS[output]].out_channels


def output_lengths(n_samples: int) -> dict[str, int]:
    """Frames of every output for an input of ``n_samples`` (values <= 0 mean: input too short)."""
    lengths: dict[str, int] = {}
    length = n_samples
    for spec, name in zip(TRUNK, TRUNK_OUTPUTS):
        length = spec.length(length) if length > 0 else 0
        lengths[name] = length
    for spec, name in zip(HEADS, HEAD_OUTPUTS):
        lengths[name] = spec.length(length) if length > 0 else 0
    return lengths


TOTAL_STRIDE: dict[str, int] = {
    name: math.prod(s.stride * s.pool for s in TRUNK[: i + 1]) for i, name in enumerate(TRUNK_OUTPUTS)
}
TOTAL_STRIDE["objects"] = TOTAL_STRIDE["scenes"] = TOTAL_STRIDE["conv7"] * HEADS[0].stride
"""Input samples between consecutive frames of each output: 2*8 = 16 for pool1, ... 32,768 for conv7."""


def min_samples(output: str) -> int:
    """Shortest input (samples) that yields at least one frame of ``output``."""
    lo, hi = 1, 1 << 22
    while lo < hi:  # output length is monotone in the input length
        mid = (lo + hi) // 2
        if output_lengths(mid)[output] >= 1:
            hi = mid
        else:
            lo = mid + 1
    return lo


MIN_SAMPLES_TRUNK = max(min_samples(o) for o in TRUNK_OUTPUTS)
"""Shortest input with every trunk output defined (about 0.2 s at 22,050 Hz)."""

MIN_SAMPLES_HEADS = max(min_samples(o) for o in HEAD_OUTPUTS)
"""Shortest input for which the conv8 heads give one frame (about 9.5 s at 22,050 Hz)."""


def macs_per_sample_block(n_samples: int) -> dict[str, int]:
    """Multiply-accumulates of each convolution for one input of ``n_samples`` (for GFLOP/s figures)."""
    macs: dict[str, int] = {}
    length = n_samples
    for spec in TRUNK:
        n = spec.conv_length(length)
        macs[spec.name] = max(n, 0) * spec.kernel * spec.in_channels * spec.out_channels
        length = spec.length(length)
    for spec in HEADS:
        n = spec.conv_length(length)
        macs[spec.name] = max(n, 0) * spec.kernel * spec.in_channels * spec.out_channels
    return macs


@dataclass(frozen=True)
class ReceptiveField:
    """Frame ``i`` of an output depends on input samples [i*stride + offset, i*stride + offset + size)."""

    stride: int
    offset: int
    size: int

    @property
    def centre(self) -> float:
        """Input sample on which frame 0 is centred (frame i: plus i x stride).

        The middle of the field, padding included: a half-integer for even sizes, and negative when
        frame 0 is centred in the left padding (conv3, conv4, conv6, conv7).
        """
        return self.offset + (self.size - 1) / 2


def _receptive_fields() -> dict[str, ReceptiveField]:
    fields: dict[str, ReceptiveField] = {}
    jump, first, last = 1, 0, 0  # current frame i covers input [i*jump + first, i*jump + last]

    def stack(kernel: int, stride: int, padding: int) -> None:
        nonlocal jump, first, last
        first, last = first - padding * jump, last + (kernel - 1 - padding) * jump
        jump *= stride

    for spec, name in zip(TRUNK, TRUNK_OUTPUTS):
        stack(spec.kernel, spec.stride, spec.padding)
        if spec.pool > 1:
            stack(spec.pool, spec.pool, 0)
        fields[name] = ReceptiveField(jump, first, last - first + 1)
    trunk_state = (jump, first, last)
    for spec, name in zip(HEADS, HEAD_OUTPUTS):
        jump, first, last = trunk_state
        stack(spec.kernel, spec.stride, spec.padding)
        fields[name] = ReceptiveField(jump, first, last - first + 1)
    return fields


RECEPTIVE_FIELDS: dict[str, ReceptiveField] = _receptive_fields()
"""conv7 sees about 4.1 s of audio per frame; the conv8 heads about 14.5 s."""


def frame_centre(output: str) -> float:
    """Input sample on which frame 0 of ``output`` is centred (frame i: plus i x its total stride),
    counted from the model input's first sample: 2,286.5 for pool5, -1,809.5 for conv6."""
    return RECEPTIVE_FIELDS[output].centre

WINDOW_ALIGN = max(TOTAL_STRIDE.values())
"""Windows of a long input start at multiples of this (65,536), so every output's frame grid lines up."""

WINDOW_MARGIN = -(-max(max(-rf.offset, rf.offset + rf.size - rf.stride) for rf in RECEPTIVE_FIELDS.values())
                  // WINDOW_ALIGN) * WINDOW_ALIGN
"""Context added on each side of a window core so that every frame it owns sees only real samples."""
