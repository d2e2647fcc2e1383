"""``soundnet8 analyze``: linear-SVM transfer learning and per-layer tables from a feature store.

    soundnet8 analyze svm STORE.h5 --layer pool5 [--pool mean]      # nested C, and the seed's choice
    soundnet8 analyze svm STORE.h5 --layer pool5 --seed-config      # LinearSVC(C=0.1), exactly the seed
    soundnet8 analyze table STORE.h5 -o DIR [--frames-store F.h5] [--study]
    soundnet8 analyze grid-speed --seed-features ../shared/reference/seed_features -o speed.md

Each subcommand calls one function of :mod:`soundnet8.analysis` (``run_svm``, ``run_table``,
``run_grid_speed``) and prints its summary.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from ..errors import ExitCode


def _common(p: argparse.ArgumentParser) -> None:
    from soundnet8.analysis.svm import SEED_C_GRID

    p.add_argument("store", type=Path, help="feature store (.h5)")
    p.add_argument(
        "--C", dest="C", type=float, nargs="+", default=list(SEED_C_GRID), metavar="C",
        help="one C (fixed) or several (chosen by nested cross-validation); default: the seed's grid 1e-4..10",
    )  # fmt: skip
    p.add_argument("--n-jobs", type=int, default=None, help="fits run in parallel (default: svm 1, table the machine's cores)")
    p.add_argument("--fold-column", help="use this manifest column as folds instead of the store's")
    p.add_argument("--split-column", help="a manifest column marking test rows with 'test' (a stated train/test split)")
    p.add_argument("--n-splits", type=int, default=5, help="folds of the stratified split made when the store has none")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that stratified split")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    _add_svm(sub)
    _add_table(sub)
    _add_speed(sub)


def _add_svm(sub) -> None:
    svm = sub.add_parser("svm", help="cross-validated linear SVM on one feature set", description="cross-validated linear SVM on one feature set")
    _common(svm)
    svm.add_argument("--layer", default="pool5", help="layer (default pool5); 'pool5+conv6' concatenates layers")
    svm.add_argument("--pool", default="mean", help="pooling over time: mean, max, std, or several joined by commas")
    svm.add_argument("--solver", choices=("newton", "liblinear"), default="newton", help="newton: exact and fast (default); liblinear: sklearn LinearSVC as the seed ran it")
    svm.add_argument("--seed-config", action="store_true", help="the seed's exact configuration: liblinear, C=0.1, max_iter=10000")
    svm.add_argument(
        "--protocol", choices=("clip", "windows", "flatten"), default="clip",
        help="clip: the store's pooled features (default); windows: the paper's 1 s windows over clips "
        "repeated to 10 s, decisions averaged per clip; flatten: frames flattened (the seed's first try)",
    )  # fmt: skip
    svm.add_argument("--frames-store", type=Path, help="store with /frames of the same clips (windows, flatten)")
    svm.add_argument("--json", type=Path, help="also write the result as JSON here")


def _add_table(sub) -> None:
    from soundnet8.analysis.table_run import EVALUATIONS

    table = sub.add_parser("table", help="accuracy of every layer and pooling (and more protocols)", description="accuracy of every layer and pooling, written as CSV and markdown")
    _common(table)
    table.add_argument("-o", "--out", type=Path, required=True, help="output directory (table.csv, table.md, table.json)")
    table.add_argument("--frames-store", type=Path, help="store with /frames of the same clips (else the store's own frames)")
    table.add_argument("--layers", nargs="+", help="layers (default: all)")
    table.add_argument("--pools", nargs="+", help="poolings (default: all)")
    table.add_argument("--no-frame-protocols", action="store_true", help="skip flatten-vs-mean and the paper's window protocol")
    table.add_argument("--study", action="store_true", help="also pooling/layer combinations, windows and augmentation, and the honest best-protocol choice")
    table.add_argument("--study-set", choices=("full", "classic", "levers"), default="full",
                       help="full (default): combinations, windows, every join of conv4..conv7 and the levers; classic: the first study; "
                       "levers: power + L2, logistic regression and wider joins on the best joins")  # fmt: skip
    table.add_argument("--only", help="evaluate only these candidates (names as in the table, joined by ';'); saved ones still count in the choice")
    table.add_argument("--no-fusion", action="store_true", help="do not keep decision values nor choose score averages")
    table.add_argument("--decisions-dir", type=Path, help="cache of decision values for score averaging (default DIR/decisions)")
    table.add_argument("--fresh", action="store_true", help=f"recompute everything (default: reuse the evaluations saved in DIR/{EVALUATIONS})")


def _add_speed(sub) -> None:
    speed = sub.add_parser(
        "grid-speed", help="time the seed's C grid (liblinear) against the Newton path",
        description="time the seed's C grid (liblinear, ~8 min) against the Newton path on the same folds",
    )  # fmt: skip
    source = speed.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", type=Path, help="feature store (its folds)")
    source.add_argument("--seed-features", type=Path, help="directory with the seed's X.npy and y.npy (rows ordered by fold, 400 each)")
    speed.add_argument("--layer", default="pool5", help="layer of the store (default pool5, mean pooling)")
    speed.add_argument("-o", "--out", type=Path, help="also write the markdown table here")


def _fold_options(args: argparse.Namespace):
    from soundnet8.analysis.data import FoldOptions

    return FoldOptions(fold_column=args.fold_column, split_column=args.split_column, n_splits=args.n_splits, seed=args.split_seed)


def _run_svm(args: argparse.Namespace) -> int:
    from soundnet8.analysis.svm import Solver
    from soundnet8.analysis.svm_run import SvmOptions, SvmProtocol, run_svm

    options = SvmOptions(
        layer=args.layer, pool=args.pool, protocol=SvmProtocol(args.protocol), C=tuple(args.C), solver=Solver(args.solver),
        seed_config=args.seed_config, n_jobs=args.n_jobs or 1, folds=_fold_options(args),
    )  # fmt: skip
    run = run_svm(args.store, frames_store_path=args.frames_store, options=options, json_path=args.json)
    result, labels = run.result, run.labels
    print(f"{args.store}: {run.candidate.name}, {result.n_clips} clips, {run.n_rows} rows x {run.n_features} features, "
          f"{labels.n_classes} classes; folds: {labels.fold_description}")  # fmt: skip
    print(f"solver: {result.solver.value}" + (" (the seed's configuration)" if args.seed_config else ""))
    print(result.summary())
    print(f"{result.seconds:.1f} s" + ("" if result.converged else "; WARNING: some fits did not converge"))
    return ExitCode.OK


def _run_table(args: argparse.Namespace) -> int:
    from soundnet8.analysis.fusion import fusion_note
    from soundnet8.analysis.table_run import StudySet, TableOptions, default_jobs, run_table

    options = TableOptions(
        grid=tuple(args.C), n_jobs=args.n_jobs or default_jobs(), folds=_fold_options(args),
        layers=tuple(args.layers) if args.layers else None, pools=tuple(args.pools) if args.pools else None,
        frame_protocols=not args.no_frame_protocols, study=args.study, fresh=args.fresh,
        study_set=StudySet(args.study_set), only=tuple(n.strip() for n in args.only.split(";")) if args.only else None,
        fusion=not args.no_fusion, decisions_dir=args.decisions_dir,
    )  # fmt: skip
    result = run_table(args.store, args.out, frames_store_path=args.frames_store, options=options, echo=functools.partial(print, flush=True))
    if result.selection_note is not None:
        print(result.selection_note)
    for fusion in result.fusions:
        print(fusion_note(fusion))
    print(f"{result.seconds:.0f} s")
    print(f"wrote {', '.join(str(f) for f in result.files)}")
    return ExitCode.OK


def _run_speed(args: argparse.Namespace) -> int:
    from soundnet8.analysis.speed import run_grid_speed

    report = run_grid_speed(store_path=args.store, seed_features=args.seed_features, layer=args.layer, out=args.out)
    print(report.markdown())
    return ExitCode.OK


_RUNS = {"svm": _run_svm, "table": _run_table, "grid-speed": _run_speed}


def run(args: argparse.Namespace) -> int:
    return _RUNS[args.analysis](args)
