"""The ``soundnet8`` command: a thin dispatcher over pure functions.

Each subcommand lives in its own module, imported only when that subcommand runs (so ``soundnet8
extract`` never imports torch, matplotlib or umap). A command module defines::

    HELP = "one line"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...          # the exit status

Exit statuses are shared by every command (see :class:`ExitCode`).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import logging
import sys


class ExitCode(enum.IntEnum):
    OK = 0
    FATAL = 1  # nothing (more) could be done: bad arguments, missing model, unreadable store...
    USAGE = 2  # argparse's own status for a malformed command line
    SOME_FAILED = 3  # the job finished, but some inputs failed (they are recorded, e.g. /errors)
    INTERRUPTED = 130  # Ctrl-C; what was written so far is kept and a re-run resumes


COMMANDS: dict[str, str] = {
    "export": "soundnet8.export.cli",
    "demo": "soundnet8.engine.demo",
    "extract": "soundnet8.engine.extract_cli",
    "predict": "soundnet8.engine.predict",
    "stats": "soundnet8.engine.stats_cli",
    "analyze": "soundnet8.analysis.cli",
    "report": "soundnet8.analysis.report_cli",
    "bench": "soundnet8.benchmarks.cli",
}

# One-line descriptions, kept here so ``soundnet8 --help`` imports no command module.
HELPS: dict[str, str] = {
    "export": "export the pretrained SoundNet8 to ONNX (needs torch)",
    "demo": "print the top scenes and objects for the bundled ESC-10 clips",
    "extract": "extract features of audio files into an HDF5 feature store",
    "predict": "print the top-k scenes and objects of audio files",
    "stats": "per-neuron percentile thresholds and class selectivity of a store",
    "analyze": "linear-SVM transfer learning and per-layer tables from a store",
    "report": "write an HTML report (tables and figures) from a store",
    "bench": "benchmark providers, baselines and the machine's limit",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("soundnet8")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soundnet8", description="SoundNet8 feature extraction engine.")
    parser.add_argument("--version", action="version", version=f"soundnet8 {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in HELPS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(COMMANDS[name])
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import SoundNetError

    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="soundnet8: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    try:
        return int(args._run(args))
    except SoundNetError as exc:
        print(f"soundnet8 {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    except KeyboardInterrupt:
        print(f"soundnet8 {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
