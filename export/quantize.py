"""Reduced-precision (int8) copies of the exported model, built with ``onnxruntime.quantization``.

Inputs and outputs stay float32 with the same names and shapes, and the soundnet8 metadata is kept,
so the engine runs a quantized file like any ``--model FILE`` (``--graph plain``). Whether any of
these is worth shipping is measured by ``benchmarks/precision.py`` (results in
``benchmarks/results/precision/``).

* ``STATIC`` + ``QDQ`` (the default): QuantizeLinear/DequantizeLinear pairs around every Conv, weights
  per output channel (int8, symmetric), activation ranges from a few calibration clips (MinMax).
* ``STATIC`` + ``QOPERATOR``: the same ranges, as QLinearConv nodes.
* ``DYNAMIC``: weights int8 ahead of time, activation ranges computed per call (ConvInteger).

Conv1's input is the waveform in [-256, 256]: 8 bits over that range is 8-bit audio, so
``keep_conv1_fp32`` leaves conv1 (the first Conv) in float32; its output (pool1) is quantized as
conv2's input. Only Conv, Relu and MaxPool are quantized, so on a graph variant whose conv1 is a
MatMul (``export.variants``: matmul) conv1 stays float32 whatever the option says. The conv8 heads
sit inside the graph's ``If`` guard, which the quantizer does not enter: they stay float32.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from soundnet8.engine.errors import ModelError
from soundnet8.engine.modelfile import INPUT_NAME
from .variants import save_atomically

META_KEY_PRECISION = "soundnet8.precision"
"""Metadata entry of a quantized file: its :class:`QuantizeOptions` as JSON."""

DEFAULT_CALIBRATION_CLIPS = 8


class Method(str, enum.Enum):
    STATIC = "static"  # activation ranges from calibration clips
    DYNAMIC = "dynamic"  # activation ranges computed on each call


class Format(str, enum.Enum):
    QDQ = "qdq"  # QuantizeLinear/DequantizeLinear around float ops; ORT fuses them into int8 kernels
    QOPERATOR = "qoperator"  # QLinearConv etc. written out


class Activations(str, enum.Enum):
    UINT8 = "uint8"  # u8 x s8: the VNNI (vpdpbusd) operand order
    INT8 = "int8"  # s8 x s8


class Calibration(str, enum.Enum):
    MINMAX = "minmax"  # the observed range
    PERCENTILE = "percentile"  # a high percentile of |x| (outliers clipped)
    ENTROPY = "entropy"  # the range minimising the KL divergence of the histogram


@dataclass(frozen=True)
class QuantizeOptions:
    method: Method = Method.STATIC
    format: Format = Format.QDQ
    activations: Activations = Activations.UINT8
    per_channel: bool = True
    keep_conv1_fp32: bool = False
    calibration: Calibration = Calibration.MINMAX

    @property
    def name(self) -> str:
        """A short label: ``int8-qdq-u8``, ``int8-qdq-u8-conv1fp32``, ``int8-dynamic``."""
        if self.method is Method.DYNAMIC:
            text = "int8-dynamic"
        else:
            text = f"int8-{self.format.value}-{'u8' if self.activations is Activations.UINT8 else 's8'}"
        if not self.per_channel:
            text += "-pertensor"
        if self.method is Method.STATIC and self.calibration is not Calibration.MINMAX:
            text += f"-{self.calibration.value}"
        return text + ("-conv1fp32" if self.keep_conv1_fp32 else "")

    def to_dict(self) -> dict:
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}


def conv1_node(model: onnx.ModelProto) -> onnx.NodeProto:
    """The first Conv of the main graph (conv1 in the canonical export)."""
    for node in model.graph.node:
        if node.op_type == "Conv":
            return node
    raise ModelError("the model has no Conv node: not the canonical SoundNet8 export (quantize the plain graph)")


def conv1_block(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """conv1 and the nodes after it up to its max-pool (pool1): what ``keep_conv1_fp32`` leaves in float32."""
    conv = conv1_node(model)
    block, tensor = [conv], conv.output[0]
    while block[-1].op_type != "MaxPool":
        nxt = [n for n in model.graph.node if tensor in n.input]
        if len(nxt) != 1:
            break
        block.append(nxt[0])
        tensor = nxt[0].output[0]
    return block


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node has a unique name (the quantizer selects and excludes nodes by name)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    seen: set[str] = set()

    def visit(graph: onnx.GraphProto, prefix: str) -> None:
        for i, node in enumerate(graph.node):
            if not node.name or node.name in seen:
                node.name = f"{prefix}{node.op_type}_{i}"
            seen.add(node.name)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g, f"{node.name}/{attr.name}/")

    visit(model.graph, "")
    return model


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared waveforms, one clip per call."""

    def __init__(self, waveforms: Sequence[np.ndarray]):
        self._items = iter([{INPUT_NAME: np.asarray(w, np.float32)[None, :]} for w in waveforms])

    def get_next(self):
        return next(self._items, None)


def calibration_paths(source: str | os.PathLike, limit: int = DEFAULT_CALIBRATION_CLIPS) -> list[str]:
    """The first ``limit`` audio files of a folder, or of a manifest CSV (fold-1 rows only when it has folds)."""
    from soundnet8.engine.inputs import discover, read_manifest

    source = Path(source)
    if source.suffix.lower() == ".csv":
        inputs = read_manifest(source, _manifest_audio_dir(source))
        items = [it for it in inputs.items if it.fold in (None, 1)]
    else:
        items = list(discover([source]).items)
    if not items:
        raise ModelError(f"{source}: no calibration audio found")
    return [it.path for it in _spread(items, limit)]


def _manifest_audio_dir(csv_path: Path) -> Path | None:
    """ESC-50's layout: meta/esc50.csv next to audio_16k/ (else paths are relative to the CSV)."""
    for name in ("audio_16k", "audio"):
        candidate = csv_path.parent.parent / name
        if candidate.is_dir():
            return candidate
    return None


def _spread(items: list, limit: int) -> list:
    """``limit`` items spread over the list (one per label where labels are sorted by class)."""
    by_label: dict = {}
    for it in items:
        by_label.setdefault(it.label, []).append(it)
    picked = [group[0] for group in by_label.values()][:limit]
    rest = [it for it in items if it not in picked]
    return picked + rest[: max(0, limit - len(picked))]


def calibration_waveforms(paths: Sequence[str]) -> list[np.ndarray]:
    from soundnet8.engine.audio import load

    return [load(p).waveform for p in paths]


# Relu and MaxPool too: a quantized Relu is folded into the Conv before it (its range is then the
# Relu's, >= 0, rather than the pre-activation's, which would spend half the 256 levels on negatives),
# and MaxPool runs on the 8-bit values.
STATIC_OP_TYPES = ("Conv", "Relu", "MaxPool")


def _static(src: Path, dst: Path, options: QuantizeOptions, waveforms: Sequence[np.ndarray], exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {Calibration.MINMAX: CalibrationMethod.MinMax, Calibration.PERCENTILE: CalibrationMethod.Percentile,
              Calibration.ENTROPY: CalibrationMethod.Entropy}[options.calibration]
    quantize_static(
        str(src), str(dst), _Reader(waveforms),
        quant_format=QuantFormat.QDQ if options.format is Format.QDQ else QuantFormat.QOperator,
        op_types_to_quantize=list(STATIC_OP_TYPES), per_channel=options.per_channel,
        activation_type=QuantType.QUInt8 if options.activations is Activations.UINT8 else QuantType.QInt8,
        weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=method,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": options.activations is Activations.INT8},
    )  # fmt: skip


def _dynamic(src: Path, dst: Path, options: QuantizeOptions, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["Conv"], per_channel=options.per_channel,
                     weight_type=QuantType.QInt8, nodes_to_exclude=exclude)


def quantize(model: onnx.ModelProto, options: QuantizeOptions = QuantizeOptions(),
             waveforms: Sequence[np.ndarray] = ()) -> onnx.ModelProto:
    """A quantized copy of the canonical export ``model`` (``waveforms``: calibration clips, prepared
    as the engine prepares them; needed for STATIC)."""
    if options.method is Method.STATIC and not waveforms:
        raise ModelError("static quantization needs calibration waveforms")
    named = _named(model)
    exclude = [n.name for n in conv1_block(named)] if options.keep_conv1_fp32 else []
    with tempfile.TemporaryDirectory(prefix="soundnet8-quantize-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(named, str(src))
        try:
            if options.method is Method.STATIC:
                _static(src, dst, options, waveforms, exclude)
            else:
                _dynamic(src, dst, options, exclude)
        except (ValueError, RuntimeError) as exc:  # onnxruntime's own errors, named as ours
            raise ModelError(f"quantizing ({options.name}) failed: {exc}") from exc
        out = onnx.load(str(dst))
    del out.metadata_props[:]  # the export's provenance, so the engine accepts the file as a model
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value=prop.value)
    out.metadata_props.add(key=META_KEY_PRECISION, value=json.dumps(options.to_dict(), sort_keys=True))
    return out


def quantize_file(model_path: str | os.PathLike, output: str | os.PathLike,
                  options: QuantizeOptions = QuantizeOptions(), calibration: str | os.PathLike | None = None,
                  clips: int = DEFAULT_CALIBRATION_CLIPS) -> Path:
    """Write the quantized copy of ``model_path`` to ``output`` (atomically); ``calibration``: a folder
    of audio or a manifest CSV."""
    waveforms: list[np.ndarray] = []
    if options.method is Method.STATIC:
        if calibration is None:
            raise ModelError("static quantization needs --calibration DIR_OR_MANIFEST")
        waveforms = calibration_waveforms(calibration_paths(calibration, clips))
    out = quantize(onnx.load(str(model_path)), options, waveforms)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return save_atomically(out, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundnet8.export.quantize",
                                     description="write an int8 copy of an exported SoundNet8 model")
    parser.add_argument("model", type=Path, help="the exported ONNX model (the plain graph)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the quantized ONNX file to write")
    parser.add_argument("--calibration", type=Path, help="folder of audio, or a manifest CSV (fold 1 rows if it has folds)")
    parser.add_argument("--clips", type=int, default=DEFAULT_CALIBRATION_CLIPS, help="calibration clips (default %(default)s)")
    parser.add_argument("--method", choices=[m.value for m in Method], default=Method.STATIC.value)
    parser.add_argument("--format", choices=[f.value for f in Format], default=Format.QDQ.value)
    parser.add_argument("--activations", choices=[a.value for a in Activations], default=Activations.UINT8.value)
    parser.add_argument("--calibration-method", choices=[c.value for c in Calibration], default=Calibration.MINMAX.value)
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    parser.add_argument("--keep-conv1-fp32", action="store_true", help="leave conv1 (the waveform's conv) in float32")
    args = parser.parse_args(argv)
    options = QuantizeOptions(Method(args.method), Format(args.format), Activations(args.activations),
                              per_channel=not args.per_tensor, keep_conv1_fp32=args.keep_conv1_fp32,
                              calibration=Calibration(args.calibration_method))
    path = quantize_file(args.model, args.output, options, args.calibration, args.clips)
    print(f"{options.name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
