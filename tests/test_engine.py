"""The extraction engine end to end: batch invariance, execution modes, long files, faults, resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from soundnet8.engine import arch
from soundnet8.engine.audio import Preprocessing
from soundnet8.engine.inputs import discover, read_manifest
from soundnet8.engine.modelfile import model_info
from soundnet8.engine.pipeline import ExtractOptions, Layout, extract
from soundnet8.engine.runner import LONG_INPUT, Pool, Request, Runner
from soundnet8.engine.session import GraphOptimization, Provider, SessionConfig, create_session
from soundnet8.engine.store import FeatureStore

from .conftest import relative_error

BATCH_TOLERANCE = 1e-5  # batched vs one clip at a time, relative
WINDOW_TOLERANCE = 1e-4  # windowed long input vs whole input, relative
MODE_TOLERANCE = 1e-5  # across worker counts and layouts

NO_TILING = Preprocessing(min_seconds=0)


@pytest.fixture(scope="module")
def model(onnx_path):
    return model_info(onnx_path)


def _runner(onnx_path, request=Request(), batch_size=4) -> Runner:
    return Runner(create_session(onnx_path, SessionConfig(Provider.CPU, 2)), request, batch_size=batch_size)


def _tone(seconds: float, rate: int, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.05, len(t))
    return (0.4 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, demo_clips) -> Path:
    """Real ESC-10 clips, cut to different lengths, plus generated tones, at 16 and 44.1 kHz."""
    folder = tmp_path_factory.mktemp("mixed")
    for i, path in enumerate(demo_clips[:4]):
        audio, rate = sf.read(path, dtype="float32")
        sf.write(folder / f"esc_{i}.flac", audio[: int(rate * (1.5 + i))], rate)
    for i, (seconds, rate) in enumerate([(3.0, 44_100), (12.0, 16_000), (1.0, 22_050)]):
        sf.write(folder / f"tone_{i}.wav", _tone(seconds, rate, 300 * (i + 1), i), rate, subtype="FLOAT")
    return folder


def _store_arrays(path: Path) -> dict[tuple[str, str], np.ndarray]:
    with FeatureStore(path) as fs:
        return {(layer, pool): fs.features(layer, pool) for layer in fs.layers for pool in fs.pools(layer)}


def _options(**kw) -> ExtractOptions:
    kw.setdefault("progress", False)
    kw.setdefault("provider", Provider.CPU)
    return ExtractOptions(**kw)


# --- batch invariance and execution modes ---------------------------------------------------------

def test_batched_equals_one_at_a_time_for_different_lengths(onnx_path, demo_clips):
    from soundnet8.engine.audio import load

    waves = [load(p, NO_TILING).waveform for p in demo_clips]
    # Different lengths, and pairs of equal length that do share a batch.
    waves = [waves[0][:110_000], waves[1][:110_000], waves[2][:250_000], waves[3], waves[4][:110_000]]
    runner = _runner(onnx_path, Request(pools=(Pool.MEAN, Pool.MAX, Pool.STD)), batch_size=3)
    batched = runner.features(waves)
    for w, b in zip(waves, batched):
        single = runner.features([w])[0]
        for key, value in single.pooled.items():
            if np.isnan(value).all():  # heads on a < 9.5 s input: unavailable in both
                assert np.isnan(b.pooled[key]).all()
                continue
            assert relative_error(b.pooled[key], value) < BATCH_TOLERANCE, key


def test_results_equal_across_workers_and_layouts(model, mixed_dir, tmp_path):
    inputs = discover([mixed_dir])
    request = Request(layers=("pool1", "pool5", "conv7", "scenes"), pools=(Pool.MEAN, Pool.STD))
    stores = {}
    for name, kw in {"one_worker": dict(workers=1), "two_fused": dict(workers=2, layout=Layout.FUSED, batch_size=2),
                     "two_split": dict(workers=2, layout=Layout.SPLIT, batch_size=3)}.items():
        extract(inputs, tmp_path / f"{name}.h5", model, _options(request=request, preprocessing=NO_TILING, **kw))
        stores[name] = _store_arrays(tmp_path / f"{name}.h5")
        with FeatureStore(tmp_path / f"{name}.h5") as fs:
            assert list(fs.paths) == list(inputs.paths)  # input order, whatever the completion order
    reference = stores.pop("one_worker")
    for name, arrays in stores.items():
        for key, value in reference.items():
            finite = ~np.isnan(value)
            assert np.array_equal(np.isnan(arrays[key]), ~finite), (name, key)
            assert relative_error(arrays[key][finite], value[finite]) < MODE_TOLERANCE, (name, key)


def test_single_worker_extract_restores_the_callers_sigint_handler(model, demo_clips, tmp_path):
    calls = []

    def callers_handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, callers_handler)
    try:
        summary = extract(discover(demo_clips[:2]), tmp_path / "s.h5", model,
                          _options(workers=1, layout=Layout.FUSED, preprocessing=NO_TILING))
        assert (summary.processed, summary.failed) == (2, 0)
        # extract runs in this process and takes Ctrl-C over while it works; afterwards it is the caller's.
        assert signal.getsignal(signal.SIGINT) is callers_handler
        signal.raise_signal(signal.SIGINT)
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)



def test_session_overrides_go_on_top_of_the_engines_settings(onnx_path):
    engine = create_session(onnx_path, SessionConfig(Provider.CPU, 2)).get_session_options()
    assert engine.intra_op_num_threads == 2 and engine.inter_op_num_threads == 1
    assert engine.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # the engine's choice
    assert engine.enable_cpu_mem_arena and engine.enable_mem_pattern
    config = SessionConfig(Provider.CPU, 2, GraphOptimization.BASIC, allow_spinning=True, cpu_arena=False,
                           mem_pattern=False)
    tuned = create_session(onnx_path, config).get_session_options()
    assert tuned.intra_op_num_threads == 2 and tuned.inter_op_num_threads == 1
    assert tuned.graph_optimization_level == GraphOptimization.BASIC.ort_level()
    assert tuned.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert not tuned.enable_cpu_mem_arena and not tuned.enable_mem_pattern

# --- long inputs ----------------------------------------------------------------------------------

def test_windowed_long_input_equals_whole_input(onnx_path):
    runner = _runner(onnx_path, Request(pools=(Pool.MEAN, Pool.MAX, Pool.STD), frames=True))
    n = LONG_INPUT + 3 * arch.WINDOW_ALIGN + 777  # two windows plus a ragged end
    x = _tone(n / arch.SAMPLE_RATE, arch.SAMPLE_RATE, 440, 3) * 256
    whole = runner.run(x[None])
    blocks = (x[i:i + 123_457] for i in range(0, n, 123_457))
    windowed = runner.features_windowed(blocks)
    for name in arch.OUTPUTS:
        frames = whole[name][0].T
        assert windowed.frames[name].shape == frames.shape, name
        assert relative_error(windowed.frames[name], frames) < WINDOW_TOLERANCE, name
        assert relative_error(windowed.pooled[(name, "mean")], frames.mean(axis=0)) < WINDOW_TOLERANCE, name
        assert relative_error(windowed.pooled[(name, "max")], frames.max(axis=0)) < WINDOW_TOLERANCE, name
        assert relative_error(windowed.pooled[(name, "std")], frames.std(axis=0)) < WINDOW_TOLERANCE, name


def test_long_file_goes_through_windows_in_the_pipeline(model, onnx_path, tmp_path, monkeypatch):
    """A file longer than one window reaches the model only in windows of at most LONG_INPUT samples
    (the bound on memory), never whole, and its features equal the whole input's."""
    rate = 16_000
    seconds = LONG_INPUT / arch.SAMPLE_RATE + 20
    audio = _tone(seconds, rate, 220, 4)
    sf.write(tmp_path / "long.flac", audio, rate)
    request = Request(layers=("pool5", "conv7"), pools=(Pool.MEAN,))
    model_inputs: list[tuple[int, ...]] = []
    real_run = Runner.run

    def recording_run(self, batch):  # the real model runs; only the shapes it is given are noted
        model_inputs.append(np.shape(batch))
        return real_run(self, batch)

    monkeypatch.setattr(Runner, "run", recording_run)
    # workers=1 with the FUSED layout runs in this process, so every model call is recorded
    extract(discover([tmp_path / "long.flac"]), tmp_path / "s.h5", model,
            _options(request=request, workers=1, layout=Layout.FUSED))
    monkeypatch.undo()
    from soundnet8.engine.audio import load

    n_samples = len(load(tmp_path / "long.flac").waveform)
    assert n_samples > LONG_INPUT
    assert len(model_inputs) >= 2 and all(shape[0] == 1 and shape[1] <= LONG_INPUT for shape in model_inputs)
    assert sum(shape[1] for shape in model_inputs) > n_samples  # overlapping windows cover the file
    whole = _runner(onnx_path, request).run(load(tmp_path / "long.flac").waveform[None])
    with FeatureStore(tmp_path / "s.h5") as fs:
        for name in request.layers:
            assert relative_error(fs.features(name, "mean")[0], whole[name][0].mean(axis=1)) < WINDOW_TOLERANCE


# --- faults, exit codes and resume ----------------------------------------------------------------

def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bad = {
        "empty": folder / "empty.wav",
        "random": folder / "random.wav",
        "text": folder / "notes.flac",
        "nan": folder / "nan.wav",
        "zero_frames": folder / "zero.wav",
    }
    bad["empty"].write_bytes(b"")
    bad["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    bad["text"].write_text("this is not audio\n")
    x = _tone(2.0, 16_000, 500, 5)
    x[100] = np.nan
    sf.write(bad["nan"], x, 16_000, subtype="FLOAT")
    sf.write(bad["zero_frames"], np.zeros(0, np.float32), 16_000)
    good = _tone(2.0, 16_000, 500, 6)
    sf.write(folder / "truncated_src.wav", good, 16_000)
    data = (folder / "truncated_src.wav").read_bytes()
    bad["truncated"] = folder / "truncated.wav"
    bad["truncated"].write_bytes(data[: len(data) // 2])
    (folder / "truncated_src.wav").unlink()
    return bad


def test_bad_files_are_recorded_and_the_job_goes_on(model, demo_clips, tmp_path):
    from soundnet8.engine.cli import main

    bad = _bad_files(tmp_path / "in")
    for clip in demo_clips[:2]:
        (tmp_path / "in" / clip.name).write_bytes(clip.read_bytes())
    store = tmp_path / "s.h5"
    code = main(["extract", str(tmp_path / "in"), "-o", str(store), "--model", str(model.path),
                 "--layers", "pool5", "--workers", "1", "--no-progress", "--provider", "cpu"])
    assert code == 3  # finished, some failed
    with FeatureStore(store) as fs:
        errors = dict(fs.errors)
        assert fs.n_clips == 2 and fs.features("pool5").shape == (2, 256)
    assert set(errors) == {str(p) for p in bad.values()}
    assert all(errors.values())
    assert "nan" in errors[str(bad["nan"])].lower()
    # Resume: nothing to do, bad files not retried, nothing lost.
    code = main(["extract", str(tmp_path / "in"), "-o", str(store), "--model", str(model.path),
                 "--layers", "pool5", "--workers", "1", "--no-progress", "--provider", "cpu"])
    assert code == 0
    with FeatureStore(store) as fs:
        assert fs.n_clips == 2 and len(fs.errors) == len(bad)


def test_fatal_error_exit_status(tmp_path):
    from soundnet8.engine.cli import main

    assert main(["extract", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "s.h5"), "--no-progress"]) == 1


def test_resume_after_sigkill_gives_the_uninterrupted_store(model, tmp_path, demo_clips):
    folder = tmp_path / "in"
    folder.mkdir()
    n = 48
    for i in range(n):  # real audio of different lengths, tiled to 20 s as by default
        audio, rate = sf.read(demo_clips[i % len(demo_clips)], dtype="float32")
        sf.write(folder / f"c{i:02d}.flac", audio[: rate * (1 + i % 4)], rate)
    cmd = [sys.executable, "-m", "soundnet8.engine.cli", "extract", str(folder), "--model", str(model.path),
           "--layers", "pool2,pool5", "--pool", "mean,max", "--workers", "1", "--batch-size", "2",
           "--segment-rows", "4", "--no-progress", "--provider", "cpu"]
    store = tmp_path / "killed.h5"
    parts = tmp_path / "killed.h5.parts"
    rng = np.random.default_rng(7)
    for attempt in range(2):
        proc = subprocess.Popen(cmd + ["-o", str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        # Wait until this run has made durable progress, then kill it at a random moment.
        while time.monotonic() < deadline and proc.poll() is None:
            if parts.exists() and len(list(parts.glob("seg-*.h5"))) >= 2 * (attempt + 1):
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.4))
        assert proc.poll() is None, "the run finished before it could be killed: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if store.exists():  # always a readable store (an earlier, complete state)
            with h5py.File(store, "r") as f:
                assert "clips" in f
    resumed = subprocess.run(cmd + ["-o", str(store)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr  # work from the killed runs was kept, not redone
    reference = tmp_path / "reference.h5"
    assert subprocess.run(cmd + ["-o", str(reference)], capture_output=True).returncode == 0
    with FeatureStore(store) as a, FeatureStore(reference) as b:
        assert sorted(a.paths) == sorted(b.paths) and len(set(a.paths)) == n == a.n_clips
        order_a, order_b = np.argsort(a.paths), np.argsort(b.paths)
        for layer in ("pool2", "pool5"):
            for pool in ("mean", "max"):
                assert np.array_equal(a.features(layer, pool)[order_a], b.features(layer, pool)[order_b])


# --- the store from the engine and the seed's slip -------------------------------------------------

def test_store_schema_and_reader_from_a_manifest(model, tmp_path):
    from soundnet8.engine.inputs import bundled_manifest

    store = tmp_path / "demo.h5"
    inputs = read_manifest(bundled_manifest())
    request = Request(layers=arch.OUTPUTS, pools=(Pool.MEAN, Pool.MAX, Pool.STD), frames=("pool5", "conv7"))
    extract(inputs, store, model, _options(request=request, workers=2))
    with h5py.File(store, "r") as f:
        assert f.attrs["format_version"] == 1
        for key in ("soundnet8_version", "weights_sha256", "onnx_sha256", "provider", "onnxruntime_version",
                    "preprocessing", "created", "updated"):
            assert key in f.attrs, key
        assert f.attrs["weights_sha256"] == model.weights_sha256 and f.attrs["onnx_sha256"] == model.sha256
        n = len(inputs)
        assert f["clips/path"].shape == (n,) and f["clips/duration"].dtype == np.float64
        assert f["clips/label"].dtype == np.int64 and f["classes/name"].shape == (len(inputs.class_names),)
        for layer in arch.OUTPUTS:
            for pool in ("mean", "max", "std"):
                ds = f[f"features/{layer}/{pool}"]
                assert ds.shape == (n, arch.output_channels(layer)) and ds.dtype == np.float32
                assert ds.chunks is not None and ds.compression == "gzip"
        assert sorted(f["frames"]) == ["conv7", "pool5"]  # only the layers asked for
        for layer in ("pool5", "conv7"):
            offsets = f[f"frames/{layer}/offsets"][()]
            assert offsets.shape == (n + 1,) and offsets[-1] == f[f"frames/{layer}/data"].shape[0]
    with FeatureStore(store) as fs:
        assert list(fs.labels) == list(inputs.labels()) and list(fs.folds) == list(inputs.folds())
        assert fs.class_names == inputs.class_names
        data, offsets = fs.frames("pool5")
        clip0 = data[offsets[0]:offsets[1]]
        # 5 s clips tiled to 25 s: the pool5 frame count of 551,250 samples.
        assert len(clip0) == arch.output_lengths(551_250)["pool5"]
        assert relative_error(fs.features("pool5", "mean")[0], clip0.mean(axis=0)) < 1e-6


# --- CUDA (skipped without onnxruntime-gpu and a device) --------------------------------------------

@pytest.mark.gpu
def test_cuda_features_equal_cpu_features(model, mixed_dir, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with the CUDA provider")
    inputs = discover([mixed_dir])
    request = Request(layers=("pool1", "pool5", "conv7", "scenes"), pools=(Pool.MEAN, Pool.MAX))
    for provider in (Provider.CPU, Provider.CUDA):
        extract(inputs, tmp_path / f"{provider.value}.h5", model,
                _options(request=request, preprocessing=NO_TILING, provider=provider, workers=2))
    cpu, cuda = _store_arrays(tmp_path / "cpu.h5"), _store_arrays(tmp_path / "cuda.h5")
    for key, value in cpu.items():
        finite = ~np.isnan(value)
        # cuDNN picks other convolution algorithms (and TF32 is off by default in ORT): 1e-4 relative.
        assert relative_error(cuda[key][finite], value[finite]) < 1e-4, key


def test_extract_runs_off_the_main_thread(tmp_path, demo_clips):
    """A service may call extract() from a worker thread, where signal handlers cannot be set."""
    import threading

    from soundnet8.engine.inputs import discover
    from soundnet8.engine.modelfile import ensure_model
    from soundnet8.engine.pipeline import ExtractOptions, extract
    from soundnet8.engine.request import Request
    from soundnet8.engine.session import Provider
    from soundnet8.engine.store import FeatureStore

    outcome = {}

    def job():
        try:
            options = ExtractOptions(request=Request(layers=("pool5",)), provider=Provider.CPU, workers=1, progress=False)
            outcome["summary"] = extract(discover(demo_clips[:2]), tmp_path / "t.h5", ensure_model(), options)
        except BaseException as exc:  # reported to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    with FeatureStore(tmp_path / "t.h5") as fs:
        assert len(fs.paths) == 2
