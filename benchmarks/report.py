"""Writing a run: ``results.json`` (everything), ``results.md`` (tables) and ``throughput.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .suite import BenchResults

SCHEMA_VERSION = 1
JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "results.json", "results.md", "throughput.png"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_dict(results: BenchResults) -> dict[str, Any]:
    return _jsonable({
        "schema_version": SCHEMA_VERSION,
        "machine": results.machine.to_dict(),
        "settings": results.settings.to_dict(),
        "corpus": results.corpus,
        "started": results.started,
        "seconds": results.seconds,
        "targets": [t.__dict__ for t in results.targets],
        "checks": results.checks,
        "rows": [r.to_dict() for r in results.rows],
        "skipped": [s.to_dict() for s in results.skipped],
    })


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e6):
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def _section_table(results: BenchResults, section: str) -> list[str]:
    rows = [r for r in results.rows if r.section == section]
    if not rows:
        return []
    gflops = any("gflops" in r.extra for r in rows)
    head = ["configuration", "median", "min", "max", "unit"] + (["GFLOP/s (median)"] if gflops else []) + ["notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        notes = []
        if "vs_baseline" in r.extra:
            v = r.extra["vs_baseline"]
            notes.append(f"{v['median']:.2f}x the engine's model, same rounds ({v['min']:.2f}-{v['max']:.2f})")
        if "model_only_clips_per_s" in r.extra:
            notes.append(f"model call alone {r.extra['model_only_clips_per_s']['median']:.1f} clips/s")
        if "peak_rss_tree_mib" in r.extra:
            notes.append(f"peak RSS {r.extra['peak_rss_tree_mib']:.0f} MiB (tree), "
                         f"main {r.extra['maxrss_main_mib']:.0f}, worker {r.extra['maxrss_worker_mib']:.0f}")
        if "cpu_ms_per_clip" in r.extra:
            c = r.extra["cpu_ms_per_clip"]
            notes.append(f"CPU/clip: workers {c['workers']:.0f} ms, main {c['main']:.1f} ms")
        if "all_cores_clips_per_s" in r.extra:
            notes.append(f"x{results.settings.cores} cores = {r.extra['all_cores_clips_per_s']:.0f} clips/s")
        if "blas" in r.extra:
            b = r.extra["blas"]
            notes.append(f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')}, env {r.params.get('env')}")
        cells = [r.name, _fmt(r.stat.median), _fmt(r.stat.min), _fmt(r.stat.max), r.unit]
        if gflops:
            cells.append(_fmt(r.extra["gflops"]["median"], 1) if "gflops" in r.extra else "")
        cells.append("; ".join(notes))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SECTION_TITLES = {
    "limit": "The machine's limit (same run)",
    "model": "Model only (ONNX Runtime, all nine outputs; clips/s of the whole machine)",
    "variants": "Export layout, graph optimization and session options",
    "baselines": "Baselines",
    "e2e": "End to end (extract() into an HDF5 store, all nine outputs mean-pooled)",
}


def _check_text(check: Any) -> str:
    """One line for a check: a parity result {max, per_output}, a mapping of them, or plain values."""
    if isinstance(check, dict) and "per_output" in check:
        per = ", ".join(f"{k} {v:.1e}" for k, v in check["per_output"].items())
        clips = f" over {check['clips']} clips" if "clips" in check else ""
        return f"max relative difference {check['max']:.2e}{clips} ({per})"
    if isinstance(check, dict) and "ratio" in check:
        r = check["ratio"]
        ref = ", ".join(f"{v:.1f}" for v in check["reference_clips_per_s"])
        own = ", ".join(f"{v:.1f}" for v in check["e2e_clips_per_s"])
        return f"ratio median {r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}); reference clips/s {ref}; end to end {own}"
    if isinstance(check, dict):
        return "; ".join(f"{k}: max {v['max']:.2e}" if isinstance(v, dict) and "max" in v else f"{k}: {v}"
                         for k, v in check.items())
    return str(check)


def to_markdown(results: BenchResults) -> str:
    m, s = results.machine, results.settings
    lines = [
        f"# soundnet8 bench — {m.name} ({results.started[:10]}, {s.mode.value})",
        "",
        f"- machine: **{m.name}** — {m.cpu_model}, {m.cores} cores usable ({', '.join(m.isa)}), "
        f"{m.memory_gib} GiB; GPU: {m.gpu}",
        f"- onnxruntime {m.versions.get('onnxruntime')} (providers {', '.join(m.ort_providers)}), "
        f"torch {m.versions.get('torch')}, numpy {m.versions.get('numpy')}, python {m.python}",
        f"- clips: {results.corpus['source']} ({results.corpus['clips']} available); model-only inputs: "
        "`tiled-25s` = 5 s clip, default preprocessing (tiled to 551,250 samples), `untiled-10s` = two clips "
        "back to back (220,500 samples)",
        f"- every figure: median of {s.repeats} timed runs after {s.warmup} warm-up (min, max beside); "
        f"run took {results.seconds / 60:.1f} min. The machine is shared: quote ratios within this run.",
        "",
        "## Targets",
        "",
        "| target | value | goal | met | detail |",
        "|---|---|---|---|---|",
    ]
    for t in results.targets:
        goal = f"{'≥' if t.higher else '≤'} {_fmt(t.threshold, 4) if t.threshold < 0.01 else _fmt(t.threshold)} {t.unit}"
        met = {True: "yes", False: "**no**", None: "not measured"}[t.met]
        value = (_fmt(t.value, 2) if t.value is None or t.value >= 0.01 else f"{t.value:.1e}") + (t.unit if t.value is not None else "")
        lines.append(f"| {t.name} | {value} | {goal} | {met} | {t.detail} |")
    for section, title in SECTION_TITLES.items():
        table = _section_table(results, section)
        if table:
            lines += ["", f"## {title}", "", *table]
    if results.checks:
        lines += ["", "## Checks", ""]
        for name, check in results.checks.items():
            lines.append(f"- {name}: {_check_text(check)}")
    if results.skipped:
        lines += ["", "## Not measured here", ""]
        lines += [f"- {sk.section} / {sk.name}: {sk.reason}" for sk in results.skipped]
    return "\n".join(lines) + "\n"


def plot(results: BenchResults, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = [r for r in results.rows if r.unit == "clips/s" and r.params.get("kind", "tiled-25s") == "tiled-25s"
             and r.params.get("config") != "scaling"]
    scaling = sorted((r for r in results.rows if r.params.get("config") == "scaling"), key=lambda r: r.params["n"])
    ncols = 2 if scaling else 1
    height = max(3.0, 0.28 * len(clips) + 1.5)
    fig, axes = plt.subplots(1, ncols, figsize=(13 if scaling else 10, height), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1] if scaling else [1]})
    ax = axes[0][0]
    colors = {"model": "tab:blue", "variants": "tab:cyan", "baselines": "tab:gray", "e2e": "tab:green"}
    y = np.arange(len(clips))
    med = np.array([r.stat.median for r in clips])
    err = np.array([[r.stat.median - r.stat.min for r in clips], [r.stat.max - r.stat.median for r in clips]])
    ax.barh(y, med, xerr=err if len(clips) else None, color=[colors.get(r.section, "tab:orange") for r in clips],
            capsize=2)
    ax.set_yticks(y, [f"[{r.section}] {r.name}" for r in clips], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("clips/s (25 s tiled inputs; median, bars min-max)")
    ax.set_title(f"soundnet8 — {results.machine.name}, {results.started[:10]} ({results.settings.mode.value})", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    if scaling:
        ax2 = axes[0][1]
        ax2.plot([r.params["n"] for r in scaling], [r.stat.median for r in scaling], "o-", color="tab:green")
        ax2.set_xscale("log")
        ax2.set_ylim(bottom=0)
        ax2.set_xlabel("clips in the collection")
        ax2.set_ylabel("end-to-end clips/s")
        ax2.set_title("throughput vs collection size", fontsize=9)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: BenchResults, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / JSON_NAME, "markdown": directory / MARKDOWN_NAME, "plot": directory / PLOT_NAME}
    paths["json"].write_text(json.dumps(to_dict(results), indent=1) + "\n")
    paths["markdown"].write_text(to_markdown(results))
    plot(results, paths["plot"])
    return paths
