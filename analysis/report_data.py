"""What a report shows, computed from a store: one frozen dataclass per section.

Nothing here draws or writes: :mod:`.report_figures` draws the figures of a :class:`ReportData`,
:mod:`.report_render` renders it as HTML, :mod:`.report_files` writes its tables and summary.
Accuracies are percentages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundnet8.engine.stats import DEFAULT_Q, NeuronStats

from .data import FeatureSpec, Labels, load_features
from .figures import DPI
from .embedding import UMAP_MAX_ROWS, UMAP_SEED, Embedding, umap_embedding
from .neurons import layer_stats, most_selective, top_clip_classes
from .reference import EXPECTED_RESAMPLED, SEED_C_GRID_ACCURACY, SEED_NOTEBOOK, SEED_POOL5_MEAN
from .study import (
    Candidate,
    Evaluation,
    ProtocolSelection,
    default_primary,
    evaluate,
    frame_candidates,
    frames_layers,
    layer_candidates,
    select_protocol,
    study_candidates,
    unique_candidates,
)
from .svm import (
    SEED_C,
    SEED_C_GRID,
    SEED_FOLD_ACCURACY,
    SELECTION_LABELS,
    ClassDifficulty,
    CVResult,
    Selection,
    Solver,
    class_difficulty,
    confusion_counts,
    cross_validate_svm,
)
from .tables import TABLE_CSV, TABLE_JSON, TABLE_MD, TableRow, read_csv

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReportOptions:
    layers: tuple[str, ...] | None = None  # per-layer table and UMAPs (default: all layers)
    primary: str | None = None  # feature spec of the headline, confusion matrix and neuron example
    grid: tuple[float, ...] = SEED_C_GRID
    n_jobs: int = 1
    seed_config: bool = True  # also the seed's exact LinearSVC(C=0.1) on the primary features
    frame_protocols: bool = True  # flatten vs mean and the paper's windows, when frames exist
    study: bool = False  # the beyond-the-seed candidates and the honest choice among them
    table_csv: Path | None = None  # reuse a table written by `soundnet8 analyze table`
    umap: bool = True
    umap_seed: int = UMAP_SEED
    umap_max_rows: int = UMAP_MAX_ROWS
    umap_epochs: int | None = None
    q: float = DEFAULT_Q
    dpi: int = DPI


@dataclass(frozen=True)
class Provenance:
    rows: tuple[tuple[str, str], ...]  # (item, value): the store, its labels and folds, its attributes


@dataclass(frozen=True)
class FoldRow:
    """A row of the headline table: a label, a mean and one value per test fold."""

    label: str
    mean: float | None  # percent; None for a row without a mean (the C chosen per fold)
    values: tuple[float, ...]  # percent per fold, or C per fold when ``values_are_C``
    values_are_C: bool = False


@dataclass(frozen=True)
class GridRow:
    C: float
    accuracy: float  # mean test-fold accuracy at this C (percent)
    seed: float | None  # the seed notebook's, where it is comparable


@dataclass(frozen=True, eq=False)
class Headline:
    features: FeatureSpec
    nested: CVResult
    seed_run: CVResult | None  # the seed's exact configuration, when asked
    rows: tuple[FoldRow, ...]
    grid: tuple[GridRow, ...]
    esc50: bool
    expected: float | None  # what the project expects with 22,050 Hz preprocessing (ESC-50)


@dataclass(frozen=True)
class LayerTable:
    rows: tuple[TableRow, ...]
    selection: ProtocolSelection | None
    source: str  # where the rows come from, one sentence
    esc50: bool
    csv_name: str
    md_name: str
    write_files: bool  # False when `analyze table` wrote them into the report's own directory

    @property
    def best(self) -> float:
        return max(r.nested_mean for r in self.rows)


@dataclass(frozen=True, eq=False)
class EmbeddingPlot:
    """A UMAP to draw: its points, their groups, and the file and words that go with it."""

    file: str
    title: str
    caption: str
    embedding: Embedding
    groups: np.ndarray  # group of each embedded row
    group_names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Confusions:
    features: str
    n_folds: int
    counts: np.ndarray  # (K, K) out-of-fold confusion counts (rows: true classes)
    difficulty: ClassDifficulty
    class_names: tuple[str, ...]
    umaps: tuple[EmbeddingPlot, ...]  # the easy and the difficult classes

    @property
    def easy(self) -> tuple[tuple[str, float], ...]:
        return tuple((self.class_names[i], 100 * self.difficulty.recall[i]) for i in self.difficulty.easy)

    @property
    def difficult(self) -> tuple[tuple[str, float], ...]:
        return tuple((self.class_names[i], 100 * self.difficulty.recall[i]) for i in self.difficulty.difficult)


@dataclass(frozen=True, eq=False)
class Umaps:
    seed: int
    colour: str  # what the colours are
    layers: tuple[EmbeddingPlot, ...]
    primary: str
    majors: tuple[EmbeddingPlot, ...] | None  # within each major category (ESC-50 only)


@dataclass(frozen=True)
class NeuronRow:
    layer: str
    n_neurons: int
    mean_share: float
    median_share: float
    n_above: tuple[int, ...]  # neurons whose share exceeds each of Neurons.levels
    top_classes: tuple[tuple[str, int], ...]  # (class, neurons it is the top class of), most first


@dataclass(frozen=True, eq=False)
class NeuronExample:
    """The primary layer's most class-selective neuron."""

    layer: str
    neuron: int
    top_class: str
    share: float
    values: np.ndarray  # (N,) the neuron's clip values
    class_counts: np.ndarray  # (K,) classes of the clips above its q-th percentile
    stats: NeuronStats


@dataclass(frozen=True, eq=False)
class Neurons:
    q: float
    sources: tuple[str, ...]  # stored (soundnet8 stats) and/or computed
    levels: tuple[float, ...]
    rows: tuple[NeuronRow, ...]
    shares: tuple[tuple[str, np.ndarray], ...]  # (layer, share of each neuron)
    example: NeuronExample | None
    class_names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ReportData:
    store_name: str
    provenance: Provenance
    headline: Headline
    table: LayerTable
    confusions: Confusions
    umaps: Umaps | None
    neurons: Neurons | None
    esc50: bool  # the paper's and the seed's reference numbers apply


# --------------------------------------------------------------------------------------------
# Sections


def provenance(store, labels: Labels, frames_store) -> Provenance:
    rows = [
        ("store", str(store.path)),
        ("clips", f"{store.n_clips:,}"),
        ("classes", f"{labels.n_classes}" + (" (ESC-50)" if labels.esc50 else "")),
        ("folds", labels.fold_description),
        ("layers / poolings", "; ".join(f"{layer}: {', '.join(store.pools(layer))}" for layer in store.layers)),
        ("frame-level outputs", ", ".join(frames_layers(frames_store if frames_store is not None else store)) or "none"),
    ]
    if frames_store is not None:
        rows.append(("frames store", str(frames_store.path)))
    attrs = store.attrs
    for key in sorted(attrs):
        value = attrs[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        rows.append((key, str(value)))
    return Provenance(tuple(rows))


def headline(spec: FeatureSpec, nested: CVResult, seed_run: CVResult | None, esc50: bool) -> Headline:
    pct = [100 * a for a in nested.fold_accuracy]
    rows = [
        FoldRow(SELECTION_LABELS[Selection.NESTED], 100 * nested.mean_accuracy, tuple(pct)),
        FoldRow("C chosen per fold (nested)", None, tuple(nested.fold_C), values_are_C=True),
        FoldRow(
            f"{SELECTION_LABELS[Selection.TEST_FOLDS]}, C={nested.test_fold_C:g}", 100 * nested.test_fold_accuracy,
            tuple(100 * a for a in nested.test_fold_fold_accuracy),
        ),  # fmt: skip
    ]
    if seed_run is not None:
        rows.append(
            FoldRow(
                f"seed's exact configuration (liblinear, C={SEED_C:g}, max_iter=10000)", 100 * seed_run.mean_accuracy,
                tuple(100 * a for a in seed_run.fold_accuracy),
            )  # fmt: skip
        )
    seed_comparable = esc50 and spec.name == "pool5:mean"
    if seed_comparable and len(nested.folds) == len(SEED_FOLD_ACCURACY):
        rows.append(
            FoldRow(
                f"{SEED_NOTEBOOK}, its own pool5 features (44.1 kHz fed unresampled)", SEED_POOL5_MEAN,
                tuple(100 * a for a in SEED_FOLD_ACCURACY),
            )  # fmt: skip
        )
    grid = tuple(
        GridRow(c, 100 * m, SEED_C_GRID_ACCURACY.get(c) if seed_comparable else None) for c, m in zip(nested.grid, nested.grid_mean)
    )
    expected = EXPECTED_RESAMPLED.get(spec.parts[0]) if len(spec.parts) == 1 else None
    return Headline(spec, nested, seed_run, tuple(rows), grid, esc50, expected)


def _saved_selection(path: Path) -> ProtocolSelection | None:
    """The honest protocol choice saved beside a table by ``soundnet8 analyze table``, if any."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text()).get("protocol_selection")
    if not saved:
        return None
    return ProtocolSelection(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def layer_table(store, frames_store, labels: Labels, layers: Sequence[str], primary: Evaluation, options: ReportOptions, out: Path) -> LayerTable:
    """The per-layer table: read from ``options.table_csv``, or computed (``primary`` is reused)."""
    if options.table_csv is not None:
        saved = Path(options.table_csv)
        rows = read_csv(saved)
        selection = _saved_selection(saved.with_name(TABLE_JSON))
        source = f"Read from {saved.name} (written by soundnet8 analyze table)."
        if saved.resolve().parent == out.resolve():  # `analyze table` wrote them here: keep its notes
            return LayerTable(tuple(rows), selection, source, labels.esc50, saved.name, saved.with_suffix(".md").name, False)
    else:
        candidates = layer_candidates(store, layers)
        if options.frame_protocols:
            candidates += frame_candidates(store, frames_store)
        if options.study:
            candidates += study_candidates(store, frames_store)
        evaluations: list[Evaluation] = []
        for c in unique_candidates(candidates):
            if c == primary.candidate:
                evaluations.append(primary)  # already computed
                continue
            log.info("report: evaluating %s", c.name)
            evaluations.append(evaluate(c, store, labels, frames_store=frames_store, grid=options.grid, n_jobs=options.n_jobs))
        rows = [e.row(esc50_references=labels.esc50) for e in evaluations]
        selection = select_protocol(evaluations) if options.study else None
        source = "Computed for this report."
    return LayerTable(tuple(rows), selection, source, labels.esc50, TABLE_CSV, TABLE_MD, True)


def _embed(X: np.ndarray, options: ReportOptions) -> Embedding:
    return umap_embedding(X, seed=options.umap_seed, max_rows=options.umap_max_rows, n_epochs=options.umap_epochs)


def _classes_plot(X, labels: Labels, classes: np.ndarray, options: ReportOptions, file: str, title: str, caption: str) -> EmbeddingPlot | None:
    """A UMAP of the clips of ``classes`` (sorted class indices), coloured by class; None under 3 clips."""
    rows = np.flatnonzero(np.isin(labels.labels, classes))
    if rows.size < 3:
        return None
    emb = _embed(X[rows], options)
    groups = np.searchsorted(classes, labels.labels[rows][emb.rows])
    names = tuple(labels.class_names[c] for c in classes)
    return EmbeddingPlot(file, title, f"{caption}. {emb.note()}", emb, groups, names)


def confusions(labels: Labels, spec: FeatureSpec, result: CVResult, X: np.ndarray, options: ReportOptions) -> Confusions:
    counts = confusion_counts(result, labels.n_classes)
    difficulty = class_difficulty(counts)
    plots = []
    if options.umap:
        for kind, classes in (("easy", difficulty.easy), ("difficult", difficulty.difficult)):
            plot = _classes_plot(
                X, labels, np.array(sorted(classes)), options, f"umap_{kind}.png",
                f"UMAP of the {kind} classes ({spec.name})", f"UMAP of the {kind} classes, {spec.name}",
            )  # fmt: skip
            if plot is not None:
                plots.append(plot)
    return Confusions(spec.name, len(result.folds), counts, difficulty, tuple(labels.class_names), tuple(plots))


def umaps(store, labels: Labels, layers: Sequence[str], primary: FeatureSpec, primary_X: np.ndarray, options: ReportOptions) -> Umaps:
    majors = labels.majors
    if majors is not None:
        group_names, per_class = majors
        groups_of_clip = per_class[labels.labels]
        colour = "ESC-50's 5 major categories"
    else:
        group_names, groups_of_clip = tuple(labels.class_names), labels.labels
        colour = "class"
    plots = []
    for layer in layers:
        pool = "mean" if "mean" in store.pools(layer) else store.pools(layer)[0]
        emb = _embed(store.features(layer, pool), options)
        plots.append(
            EmbeddingPlot(
                f"umap_{layer}_{pool}.png", f"UMAP of {layer} ({pool} over time)",
                f"UMAP of {layer}:{pool}, coloured by {colour}. {emb.note()}", emb, groups_of_clip[emb.rows], tuple(group_names),
            )  # fmt: skip
        )
    major_plots = None
    if majors is not None:
        major_plots = []
        for g, major in enumerate(group_names):
            slug = "".join(ch if ch.isalnum() else "_" for ch in major.lower()).strip("_")
            plot = _classes_plot(
                primary_X, labels, np.flatnonzero(per_class == g), options, f"umap_major_{g}_{slug}.png",
                f"UMAP of {major} ({primary.name})", f"UMAP of the classes of {major}",
            )  # fmt: skip
            if plot is not None:
                major_plots.append(plot)
        major_plots = tuple(major_plots)
    return Umaps(options.umap_seed, colour, tuple(plots), primary.name, major_plots)


def neurons(store, labels: Labels, layers: Sequence[str], primary_layer: str, q: float) -> Neurons | None:
    """The neuron study of each layer's mean features; None when no layer has mean pooling."""
    names = labels.class_names
    shares, rows, sources = [], [], set()
    primary_stats = None
    for layer in layers:
        if "mean" not in store.pools(layer):
            continue
        ls = layer_stats(store, layer, "mean", q)
        sources.add(ls.source.value)
        st = ls.stats
        shares.append((layer, st.share_seed))
        s = st.summary()
        top = tuple((names[c], n) for c, n in s.top_classes[:3])
        rows.append(NeuronRow(layer, st.n_neurons, s.mean_share_seed, s.median_share_seed, tuple(s.n_above_seed), top))
        if layer == primary_layer:
            primary_stats = st
    if not shares:
        return None
    example, levels = None, (0.2, 0.3)
    if primary_stats is not None:
        st = primary_stats
        levels = st.summary().levels
        neuron = most_selective(st)
        values = store.features(primary_layer, "mean")[:, neuron]
        counts = top_clip_classes(values, labels.labels, q, labels.n_classes)
        top_class = st.class_name(int(st.top_class[neuron]))
        example = NeuronExample(primary_layer, neuron, top_class, float(st.share_seed[neuron]), values, counts, st)
    return Neurons(q, tuple(sorted(sources)), tuple(levels), tuple(rows), tuple(shares), example, tuple(names))


# --------------------------------------------------------------------------------------------


def compute_report(store, frames_store, labels: Labels, options: ReportOptions, out: Path) -> ReportData:
    """Every section of the report of an open store (``out``: where the report goes, to tell
    whether a reused table already lies there)."""
    layers = tuple(options.layers) if options.layers else tuple(store.layers)
    primary = FeatureSpec.parse(options.primary) if options.primary else default_primary(store)
    primary_X = load_features(store, primary)
    prov = provenance(store, labels, frames_store)

    log.info("report: headline SVM on %s", primary.name)
    nested = cross_validate_svm(primary_X, labels.labels, labels.folds, options.grid, test_folds=labels.test_folds, n_jobs=options.n_jobs)
    seed_run = None
    if options.seed_config:
        seed_run = cross_validate_svm(
            primary_X, labels.labels, labels.folds, SEED_C, solver=Solver.LIBLINEAR,
            test_folds=labels.test_folds, n_jobs=options.n_jobs,
        )  # fmt: skip
    head = headline(primary, nested, seed_run, labels.esc50)
    table = layer_table(store, frames_store, labels, layers, Evaluation(Candidate(primary), nested), options, out)
    conf = confusions(labels, primary, nested, primary_X, options)
    maps = umaps(store, labels, layers, primary, primary_X, options) if options.umap else None
    study = neurons(store, labels, layers, primary.parts[0][0], options.q)
    return ReportData(Path(store.path).name, prov, head, table, conf, maps, study, labels.esc50)
