"""The benchmark harness: its pure parts, and a smoke run of ``soundnet8 bench --smoke``.

No test here asserts on speed: targets are met (or not) in the benchmark's own report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soundnet8.benchmarks import report
from soundnet8.benchmarks.data import Corpus, load_corpus, scaled_manifest
from soundnet8.benchmarks.machine import MachineInfo, machine_name, short_cpu_name, short_gpu_name
from soundnet8.benchmarks.measure import PeakRSS, Row, Stat, tree_rss
from soundnet8.benchmarks.settings import InputKind, Mode, Section, settings_for
from soundnet8.benchmarks.suite import BenchResults, Target, compute_targets
from soundnet8.engine.modelfile import VARIANTS
from soundnet8.engine.session import Provider

REPO = Path(__file__).resolve().parents[1]


# --- pure parts --------------------------------------------------------------------------------------

def test_stat_summarises_repeats():
    s = Stat.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max) == (2.5, 1.0, 10.0)
    assert s.scaled(2).median == 5.0
    with pytest.raises(ValueError):
        Stat.of([])


@pytest.mark.parametrize("model,expected", [
    ("Intel(R) Xeon(R) Processor", "intel-xeon"),
    ("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "intel-xeon-platinum-8480"),
    ("AMD EPYC 7B13 64-Core Processor", "amd-epyc-7b13"),
    ("", "unknown"),
])
def test_short_cpu_name(model, expected):
    assert short_cpu_name(model) == expected


def test_machine_name_includes_gpu_when_present():
    assert machine_name(2, "Intel(R) Xeon(R) Processor", "none") == "cpu2-intel-xeon"
    gpu = "NVIDIA H100 80GB HBM3, 81559 MiB, 550.54"
    assert short_gpu_name(gpu) == "h100-80gb-hbm3"
    assert machine_name(16, "AMD EPYC 9454", gpu) == "h100-80gb-hbm3-cpu16-amd-epyc-9454"


@pytest.mark.parametrize("mode", list(Mode))
def test_settings_never_oversubscribe(mode):
    s = settings_for(mode, (Provider.CPU,), tuple(Section), cores=2)
    assert s.repeats >= 1 and s.warmup >= 1
    assert any(w * t <= s.cores for w in s.workers for t in s.threads)
    json.dumps(s.to_dict())  # every setting is recorded in results.json


def test_corpus_subset_spreads_and_scaled_manifest_is_distinct(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    paths = []
    for i in range(10):
        (audio / f"c{i}.flac").write_bytes(b"x")
        paths.append(str(audio / f"c{i}.flac"))
    corpus = Corpus("test", tuple(paths), tuple({"fold": str(i % 5 + 1), "target": str(i)} for i in range(10)))
    sub = corpus.subset(5)
    assert sub.paths == tuple(paths[::2])
    manifest = scaled_manifest(corpus, 25, tmp_path / "work")
    lines = manifest.read_text().splitlines()
    assert lines[0].startswith("path,")
    listed = [line.split(",")[0] for line in lines[1:]]
    assert len(listed) == 25 and len(set(listed)) == 25
    assert all(os.path.exists(p) for p in listed)  # symlinked folders resolve to the same audio


def test_tree_rss_sees_this_process():
    total, largest = tree_rss(os.getpid())
    assert total >= largest > 0
    with PeakRSS(os.getpid(), interval=0.01) as peak:
        np.ones(4 << 20)  # 32 MiB
    assert peak.peak > 0


def _results(rows, checks=None) -> BenchResults:
    machine = MachineInfo("cpu2-test", "Test CPU", 2, 2, ("avx2",), 1.0, "none", ("CPUExecutionProvider",),
                          {"onnxruntime": "1"}, "3.11", "linux", {})
    settings = settings_for(Mode.SMOKE, (Provider.CPU,), tuple(Section), cores=2)
    return BenchResults(machine, settings, {"source": "test", "clips": 6}, "2025-01-01T00:00:00+00:00", 1.0,
                        tuple(rows), (), checks or {}, ())


def _row(section, name, median, unit="clips/s", extra=None, **params):
    return Row(section, name, params, unit, Stat.of([median * 0.9, median, median * 1.1]), extra or {})


def test_targets_are_ratios_of_rows_of_the_same_run():
    gflops = {"median": 60.0, "min": 50.0, "max": 70.0, "values": [50.0, 60.0, 70.0]}
    rows = [
        _row("limit", "matmul", 200.0, "GFLOP/s", what="numpy-matmul", threads=2),
        _row("model", "m", 40.0, extra={"gflops": gflops}, provider="cpu", kind=InputKind.TILED_25S.value,
             stage="raw", workers=2, threads=1, batch=4, variant="conv1d"),
        _row("baselines", "seed", 5.0, what="seed-style"),
        _row("e2e", "e2e", 36.0, config="engine-default", workers_resolved=2, threads=1, batch=4),
        _row("e2e", "s100", 30.0, config="scaling", n=100),
        _row("e2e", "s1000", 33.0, config="scaling", n=1000),
        _row("baselines", "torch b1", 12.0, what="torch-eager", kind=InputKind.TILED_25S.value),
        _row("baselines", "torch b4", 18.0, what="torch-eager", kind=InputKind.TILED_25S.value),
        _row("baselines", "torch untiled", 90.0, what="torch-eager", kind=InputKind.UNTILED_10S.value),
        _row("e2e", "command", 30.0, config="command", clips=200),
        _row("e2e", "seed job", 10.0, config="seed-job", clips=200),
        _row("e2e", "start-up", 1.5, "s", config="startup"),
    ]
    checks = {"seed_vs_engine": {"clips": 3, "max": 2e-6, "per_output": {}},
              "parity_vs_torch": {"conv1d": {"max": 3e-6, "per_output": {}}},
              "command_vs_seed_job": {"clips": 200, "reference_clips_per_s": [10.0], "e2e_clips_per_s": [30.0],
                                      "ratio": Stat.of([3.0]).to_dict()}}
    targets = {t.name: t for t in compute_targets(_results(rows, checks))}
    seed = targets["end to end vs seed-style pipeline (benchmark issue)"]
    assert seed.value == pytest.approx(36.0 / 5.0) and seed.met
    same = targets["end to end vs model-only, same ORT configuration"]
    assert same.value == pytest.approx(0.9) and same.met is False  # the goal is 0.95
    job = targets["soundnet8 extract vs seed-style script, start-up included"]
    assert job.value == pytest.approx(3.0) and job.met is False
    torch = targets["end to end vs PyTorch batched (model alone, best layout on these cores)"]
    assert torch.value == pytest.approx(36.0 / 18.0) and torch.met  # the best tiled-25s PyTorch row
    startup = targets["start-up: soundnet8 extract of one clip (command wall, export cached)"]
    assert startup.value == pytest.approx(1.5) and startup.met and not startup.higher
    limit = targets["model phase GFLOP/s vs numpy matmul GFLOP/s (engine model)"]
    assert limit.value == pytest.approx(0.3) and limit.met is False
    assert targets["throughput at the largest vs the smallest corpus (should not fall)"].value == pytest.approx(1.1)
    assert targets["GPU end to end, 25 s tiled inputs"].met is None


def test_markdown_and_json_render_every_row(tmp_path):
    rows = [_row("model", "ORT cpu x", 12.5, extra={"gflops": {"median": 20.0}}, provider="cpu", kind="tiled-25s"),
            _row("e2e", "extract", 10.0, extra={"peak_rss_tree_mib": 500.0, "maxrss_main_mib": 200.0,
                                                  "maxrss_worker_mib": 300.0}, config="engine-default")]
    results = _results(rows)
    results = BenchResults(**{**results.__dict__, "targets": (Target("t", None, 1.0, "x", None, "not measured"),)})
    paths = report.write(results, tmp_path)
    md = paths["markdown"].read_text()
    assert "ORT cpu x" in md and "extract" in md and "## Targets" in md and "cpu2-test" in md
    data = json.loads(paths["json"].read_text())
    assert [r["name"] for r in data["rows"]] == ["ORT cpu x", "extract"]
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_parses_providers_and_sections():
    from soundnet8.engine.cli import bench as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--provider", "cpu,cuda", "--quick", "--skip", "e2e", "--machine", "box"])
    assert args.provider == (Provider.CPU, Provider.CUDA) and args.mode is Mode.QUICK
    assert args.skip == (Section.E2E,)
    assert cli.output_dir(args, "box").name.startswith("box-") and cli.output_dir(args, "box").name.endswith("-quick")
    with pytest.raises(SystemExit):
        parser.parse_args(["--provider", "tpu"])


def test_cuda_without_onnxruntime_gpu_is_recorded_as_skipped(tmp_path):
    from soundnet8.benchmarks.ort_bench import cuda_available
    from soundnet8.benchmarks.suite import run_suite
    from soundnet8.engine.modelfile import ModelInfo

    ok, _ = cuda_available()
    if ok:
        pytest.skip("this machine has CUDA: the skip path is not taken")
    settings = settings_for(Mode.SMOKE, (Provider.CUDA,), (Section.MODEL,), cores=2)
    fake_model = ModelInfo(tmp_path / "unused.onnx", "0", "0", "0", (), (), ())
    results = run_suite(settings, _results([]).machine, fake_model, Corpus("test", (), ()))
    assert results.rows == () and results.skipped[0].name == "CUDA provider"
    assert "onnxruntime-gpu" in results.skipped[0].reason


# --- the GPU path (skips cleanly without CUDA) ---------------------------------------------------------

@pytest.mark.gpu
def test_cuda_model_only_measures(tmp_path):
    from soundnet8.benchmarks.ort_bench import ModelJob, SessionSpec, cuda_available, measure
    from soundnet8.engine.modelfile import ensure_model

    ok, reason = cuda_available()
    if not ok:
        pytest.skip(reason)
    corpus = load_corpus().subset(2)
    for iobinding in (False, True):
        job = ModelJob(str(ensure_model().path), SessionSpec(Provider.CUDA, 1, iobinding=iobinding),
                       InputKind.TILED_25S, corpus.paths, 1, 2, 2, 1, 1)
        result = measure(job)
        assert result.provider_used == "CUDAExecutionProvider" and result.clips_per_s.median > 0


# --- the smoke run (CI) ---------------------------------------------------------------------------------

def test_bench_smoke_writes_json_markdown_and_png(tmp_path):
    pytest.importorskip("torch", reason="the baselines and the Conv2d export need torch")
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "soundnet8.engine.cli", "bench", "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / report.JSON_NAME).read_text())
    assert data["schema_version"] == report.SCHEMA_VERSION
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu_model"]
    assert {"onnxruntime", "torch", "numpy"} <= set(data["machine"]["versions"])
    assert data["settings"]["mode"] == "smoke"
    sections = {r["section"] for r in data["rows"]}
    assert sections == {s.value for s in Section}
    for row in data["rows"]:
        assert row["min"] <= row["median"] <= row["max"] and row["values"]
    assert data["checks"]["seed_vs_engine"]["max"] < 1e-4  # correctness, not speed
    assert len(data["targets"]) >= 6
    # the whole commands ran as subprocesses, start-up included, on the same clips
    configs = {r["params"].get("config"): r for r in data["rows"] if r["section"] == "e2e"}
    assert {"command", "seed-job", "startup"} <= set(configs)
    assert configs["command"]["params"]["clips"] == configs["seed-job"]["params"]["clips"] >= 2
    assert configs["startup"]["unit"] == "s" and configs["startup"]["median"] > 0
    assert data["checks"]["graph_variant"]["variant"] in {v.value for v in VARIANTS}
    assert "graph variant extract runs here" in proc.stdout
    md = (out / report.MARKDOWN_NAME).read_text()
    assert md.startswith("# soundnet8 bench") and "## Targets" in md and "## End to end" in md
    import matplotlib.image

    image = matplotlib.image.imread(out / report.PLOT_NAME)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# --- the MatMul rewrites proposed to the engine keep its outputs -----------------------------------------

def test_round_order_rotates_every_arm_through_every_position():
    from soundnet8.benchmarks.ort_bench import round_order

    orders = [round_order(3, r) for r in range(3)]
    assert orders == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert {o[0] for o in orders} == {0, 1, 2}



def test_benchmark_sessions_are_the_engines_with_the_option_under_test(onnx_path):
    from soundnet8.benchmarks.ort_bench import ModelCall, SessionSpec, Stage

    engine = ModelCall(onnx_path, SessionSpec(Provider.CPU, 2), Stage.RAW).session.get_session_options()
    assert engine.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert engine.enable_cpu_mem_arena
    arm = ModelCall(onnx_path, SessionSpec(Provider.CPU, 2, cpu_arena=False), Stage.RAW).session.get_session_options()
    assert not arm.enable_cpu_mem_arena
    assert arm.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # the rest stays the engine's

@pytest.mark.parametrize("groups", [(1, 1), (2, 1), (4, 2)])
def test_matmul_rewrites_match_the_exported_model(onnx_path, groups):
    import onnx
    import onnxruntime as ort

    from soundnet8.export import variants as rewrites
    from soundnet8.engine import arch
    from soundnet8.engine.modelfile import INPUT_NAME

    model = onnx.load(str(onnx_path))
    rewritten = rewrites.heads_matmul(rewrites.pooled_convs_matmul(model, 2, groups))
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, rewritten)]
    rng = np.random.default_rng(0)
    # Lengths around the edges: the trunk's minimum, odd lengths, just below and at the heads' minimum.
    for n in (arch.MIN_SAMPLES_TRUNK, 100_001, arch.MIN_SAMPLES_HEADS - 1, arch.MIN_SAMPLES_HEADS, 220_500):
        x = rng.uniform(-256, 256, (2, n)).astype(np.float32)
        expected, actual = (s.run(list(arch.OUTPUTS), {INPUT_NAME: x}) for s in sessions)
        for name, e, a in zip(arch.OUTPUTS, expected, actual):
            assert a.shape == e.shape, (n, name)
            if e.size:
                assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max(), (n, name)


def test_bench_records_the_graph_variant_the_engine_runs(onnx_path, tmp_path, monkeypatch):
    from soundnet8.benchmarks.graphs import graph_check
    from soundnet8.engine.modelfile import CACHE_ENV_VAR, GRAPH_ENV_VAR, VARIANTS, model_info

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.delenv(GRAPH_ENV_VAR, raising=False)
    model = model_info(onnx_path)
    first = graph_check(model)
    assert first["source"] == "timed" and set(first["ms_per_call"]) == {v.value for v in VARIANTS}
    assert first["variant"] == min(first["ms_per_call"], key=first["ms_per_call"].get)
    again = graph_check(model)
    assert again == {**first, "source": "cached"}
