"""The files of a report beside its page: the per-layer table and ``summary.json`` (the key numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .report_data import ReportData
from .report_figures import ReportFigures
from .tables import TABLE_TITLE, write_csv, write_markdown

SUMMARY = "summary.json"


def summary(data: ReportData, figures: ReportFigures, seconds: float) -> dict:
    """The report's key numbers (``summary.json``); accuracies in percent."""
    h = data.headline
    nested, seed_run = h.nested, h.seed_run
    out: dict = {
        "store": dict(data.provenance.rows),
        "headline": {
            "features": h.features.name,
            "nested_mean": 100 * nested.mean_accuracy,
            "nested_folds": [100 * a for a in nested.fold_accuracy],
            "nested_C": list(nested.fold_C),
            "test_fold_C": nested.test_fold_C,
            "test_fold_mean": 100 * nested.test_fold_accuracy,
            "seed_config_mean": None if seed_run is None else 100 * seed_run.mean_accuracy,
            "seed_config_folds": None if seed_run is None else [100 * a for a in seed_run.fold_accuracy],
        },
    }
    sel = data.table.selection
    if sel is not None:
        out["protocol_selection"] = {
            "nested_mean": 100 * sel.mean_accuracy,
            "fold_choice": list(sel.fold_choice),
            "fold_accuracy": [100 * a for a in sel.fold_accuracy],
            "optimistic_choice": sel.optimistic_choice,
            "optimistic_mean": 100 * sel.optimistic_accuracy,
        }
    out["table"] = [
        {"features": r.features, "protocol": r.protocol, "nested_mean": r.nested_mean, "test_fold_mean": r.test_fold_mean, "paper": r.paper}
        for r in data.table.rows
    ]
    conf = data.confusions
    out["difficulty"] = {"easy": [name for name, _ in conf.easy], "difficult": [name for name, _ in conf.difficult]}
    out["seconds"] = seconds
    out["figures"] = [f.src for f in figures]
    return out


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return str(value)


def write_summary(out: Path, data: ReportData, figures: ReportFigures, seconds: float) -> Path:
    path = out / SUMMARY
    path.write_text(json.dumps(summary(data, figures, seconds), indent=2, default=_json_default))
    return path


def write_table(out: Path, data: ReportData) -> None:
    """``table.csv`` and ``table.md`` of the per-layer table, unless `analyze table` wrote them there."""
    table = data.table
    if table.write_files:
        write_csv(list(table.rows), out / table.csv_name)
        write_markdown(list(table.rows), out / table.md_name, title=TABLE_TITLE)
