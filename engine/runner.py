"""Running the ONNX model on prepared waveforms and pooling its outputs over time.

Batch invariance: a clip's features never depend on its batch mates. Zero padding to a common length
would change the deeper layers' last frames, so clips are batched only with clips of *exactly* the
same length (length bucketing); a collection of 5 s clips tiled to 25 s is one bucket.

Long inputs are cut into overlapping windows whose starts are multiples of the network's largest
total stride (65,536 samples) and whose margins cover every output's receptive field, so each window
computes exactly the frames the whole input would give for its core; pooled features and frames equal
whole-input ones, and memory stays bounded by the window size instead of the file length.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import arch
from .audio import TiledWaveform

BATCH_BUFFER_KEEP = 1 << 24  # float32 values (64 MiB): a larger input buffer is freed after its call
from .modelfile import INPUT_NAME
from .request import Pool, Request


WINDOW_CORE = 16 * arch.WINDOW_ALIGN
"""Samples a window owns (about 47.6 s); with both margins a window is about 71 s of audio."""

LONG_INPUT = WINDOW_CORE + 2 * arch.WINDOW_MARGIN
"""Inputs longer than one full window are processed in windows."""


@dataclass
class _Accumulator:
    """Running per-channel statistics over frames (float64, so window order does not matter)."""

    channels: int
    keep_frames: bool
    pools: tuple[Pool, ...] = tuple(Pool)
    count: int = 0
    total: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)
    peak: np.ndarray = field(init=False)
    frames: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.total = np.zeros(self.channels)
        self.squares = np.zeros(self.channels)
        self.peak = np.full(self.channels, -np.inf)

    def add(self, frames: np.ndarray) -> None:
        """``frames``: (T, C) float32. Only the statistics asked for are computed (measured: the
        full set with float64 copies cost ~2 ms a clip, as much as decoding)."""
        if not len(frames):
            return
        self.count += len(frames)
        self.total += frames.sum(axis=0, dtype=np.float64)
        if Pool.STD in self.pools:
            self.squares += np.einsum("tc,tc->c", frames, frames, dtype=np.float64)
        if Pool.MAX in self.pools:
            self.peak = np.maximum(self.peak, frames.max(axis=0))
        if self.keep_frames:
            self.frames.append(frames)

    def pooled(self, pool: Pool) -> np.ndarray:
        if self.count == 0:  # e.g. the conv8 heads on an input shorter than ~9.5 s
            return np.full(self.channels, np.nan, np.float32)
        mean = self.total / self.count
        if pool is Pool.MEAN:
            return mean.astype(np.float32)
        if pool is Pool.MAX:
            return self.peak.astype(np.float32)
        return np.sqrt(np.maximum(self.squares / self.count - mean * mean, 0.0)).astype(np.float32)

    def all_frames(self) -> np.ndarray:
        if not self.frames:
            return np.zeros((0, self.channels), np.float32)
        return np.concatenate(self.frames) if len(self.frames) > 1 else self.frames[0]


@dataclass(frozen=True)
class ClipFeatures:
    """Pooled features (layer, pool) -> (C,) and, when asked, frames layer -> (T, C)."""

    pooled: Mapping[tuple[str, str], np.ndarray]
    frames: Mapping[str, np.ndarray] | None
    n_frames: Mapping[str, int]

    @property
    def heads_available(self) -> bool:
        return all(self.n_frames.get(h, 1) > 0 for h in arch.HEAD_OUTPUTS)


class Runner:
    """One ONNX Runtime session plus the logic to feed it: buckets, windows, pooling."""

    def __init__(self, session, request: Request, *, batch_size: int = 4) -> None:
        self.session = session
        self.request = request
        self.batch_size = max(1, batch_size)
        # Heads are computed only when asked: ORT would otherwise run conv8 for nothing.
        self.outputs = [name for name in arch.OUTPUTS if name in request.layers]
        # On CUDA, IOBinding keeps outputs on the device until one explicit copy per output.
        self._on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        # One reused input buffer: a fresh (batch, 551,250) array a call cost page faults and a copy
        # (np.stack: ~0.5 ms a clip, as much as pooling).
        self._batch = np.zeros((0, 0), np.float32)
        self._batch_lock = threading.Lock()

    # -- raw model ------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(B, n) float32 -> {output: (B, C, T)} for the requested outputs."""
        batch = np.ascontiguousarray(batch, np.float32)
        if self._on_cuda:
            binding = self.session.io_binding()
            binding.bind_cpu_input(INPUT_NAME, batch)
            for name in self.outputs:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            return dict(zip(self.outputs, binding.copy_outputs_to_cpu()))
        return dict(zip(self.outputs, self.session.run(self.outputs, {INPUT_NAME: batch})))

    def _accumulators(self) -> dict[str, _Accumulator]:
        return {name: _Accumulator(arch.output_channels(name), name in self.request.frames, self.request.pools)
                for name in self.outputs}

    def _finish(self, acc: Mapping[str, _Accumulator]) -> ClipFeatures:
        pooled = {(name, pool.value): a.pooled(pool) for name, a in acc.items() for pool in self.request.pools}
        frames = {name: acc[name].all_frames() for name in self.request.frames} if self.request.frames else None
        return ClipFeatures(pooled, frames, {name: a.count for name, a in acc.items()})

    def _filled(self, waves: Sequence[TiledWaveform], n: int) -> np.ndarray:
        """The batch of ``waves`` (all ``n`` samples long) in the reused input buffer."""
        if self._batch.shape[1] != n or len(self._batch) < len(waves):
            self._batch = np.empty((len(waves), n), np.float32)  # a chunk: at most batch_size rows
        batch = self._batch[:len(waves)]  # leading rows of a C-contiguous array: contiguous too
        for row, wave in zip(batch, waves):
            wave.write_into(row)
        return batch

    # -- clips --------------------------------------------------------------------------------
    def features(self, waveforms: Sequence[np.ndarray | TiledWaveform]) -> list[ClipFeatures]:
        """Features of each waveform (an array, or one whose tiling is left to the batch), batching
        equal lengths together; results in input order."""
        waves = [w if isinstance(w, TiledWaveform) else TiledWaveform(np.asarray(w, np.float32)) for w in waveforms]
        results: list[ClipFeatures | None] = [None] * len(waves)
        buckets: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            if w.samples > LONG_INPUT:
                results[i] = self.features_windowed(iter([w.array()]))
            else:
                buckets.setdefault(w.samples, []).append(i)
        for n, indices in buckets.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                with self._batch_lock:  # one input buffer: calls from several threads take turns
                    outputs = self.run(self._filled([waves[i] for i in chunk], n))
                    if self._batch.size > BATCH_BUFFER_KEEP:  # e.g. a CUDA batch of 64 long inputs
                        self._batch = np.zeros((0, 0), np.float32)
                for row, i in enumerate(chunk):
                    acc = self._accumulators()
                    for name, a in acc.items():
                        a.add(outputs[name][row].T)
                    results[i] = self._finish(acc)
        return results  # type: ignore[return-value]

    def features_windowed(self, blocks: Iterable[np.ndarray]) -> ClipFeatures:
        """Features of a (long) input given as consecutive blocks, in bounded memory."""
        acc = self._accumulators()
        for start, window, is_last, k in _windows(blocks):
            outputs = self.run(window[None])
            for name, a in acc.items():
                stride = arch.TOTAL_STRIDE[name]
                first_owned = k * WINDOW_CORE // stride - start // stride
                frames = outputs[name][0].T
                end = len(frames) if is_last else (k + 1) * WINDOW_CORE // stride - start // stride
                a.add(frames[max(first_owned, 0):end])
        return self._finish(acc)


def _windows(blocks: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray, bool, int]]:
    """Yield (start, samples, is_last, k): window k = [k*CORE - MARGIN, (k+1)*CORE + MARGIN) ∩ input."""
    margin = arch.WINDOW_MARGIN
    buffer = np.zeros(0, np.float32)
    buffer_start = 0  # input index of buffer[0]
    k = 0
    iterator = iter(blocks)
    exhausted = False
    while True:
        start = max(0, k * WINDOW_CORE - margin)
        end = (k + 1) * WINDOW_CORE + margin
        # Read until the window is complete and one more sample exists (so we know it isn't last).
        while not exhausted and buffer_start + len(buffer) <= end:
            try:
                block = np.asarray(next(iterator), np.float32)
            except StopIteration:
                exhausted = True
                break
            buffer = np.concatenate([buffer[start - buffer_start:], block]) if start > buffer_start else np.concatenate([buffer, block])
            buffer_start = max(buffer_start, start)
        is_last = exhausted and buffer_start + len(buffer) <= end
        window = buffer[start - buffer_start:end - buffer_start]
        yield start, window, is_last, k
        if is_last:
            return
        k += 1
