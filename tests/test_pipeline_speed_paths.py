"""The fast paths of the fused worker (issue 12, part 1) give what the plain paths give, bit for bit.

Each file is opened once (header and decode from one handle), tiling is left to the model's batch
buffer, which the runner reuses between calls, and the model's metadata is read without onnx.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundnet8.engine import arch
from soundnet8.engine.audio import (
    Mix, Preprocessing, SampleRateMode, TiledWaveform, info, load, load_prepared, prepare,
)
from soundnet8.engine.errors import AudioError, ModelError
from soundnet8.engine.modelfile import model_info, read_metadata
from soundnet8.engine.pipeline import Worker
from soundnet8.engine.runner import LONG_INPUT, Request, Runner
from soundnet8.engine.session import Provider, SessionConfig, create_session
from soundnet8.engine.store import ClipError, ClipResult

ONE_THREAD = SessionConfig(Provider.CPU, intra_op_threads=1)


def _tone(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 440 * t)[:, None] + np.random.default_rng(seed).normal(0, 0.05, (len(t), channels))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory, demo_clips) -> dict[str, object]:
    """Real ESC-10 clips (tiled to 25 s), a stereo 44.1 kHz file, and files that must fail."""
    folder = tmp_path_factory.mktemp("speed")
    stereo = folder / "stereo.wav"
    sf.write(stereo, _tone(3.0, 44_100, 1, channels=2), 44_100, subtype="FLOAT")
    nan = folder / "nan.wav"
    x = _tone(2.0, 16_000, 2)[:, 0]
    x[1000] = np.nan
    sf.write(nan, x, 16_000, subtype="FLOAT")
    src = folder / "src.wav"
    sf.write(src, _tone(2.0, 16_000, 3)[:, 0], 16_000)
    data = src.read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.flac").write_text("this is not audio\n")
    (folder / "a_folder.wav").mkdir()
    bad = [nan, folder / "truncated.wav", folder / "empty.wav", folder / "notes.flac", folder / "a_folder.wav",
           folder / "missing.wav"]
    return {"clips": list(demo_clips[:5]), "stereo": stereo, "bad": bad, "nan": nan}


def _reason(fn, *args) -> str:
    with pytest.raises(AudioError) as caught:
        fn(*args)
    return caught.value.reason


# --- audio: one open, deferred tiling ---------------------------------------------------------

@pytest.mark.parametrize("options", [Preprocessing(), Preprocessing(min_seconds=0), Preprocessing(mix=Mix.MEAN),
                                     Preprocessing(sample_rate_mode=SampleRateMode.NATIVE)])
def test_load_prepared_gives_load_s_clip(files, options):
    for path in [*files["clips"], files["stereo"]]:
        expected = load(path, options)
        prepared = load_prepared(path, options, max_samples=LONG_INPUT)
        assert prepared is not None
        got = prepared.waveform.array()
        assert got.dtype == np.float32 and np.array_equal(got, expected.waveform)
        assert prepared.waveform.samples == len(expected.waveform)
        assert (prepared.duration, prepared.native_rate, prepared.path) == (expected.duration, expected.native_rate,
                                                                             expected.path)
        row = np.full(prepared.waveform.samples, np.nan, np.float32)
        prepared.waveform.write_into(row)
        assert np.array_equal(row, expected.waveform)


def test_tiled_waveform_is_the_seed_s_tiling():
    base = np.arange(7, dtype=np.float32)
    wave = TiledWaveform.of(base, Preprocessing(min_seconds=20 / arch.SAMPLE_RATE))  # 20 samples: 3 copies
    assert wave.copies == 3 and np.array_equal(wave.array(), np.tile(base, 3))
    out = np.zeros(21, np.float32)
    wave.write_into(out)
    assert np.array_equal(out, np.tile(base, 3))


@pytest.mark.parametrize("mode", list(SampleRateMode))
def test_prepare_leaves_the_caller_s_samples_alone(mode):
    # scaling is done in place only on arrays of our own (soxr's output), never on the caller's
    x = _tone(1.0, 16_000, 4)[:, 0] * 2  # beyond [-1, 1]: clipping would show
    before = x.copy()
    prepare(x, 16_000, Preprocessing(sample_rate_mode=mode, min_seconds=0))
    assert np.array_equal(x, before)


def test_a_long_file_is_left_to_streaming_without_being_decoded(files):
    # the NaN would stop a decode: None proves only the header was read
    assert _reason(load, files["nan"]).startswith("non-finite")
    assert load_prepared(files["nan"], max_samples=1000) is None


def test_one_open_gives_the_same_errors_as_info_then_load(files):
    for path in files["bad"]:
        expected = _reason(load, path)
        try:
            info(path)
        except AudioError as exc:
            expected = exc.reason  # the header check the worker ran first
        assert _reason(load_prepared, path) == expected
        with pytest.raises(AudioError) as caught:
            load_prepared(path, max_samples=LONG_INPUT)
        assert caught.value.reason == expected


# --- the worker: features bit-identical to the plain path ------------------------------------------

def _reference_means(onnx_path, waves: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """session.run on np.stack of load()'s waveforms, then the accumulator's float64 mean."""
    session = create_session(onnx_path, ONE_THREAD)
    outputs = session.run(list(arch.OUTPUTS), {"waveform": np.stack(waves)})
    means = []
    for row in range(len(waves)):
        clip = {}
        for name, out in zip(arch.OUTPUTS, outputs):
            frames = out[row].T
            total = np.zeros(frames.shape[1]) + frames.sum(axis=0, dtype=np.float64)
            clip[name] = (total / len(frames)).astype(np.float32)
        means.append(clip)
    return means


def test_worker_features_are_bit_identical_to_load_stack_run(onnx_path, files):
    clips = files["clips"][:4]
    worker = Worker.build(str(onnx_path), ONE_THREAD, Request(), Preprocessing(), batch_size=4)
    outcomes = worker.process([(i, str(p)) for i, p in enumerate(clips)])
    expected = _reference_means(onnx_path, [load(p).waveform for p in clips])
    assert [i for i, _ in outcomes] == [0, 1, 2, 3]
    for (_, result), reference in zip(outcomes, expected):
        assert isinstance(result, ClipResult)
        for name in arch.OUTPUTS:
            assert np.array_equal(result.features[(name, "mean")], reference[name]), name


def test_a_bad_file_in_a_task_is_recorded_and_its_mates_are_unchanged(onnx_path, files):
    clips = [str(p) for p in files["clips"][:3]]
    worker = Worker.build(str(onnx_path), ONE_THREAD, Request(), Preprocessing(), batch_size=4)
    alone = worker.process(list(enumerate(clips)))
    for bad in files["bad"]:
        mixed = worker.process([(0, clips[0]), (1, str(bad)), (2, clips[1]), (3, clips[2])])
        error = mixed[1][1]
        assert isinstance(error, ClipError) and error.message == _reason(load, bad)
        for (_, got), (_, want) in zip([mixed[0], mixed[2], mixed[3]], alone):
            assert all(np.array_equal(got.features[k], want.features[k]) for k in want.features)


def test_the_reused_batch_buffer_never_leaks_rows_between_calls(onnx_path, files):
    waves = [load(p, Preprocessing(min_seconds=0)).waveform for p in files["clips"]]
    calls = [[w[:120_000] for w in waves[:4]], [w[:90_000] for w in waves[:3]], [w[:120_000] for w in waves[3:5]],
             [waves[0][:120_000]]]
    reused = Runner(create_session(onnx_path, ONE_THREAD), Request(), batch_size=4)
    for call in calls:
        fresh = Runner(create_session(onnx_path, ONE_THREAD), Request(), batch_size=4).features(call)
        got = reused.features([TiledWaveform(w) for w in call])
        for a, b in zip(got, fresh):
            assert all(np.array_equal(a.pooled[k], b.pooled[k], equal_nan=True) for k in b.pooled)


# --- the model's metadata without onnx ---------------------------------------------------------------

def test_metadata_read_by_onnxruntime_equals_onnx_s(onnx_path):
    onnx = pytest.importorskip("onnx")
    expected = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    assert read_metadata(onnx_path) == expected
    assert model_info(onnx_path).outputs == arch.OUTPUTS


@pytest.mark.parametrize("content", [b"this is not an onnx model\n", b"\x0a\xff\xff\xff", b""])
def test_a_file_that_is_not_a_soundnet8_model_is_a_model_error(tmp_path, content):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        model_info(path)


def test_a_tiled_clip_long_enough_to_stream_is_still_tiled(onnx_path, tmp_path):
    """--min-seconds beyond the streaming threshold: the streamed input is the seed's tiling, not the
    bare clip (10 s at 22,050 Hz with min 80 s -> 9 copies, 1,984,500 samples > LONG_INPUT)."""
    path = tmp_path / "ten_seconds.wav"
    sf.write(path, _tone(10.0, 22_050, 3)[:, 0], 22_050, subtype="FLOAT")
    options = Preprocessing(min_seconds=80)
    tiled = load(path, options).waveform
    assert len(tiled) == 9 * 220_500 > LONG_INPUT
    worker = Worker.build(str(onnx_path), ONE_THREAD, Request(), options, batch_size=4)
    [(_, result)] = worker.process([(0, str(path))])
    assert isinstance(result, ClipResult), result
    expected = Runner(create_session(onnx_path, ONE_THREAD), Request()).features([tiled])[0].pooled
    untiled = Runner(create_session(onnx_path, ONE_THREAD), Request()).features([load(path).waveform])[0].pooled
    for key, want in expected.items():
        got = result.features[key]
        # windows vs windows over the same input: equal to float32 rounding (tolerance 1e-5 relative)
        assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1e-12), key
    # and the tiling matters: the bare clip's conv7 differs (so the check above can fail)
    assert not np.allclose(result.features[("conv7", "mean")], untiled[("conv7", "mean")], rtol=1e-3, atol=1e-6)
