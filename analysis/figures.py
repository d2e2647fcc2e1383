"""The report's figures, one function each: data in, a PNG of a stated pixel size out.

matplotlib is imported inside the functions (it is optional for everything else) and used
through ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot state, no display needed.
Each PNG is exactly ``figsize * dpi`` pixels (no tight bounding box), so callers and tests know
its size; long class-name axes grow the default figsize with the number of classes. Each function
returns a :class:`SavedFigure`: the PNG's path and the drawn matplotlib figure, whose artists (tick
labels, bars, points) say what the image shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AnalysisError

DPI = 100
"""Pixels per inch of every figure (a 10 x 8 inch figure is 1000 x 800 pixels)."""

NAME_INCHES = 0.22
"""Axis length per class name on class-labelled axes, so 50 names stay readable."""

MAX_INCHES = 30.0
"""Largest side of any figure (3000 pixels at 100 dpi), whatever the number of classes."""

MAX_NAMED = 80
"""Class-labelled axes name at most this many classes; beyond, names would not be readable."""

MAX_BARS = 40
"""Bars shown in a neuron's class histogram (its most frequent classes)."""

MIN_CATEGORICAL = 10  # up to this many groups: tab10; more: tab20, then a continuous colour map


@dataclass(frozen=True, eq=False)
class SavedFigure:
    """A figure written as a PNG: ``path`` and the matplotlib ``figure`` drawn (a path-like)."""

    path: Path
    figure: Any  # matplotlib.figure.Figure (matplotlib is imported lazily)

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def _figure(figsize: tuple[float, float], dpi: int):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def _save(fig, path: str | Path, dpi: int) -> SavedFigure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return SavedFigure(path, fig)


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels read from a PNG's header; raises unless it is a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise AnalysisError(f"{path}: not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _colors(n: int):
    from matplotlib import colormaps

    if n <= MIN_CATEGORICAL:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


def _name_size(n: int) -> float:
    """Tick-label font size for n class names: smaller for many names, never below 6 pt."""
    return float(np.clip(14 - n / 8, 6, 11))


# --------------------------------------------------------------------------------------------
# Classification


def confusion_figure(
    counts: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "Normalized confusion matrix",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> SavedFigure:
    """Row-normalised confusion matrix (each true class sums to 1), class names on both axes."""
    counts = np.asarray(counts, np.float64)
    k = counts.shape[0]
    if counts.shape != (k, k) or len(class_names) != k:
        raise AnalysisError(f"confusion matrix {counts.shape} and {len(class_names)} class names disagree")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = min(MAX_INCHES - 1.0, max(6.0, 3.0 + NAME_INCHES * k))
    fig = _figure(figsize or (side + 1.0, side), dpi)
    ax = fig.add_axes((0.2, 0.2, 0.68, 0.72))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    size = _name_size(k)
    if k <= MAX_NAMED:
        ax.set_xticks(range(k), labels=class_names, rotation=90, fontsize=size)
        ax.set_yticks(range(k), labels=class_names, fontsize=size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 20:  # values are readable only on small matrices
        for i in range(k):
            for j in range(k):
                if share[i, j] > 0:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=size - 1, color=color)
    cax = fig.add_axes((0.9, 0.2, 0.02, 0.72))
    fig.colorbar(image, cax=cax, label="share of the true class")
    return _save(fig, path, dpi)


def class_recall_figure(
    recall: np.ndarray,
    class_names: Sequence[str],
    easy: Sequence[int],
    difficult: Sequence[int],
    path: str | Path,
    *,
    title: str = "Per-class recall (easy and difficult classes)",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> SavedFigure:
    """Recall of every class, sorted, with the easy and difficult ones coloured."""
    recall = np.asarray(recall, np.float64)
    k = recall.size
    if len(class_names) != k:
        raise AnalysisError(f"{k} recalls but {len(class_names)} class names")
    order = np.argsort(np.where(np.isnan(recall), -1.0, recall), kind="stable")
    fig = _figure(figsize or (9.0, min(MAX_INCHES, max(4.0, 1.5 + NAME_INCHES * k))), dpi)
    ax = fig.add_axes((0.3, 0.08, 0.65, 0.86))
    colors = ["tab:green" if i in easy else "tab:red" if i in difficult else "tab:gray" for i in order]
    ax.barh(range(k), np.nan_to_num(recall[order]), color=colors)
    if k <= MAX_NAMED:
        ax.set_yticks(range(k), labels=[class_names[i] for i in order], fontsize=_name_size(k))
    else:
        ax.set_ylabel(f"{k} classes, sorted by recall")
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (share of the class's clips classified correctly)")
    ax.set_title(title)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color="tab:green", label="easy"), Patch(color="tab:red", label="difficult")],
        loc="lower right",
    )
    return _save(fig, path, dpi)


def accuracy_figure(
    names: Sequence[str],
    ours: Sequence[float],
    path: str | Path,
    *,
    paper: Sequence[float | None] | None = None,
    headline: float | None = None,
    title: str = "Linear-SVM accuracy by feature set",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> SavedFigure:
    """Horizontal bars of our accuracies (%) with the paper's beside them where it has one."""
    n = len(names)
    if len(ours) != n or (paper is not None and len(paper) != n):
        raise AnalysisError("names, ours and paper must have the same length")
    fig = _figure(figsize or (11.0, min(MAX_INCHES, max(3.5, 1.5 + 0.32 * n))), dpi)
    ax = fig.add_axes((0.4, 0.06, 0.56, 0.9))
    y = np.arange(n)
    ax.barh(y, ours, height=0.4, color="tab:blue", label="ours (nested C)")
    if paper is not None:
        values = np.array([np.nan if v is None else v for v in paper], np.float64)
        ax.barh(y + 0.4, np.nan_to_num(values), height=0.4, color="tab:orange", label="paper, Table 6")
    if headline is not None:
        ax.axvline(headline, color="black", linestyle="--", label=f"paper's best ({headline:.1f}%)")
    ax.set_yticks(y + (0.2 if paper is not None else 0), labels=list(names), fontsize=_name_size(n))
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------------------------
# Embeddings


def embedding_figure(
    coords: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    path: str | Path,
    *,
    title: str,
    note: str | None = None,
    figsize: tuple[float, float] = (10.0, 8.0),
    dpi: int = DPI,
) -> SavedFigure:
    """2-D points coloured by group (e.g. ESC-50 major category), legend outside the plot."""
    coords = np.asarray(coords)
    groups = np.asarray(groups)
    if coords.ndim != 2 or coords.shape[1] != 2 or groups.shape != (coords.shape[0],):
        raise AnalysisError(f"need (n, 2) coordinates and (n,) groups, got {coords.shape} and {groups.shape}")
    present = [g for g in range(len(group_names)) if np.any(groups == g)]
    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.04, 0.08, 0.56, 0.84))
    colors = _colors(len(group_names))
    size = float(np.clip(3000 / max(coords.shape[0], 1), 2, 30))
    for g in present:
        pts = coords[groups == g]
        ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colors[g], label=str(group_names[g]), alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(present) <= MAX_NAMED:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=_name_size(len(present)), markerscale=2, frameon=False)
    if note:
        fig.text(0.05, 0.02, note, fontsize=8, color="dimgray")
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------------------------
# Neurons


def neuron_activation_figure(
    values: np.ndarray,
    q: float,
    path: str | Path,
    *,
    neuron: int,
    layer: str,
    figsize: tuple[float, float] = (7.0, 4.5),
    dpi: int = DPI,
) -> SavedFigure:
    """A neuron's activations over all clips, sorted, with its q-th percentile marked."""
    values = np.sort(np.asarray(values, np.float64))
    if values.ndim != 1 or values.size == 0:
        raise AnalysisError("a neuron's activations must be a non-empty 1-D array")
    threshold = float(np.percentile(values, q))
    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.12, 0.13, 0.83, 0.77))
    ax.plot(np.linspace(0.0, 1.0, values.size), values, color="tab:blue")
    ax.axvline(q / 100.0, color="tab:red", linestyle="--", label=f"{q:g}th percentile")
    ax.axhline(threshold, color="tab:red", linestyle=":", linewidth=1, label=f"threshold {threshold:.3g}")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("fraction of clips (sorted by activation)")
    ax.set_ylabel("activation (mean over time)")
    ax.set_title(f"{layer}: activation of neuron {neuron}")
    ax.legend(loc="upper left")
    return _save(fig, path, dpi)


def neuron_top_classes_figure(
    class_counts: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    neuron: int,
    layer: str,
    q: float,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> SavedFigure:
    """Classes of the clips above a neuron's q-th percentile (classes with none are left out)."""
    class_counts = np.asarray(class_counts)
    if class_counts.shape != (len(class_names),):
        raise AnalysisError(f"{class_counts.shape} class counts for {len(class_names)} class names")
    shown = np.flatnonzero(class_counts > 0)
    shown = shown[np.lexsort((shown, -class_counts[shown]))][:MAX_BARS]
    fig = _figure(figsize or (max(6.0, 2.0 + 0.3 * shown.size), 5.0), dpi)
    ax = fig.add_axes((0.1, 0.35, 0.86, 0.57))
    ax.bar(range(shown.size), class_counts[shown], color="tab:blue")
    ax.set_xticks(range(shown.size), labels=[class_names[i] for i in shown], rotation=90, fontsize=_name_size(shown.size))
    ax.set_ylabel("clips")
    total = int(class_counts.sum())
    ax.set_title(f"{layer}, neuron {neuron}: classes of its top {100 - q:g}% clips ({total} clips)")
    return _save(fig, path, dpi)


def neuron_class_matrix_figure(
    counts: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    layer: str,
    q: float,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> SavedFigure:
    """Activations of each neuron (columns) by each class (rows): the seed's ``matshow(stats.T)``."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != len(class_names):
        raise AnalysisError(f"counts {counts.shape} must be (neurons, {len(class_names)})")
    c, k = counts.shape
    fig = _figure(figsize or (12.0, min(MAX_INCHES, max(4.0, 1.5 + NAME_INCHES * k))), dpi)
    ax = fig.add_axes((0.16, 0.1, 0.74, 0.82))
    image = ax.imshow(counts.T, aspect="auto", cmap="viridis", interpolation="nearest")
    if k <= MAX_NAMED:
        ax.set_yticks(range(k), labels=class_names, fontsize=_name_size(k))
    else:
        ax.set_ylabel(f"class (0..{k - 1})")
    ax.set_xlabel(f"neuron (0..{c - 1})")
    ax.set_title(f"{layer}: clips of each class above each neuron's {q:g}th percentile")
    cax = fig.add_axes((0.92, 0.1, 0.015, 0.82))
    fig.colorbar(image, cax=cax, label="clips")
    return _save(fig, path, dpi)


def top_class_share_figure(
    shares: np.ndarray,
    path: str | Path,
    *,
    layer: str,
    ylabel: str = "share of the most represented class",
    figsize: tuple[float, float] = (7.0, 4.5),
    dpi: int = DPI,
) -> SavedFigure:
    """Each neuron's most-represented-class share, sorted (the seed's per-layer curve)."""
    shares = np.asarray(shares, np.float64)
    shares = np.sort(shares[~np.isnan(shares)])
    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.12, 0.13, 0.83, 0.77))
    ax.plot(np.arange(shares.size), shares, color="tab:blue")
    ax.set_xlim(0, max(shares.size - 1, 1))
    ax.set_ylim(0, max(0.5, float(shares.max(initial=0.0)) * 1.05))
    ax.set_xlabel("neurons (sorted)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{layer}: most represented class per neuron")
    return _save(fig, path, dpi)


def share_depth_figure(
    shares_by_layer: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    ylabel: str = "share of the most represented class",
    figsize: tuple[float, float] = (8.0, 5.0),
    dpi: int = DPI,
) -> SavedFigure:
    """The sorted share curves of every layer on one axis (neurons as a fraction), by depth."""
    if not shares_by_layer:
        raise AnalysisError("no layers to plot")
    from matplotlib import colormaps

    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.1, 0.12, 0.68, 0.78))
    cmap = colormaps["plasma"]
    n = len(shares_by_layer)
    top = 0.0
    for i, (layer, shares) in enumerate(shares_by_layer.items()):
        s = np.sort(np.asarray(shares, np.float64)[~np.isnan(np.asarray(shares, np.float64))])
        top = max(top, float(s.max(initial=0.0)))
        ax.plot(np.linspace(0, 1, s.size), s, color=cmap(1.0 - i / max(n - 1, 1) * 0.9), label=layer)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.4, top * 1.05))
    ax.set_xlabel("neurons (sorted, as a fraction of the layer)")
    ax.set_ylabel(ylabel)
    ax.set_title("Most represented class per neuron, across depth")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path, dpi)
