"""A half-precision copy of the exported model for GPU measurements (inputs and outputs stay float32).

ONNX Runtime's generic float16 converter breaks the heads' ``If`` guard (it returns an outer-scope
value from a subgraph), so this converter is specific to the engine's graph: a chain of layers whose
outputs are graph outputs, plus the ``If``. Everything after a cast point runs in float16; every graph
output produced there gets a Cast back to float32, so callers see the same interface.

The network's input is a waveform in [-256, 256]. Whether conv1 can run in float16 is decided from
its weights: the largest value conv1 can produce on any such input is ``256 * sum|w| + |b|`` per
channel (:func:`conv1_bound`); above float16's 65,504 conv1 is kept in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from soundnet8.engine import arch
from soundnet8.engine.modelfile import INPUT_NAME

FP16_MAX = 65504.0
"""The largest finite float16."""


@dataclass(frozen=True)
class Fp16Plan:
    conv1_bound: float  # the largest |conv1 output| any input in [-256, 256] can give
    keep_conv1_fp32: bool

    def to_dict(self) -> dict:
        return {"conv1_bound": self.conv1_bound, "fp16_max": FP16_MAX, "keep_conv1_fp32": self.keep_conv1_fp32}


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in graph.initializer}


def _first_conv(graph: onnx.GraphProto) -> onnx.NodeProto:
    return next(n for n in graph.node if n.op_type == "Conv")


def conv1_bound(model: onnx.ModelProto) -> float:
    """max over channels of ``INPUT_SCALE * sum|w| + |b|``: no input in range can exceed it."""
    inits = _initializers(model.graph)
    conv = _first_conv(model.graph)
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 else 0.0
    per_channel = arch.INPUT_SCALE * np.abs(w).reshape(w.shape[0], -1).sum(axis=1) + np.abs(b)
    return float(per_channel.max())


def plan(model: onnx.ModelProto) -> Fp16Plan:
    bound = conv1_bound(model)
    return Fp16Plan(bound, keep_conv1_fp32=bound > FP16_MAX)


def _rename_inputs(graph: onnx.GraphProto, mapping: dict[str, str], nodes) -> None:
    """Point the inputs of ``nodes`` (and of every subgraph below them) at the renamed tensors."""
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attr.g, mapping, attr.g.node)


def _subgraphs_to_fp16(node: onnx.NodeProto) -> None:
    for attr in node.attribute:
        if attr.type != onnx.AttributeProto.GRAPH:
            continue
        for out in attr.g.output:
            if out.type.tensor_type.elem_type == TensorProto.FLOAT:
                out.type.tensor_type.elem_type = TensorProto.FLOAT16
        for inner in attr.g.node:
            if inner.op_type == "ConstantOfShape":
                for a in inner.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            _subgraphs_to_fp16(inner)


def _used_initializers(nodes) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _used_initializers(attr.g.node)
    return names


def to_fp16(model: onnx.ModelProto, keep_conv1_fp32: bool) -> onnx.ModelProto:
    """A copy of ``model`` running in float16 after the input (or after pool1 with ``keep_conv1_fp32``)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = list(graph.node)
    if keep_conv1_fp32:
        cast_point = "pool1"
        start = next(i for i, n in enumerate(nodes) if cast_point in n.output) + 1
    else:
        cast_point, start = INPUT_NAME, 0
    region = nodes[start:]
    outputs = {o.name for o in graph.output}
    mapping = {cast_point: f"{cast_point}_fp16"}
    back: list[onnx.NodeProto] = []
    for node in region:
        for i, name in enumerate(node.output):
            if name in outputs:
                node.output[i] = f"{name}_fp16"
                mapping[name] = node.output[i]
                back.append(helper.make_node("Cast", [node.output[i]], [name], to=TensorProto.FLOAT))
        _subgraphs_to_fp16(node)
    _rename_inputs(graph, mapping, region)
    shared = _used_initializers(nodes[:start])
    for init in graph.initializer:
        if init.name in _used_initializers(region) and init.data_type == TensorProto.FLOAT:
            if init.name in shared:
                raise ValueError(f"initializer {init.name} is used on both sides of the float16 cast point")
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    cast_in = helper.make_node("Cast", [cast_point], [mapping[cast_point]], to=TensorProto.FLOAT16)
    del graph.node[:]
    graph.node.extend(nodes[:start] + [cast_in] + region + back)
    del graph.value_info[:]  # stale float32 shapes/types of renamed tensors
    onnx.checker.check_model(model)
    return model
