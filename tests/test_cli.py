"""The command line: model cache on first use, predict, demo, help, exit statuses."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys

import pytest

from soundnet8.engine.cli import COMMANDS, HELPS, build_parser, main
from soundnet8.engine.cli.common import comma_list
from soundnet8.engine.errors import ExitCode
from soundnet8.engine.modelfile import cached_model_path, ensure_model, model_info
from soundnet8.engine.runner import Pool


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


def test_help_imports_no_command_module_nor_heavy_library():
    """``soundnet8 --help`` stays fast and torch-free: the one-line helps live in the dispatcher."""
    heavy = ("torch", "matplotlib", "umap", "sklearn", "h5py", "onnxruntime", "soundnet8.analysis",
             "soundnet8.benchmarks", "soundnet8.export")
    code = (
        "import contextlib, io, json, sys\n"
        "from soundnet8.engine.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(json.dumps({'help': out.getvalue(), 'modules': sorted(sys.modules)}))\n"
    )
    env = {**os.environ, "COLUMNS": "200"}  # argparse wraps help lines to the terminal's width
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    report = json.loads(proc.stdout)
    loaded = set(report["modules"])
    assert not [m for m in loaded for h in heavy if m == h or m.startswith(h + ".")]
    assert not loaded & set(COMMANDS.values())
    assert all(help_text in report["help"] for help_text in HELPS.values())


def test_every_command_module_follows_the_protocol():
    assert list(HELPS) == list(COMMANDS)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name
        assert not hasattr(module, "HELP"), f"{name}: the one-line help lives in cli.HELPS only"
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)  # every command's arguments build without running anything


def test_exit_statuses_are_stable():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130, 143]
    assert main([]) == ExitCode.USAGE


def test_bad_top_is_a_fatal_error_before_the_model_loads(tmp_path, capsys):
    missing = tmp_path / "no-such-model.onnx"  # never opened: the argument is refused first
    assert main(["predict", "x.wav", "-k", "0", "--model", str(missing)]) == ExitCode.FATAL
    assert "soundnet8 predict: error: --top must be at least 1" in capsys.readouterr().err


def test_comma_separated_choices_keep_order_drop_repeats_and_refuse_unknowns():
    args = build_parser("extract").parse_args(["extract", "a.wav", "-o", "x.h5", "--pool", "max, mean,max",
                                               "--layers", "pool5,pool1,pool5"])
    assert args.pool == (Pool.MAX, Pool.MEAN) and args.layers == ("pool5", "pool1")
    parse = comma_list(("a", "b"), "letter")
    assert parse("b,a,b") == ("b", "a")
    for bad in ("a,c", " , "):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown letter"):
            parse(bad)


def test_hear_task_command_writes_the_task_folder(tmp_path):
    import json

    from soundnet8.engine.inputs import bundled_manifest

    assert main(["hear-task", "--manifest", str(bundled_manifest()), "-o", str(tmp_path)]) == 0
    root = tmp_path / "esc50-v2.0.0-full"
    assert json.loads((root / "task_metadata.json").read_text())["splits"] == ["fold00", "fold01", "fold04"]
    assert len(list((root / "22050").glob("*/*.wav"))) == 6
    # a second run refuses to replace the folder without --overwrite: status 1, folder intact
    assert main(["hear-task", "--manifest", str(bundled_manifest()), "-o", str(tmp_path)]) == 1
    assert len(list((root / "22050").glob("*/*.wav"))) == 6
