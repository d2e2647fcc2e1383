"""The GPU check's results folder: ``results.json`` (everything) and ``results.md`` (for people).

Pure functions of a :class:`GpuCheckResults`, so the report is tested on the CPU with made-up rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import Row, Skipped

SCHEMA = "soundnet8-gpu-check/1"


@dataclass(frozen=True)
class GpuCheckResults:
    machine: dict[str, Any]
    device: str  # "cuda", or "cpu" for a dry run with the CPU standing in
    parity: dict[str, Any]
    fp16_plan: dict[str, Any] = field(default_factory=dict)
    fp16_parity: dict[str, Any] = field(default_factory=dict)
    graph_parity: dict[str, Any] = field(default_factory=dict)  # the engine's graph variants on the device
    rows: tuple[Row, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    e2e: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    budget_left: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "device": self.device, "machine": self.machine, "parity": self.parity,
                "fp16_plan": self.fp16_plan, "fp16_parity": self.fp16_parity, "graph_parity": self.graph_parity,
                "model": [r.to_dict() for r in self.rows], "skipped": [s.to_dict() for s in self.skipped],
                "e2e": self.e2e, "seconds": self.seconds, "budget_left": self.budget_left}

    def best_row(self, samples: int | None = None) -> Row | None:
        rows = [r for r in self.rows if samples is None or r.params.get("samples") == samples]
        return max(rows, key=lambda r: r.stat.median) if rows else None


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _model_table(rows: tuple[Row, ...]) -> list[str]:
    lines = ["| batch | samples | algo search | pad nc1d | transfer | precision | graph | clips/s (median) | min | max | runs |",
             "|---:|---:|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        p = r.params
        lines.append(f"| {p['batch']} | {p['samples']:,} | {p['cudnn_conv_algo_search']} | "
                     f"{'on' if p['cudnn_conv1d_pad_to_nc1d'] else 'off'} | {p['transfer']} | {p['precision']} | "
                     f"{p.get('graph', 'plain')} | "
                     f"{_fmt(r.stat.median)} | {_fmt(r.stat.min)} | {_fmt(r.stat.max)} | {r.extra.get('runs', '')} |")
    return lines


def _header(results: GpuCheckResults) -> list[str]:
    m = results.machine
    standin = results.device != "cuda"
    lines = [f"# GPU check: {m.get('name', '?')}", ""]
    if standin:
        lines += ["**Dry run: the CPU provider stood in for the GPU. These are not GPU figures.**", ""]
    lines += [f"- GPU: {m.get('gpu', '?')}", f"- CPU: {m.get('cpu_model', '?')}, {m.get('cores', '?')} usable cores",
              f"- onnxruntime: {m.get('versions', {}).get('onnxruntime-gpu', '?')} (gpu), providers "
              f"{', '.join(m.get('ort_providers', ()))}",
              f"- wall time {results.seconds:.0f} s, budget left {results.budget_left:.0f} s", ""]
    return lines


def _parity_lines(results: GpuCheckResults) -> list[str]:
    p = results.parity
    if "error" in p:
        return ["## Parity with the CPU", "", f"FAILED before any comparison: {p['error']}", ""]
    lines = ["## Parity with the CPU", "",
             f"{'OK' if p.get('ok') else 'FAILED'}: max relative error {p.get('max_relative_error', float('nan')):.2e} "
             f"(tolerance {p.get('tolerance')}) over {p.get('clips')} bundled clips, on {p.get('provider_used')}.", ""]
    if results.fp16_plan:
        plan = results.fp16_plan
        lines += [f"float16: conv1's largest possible output on inputs in [-256, 256] is {plan['conv1_bound']:.1f} "
                  f"(float16 max {plan['fp16_max']:.0f}): conv1 "
                  f"{'must stay float32' if plan['keep_conv1_fp32'] else 'fits float16'}.", ""]
    for name, value in results.fp16_parity.items():
        detail = value.get("error") or f"max relative error vs float32 {value['max_relative_error']:.2e}"
        lines.append(f"- {name}: {detail}")
    for name, value in results.graph_parity.items():
        detail = value.get("error") or (f"{'OK' if value['ok'] else 'FAILED'}, max relative error vs the CPU "
                                        f"{value['max_relative_error']:.2e}")
        lines.append(f"- graph {name}: {detail}")
    return lines + [""] if results.fp16_parity or results.graph_parity else lines


def _e2e_lines(e2e: dict[str, Any]) -> list[str]:
    if not e2e:
        return []
    lines = ["## End to end (`extract`, SPLIT layout, one decoding worker per core)", ""]
    params = ", ".join(f"{k} {v}" for k, v in e2e.get("params", {}).items())
    if "skipped" in e2e:
        return lines + [f"Not measured ({params}): {e2e['skipped']}", ""]
    return lines + [f"{e2e['clips_per_s']:.1f} clips/s ({e2e['clips']} clips, {e2e['failed']} failed, "
                    f"{e2e['seconds']:.1f} s; process wall {e2e['wall_seconds']:.1f} s); {params}", ""]


def to_markdown(results: GpuCheckResults) -> str:
    lines = _header(results) + _parity_lines(results)
    if results.rows:
        top = results.best_row()
        lines += ["## Model only (all nine outputs)", "",
                  f"Best: {_fmt(top.stat.median)} clips/s ({top.name}).", "", *_model_table(results.rows), ""]
    lines += _e2e_lines(results.e2e)
    if results.skipped:
        lines += ["## Not measured", "", *(f"- {s.name}: {s.reason}" for s in results.skipped), ""]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(results: GpuCheckResults, folder: str | Path) -> dict[str, Path]:
    """Write results.json and results.md into ``folder`` (made if needed); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "md": folder / "results.md"}
    _atomic_write(paths["json"], json.dumps(results.to_dict(), indent=1, default=str) + "\n")
    _atomic_write(paths["md"], to_markdown(results))
    return paths


def read_results(folder: str | Path) -> dict[str, Any]:
    """The JSON of a results folder (what a later comparison reads)."""
    data = json.loads((Path(folder) / "results.json").read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{folder}: not a GPU check results folder (schema {data.get('schema')!r})")
    return data
