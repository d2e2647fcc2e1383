"""int8 copies of the export (soundnet8.export.quantize): they build, load as soundnet8 models, run with
the same outputs and shapes, stay within a stated tolerance of float32 on the bundled clips, and the
conv1-excluded variant really keeps conv1 in float32.

The calibration clips are the bundled ones, so the tolerance below is in-sample: it catches a broken
quantization (wrong ranges, a dropped Relu, swapped outputs), not how int8 fares on other audio (that is
benchmarks/results/precision/, on ESC-50)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from soundnet8.engine import arch
from soundnet8.engine.audio import load
from soundnet8.engine.inputs import DEMO_DIR, bundled_clips
from soundnet8.engine.modelfile import INPUT_NAME, model_info
from soundnet8.export.quantize import (
    META_KEY_PRECISION, QuantizeOptions, conv1_node, main, quantize, quantize_file,
)

from .conftest import relative_error

MAX_ERROR = 0.5
"""max |int8 - fp32| / max |fp32| of any output on any bundled clip (measured: <= 0.39, on conv6)."""
MAX_MEAN_ERROR = 0.25
"""||mean int8 - mean fp32|| / ||mean fp32|| of pool5 and conv6 clip means (measured: <= 0.16)."""
MIN_ERROR = 1e-4
"""Some output must differ by more than this: the graph really runs in int8 (fp32 variants agree to 1e-6)."""


@pytest.fixture(scope="module")
def quantized(onnx_path, tmp_path_factory):
    """conv1 quantized (through the command) and conv1 in float32 (through the library)."""
    folder = tmp_path_factory.mktemp("int8")
    full = folder / "int8.onnx"
    assert main([str(onnx_path), "-o", str(full), "--calibration", str(DEMO_DIR)]) == 0
    kept = quantize_file(onnx_path, folder / "int8-conv1fp32.onnx", QuantizeOptions(keep_conv1_fp32=True), DEMO_DIR)
    return {"full": full, "conv1fp32": kept}


@pytest.fixture(scope="module")
def outputs(onnx_path, quantized):
    """{graph: [per clip: {output: array}]} on the bundled clips, one clip per call."""
    waves = [load(p).waveform for p in bundled_clips()]
    out = {}
    for name, path in {"fp32": onnx_path, **quantized}.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == list(arch.OUTPUTS)
        out[name] = [dict(zip(arch.OUTPUTS, session.run(None, {INPUT_NAME: w[None]}))) for w in waves]
    return out


def _mean_error(actual: np.ndarray, expected: np.ndarray) -> float:
    a, e = actual.mean(axis=-1), expected.mean(axis=-1)
    return float(np.linalg.norm(a - e) / np.linalg.norm(e))


def test_quantized_files_are_soundnet8_models(onnx_path, quantized):
    fp32 = model_info(onnx_path)
    for name, path in quantized.items():
        info = model_info(path)  # the engine's own check: refuses files without the export's metadata
        assert info.outputs == fp32.outputs and info.scene_names == fp32.scene_names
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert json.loads(meta[META_KEY_PRECISION])["keep_conv1_fp32"] is (name == "conv1fp32")


@pytest.mark.parametrize("graph", ["full", "conv1fp32"])
def test_int8_features_stay_near_fp32(outputs, graph):
    largest = 0.0
    for expected, actual in zip(outputs["fp32"], outputs[graph]):
        for name in arch.OUTPUTS:
            assert actual[name].shape == expected[name].shape and actual[name].dtype == np.float32
            error = relative_error(actual[name], expected[name])
            assert error <= MAX_ERROR, (name, error)
            largest = max(largest, error)
        for name in ("pool5", "conv6"):
            assert _mean_error(actual[name][0], expected[name][0]) <= MAX_MEAN_ERROR, name
    assert largest > MIN_ERROR


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def test_conv1_fp32_variant_keeps_conv1_in_float(quantized):
    for name, path in quantized.items():
        model = onnx.load(str(path))
        inits = {i.name: i for i in model.graph.initializer}
        producers = _producers(model)
        conv1 = conv1_node(model)
        weight = conv1.input[1]
        if name == "conv1fp32":
            assert inits[weight].data_type == TensorProto.FLOAT  # a float weight, read as is
            assert producers[conv1.input[0]].op_type != "DequantizeLinear"  # on the float waveform
        else:
            dq = producers[weight]
            assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
            assert producers[conv1.input[0]].op_type == "DequantizeLinear"
        later = [n for n in model.graph.node if n.op_type == "Conv"][1:]
        assert later and all(producers[n.input[1]].op_type == "DequantizeLinear" for n in later)


def test_conv1_fp32_is_closer_on_pool1(outputs):
    """conv1 on an 8-bit waveform is what costs most at pool1: keeping it in float32 must show."""
    def mean_pool1_error(graph):
        return np.mean([relative_error(a["pool1"], e["pool1"]) for a, e in zip(outputs[graph], outputs["fp32"])])

    assert mean_pool1_error("conv1fp32") < mean_pool1_error("full")
