"""``soundnet8 analyze``: linear-SVM transfer learning and per-layer tables from a feature store.

    soundnet8 analyze svm STORE.h5 --layer pool5 [--pool mean]      # nested C, and the seed's choice
    soundnet8 analyze svm STORE.h5 --layer pool5 --seed-config      # LinearSVC(C=0.1), exactly the seed
    soundnet8 analyze table STORE.h5 -o DIR [--frames-store F.h5] [--study]
    soundnet8 analyze grid-speed --seed-features ../shared/reference/seed_features -o speed.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "linear-SVM transfer learning and per-layer tables from a store"


def _common(p: argparse.ArgumentParser) -> None:
    from .svm import SEED_C_GRID

    p.add_argument("store", type=Path, help="feature store (.h5)")
    p.add_argument(
        "--C", dest="C", type=float, nargs="+", default=list(SEED_C_GRID), metavar="C",
        help="one C (fixed) or several (chosen by nested cross-validation); default: the seed's grid 1e-4..10",
    )  # fmt: skip
    p.add_argument("--n-jobs", type=int, default=1, help="test folds fitted in parallel (default 1)")
    p.add_argument("--fold-column", help="use this manifest column as folds instead of the store's")
    p.add_argument("--split-column", help="a manifest column marking test rows with 'test' (a stated train/test split)")
    p.add_argument("--n-splits", type=int, default=5, help="folds of the stratified split made when the store has none")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that stratified split")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
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

    table = sub.add_parser("table", help="accuracy of every layer and pooling (and more protocols)", description="accuracy of every layer and pooling, written as CSV and markdown")
    _common(table)
    table.add_argument("-o", "--out", type=Path, required=True, help="output directory (table.csv, table.md, table.json)")
    table.add_argument("--frames-store", type=Path, help="store with /frames of the same clips (else the store's own frames)")
    table.add_argument("--layers", nargs="+", help="layers (default: all)")
    table.add_argument("--pools", nargs="+", help="poolings (default: all)")
    table.add_argument("--no-frame-protocols", action="store_true", help="skip flatten-vs-mean and the paper's window protocol")
    table.add_argument("--study", action="store_true", help="also pooling/layer combinations, windows and augmentation, and the honest best-protocol choice")
    table.add_argument("--fresh", action="store_true", help=f"recompute everything (default: reuse the evaluations saved in DIR/{EVALUATIONS})")
    _add_speed(sub)


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


def _run_speed(args) -> int:
    import numpy as np

    from .speed import grid_speed

    if args.seed_features is not None:
        X = np.load(args.seed_features / "X.npy")
        y = np.load(args.seed_features / "y.npy")
        folds = np.arange(X.shape[0]) // 400 + 1  # the seed's row order: folds 1..5, 400 rows each
        what = f"{args.seed_features}/X.npy"
    else:
        from soundnet8.engine.store import FeatureStore

        from .data import load_labels

        with FeatureStore(args.store) as store:
            labels = load_labels(store)
            X, y, folds = store.features(args.layer, "mean"), labels.labels, labels.folds
        what = f"{args.store} {args.layer}:mean"
    result = grid_speed(X, y, folds)
    text = f"# C grid speed: {what} ({X.shape[0]} x {X.shape[1]})\n\n" + result.markdown()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def _labels(store, args):
    from .data import load_labels

    return load_labels(store, fold_column=args.fold_column, split_column=args.split_column, n_splits=args.n_splits, seed=args.split_seed)


def _run_svm(args) -> int:
    from soundnet8.engine.store import FeatureStore

    from .data import FeatureSpec, check_same_clips
    from .frames import PAPER_WINDOWS
    from .study import Candidate, candidate_rows
    from .svm import SEED_C, Solver, cross_validate_svm

    pools = args.pool
    spec = FeatureSpec.parse("+".join(f"{layer}:{pools}" for layer in args.layer.split("+")))
    candidate = Candidate(spec, crops=PAPER_WINDOWS if args.protocol == "windows" else None, flatten=args.protocol == "flatten")
    with FeatureStore(args.store) as store:
        frames_store = FeatureStore(args.frames_store) if args.frames_store else None
        try:
            if frames_store is not None:
                check_same_clips(store, frames_store)
            labels = _labels(store, args)
            rows = candidate_rows(candidate, store, labels, frames_store)
        finally:
            if frames_store is not None:
                frames_store.close()
    C = SEED_C if args.seed_config else (args.C[0] if len(args.C) == 1 else args.C)
    solver = Solver.LIBLINEAR if args.seed_config else Solver(args.solver)
    result = cross_validate_svm(
        rows.X, rows.labels, rows.folds, C, solver=solver, groups=rows.groups, test_folds=labels.test_folds, n_jobs=args.n_jobs
    )
    X = rows.X
    print(f"{args.store}: {candidate.name}, {result.n_clips} clips, {X.shape[0]} rows x {X.shape[1]} features, "
          f"{labels.n_classes} classes; folds: {labels.fold_description}")  # fmt: skip
    print(f"solver: {result.solver.value}" + (" (the seed's configuration)" if args.seed_config else ""))
    print(result.summary())
    print(f"{result.seconds:.1f} s" + ("" if result.converged else "; WARNING: some fits did not converge"))
    if args.json:
        payload = {
            "features": candidate.name,
            "selection": result.selection.value,
            "solver": result.solver.value,
            "grid": list(result.grid),
            "folds": list(result.folds),
            "fold_accuracy": list(result.fold_accuracy),
            "fold_C": list(result.fold_C),
            "mean_accuracy": result.mean_accuracy,
            "test_fold_C": result.test_fold_C,
            "test_fold_accuracy": result.test_fold_accuracy,
            "grid_accuracy": [list(r) for r in result.grid_accuracy],
            "converged": result.converged,
            "seconds": result.seconds,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


EVALUATIONS = "evaluations.jsonl"
"""One finished evaluation per line, so a long table run can be resumed (see --fresh)."""


def _load_done(path: Path, grid: tuple[float, ...], folds: str) -> dict:
    """Evaluations a previous run with the same grid and folds saved: {name: (row, scores)}."""
    from .svm import FoldScores
    from .tables import TableRow

    done = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if tuple(item["grid"]) != grid or item["folds"] != folds:
            continue
        row = TableRow(**{**item["row"], "fold_accuracy": tuple(item["row"]["fold_accuracy"]), "fold_C": tuple(item["row"]["fold_C"])})
        sc = item["scores"]
        inner = None if sc["inner_accuracy"] is None else tuple(tuple(v) for v in sc["inner_accuracy"])
        done[item["name"]] = (row, FoldScores(tuple(sc["folds"]), tuple(sc["fold_accuracy"]), inner))
    return done


def _run_table(args) -> int:
    from dataclasses import asdict, replace

    from soundnet8.engine.store import FeatureStore

    from .data import check_same_clips
    from .report import frame_candidates
    from .study import (
        STUDY_LAYERS,
        evaluate,
        layer_candidates,
        references,
        select_protocol,
        study_candidates,
        unique_candidates,
    )
    from .tables import write_csv, write_markdown

    grid = tuple(args.C)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / EVALUATIONS
    if args.fresh and log_path.exists():
        log_path.unlink()
    rows, scores = [], {}
    with FeatureStore(args.store) as store:
        frames_store = FeatureStore(args.frames_store) if args.frames_store else None
        try:
            if frames_store is not None:
                check_same_clips(store, frames_store)
            labels = _labels(store, args)
            done = _load_done(log_path, grid, labels.fold_description)
            candidates = layer_candidates(store, args.layers, args.pools)
            if not args.no_frame_protocols:
                candidates += frame_candidates(store, frames_store)
            if args.study:
                study_layers = [layer for layer in STUDY_LAYERS if not args.layers or layer in args.layers]
                candidates += study_candidates(store, frames_store, study_layers)
            candidates = unique_candidates(candidates)
            for i, c in enumerate(candidates, 1):
                if c.name in done:
                    row, sc = done[c.name]
                    # references follow the candidate (and this code), not what was saved
                    paper, seed = references(c) if labels.esc50 else (None, None)
                    row = replace(row, features=c.table_features, protocol=c.protocol, paper=paper, seed=seed)
                    print(f"[{i}/{len(candidates)}] {c.name}: nested {row.nested_mean:.2f}% (saved)", flush=True)
                else:
                    e = evaluate(c, store, labels, frames_store=frames_store, grid=grid, n_jobs=args.n_jobs)
                    row, sc = e.row(esc50_references=labels.esc50), e.result.scores
                    with open(log_path, "a") as f:
                        f.write(json.dumps({"name": c.name, "grid": list(grid), "folds": labels.fold_description, "row": asdict(row), "scores": asdict(sc)}) + "\n")
                    print(f"[{i}/{len(candidates)}] {c.name}: nested {row.nested_mean:.2f}% "
                          f"(C on test folds: {row.test_fold_mean:.2f}%), {row.seconds:.0f} s", flush=True)  # fmt: skip
                rows.append(row)
                scores[c.name] = sc
        finally:
            if frames_store is not None:
                frames_store.close()
    write_csv(rows, out / "table.csv")
    notes = f"Folds: {labels.fold_description}. C grid: {', '.join(f'{c:g}' for c in grid)}."
    payload = {"store": str(args.store), "folds": labels.fold_description, "grid": list(grid), "rows": [asdict(r) for r in rows]}
    if len(grid) > 1 and len(scores) > 1:
        sel = select_protocol(scores)
        notes += (
            f"\n\nBest protocol chosen honestly (inner CV on the training folds, per test fold, among "
            f"{sel.n_candidates}): **{100 * sel.mean_accuracy:.2f}%** "
            f"(per fold: {', '.join(f'{100 * a:.2f}' for a in sel.fold_accuracy)}; choices: {', '.join(sel.fold_choice)}). "
            f"Chosen on the test folds (optimistic): {sel.optimistic_choice}, {100 * sel.optimistic_accuracy:.2f}%."
        )
        payload["protocol_selection"] = asdict(sel)
        print(notes.strip().splitlines()[-1])
    write_markdown(rows, out / "table.md", title="Linear-SVM accuracy by features and protocol", notes=notes)
    (out / "table.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {out / 'table.csv'}, {out / 'table.md'}, {out / 'table.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.analysis == "svm":
        return _run_svm(args)
    if args.analysis == "grid-speed":
        return _run_speed(args)
    return _run_table(args)
