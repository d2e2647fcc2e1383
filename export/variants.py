"""Graph variants of the exported model: the same function, computed by differently shaped kernels.

The engine picks among them by timing each once on the machine it runs on (see
:func:`soundnet8.engine.session.choose_graph`); this module builds them, in pure ONNX (no torch), and
``python -m soundnet8.export.variants MODEL -o DIR`` writes them all (what the engine runs, once).

* ``plain``: the export itself (Conv -> Relu -> MaxPool per layer, the heads as Conv).
* ``matmul``: conv1 + its pool as one MatMul and both heads as one MatMul (below).
* ``matmul-conv12``: conv1 and conv2 (with their pools) as MatMuls, and the heads.
* ``nchwc``: every trunk block as a 2-D convolution with time on the last axis (:func:`time_last_2d`),
  which ONNX Runtime's CPU layout transformer runs with its blocked NCHWc kernels; the heads as above.
* ``matmul-nchwc``: conv1 + pool as the MatMul below, conv2..conv7 as in ``nchwc``, the heads as above.

ONNX Runtime's CPU Conv runs a 1-D convolution as im2col + GEMM per image. Two parts of SoundNet8
use that badly:

* conv1 (1 -> 16 channels, kernel 64, stride 2) + max-pool 8: a K=64, M=16 GEMM over 275k columns
  (a 70 MB im2col buffer) followed by a separate max-pool over 4.4M values. :func:`pooled_convs_matmul`
  computes the same pool1 as one well-shaped MatMul: the padded waveform is cut into blocks of 16
  samples (one pool1 frame each); a frame's 8 pooled conv outputs need 5 consecutive blocks (80
  samples), so [5 blocks] @ W (80 x 128, the 64 taps placed at each of the 8 phases) gives all 8
  phases x 16 channels, and a max over the phases is the pool. Bias and ReLU commute with that max
  (the bias is the same for every phase; rounding and ReLU are monotone), so the result is
  bit-identical to conv -> ReLU -> max-pool for the same summation order.
* the conv8 heads (1024 -> 1000 and 1024 -> 401, kernel 8, stride 2, on 15 conv7 frames): a 41 MB
  weight read per image for 4 output frames. :func:`heads_matmul` runs both heads as one MatMul
  (im2col of conv7 x [8192 x 1401]), so a batch reads the weights once.

Both keep the dynamic batch and time axes and the If guard for inputs too short for the heads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from soundnet8.engine import arch
from soundnet8.engine.modelfile import INPUT_NAME, VARIANTS, GraphVariant


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values))


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in graph.initializer}


def pooled_conv_weight_matrix(w: np.ndarray, stride: int, pool: int, block: int, shift: int = 0) -> np.ndarray:
    """(taps*block*Cin, pool*Cout): row (k*block + r)*Cin + i, column q*Cout + o holds
    w[o, i, block*k + r - stride*q - shift] (zero outside the kernel); ``shift``: extra zeros in front."""
    cout, cin, kernel = w.shape
    taps = (stride * (pool - 1) + kernel - 1 + shift) // block + 1
    matrix = np.zeros((taps, block, cin, pool, cout), np.float32)
    for q in range(pool):
        for k in range(taps):
            for r in range(block):
                j = block * k + r - stride * q - shift
                if 0 <= j < kernel:
                    matrix[k, r, :, q, :] = w[:, :, j].T
    return matrix.reshape(taps * block * cin, pool * cout)


def _pooled_conv(spec: arch.ConvSpec, w: np.ndarray, b: np.ndarray, source: str, cin: int, out: str,
                 prefix: str, channels_last_out: bool, group: int = 1) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing ``out`` = maxpool(relu(conv(x))) (B, Cout, P) from ``source``, channels-last
    (B, L, Cin), as one MatMul; also ``{prefix}_cl`` (B, P, Cout) when ``channels_last_out``.

    A MatMul row covers ``group`` output frames (fewer, longer rows to gather; more MACs wasted)."""
    pool, stride = spec.pool, spec.stride
    block = stride * pool * group
    pad = -(-spec.padding // block) * block  # front zeros rounded up to whole blocks; the weights shift
    matrix = pooled_conv_weight_matrix(w, stride, pool * group, block, pad - spec.padding)
    taps = matrix.shape[0] // (block * cin)
    cout = w.shape[0]
    p = prefix
    nodes = [
        helper.make_node("Shape", [source], [f"{p}_shape"]),
        _const(f"{p}_one", [1]), _const(f"{p}_zero", [0]), _const(f"{p}_stride", [stride]),
        _const(f"{p}_pool", [pool]), _const(f"{p}_block", [block]), _const(f"{p}_left", [pad]),
        _const(f"{p}_len_shift", [2 * spec.padding - spec.kernel]), _const(f"{p}_extra", [block * (taps - 1) - pad]),
        helper.make_node("Gather", [f"{p}_shape", f"{p}_one"], [f"{p}_n"], axis=0),
        helper.make_node("Add", [f"{p}_n", f"{p}_len_shift"], [f"{p}_span"]),
        helper.make_node("Div", [f"{p}_span", f"{p}_stride"], [f"{p}_steps"]),
        helper.make_node("Add", [f"{p}_steps", f"{p}_one"], [f"{p}_conv_len"]),
        helper.make_node("Div", [f"{p}_conv_len", f"{p}_pool"], [f"{p}_frames"]),
        _const(f"{p}_group", [group]), _const(f"{p}_group_less", [group - 1]),
        helper.make_node("Add", [f"{p}_frames", f"{p}_group_less"], [f"{p}_frames_up"]),
        helper.make_node("Div", [f"{p}_frames_up", f"{p}_group"], [f"{p}_rows"]),  # ceil(P / group)
        helper.make_node("Mul", [f"{p}_rows", f"{p}_block"], [f"{p}_core"]),
        helper.make_node("Add", [f"{p}_core", f"{p}_extra"], [f"{p}_body"]),
        helper.make_node("Sub", [f"{p}_body", f"{p}_n"], [f"{p}_right"]),
        helper.make_node("Concat", [f"{p}_zero", f"{p}_left", f"{p}_zero", f"{p}_zero", f"{p}_right", f"{p}_zero"],
                         [f"{p}_pads"], axis=0),
        helper.make_node("Pad", [source, f"{p}_pads"], [f"{p}_padded"]),
        _const(f"{p}_blocks_shape", [0, -1, block * cin]),
        helper.make_node("Reshape", [f"{p}_padded", f"{p}_blocks_shape"], [f"{p}_blocks"]),
    ]
    slices = []
    for k in range(taps):
        nodes += [_const(f"{p}_start{k}", [k]), helper.make_node("Add", [f"{p}_rows", f"{p}_start{k}"], [f"{p}_end{k}"]),
                  helper.make_node("Slice", [f"{p}_blocks", f"{p}_start{k}", f"{p}_end{k}", f"{p}_one"], [f"{p}_tap{k}"])]
        slices.append(f"{p}_tap{k}")
    nodes += [
        helper.make_node("Concat", slices, [f"{p}_windows"], axis=2),  # (B, P, taps*block*Cin)
        helper.make_node("MatMul", [f"{p}_windows", f"{p}_weight"], [f"{p}_phases_flat"]),  # (B, P, pool*Cout)
        _const(f"{p}_phase_shape", [0, 0, group, pool, cout]),
        helper.make_node("Reshape", [f"{p}_phases_flat", f"{p}_phase_shape"], [f"{p}_phases"]),
        helper.make_node("ReduceMax", [f"{p}_phases"], [f"{p}_max_g"], axes=[3], keepdims=0),  # (B, rows, group, Cout)
        _const(f"{p}_frames_shape", [0, -1, cout]),
        helper.make_node("Reshape", [f"{p}_max_g", f"{p}_frames_shape"], [f"{p}_max_all"]),
        helper.make_node("Slice", [f"{p}_max_all", f"{p}_zero", f"{p}_frames", f"{p}_one"], [f"{p}_max"]),  # (B, P, Cout)
        # Bias and ReLU after the transpose: ORT broadcasts a (C, 1) bias over long rows much faster.
        helper.make_node("Transpose", [f"{p}_max"], [f"{p}_max_t"], perm=[0, 2, 1]),
        helper.make_node("Add", [f"{p}_max_t", f"{p}_bias"], [f"{p}_biased"]),
        helper.make_node("Relu", [f"{p}_biased"], [out]),
    ]
    if channels_last_out:
        nodes.append(helper.make_node("Transpose", [out], [f"{p}_cl"], perm=[0, 2, 1]))
    weights = [numpy_helper.from_array(matrix, f"{p}_weight"), numpy_helper.from_array(b.reshape(cout, 1), f"{p}_bias")]
    return nodes, weights


def pooled_convs_matmul(model: onnx.ModelProto, blocks: int = 1, groups: tuple[int, ...] = (1, 1)) -> onnx.ModelProto:
    """pool1 (and with ``blocks=2`` pool2) computed by :func:`_pooled_conv` instead of Conv -> Relu -> MaxPool."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = _initializers(graph)
    outputs = ["pool1", "pool2"][:blocks]
    nodes = list(graph.node)
    last = max(i for i, n in enumerate(nodes) if set(n.output) & set(outputs))
    keep = nodes[last + 1:]
    new = [_const("rw_in_shape", [0, -1, 1]),
           helper.make_node("Reshape", [INPUT_NAME, "rw_in_shape"], ["rw_waveform_cl"])]  # (B, N, 1)
    source, cin, removed = "rw_waveform_cl", 1, []
    for i, name in enumerate(outputs):
        spec = arch.TRUNK[i]
        weight, bias = f"trunk.{i}.conv.weight", f"trunk.{i}.conv.bias"
        w, b = numpy_helper.to_array(inits[weight]), numpy_helper.to_array(inits[bias])
        block_nodes, block_inits = _pooled_conv(spec, w, b, source, cin, name, f"rw{i + 1}", i + 1 < blocks, groups[i])
        new += block_nodes
        graph.initializer.extend(block_inits)
        removed += [weight, bias]
        source, cin = f"rw{i + 1}_cl", spec.out_channels
    del graph.node[:]
    graph.node.extend(new + keep)
    for name in removed:
        graph.initializer.remove(inits[name])
    onnx.checker.check_model(model)
    return model


def heads_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Both conv8 heads as one MatMul on the im2col of conv7, inside the existing If guard."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = _initializers(graph)
    guard = next(n for n in graph.node if n.op_type == "If")
    then = next(a for a in guard.attribute if a.name == "then_branch")
    heads = list(then.g.node)
    names = [n.output[0] for n in heads]
    weights = [numpy_helper.to_array(inits[n.input[1]]) for n in heads]  # (out, 1024, 8)
    biases = [numpy_helper.to_array(inits[n.input[2]]) for n in heads]
    spec = arch.HEADS[0]
    kernel, stride, cin = spec.kernel, spec.stride, spec.in_channels
    # Row k*1024 + c, column o: w[o, c, k]; both heads side by side.
    matrix = np.concatenate([w.transpose(2, 1, 0).reshape(kernel * cin, -1) for w in weights], axis=1)
    bias = np.concatenate(biases)
    sizes = [w.shape[0] for w in weights]
    body = [
        helper.make_node("Transpose", [heads[0].input[0]], ["h_c7t"], perm=[0, 2, 1]),  # (B, T7, 1024)
        helper.make_node("Shape", ["h_c7t"], ["h_shape"]),
        _const("h_one", [1]), _const("h_kernel", [kernel]), _const("h_stride", [stride]),
        helper.make_node("Gather", ["h_shape", "h_one"], ["h_t7"], axis=0),
        helper.make_node("Sub", ["h_t7", "h_kernel"], ["h_span"]),
        helper.make_node("Div", ["h_span", "h_stride"], ["h_steps"]),
        helper.make_node("Add", ["h_steps", "h_one"], ["h_frames"]),  # F = (T7 - 8) // 2 + 1 (T7 >= 8 here)
        helper.make_node("Mul", ["h_steps", "h_stride"], ["h_last"]),
    ]
    taps = []
    for k in range(kernel):
        body += [_const(f"h_s{k}", [k]), helper.make_node("Add", ["h_last", f"h_s{k}"], [f"h_l{k}"]),
                 helper.make_node("Add", [f"h_l{k}", "h_one"], [f"h_e{k}"]),
                 helper.make_node("Slice", ["h_c7t", f"h_s{k}", f"h_e{k}", "h_one", "h_stride"], [f"h_tap{k}"])]
        taps.append(f"h_tap{k}")
    body += [
        helper.make_node("Concat", taps, ["h_windows"], axis=2),  # (B, F, 8*1024)
        helper.make_node("MatMul", ["h_windows", "h_weight"], ["h_logits"]),
        helper.make_node("Add", ["h_logits", "h_bias"], ["h_biased"]),
        _const("h_split", sizes),
        helper.make_node("Split", ["h_biased", "h_split"], [f"h_{n}" for n in names], axis=2),
    ]
    body += [helper.make_node("Transpose", [f"h_{n}"], [n], perm=[0, 2, 1]) for n in names]
    del then.g.node[:]
    then.g.node.extend(body)
    for n in heads:
        for name in n.input[1:]:
            graph.initializer.remove(inits[name])
    graph.initializer.extend([numpy_helper.from_array(matrix, "h_weight"), numpy_helper.from_array(bias, "h_bias")])
    onnx.checker.check_model(model)
    return model


def _attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def time_last_2d(model: onnx.ModelProto, first: int) -> onnx.ModelProto:
    """Trunk blocks ``first``.. as 2-D convolutions over (B, C, 1, T): time on the last axis.

    ONNX Runtime's CPU layout transformer rewrites 2-D convolutions (not 1-D ones) into its blocked
    NCHWc kernels, which compute several output positions per register tile along the last axis;
    with a (1, k) kernel that axis is time. Measured on an AVX-512 machine: conv2 1.9x faster than
    the 1-D Conv's im2col + GEMM, conv3/conv4 1.4x (with time on the first spatial axis, (k, 1) kernels
    as the PyTorch ports have, the same kernels are slower than 1-D). Each output keeps its (B, C, T)
    shape through a Squeeze; the next block reads the 4-D tensor."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = _initializers(graph)
    nodes = list(graph.node)
    outputs = {o.name for o in graph.output}
    convs = [f"/trunk.{i}/conv/Conv" for i in range(first, len(arch.TRUNK))]
    start = next((n for n in nodes if n.name == convs[0]), None)
    if start is None:
        raise ValueError(f"no node {convs[0]} in the graph: not the canonical SoundNet8 export")
    source = start.input[0]
    new: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {source: f"{source}_t2d"}
    in_block = False
    for node in nodes:
        if node.name == convs[0]:
            new += [_const("t2d_axis", [2]), helper.make_node("Unsqueeze", [source, "t2d_axis"], [renamed[source]])]
            in_block = True
        if not in_block or node.op_type not in ("Conv", "Relu", "MaxPool") or not node.name.startswith("/trunk."):
            new.append(node)
            continue
        node.input[0] = renamed[node.input[0]]
        out = node.output[0]
        renamed[out] = f"{out}_t2d"
        node.output[0] = renamed[out]
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            w.dims[:] = [w.dims[0], w.dims[1], 1, w.dims[2]]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            _attr(node, "kernel_shape", [1, attrs["kernel_shape"][0]])
            _attr(node, "strides", [1, attrs["strides"][0]])
            _attr(node, "pads", [0, attrs["pads"][0], 0, attrs["pads"][1]])
            _attr(node, "dilations", [1, 1])
        elif node.op_type == "MaxPool":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            _attr(node, "kernel_shape", [1, attrs["kernel_shape"][0]])
            _attr(node, "strides", [1, attrs["strides"][0]])
            _attr(node, "pads", [0, 0, 0, 0])
            _attr(node, "dilations", [1, 1])
        new.append(node)
        if out in outputs:  # a model output (or the heads' input): back to (B, C, T)
            new.append(helper.make_node("Squeeze", [renamed[out], "t2d_axis"], [out]))
    del graph.node[:]
    graph.node.extend(new)
    onnx.checker.check_model(model)
    return model


def build_variant(model: onnx.ModelProto, variant: GraphVariant) -> onnx.ModelProto:
    """``model`` (the canonical export) as ``variant``; metadata (provenance) is kept."""
    if variant is GraphVariant.PLAIN:
        return model
    if variant is GraphVariant.MATMUL:
        # Two frames per MatMul row for conv1 measured fastest (fewer, longer rows to gather).
        return heads_matmul(pooled_convs_matmul(model, 1, groups=(2, 1)))
    if variant is GraphVariant.MATMUL_CONV12:
        return heads_matmul(pooled_convs_matmul(model, 2, groups=(2, 1)))
    if variant is GraphVariant.MATMUL_NCHWC:
        return time_last_2d(heads_matmul(pooled_convs_matmul(model, 1, groups=(2, 1))), first=1)
    if variant is GraphVariant.NCHWC:
        return time_last_2d(heads_matmul(model), first=0)
    raise ValueError(f"no graph for variant {variant}")


def variant_file_name(variant: GraphVariant) -> str:
    return f"{variant.value}.onnx"


def write_variants(source: str | os.PathLike, folder: str | os.PathLike,
                   variants: tuple[GraphVariant, ...] = VARIANTS) -> dict[GraphVariant, Path]:
    """Write every variant but ``plain`` (which is ``source`` itself) into ``folder``, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(source))
    out = {}
    for variant in variants:
        if variant is GraphVariant.PLAIN:
            continue
        out[variant] = save_atomically(build_variant(model, variant), folder / variant_file_name(variant))
    return out


def save_atomically(model: onnx.ModelProto, target: Path) -> Path:
    """``model`` written to ``target`` through a temporary file beside it: readers see the whole file or none."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundnet8.export.variants",
                                     description="write the graph variants of an exported SoundNet8 model")
    parser.add_argument("model", type=Path, help="the exported ONNX model")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write <variant>.onnx into")
    parser.add_argument("--variant", choices=[v.value for v in VARIANTS], action="append",
                        help="only these variants (repeatable; default all)")
    args = parser.parse_args(argv)
    chosen = tuple(GraphVariant(v) for v in args.variant) if args.variant else VARIANTS
    for variant, path in write_variants(args.model, args.output, chosen).items():
        print(f"{variant.value}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
