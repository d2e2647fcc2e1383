"""``soundnet8 merge``: join finished stores (e.g. the shards of a job array) into one store.

Calls :func:`soundnet8.engine.store.join_stores`: OUT.h5 is created, or the inputs' new paths are
added to it; each path once; stores extracted with other settings are refused. Atomic and
resumable: a killed merge leaves OUT.h5 as it was, and re-running the command completes it.
Exit status: 0 merged; 1 refused or failed (OUT.h5 unchanged).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="the store to write (created, or added to when it exists)")
    parser.add_argument("stores", nargs="+", type=Path, help="finished feature stores with the same settings")


def run(args: argparse.Namespace) -> int:
    from ..store import join_stores

    summary = join_stores(args.output, args.stores)
    megabytes = summary.bytes_read / 1e6
    raw = 100 * summary.raw_rows / max(summary.rows_added, 1)
    print(
        f"{summary.output}: merged {summary.inputs} store(s) ({megabytes:.1f} MB) in {summary.seconds:.1f} s "
        f"({megabytes / max(summary.seconds, 1e-9):.1f} MB/s, {min(raw, 100):.0f}% of rows as raw chunks); "
        f"{summary.rows_added} clips added, "
        f"{summary.already_there} already there, {summary.duplicates} duplicate(s) kept once; "
        f"store holds {summary.total_rows} clips and {summary.total_errors} errors"
    )
    return ExitCode.OK
