"""Every figure function writes a valid PNG of the stated pixel size that is not blank where the data
goes, and draws what it is given (the labelled classes, bars, points and lines, read from the
matplotlib figure it returns); UMAP embeds and subsamples."""

from __future__ import annotations

import numpy as np
import pytest

from soundnet8.analysis import figures
from soundnet8.analysis.errors import AnalysisError
from soundnet8.analysis.esc50 import ESC50_CLASSES
from soundnet8.analysis.neurons import array_stats, top_clip_classes

DPI = 50  # small images keep the tests fast; size = figsize inches x DPI


def _check(saved, size_inches, dpi=DPI):
    path = saved.path
    assert path.exists() and path.stat().st_size > 0
    assert figures.png_size(path) == (round(size_inches[0] * dpi), round(size_inches[1] * dpi))
    assert _data_area_spread(saved) > 0.01, f"{path.name}: nothing drawn inside the axes"


def _data_area_spread(saved, ax=None) -> float:
    """Standard deviation of the PNG's grey levels inside the (first) axes, frame excluded: 0 for
    an axes left empty, well above 0 once bars, points, lines or an image are drawn there."""
    from matplotlib.image import imread

    pixels = imread(saved.path)[..., :3].mean(axis=2)
    box = (ax or saved.figure.axes[0]).get_window_extent()
    height = pixels.shape[0]
    inside = pixels[height - int(box.y1) + 3: height - int(box.y0) - 3, int(box.x0) + 3: int(box.x1) - 3]
    assert inside.size > 100
    return float(inside.std())


def _labels(texts) -> list[str]:
    return [t.get_text() for t in texts]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    k, n = 12, 240
    y = np.repeat(np.arange(k), n // k)
    X = np.maximum(rng.standard_normal((n, 20)) + np.eye(k, 20)[y] * 3, 0).astype(np.float32)
    names = list(ESC50_CLASSES[:k])
    return X, y, names


def test_confusion_figure(tmp_path, data):
    _, y, names = data
    counts = np.diag(np.bincount(y)) + 1
    path = figures.confusion_figure(counts, names, tmp_path / "c.png", figsize=(8, 7), dpi=DPI)
    _check(path, (8, 7))
    ax = path.figure.axes[0]
    assert _labels(ax.get_xticklabels()) == names and _labels(ax.get_yticklabels()) == names
    shown = np.asarray(ax.images[0].get_array())
    assert shown.shape == (len(names), len(names)) and np.allclose(shown.sum(axis=1), 1.0)
    default = figures.confusion_figure(counts, names, tmp_path / "d.png", dpi=DPI)
    side = max(6.0, 3.0 + figures.NAME_INCHES * len(names))  # grows with the class count
    _check(default, (side + 1.0, side))
    with pytest.raises(AnalysisError, match="disagree"):
        figures.confusion_figure(counts, names[:-1], tmp_path / "x.png")


def test_class_recall_figure(tmp_path, data):
    _, _, names = data
    recall = np.linspace(0.1, 1.0, len(names))
    path = figures.class_recall_figure(recall, names, [11, 10], [0, 1], tmp_path / "r.png", figsize=(9, 6), dpi=DPI)
    _check(path, (9, 6))
    ax = path.figure.axes[0]
    assert [bar.get_width() for bar in ax.patches] == pytest.approx(sorted(recall))
    assert _labels(ax.get_yticklabels()) == names  # recall rises with the index: sorted order is the given one


def test_accuracy_figure(tmp_path):
    path = figures.accuracy_figure(["pool5:mean", "conv6:mean"], [70.0, 72.6], tmp_path / "a.png", paper=[72.9, None], headline=74.2, figsize=(8, 4), dpi=DPI)
    _check(path, (8, 4))
    ax = path.figure.axes[0]
    assert _labels(ax.get_yticklabels()) == ["pool5:mean", "conv6:mean"]
    assert [bar.get_width() for bar in ax.patches] == pytest.approx([70.0, 72.6, 72.9, 0.0])  # ours, then the paper's
    assert [line.get_xdata()[0] for line in ax.lines] == [74.2]


def test_embedding_figure(tmp_path, data):
    _, y, names = data
    coords = np.random.default_rng(1).standard_normal((y.size, 2))
    path = figures.embedding_figure(coords, y % 5, ["a", "b", "c", "d", "e"], tmp_path / "e.png", title="t", note="n", figsize=(10, 8), dpi=DPI)
    _check(path, (10, 8))
    ax = path.figure.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == y.size  # every point drawn
    assert _labels(ax.get_legend().get_texts()) == ["a", "b", "c", "d", "e"]
    two = figures.embedding_figure(coords, (y >= 6).astype(int), ["x", "y", "z"], tmp_path / "e2.png", title="t", dpi=DPI)
    assert _labels(two.figure.axes[0].get_legend().get_texts()) == ["x", "y"]  # absent groups unnamed
    with pytest.raises(AnalysisError, match=r"\(n, 2\)"):
        figures.embedding_figure(coords[:, :1], y, names, tmp_path / "x.png", title="t")


def test_neuron_figures(tmp_path, data):
    X, y, names = data
    stats = array_stats(X, y, q=95, class_names=names, layer="pool5")
    neuron = 3
    act = figures.neuron_activation_figure(X[:, neuron], 95, tmp_path / "act.png", neuron=neuron, layer="pool5", figsize=(7, 4.5), dpi=DPI)
    _check(act, (7, 4.5))
    np.testing.assert_array_equal(act.figure.axes[0].lines[0].get_ydata(), np.sort(X[:, neuron]))
    counts = top_clip_classes(X[:, neuron], y, 95, len(names))
    np.testing.assert_array_equal(counts, stats.counts[neuron])  # the engine's exact statistics agree
    bars = figures.neuron_top_classes_figure(counts, names, tmp_path / "bars.png", neuron=neuron, layer="pool5", q=95, figsize=(6, 5), dpi=DPI)
    _check(bars, (6, 5))
    ax = bars.figure.axes[0]
    shown = [k for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    assert _labels(ax.get_xticklabels()) == [names[k] for k in shown]
    assert [bar.get_height() for bar in ax.patches] == [counts[k] for k in shown]
    matrix = figures.neuron_class_matrix_figure(stats.counts, names, tmp_path / "m.png", layer="pool5", q=95, figsize=(12, 6), dpi=DPI)
    _check(matrix, (12, 6))
    ax = matrix.figure.axes[0]
    assert _labels(ax.get_yticklabels()) == names
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), stats.counts.T)
    share = figures.top_class_share_figure(stats.share_seed, tmp_path / "s.png", layer="pool5", figsize=(7, 4.5), dpi=DPI)
    _check(share, (7, 4.5))
    np.testing.assert_array_equal(share.figure.axes[0].lines[0].get_ydata(), np.sort(stats.share_seed[~np.isnan(stats.share_seed)]))
    depth = figures.share_depth_figure({"pool5": stats.share_seed, "conv6": stats.share_seed[::2]}, tmp_path / "depth.png", figsize=(8, 5), dpi=DPI)
    _check(depth, (8, 5))
    ax = depth.figure.axes[0]
    assert [line.get_label() for line in ax.lines] == ["pool5", "conv6"]
    assert [len(line.get_xdata()) for line in ax.lines] == [20, 10]
    assert _labels(ax.get_legend().get_texts()) == ["pool5", "conv6"]


def test_png_size_rejects_other_files(tmp_path):
    other = tmp_path / "x.png"
    other.write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(AnalysisError, match="not a PNG"):
        figures.png_size(other)


def test_umap_embedding_and_seeded_subsample(data):
    from soundnet8.analysis.embedding import umap_embedding

    X, _, _ = data
    full = umap_embedding(X[:60], n_epochs=50)
    assert full.coords.shape == (60, 2) and np.isfinite(full.coords).all() and not full.subsampled
    sub = umap_embedding(X, max_rows=50, seed=3, n_epochs=50)
    again = umap_embedding(X, max_rows=50, seed=3, n_epochs=50)
    assert sub.subsampled and sub.rows.size == 50 and "50 of 240" in sub.note()
    np.testing.assert_array_equal(sub.rows, again.rows)
    np.testing.assert_allclose(sub.coords, again.coords)  # a seed makes UMAP deterministic
