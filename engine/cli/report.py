"""``soundnet8 report STORE.h5 -o DIR``: the HTML report (``DIR/index.html``) of a store
(:func:`soundnet8.analysis.build_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from soundnet8.analysis.embedding import UMAP_MAX_ROWS, UMAP_SEED
    from soundnet8.analysis.svm import SEED_C_GRID

    parser.add_argument("store", type=Path, help="feature store (.h5)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output directory (index.html, figures/, table.csv)")
    parser.add_argument("--frames-store", type=Path, help="store with /frames of the same clips (else the store's own)")
    parser.add_argument("--table", type=Path, help="reuse table.csv from `soundnet8 analyze table` instead of recomputing it")
    parser.add_argument("--layers", nargs="+", help="layers of the table, UMAPs and neuron study (default: all)")
    parser.add_argument("--primary", help="headline features, e.g. pool5 or conv6:mean (default: pool5 mean)")
    parser.add_argument("--C", dest="C", type=float, nargs="+", default=list(SEED_C_GRID), help="C grid (nested selection)")
    parser.add_argument("--study", action="store_true", help="include the beyond-the-seed protocols and the honest choice among them")
    parser.add_argument("--no-seed-config", action="store_true", help="skip the seed's exact liblinear run")
    parser.add_argument("--no-frame-protocols", action="store_true", help="skip flatten-vs-mean and the paper's windows")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP figures")
    parser.add_argument("--umap-seed", type=int, default=UMAP_SEED, help=f"UMAP random seed (default {UMAP_SEED})")
    parser.add_argument("--umap-max-rows", type=int, default=UMAP_MAX_ROWS, help="subsample (seeded) above this many rows")
    parser.add_argument("--n-jobs", type=int, default=1, help="test folds fitted in parallel")


def run(args: argparse.Namespace) -> int:
    from soundnet8.analysis.report import ReportOptions, build_report

    options = ReportOptions(
        layers=tuple(args.layers) if args.layers else None,
        primary=args.primary,
        grid=tuple(args.C),
        n_jobs=args.n_jobs,
        seed_config=not args.no_seed_config,
        frame_protocols=not args.no_frame_protocols,
        study=args.study,
        table_csv=args.table,
        umap=not args.no_umap,
        umap_seed=args.umap_seed,
        umap_max_rows=args.umap_max_rows,
    )
    index = build_report(args.store, args.out, frames_store_path=args.frames_store, options=options)
    print(f"wrote {index}")
    return ExitCode.OK
