"""An independent check of the model: a plain-numpy SoundNet8 forward pass against the ONNX model.

The network is written here literally from the published description of the original Torch7
architecture (../shared/README.md), not from ``soundnet8.engine.arch`` nor the PyTorch port:

    conv k = 64/32/16/8/4/4/4, stride 2, padding k/2; BatchNorm (eps 1e-5) + ReLU after conv1..conv7;
    max-pool 8/8 after conv1 and conv2, 4/4 after conv5; conv8 heads k = 8, stride 2, no padding, on conv7.

The weights are the raw pickled dict of ``sound8.npy`` as stored ((k, 1, in, out) convolution
weights), read with the package's public safe loader, so the layout conversion of the export is
checked too. Convolutions are cross-correlations (as in Torch7 and TensorFlow), computed in float64
by im2col over a strided view, a chunk of output frames at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from soundnet8.engine import arch
from soundnet8.engine.audio import load
from soundnet8.engine.modelfile import ensure_model
from soundnet8.engine.request import Request
from soundnet8.engine.runner import Runner
from soundnet8.engine.session import Provider, SessionConfig, create_session
from soundnet8.export.weights import read_raw_weights, resolve_weights_path, verify

from .conftest import relative_error

TOLERANCE = 1e-4  # the project's parity metric, max|a - e| / max|e|, every output
BN_EPS = 1e-5
CHUNK_ELEMENTS = 1 << 21  # im2col block: 16 MiB of float64 at most

# (weights key, output name, kernel, max-pool after BatchNorm + ReLU; 1 = none): stride 2, padding k/2.
TRUNK = (
    ("conv1", "pool1", 64, 8),
    ("conv2", "pool2", 32, 8),
    ("conv3", "conv3", 16, 1),
    ("conv4", "conv4", 8, 1),
    ("conv5", "pool5", 4, 4),
    ("conv6", "conv6", 4, 1),
    ("conv7", "conv7", 4, 1),
)
# (weights key, output name): kernel 8, stride 2, no padding, no BatchNorm, both on conv7.
HEADS = (("conv8", "objects"), ("conv8_2", "scenes"))
HEAD_KERNEL = 8

# The shortest inputs giving one conv7 frame and one conv8 frame (samples at 22,050 Hz).
MIN_SAMPLES_TRUNK = 4_574
MIN_SAMPLES_HEADS = 209_374


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """(C_in, T) -> (C_out, T'): cross-correlation with ``w`` of shape (k, C_in, C_out)."""
    k, c_in, c_out = w.shape
    padded = np.pad(x, ((0, 0), (padding, padding)))
    n_out = (padded.shape[1] - k) // stride + 1
    out = np.empty((c_out, max(n_out, 0)))
    if n_out <= 0:
        return out
    windows = sliding_window_view(padded, k, axis=1)[:, ::stride][:, :n_out]  # (C_in, T', k), a view
    matrix = w.transpose(1, 0, 2).reshape(c_in * k, c_out)
    step = max(1, CHUNK_ELEMENTS // (c_in * k))
    for start in range(0, n_out, step):
        columns = windows[:, start:start + step].transpose(1, 0, 2).reshape(-1, c_in * k)
        out[:, start:start + step] = (columns @ matrix).T
    return out + b[:, None]


def max_pool(x: np.ndarray, size: int) -> np.ndarray:
    """Kernel == stride, floor mode: a trailing partial window is dropped."""
    n = x.shape[1] // size
    return x[:, :n * size].reshape(x.shape[0], n, size).max(axis=2)


def numpy_forward(waveform: np.ndarray, weights: dict) -> dict[str, np.ndarray]:
    """Every output, (channels, frames) float64, of a (samples,) model input (22,050 Hz, x256)."""
    outputs: dict[str, np.ndarray] = {}
    x = np.asarray(waveform, np.float64)[None]
    for key, name, kernel, pool in TRUNK:
        layer = {k: np.asarray(v, np.float64) for k, v in weights[key].items()}
        x = conv1d(x, layer["weights"][:, 0], layer["biases"], 2, kernel // 2)
        x = (x - layer["mean"][:, None]) / np.sqrt(layer["var"][:, None] + BN_EPS)
        x = np.maximum(layer["gamma"][:, None] * x + layer["beta"][:, None], 0.0)
        if pool > 1:
            x = max_pool(x, pool)
        outputs[name] = x
    for key, name in HEADS:
        layer = {k: np.asarray(v, np.float64) for k, v in weights[key].items()}
        outputs[name] = conv1d(x, layer["weights"][:, 0], layer["biases"], 2, 0)
    return outputs


def frame_counts(n_samples: int) -> dict[str, int]:
    """Frames of every output, from the same literal layer list (<= 0: too short)."""
    counts: dict[str, int] = {}
    n = n_samples
    for _, name, kernel, pool in TRUNK:
        n = max((n + 2 * (kernel // 2) - kernel) // 2 + 1, 0) // pool if n > 0 else 0
        counts[name] = n
    for _, name in HEADS:
        counts[name] = max((n - HEAD_KERNEL) // 2 + 1, 0) if n > 0 else 0
    return counts


@pytest.fixture(scope="module")
def raw_weights() -> dict:
    path = resolve_weights_path()
    verify(path)
    return read_raw_weights(path)


@pytest.fixture(scope="module")
def runner() -> Runner:
    session = create_session(ensure_model().path, SessionConfig(Provider.CPU, intra_op_threads=2))
    return Runner(session, Request(layers=arch.OUTPUTS), batch_size=1)


def test_minimum_lengths_are_pinned():
    assert (arch.MIN_SAMPLES_TRUNK, arch.MIN_SAMPLES_HEADS) == (MIN_SAMPLES_TRUNK, MIN_SAMPLES_HEADS)
    assert frame_counts(MIN_SAMPLES_TRUNK)["conv7"] == 1 and frame_counts(MIN_SAMPLES_TRUNK - 1)["conv7"] <= 0
    assert frame_counts(MIN_SAMPLES_HEADS)["scenes"] == 1 and frame_counts(MIN_SAMPLES_HEADS - 1)["scenes"] <= 0
    for n in (MIN_SAMPLES_TRUNK, MIN_SAMPLES_HEADS, 441_000):
        assert {k: max(v, 0) for k, v in arch.output_lengths(n).items()} == frame_counts(n), n


@pytest.mark.parametrize("n_samples", [None, MIN_SAMPLES_HEADS], ids=["tiled-25s", "min-heads"])
def test_numpy_forward_matches_onnx_on_a_real_clip(raw_weights, runner, demo_clips, n_samples):
    """All nine outputs of the ONNX model equal the plain-numpy network on real ESC-10 audio."""
    waveform = load(demo_clips[0]).waveform  # the engine's model input: 22,050 Hz, x256, tiled to >= 20 s
    if n_samples is not None:
        waveform = waveform[:n_samples]
    expected = numpy_forward(waveform, raw_weights)
    got = runner.run(waveform[None])
    assert list(got) == [name for _, name, _, _ in TRUNK] + [name for _, name in HEADS]
    counts = frame_counts(len(waveform))
    for name, want in expected.items():
        assert want.shape[1] == counts[name] >= 1, name
        assert got[name][0].shape == want.shape, name
        assert relative_error(got[name][0], want) < TOLERANCE, name
