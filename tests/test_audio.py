"""SoundNet's input contract (soundnet8.engine.audio) on real ESC-50 audio and generated signals."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from soundnet8.engine.arch import SAMPLE_RATE
from soundnet8.engine.audio import (
    AudioInfo,
    Clip,
    Mix,
    Preprocessing,
    SampleRateMode,
    decode,
    info,
    iter_blocks,
    load,
    model_length,
    prepare,
    tile_count,
)
from soundnet8.engine.errors import AudioError, SoundNetError
from soundnet8.engine.inputs import bundled_clips

from .conftest import requires_shared

SHARED = Path(__file__).resolve().parents[2] / "shared"
ESC50_AUDIO = SHARED / "esc50" / "audio_16k"
ESC50_CLIP = ESC50_AUDIO / "1-100032-A-0.flac"  # dog, 5 s, 16 kHz mono
needs_esc50 = requires_shared(ESC50_CLIP)

NO_TILING = Preprocessing(min_seconds=0)
NATIVE_NO_TILING = Preprocessing(sample_rate_mode=SampleRateMode.NATIVE, min_seconds=0)
FORMATS = sf.available_formats()

# iter_blocks vs prepare(): soxr's streaming and one-shot paths are bit-identical here (measured
# max difference 0.0); the contract allows 1e-5 relative, which is what the tests check.
STREAM_RTOL = 1e-5


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int, **kwargs) -> Path:
    sf.write(path, samples, rate, **kwargs)
    return path


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


# ------------------------------------------------------------------------------------------
# Preprocessing options


def test_preprocessing_defaults_follow_the_seed():
    p = Preprocessing()
    assert p.sample_rate_mode is SampleRateMode.RESAMPLE
    assert p.mix is Mix.FIRST
    assert p.min_seconds == 20.0
    assert p.min_samples == 441_000  # 20 s of 22,050 Hz samples
    assert Preprocessing(min_seconds=0).min_samples == 0
    assert Preprocessing(min_seconds=1.5).min_samples == 33_075


@pytest.mark.parametrize("mode", list(SampleRateMode))
@pytest.mark.parametrize("mix", list(Mix))
def test_preprocessing_round_trips_through_json(mode, mix):
    p = Preprocessing(sample_rate_mode=mode, mix=mix, min_seconds=7.25)
    restored = Preprocessing.from_dict(json.loads(json.dumps(p.to_dict())))
    assert restored == p
    # as a store's attributes read back: numpy scalars
    as_numpy = {k: (np.float64(v) if isinstance(v, float) else np.str_(v)) for k, v in p.to_dict().items()}
    assert Preprocessing.from_dict(as_numpy) == p
    assert type(Preprocessing(min_seconds=np.float32(2.5)).min_seconds) is float


@pytest.mark.parametrize(
    "data",
    [
        {"sample_rate_mode": "upsample", "mix": "first", "min_seconds": 20.0},
        {"sample_rate_mode": "resample", "mix": "left", "min_seconds": 20.0},
        {"sample_rate_mode": "resample", "mix": "first"},
        {"sample_rate_mode": "resample", "mix": "first", "min_seconds": 20.0, "extra": 1},
        {"sample_rate_mode": "resample", "mix": "first", "min_seconds": -1.0},
    ],
)
def test_preprocessing_from_dict_rejects_bad_settings(data):
    with pytest.raises(SoundNetError, match="preprocessing"):
        Preprocessing.from_dict(data)


@pytest.mark.parametrize("seconds", [-0.1, float("nan"), float("inf"), True, "20"])
def test_preprocessing_rejects_bad_min_seconds(seconds):
    with pytest.raises(SoundNetError, match="min_seconds"):
        Preprocessing(min_seconds=seconds)


# ------------------------------------------------------------------------------------------
# Tiling: the seed's np.tile(x, int(L / len(x) + 1)) when len(x) < L, never truncating


@pytest.mark.parametrize(
    ("n", "expected_copies"),
    [
        (110_250, 5),  # 5 s at 22,050 Hz: 441000/110250 = 4.0 exactly, +1 -> 5 (one spare copy)
        (22_050, 21),  # 1 s
        (80_000, 6),  # the seed's 16 kHz ESC-50 clip fed natively: int(5.5125 + 1)
        (440_999, 2),  # one sample short of the minimum
        (441_000, 1),  # exactly at the minimum: untouched
        (441_001, 1),
        (1, 441_001),
    ],
)
def test_tiling_lengths_follow_the_seed(n, expected_copies):
    x = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    out = prepare(x, SAMPLE_RATE, Preprocessing())
    assert len(out) == n * expected_copies
    assert tile_count(n, 441_000) == expected_copies
    # every copy is the scaled input (tolerance 0: tiling copies samples)
    np.testing.assert_array_equal(out.reshape(expected_copies, n), np.tile(x * 256, (expected_copies, 1)))


def test_min_seconds_zero_disables_tiling():
    x = np.full(3, 0.25, np.float32)
    np.testing.assert_array_equal(prepare(x, SAMPLE_RATE, NO_TILING), np.full(3, 64.0, np.float32))


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 3000), target=st.integers(0, 20_000), seed=st.integers(0, 2**32 - 1))
def test_tiling_property(n, target, seed):
    options = Preprocessing(sample_rate_mode=SampleRateMode.NATIVE, min_seconds=target / SAMPLE_RATE)
    assert options.min_samples == target
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    out = prepare(x, SAMPLE_RATE, options)
    assert len(out) >= max(target, n)  # long enough, never truncated
    assert len(out) % n == 0
    expected_copies = int(target / n + 1) if target > n else 1  # the seed's literal expression
    assert len(out) == n * expected_copies
    np.testing.assert_array_equal(out[:n], x * np.float32(256))  # starts with the whole input
    np.testing.assert_array_equal(out, out[np.arange(len(out)) % n])  # and repeats it


@settings(max_examples=60, deadline=None)
@given(
    frames=st.integers(1, 20_000),
    rate=st.sampled_from([8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000]),
    mode=st.sampled_from(list(SampleRateMode)),
    min_seconds=st.sampled_from([0.0, 0.5, 20.0]),
)
@example(frames=480, rate=48_000, mode=SampleRateMode.RESAMPLE, min_seconds=0.0)  # 220.5: soxr gives 220
def test_model_length_predicts_prepare(frames, rate, mode, min_seconds):
    options = Preprocessing(sample_rate_mode=mode, min_seconds=min_seconds)
    x = np.zeros(frames, np.float32)
    try:
        n = len(prepare(x, rate, options))
    except AudioError:  # too short to give one sample at 22,050 Hz
        n = 0
    assert model_length(frames, rate, options) == n


# ------------------------------------------------------------------------------------------
# scaling and clipping


def test_scaling_is_exactly_256():
    x = np.array([-1.0, -0.5, 0.0, 0.25, 1.0], np.float32)
    np.testing.assert_array_equal(prepare(x, SAMPLE_RATE, NO_TILING), [-256, -128, 0, 64, 256])


def test_full_scale_sine_peaks_at_256(tmp_path):
    # 22,050/4 Hz at 22,050 Hz samples the sine exactly at its peaks: sin(pi/2) == 1.0
    x = sine(SAMPLE_RATE / 4, SAMPLE_RATE, 1.0, amplitude=1.0)
    path = write(tmp_path / "full.wav", x, SAMPLE_RATE, subtype="FLOAT")
    wave = load(path, NO_TILING).waveform
    assert wave.max() == 256.0 and wave.min() == -256.0


def test_out_of_range_float_samples_are_clipped(tmp_path):
    x = sine(440, SAMPLE_RATE, 0.5, amplitude=1.5)
    path = write(tmp_path / "loud.wav", x, SAMPLE_RATE, subtype="FLOAT")
    wave = load(path, NO_TILING).waveform
    over = np.abs(x) >= 1.0
    assert over.sum() > 100
    np.testing.assert_array_equal(wave[over], 256.0 * np.sign(x[over]))
    np.testing.assert_array_equal(wave[~over], x[~over] * np.float32(256))  # the rest only scaled


def test_resampling_overshoot_is_clipped(tmp_path):
    # A full-scale square wave rings above 1 when resampled (Gibbs): the model never sees > 256.
    square = np.where(np.arange(16_000) % 40 < 20, 1.0, -1.0).astype(np.float32)
    assert np.abs(soxr.resample(square, 16_000, SAMPLE_RATE, "HQ")).max() > 1.01
    path = write(tmp_path / "square.wav", square, 16_000, subtype="FLOAT")
    wave = load(path, NO_TILING).waveform
    assert wave.max() == 256.0 and wave.min() == -256.0


# ------------------------------------------------------------------------------------------
# sample rate


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_resampling_keeps_a_1khz_sine_at_1khz(tmp_path, rate):
    n = int(1.3 * rate)
    path = write(tmp_path / f"sine{rate}.wav", sine(1000, rate, n / rate), rate)
    clip = load(path, NO_TILING)
    assert abs(len(clip.waveform) - round(n * SAMPLE_RATE / rate)) <= 1
    assert clip.native_rate == rate
    assert clip.duration == pytest.approx(n / rate, abs=1e-12)
    # resolution of the spectrum: 22050 / len ~ 0.8 Hz
    assert peak_frequency(clip.waveform, SAMPLE_RATE) == pytest.approx(1000, abs=2)


def test_native_mode_feeds_the_samples_untouched(tmp_path):
    x = sine(1000, 16_000, 1.0)
    path = write(tmp_path / "native.wav", x, 16_000, subtype="PCM_16")
    decoded, rate = decode(path)
    assert rate == 16_000
    # PCM16 decodes to int / 32768 exactly (tolerance: one quantisation step of the writer)
    np.testing.assert_allclose(decoded[:, 0], x, atol=1 / 32768)
    wave = load(path, NATIVE_NO_TILING).waveform
    assert len(wave) == 16_000
    np.testing.assert_array_equal(wave, decoded[:, 0] * np.float32(256))  # tolerance 0
    # at 16 kHz, the same sine read as 22,050 Hz samples sits at 1000 * 22050 / 16000 Hz
    assert peak_frequency(wave, SAMPLE_RATE) == pytest.approx(1378.1, abs=2)


def test_native_rate_at_22050_is_not_resampled(tmp_path):
    x = sine(300, SAMPLE_RATE, 0.5)
    path = write(tmp_path / "model_rate.wav", x, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load(path, NO_TILING).waveform, x * np.float32(256))


# ------------------------------------------------------------------------------------------
# channels


def test_first_channel_and_mean_mix(tmp_path):
    left = sine(500, 16_000, 0.5, amplitude=0.6)
    right = sine(1500, 16_000, 0.5, amplitude=0.2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    assert info(path).channels == 2
    first = load(path, Preprocessing(sample_rate_mode=SampleRateMode.NATIVE, mix=Mix.FIRST, min_seconds=0))
    mean = load(path, Preprocessing(sample_rate_mode=SampleRateMode.NATIVE, mix=Mix.MEAN, min_seconds=0))
    np.testing.assert_array_equal(first.waveform, left * np.float32(256))  # tolerance 0
    expected_mean = ((left.astype(np.float64) + right) / 2).astype(np.float32) * np.float32(256)
    np.testing.assert_array_equal(mean.waveform, expected_mean)  # tolerance 0
    # and through the resampler the mix is what gets resampled (tolerance 1e-4 of full scale)
    resampled = load(path, Preprocessing(mix=Mix.MEAN, min_seconds=0)).waveform
    np.testing.assert_allclose(
        resampled, soxr.resample(expected_mean / 256, 16_000, SAMPLE_RATE, "HQ") * 256, atol=256e-4
    )


# ------------------------------------------------------------------------------------------
# real audio


@needs_esc50
def test_esc50_clip_loads_as_the_model_expects():
    clip = load(ESC50_CLIP)
    assert isinstance(clip, Clip)
    assert clip.path == str(ESC50_CLIP)
    assert clip.native_rate == 16_000
    assert clip.duration == 5.0
    assert clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
    assert len(clip.waveform) == 551_250  # 110,250 samples at 22,050 Hz, tiled 5 times
    assert 0 < np.abs(clip.waveform).max() <= 256
    assert info(ESC50_CLIP) == AudioInfo(frames=80_000, rate=16_000, channels=1, duration=5.0)
    frames, rate, channels, duration = info(ESC50_CLIP)
    assert model_length(frames, rate) == len(clip.waveform)


def test_bundled_clips_load():
    clips = bundled_clips()
    assert len(clips) == 6
    for path in clips:
        clip = load(path)
        assert (clip.native_rate, clip.duration, len(clip.waveform)) == (16_000, 5.0, 551_250)
        assert np.abs(clip.waveform).max() > 1  # not silent


# ------------------------------------------------------------------------------------------
# iter_blocks: streaming equals one-shot


def assert_stream_equals_prepare(path: Path, options: Preprocessing, block: int) -> None:
    samples, rate = decode(path)
    expected = prepare(samples, rate, options)
    blocks = list(iter_blocks(path, options, block))
    assert all(len(b) == block for b in blocks[:-1]) and 0 < len(blocks[-1]) <= block
    assert all(b.dtype == np.float32 for b in blocks)
    streamed = np.concatenate(blocks)
    assert len(streamed) == len(expected)
    assert np.abs(streamed - expected).max() <= STREAM_RTOL * np.abs(expected).max()


@needs_esc50
@pytest.mark.parametrize("block", [7, 999, 4096, 22_050 * 3, 10**6])
def test_iter_blocks_equals_prepare_on_esc50(block):
    assert_stream_equals_prepare(ESC50_CLIP, NO_TILING, block)


@pytest.mark.parametrize(
    "options", [NO_TILING, NATIVE_NO_TILING, Preprocessing(mix=Mix.MEAN, min_seconds=0)]
)
def test_iter_blocks_equals_prepare_on_long_stereo(tmp_path, options):
    rng = np.random.default_rng(7)
    x = np.stack([sine(440, 44_100, 25.0), rng.uniform(-0.3, 0.3, 25 * 44_100).astype(np.float32)], axis=1)
    path = write(tmp_path / "long.flac", x, 44_100)
    assert_stream_equals_prepare(path, options, 100_000)


def streaming_peak_bytes(path: Path, block: int) -> tuple[int, int]:
    """(samples streamed, peak bytes numpy allocated meanwhile)."""
    tracemalloc.start()
    try:
        total = sum(len(b) for b in iter_blocks(path, NO_TILING, block))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, peak


def test_iter_blocks_does_not_hold_the_file(tmp_path):
    rate = 44_100
    peaks = {}
    for seconds in (15, 60):
        x = (0.1 * np.random.default_rng(3).standard_normal((rate * seconds, 2))).astype(np.float32)
        path = write(tmp_path / f"long_{seconds}.wav", x, rate, subtype="PCM_16")
        total, peaks[seconds] = streaming_peak_bytes(path, 22_050)
        assert total == seconds * SAMPLE_RATE
    decoded_bytes = rate * 60 * 2 * 4  # the 60 s file decoded as float32: 21 MB
    # memory does not grow with the file (measured: ~1.4 MB for both) and is far below the file
    assert peaks[60] < 1.5 * peaks[15], peaks
    assert peaks[60] < decoded_bytes / 10, peaks


def test_iter_blocks_rejects_bad_block_size():
    with pytest.raises(SoundNetError, match="block_samples"):
        next(iter_blocks(ESC50_CLIP, NO_TILING, 0))


def test_iter_blocks_reports_a_bad_sample_mid_file(tmp_path):
    x = np.zeros((50_000, 1), np.float32)
    x[40_000] = np.nan
    path = write(tmp_path / "late_nan.wav", x, SAMPLE_RATE, subtype="FLOAT")
    blocks = iter_blocks(path, NO_TILING, 10_000)
    assert len(next(blocks)) == 10_000  # what comes before the bad sample streams
    with pytest.raises(AudioError, match=r"1 NaN/Inf samples, the first at frame 40000") as err:
        list(blocks)
    assert err.value.path == str(path)


# ------------------------------------------------------------------------------------------
# compressed formats


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"), [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")]
)
def test_lossy_formats_decode(tmp_path, fmt, subtype, ext):
    if fmt not in FORMATS:
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot read {fmt}")
    path = write(tmp_path / f"sine.{ext}", sine(1000, 44_100, 2.0), 44_100, format=fmt, subtype=subtype)
    clip = load(path, NO_TILING)
    assert clip.native_rate == 44_100
    assert clip.duration == pytest.approx(2.0, abs=0.06)  # codec padding: at most a few frames
    assert peak_frequency(clip.waveform, SAMPLE_RATE) == pytest.approx(1000, abs=2)


# ------------------------------------------------------------------------------------------
# bad inputs: each an AudioError naming the file and the problem


def wav_header_bytes(channels: int, data: bytes, rate: int = 16_000) -> bytes:
    block_align = 2 * max(channels, 1)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block_align, block_align, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut_" + path.name)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def stream(path: Path) -> list[np.ndarray]:
    return list(iter_blocks(path, NO_TILING, 4096))


def assert_audio_error(path: Path, pattern: str, readers=(decode, load, stream)) -> None:
    for reader in readers:
        with pytest.raises(AudioError, match=pattern) as err:
            reader(path)
        assert err.value.path == str(path)
        assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    assert_audio_error(tmp_path / "nowhere.wav", "file not found")


def test_directory(tmp_path):
    assert_audio_error(tmp_path, "is a directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert_audio_error(path, r"empty file \(0 bytes\)")


def test_zero_frame_wav(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), 16_000)
    assert_audio_error(path, r"empty audio \(0 samples\)")


def test_zero_channel_wav(tmp_path):
    path = tmp_path / "no_channels.wav"
    path.write_bytes(wav_header_bytes(0, b"\0" * 20))
    assert_audio_error(path, "unsupported or corrupt audio: .*[Cc]hannel")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    assert_audio_error(path, "unsupported or corrupt audio: ")


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not audio\n" * 20)
    assert_audio_error(path, "unsupported or corrupt audio: Format not recognised")


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [("WAV", "PCM_16", "wav"), ("WAV", "FLOAT", "wav"), ("AIFF", "PCM_16", "aiff"), ("W64", "PCM_24", "w64")],
)
@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_uncompressed(tmp_path, fmt, subtype, ext, fraction):
    full = write(tmp_path / f"full.{ext}", sine(440, 16_000, 1.0), 16_000, format=fmt, subtype=subtype)
    assert len(decode(full)[0]) == 16_000  # the intact file is fine
    assert_audio_error(truncate(full, fraction), r"truncated file: the header declares \d+ bytes")


def test_truncated_flac(tmp_path):
    full = write(tmp_path / "full.flac", sine(440, 16_000, 1.0), 16_000)
    assert_audio_error(truncate(full, 0.6), "truncated or corrupt audio")


@needs_esc50
def test_truncated_real_flac(tmp_path):
    copy = tmp_path / ESC50_CLIP.name
    copy.write_bytes(ESC50_CLIP.read_bytes())
    assert_audio_error(truncate(copy, 0.9), "truncated or corrupt audio")


def test_truncated_mp3(tmp_path):
    if "MP3" not in FORMATS:
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot read MP3")
    x = sine(440, 44_100, 2.0)
    full = write(tmp_path / "full.mp3", x, 44_100, format="MP3", subtype="MPEG_LAYER_III")
    assert_audio_error(truncate(full, 0.5), r"truncated audio: decoded \d+ frames, the header says \d+")


def test_nan_and_inf_samples(tmp_path):
    x = np.zeros((1000, 2), np.float32)
    x[10, 1] = np.nan
    x[500, 0] = np.inf
    x[600, :] = -np.inf
    path = write(tmp_path / "bad_values.wav", x, 16_000, subtype="FLOAT")
    assert_audio_error(path, r"4 NaN/Inf samples, the first at frame 10 ")


def test_nan_in_an_array_given_to_prepare():
    with pytest.raises(AudioError, match="1 NaN/Inf samples, the first at sample 2"):
        prepare(np.array([0.0, 0.1, np.nan], np.float32), SAMPLE_RATE)


def test_too_short_to_resample(tmp_path):
    path = write(tmp_path / "one_sample.wav", np.full(1, 0.5, np.float32), 48_000)
    assert decode(path)[0].shape == (1, 1)  # decoding is fine; resampling has nothing to give
    assert_audio_error(path, "too short to resample: 1 samples at 48000 Hz", readers=(load, stream))
    # a single sample is fine where it needs no resampling (then tiled to the minimum)
    assert len(load(path, Preprocessing(sample_rate_mode=SampleRateMode.NATIVE)).waveform) == 441_001


def test_unreadable_file(tmp_path):
    # A path through a regular file fails for every user, root (CI) included: never a skip.
    parent = write(tmp_path / "clip.wav", sine(440, 16_000, 0.1), 16_000)
    assert_audio_error(parent / "inner.wav", "cannot read file: Not a directory")
    # Mode 000 is unreadable except for a user who bypasses permissions (root), who reads it.
    path = write(tmp_path / "locked.wav", sine(440, 16_000, 0.1), 16_000)
    path.chmod(0)
    try:
        try:
            with open(path, "rb"):
                bypasses_permissions = True
        except PermissionError:
            bypasses_permissions = False
        if bypasses_permissions:
            assert decode(path)[0].shape == (1_600, 1)
        else:
            assert_audio_error(path, "cannot read file: Permission denied")
    finally:
        path.chmod(0o644)


def test_info_checks_the_file_too(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        info(tmp_path / "absent.flac")
    path = write(tmp_path / "ok.wav", np.zeros((300, 3), np.float32), 8_000)
    assert info(path) == AudioInfo(300, 8_000, 3, 300 / 8_000)
