"""``soundnet8 analyze table``: every candidate of a store evaluated, written as CSV, markdown and JSON.

A long table run can be killed and resumed: each finished evaluation is appended to
``DIR/evaluations.jsonl`` (:data:`EVALUATIONS`) and a later run with the same C grid and folds
reuses it instead of fitting again (``fresh=True`` starts over).
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .data import FoldOptions, Labels, open_stores
from .errors import AnalysisError
from .fusion import DecisionCache, FusionMethod, FusionSelection, fusion_note, select_fusion
from .study import (
    STUDY_LAYERS,
    Candidate,
    ProtocolSelection,
    evaluate,
    frame_candidates,
    join_candidates,
    layer_candidates,
    lever_candidates,
    references,
    select_protocol,
    study_candidates,
    unique_candidates,
)
from .svm import OUTER, SEED_C_GRID, FoldScores
from .tables import TABLE_CSV, TABLE_JSON, TABLE_MD, TABLE_TITLE, TableRow, write_csv, write_markdown

log = logging.getLogger(__name__)

EVALUATIONS = "evaluations.jsonl"
"""One finished evaluation per line, so a long table run can be resumed (see ``fresh``)."""

DECISIONS = "decisions"
"""Default folder (under the output) of the cached decision values that score averaging fuses."""


class StudySet(str, enum.Enum):
    """Which study candidates a ``study`` run adds to the per-layer table."""

    FULL = "full"  # combinations, windows, augmentation, every join of conv4..conv7, the levers
    CLASSIC = "classic"  # the combinations, windows and augmentation only (the first study)
    LEVERS = "levers"  # the levers on the best joins (power + L2, logistic regression, wider joins)


def default_jobs() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1



@dataclass(frozen=True)
class TableOptions:
    grid: tuple[float, ...] = SEED_C_GRID
    n_jobs: int = field(default_factory=default_jobs)
    folds: FoldOptions = FoldOptions()
    layers: tuple[str, ...] | None = None  # default: all layers of the store
    pools: tuple[str, ...] | None = None  # default: all poolings
    frame_protocols: bool = True  # flatten vs mean and the paper's windows, when frames exist
    study: bool = False  # pooling/layer combinations, windows, augmentation and the honest choice
    fresh: bool = False  # recompute everything instead of reusing DIR/evaluations.jsonl
    study_set: StudySet = StudySet.FULL
    only: tuple[str, ...] | None = None  # evaluate only these candidates (by name), saved ones still chosen among
    fusion: bool = True  # keep decision values and choose score averages (with a study)
    decisions_dir: Path | None = None  # default: DIR/decisions


@dataclass(frozen=True)
class SavedEvaluation:
    """An evaluation a previous run appended to :data:`EVALUATIONS`."""

    row: TableRow
    scores: FoldScores


@dataclass(frozen=True)
class TableResult:
    rows: tuple[TableRow, ...]
    selection: ProtocolSelection | None
    selection_note: str | None  # the honest choice in one line, when there was a choice
    files: tuple[Path, ...]  # table.csv, table.md, table.json
    fusions: tuple[FusionSelection, ...] = ()
    seconds: float = 0.0  # this run's wall time


def load_done(path: Path, grid: tuple[float, ...], folds: str) -> dict[str, SavedEvaluation]:
    """Evaluations a previous run with the same grid and folds saved in ``path``, by candidate name."""
    done: dict[str, SavedEvaluation] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that evaluation is simply redone
        if tuple(item["grid"]) != grid or item["folds"] != folds:
            continue
        row = TableRow(**{**item["row"], "fold_accuracy": tuple(item["row"]["fold_accuracy"]), "fold_C": tuple(item["row"]["fold_C"])})
        sc = item["scores"]
        inner = None if sc["inner_accuracy"] is None else tuple(tuple(v) for v in sc["inner_accuracy"])
        done[item["name"]] = SavedEvaluation(row, FoldScores(tuple(sc["folds"]), tuple(sc["fold_accuracy"]), inner))
    return done


def save_evaluation(path: Path, name: str, grid: tuple[float, ...], folds: str, saved: SavedEvaluation) -> None:
    """Append one finished evaluation to ``path`` (read back by :func:`load_done`)."""
    item = {"name": name, "grid": list(grid), "folds": folds, "row": asdict(saved.row), "scores": asdict(saved.scores)}
    with open(path, "a") as f:
        f.write(json.dumps(item) + "\n")


def table_candidates(store, frames_store, options: TableOptions) -> list[Candidate]:
    """The candidates of a table run, without repeats, simplest first."""
    candidates = layer_candidates(store, options.layers, options.pools)
    if options.frame_protocols:
        candidates += frame_candidates(store, frames_store)
    if options.study:
        study_layers = [layer for layer in STUDY_LAYERS if not options.layers or layer in options.layers]
        if options.study_set is not StudySet.LEVERS:
            candidates += study_candidates(store, frames_store, study_layers)
        extra = join_candidates(store) if options.study_set is StudySet.FULL else []
        if options.study_set is not StudySet.CLASSIC:
            extra += lever_candidates(store)
        candidates += [c for c in extra if not options.layers or set(c.features.layers) <= set(options.layers)]
    candidates = unique_candidates(candidates)
    if options.only is not None:
        unknown = sorted(set(options.only) - {c.name for c in candidates})
        if unknown:
            raise AnalysisError(f"--only: no such candidate: {'; '.join(unknown)}")
        candidates = [c for c in candidates if c.name in options.only]
    return candidates


def _evaluate_all(store, frames_store, labels: Labels, options: TableOptions, log_path: Path, cache: DecisionCache | None, echo) -> dict[str, SavedEvaluation]:
    grid, folds = options.grid, labels.fold_description
    done = load_done(log_path, grid, folds)
    candidates = table_candidates(store, frames_store, options)
    out: dict[str, SavedEvaluation] = {}
    for i, c in enumerate(candidates, 1):
        # with a cache (a study with fusion), a saved evaluation without decision values is refitted once
        wanted = cache is not None
        if c.name in done and (cache is None or cache.has(c.name, grid, folds)):
            saved = done[c.name]
            # references follow the candidate (and this code), not what was saved
            paper, seed = references(c) if labels.esc50 else (None, None)
            saved = replace(saved, row=replace(saved.row, features=c.table_features, protocol=c.protocol, paper=paper, seed=seed))
            echo(f"[{i}/{len(candidates)}] {c.name}: nested {saved.row.nested_mean:.2f}% (saved)")
        else:
            e = evaluate(c, store, labels, frames_store=frames_store, grid=grid, n_jobs=options.n_jobs, keep_decisions=wanted)
            saved = SavedEvaluation(e.row(esc50_references=labels.esc50), e.result.scores)
            if wanted:
                cache.save(c.name, grid, folds, e.result.decisions)
            save_evaluation(log_path, c.name, grid, folds, saved)
            row = saved.row
            echo(f"[{i}/{len(candidates)}] {c.name}: nested {row.nested_mean:.2f}% "
                 f"(C on test folds: {row.test_fold_mean:.2f}%), {row.seconds:.0f} s")  # fmt: skip
        out[c.name] = saved
    if options.only is None:
        return out
    # saved evaluations outside this run's list still count, in the table's order
    return {**{name: out.get(name, saved) for name, saved in done.items()}, **out}


def _fusions(names: list[str], cache: DecisionCache, grid, labels: Labels) -> tuple[FusionSelection, ...]:
    """Both fusion methods over the protocols whose decision values are cached."""
    folds = labels.fold_description
    table = {n: cache.load(n, grid, folds) for n in names if cache.has(n, grid, folds)}
    if len(table) < 2:
        return ()
    tested = sorted({f for d in table.values() for f, g in d if g == OUTER})
    return tuple(select_fusion(table, tested, method) for method in FusionMethod)


def selection_note(selection: ProtocolSelection) -> str:
    """The honest protocol choice, one markdown paragraph."""
    return (
        f"Best protocol chosen honestly (inner CV on the training folds, per test fold, among "
        f"{selection.n_candidates}): **{100 * selection.mean_accuracy:.2f}%** "
        f"(per fold: {', '.join(f'{100 * a:.2f}' for a in selection.fold_accuracy)}; choices: {', '.join(selection.fold_choice)}). "
        f"Chosen on the test folds (optimistic): {selection.optimistic_choice}, {100 * selection.optimistic_accuracy:.2f}%."
    )


def write_table_files(
    out: Path, store_path: str | os.PathLike, labels: Labels, grid: tuple[float, ...], rows: list[TableRow], selection: ProtocolSelection | None,
    fusions: tuple[FusionSelection, ...] = (), seconds: float | None = None,
) -> tuple[Path, ...]:
    """``table.csv``, ``table.md`` (with the folds, the grid and the honest choice) and ``table.json``."""
    csv_path, md_path, json_path = out / TABLE_CSV, out / TABLE_MD, out / TABLE_JSON
    write_csv(rows, csv_path)
    notes = f"Folds: {labels.fold_description}. C grid: {', '.join(f'{c:g}' for c in grid)}."
    payload = {"store": str(store_path), "folds": labels.fold_description, "grid": list(grid), "rows": [asdict(r) for r in rows]}
    if selection is not None:
        notes += "\n\n" + selection_note(selection)
        payload["protocol_selection"] = asdict(selection)
    for fusion in fusions:
        notes += "\n\n" + fusion_note(fusion)
    if fusions:
        payload["fusion"] = {f.method: asdict(f) for f in fusions}
    if seconds is not None:
        payload["run_seconds"] = round(seconds, 1)  # this run; saved evaluations cost it nothing
    payload["fit_seconds"] = round(sum(r.seconds for r in rows if not math.isnan(r.seconds)), 1)  # every row's fits, whichever run made them
    write_markdown(rows, md_path, title=TABLE_TITLE, notes=notes)
    json_path.write_text(json.dumps(payload, indent=2))
    return csv_path, md_path, json_path


def run_table(
    store_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    frames_store_path: str | os.PathLike | None = None,
    options: TableOptions = TableOptions(),
    echo: Callable[[str], None] | None = None,
) -> TableResult:
    """Evaluate every candidate of the store (reusing saved evaluations) and write the table files.

    ``echo`` receives one progress line per candidate (default: the log). The honest choice of
    protocol is made when there is a choice: more than one C and more than one candidate.
    """
    start = time.perf_counter()
    echo = echo or log.info
    grid = tuple(options.grid)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / EVALUATIONS
    if options.fresh and log_path.exists():
        log_path.unlink()
    cache = DecisionCache(options.decisions_dir or out / DECISIONS) if options.study and options.fusion else None
    with open_stores(store_path, frames_store_path) as (store, frames_store):
        labels = options.folds.labels(store)
        evaluations = _evaluate_all(store, frames_store, labels, replace(options, grid=grid), log_path, cache, echo)
    rows = [e.row for e in evaluations.values()]
    selection = None
    if len(grid) > 1 and len(evaluations) > 1:
        selection = select_protocol({name: e.scores for name, e in evaluations.items()})
    fusions = () if cache is None or len(grid) < 2 else _fusions(list(evaluations), cache, grid, labels)
    seconds = time.perf_counter() - start
    files = write_table_files(out, store_path, labels, grid, rows, selection, fusions, seconds)
    return TableResult(
        rows=tuple(rows),
        selection=selection,
        selection_note=None if selection is None else selection_note(selection),
        files=files,
        fusions=fusions,
        seconds=seconds,
    )
