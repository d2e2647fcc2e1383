"""Every figure function writes a valid PNG of the stated pixel size; UMAP embeds and subsamples."""

from __future__ import annotations

import numpy as np
import pytest

from soundnet8.analysis import figures
from soundnet8.analysis.errors import AnalysisError
from soundnet8.analysis.esc50 import ESC50_CLASSES
from soundnet8.analysis.neurons import array_stats, top_clip_classes

DPI = 50  # small images keep the tests fast; size = figsize inches x DPI


def _check(path, size_inches, dpi=DPI):
    assert path.exists() and path.stat().st_size > 0
    assert figures.png_size(path) == (round(size_inches[0] * dpi), round(size_inches[1] * dpi))


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


def test_accuracy_figure(tmp_path):
    path = figures.accuracy_figure(["pool5:mean", "conv6:mean"], [70.0, 72.6], tmp_path / "a.png", paper=[72.9, None], headline=74.2, figsize=(8, 4), dpi=DPI)
    _check(path, (8, 4))


def test_embedding_figure(tmp_path, data):
    _, y, names = data
    coords = np.random.default_rng(1).standard_normal((y.size, 2))
    path = figures.embedding_figure(coords, y % 5, ["a", "b", "c", "d", "e"], tmp_path / "e.png", title="t", note="n", figsize=(10, 8), dpi=DPI)
    _check(path, (10, 8))
    with pytest.raises(AnalysisError, match=r"\(n, 2\)"):
        figures.embedding_figure(coords[:, :1], y, names, tmp_path / "x.png", title="t")


def test_neuron_figures(tmp_path, data):
    X, y, names = data
    stats = array_stats(X, y, q=95, class_names=names, layer="pool5")
    neuron = 3
    act = figures.neuron_activation_figure(X[:, neuron], 95, tmp_path / "act.png", neuron=neuron, layer="pool5", figsize=(7, 4.5), dpi=DPI)
    _check(act, (7, 4.5))
    counts = top_clip_classes(X[:, neuron], y, 95, len(names))
    np.testing.assert_array_equal(counts, stats.counts[neuron])  # the engine's exact statistics agree
    bars = figures.neuron_top_classes_figure(counts, names, tmp_path / "bars.png", neuron=neuron, layer="pool5", q=95, figsize=(6, 5), dpi=DPI)
    _check(bars, (6, 5))
    matrix = figures.neuron_class_matrix_figure(stats.counts, names, tmp_path / "m.png", layer="pool5", q=95, figsize=(12, 6), dpi=DPI)
    _check(matrix, (12, 6))
    share = figures.top_class_share_figure(stats.share_seed, tmp_path / "s.png", layer="pool5", figsize=(7, 4.5), dpi=DPI)
    _check(share, (7, 4.5))
    depth = figures.share_depth_figure({"pool5": stats.share_seed, "conv6": stats.share_seed[::2]}, tmp_path / "depth.png", figsize=(8, 5), dpi=DPI)
    _check(depth, (8, 5))


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
