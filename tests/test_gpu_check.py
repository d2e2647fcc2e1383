"""The GPU check's CPU-testable parts: arguments, wheel discovery, the venv, the budget, the float16
graph, parity (the CPU provider standing in for the GPU), the sweep, the report, and the script."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from soundnet8.benchmarks import fp16
from soundnet8.benchmarks.gpu_check import (
    BRIDGE_PTH, WHEELS_ENV_VAR, Budget, GpuCheckError, check_venv, child_environment, compatible,
    discover_wheels, install, int_list, main, measure_argv, parse_args, parse_wheel, resolve_wheels_dir,
    venv_python, venv_site_packages,
)
from soundnet8.benchmarks.gpu_measure import (
    Case, MeasureOptions, Precision, Sweep, Transfer, bucket_batch, parity, parity_clips, run_check, run_sweep,
)
from soundnet8.benchmarks.gpu_report import GpuCheckResults, read_results, to_markdown, write_report
from soundnet8.benchmarks.measure import Row, Skipped, Stat
from soundnet8.engine import arch
from soundnet8.engine.modelfile import VARIANTS, GraphVariant, ensure_model
from soundnet8.engine.session import Provider

ROOT = Path(__file__).resolve().parents[1]
ORT_GPU_311 = "onnxruntime_gpu-1.22.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model_path() -> Path:
    return Path(ensure_model().path)  # the engine's cached export


# --- arguments and wheels -------------------------------------------------------------------------

def test_wheel_names_are_parsed():
    w = parse_wheel(ORT_GPU_311)
    assert (w.name, w.version, w.python, w.abi) == ("onnxruntime_gpu", "1.22.0", ("cp311",), "cp311")
    w = parse_wheel("nvidia_cudnn_cu12-9.10.2.21-py3-none-manylinux_2_27_x86_64.whl")
    assert w.name == "nvidia_cudnn_cu12" and w.python == ("py3",)
    assert parse_wheel("Some.Name-1.0-1-py2.py3-none-any.whl").name == "some_name"
    assert parse_wheel("README.md") is None and parse_wheel("broken.whl") is None


def test_compatibility_by_python_tag():
    assert compatible(parse_wheel(ORT_GPU_311), (3, 11))
    assert not compatible(parse_wheel(ORT_GPU_311), (3, 12))
    assert compatible(parse_wheel("nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl"), (3, 12))


def test_discovery_picks_the_newest_compatible_wheels(tmp_path):
    folder = _touch(tmp_path / "w", ORT_GPU_311, "onnxruntime_gpu-1.20.1-cp311-cp311-manylinux_2_28_x86_64.whl",
                    "onnxruntime_gpu-1.23.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                    "nvidia_cudnn_cu12-9.10.2.21-py3-none-manylinux_2_27_x86_64.whl",
                    "nvidia_cudnn_cu12-9.1.0.70-py3-none-manylinux2014_x86_64.whl",
                    "nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl", "notes.txt")
    found = discover_wheels(folder, (3, 11))
    assert found.onnxruntime_gpu.version == "1.22.0"  # 1.23 is for another Python
    assert [(w.name, w.version) for w in found.others] == [("nvidia_cublas_cu12", "12.8.4.1"),
                                                           ("nvidia_cudnn_cu12", "9.10.2.21")]
    assert found.paths[0].name == ORT_GPU_311 and len(found.paths) == 3


def test_discovery_errors_say_what_is_missing(tmp_path):
    with pytest.raises(GpuCheckError, match="does not exist"):
        discover_wheels(tmp_path / "absent")
    folder = _touch(tmp_path / "w", "nvidia_cudnn_cu12-9.1.0.70-py3-none-manylinux2014_x86_64.whl")
    with pytest.raises(GpuCheckError, match="no onnxruntime_gpu.*cp311"):
        discover_wheels(folder, (3, 11))


def test_wheel_folder_from_argument_or_environment(tmp_path):
    assert resolve_wheels_dir("/a", {WHEELS_ENV_VAR: "/b"}) == Path("/a")
    assert resolve_wheels_dir(None, {WHEELS_ENV_VAR: "/b"}) == Path("/b")
    with pytest.raises(GpuCheckError, match=WHEELS_ENV_VAR):
        resolve_wheels_dir(None, {})


def test_arguments_and_what_the_measure_stage_receives(tmp_path):
    args = parse_args(["/w", "--budget", "300", "--batches", "1,8", "--lengths", "22050", "--min-time", "0.5",
                       "--out", str(tmp_path), "--device", "cpu"])
    assert (args.wheels, args.budget, args.batches, args.stage) == ("/w", 300.0, (1, 8), "all")
    child = parse_args(measure_argv(args, 1234.5))
    assert child.stage == "measure" and child.deadline == 1234.5 and child.device == "cpu"
    assert child.batches == (1, 8) and child.lengths == (22050,) and child.min_time == 0.5 and child.out == tmp_path
    options = MeasureOptions.from_args(child)
    assert options.batches == (1, 8) and options.device is Provider.CPU and options.e2e_clips == 2000
    with pytest.raises(GpuCheckError):
        parse_args(["--budget", "0"])
    with pytest.raises(argparse.ArgumentTypeError):
        int_list("1,x")
    with pytest.raises(argparse.ArgumentTypeError):
        int_list("0")


# --- the budget -----------------------------------------------------------------------------------

def test_budget_counts_down_and_reserves():
    clock = FakeClock()
    budget = Budget.starting_now(100.0, clock)
    assert budget.remaining() == 100.0
    clock.now += 30
    assert budget.remaining() == 70.0
    assert budget.allows(60.0) and not budget.allows(60.0, reserve=20.0)
    section = budget.until(50.0)
    assert section.remaining() == 20.0 and budget.remaining() == 70.0
    clock.now += 200
    assert budget.remaining() == 0.0 and not budget.allows(0.1)


# --- the venv -------------------------------------------------------------------------------------

def _wheel(folder: Path, name: str, module_text: str) -> Path:
    """A real (tiny) wheel: pip installs it offline."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": module_text,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


@pytest.mark.slow
def test_install_makes_a_venv_that_sees_the_project_and_its_own_wheels(tmp_path):
    wheel = _wheel(_touch(tmp_path / "w"), "gpucheck_probe", "WHERE = 'venv'\n")
    venv = tmp_path / "venv"
    python = install(venv, (wheel,), Budget.starting_now(300))
    assert python == venv_python(venv) and (venv_site_packages(venv) / BRIDGE_PTH).is_file()
    libs = venv_site_packages(venv) / "nvidia" / "cudnn" / "lib"
    libs.mkdir(parents=True)
    env = child_environment(venv, {"LD_LIBRARY_PATH": "/usr/local/lib"})
    assert env["LD_LIBRARY_PATH"].split(":") == [str(libs), "/usr/local/lib"]
    code = "import gpucheck_probe, numpy, soundnet8.engine.pipeline; print(gpucheck_probe.__file__)"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(venv)  # the wheel went into the venv, the rest is bridged
    # The venv's onnxruntime is the project's CPU build here: the check refuses it.
    with pytest.raises(GpuCheckError, match="not from its own onnxruntime-gpu"):
        check_venv(venv, Budget.starting_now(120))


# --- float16 --------------------------------------------------------------------------------------

def test_conv1_bound_decides_whether_conv1_stays_fp32(model_path):
    model = onnx.load(str(model_path))
    plan = fp16.plan(model)
    assert 0 < plan.conv1_bound < fp16.FP16_MAX and not plan.keep_conv1_fp32
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    big = onnx.numpy_helper.to_array(weight) * 1000  # a conv1 that can overflow float16
    weight.CopyFrom(onnx.numpy_helper.from_array(big, weight.name))
    assert fp16.plan(model).keep_conv1_fp32


@pytest.mark.parametrize("keep", [False, True])
def test_fp16_graph_keeps_the_interface_and_stays_close(model_path, tmp_path, keep):
    import onnxruntime as ort

    half = fp16.to_fp16(onnx.load(str(model_path)), keep)
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert (inits["trunk.0.conv.weight"] == onnx.TensorProto.FLOAT) == keep
    assert inits["trunk.3.conv.weight"] == onnx.TensorProto.FLOAT16
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(arch.OUTPUTS)
    short = session.run(None, {"waveform": np.zeros((1, 50_000), np.float32)})
    assert all(o.dtype == np.float32 for o in short) and short[-1].shape[2] == 0  # the heads' guard still works
    path = tmp_path / "half.onnx"
    onnx.save(half, str(path))
    clips = parity_clips()[:2]
    result = parity(model_path, Provider.CPU, clips, device_model=path)
    assert not result.ok and max(result.errors.values()) < 2e-2  # float16 is close, but not within 1e-4


# --- parity and the sweep, the CPU standing in for the GPU -----------------------------------------

def test_parity_with_the_cpu_standing_in(model_path):
    result = parity(model_path, Provider.CPU, parity_clips())
    assert result.ok and result.clips == 6 and set(result.errors) == set(arch.OUTPUTS)
    assert result.provider_used == "CPUExecutionProvider"
    assert result.to_dict()["max_relative_error"] <= 1e-4


def test_bucket_batches_are_real_clips_at_the_bucket_length():
    pool = [np.arange(10, dtype=np.float32), np.ones(4, np.float32)]
    batch = bucket_batch(pool, 3, 6)
    assert batch.shape == (3, 6) and batch.dtype == np.float32
    assert list(batch[1]) == [1] * 6 and list(batch[0]) == list(range(6)) and list(batch[2]) == list(range(6))


def test_sweep_measures_in_priority_order_and_skips_what_does_not_fit(model_path):
    options = MeasureOptions(device=Provider.CPU, batches=(1, 2), lengths=(30_000, 20_000), algos=("EXHAUSTIVE",),
                             min_time=0.01, min_runs=1)
    models = {p: model_path for p in Precision}
    sweep = Sweep(models, options, Budget.starting_now(600), {GraphVariant.MATMUL: model_path})
    winner = run_sweep(sweep)
    names = [r.name for r in sweep.rows]
    assert winner is not None and winner.params["samples"] == 30_000
    assert names[0] == Case(2, 30_000, "EXHAUSTIVE", False).name  # session options first, at the reference batch
    assert {r.params["transfer"] for r in sweep.rows} == {t.value for t in Transfer}
    assert {r.params["precision"] for r in sweep.rows} == {p.value for p in Precision}
    assert {r.params["graph"] for r in sweep.rows} == {"plain", "matmul"}
    assert {(r.params["batch"], r.params["samples"]) for r in sweep.rows} >= {(1, 30_000), (2, 20_000)}
    assert all(r.stat.median > 0 and r.unit == "clips/s" for r in sweep.rows) and not sweep.skipped
    late = Sweep(models, options, Budget.starting_now(0.0), {GraphVariant.MATMUL: model_path})
    assert run_sweep(late) is None and not late.rows
    assert {s.reason for s in late.skipped} == {"time budget"} and len(late.skipped) == len(sweep.rows)


# --- the report -----------------------------------------------------------------------------------

def _results() -> GpuCheckResults:
    case = Case(16, 441_000, "HEURISTIC", True)
    rows = (Row("gpu-model", case.name, case.params(), "clips/s", Stat.of([900.0, 1000.0, 1100.0]), {"runs": 3}),)
    return GpuCheckResults(
        machine={"name": "h200-cpu16-amd-epyc", "gpu": "NVIDIA H200, 143771 MiB", "cpu_model": "AMD EPYC", "cores": 16,
                 "versions": {"onnxruntime-gpu": "1.22.0"}, "ort_providers": ["CUDAExecutionProvider"]},
        device="cuda", parity={"ok": True, "tolerance": 1e-4, "clips": 6, "provider_used": "CUDAExecutionProvider",
                               "max_relative_error": 3e-6, "relative_errors": {"pool5": 3e-6}},
        fp16_plan={"conv1_bound": 86.0, "fp16_max": 65504.0, "keep_conv1_fp32": False},
        fp16_parity={"fp16": {"max_relative_error": 3.7e-3}, "fp16-conv1-fp32": {"error": "NotImplemented: Conv"}},
        graph_parity={"matmul": {"ok": True, "max_relative_error": 2e-6}},
        rows=rows, skipped=(Skipped("gpu-model", "b64-n441000", "time budget"),),
        e2e={"params": {"clips": 2000, "workers": 16}, "clips": 2000, "failed": 0, "seconds": 10.0,
             "wall_seconds": 14.0, "clips_per_s": 200.0}, seconds=400.0, budget_left=50.0)


def test_report_markdown_says_what_was_measured_and_what_not():
    text = to_markdown(_results())
    assert "# GPU check: h200-cpu16-amd-epyc" in text and "Dry run" not in text
    assert "OK: max relative error 3.00e-06" in text and "conv1 fits float16" in text
    assert "| 16 | 441,000 | HEURISTIC | on | iobinding | fp32 | plain | 1000 | 900 | 1100 | 3 |" in text
    assert "graph matmul: OK, max relative error vs the CPU 2.00e-06" in text
    assert "200.0 clips/s (2000 clips" in text and "b64-n441000: time budget" in text
    assert "NotImplemented: Conv" in text
    standin = to_markdown(GpuCheckResults(machine={"name": "x"}, device="cpu", parity={"ok": False}))
    assert "Dry run" in standin and "FAILED" in standin
    fell_back = to_markdown(GpuCheckResults(machine={"name": "x"}, device="cuda",
                                            parity={"ok": False, "error": "the session runs on CPUExecutionProvider"}))
    assert "FAILED before any comparison: the session runs on CPUExecutionProvider" in fell_back


def test_report_folder_round_trips(tmp_path):
    paths = write_report(_results(), tmp_path / "gpu-x")
    assert sorted(p.name for p in paths.values()) == ["results.json", "results.md"]
    data = read_results(tmp_path / "gpu-x")
    assert data["model"][0]["median"] == 1000.0 and data["model"][0]["params"]["cudnn_conv1d_pad_to_nc1d"] is True
    assert data["e2e"]["clips_per_s"] == 200.0 and data["skipped"][0]["reason"] == "time budget"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(ValueError):
        read_results(tmp_path / "other")


# --- the whole measure stage and the script -------------------------------------------------------

@pytest.mark.slow
def test_measure_stage_writes_the_results_folder(tmp_path, model_path):
    options = MeasureOptions(device=Provider.CPU, model=model_path, out=tmp_path / "res", batches=(1, 2),
                             lengths=(30_000,), algos=("EXHAUSTIVE",), min_time=0.01, min_runs=1, e2e_clips=8,
                             e2e_reserve=90.0, report_reserve=5.0)
    done = run_check(options, Budget.starting_now(240))
    assert done.parity_ok and done.folder == tmp_path / "res"
    data = read_results(done.folder)
    assert data["device"] == "cpu" and data["parity"]["ok"] and data["model"]
    assert all(data["graph_parity"][v.value]["ok"] for v in VARIANTS if v is not GraphVariant.PLAIN)
    assert {r["params"]["graph"] for r in data["model"]} == {v.value for v in VARIANTS}
    assert data["e2e"]["clips"] == 8 and data["e2e"]["failed"] == 0 and data["e2e"]["clips_per_s"] > 0
    assert "Dry run" in (done.folder / "results.md").read_text()


def test_script_reports_a_missing_wheel_folder(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SOUNDNET8_PYTHON": sys.executable, "HOME": str(tmp_path)}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "none")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1 and "wheel folder" in proc.stderr and "does not exist" in proc.stderr
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "--budget" in proc.stdout


def test_main_without_wheels_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(WHEELS_ENV_VAR, raising=False)
    assert main(["--venv", str(tmp_path / "v")]) == 1
    assert WHEELS_ENV_VAR in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_the_whole_check_hands_over_to_the_venv(tmp_path, model_path):
    """install -> measure in the venv's Python, with a stand-in onnxruntime_gpu wheel and the CPU as device."""
    wheels = _touch(tmp_path / "w")
    _wheel(wheels, "onnxruntime_gpu", "")
    out = tmp_path / "res"
    code = main([str(wheels), "--venv", str(tmp_path / "venv"), "--device", "cpu", "--budget", "240",
                 "--out", str(out), "--model", str(model_path), "--batches", "1", "--lengths", "30000",
                 "--min-time", "0.01", "--e2e-clips", "6"])
    assert code == 0
    data = read_results(out)
    assert data["parity"]["ok"] and data["e2e"]["clips"] == 6
    assert data["machine"]["versions"]["onnxruntime-gpu"] == "0.1"  # measured inside the venv
