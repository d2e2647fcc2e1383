"""Throughput of ``soundnet8 merge`` (joining shard stores), run by hand, not in CI.

    .venv/bin/python -m soundnet8.benchmarks.merge_bench [--rows 2000] [--shards 4] [--repeats 3]
        [--machine "2-core shared dev VM, busy"] [--out benchmarks/results/merge] [--workdir DIR]

Builds ``--shards`` input stores of ``--rows`` clips each with ``write_arrays``: every SoundNet8
output (pool1 .. scenes, 3,433 float32 channels a clip, mean pooling) as the ESC-50 store has
them, ReLU-like values (about 40% zeros, like the real features; gzip ratio ~0.6) and ESC-50-like
paths and metadata. Then joins them with :func:`soundnet8.engine.store.join_stores` (what
``soundnet8 merge`` calls), the median of ``--repeats`` runs, in four cases:

- ``gzip``: shards of ``--rows`` rows: each shard's leading 1,024-row multiple is copied as raw
  chunks, its other rows decoded and re-encoded (about half of 2,000-row shards, 3 % of
  20,000-row ones);
- ``gzip, shards of 2,048 rows``: every chunk copied raw (also the speed of consolidating an
  extract's own segments, which the writer aligns);
- ``gzip, duplicate paths``: every shard but the first repeats a path of the first, so only the
  first is copied raw and the others are decoded and re-encoded whole (the slowest case);
- ``lzf``: the faster filter (``--compression lzf``).

Reports MB/s of input files (compressed bytes read), MB/s of feature data (uncompressed float32)
and rows/s, into ``OUT/<machine-slug>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..engine import arch
from ..engine.store import Compression, join_stores, write_arrays
from ..engine.version import package_version
from .machine import cpu_model, memory_gib, usable_cores

DEFAULT_MACHINE = "2-core shared dev VM, busy"
ALIGNED_ROWS = 2048  # a multiple of every feature chunk height (MAX_FEATURE_CHUNK_ROWS = 1024)
ZERO_FRACTION = 0.4


@dataclass(frozen=True)
class Case:
    name: str
    compression: Compression
    rows_per_shard: int
    duplicates: bool = False  # every shard after the first repeats one path of the first


@dataclass(frozen=True)
class Measurement:
    case: str
    shards: int
    rows: int
    input_mb: float  # compressed bytes of the input files
    feature_mb: float  # uncompressed float32 features
    seconds: float  # median
    all_seconds: list[float]
    raw_rows: int

    @property
    def input_mb_s(self) -> float:
        return self.input_mb / self.seconds

    @property
    def feature_mb_s(self) -> float:
        return self.feature_mb / self.seconds

    @property
    def rows_s(self) -> float:
        return self.rows / self.seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "input_mb_s": self.input_mb_s, "feature_mb_s": self.feature_mb_s, "rows_s": self.rows_s}


def write_shard(path: Path, k: int, n: int, rows: int, compression: Compression, duplicate: bool = False) -> Path:
    """One shard store of ``rows`` synthetic clips with the real model's output shapes."""
    rng = np.random.default_rng(k)
    features = {}
    for layer in arch.OUTPUTS:
        values = rng.gamma(1.5, 1.0, size=(rows, arch.output_channels(layer))).astype(np.float32)
        values[rng.random(values.shape) < ZERO_FRACTION] = 0.0  # ReLU outputs: many exact zeros
        features[layer] = {"mean": values}
    paths = [f"/corpus/esc50/audio_16k/{k}-{i:06d}-A-{i % 50}.flac" for i in range(rows)]
    if duplicate:
        paths[-1] = "/corpus/esc50/audio_16k/1-000000-A-0.flac"  # shard 1's first clip
    return write_arrays(
        path,
        paths=paths,
        features=features,
        labels=[i % 50 for i in range(rows)],
        folds=[1 + i % 5 for i in range(rows)],
        class_names=[f"class{c}" for c in range(50)],
        meta={"take": ["A"] * rows, "src_file": list(range(rows))},
        durations=np.full(rows, 5.0),
        sample_rates=np.full(rows, 16000),
        attrs={"shard": f"{k}/{n}"},
        errors=[(f"/corpus/esc50/broken/{k}-{i}.flac", "cannot decode") for i in range(rows // 100)],
        compression=compression,
    )


def measure(case: Case, shards: int, repeats: int, workdir: Path) -> Measurement:
    folder = workdir / re.sub(r"\W+", "-", case.name)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = [
        write_shard(
            folder / f"shard{k}.h5", k, shards, case.rows_per_shard, case.compression, case.duplicates and k > 1
        )
        for k in range(1, shards + 1)
    ]
    out = folder / "merged.h5"
    seconds, raw = [], 0
    for _ in range(repeats):
        out.unlink(missing_ok=True)
        started = time.perf_counter()
        summary = join_stores(out, inputs)
        seconds.append(time.perf_counter() - started)
        raw = summary.raw_rows
        expected = shards * case.rows_per_shard - (shards - 1 if case.duplicates else 0)
        if summary.total_rows != expected:
            raise RuntimeError(f"{case.name}: merged {summary.total_rows} rows, expected {expected}")
    channels = sum(arch.output_channels(layer) for layer in arch.OUTPUTS)
    rows = shards * case.rows_per_shard
    measurement = Measurement(
        case.name,
        shards,
        rows,
        sum(p.stat().st_size for p in inputs) / 1e6,
        rows * channels * 4 / 1e6,
        statistics.median(seconds),
        [round(s, 3) for s in seconds],
        raw,
    )
    shutil.rmtree(folder)
    return measurement


def machine_slug(machine: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", machine.lower()).strip("-")


def report(machine: str, measurements: list[Measurement]) -> tuple[str, dict]:
    facts = {
        "machine": machine,
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": round(memory_gib(), 1),
        "soundnet8": package_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    lines = [
        f"# soundnet8 merge throughput: {machine}",
        "",
        f"{facts['cpu']}, {facts['cores']} usable cores, {facts['memory_gib']} GiB; soundnet8 {facts['soundnet8']}; "
        f"{facts['date']}. Inputs: synthetic shard stores with every SoundNet8 output (3,433 float32 "
        "channels a clip, mean pooling), ReLU-like values, labels, folds, 2 meta columns, 1% error rows "
        "(`python -m soundnet8.benchmarks.merge_bench`). Median of the repeats.",
        "",
        "| case | shards x rows | input MB | feature MB | s | input MB/s | feature MB/s | rows/s | raw rows |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.case} | {m.shards} x {m.rows // m.shards} | {m.input_mb:.1f} | {m.feature_mb:.1f} | "
            f"{m.seconds:.2f} | "
            f"{m.input_mb_s:.1f} | {m.feature_mb_s:.1f} | {m.rows_s:,.0f} | {100 * m.raw_rows / m.rows:.0f} % |"
        )
    lines += [
        "",
        "input MB/s: compressed bytes of the input stores per second; feature MB/s: the uncompressed "
        "float32 features they hold; raw rows: rows whose feature chunks were copied verbatim "
        "(no decode/encode); the others are decoded and re-encoded.",
    ]
    return "\n".join(lines) + "\n", {**facts, "measurements": [m.to_dict() for m in measurements]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="clips per shard (unaligned cases; default 2000)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--machine", default=DEFAULT_MACHINE, help="how the results name this machine")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "merge")
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores are written (default: a temp dir)")
    args = parser.parse_args(argv)
    cases = [
        Case("gzip", Compression.GZIP, args.rows),
        Case("gzip, shards of 2,048 rows", Compression.GZIP, ALIGNED_ROWS),
        Case("gzip, duplicate paths", Compression.GZIP, args.rows, duplicates=True),
        Case("lzf", Compression.LZF, args.rows),
    ]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        measurements = []
        for case in cases:
            measurements.append(measure(case, args.shards, args.repeats, Path(tmp)))
            m = measurements[-1]
            print(f"{case.name}: {m.seconds:.2f} s, {m.input_mb_s:.1f} input MB/s, {m.rows_s:,.0f} rows/s")
    text, data = report(args.machine, measurements)
    args.out.mkdir(parents=True, exist_ok=True)
    slug = machine_slug(args.machine)
    (args.out / f"{slug}.md").write_text(text)
    (args.out / f"{slug}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
