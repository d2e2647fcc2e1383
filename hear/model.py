"""SoundNet8 behind the HEAR 2021 API (https://hearbenchmark.com/hear-api.html).

The model object is a parameterless ``torch.nn.Module`` around the engine's ONNX Runtime session:
torch is needed only because the API passes torch tensors; inference is the engine's.

Choices, from measurements (``analysis/results/esc50/table.md``: linear SVM on ESC-50's official
folds, C nested inside the training folds, store extracted with the engine's default preprocessing):

- **Scene embedding** (1,536 = pool5 mean, pool5 std, conv6 mean, conv6 std, in that order): the
  best clip-level features measured, 77.45% (pool5 mean 69.6%, conv6 mean 72.6%, pool5+conv6 mean
  75.0%; adding conv7 lowered every join, signed square roots gave 77.00% on this one). It is
  computed exactly as that store was: the engine's preprocessing (x256, clip to ±256, tiled to 20 s when shorter) and its
  :class:`~soundnet8.engine.runner.Runner` pooling, so it equals the store's pooled features.
  The conv8 heads need 9.5 s and HEAR's clips are 1-4 s, so they are not used.
- **Timestamp embedding** (768 = pool5 frame then conv6 frame at the same centre): the same two
  layers, whose join measured best. Their native hops (8,192 and 16,384 samples: 372 and 743 ms)
  are too coarse for event tasks (HEAR asks for <= 50 ms), so the audio is fed at shifts of
  1,024 samples (the total stride of conv4): pool5 runs at 8 shifts and conv6 at 16, and their
  frames interleave into one grid of hop 1,024 samples = 46.44 ms. The grid is exact, not
  resampled: from the receptive fields (``arch.RECEPTIVE_FIELDS``) pool5's frame 0 is centred on
  sample 2,286.5 and conv6's on -1,809.5, 4 x 1,024 apart, so both layers have a frame centred on
  every grid point ``238.5 + 1024 j`` samples (10.8 ms + j x 46.44 ms).
  Each shifted copy is the audio delayed by 15,360-30,720 zero samples and zero-padded at its end,
  both so that every needed frame's receptive field lies inside the copy: each frame sees the
  audio inside silence, never the copy's borders, the same way at every grid point. Delaying the
  audio by one hop moves the embeddings by exactly one grid point (tested). Grid points whose
  centre is after the audio's end are dropped.
- **Long inputs**: scene embeddings use the engine's bounded-memory windows; the timestamp path
  runs each shifted copy whole (about 32 bytes of activations per sample), fine for HEAR's clips.
- **Short inputs**: scene embeddings tile them to 20 s as the engine does (any length >= 1 sample).
  For timestamps, inputs shorter than a layer's minimum are zero-padded (the end padding above);
  a sound shorter than the first grid point (238.5 samples, 10.8 ms) still gets that one frame,
  its time clipped to the audio's end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

try:
    import torch
except ModuleNotFoundError as exc:  # the engine runs without torch; this API cannot
    raise ModuleNotFoundError("soundnet8.hear needs torch: pip install 'soundnet8[hear]'") from exc

from soundnet8.engine import Pool, Preprocessing, Request, Runner, SessionConfig, SoundNetError, arch
from soundnet8.engine import create_session, ensure_model
from soundnet8.engine.audio import prepare
from soundnet8.engine.session import session_provider

SCENE_LAYERS: tuple[str, ...] = ("pool5", "conv6")
SCENE_POOLS: tuple[Pool, ...] = (Pool.MEAN, Pool.STD)
TIMESTAMP_LAYERS: tuple[str, ...] = ("pool5", "conv6")

HOP_SAMPLES = arch.TOTAL_STRIDE["conv4"]
"""Timestamp hop: 1,024 samples = 46.44 ms at 22,050 Hz (pool5 at 8 shifts, conv6 at 16)."""

BATCH_SAMPLES = 1 << 22
"""Model-input samples per ONNX Runtime call (bounds memory on long audio)."""


FIRST_CENTRE = arch.frame_centre(TIMESTAMP_LAYERS[0]) % HOP_SAMPLES
"""Grid point 0 (238.5 samples, 10.8 ms): the earliest pool5 centre reachable by shifts of one hop."""


def grid_size(n_samples: int) -> int:
    """Timestamps for ``n_samples`` of audio: grid points not after the end, and at least one."""
    if n_samples < FIRST_CENTRE:
        return 1
    return int((n_samples - FIRST_CENTRE) // HOP_SAMPLES) + 1


def grid_times_ms(n_samples: int) -> np.ndarray:
    """Frame-centre times (ms) of the timestamp embeddings of ``n_samples`` of audio."""
    centres = FIRST_CENTRE + HOP_SAMPLES * np.arange(grid_size(n_samples), dtype=np.float64)
    return np.minimum(centres, n_samples) * (1000.0 / arch.SAMPLE_RATE)


@dataclass(frozen=True)
class Phase:
    """One delayed copy of the audio feeding one layer: ``delay`` zeros, then the audio.

    Frame ``first_frame + k`` of ``layer`` on that copy is centred on grid point ``phase + k x phases``.
    """

    layer: str
    phase: int
    phases: int
    delay: int
    first_frame: int


def phases() -> tuple[Phase, ...]:
    """Every (layer, phase) of the timestamp grid, with the delay it runs at.

    A delay puts the phase's grid points on the layer's frame centres and is long enough that the
    first frame used sees zeros, not the copy's left border, across its receptive field: every frame
    then sees the audio inside silence, the same at each grid point. Layers with finer strides reuse
    the delays of coarser ones where one fits, so pool5 and conv6 share 16 copies.
    """
    out: list[Phase] = []
    delays: set[int] = set()
    for layer in sorted(TIMESTAMP_LAYERS, key=lambda name: -arch.TOTAL_STRIDE[name]):
        stride = arch.TOTAL_STRIDE[layer]
        half_field = arch.frame_centre(layer) - arch.RECEPTIVE_FIELDS[layer].offset
        for p in range(stride // HOP_SAMPLES):
            # frame i of x delayed by a is centred on x-sample centre - a + i*stride: solve a for grid point p
            centre = FIRST_CENTRE + p * HOP_SAMPLES
            offset = arch.frame_centre(layer) - centre
            if offset != int(offset) or int(offset) % HOP_SAMPLES:
                raise SoundNetError(f"{layer}'s frame centres are not on the {HOP_SAMPLES}-sample grid")
            lowest = math.ceil(half_field - centre)  # the first frame's field starts at sample >= 0
            shared = [d for d in delays if d >= lowest and (d - int(offset)) % stride == 0]
            delay = min(shared) if shared else int(offset) + stride * math.ceil((lowest - int(offset)) / stride)
            delays.add(delay)
            out.append(Phase(layer, p, stride // HOP_SAMPLES, delay, (delay - int(offset)) // stride))
    return tuple(out)


def _frames_needed(phase: Phase, n_grid: int) -> int:
    """Frames of ``phase``'s copy up to its last grid point (counting the unused ones before it)."""
    return phase.first_frame + len(range(phase.phase, n_grid, phase.phases))


def _padded_length(n_grid: int, plan: Sequence[Phase]) -> int:
    """One input length for every delayed copy, long enough that each needed frame's receptive field
    ends inside it: end frames then see the audio and zeros after it, never the copy's border, so
    they do not depend on this length."""
    ends = []
    for ph in plan:
        rf = arch.RECEPTIVE_FIELDS[ph.layer]
        ends.append((_frames_needed(ph, n_grid) - 1) * rf.stride + rf.offset + rf.size)
    length = max(max(ends), arch.MIN_SAMPLES_TRUNK)
    while any(arch.output_lengths(length)[ph.layer] < _frames_needed(ph, n_grid) for ph in plan):
        length += HOP_SAMPLES  # floor-mode pooling may want a little more than the field
    return length


def _delayed(x: np.ndarray, delay: int, length: int) -> np.ndarray:
    """``delay`` zeros, then ``x``, then zeros up to ``length``."""
    out = np.zeros(length, np.float32)
    out[delay:delay + len(x)] = x[:max(length - delay, 0)]
    return out


class Model(torch.nn.Module):
    """SoundNet8 (ONNX Runtime) as a HEAR model; it has no torch parameters and works on any device."""

    sample_rate: int = arch.SAMPLE_RATE
    scene_embedding_size: int = sum(arch.output_channels(layer) for layer in SCENE_LAYERS) * len(SCENE_POOLS)
    timestamp_embedding_size: int = sum(arch.output_channels(layer) for layer in TIMESTAMP_LAYERS)

    def __init__(self, model_file_path: str = "", config: SessionConfig | None = None) -> None:
        super().__init__()
        info = ensure_model(model_file_path or None)
        if config is None:  # one process doing all the work: let the session use every core it may
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            config = SessionConfig(intra_op_threads=cores or 1)
        self.model_path = str(info.path)
        self.session = create_session(info.path, config)
        layers = tuple(name for name in arch.OUTPUTS if name in SCENE_LAYERS + TIMESTAMP_LAYERS)
        self.runner = Runner(self.session, Request(layers=layers, pools=SCENE_POOLS), batch_size=8)

    def extra_repr(self) -> str:
        return f"model={self.model_path!r}, provider={session_provider(self.session).value}"

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return get_scene_embeddings(audio, self)

    # -- numpy side ---------------------------------------------------------------------------
    def scene(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n_sounds, scene_embedding_size) from model inputs as the engine prepares them."""
        out = np.zeros((len(waveforms), self.scene_embedding_size), np.float32)
        for row, clip in enumerate(self.runner.features(list(waveforms))):
            out[row] = np.concatenate([clip.pooled[(layer, pool.value)]
                                       for layer in SCENE_LAYERS for pool in SCENE_POOLS])
        return out

    def timestamps(self, waveforms: np.ndarray) -> np.ndarray:
        """(n_sounds, n_timestamps, timestamp_embedding_size) from scaled waveforms (n_sounds, n)."""
        n_sounds, n_samples = waveforms.shape
        n_grid = grid_size(n_samples)
        plan = phases()
        length = _padded_length(n_grid, plan)
        rows = [(i, d) for i in range(n_sounds) for d in sorted({ph.delay for ph in plan})]
        outputs: dict[tuple[int, int], dict[str, np.ndarray]] = {}  # (sound, delay) -> layer -> (C, T)
        per_call = max(1, BATCH_SAMPLES // length)
        for start in range(0, len(rows), per_call):
            chunk = rows[start:start + per_call]
            batch = self.runner.run(np.stack([_delayed(waveforms[i], d, length) for i, d in chunk]))
            for k, row in enumerate(chunk):
                outputs[row] = {layer: batch[layer][k] for layer in TIMESTAMP_LAYERS}
        out = np.zeros((n_sounds, n_grid, self.timestamp_embedding_size), np.float32)
        columns = dict(zip(TIMESTAMP_LAYERS, np.cumsum([0] + [arch.output_channels(x) for x in TIMESTAMP_LAYERS])))
        for ph in plan:
            grid = np.arange(ph.phase, n_grid, ph.phases)
            lo = columns[ph.layer]
            hi = lo + arch.output_channels(ph.layer)
            for i in range(n_sounds):
                out[i, grid, lo:hi] = outputs[(i, ph.delay)][ph.layer][:, ph.first_frame:ph.first_frame + len(grid)].T
        return out


def load_model(model_file_path: str = "") -> Model:
    """HEAR: the model. ``""``: the engine's model ($SOUNDNET8_MODEL, else the cache, exported on
    first use); otherwise the SoundNet8 ONNX file at that path (``soundnet8 export -o FILE``)."""
    return Model(model_file_path)


def _audio_numpy(audio: torch.Tensor, model: Model) -> np.ndarray:
    if not isinstance(model, Model):
        raise SoundNetError(f"expected a soundnet8.hear Model (from load_model), got {type(model).__name__}")
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
        raise SoundNetError("audio must be a torch tensor of shape (n_sounds, n_samples) at 22,050 Hz")
    if audio.shape[1] < 1:
        raise SoundNetError("audio has no samples")
    return audio.detach().to("cpu", torch.float32).numpy()


def _prepared(x: np.ndarray, options: Preprocessing) -> list[np.ndarray]:
    return [prepare(row, arch.SAMPLE_RATE, options) for row in x]


def get_scene_embeddings(audio: torch.Tensor, model: Model) -> torch.Tensor:
    """HEAR: (n_sounds, model.scene_embedding_size) float32, on the audio's device."""
    x = _audio_numpy(audio, model)
    embeddings = model.scene(_prepared(x, Preprocessing()))
    return torch.from_numpy(embeddings).to(audio.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR: embeddings (n_sounds, n_timestamps, model.timestamp_embedding_size) float32 and
    timestamps (n_sounds, n_timestamps) in ms (frame centres, every 46.44 ms from 10.8 ms, none
    after the audio's end), both on the audio's device."""
    x = _audio_numpy(audio, model)
    n_sounds, n_samples = x.shape
    waveforms = np.zeros((0, n_samples), np.float32)
    if n_sounds:
        waveforms = np.stack(_prepared(x, Preprocessing(min_seconds=0)))
    embeddings = model.timestamps(waveforms)
    times = np.tile(grid_times_ms(n_samples).astype(np.float32), (n_sounds, 1))
    return torch.from_numpy(embeddings).to(audio.device), torch.from_numpy(times).to(audio.device)
