"""The ``soundnet8`` command: a thin dispatcher over one module per command.

The command-module protocol (also in the developers' notes): the command ``NAME`` is the module
``soundnet8.engine.cli.NAME``, which defines exactly::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...  # NAME's arguments
    def run(args: argparse.Namespace) -> int: ...                    # an ExitCode

- The one-line help strings live here only (:data:`HELPS`), so ``soundnet8 --help`` imports no command
  module; a command module is imported only when its command is on the command line.
- A command module parses arguments and calls one library function (resolving arguments such as the
  model file on the way); the work lives in engine/, export/, analysis/ or benchmarks/.
- Heavy imports (torch through export/, analysis/, benchmarks/, matplotlib, umap, sklearn) happen inside
  ``run()`` (or ``add_arguments()`` when a default needs them), never at module level: the engine
  never imports torch, and ``--help`` stays fast.
- ``run()`` returns an :class:`~soundnet8.engine.errors.ExitCode`; it raises
  :class:`~soundnet8.engine.errors.SoundNetError` for a failure the user can act on, which :func:`main`
  prints as ``soundnet8 NAME: error: ...`` with status 1 (Ctrl-C: 130).
- Shared argument helpers live in :mod:`soundnet8.engine.cli.common`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from ..errors import ExitCode, SoundNetError, Terminated
from ..version import package_version

HELPS: dict[str, str] = {
    "export": "export the pretrained SoundNet8 to ONNX (needs torch)",
    "demo": "print the top scenes and objects for the bundled ESC-10 clips",
    "extract": "extract features of audio files into an HDF5 feature store",
    "merge": "join finished feature stores (e.g. the shards of a job array) into one store",
    "predict": "print the top-k scenes and objects of audio files",
    "stats": "per-neuron percentile thresholds and class selectivity of a store",
    "analyze": "linear-SVM transfer learning and per-layer tables from a store",
    "report": "write an HTML report (tables and figures) from a store",
    "bench": "benchmark providers, baselines and the machine's limit",
    "hear-task": "write a HEAR 2021 task folder (hear-eval-kit's input) from a labelled, folded manifest such as ESC-50's",
}
"""One line per command, in the order ``--help`` lists them."""

COMMANDS: dict[str, str] = {name: f"{__name__}.{name.replace('-', '_')}" for name in HELPS}
"""Each command's module (imported only when that command runs): the command NAME is ``cli.NAME``
(a dash in the command is an underscore in the module's name)."""


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The full parser; only ``command``'s module (if any) is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="soundnet8", description="SoundNet8 feature extraction engine.")
    parser.add_argument("--version", action="version", version=f"soundnet8 {package_version()}")
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
    """Run one command; returns its exit status (see :class:`~soundnet8.engine.errors.ExitCode`)."""
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
    previous = _terminate_like_ctrl_c()
    try:
        return int(args._run(args))
    except SoundNetError as exc:
        print(f"soundnet8 {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.FATAL
    except Terminated:
        print(f"soundnet8 {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return ExitCode.TERMINATED
    except KeyboardInterrupt:
        print(f"soundnet8 {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _terminate_like_ctrl_c():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread; returns the
    handler to restore (None off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
