"""The HEAR 2021 API of soundnet8.hear: the contract hear-validator checks, and agreement with the engine."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="soundnet8.hear needs torch (pip install 'soundnet8[hear]')")

from soundnet8.engine import Pool, Preprocessing, Request, Runner, SessionConfig, SoundNetError, arch  # noqa: E402
from soundnet8.engine import create_session  # noqa: E402
from soundnet8.engine.audio import decode, prepare  # noqa: E402
from soundnet8.hear import Model, get_scene_embeddings, get_timestamp_embeddings, load_model  # noqa: E402

SR = arch.SAMPLE_RATE
HOP_MS = 1024 / SR * 1000
LENGTHS_S = (0.1, 1.07, 1.98, 2.74, 4.0)  # the validator's lengths, and one shorter than the trunk's minimum


@pytest.fixture(scope="module")
def model(onnx_path) -> Model:
    return load_model(str(onnx_path))


@pytest.fixture(scope="module")
def engine_runner(onnx_path) -> Runner:
    session = create_session(onnx_path, SessionConfig())
    return Runner(session, Request(layers=("pool5", "conv6"), pools=(Pool.MEAN, Pool.STD)))


@pytest.fixture(scope="module")
def clip(demo_clips) -> np.ndarray:
    """A real ESC-10 clip at 22,050 Hz in [-1, 1], resampled by the engine (5 s)."""
    samples, rate = decode(demo_clips[0])
    return prepare(samples, rate, Preprocessing(min_seconds=0)) / arch.INPUT_SCALE


def _signals(n: int) -> torch.Tensor:
    t = np.arange(n) / SR
    rng = np.random.default_rng(n)
    return torch.from_numpy(np.stack([
        0.5 * np.sin(2 * np.pi * 440 * t),
        rng.uniform(-1, 1, n),
    ]).astype(np.float32))


def test_model_is_a_parameterless_torch_module(model):
    assert isinstance(model, torch.nn.Module)
    assert list(model.parameters()) == []
    assert model.to("cpu") is model
    for name, expected in (("sample_rate", 22050), ("scene_embedding_size", 1536), ("timestamp_embedding_size", 768)):
        value = getattr(model, name)
        assert type(value) is int and value == expected, name


def test_empty_path_uses_the_engines_model(onnx_path, monkeypatch, clip):
    monkeypatch.setenv("SOUNDNET8_MODEL", str(onnx_path))
    default = load_model()
    assert default.model_path == str(onnx_path.resolve())
    audio = torch.from_numpy(clip[None, :SR].astype(np.float32))
    explicit = load_model(str(onnx_path))
    np.testing.assert_array_equal(get_scene_embeddings(audio, default), get_scene_embeddings(audio, explicit))


@pytest.mark.parametrize("seconds", LENGTHS_S)
def test_timestamp_contract(model, clip, seconds):
    n = int(seconds * SR)
    audio = torch.cat([torch.from_numpy(clip[None, :n].astype(np.float32)), _signals(n)])
    embeddings, timestamps = get_timestamp_embeddings(audio, model)
    assert isinstance(embeddings, torch.Tensor) and isinstance(timestamps, torch.Tensor)
    assert embeddings.dtype == torch.float32
    assert embeddings.ndim == 3 and timestamps.ndim == 2
    assert embeddings.shape[0] == 3 and embeddings.shape[2] == model.timestamp_embedding_size
    assert tuple(timestamps.shape) == tuple(embeddings.shape[:2])
    assert torch.isfinite(embeddings).all()
    times = timestamps.numpy().astype(np.float64)
    assert (times == times[0]).all()  # same length, same times
    row, duration_ms = times[0], 1000 * n / SR
    assert 0 < row[0] <= HOP_MS  # the first frame centre is within the first hop
    assert row[-1] <= duration_ms  # none after the end ...
    assert row[-1] > duration_ms - HOP_MS  # ... and the end is covered
    if len(row) > 1:
        np.testing.assert_allclose(np.diff(row), HOP_MS, atol=1e-3)
    assert len(row) == int((n - 238.5) // 1024) + 1  # every grid point up to the end


@pytest.mark.parametrize("seconds", LENGTHS_S)
def test_scene_contract_and_equality_with_the_engine(model, engine_runner, clip, seconds):
    n = int(seconds * SR)
    audio = torch.cat([torch.from_numpy(clip[None, :n].astype(np.float32)), _signals(n)])
    embeddings = get_scene_embeddings(audio, model)
    assert isinstance(embeddings, torch.Tensor) and embeddings.dtype == torch.float32
    assert tuple(embeddings.shape) == (3, model.scene_embedding_size)
    # The engine's own pooled features of the same audio (default preprocessing: x256, clip, tile to 20 s).
    features = engine_runner.features([prepare(x, SR) for x in audio.numpy()])
    expected = np.stack([np.concatenate([f.pooled[(layer, pool)] for layer in ("pool5", "conv6")
                                         for pool in ("mean", "std")]) for f in features])
    np.testing.assert_allclose(embeddings.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_batches_equal_single_sounds(model, clip):
    n = int(1.98 * SR)
    audio = torch.cat([torch.from_numpy(clip[None, :n].astype(np.float32)), _signals(n)])
    batch_ts, batch_times = get_timestamp_embeddings(audio, model)
    batch_scene = get_scene_embeddings(audio, model)
    for i in range(len(audio)):
        ts, times = get_timestamp_embeddings(audio[i:i + 1], model)
        np.testing.assert_allclose(ts[0].numpy(), batch_ts[i].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(times[0].numpy(), batch_times[i].numpy())
        scene = get_scene_embeddings(audio[i:i + 1], model)
        np.testing.assert_allclose(scene[0].numpy(), batch_scene[i].numpy(), rtol=1e-5, atol=1e-5)
    pair_scene = get_scene_embeddings(audio[1:], model)
    np.testing.assert_allclose(pair_scene.numpy(), batch_scene[1:].numpy(), rtol=1e-5, atol=1e-5)


def test_timestamp_frames_are_the_engines_frames(model, engine_runner, clip):
    """Away from the edges, grid point 2 + 8k is pool5's frame k and 16k - 2 is conv6's frame k
    (centres 2286.5 + 8192k and -1809.5 + 16384k samples)."""
    audio = clip.astype(np.float32)
    embeddings, timestamps = get_timestamp_embeddings(torch.from_numpy(audio[None]), model)
    frames = engine_runner.run((audio * arch.INPUT_SCALE)[None])
    checked = 0
    for layer, columns, grid_of in (("pool5", slice(0, 256), lambda k: 2 + 8 * k),
                                    ("conv6", slice(256, 768), lambda k: 16 * k - 2)):
        rf = arch.RECEPTIVE_FIELDS[layer]
        for k in range(frames[layer].shape[2]):
            inside = k * rf.stride + rf.offset >= 0 and k * rf.stride + rf.offset + rf.size <= len(audio)
            if not inside:  # edge frames: the engine sees its padding, the HEAR grid sees silence
                continue
            j = grid_of(k)
            centre_ms = (rf.offset + (rf.size - 1) / 2 + k * rf.stride) / SR * 1000
            assert timestamps[0, j].item() == pytest.approx(centre_ms, abs=1e-3)
            np.testing.assert_allclose(embeddings[0, j, columns].numpy(), frames[layer][0, :, k], rtol=1e-4, atol=1e-4)
            checked += 1
    assert checked >= 10


def test_delay_by_one_hop_moves_embeddings_by_one_grid_point(model, clip):
    x = torch.from_numpy(clip[None, :3 * SR].astype(np.float32))
    delayed = torch.cat([torch.zeros(1, 1024), x, torch.zeros(1, 3000)], dim=1)
    e, _ = get_timestamp_embeddings(x, model)
    d, _ = get_timestamp_embeddings(delayed, model)
    np.testing.assert_allclose(d[0, 1:e.shape[1] + 1].numpy(), e[0].numpy(), rtol=1e-5, atol=1e-5)


def test_input_is_scaled_and_clipped_like_the_engine(model):
    ones = torch.ones(1, SR)
    np.testing.assert_array_equal(get_scene_embeddings(3 * ones, model), get_scene_embeddings(ones, model))
    e3, _ = get_timestamp_embeddings(-3 * ones, model)
    e1, _ = get_timestamp_embeddings(-ones, model)
    np.testing.assert_array_equal(e3, e1)


@pytest.mark.parametrize("n", [1, 100, 238, 239, arch.MIN_SAMPLES_TRUNK - 1])
def test_very_short_inputs(model, n):
    audio = _signals(max(n, 2))[:, :n]
    embeddings, timestamps = get_timestamp_embeddings(audio, model)
    assert embeddings.shape[1] == timestamps.shape[1] >= 1
    assert timestamps.max().item() <= 1000 * n / SR + 1e-4
    assert torch.isfinite(embeddings).all()
    scene = get_scene_embeddings(audio, model)
    assert tuple(scene.shape) == (2, model.scene_embedding_size) and torch.isfinite(scene).all()


def test_no_sounds(model):
    embeddings, timestamps = get_timestamp_embeddings(torch.zeros(0, SR), model)
    assert embeddings.shape[0] == timestamps.shape[0] == 0 and embeddings.shape[2] == 768
    assert tuple(get_scene_embeddings(torch.zeros(0, SR), model).shape) == (0, 1536)


def test_bad_inputs_raise_soundnet_errors(model):
    with pytest.raises(SoundNetError):
        get_scene_embeddings(torch.zeros(2, 0), model)
    with pytest.raises(SoundNetError):
        get_timestamp_embeddings(torch.zeros(100), model)
    with pytest.raises(SoundNetError):
        get_scene_embeddings(np.zeros((1, 100), np.float32), model)
    with pytest.raises(SoundNetError):
        get_scene_embeddings(torch.full((1, 100), float("nan")), model)
