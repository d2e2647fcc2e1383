"""``soundnet8 report``: one self-contained HTML page of every table and figure of a store.

:func:`build_report` runs four separate steps: compute the report's data
(:func:`~.report_data.compute_report`), draw its figures (:func:`~.report_figures.draw_figures`),
write its files (the per-layer table and ``summary.json``, :mod:`.report_files`), and render the
page (``DIR/index.html``, :func:`~.report_render.render_html`). The page links its figures by
relative paths (``figures/*.png``) and uses no external asset, so the directory can be copied,
zipped or opened from disk.
"""

from __future__ import annotations

import time
from pathlib import Path

from soundnet8.engine.version import package_version

from .data import Labels, load_labels, open_stores
from .report_data import ReportData, ReportOptions, compute_report
from .report_figures import FIGURES_DIR, ReportFigures, draw_figures
from .report_files import write_summary, write_table
from .report_render import render_html

INDEX = "index.html"

__all__ = ["FIGURES_DIR", "INDEX", "ReportData", "ReportFigures", "ReportOptions", "build_report"]


def build_report(
    store_path: str | Path,
    out_dir: str | Path,
    *,
    frames_store_path: str | Path | None = None,
    options: ReportOptions = ReportOptions(),
    labels: Labels | None = None,
) -> Path:
    """Compute everything and write ``out_dir/index.html`` (and its figures and files); returns its path."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_stores(store_path, frames_store_path) as (store, frames_store):
        data = compute_report(store, frames_store, labels or load_labels(store), options, out)
    figures = draw_figures(data, out, dpi=options.dpi)
    write_table(out, data)
    write_summary(out, data, figures, time.perf_counter() - started)
    index = out / INDEX
    index.write_text(render_html(data, figures, version=package_version()))
    return index
