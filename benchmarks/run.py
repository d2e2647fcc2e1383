"""One benchmark run end to end (what ``soundnet8 bench`` runs): measure, then write results.json,
results.md and throughput.png to ``benchmarks/results/<machine>-<YYYY-MM-DD>[-quick|-smoke]/``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from soundnet8.engine.session import Provider

from .settings import Mode, Section, settings_for
from .suite import BenchResults

RESULTS_DIR = Path(__file__).resolve().parent / "results"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    mode: Mode = Mode.FULL
    providers: tuple[Provider, ...] = (Provider.CPU,)
    sections: tuple[Section, ...] = tuple(Section)
    esc50: Path | None = None  # ESC-50 folder (default ../shared/esc50; the bundled clips without it)
    model: str | None = None  # ONNX model file (default: the engine's cached export)
    machine: str | None = None  # name of the results folder's machine (default from /proc/cpuinfo)
    out: Path | None = None  # folder to write into (default: see output_dir)
    cores: int | None = None  # cores to plan layouts for (default: those this process may use)


@dataclass(frozen=True)
class BenchRun:
    results: BenchResults
    paths: dict[str, Path]  # "json", "markdown", "plot"


def output_dir(out: Path | None, mode: Mode, machine_name: str) -> Path:
    """``out`` when given, else ``RESULTS_DIR/<machine>-<today>[-quick|-smoke]``."""
    if out:
        return out
    suffix = "" if mode is Mode.FULL else f"-{mode.value}"
    return RESULTS_DIR / f"{machine_name}-{date.today().isoformat()}{suffix}"


def run_benchmarks(options: BenchOptions) -> BenchRun:
    """Measure the sections ``options`` asks for on this machine and write the results."""
    from . import machine, report
    from .data import load_corpus
    from .models import engine_model
    from .suite import run_suite

    settings = settings_for(options.mode, options.providers, options.sections, options.cores)
    info = machine.collect(options.machine)
    corpus = load_corpus(options.esc50)
    if corpus.source != "esc50":
        log.warning("ESC-50 not found: measuring on the %d bundled ESC-10 clips", len(corpus))
    model = engine_model(options.model)
    log.info("bench %s on %s (%s, %d cores): sections %s", settings.mode.value, info.name, info.cpu_model,
             settings.cores, ",".join(s.value for s in options.sections))
    results = run_suite(settings, info, model, corpus)
    return BenchRun(results, report.write(results, output_dir(options.out, options.mode, info.name)))
