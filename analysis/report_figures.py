"""The figures of a report, drawn from its :class:`~.report_data.ReportData` into ``DIR/figures``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import figures
from .reference import PAPER_HEADLINE
from .report_data import EmbeddingPlot, LayerTable, Neurons, ReportData
from .study import CLIP_PROTOCOL

FIGURES_DIR = "figures"


@dataclass(frozen=True)
class Figure:
    src: str  # path relative to the report's directory
    caption: str


@dataclass(frozen=True)
class ReportFigures:
    """Every figure of a report, by the place the page shows it."""

    accuracy: Figure
    confusion: Figure
    recall: Figure
    class_umaps: tuple[Figure, ...] = ()  # the easy and the difficult classes
    layer_umaps: tuple[Figure, ...] = ()
    major_umaps: tuple[Figure, ...] = ()
    neuron_example: tuple[Figure, ...] = ()  # activations, classes above the threshold, neuron x class
    neuron_shares: tuple[Figure, ...] = ()  # per layer, then across depth

    def __iter__(self) -> Iterator[Figure]:
        """The figures in the order of the page."""
        yield from (self.accuracy, self.confusion, self.recall)
        for group in (self.class_umaps, self.layer_umaps, self.major_umaps, self.neuron_example, self.neuron_shares):
            yield from group


class _Drawer:
    def __init__(self, out: Path, dpi: int) -> None:
        self.out = out
        self.dpi = dpi

    def path(self, name: str) -> Path:
        return self.out / FIGURES_DIR / name

    def figure(self, saved: figures.SavedFigure, caption: str) -> Figure:
        return Figure(saved.path.relative_to(self.out).as_posix(), caption)

    def embeddings(self, plots: tuple[EmbeddingPlot, ...]) -> tuple[Figure, ...]:
        out = []
        for p in plots:
            path = figures.embedding_figure(
                p.embedding.coords, p.groups, p.group_names, self.path(p.file), title=p.title, note=p.embedding.note(), dpi=self.dpi
            )
            out.append(self.figure(path, p.caption))
        return tuple(out)


def _accuracy(d: _Drawer, table: LayerTable) -> Figure:
    rows = table.rows
    names = [f"{r.features} [{r.protocol}]" if r.protocol != CLIP_PROTOCOL else r.features for r in rows]
    path = figures.accuracy_figure(
        names, [r.nested_mean for r in rows], d.path("accuracy_by_features.png"),
        paper=[r.paper for r in rows] if table.esc50 else None, headline=PAPER_HEADLINE if table.esc50 else None, dpi=d.dpi,
    )  # fmt: skip
    return d.figure(path, "Nested accuracy of each feature set and protocol, with the paper's Table 6 beside it")


def _neuron_example(d: _Drawer, study: Neurons) -> tuple[Figure, ...]:
    ex = study.example
    if ex is None:
        return ()
    layer, neuron, q, dpi = ex.layer, ex.neuron, study.q, d.dpi
    act = figures.neuron_activation_figure(ex.values, q, d.path(f"neuron_{layer}_{neuron}_activation.png"), neuron=neuron, layer=layer, dpi=dpi)
    bars = figures.neuron_top_classes_figure(
        ex.class_counts, study.class_names, d.path(f"neuron_{layer}_{neuron}_classes.png"), neuron=neuron, layer=layer, q=q, dpi=dpi
    )
    matrix = figures.neuron_class_matrix_figure(ex.stats.counts, study.class_names, d.path(f"neuron_class_matrix_{layer}.png"), layer=layer, q=q, dpi=dpi)
    return (
        d.figure(act, f"Sorted activations of {layer} neuron {neuron} with its {q:g}th percentile"),
        d.figure(bars, f"Classes of the clips above neuron {neuron}'s {q:g}th percentile"),
        d.figure(matrix, f"{layer}: neuron x class activation counts"),
    )


def _neuron_shares(d: _Drawer, study: Neurons) -> tuple[Figure, ...]:
    out = []
    for layer, share in study.shares:
        path = figures.top_class_share_figure(share, d.path(f"top_class_share_{layer}.png"), layer=layer, dpi=d.dpi)
        out.append(d.figure(path, f"{layer}: most-represented-class share per neuron, sorted"))
    depth = figures.share_depth_figure(dict(study.shares), d.path("top_class_share_depth.png"), dpi=d.dpi)
    out.append(d.figure(depth, "Most-represented-class share per neuron across depth"))
    return tuple(out)


def draw_figures(data: ReportData, out: str | Path, *, dpi: int = figures.DPI) -> ReportFigures:
    """Draw every figure of ``data`` under ``out/figures`` (PNG files)."""
    d = _Drawer(Path(out), dpi)
    d.path("").mkdir(parents=True, exist_ok=True)
    conf = data.confusions
    confusion = figures.confusion_figure(
        conf.counts, conf.class_names, d.path("confusion.png"),
        title=f"Normalized confusion matrix, {conf.features}, {conf.n_folds} test folds (nested C)", dpi=dpi,
    )  # fmt: skip
    diff = conf.difficulty
    recall = figures.class_recall_figure(diff.recall, conf.class_names, diff.easy, diff.difficult, d.path("class_recall.png"), dpi=dpi)
    maps = data.umaps
    return ReportFigures(
        accuracy=_accuracy(d, data.table),
        confusion=d.figure(confusion, f"Normalized confusion matrix ({conf.features})"),
        recall=d.figure(recall, "Per-class recall; easy classes green, difficult red"),
        class_umaps=d.embeddings(conf.umaps),
        layer_umaps=() if maps is None else d.embeddings(maps.layers),
        major_umaps=() if maps is None or maps.majors is None else d.embeddings(maps.majors),
        neuron_example=() if data.neurons is None else _neuron_example(d, data.neurons),
        neuron_shares=() if data.neurons is None else _neuron_shares(d, data.neurons),
    )
