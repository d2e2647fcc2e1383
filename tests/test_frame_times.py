"""Frame timestamps in the store: each /frames/<layer> records its hop and first frame centre, and
the reader gives every frame's time, checked against receptive fields derived independently of
``arch``: by walking a frame back through the layer list written out below, and by probing the
ONNX model with impulses (which frames change when one input sample does).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from soundnet8.engine import arch
from soundnet8.engine.audio import Preprocessing, model_length
from soundnet8.engine.inputs import bundled_clips
from soundnet8.engine.runner import LONG_INPUT, WINDOW_CORE, Request, Runner
from soundnet8.engine.session import SessionConfig, create_session
from soundnet8.engine.store import FeatureStore, FrameBlock, FrameTiming, write_arrays

SR = 22_050
LEGACY_STORE = Path(__file__).with_name("data") / "legacy_v1" / "store_v1.h5"
LAYERS = ("pool5", "conv6")

# SoundNet8's trunk as in the Torch7 model: (output, kernel, stride, padding, max-pool), written out
# here rather than read from arch so that the fields below are an independent derivation.
TRUNK_TABLE = (
    ("pool1", 64, 2, 32, 8),
    ("pool2", 32, 2, 16, 8),
    ("conv3", 16, 2, 8, 1),
    ("conv4", 8, 2, 4, 1),
    ("pool5", 4, 2, 2, 4),
    ("conv6", 4, 2, 2, 1),
    ("conv7", 4, 2, 2, 1),
)


def backtracked_field(output: str, k: int) -> tuple[int, int]:
    """First and last input sample (padding included) that frame ``k`` of ``output`` depends on,
    found by walking the frame back through each pool and convolution."""
    names = [row[0] for row in TRUNK_TABLE]
    lo = hi = k
    for _, kernel, stride, padding, pool in reversed(TRUNK_TABLE[: names.index(output) + 1]):
        lo, hi = lo * pool, hi * pool + pool - 1
        lo, hi = lo * stride - padding, hi * stride - padding + kernel - 1
    return lo, hi


def backtracked_centre(output: str) -> float:
    return sum(backtracked_field(output, 0)) / 2


def backtracked_size(output: str) -> int:
    lo, hi = backtracked_field(output, 0)
    return hi - lo + 1


def _extract_command() -> list[str]:
    script = Path(sys.executable).with_name("soundnet8")  # the installed console script
    return [str(script)] if script.exists() else [sys.executable, "-m", "soundnet8.engine.cli"]


# --------------------------------------------------------------------------------------------
# fixtures: a store written by the real extract command, and the model's session


SHORT = 3 * SR + 321  # tiled 7 times to reach 20 s
SHORT_IMPULSE = 1_000
LONG = LONG_INPUT + SR + 777  # two windows
LONG_IMPULSE = WINDOW_CORE + 3_000  # where window 0's core meets window 1's: fields straddle both


def _write(path: Path, n: int, impulse: int | None) -> Path:
    x = np.zeros(n, np.float32)
    if impulse is not None:
        x[impulse] = 0.5
    sf.write(path, x, SR, subtype="PCM_16")  # at 22,050 Hz: no resampling spreads the impulse
    return path


@pytest.fixture(scope="module")
def store(onnx_path, tmp_path_factory) -> Path:
    """A bundled clip, then silence and an impulse in silence, short (tiled) and long (windowed)."""
    folder = tmp_path_factory.mktemp("frame_times")
    inputs = [
        bundled_clips()[0],
        _write(folder / "short_silence.wav", SHORT, None),
        _write(folder / "short_impulse.wav", SHORT, SHORT_IMPULSE),
        _write(folder / "long_silence.wav", LONG, None),
        _write(folder / "long_impulse.wav", LONG, LONG_IMPULSE),
    ]
    out = folder / "store.h5"
    cmd = _extract_command() + [
        "extract", *map(str, inputs), "-o", str(out), "--model", str(onnx_path),
        "--layers", ",".join(LAYERS), "--frames", "--workers", "1", "--batch-size", "1",
        "--no-progress", "--provider", "cpu",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def runner(onnx_path) -> Runner:
    return Runner(create_session(onnx_path, SessionConfig(intra_op_threads=1)), Request(layers=LAYERS))


def _row(fs: FeatureStore, name: str) -> int:
    return next(i for i, p in enumerate(fs.paths) if Path(p).name == name)


# --------------------------------------------------------------------------------------------
# the layer arithmetic


def test_arch_frame_centres_are_the_backtracked_field_centres():
    for output, *_ in TRUNK_TABLE:
        timing = FrameTiming.of_layer(output)
        assert arch.frame_centre(output) == backtracked_centre(output)
        assert timing.first_centre_samples == backtracked_centre(output)
        assert timing.hop_samples == backtracked_field(output, 1)[0] - backtracked_field(output, 0)[0]
        assert timing.first_centre_seconds == backtracked_centre(output) / SR
    assert arch.frame_centre("pool5") == 2286.5 and arch.frame_centre("conv6") == -1809.5


def test_impulses_find_the_same_frame_centres_in_the_model(runner):
    """The set of input samples that change frame k, found by binary search over impulse positions
    in silence, is centred on first_centre + k * hop, and spans the backtracked field."""
    n = 1 << 17
    base = runner.run(np.zeros((1, n), np.float32))

    def changed(out: dict[str, np.ndarray], row: int, layer: str) -> np.ndarray:
        return np.flatnonzero(np.any(out[layer][row] != base[layer][0], axis=0))

    # (layer, frame, edge): "first" = least s changing frame k, found as the least s whose latest
    # changed frame is >= k; "last" = greatest s, one before the least s whose earliest is > k
    searches = [(layer, k, edge) for layer, ks in (("pool5", (7, 8)), ("conv6", (3, 4))) for k in ks
                for edge in ("first", "last")]
    lo, hi = np.zeros(len(searches), np.int64), np.full(len(searches), n - 1)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        x = np.zeros((len(searches), n), np.float32)
        x[np.arange(len(searches)), mid] = 0.5 * arch.INPUT_SCALE
        out = runner.run(x)
        for j, (layer, k, edge) in enumerate(searches):
            frames = changed(out, j, layer)
            assert len(frames), "an impulse changes some frame"
            beyond = frames.max() >= k if edge == "first" else frames.min() > k
            lo[j], hi[j] = (lo[j], mid[j]) if beyond else (mid[j] + 1, hi[j])
    edges = {(layer, k, edge): int(s) if edge == "first" else int(s) - 1 for (layer, k, edge), s in zip(searches, lo)}
    for layer, ks in (("pool5", (7, 8)), ("conv6", (3, 4))):
        timing = FrameTiming.of_layer(layer)
        centres = [(edges[(layer, k, "first")] + edges[(layer, k, "last")]) / 2 for k in ks]
        assert centres[1] - centres[0] == timing.hop_samples
        assert centres[0] - ks[0] * timing.hop_samples == timing.first_centre_samples
        assert edges[(layer, ks[0], "last")] - edges[(layer, ks[0], "first")] + 1 == backtracked_size(layer)


# --------------------------------------------------------------------------------------------
# the store written by extract


def test_extract_records_each_frame_layers_timing(store):
    with h5py.File(store, "r") as f:
        for layer in LAYERS:
            attrs = dict(f[f"frames/{layer}"].attrs)
            assert attrs["hop_samples"] == arch.TOTAL_STRIDE[layer]
            assert attrs["hop_seconds"] == pytest.approx(arch.TOTAL_STRIDE[layer] / SR, rel=1e-12)
            assert attrs["first_centre_samples"] == backtracked_centre(layer)
            assert attrs["first_centre_seconds"] == pytest.approx(backtracked_centre(layer) / SR, rel=1e-12)
            assert attrs["sample_rate"] == SR
        assert f.attrs["format_version"] == 1  # new group attributes, same format
    with FeatureStore(store) as fs:
        assert fs.frame_layers == LAYERS
        assert fs.frame_timing("pool5") == FrameTiming(8192, 2286.5, SR)


def test_a_real_clips_times_are_evenly_spaced_from_the_first_centre(store):
    clip = bundled_clips()[0]
    info = sf.info(clip)
    n = model_length(info.frames, info.samplerate, Preprocessing())  # 5 s at 16 kHz, tiled to 25 s
    with FeatureStore(store) as fs:
        i = _row(fs, clip.name)
        for layer in LAYERS:
            block = fs.frames_with_times(layer)
            data, offsets, times = block
            assert isinstance(block, FrameBlock) and times.dtype == np.float64 and times.shape == (len(data),)
            frames, clip_times = block.clip(i)
            np.testing.assert_array_equal(frames, fs.frames_of(layer, i))
            np.testing.assert_array_equal(clip_times, fs.frame_times(layer, i))
            assert len(clip_times) == arch.output_lengths(n)[layer]
            assert clip_times[0] == pytest.approx(backtracked_centre(layer) / SR, abs=1e-12)
            np.testing.assert_allclose(np.diff(clip_times), arch.TOTAL_STRIDE[layer] / SR, rtol=1e-9)
            # frames of the tiled copies come after the clip's 5 s
            assert clip_times[-1] > fs.durations[i] and clip_times[-1] * SR < n


@pytest.mark.parametrize("name, n, impulses", [
    ("short", SHORT, [SHORT_IMPULSE + m * SHORT for m in range(7)]),  # tiled: the impulse repeats
    ("long", LONG, [LONG_IMPULSE]),  # windowed: the whole input's frame grid
])  # fmt: skip
def test_the_frames_an_impulse_changes_are_those_whose_times_reach_it(store, name, n, impulses):
    with FeatureStore(store) as fs:
        silence, impulse = _row(fs, f"{name}_silence.wav"), _row(fs, f"{name}_impulse.wav")
        assert fs.durations[impulse] == pytest.approx(n / SR)
        for layer in LAYERS:
            times = fs.frame_times(layer, impulse)
            np.testing.assert_array_equal(times, fs.frame_times(layer, silence))
            if name == "long":
                assert len(times) == arch.output_lengths(n)[layer]  # windows add up to the whole input
            changed = np.flatnonzero(np.any(fs.frames_of(layer, impulse) != fs.frames_of(layer, silence), axis=1))
            half = (backtracked_size(layer) - 1) / 2
            reach = [np.flatnonzero(np.abs(times * SR - s) <= half) for s in impulses]
            np.testing.assert_array_equal(changed, np.unique(np.concatenate(reach)))
            if name == "short":
                assert times[changed].max() > fs.durations[impulse]  # the copies' impulses, after the clip


# --------------------------------------------------------------------------------------------
# stores without the attributes, native-rate stores, derived groups


def test_a_store_written_before_the_attributes_still_gives_times():
    with h5py.File(LEGACY_STORE, "r") as f:
        assert "hop_samples" not in f["frames/pool5"].attrs
    with FeatureStore(LEGACY_STORE) as fs:
        assert fs.frame_layers == ("pool5",)
        assert fs.frame_timing("pool5") == FrameTiming(8192, backtracked_centre("pool5"), SR)
        data, offsets, times = fs.frames_with_times("pool5")
        assert len(times) == len(data) == offsets[-1]
        for i in range(fs.n_clips):
            t = times[offsets[i] : offsets[i + 1]]
            np.testing.assert_array_equal(t, fs.frame_times("pool5", i))
            assert t[0] == pytest.approx(2286.5 / SR)
            np.testing.assert_allclose(np.diff(t), 8192 / SR, rtol=1e-9)


def test_native_rate_stores_time_frames_at_each_files_rate(tmp_path):
    rates = np.array([44_100, 16_000, 0])  # 0: rate unknown, the model's is assumed
    counts = [3, 2, 4]
    frames = (np.zeros((sum(counts), 256), np.float32), np.concatenate([[0], np.cumsum(counts)]))
    path = write_arrays(
        tmp_path / "native.h5", paths=["a", "b", "c"], features={"pool5": {"mean": np.zeros((3, 256))}},
        sample_rates=rates, frames={"pool5": frames},
        attrs={"preprocessing": {"sample_rate_mode": "native", "mix": "first", "min_seconds": 20.0}},
    )  # fmt: skip
    with FeatureStore(path) as fs:
        _, _, times = fs.frames_with_times("pool5")
        for i, rate in enumerate([44_100, 16_000, SR]):
            expected = (2286.5 + 8192 * np.arange(counts[i])) / rate
            np.testing.assert_allclose(fs.frame_times("pool5", i), expected, rtol=1e-12)
            np.testing.assert_allclose(times[frames[1][i] : frames[1][i + 1]], expected, rtol=1e-12)


def test_derived_groups_are_read_through_the_store(tmp_path):
    path = write_arrays(tmp_path / "s.h5", paths=["a"], features={"pool5": {"mean": np.ones((1, 256))}})
    with h5py.File(path, "a") as f:
        f.create_group("stats/pool5/mean").attrs["q"] = 0.5
    with FeatureStore(path) as fs:
        assert fs.group("stats/pool5/mean").attrs["q"] == 0.5
        assert fs.group("analysis") is None and fs.frame_layers == ()
