"""What runs on the Ray cluster: decode tasks (CPU) and the model actors, on columns of paths.

A dataset row is one input: ``index``, ``path`` and its manifest row (``meta`` as JSON, ``label``
and ``fold``, -1 when absent) — never audio. A decode task adds the model input (``waveform``
bytes, float32) or an error; a model actor runs the engine's own :class:`~soundnet8.engine.pipeline.Worker`
on a batch (equal lengths batched together, long files streamed through windows from the file),
writes the batch's results as one store segment, and returns one small row per clip for the
driver's progress. Nothing here imports Ray at module level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..audio import Clip, Preprocessing
from ..inputs import InputItem
from ..pipeline import Outcome, Worker, with_item
from ..request import Request
from ..modelfile import GraphVariant, ModelInfo
from ..session import Provider, SessionConfig, choose_graph, resolve_provider
from ..store import ClipError, ClipResult
from ..store.text import clean_message
from .segments import CompactingWriter, SegmentSpec, compact_unit

NO_VALUE = -1
"""``label``/``fold`` of an input that has none (Arrow columns hold one type)."""


class Kind:
    """What a decode task made of an input (an int8 column)."""

    CLIP = 0  # decoded: ``waveform`` holds the model input
    LONG = 1  # longer than one window: the actor streams it from the file
    ERROR = 2  # ``message`` says why


def encode_meta(meta: Mapping[str, Any]) -> str:
    """A manifest row as JSON text (NaN kept: the meta columns' float64 missing value)."""
    return json.dumps(dict(meta)) if meta else ""


def _column(values: list, dtype=object) -> np.ndarray:
    array = np.empty(len(values), dtype)
    array[:] = values
    return array


def decode_batch(batch: dict[str, np.ndarray], preprocessing: Preprocessing) -> dict[str, np.ndarray]:
    """Decode task: each input's model input, or LONG, or its error (with the engine's Worker.decode)."""
    task = [(int(i), str(p)) for i, p in zip(batch["index"], batch["path"])]
    kinds, waves, durations, rates, messages = [], [], [], [], []
    for _, value in Worker(preprocessing).decode(task):
        kind, wave, duration, rate, message = Kind.CLIP, b"", 0.0, 0, ""
        if isinstance(value, ClipError):
            kind, message = Kind.ERROR, value.message
        elif value is None:
            kind = Kind.LONG
        else:
            wave, duration, rate = np.ascontiguousarray(value.waveform, np.float32).tobytes(), value.duration, value.native_rate
        kinds.append(kind)
        waves.append(wave)
        durations.append(duration)
        rates.append(rate)
        messages.append(message)
    return {**batch, "kind": np.array(kinds, np.int8), "waveform": _column(waves),
            "duration": np.array(durations, np.float64), "sample_rate": np.array(rates, np.int64),
            "message": _column(messages)}


def _decoded(batch: Mapping[str, np.ndarray]) -> list[Outcome]:
    """The decode task's columns back as the Worker's outcomes (a Clip, None for LONG, or a ClipError)."""
    out: list[Outcome] = []
    for n, (index, path) in enumerate(zip(batch["index"], batch["path"])):
        kind = int(batch["kind"][n])
        if kind == Kind.ERROR:
            value: Any = ClipError(str(path), str(batch["message"][n]))
        elif kind == Kind.LONG:
            value = None
        else:
            wave = np.frombuffer(batch["waveform"][n], np.float32)
            value = Clip(str(path), wave, float(batch["duration"][n]), int(batch["sample_rate"][n]))
        out.append((int(index), value))
    return out


def _item(batch: Mapping[str, np.ndarray], n: int) -> InputItem:
    meta = str(batch["meta"][n])
    label, fold = int(batch["label"][n]), int(batch["fold"][n])
    return InputItem(str(batch["path"][n]), json.loads(meta) if meta else {},
                     None if label == NO_VALUE else label, None if fold == NO_VALUE else fold)


class ModelActor:
    """One ONNX Runtime session (created here, threads set explicitly) and a segment writer."""

    def __init__(self, model: ModelInfo, graph: GraphVariant, provider: Provider, threads: int, request: Request,
                 preprocessing: Preprocessing, batch_size: int, spec: SegmentSpec, compact_rows: int = 0) -> None:
        import onnxruntime
        import ray

        provider = resolve_provider(provider)
        # ORT ignores the OMP_NUM_THREADS Ray sets: intra- and inter-op threads come from the config
        config = SessionConfig(provider, intra_op_threads=max(1, threads))
        # the graph variant is chosen for this node's machine, as local extraction does (cached per machine)
        chosen = choose_graph(model, config, graph)
        self.worker = Worker.build(str(chosen.path), config, request, preprocessing, batch_size)
        attrs = {"provider": provider.value, "onnxruntime_version": onnxruntime.__version__,
                 "graph_variant": chosen.variant.value}
        self.segments = CompactingWriter(spec, attrs, compact_rows or compact_unit(spec.layout))
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        task = [(int(i), str(p)) for i, p in zip(batch["index"], batch["path"])]
        position = {int(index): n for n, index in enumerate(batch["index"])}
        results: list[ClipResult] = []
        errors: list[ClipError] = []
        indices, failed, seconds = [], [], []
        for index, outcome in self.worker.run_clips(task, _decoded(batch)):
            row = with_item(outcome, _item(batch, position[index]))
            if isinstance(row, ClipError):
                errors.append(ClipError(row.path, clean_message(row.message)))
            else:
                results.append(row)
            indices.append(index)
            failed.append(isinstance(row, ClipError))
            seconds.append(0.0 if isinstance(row, ClipError) else row.duration)
        # published before the clips are reported done: a crash after this only duplicates rows,
        # which the merge drops by path; a crash before it has the batch retried
        self.segments.write(results, errors)
        return {"index": np.array(indices, np.int64), "failed": np.array(failed, bool),
                "audio_seconds": np.array(seconds, np.float64), "node": _column([self.node] * len(task))}
