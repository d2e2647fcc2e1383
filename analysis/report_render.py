"""A report's HTML page: :class:`~.report_data.ReportData` and its figures through a jinja2 template
(``templates/report.html.j2``, shipped as package data).

The page links its figures by relative paths and uses no external asset (no scripts, fonts or
style sheets from elsewhere), so the report's directory can be copied, zipped or opened from disk.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timezone

from .reference import PAPER, PAPER_HEADLINE, PAPER_TABLE6, SEED_NOTEBOOK, SEED_POOL5_FLATTEN, SEED_POOL5_MEAN
from .report_data import ReportData
from .report_figures import ReportFigures

TEMPLATE = "report.html.j2"

REFERENCES = {
    "PAPER": PAPER,
    "PAPER_HEADLINE": PAPER_HEADLINE,
    "PAPER_TABLE6": PAPER_TABLE6,
    "SEED_NOTEBOOK": SEED_NOTEBOOK,
    "SEED_POOL5_FLATTEN": SEED_POOL5_FLATTEN,
    "SEED_POOL5_MEAN": SEED_POOL5_MEAN,
}
"""The published numbers the page quotes beside ours."""


def pct(value: float | None, digits: int = 2) -> str:
    """A percentage with ``digits`` decimals; empty for a missing value (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def fmt(value: object, spec: str, prefix: str = "") -> str:
    """``prefix`` + ``format(value, spec)`` (a filter, so that ``map`` can apply it)."""
    return prefix + format(value, spec)


@functools.cache
def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("soundnet8.analysis", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails loudly instead of rendering ""
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = pct
    env.filters["fmt"] = fmt
    return env.get_template(TEMPLATE)


def render_html(data: ReportData, figures: ReportFigures, *, version: str, when: datetime | None = None) -> str:
    """The page (``index.html``) of a report."""
    when = when or datetime.now(timezone.utc)
    return _template().render(
        d=data, fig=figures, ref=REFERENCES, version=version, when=when.strftime("%Y-%m-%d %H:%M UTC")
    )
