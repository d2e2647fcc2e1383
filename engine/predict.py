"""Predictions: the teacher heads' top scenes (401 Places) and objects (1000 ImageNet) of audio files.

Probabilities are a softmax over classes for each conv8 frame, averaged over the frames whose
receptive field (about 14.5 s) lies inside the input. Frames hanging over the input's edges see
mostly zero padding, and the pretrained heads answer those with extreme, meaningless logits (e.g.
one "parking garage" frame at probability 1.0 at the end of every clip); when no frame is complete
(inputs under ~17 s) all frames are used.

The ``soundnet8 predict`` and ``soundnet8 demo`` commands (soundnet8.engine.cli) print these.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import arch
from .audio import Preprocessing, load
from .errors import AudioError
from .modelfile import ModelInfo
from .runner import Request, Runner
from .session import SessionConfig, create_session


@dataclass(frozen=True)
class Prediction:
    path: str
    scenes: tuple[tuple[str, float], ...]  # (name, probability), best first
    objects: tuple[tuple[str, float], ...]


def _softmax_mean(logits: np.ndarray) -> np.ndarray:
    """(T, K) logits -> (K,) mean over frames of the per-frame softmax."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    return (p / p.sum(axis=1, keepdims=True)).mean(axis=0)


def complete_frames(n_samples: int, n_frames: int) -> slice | np.ndarray:
    """Head frames whose receptive field lies within the input (all of them if there is none)."""
    rf = arch.RECEPTIVE_FIELDS["scenes"]
    starts = np.arange(n_frames) * rf.stride + rf.offset
    inside = np.flatnonzero((starts >= 0) & (starts + rf.size <= n_samples))
    return inside if len(inside) else slice(None)


def _top(probs: np.ndarray, names: Sequence[str], k: int) -> tuple[tuple[str, float], ...]:
    order = np.argsort(-probs, kind="stable")[:k]
    return tuple((names[i], float(probs[i])) for i in order)


def predict(paths: Sequence[str | Path], *, model: ModelInfo, session_config: SessionConfig = SessionConfig(),
            preprocessing: Preprocessing = Preprocessing(), k: int = 5) -> Iterator[Prediction | AudioError]:
    """Top-k predictions per file (an AudioError in its place for a file that cannot be read)."""
    runner = Runner(create_session(model.path, session_config),
                    Request(layers=arch.HEAD_OUTPUTS, frames=True), batch_size=1)
    for path in paths:
        try:
            clip = load(path, preprocessing)
        except AudioError as exc:
            yield exc
            continue
        feats = runner.features([clip.waveform])[0]
        if not feats.heads_available:
            yield AudioError(path, f"too short for the conv8 heads ({len(clip.waveform) / arch.SAMPLE_RATE:.2f} s "
                                   f"after preprocessing, {arch.MIN_SAMPLES_HEADS / arch.SAMPLE_RATE:.2f} s needed)")
            continue
        inside = complete_frames(len(clip.waveform), feats.n_frames["scenes"])
        scenes = _softmax_mean(feats.frames["scenes"][inside])
        objects = _softmax_mean(feats.frames["objects"][inside])
        yield Prediction(str(path), _top(scenes, model.scene_names, k), _top(objects, model.object_names, k))


def format_prediction(p: Prediction) -> str:
    lines = [p.path]
    for label, items in (("scenes ", p.scenes), ("objects", p.objects)):
        lines.append(f"  {label}: " + ", ".join(f"{name} {prob:.1%}" for name, prob in items))
    return "\n".join(lines)
