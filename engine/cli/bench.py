"""``soundnet8 bench``: the benchmark suite (:func:`soundnet8.benchmarks.run.run_benchmarks`), its
targets printed and its results written to ``benchmarks/results/<machine>-<date>[-quick|-smoke]/``
(or ``--out``). benchmarks/ is imported only when this command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ExitCode
from ..session import Provider
from .common import enum_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from soundnet8.benchmarks.run import RESULTS_DIR
    from soundnet8.benchmarks.settings import Mode, Section

    parser.add_argument("--provider", type=enum_list(Provider, "provider"), default=(Provider.CPU,),
                        help="comma-separated providers to measure: cpu,cuda (default cpu; cuda is skipped with a "
                             "message where onnxruntime-gpu or a GPU is missing)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="mode", const=Mode.QUICK,
                      help="200-clip subset, fewer configurations and repeats (a few minutes)")
    size.add_argument("--smoke", action="store_const", dest="mode", const=Mode.SMOKE,
                      help="a handful of clips, one repeat: checks the harness works (CI)")
    parser.set_defaults(mode=Mode.FULL)
    sections = enum_list(Section, "section")
    parser.add_argument("--only", type=sections, help=f"run only these sections: {','.join(s.value for s in Section)}")
    parser.add_argument("--skip", type=sections, default=(), help="skip these sections")
    parser.add_argument("--esc50", type=Path, help="ESC-50 folder with meta/esc50.csv and audio_16k/ "
                        "(default ../shared/esc50; without it the 6 bundled ESC-10 clips are used)")
    parser.add_argument("--model", help="ONNX model file (default: the engine's cached export)")
    parser.add_argument("--machine", help="machine name for the results folder (default from /proc/cpuinfo, "
                        "e.g. cpu2-intel-xeon)")
    parser.add_argument("--out", type=Path, help=f"folder to write into (default {RESULTS_DIR}/<machine>-<date>[-mode])")
    parser.add_argument("--cores", type=int, help="cores to plan layouts for (default: those this process may use)")


def output_dir(args: argparse.Namespace, machine_name: str) -> Path:
    """The folder the results of ``args`` go to on the machine ``machine_name``."""
    from soundnet8.benchmarks import run as bench_run

    return bench_run.output_dir(args.out, args.mode, machine_name)


def run(args: argparse.Namespace) -> int:
    from soundnet8.benchmarks.run import BenchOptions, run_benchmarks
    from soundnet8.benchmarks.settings import Section

    sections = tuple(s for s in (args.only or tuple(Section)) if s not in args.skip)
    options = BenchOptions(mode=args.mode, providers=args.provider, sections=sections, esc50=args.esc50,
                           model=args.model, machine=args.machine, out=args.out, cores=args.cores)
    done = run_benchmarks(options)
    for t in done.results.targets:
        status = {True: "met", False: "NOT met", None: "not measured"}[t.met]
        value = "—" if t.value is None else f"{t.value:.3g}{t.unit}"
        print(f"{t.name}: {value} ({status}; {t.detail})")
    graph = done.results.checks.get("graph_variant")
    if graph:
        print(f"graph variant extract runs here: {graph['variant']} ({graph['source']}; ms per call {graph['ms_per_call']})")
    print(f"results: {done.paths['json'].parent} ({', '.join(p.name for p in done.paths.values())}) "
          f"in {done.results.seconds:.0f} s")
    return ExitCode.OK
