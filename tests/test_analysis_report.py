"""``soundnet8 report``: a complete, self-contained page whose every image exists, and whose numbers
are those the analysis API computes from the store (recomputed here, not copied from the report)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from soundnet8.analysis.esc50 import ESC50_CLASSES, ESC50_MAJOR_CATEGORIES
from soundnet8.analysis.figures import png_size
from soundnet8.analysis.report import ReportOptions, build_report
from soundnet8.analysis.svm import SELECTION_LABELS, Selection, cross_validate_svm
from soundnet8.engine.cli import main
from soundnet8.engine.store import FeatureStore, write_arrays

from .conftest import SEED_FEATURES, requires_shared
from .synthetic_store import synthetic_clips, write_synthetic_store

FAST_UMAP_EPOCHS = 50  # layouts need not be pretty in tests, only produced


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self.external: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag in ("h2", "h3"):
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_heading:
            self.headings[-1] += data


def parse_report(index: Path) -> _Page:
    """Parse the page; check every image and link is a relative path to an existing file."""
    page = _Page()
    page.feed(index.read_text())
    assert page.images, "the page has no images"
    assert not page.external, f"external/active content: {page.external}"
    for ref in page.images + page.links:
        assert "://" not in ref and not ref.startswith("/"), f"non-relative reference {ref}"
        target = index.parent / ref
        assert target.is_file(), f"{ref} is referenced but missing"
    for ref in page.images:
        w, h = png_size(index.parent / ref)
        assert w > 100 and h > 100
    return page


@pytest.fixture(scope="module")
def esc50_like_store(tmp_path_factory):
    """10 ESC-50 classes (2 per major category) with ESC-50's manifest columns, and frames."""
    targets = [0, 1, 10, 11, 20, 21, 30, 31, 40, 41]
    clips = synthetic_clips(n_classes=10, per_class=10, class_names=[ESC50_CLASSES[t] for t in targets], noise=2.0, seed=2)
    n = clips.labels.size
    meta = {"esc10": [True] * n, "src_file": [str(i) for i in range(n)], "take": ["A"] * n}
    path = tmp_path_factory.mktemp("esc") / "esc50_like.h5"
    return write_synthetic_store(path, clips, meta=meta, provider="cpu", weights_sha256="abc123")


def test_report_is_complete_and_self_contained(esc50_like_store, tmp_path):
    options = ReportOptions(grid=(0.01, 1.0), study=True, umap_epochs=FAST_UMAP_EPOCHS, dpi=40)
    index = build_report(esc50_like_store, tmp_path / "report", options=options)
    page = parse_report(index)
    text = index.read_text()
    names = {Path(i).name for i in page.images}
    # every figure kind of the issue
    assert {"confusion.png", "class_recall.png", "umap_easy.png", "umap_difficult.png", "accuracy_by_features.png"} <= names
    assert {"umap_pool5_mean.png", "umap_conv6_mean.png", "top_class_share_depth.png", "neuron_class_matrix_pool5.png"} <= names
    assert sum(n.startswith("umap_major_") for n in names) == len(ESC50_MAJOR_CATEGORIES)
    assert any(n.endswith("_activation.png") for n in names) and any(n.endswith("_classes.png") for n in names)
    # tables, provenance and the references
    for heading in ("Store and provenance", "Transfer learning", "Accuracy by layer", "Best protocol, chosen honestly", "Confusions", "UMAP of each layer", "Neurons and classes", "Reference numbers"):
        assert any(h.startswith(heading) for h in page.headings), heading
    assert "abc123" in text and "(ESC-50)" in text and "Animals" in text
    assert "72.9" in text and "74.2" in text and "71.95" in text
    assert "paper 1 s windows over 10 s" in text and "frames flattened" in text
    summary = json.loads((index.parent / "summary.json").read_text())
    assert set(summary["figures"]) == set(page.images)
    assert 0 <= summary["headline"]["nested_mean"] <= 100
    assert summary["protocol_selection"]["nested_mean"] == pytest.approx(np.mean(summary["protocol_selection"]["fold_accuracy"]))
    assert (index.parent / "table.csv").read_text().count("\n") == len(summary["table"]) + 1
    _check_numbers_against_the_store(esc50_like_store, text, summary, grid=(0.01, 1.0))


def _check_numbers_against_the_store(store_path: Path, html: str, summary: dict, grid) -> None:
    """The page's headline row, its per-fold C and the class count equal a recomputation from the
    store's own features, labels and folds with the analysis API (the report's default primary
    features, pool5 mean), formatted as the page formats percentages (2 decimals)."""
    with FeatureStore(store_path) as fs:
        X, y, folds, n_clips = fs.features("pool5", "mean"), fs.labels, fs.folds, fs.n_clips
    nested = cross_validate_svm(X, y, folds, grid)
    cells = [f"{100 * nested.mean_accuracy:.2f}"] + [f"{100 * a:.2f}" for a in nested.fold_accuracy]
    row = f"<tr><td>{SELECTION_LABELS[Selection.NESTED]}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    assert row in html, row
    c_row = "<tr><td>C chosen per fold (nested)</td><td></td>" + "".join(f"<td>{c:g}</td>" for c in nested.fold_C)
    assert c_row in html, c_row
    assert summary["headline"]["nested_mean"] == pytest.approx(100 * nested.mean_accuracy)
    assert summary["headline"]["nested_folds"] == pytest.approx([100 * a for a in nested.fold_accuracy])
    assert summary["headline"]["nested_C"] == list(nested.fold_C)
    assert 0 < nested.mean_accuracy < 1 and nested.n_clips == n_clips


def test_report_command_on_a_generic_dataset(tmp_path):
    """Not ESC-50: no major categories, no paper numbers beside ours, folds made and stated."""
    clips = synthetic_clips(n_classes=3, per_class=12, layers={"pool5": 8}, noise=1.5, seed=4)
    path = write_arrays(
        tmp_path / "generic.h5", paths=list(clips.paths), features=clips.features, labels=clips.labels,
        class_names=["alpha", "beta", "gamma"],
    )  # fmt: skip
    out = tmp_path / "out"
    code = main(["report", str(path), "-o", str(out), "--C", "0.01", "1", "--no-seed-config", "--umap-max-rows", "30"])
    assert code == 0
    page = parse_report(out / "index.html")
    text = (out / "index.html").read_text()
    assert not any(Path(i).name.startswith("umap_major_") for i in page.images)
    assert "stratified 5-fold split of the clips, seed 0" in text
    assert "random subsample of 30 of 36 rows" in text
    table = (out / "table.csv").read_text().splitlines()
    assert all(line.split(",")[10] == "" for line in table[1:])  # no paper column for another dataset


@requires_shared(SEED_FEATURES)
@pytest.mark.slow
def test_report_on_the_seed_esc50_features(tmp_path):
    """The shared ESC-50 (the seed's 2000 pool5 rows as a store): a complete page."""
    X = np.load(SEED_FEATURES / "X.npy")
    y = np.load(SEED_FEATURES / "y.npy")
    path = write_arrays(
        tmp_path / "seed.h5", paths=[f"seed/{i:04d}" for i in range(X.shape[0])], features={"pool5": {"mean": X}},
        labels=y, folds=np.arange(X.shape[0]) // 400 + 1, class_names=list(ESC50_CLASSES),
        attrs={"preprocessing": {"note": "seed notebook features"}},
    )  # fmt: skip
    options = ReportOptions(grid=(0.01, 0.1), seed_config=False, n_jobs=2, umap_epochs=FAST_UMAP_EPOCHS, dpi=40)
    index = build_report(path, tmp_path / "report", options=options)
    page = parse_report(index)
    assert sum(Path(i).name.startswith("umap_major_") for i in page.images) == 5
    summary = json.loads((index.parent / "summary.json").read_text())
    # the seed's C=0.1 is in the grid: the optimistic choice reproduces its 71.95
    assert summary["headline"]["test_fold_mean"] == pytest.approx(71.95, abs=0.25)
    assert len(summary["difficulty"]["easy"]) == 5 and len(summary["difficulty"]["difficult"]) == 5


def test_report_reuses_a_saved_table(esc50_like_store, tmp_path):
    """`analyze table` then `report --table`: the page shows the saved rows and protocol choice."""
    table = tmp_path / "table"
    assert main(["analyze", "table", str(esc50_like_store), "-o", str(table), "--C", "0.01", "1", "--layers", "conv6", "--study"]) == 0
    out = tmp_path / "report"
    code = main(["report", str(esc50_like_store), "-o", str(out), "--table", str(table / "table.csv"), "--C", "0.01", "1", "--no-umap", "--no-seed-config"])
    assert code == 0
    page = parse_report(out / "index.html")
    assert any(h.startswith("Best protocol, chosen honestly") for h in page.headings)
    assert (out / "table.csv").read_text() == (table / "table.csv").read_text()
    assert not any("umap" in i for i in page.images)
    # the report written into the table's own directory links the table files and keeps their notes
    notes = (table / "table.md").read_text()
    assert main(["report", str(esc50_like_store), "-o", str(table), "--table", str(table / "table.csv"), "--C", "0.01", "1", "--no-umap", "--no-seed-config"]) == 0
    parse_report(table / "index.html")
    assert (table / "table.md").read_text() == notes and "Best protocol chosen honestly" in notes


def test_report_page_escapes_what_the_store_holds(tmp_path):
    """Store attributes and class names reach the page as text, never as markup."""
    clips = synthetic_clips(n_classes=3, per_class=6, layers={"pool5": 8}, class_names=["a<b", "c&d", "e"], seed=5)
    path = write_synthetic_store(tmp_path / "odd.h5", clips, with_frames=False, note="<script>alert(1)</script>")
    options = ReportOptions(grid=(0.1,), seed_config=False, umap=False, frame_protocols=False, dpi=40)
    index = build_report(path, tmp_path / "report", options=options)
    page = parse_report(index)
    text = index.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a&lt;b" in text and "c&amp;d" in text
    assert any(h.startswith("Neurons and classes") for h in page.headings)
    assert not any(h.startswith("UMAP of each layer") for h in page.headings)
