"""The Ray backend's overhead on one machine, and the driver's memory per million listed inputs.

    python -m soundnet8.benchmarks.ray_bench [--clips 300] [--name "2-core shared dev VM, busy"]

Throughput: the same ESC-50 clips extracted by the local engine (one worker process per core) and
by ``--backend ray`` on a local Ray cluster, cold (the run starts its cluster, as the command does)
and warm (the cluster already up: what a long job on a standing cluster sees); local runs before
and after the Ray runs bracket the machine's drift. Stores are checked equal (max |difference|).

Driver memory: 1e6 synthetic paths through the driver's own steps (listing into an InputSet, the
resume filter against a store holding half of them, the Arrow table and the Ray dataset), each
step's RSS growth measured in a fresh process.

Writes benchmarks/results/ray/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "ray"
DEFAULT_NAME = "2-core shared dev VM, busy"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def driver_memory(n: int) -> dict[str, float]:
    """RSS growth (MB) of each driver step over ``n`` synthetic inputs (run in a fresh process)."""
    from soundnet8.engine.distributed.ray_backend import connected, input_dataset, input_table, pending
    from soundnet8.engine.inputs import InputItem, InputSet

    steps: dict[str, float] = {"start": rss_mb()}
    paths = [f"/corpus/shard{i // 10_000:04d}/dir{i // 100:06d}/clip{i:08d}.flac" for i in range(n)]
    inputs = InputSet(tuple(InputItem(p) for p in paths))
    del paths
    steps["listed (InputSet)"] = rss_mb()
    done = {item.path for item in inputs.items[: n // 2]}  # what StoreWriter.done holds on resume
    steps["done set (half)"] = rss_mb()
    todo = pending(inputs, done)
    steps["filtered (todo)"] = rss_mb()
    import pyarrow  # noqa: F401  (its import, apart from the table)

    steps["import pyarrow"] = rss_mb()
    table = input_table(todo)
    steps["arrow table"] = rss_mb()
    del table
    from soundnet8.engine.distributed import RayOptions

    with connected(RayOptions()) as ray:
        steps["ray.init"] = rss_mb()
        dataset = input_dataset(ray, todo, slots=1600)  # blocks sized for a 1,600-CPU cluster
        steps["ray dataset"] = rss_mb()
        steps["blocks"] = dataset.num_blocks()
    return steps


CONSOLIDATION_CASES = (("per-call segments (no compaction)", 64, 0),
                       ("compacted by the actor (what extract_ray does)", 64, 1024))
"""(case, clips per actor call, the actor's compaction unit): how an actor's segments reach the merge."""


def consolidation(workdir: Path, rows: int = 4096) -> list[dict]:
    """The driver's final merge of actor segments: ``rows`` clips (every layer, mean pooling) written
    per call by the actors' CompactingWriter, then merged by the store's writer (as extract_ray does)."""
    from soundnet8.engine import arch
    from soundnet8.engine.distributed import CompactingWriter, SegmentSpec
    from soundnet8.engine.store import ClipResult, ColumnSchema, StoreSettings, StoreWriter

    settings = StoreSettings(layers=arch.OUTPUTS, pools=("mean",), frames=False, preprocessing={},
                             weights_sha256="w", onnx_sha256="o")
    rng = np.random.default_rng(0)
    out = []
    for case, size, unit in CONSOLIDATION_CASES:
        store = workdir / f"consolidate-{size}-{unit}.h5"
        spec = SegmentSpec.for_store(store, settings, {"backend": "ray"}, None, ColumnSchema({}))
        writer = CompactingWriter(spec, None, unit)
        for start in range(0, rows, size):
            writer.write([ClipResult(f"/clips/{i:08d}.flac", 5.0, 16000, {},
                                     {(layer, "mean"): np.maximum(rng.standard_normal(arch.output_channels(layer)), 0)
                                      for layer in arch.OUTPUTS}, None)
                          for i in range(start, min(rows, start + size))], [])
        parts = list((workdir / f"{store.name}.parts").iterdir())
        seg_bytes = sum(f.stat().st_size for f in parts)
        started = time.perf_counter()
        with StoreWriter(store, settings, run_attrs={"backend": "ray"}) as w:
            w.close()
        seconds = time.perf_counter() - started
        out.append({"case": case, "call_rows": size, "compact_rows": unit, "segments": len(parts), "rows": rows,
                    "seconds": seconds, "rows_per_s": rows / seconds, "segment_mb_per_s": seg_bytes / 1e6 / seconds})
    return out


def _memory_in_subprocess(n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "soundnet8.benchmarks.ray_bench", "--memory-only", str(n)],
                         capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worst(differences: list[tuple[float, float]]) -> dict[str, float]:
    return {"max_abs": max(d[0] for d in differences), "max_rel": max(d[1] for d in differences)}


def _compare(a: Path, b: Path) -> tuple[float, float]:
    """Max |a - b| over every feature, and its largest ratio to a dataset's max |a| (the parity metric)."""
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        pa = [p.decode() for p in fa["clips/path"][()]]
        pb = {p.decode(): i for i, p in enumerate(fb["clips/path"][()])}
        if sorted(pa) != sorted(pb) or len(pb) != fb["clips/path"].shape[0]:
            raise RuntimeError(f"{a} and {b} hold different paths")
        order = [pb[p] for p in pa]
        worst = rel = 0.0
        for layer in fa["features"]:
            for pool in fa["features"][layer]:
                x, y = fa["features"][layer][pool][()], fb["features"][layer][pool][()][order]
                d = float(np.nanmax(np.abs(x - y)))
                worst, rel = max(worst, d), max(rel, d / max(float(np.nanmax(np.abs(x))), 1e-30))
        return worst, rel


def throughput(clips: int, workdir: Path, rounds: int = 3) -> dict:
    from soundnet8.engine.distributed import RayOptions, extract_ray
    from soundnet8.engine.distributed.ray_backend import local_cpus
    from soundnet8.engine.inputs import read_manifest
    from soundnet8.engine.modelfile import ensure_model
    from soundnet8.engine.pipeline import ExtractOptions, extract
    from soundnet8.engine.progress import ProgressMode, ProgressOptions

    from .data import load_corpus, write_manifest

    corpus = load_corpus().subset(clips)
    inputs = read_manifest(write_manifest(corpus, workdir / "manifest.csv"))
    model = ensure_model(None)
    options = ExtractOptions(progress=ProgressOptions(ProgressMode.NONE))
    runs = {}

    def local(name: str) -> None:
        s = extract(inputs, workdir / f"{name}.h5", model, options)
        runs[name] = {"seconds": s.seconds, "clips_per_s": s.clips_per_second, "clips": s.processed}

    def on_ray(name: str) -> None:
        s = extract_ray(inputs, workdir / f"{name}.h5", model, options, RayOptions())
        runs[name] = {"seconds": s.seconds, "clips_per_s": s.clips_per_second, "clips": s.processed,
                      "actors": s.actors, "segments": s.segments, "consolidate_seconds": s.consolidate_seconds,
                      "startup_seconds": s.startup_seconds, "steady_clips_per_s": s.steady_clips_per_second}

    on_ray("ray_cold")  # also brings the clips into the page cache for the runs compared below
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=local_cpus(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_seconds = time.perf_counter() - started
    try:
        for k in range(rounds):  # interleaved, so the machine's drift hits both alike
            local(f"local_{k}")
            on_ray(f"ray_warm_{k}")
    finally:
        ray.shutdown()
    local_rate = float(np.median([runs[f"local_{k}"]["clips_per_s"] for k in range(rounds)]))
    warm_rate = float(np.median([runs[f"ray_warm_{k}"]["clips_per_s"] for k in range(rounds)]))
    steady_rate = float(np.median([runs[f"ray_warm_{k}"]["steady_clips_per_s"] for k in range(rounds)]))
    return {
        "clips": len(inputs), "source": corpus.source, "runs": runs, "rounds": rounds, "ray_init_seconds": init_seconds,
        "local_clips_per_s": local_rate, "ray_warm_clips_per_s": warm_rate,
        "ratio_cold": runs["ray_cold"]["clips_per_s"] / local_rate, "ratio_warm": warm_rate / local_rate,
        "ray_steady_clips_per_s": steady_rate, "ratio_steady": steady_rate / local_rate,
        "difference_ray_vs_local": _worst([_compare(workdir / "local_0.h5", workdir / f"{n}.h5")
                                           for n in ("ray_cold", *(f"ray_warm_{k}" for k in range(rounds)))]),
        "difference_local_vs_local": _worst([_compare(workdir / "local_0.h5", workdir / f"local_{k}.h5")
                                             for k in range(1, rounds)]),
    }


def markdown(result: dict) -> str:
    m, t, mem = result["machine"], result["throughput"], result["driver_memory"]
    lines = [
        f"# soundnet8 --backend ray vs local extraction: {m['name']}", "",
        f"{m['cpu_model']}, {m['cores']} usable cores, {m['memory_gib']:.1f} GiB; Ray {result['ray_version']}; "
        f"{result['date']}. {t['clips']} ESC-50 clips (5 s, tiled to 20 s), all layers, mean pooling "
        "(`python -m soundnet8.benchmarks.ray_bench`). One run each; the machine was shared with other jobs.", "",
        "| run | s | clips/s | vs local | start-up s | steady clips/s | actors | segments | consolidation s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in t["runs"].items():
        ray_run = "actors" in r
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['clips_per_s']:.2f} | "
                     f"{r['clips_per_s'] / t['local_clips_per_s']:.2f} | "
                     + (f"{r['startup_seconds']:.1f} | {r['steady_clips_per_s']:.2f} | {r['actors']} | "
                        f"{r['segments']} | {r['consolidate_seconds']:.2f} |" if ray_run else "| | | | |"))
    lines += [
        "", f"**Ray / local throughput: {t['ratio_warm']:.2f} warm (median of {t['rounds']} interleaved pairs: "
        f"{t['ray_warm_clips_per_s']:.2f} vs {t['local_clips_per_s']:.2f} clips/s), {t['ratio_cold']:.2f} cold; "
        f"{t['ratio_steady']:.2f} in steady state (first finished clip to last: "
        f"{t['ray_steady_clips_per_s']:.2f} clips/s).**", "",
        f"Features: ray vs local max |difference| {t['difference_ray_vs_local']['max_abs']:.1e} "
        f"(relative {t['difference_ray_vs_local']['max_rel']:.1e}); local vs local (same command again) "
        f"{t['difference_local_vs_local']['max_abs']:.1e} (relative {t['difference_local_vs_local']['max_rel']:.1e}). "
        "ray_cold includes starting the "
        f"local cluster and the actors; ray_warm runs join a cluster started beforehand (ray.init took "
        f"{t['ray_init_seconds']:.1f} s) but still start their actors. vs local: against the median local run.", "",
        f"## Driver memory, {mem['n']:,} listed inputs", "",
        "| step | RSS MB | growth MB | per 1e6 inputs MB |", "|---|---|---|---|",
    ]
    previous = mem["steps"]["start"]
    for step, value in mem["steps"].items():
        if step == "blocks":
            continue
        growth = value - previous
        lines.append(f"| {step} | {value:.0f} | {growth:+.0f} | {growth * 1e6 / mem['n']:+.0f} |")
        previous = value
    lines.append(f"\nThe dataset held {mem['steps']['blocks']:.0f} blocks of paths (in the object store).")
    lines += ["", "## Consolidation of actor segments (the driver's final merge)", "",
              "| case | clips a call | segments | rows | s | rows/s | segment MB/s |", "|---|---|---|---|---|---|---|"]
    for c in result["consolidation"]:
        lines.append(f"| {c['case']} | {c['call_rows']} | {c['segments']} | {c['rows']} | {c['seconds']:.2f} | "
                     f"{c['rows_per_s']:,.0f} | {c['segment_mb_per_s']:.1f} |")
    lines.append("\nSynthetic rows (every layer, mean pooling, gzip), written as one actor writes them (a segment "
                 "per call, compacted or not), then merged by the store's writer as extract_ray's driver does; "
                 "s: the merge. Compacted segments (1,024 rows, the tallest feature "
                 "chunk) line up with every chunk, so the merge copies their chunks raw; per-call segments are "
                 "decoded and re-encoded in many small appends.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved local / warm Ray pairs")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="synthetic inputs for the memory measure")
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--memory-only", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_only is not None:
        print(json.dumps(driver_memory(args.memory_only)))
        return 0
    import ray

    from .machine import collect

    with tempfile.TemporaryDirectory(prefix="ray_bench_") as tmp:
        result = {"machine": asdict(collect(args.name)), "ray_version": ray.__version__,
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "throughput": throughput(args.clips, Path(tmp), args.rounds),
                  "consolidation": consolidation(Path(tmp)),
                  "driver_memory": {"n": args.inputs, "steps": _memory_in_subprocess(args.inputs)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^a-z0-9]+", "-", args.name.lower()).strip("-")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
