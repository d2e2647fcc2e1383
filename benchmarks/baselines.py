"""What the engine is measured against: PyTorch eager, a seed-style pipeline, a naive ONNX Runtime loop.

* :func:`torch_eager` — the PyTorch model (same weights, BatchNorm unfolded as trained) on the same
  prepared inputs, batch and thread count as the ONNX Runtime rows: the model phase only.
* :func:`seed_style` — what the seed notebook did, with correct resampling: for each clip, soundfile
  decode, soxr resample to 22,050 Hz, x256, tile to 20 s with the seed's expression, the PyTorch model
  on that one clip, mean over time of every output. Its features are kept so the run can check that
  the engine's store holds the same numbers.
* :func:`naive_ort` — one clip per ``session.run`` with a default ``InferenceSession`` (no options),
  decoding with the engine's loader: what a first ONNX Runtime port looks like.

Each runs in its own process (see :mod:`.jobs`), so PyTorch's and ONNX Runtime's thread pools never
compete inside one measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from soundnet8.engine import arch

from .measure import Stat
from .settings import InputKind

SEED_MIN_SAMPLES = 441_000
"""The seed's tiling target: 20 s at 22,050 Hz, counted in samples."""


@dataclass(frozen=True)
class LoopResult:
    clips_per_s: Stat
    model_clips_per_s: Stat  # the same loop counting only the model call (decode excluded)
    clips: int
    features: dict[str, dict[str, np.ndarray]]  # path -> output -> (C,) mean over time (last repeat)
    threads: int
    # Clips whose resampled samples leave [-1, 1]: the engine clips its input to ±256 (the original
    # loader), the seed recipe does not, so only these may differ beyond float rounding.
    beyond_full_scale: frozenset[str] = frozenset()


def _timed_loop(clip: Callable[[str, bool], float], paths: tuple[str, ...], warmup: int,
                repeats: int) -> tuple[Stat, Stat]:
    """Clips/s of a one-clip-at-a-time loop and of its model calls alone.

    ``clip(path, keep)`` processes one clip and returns the seconds its model call took; ``keep`` is
    true in the last repeat only, so the features it keeps are those of one full pass."""
    for i in range(warmup):
        clip(paths[i % len(paths)], False)
    totals, model_totals = [], []
    for r in range(repeats):
        start = time.perf_counter()
        model_s = sum(clip(p, r == repeats - 1) for p in paths)
        totals.append(time.perf_counter() - start)
        model_totals.append(model_s)
    n = len(paths)
    return Stat.of(n / s for s in totals), Stat.of(n / s for s in model_totals)


def torch_model(threads: int):
    import torch

    from soundnet8.export.model import build_model
    from soundnet8.export.weights import load_weights

    torch.set_num_threads(threads)
    return build_model(load_weights())  # unfolded BatchNorm: the model as trained


def torch_eager(kind: InputKind, paths: tuple[str, ...], threads: int, batch_size: int, clips: int,
                warmup: int, repeats: int) -> Stat:
    """Clips/s of the PyTorch model alone on prepared inputs (inputs cycle over ``paths``)."""
    import torch

    from .data import model_inputs

    model = torch_model(threads)
    waveforms = model_inputs(paths, kind)
    n = -(-clips // batch_size) * batch_size
    batches = [torch.from_numpy(np.stack([waveforms[(s + i) % len(waveforms)] for i in range(batch_size)]))
               for s in range(0, n, batch_size)]

    def once() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(batch)

    for _ in range(max(warmup, 1)):
        once()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        seconds.append(time.perf_counter() - start)
    return Stat.of(n / s for s in seconds)


def seed_waveform(path: str) -> np.ndarray:
    """The seed notebook's input for ``path``, with correct resampling (soxr's default 'HQ')."""
    import soundfile as sf
    import soxr

    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    x = samples[:, 0]
    if rate != arch.SAMPLE_RATE:
        x = soxr.resample(x, rate, arch.SAMPLE_RATE)
    x = (x * np.float32(arch.INPUT_SCALE)).astype(np.float32)
    if len(x) < SEED_MIN_SAMPLES:
        x = np.tile(x, int(SEED_MIN_SAMPLES / len(x) + 1))
    return x


def seed_style(paths: tuple[str, ...], threads: int, warmup: int, repeats: int) -> LoopResult:
    """The seed pipeline over ``paths``, ``repeats`` times after ``warmup`` clips."""
    import torch

    model = torch_model(threads)
    features: dict[str, dict[str, np.ndarray]] = {}
    beyond: set[str] = set()

    def clip(path: str, keep: bool) -> float:
        x = seed_waveform(path)
        if keep and float(np.abs(x).max()) > arch.INPUT_SCALE:
            beyond.add(path)
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = model(torch.from_numpy(x)[None])
        model_s = time.perf_counter() - start
        if keep:
            features[path] = {name: out[0].mean(dim=-1).numpy() for name, out in zip(arch.OUTPUTS, outputs)}
        return model_s

    total, model_only = _timed_loop(clip, paths, warmup, repeats)
    return LoopResult(total, model_only, len(paths), features, threads, frozenset(beyond))


def naive_ort(model_path: str, paths: tuple[str, ...], warmup: int, repeats: int) -> LoopResult:
    """One clip per run, default session, the engine's loader, mean over time with numpy."""
    import os

    import onnxruntime as ort

    from soundnet8.engine.audio import load
    from soundnet8.engine.modelfile import INPUT_NAME

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])  # every option default
    features: dict[str, dict[str, np.ndarray]] = {}

    def clip(path: str, keep: bool) -> float:
        x = load(path).waveform
        start = time.perf_counter()
        outputs = session.run(None, {INPUT_NAME: x[None]})
        model_s = time.perf_counter() - start
        pooled = {name: out[0].mean(axis=-1) for name, out in zip(arch.OUTPUTS, outputs)}
        if keep:
            features[path] = pooled
        return model_s

    total, model_only = _timed_loop(clip, paths, warmup, repeats)
    # A default session uses every core for intra-op work.
    return LoopResult(total, model_only, len(paths), features, os.cpu_count() or 1)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e|: the project's parity metric."""
    scale = float(np.abs(expected).max())
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / (scale if scale > 0 else 1.0))


def parity(model_paths: dict[str, str], paths: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Max relative error of each ONNX file's nine outputs against PyTorch eager, on both input
    kinds (one batch of two clips each): variant -> output -> error."""
    import onnxruntime as ort
    import torch

    from soundnet8.engine.modelfile import INPUT_NAME

    from .data import model_inputs

    model = torch_model(1)
    errors: dict[str, dict[str, float]] = {name: {} for name in model_paths}
    for kind in InputKind:
        batch = np.stack(model_inputs(paths[:2], kind))
        with torch.inference_mode():
            expected = [o.numpy().astype(np.float64) for o in model(torch.from_numpy(batch))]
        for name, path in model_paths.items():
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            actual = session.run(list(arch.OUTPUTS), {INPUT_NAME: batch})
            for out, a, e in zip(arch.OUTPUTS, actual, expected):
                errors[name][out] = max(errors[name].get(out, 0.0), relative_error(a, e))
    return errors
