"""From a feature store to what the classifiers need: labels, folds, feature matrices.

Nothing here assumes ESC-50's size: class names and folds come from the store. A store without
folds is split either by a stated column (``--split-column``: rows whose value is ``test`` are
the test set, the rest train) or, failing that, by a seeded stratified k-fold split that the
results name.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from soundnet8.engine.store import FeatureStore

from .errors import AnalysisError
from .esc50 import is_esc50, major_groups

DEFAULT_SPLITS = 5
"""Folds of the stratified split made for a store that has none."""

DEFAULT_SPLIT_SEED = 0

TEST_VALUE = "test"
"""Value of a split column that marks the test rows."""

TRAIN_FOLD, TEST_FOLD = 0, 1
"""Fold ids given to the two sides of a stated train/test split."""


class FoldSource(str, enum.Enum):
    STORE = "store"  # /clips/fold
    COLUMN = "column"  # a manifest column named by the caller, used as folds
    SPLIT = "split"  # a stated train/test split
    STRATIFIED = "stratified"  # no folds anywhere: a seeded stratified k-fold split


@dataclass(frozen=True, eq=False)
class Labels:
    """Labels, folds and class names of a store's clips, and how the folds were obtained."""

    labels: np.ndarray  # (N,) int64 in 0..K-1
    folds: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]
    fold_source: FoldSource
    fold_description: str
    test_folds: tuple[int, ...] | None = None  # None: every fold is the test fold in turn
    esc50: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def majors(self) -> tuple[tuple[str, ...], np.ndarray] | None:
        """ESC-50 only: (major category names, major index of each class)."""
        if not self.esc50:
            return None
        names, per_class = major_groups(self.class_names)
        return names, np.asarray(per_class, np.int64)

    def subset(self, rows: np.ndarray) -> Labels:
        return Labels(
            self.labels[rows], self.folds[rows], self.class_names, self.fold_source,
            self.fold_description, self.test_folds, self.esc50,
        )  # fmt: skip


def stratified_folds(labels: np.ndarray, n_splits: int = DEFAULT_SPLITS, seed: int = DEFAULT_SPLIT_SEED) -> np.ndarray:
    """Fold ids 1..n_splits: each class's clips in a seeded random order, dealt round-robin."""
    from .svm import inner_folds

    if n_splits < 2:
        raise AnalysisError(f"a stratified split needs at least 2 folds, got {n_splits}")
    return inner_folds(np.asarray(labels), n_splits, seed) + 1


def labels_from_arrays(
    labels: np.ndarray,
    folds: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    *,
    meta_columns: Sequence[str] = (),
    n_splits: int = DEFAULT_SPLITS,
    seed: int = DEFAULT_SPLIT_SEED,
) -> Labels:
    """:class:`Labels` for in-memory arrays (folds made by a stratified split when None)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise AnalysisError("labels must be a 1-D array of non-negative integers")
    k = int(labels.max()) + 1 if labels.size else 0
    names = tuple(str(c) for c in class_names) if class_names is not None else tuple(str(i) for i in range(k))
    if len(names) < k:
        raise AnalysisError(f"{len(names)} class names for labels up to {k - 1}")
    if folds is None:
        folds = stratified_folds(labels, n_splits, seed)
        source, text = FoldSource.STRATIFIED, f"stratified {n_splits}-fold split of the clips, seed {seed}"
    else:
        folds = np.asarray(folds)
        if folds.shape != labels.shape or folds.dtype.kind not in "iu":
            raise AnalysisError(f"folds must be integers of shape {labels.shape}")
        source, text = FoldSource.STORE, f"the store's folds ({', '.join(str(f) for f in np.unique(folds))})"
    return Labels(
        labels.astype(np.int64), np.asarray(folds, np.int64), names, source, text,
        esc50=is_esc50(names, meta_columns),
    )  # fmt: skip


def load_labels(
    store,
    *,
    fold_column: str | None = None,
    split_column: str | None = None,
    n_splits: int = DEFAULT_SPLITS,
    seed: int = DEFAULT_SPLIT_SEED,
) -> Labels:
    """Labels and folds of an open :class:`~soundnet8.engine.store.FeatureStore`.

    Folds, by preference: ``fold_column`` (a manifest column of integers), the store's folds,
    ``split_column`` (``test`` marks the test rows: one train/test split, C chosen inside the
    training rows), else a stratified ``n_splits``-fold split with ``seed``.
    """
    labels = store.labels
    if labels is None:
        raise AnalysisError(f"{store.path}: the store has no labels; classification needs a label column")
    meta_columns = tuple(store.meta_columns)
    names = store.class_names
    if fold_column is not None and split_column is not None:
        raise AnalysisError("give a fold column or a split column, not both")
    if fold_column is not None:
        folds = np.asarray(store.meta(fold_column))
        if folds.dtype.kind not in "iu":
            raise AnalysisError(f"{store.path}: meta column {fold_column!r} is not integer, cannot be folds")
        base = labels_from_arrays(labels, folds, names, meta_columns=meta_columns)
        return Labels(
            base.labels, base.folds, base.class_names, FoldSource.COLUMN,
            f"folds from the manifest column {fold_column!r}", esc50=base.esc50,
        )  # fmt: skip
    if split_column is None and store.folds is not None:
        return labels_from_arrays(labels, store.folds, names, meta_columns=meta_columns)
    if split_column is not None:
        values = np.asarray(store.meta(split_column)).astype(str)
        is_test = np.char.lower(np.char.strip(values)) == TEST_VALUE
        if not is_test.any() or is_test.all():
            raise AnalysisError(
                f"{store.path}: split column {split_column!r} must mark some rows (not all) {TEST_VALUE!r}"
            )
        folds = np.where(is_test, TEST_FOLD, TRAIN_FOLD)
        base = labels_from_arrays(labels, folds, names, meta_columns=meta_columns)
        return Labels(
            base.labels, base.folds, base.class_names, FoldSource.SPLIT,
            f"the stated split in column {split_column!r} ({int(is_test.sum())} test clips)",
            test_folds=(TEST_FOLD,), esc50=base.esc50,
        )  # fmt: skip
    return labels_from_arrays(labels, None, names, meta_columns=meta_columns, n_splits=n_splits, seed=seed)


@dataclass(frozen=True)
class FoldOptions:
    """Where a command's folds come from (see :func:`load_labels`)."""

    fold_column: str | None = None
    split_column: str | None = None
    n_splits: int = DEFAULT_SPLITS
    seed: int = DEFAULT_SPLIT_SEED

    def labels(self, store) -> Labels:
        return load_labels(
            store, fold_column=self.fold_column, split_column=self.split_column, n_splits=self.n_splits, seed=self.seed
        )


# --------------------------------------------------------------------------------------------
# Feature matrices


@dataclass(frozen=True)
class FeatureSpec:
    """One or more (layer, pool) feature blocks, concatenated column-wise."""

    parts: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise AnalysisError("a feature spec needs at least one (layer, pool)")

    @classmethod
    def of(cls, layer: str, pool: str = "mean") -> FeatureSpec:
        return cls(((layer, pool),))

    @classmethod
    def parse(cls, text: str) -> FeatureSpec:
        """``"pool5"``, ``"pool5:max"``, ``"pool5:mean,max+conv6"`` (``+`` joins blocks)."""
        parts = []
        for block in text.split("+"):
            layer, _, pools = block.strip().partition(":")
            if not layer:
                raise AnalysisError(f"cannot parse feature spec {text!r}")
            for pool in (pools or "mean").split(","):
                parts.append((layer, pool.strip()))
        return cls(tuple(parts))

    @property
    def name(self) -> str:
        grouped: dict[str, list[str]] = {}
        for layer, pool in self.parts:
            grouped.setdefault(layer, []).append(pool)
        return "+".join(f"{layer}:{','.join(pools)}" for layer, pools in grouped.items())

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for layer, _ in self.parts))


def load_features(store, spec: FeatureSpec) -> np.ndarray:
    """(N, sum of channels) float32: the spec's blocks of an open store, side by side."""
    blocks = []
    for layer, pool in spec.parts:
        if layer not in store.layers:
            raise AnalysisError(f"{store.path}: no layer {layer!r} (it has {', '.join(store.layers)})")
        if pool not in store.pools(layer):
            raise AnalysisError(f"{store.path}: layer {layer!r} has no {pool!r} pooling ({', '.join(store.pools(layer))})")
        blocks.append(store.features(layer, pool))
    return blocks[0] if len(blocks) == 1 else np.hstack(blocks)


def check_same_clips(store, other) -> None:
    """Raise unless two stores hold the same clips in the same order (e.g. a frames store)."""
    if store.n_clips != other.n_clips or not np.array_equal(store.paths, other.paths):
        raise AnalysisError(f"{other.path}: does not hold the same clips in the same order as {store.path}")


@contextlib.contextmanager
def open_stores(
    store_path: str | os.PathLike, frames_store_path: str | os.PathLike | None = None
) -> Iterator[tuple[FeatureStore, FeatureStore | None]]:
    """The store and, when a path is given, a store with frames of the same clips (checked).

    Both are closed on leaving the ``with`` block; the frames store is ``None`` without a path.
    """
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(FeatureStore(store_path))
        frames_store = None
        if frames_store_path is not None:
            frames_store = stack.enter_context(FeatureStore(frames_store_path))
            check_same_clips(store, frames_store)
        yield store, frames_store
