"""The command line: model cache on first use, predict, demo, help, exit statuses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from soundnet8.engine.cli import main
from soundnet8.engine.modelfile import cached_model_path, ensure_model, model_info


def test_engine_builds_its_model_cache_once(tmp_path, monkeypatch, caplog):
    pytest.importorskip("torch")
    monkeypatch.setenv("SOUNDNET8_MODEL_CACHE", str(tmp_path))
    monkeypatch.delenv("SOUNDNET8_MODEL", raising=False)
    target = cached_model_path()
    assert not target.exists()
    with caplog.at_level("INFO"):
        info = ensure_model()
    assert info.path == target.resolve() and "exporting SoundNet8 to ONNX once" in caplog.text
    assert len(info.scene_names) == 401 and len(info.object_names) == 1000
    mtime = target.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO"):
        assert ensure_model().sha256 == info.sha256
    assert target.stat().st_mtime_ns == mtime and "exporting" not in caplog.text


def test_predict_prints_top_scenes_and_objects(onnx_path, demo_clips, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really")
    code = main(["predict", str(demo_clips[3]), str(bad), "-k", "2", "--model", str(onnx_path), "--provider", "cpu"])
    out = capsys.readouterr().out
    assert code == 3  # one file failed
    assert "2-117271-A-0.flac" in out and "scenes : pasture" in out  # an ESC-10 dog clip
    assert f"{bad}: error:" in out
    assert out.count("%") == 4  # k=2 scenes + k=2 objects for the good file


def test_demo_runs_on_the_bundled_clips(onnx_path, capsys):
    assert main(["demo", "--model", str(onnx_path), "--provider", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("[ESC-10 class:") == 6 and "error" not in out


def test_export_command_writes_a_model(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 0
    assert model_info(tmp_path / "m.onnx").outputs[-1] == "scenes"


def test_help_lists_every_command_and_bad_usage_is_status_2():
    out = subprocess.run([sys.executable, "-m", "soundnet8.engine.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("export", "demo", "extract", "predict", "stats", "analyze", "report", "bench"):
        assert command in out
    with pytest.raises(SystemExit) as exc:
        main(["extract", "--pool", "median", "-o", "x.h5", "a.wav"])
    assert exc.value.code == 2


def test_cuda_request_without_cuda_is_a_clear_error(onnx_path, demo_clips, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert main(["predict", str(demo_clips[0]), "--model", str(onnx_path), "--provider", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "provider 'cuda' is not available" in err and "CPUExecutionProvider" in err
