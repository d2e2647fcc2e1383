"""``soundnet8 report``: one self-contained HTML page of every table and figure of a store.

The page (``DIR/index.html``) links its figures by relative paths (``figures/*.png``) and uses
no external asset (no scripts, fonts or style sheets from elsewhere), so the directory can be
copied, zipped or opened from disk. Beside it: ``table.csv`` / ``table.md`` (the per-layer table)
and ``summary.json`` (the key numbers).
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from soundnet8.engine.stats import DEFAULT_Q

from . import figures
from .data import FeatureSpec, Labels, check_same_clips, load_features, load_labels
from .embedding import UMAP_MAX_ROWS, UMAP_SEED, umap_embedding
from .errors import AnalysisError
from .frames import PAPER_WINDOWS
from .neurons import layer_stats, most_selective, top_clip_classes
from .reference import (
    EXPECTED_RESAMPLED,
    PAPER,
    PAPER_HEADLINE,
    PAPER_TABLE6,
    SEED_C_GRID_ACCURACY,
    SEED_NOTEBOOK,
    SEED_POOL5_FLATTEN,
    SEED_POOL5_MEAN,
)
from .study import (
    CLIP_PROTOCOL,
    Candidate,
    Evaluation,
    ProtocolSelection,
    evaluate,
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
    CVResult,
    Selection,
    Solver,
    class_difficulty,
    confusion_counts,
    cross_validate_svm,
)
from .tables import TableRow, read_csv, write_csv, write_markdown

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
INDEX = "index.html"
PRIMARY_LAYERS = ("pool5", "conv6", "conv7")
"""The headline features: the first of these the store has (mean pooling), as the seed used pool5."""


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
    dpi: int = figures.DPI


@dataclass
class _Page:
    """The page under construction: sections of HTML and the figures they reference."""

    out: Path
    dpi: int = figures.DPI
    sections: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def figure_path(self, name: str) -> Path:
        return self.out / FIGURES_DIR / name

    def img(self, path: Path, caption: str) -> str:
        rel = path.relative_to(self.out).as_posix()
        self.images.append(rel)
        cap = html.escape(caption)
        return f'<figure><img src="{html.escape(rel)}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def _e(text: object) -> str:
    return html.escape(str(text))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Raw(str):
    """Table cell content that is already HTML."""


def _pct(v: float | None, digits: int = 2) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { font-size: .9em; color: #444; background: #f8f8f8; padding: .5em 1em; border-left: 3px solid #bbb; }
code, pre { background: #f4f4f4; } pre { padding: .5em; overflow-x: auto; }
"""


# --------------------------------------------------------------------------------------------
# Sections


def _provenance(page: _Page, store, labels: Labels, frames_store) -> None:
    attrs = store.attrs
    rows = [
        ("store", str(store.path)),
        ("clips", f"{store.n_clips:,}"),
        ("classes", f"{labels.n_classes}" + (" (ESC-50)" if labels.esc50 else "")),
        ("folds", labels.fold_description),
        ("layers / poolings", "; ".join(f"{layer}: {', '.join(store.pools(layer))}" for layer in store.layers)),
        ("frame-level outputs", ", ".join(frames_layers(frames_store or store)) or "none"),
    ]
    if frames_store is not None:
        rows.append(("frames store", str(frames_store.path)))
    for key in sorted(attrs):
        value = attrs[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        rows.append((key, str(value)))
    page.sections.append("<h2>Store and provenance</h2>" + _table(("item", "value"), rows))
    page.summary["store"] = {k: v for k, v in rows}


def _headline(page: _Page, spec: FeatureSpec, nested: CVResult, seed_run: CVResult | None, esc50: bool) -> None:
    folds = [str(f) for f in nested.folds]
    rows = [
        [SELECTION_LABELS[Selection.NESTED], _pct(100 * nested.mean_accuracy)]
        + [_pct(100 * a) for a in nested.fold_accuracy],
        ["C chosen per fold (nested)", ""] + [f"{c:g}" for c in nested.fold_C],
        [f"{SELECTION_LABELS[Selection.TEST_FOLDS]}, C={nested.test_fold_C:g}", _pct(100 * nested.test_fold_accuracy)]
        + [_pct(100 * a) for a in nested.test_fold_fold_accuracy],
    ]
    if seed_run is not None:
        rows.append(
            [f"seed's exact configuration (liblinear, C={SEED_C:g}, max_iter=10000)", _pct(100 * seed_run.mean_accuracy)]
            + [_pct(100 * a) for a in seed_run.fold_accuracy]
        )
    if esc50 and spec.name == "pool5:mean" and len(folds) == len(SEED_FOLD_ACCURACY):
        rows.append(
            [f"{SEED_NOTEBOOK}, its own pool5 features (44.1 kHz fed unresampled)", _pct(SEED_POOL5_MEAN)]
            + [_pct(100 * a) for a in SEED_FOLD_ACCURACY]
        )
    grid_rows = [
        [f"{c:g}", _pct(100 * m), _pct(SEED_C_GRID_ACCURACY.get(c)) if esc50 and spec.name == "pool5:mean" else ""]
        for c, m in zip(nested.grid, nested.grid_mean)
    ]
    expected = EXPECTED_RESAMPLED.get(spec.parts[0]) if len(spec.parts) == 1 else None
    text = (
        f"<h2>Transfer learning: linear SVM on {_e(spec.name)}</h2>"
        "<p>StandardScaler + linear SVM (LinearSVC's problem: squared hinge, L2, one-vs-rest), "
        "trained on all folds but one and tested on it. The honest figure chooses C inside the "
        "training folds; the seed chose it on the test folds.</p>"
        + _table(["", "mean accuracy (%)"] + [f"fold {f}" for f in folds], rows)
        + "<p>Mean test-fold accuracy (%) of each C (what the seed's GridSearchCV compared):</p>"
        + _table(["C", "ours", "seed notebook"], grid_rows)
        + (
            f'<p class="note">Reference (ESC-50): {_e(PAPER)} reports {PAPER_TABLE6["pool5"]:.1f}% for pool5 '
            f"(VGG teacher) and {PAPER_HEADLINE:.1f}% as its best 8-layer result"
            + (f"; with 22,050 Hz preprocessing the project expects about {expected:.0f}% for these features" if expected else "")
            + ".</p>"
            if esc50
            else ""
        )
    )
    page.sections.append(text)
    page.summary["headline"] = {
        "features": spec.name,
        "nested_mean": 100 * nested.mean_accuracy,
        "nested_folds": [100 * a for a in nested.fold_accuracy],
        "nested_C": list(nested.fold_C),
        "test_fold_C": nested.test_fold_C,
        "test_fold_mean": 100 * nested.test_fold_accuracy,
        "seed_config_mean": None if seed_run is None else 100 * seed_run.mean_accuracy,
        "seed_config_folds": None if seed_run is None else [100 * a for a in seed_run.fold_accuracy],
    }


def _layer_table(
    page: _Page, rows: list[TableRow], selection: ProtocolSelection | None, source: str, esc50: bool, saved: Path | None
) -> None:
    if saved is not None and saved.resolve().parent == page.out.resolve():
        csv_name, md_name = saved.name, saved.with_suffix(".md").name  # `analyze table` wrote them here: keep its notes
    else:
        csv_name, md_name = "table.csv", "table.md"
        write_csv(rows, page.out / csv_name)
        write_markdown(rows, page.out / md_name, title="Linear-SVM accuracy by features and protocol")
    header = ["features", "protocol", "dims", "nested accuracy (%)", "C per fold", "C on test folds: accuracy (%)", "paper (%)", "seed (%)"]
    best = max(r.nested_mean for r in rows)
    body = []
    for r in rows:
        acc = f"{r.nested_mean:.2f} ± {r.nested_std:.2f}"
        body.append(
            [
                r.features,
                r.protocol,
                r.dims,
                _Raw(f"<b>{_e(acc)}</b>") if r.nested_mean == best else acc,
                " ".join(f"{c:g}" for c in r.fold_C),
                f"{r.test_fold_mean:.2f} (C={r.test_fold_C:g})",
                _pct(r.paper, 1),
                _pct(r.seed),
            ]
        )
    names = [f"{r.features} [{r.protocol}]" if r.protocol != CLIP_PROTOCOL else r.features for r in rows]
    fig = figures.accuracy_figure(
        names, [r.nested_mean for r in rows], page.figure_path("accuracy_by_features.png"),
        paper=[r.paper for r in rows] if esc50 else None, headline=PAPER_HEADLINE if esc50 else None, dpi=page.dpi,
    )  # fmt: skip
    text = (
        "<h2>Accuracy by layer, pooling and protocol</h2>"
        f"<p>{_e(source)} "
        + (
            f"Paper: {_e(PAPER)}, Table 6 (ESC-50, 8-layer, VGG teacher; conv8 is the layer of both "
            "heads, objects and scenes). "
            if esc50
            else ""
        )
        + f'Files: <a href="{_e(csv_name)}">{_e(csv_name)}</a>, <a href="{_e(md_name)}">{_e(md_name)}</a>.</p>'
        + _table(header, body)
        + page.img(fig, "Nested accuracy of each feature set and protocol, with the paper's Table 6 beside it")
    )
    if selection is not None:
        choice_rows = [[f, c, _pct(100 * a)] for f, c, a in zip(selection.folds, selection.fold_choice, selection.fold_accuracy)]
        text += (
            "<h3>Best protocol, chosen honestly</h3>"
            f"<p>For each test fold, the protocol (of {selection.n_candidates}) whose inner "
            "cross-validation on the training folds scored best, and its accuracy on the test fold: "
            f"<b>{100 * selection.mean_accuracy:.2f}%</b> on average. Chosen on the test folds instead "
            f"(optimistic): {_e(selection.optimistic_choice)}, {100 * selection.optimistic_accuracy:.2f}%. "
            + (f"The paper's best: {PAPER_HEADLINE:.1f}%." if esc50 else "")
            + "</p>"
            + _table(["test fold", "protocol chosen", "accuracy (%)"], choice_rows)
        )
        page.summary["protocol_selection"] = {
            "nested_mean": 100 * selection.mean_accuracy,
            "fold_choice": list(selection.fold_choice),
            "fold_accuracy": [100 * a for a in selection.fold_accuracy],
            "optimistic_choice": selection.optimistic_choice,
            "optimistic_mean": 100 * selection.optimistic_accuracy,
        }
    page.sections.append(text)
    page.summary["table"] = [
        {"features": r.features, "protocol": r.protocol, "nested_mean": r.nested_mean, "test_fold_mean": r.test_fold_mean, "paper": r.paper}
        for r in rows
    ]


def _confusion(page: _Page, labels: Labels, spec: FeatureSpec, result: CVResult, X: np.ndarray, options: ReportOptions):
    counts = confusion_counts(result, labels.n_classes)
    difficulty = class_difficulty(counts)
    names = labels.class_names
    dpi = options.dpi
    conf = figures.confusion_figure(
        counts, names, page.figure_path("confusion.png"),
        title=f"Normalized confusion matrix, {spec.name}, {len(result.folds)} test folds (nested C)", dpi=dpi,
    )  # fmt: skip
    rec = figures.class_recall_figure(difficulty.recall, names, difficulty.easy, difficulty.difficult, page.figure_path("class_recall.png"), dpi=dpi)
    easy = ", ".join(f"{names[i]} ({100 * difficulty.recall[i]:.0f}%)" for i in difficulty.easy)
    hard = ", ".join(f"{names[i]} ({100 * difficulty.recall[i]:.0f}%)" for i in difficulty.difficult)
    text = (
        "<h2>Confusions, easy and difficult classes</h2>"
        f"<p>Out-of-fold predictions of {_e(spec.name)} summed over the test folds; each row "
        "normalised by the class's clips. Easy and difficult classes are read off this matrix: the "
        f"{len(difficulty.easy)} classes with the highest and lowest recall.</p>"
        f"<p><b>Easy:</b> {_e(easy)}<br><b>Difficult:</b> {_e(hard)}</p>"
        + page.img(conf, f"Normalized confusion matrix ({spec.name})")
        + page.img(rec, "Per-class recall; easy classes green, difficult red")
    )
    page.summary["difficulty"] = {
        "easy": [names[i] for i in difficulty.easy],
        "difficult": [names[i] for i in difficulty.difficult],
    }
    if options.umap:
        for kind, classes in (("easy", difficulty.easy), ("difficult", difficulty.difficult)):
            rows = np.flatnonzero(np.isin(labels.labels, classes))
            if rows.size < 3:
                continue
            emb = umap_embedding(X[rows], seed=options.umap_seed, max_rows=options.umap_max_rows, n_epochs=options.umap_epochs)
            groups = np.searchsorted(np.array(sorted(classes)), labels.labels[rows][emb.rows])
            fig = figures.embedding_figure(
                emb.coords, groups, [names[c] for c in sorted(classes)], page.figure_path(f"umap_{kind}.png"),
                title=f"UMAP of the {kind} classes ({spec.name})", note=emb.note(), dpi=dpi,
            )  # fmt: skip
            text += page.img(fig, f"UMAP of the {kind} classes, {spec.name}. {emb.note()}")
    page.sections.append(text)


def _umaps(page: _Page, store, labels: Labels, layers: Sequence[str], primary: FeatureSpec, primary_X, options: ReportOptions) -> None:
    majors = labels.majors
    names = labels.class_names
    dpi = options.dpi
    if majors is not None:
        group_names, per_class = majors
        groups_of_clip = per_class[labels.labels]
        colour = "ESC-50's 5 major categories"
    else:
        group_names, groups_of_clip = list(names), labels.labels
        colour = "class"
    text = (
        "<h2>UMAP of each layer</h2>"
        f"<p>Unsupervised UMAP (cosine metric, seed {options.umap_seed}) of every clip's features, coloured by "
        f"{_e(colour)}. The seed notebook passed the labels to UMAP (<code>UMAP().fit(X, y)</code>, which "
        "is supervised UMAP), so its pictures separated classes partly because they were told the "
        "classes; here the labels only colour the points.</p>"
    )
    for layer in layers:
        pool = "mean" if "mean" in store.pools(layer) else store.pools(layer)[0]
        X = store.features(layer, pool)
        emb = umap_embedding(X, seed=options.umap_seed, max_rows=options.umap_max_rows, n_epochs=options.umap_epochs)
        fig = figures.embedding_figure(
            emb.coords, groups_of_clip[emb.rows], group_names, page.figure_path(f"umap_{layer}_{pool}.png"),
            title=f"UMAP of {layer} ({pool} over time)", note=emb.note(), dpi=dpi,
        )  # fmt: skip
        text += page.img(fig, f"UMAP of {layer}:{pool}, coloured by {colour}. {emb.note()}")
    if majors is not None:
        text += f"<h3>Within each major category ({_e(primary.name)})</h3>"
        for g, major in enumerate(group_names):
            classes = np.flatnonzero(per_class == g)
            rows = np.flatnonzero(np.isin(labels.labels, classes))
            if rows.size < 3:
                continue
            emb = umap_embedding(primary_X[rows], seed=options.umap_seed, max_rows=options.umap_max_rows, n_epochs=options.umap_epochs)
            groups = np.searchsorted(classes, labels.labels[rows][emb.rows])
            slug = "".join(ch if ch.isalnum() else "_" for ch in major.lower()).strip("_")
            fig = figures.embedding_figure(
                emb.coords, groups, [names[c] for c in classes], page.figure_path(f"umap_major_{g}_{slug}.png"),
                title=f"UMAP of {major} ({primary.name})", note=emb.note(), dpi=dpi,
            )  # fmt: skip
            text += page.img(fig, f"UMAP of the classes of {major}. {emb.note()}")
    page.sections.append(text)


def _neurons(page: _Page, store, labels: Labels, layers: Sequence[str], primary_layer: str, options: ReportOptions) -> None:
    q = options.q
    dpi = options.dpi
    names = labels.class_names
    shares, rows, sources = {}, [], set()
    primary_stats = None
    for layer in layers:
        if "mean" not in store.pools(layer):
            continue
        ls = layer_stats(store, layer, "mean", q)
        sources.add(ls.source.value)
        st = ls.stats
        shares[layer] = st.share_seed
        s = st.summary()
        rows.append(
            [layer, st.n_neurons, _pct(s.mean_share_seed, 3), _pct(s.median_share_seed, 3)]
            + list(s.n_above_seed)
            + [", ".join(f"{names[c]} ({n})" for c, n in s.top_classes[:3])]
        )
        if layer == primary_layer:
            primary_stats = st
    if not shares:
        return
    text = (
        "<h2>Neurons and classes</h2>"
        f"<p>A neuron fires on a clip when the clip's value (mean over time) exceeds the neuron's "
        f"{q:g}th percentile over all clips. Share: clips of the neuron's most represented class over "
        f"the expected number of firing clips ({100 - q:g}% of the clips), the seed's measure. "
        f"Statistics {', '.join(sorted(sources))} (<code>soundnet8 stats</code> results are used when the store has them).</p>"
    )
    levels = primary_stats.summary().levels if primary_stats is not None else (0.2, 0.3)
    text += _table(
        ["layer", "neurons", "mean share", "median share"] + [f"neurons with share > {v:g}" for v in levels] + ["most frequent top classes (neurons)"],
        rows,
    )
    if primary_stats is not None:
        st = primary_stats
        neuron = most_selective(st)
        values = store.features(primary_layer, "mean")[:, neuron]
        act = figures.neuron_activation_figure(values, q, page.figure_path(f"neuron_{primary_layer}_{neuron}_activation.png"), neuron=neuron, layer=primary_layer, dpi=dpi)
        counts = top_clip_classes(values, labels.labels, q, labels.n_classes)
        bars = figures.neuron_top_classes_figure(counts, names, page.figure_path(f"neuron_{primary_layer}_{neuron}_classes.png"), neuron=neuron, layer=primary_layer, q=q, dpi=dpi)
        matrix = figures.neuron_class_matrix_figure(st.counts, names, page.figure_path(f"neuron_class_matrix_{primary_layer}.png"), layer=primary_layer, q=q, dpi=dpi)
        text += (
            f"<h3>{_e(primary_layer)}: its most class-selective neuron ({neuron}, top class "
            f"{_e(st.class_name(int(st.top_class[neuron])))}, share {st.share_seed[neuron]:.2f})</h3>"
            + page.img(act, f"Sorted activations of {primary_layer} neuron {neuron} with its {q:g}th percentile")
            + page.img(bars, f"Classes of the clips above neuron {neuron}'s {q:g}th percentile")
            + page.img(matrix, f"{primary_layer}: neuron x class activation counts")
        )
    for layer, s in shares.items():
        fig = figures.top_class_share_figure(s, page.figure_path(f"top_class_share_{layer}.png"), layer=layer, dpi=dpi)
        text += page.img(fig, f"{layer}: most-represented-class share per neuron, sorted")
    depth = figures.share_depth_figure(shares, page.figure_path("top_class_share_depth.png"), dpi=dpi)
    text += page.img(depth, "Most-represented-class share per neuron across depth")
    page.sections.append(text)


def _references(page: _Page) -> None:
    rows = [[layer, f"{acc:.1f}"] for layer, acc in PAPER_TABLE6.items()]
    text = (
        "<h2>Reference numbers</h2>"
        f"<p>{_e(PAPER)}, Table 6 (ESC-50, linear SVM, 8-layer network, VGG teacher); its best "
        f"8-layer ESC-50 result is {PAPER_HEADLINE:.1f}% (pool5, AlexNet teacher).</p>"
        + _table(["layer", "accuracy (%)"], rows)
        + f"<p>{_e(SEED_NOTEBOOK)}: pool5 mean {SEED_POOL5_MEAN:.2f}% (C=0.1 chosen on the test folds; "
        f"its features came from 44.1 kHz audio given unresampled to the 22,050 Hz model); pool5 frames "
        f"flattened {SEED_POOL5_FLATTEN:.0f}%.</p>"
    )
    page.sections.append(text)


# --------------------------------------------------------------------------------------------


def _saved_selection(path: Path) -> ProtocolSelection | None:
    """The honest protocol choice saved beside a table by ``soundnet8 analyze table``, if any."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text()).get("protocol_selection")
    if not saved:
        return None
    return ProtocolSelection(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def default_primary(store) -> FeatureSpec:
    for layer in PRIMARY_LAYERS:
        if layer in store.layers and "mean" in store.pools(layer):
            return FeatureSpec.of(layer, "mean")
    layer = store.layers[0]
    return FeatureSpec.of(layer, store.pools(layer)[0])


def frame_candidates(store, frames_store) -> list[Candidate]:
    """Flatten versus mean and the paper's windows, for pool5 (else the first framed layer)."""
    framed = frames_layers(frames_store or store)
    if not framed:
        return []
    layer = "pool5" if "pool5" in framed else framed[0]
    spec = FeatureSpec.of(layer, "mean")
    out = [Candidate(spec, flatten=True)]
    try:
        from .frames import layer_frame_rate

        layer_frame_rate(layer)
    except AnalysisError:
        return out  # a layer without a known frame rate: no time-based windows
    out.append(Candidate(spec, crops=PAPER_WINDOWS))
    return out


def build_report(
    store_path: str | Path,
    out_dir: str | Path,
    *,
    frames_store_path: str | Path | None = None,
    options: ReportOptions = ReportOptions(),
    labels: Labels | None = None,
) -> Path:
    """Compute everything and write ``out_dir/index.html``; returns its path."""
    from soundnet8.engine.store import FeatureStore

    started = time.perf_counter()
    out = Path(out_dir)
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    page = _Page(out, dpi=options.dpi)
    with FeatureStore(store_path) as store:
        frames_store = FeatureStore(frames_store_path) if frames_store_path is not None else None
        try:
            if frames_store is not None:
                check_same_clips(store, frames_store)
            labels = labels or load_labels(store)
            layers = tuple(options.layers) if options.layers else tuple(store.layers)
            primary = FeatureSpec.parse(options.primary) if options.primary else default_primary(store)
            primary_X = load_features(store, primary)
            _provenance(page, store, labels, frames_store)

            log.info("report: headline SVM on %s", primary.name)
            nested = cross_validate_svm(primary_X, labels.labels, labels.folds, options.grid, test_folds=labels.test_folds, n_jobs=options.n_jobs)
            seed_run = None
            if options.seed_config:
                seed_run = cross_validate_svm(
                    primary_X, labels.labels, labels.folds, SEED_C, solver=Solver.LIBLINEAR,
                    test_folds=labels.test_folds, n_jobs=options.n_jobs,
                )  # fmt: skip
            _headline(page, primary, nested, seed_run, labels.esc50)

            selection = None
            if options.table_csv is not None:
                rows = read_csv(options.table_csv)
                selection = _saved_selection(Path(options.table_csv).with_name("table.json"))
                source = f"Read from {Path(options.table_csv).name} (written by soundnet8 analyze table)."
            else:
                candidates = layer_candidates(store, layers)
                if options.frame_protocols:
                    candidates += frame_candidates(store, frames_store)
                if options.study:
                    candidates += study_candidates(store, frames_store)
                candidates = unique_candidates(candidates)
                evaluations: list[Evaluation] = []
                for c in candidates:
                    if c == Candidate(primary):
                        evaluations.append(Evaluation(c, nested))  # already computed
                        continue
                    log.info("report: evaluating %s", c.name)
                    evaluations.append(evaluate(c, store, labels, frames_store=frames_store, grid=options.grid, n_jobs=options.n_jobs))
                rows = [e.row(esc50_references=labels.esc50) for e in evaluations]
                selection = select_protocol(evaluations) if options.study else None
                source = "Computed for this report."
            _layer_table(page, rows, selection, source, labels.esc50, options.table_csv)

            _confusion(page, labels, primary, nested, primary_X, options)
            if options.umap:
                _umaps(page, store, labels, layers, primary, primary_X, options)
            _neurons(page, store, labels, layers, primary.parts[0][0], options)
            if labels.esc50:
                _references(page)
        finally:
            if frames_store is not None:
                frames_store.close()
    page.summary["seconds"] = time.perf_counter() - started
    page.summary["figures"] = list(page.images)
    (out / "summary.json").write_text(json.dumps(page.summary, indent=2, default=_json_default))
    index = out / INDEX
    index.write_text(_html(page, Path(store_path).name))
    return index


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def _html(page: _Page, store_name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("soundnet8")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ver = "unknown"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>SoundNet8 analysis: {_e(store_name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>SoundNet8 analysis: {_e(store_name)}</h1>"
        f"<p>Generated by soundnet8 {_e(ver)} on {_e(when)}.</p>"
        + "\n".join(page.sections)
        + "</body></html>\n"
    )

