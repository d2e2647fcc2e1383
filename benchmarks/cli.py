"""``soundnet8 bench``: run the benchmark suite and write results.json, results.md and throughput.png
to ``benchmarks/results/<machine>-<YYYY-MM-DD>[-quick|-smoke]/`` (or ``--out``)."""

from __future__ import annotations

import argparse
import logging
from datetime import date
from pathlib import Path

from soundnet8.engine.cli import ExitCode
from soundnet8.engine.session import Provider

from .settings import Mode, Section, settings_for

HELP = "benchmark providers, baselines and the machine's limit"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

log = logging.getLogger(__name__)


def _csv_enum(enum_cls):
    def parse(text: str):
        try:
            values = tuple(enum_cls(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose from {','.join(e.value for e in enum_cls)}") from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return tuple(dict.fromkeys(values))
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", type=_csv_enum(Provider), default=(Provider.CPU,),
                        help="comma-separated providers to measure: cpu,cuda (default cpu; cuda is skipped with a "
                             "message where onnxruntime-gpu or a GPU is missing)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="mode", const=Mode.QUICK,
                      help="200-clip subset, fewer configurations and repeats (a few minutes)")
    size.add_argument("--smoke", action="store_const", dest="mode", const=Mode.SMOKE,
                      help="a handful of clips, one repeat: checks the harness works (CI)")
    parser.set_defaults(mode=Mode.FULL)
    parser.add_argument("--only", type=_csv_enum(Section), help=f"run only these sections: {','.join(s.value for s in Section)}")
    parser.add_argument("--skip", type=_csv_enum(Section), default=(), help="skip these sections")
    parser.add_argument("--esc50", type=Path, help="ESC-50 folder with meta/esc50.csv and audio_16k/ "
                        "(default ../shared/esc50; without it the 6 bundled ESC-10 clips are used)")
    parser.add_argument("--model", help="ONNX model file (default: the engine's cached export)")
    parser.add_argument("--machine", help="machine name for the results folder (default from /proc/cpuinfo, "
                        "e.g. cpu2-intel-xeon)")
    parser.add_argument("--out", type=Path, help=f"folder to write into (default {RESULTS_DIR}/<machine>-<date>[-mode])")
    parser.add_argument("--cores", type=int, help="cores to plan layouts for (default: those this process may use)")


def output_dir(args: argparse.Namespace, machine_name: str) -> Path:
    if args.out:
        return args.out
    suffix = "" if args.mode is Mode.FULL else f"-{args.mode.value}"
    return RESULTS_DIR / f"{machine_name}-{date.today().isoformat()}{suffix}"


def run(args: argparse.Namespace) -> int:
    from . import machine as machine_mod
    from . import report
    from .data import load_corpus
    from .models import engine_model
    from .suite import run_suite

    sections = tuple(s for s in (args.only or tuple(Section)) if s not in args.skip)
    settings = settings_for(args.mode, args.provider, sections, args.cores)
    info = machine_mod.collect(args.machine)
    corpus = load_corpus(args.esc50)
    if corpus.source != "esc50":
        log.warning("ESC-50 not found: measuring on the %d bundled ESC-10 clips", len(corpus))
    model = engine_model(args.model)
    log.info("bench %s on %s (%s, %d cores): sections %s", settings.mode.value, info.name, info.cpu_model,
             settings.cores, ",".join(s.value for s in sections))
    results = run_suite(settings, info, model, corpus)
    paths = report.write(results, output_dir(args, info.name))
    for t in results.targets:
        status = {True: "met", False: "NOT met", None: "not measured"}[t.met]
        value = "—" if t.value is None else f"{t.value:.3g}{t.unit}"
        print(f"{t.name}: {value} ({status}; {t.detail})")
    print(f"results: {paths['json'].parent} ({', '.join(p.name for p in paths.values())}) in {results.seconds:.0f} s")
    return ExitCode.OK
