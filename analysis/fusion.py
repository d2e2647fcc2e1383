"""Score averaging (late fusion) of several protocols, chosen inside the training folds.

Each protocol's cross-validation keeps its clip decision values on every split
(:class:`~soundnet8.analysis.svm.Decisions`): on each outer test fold f, and on each inner split
(f, g) — trained without folds f and g, scored on g — at the C chosen for fold f. A fusion
averages the members' *standardised* scores (each set of scores centred and divided by its
spread over all clips and classes, which uses no labels), and predicts the largest average.

Which protocols to average is chosen, for each test fold f, from the inner splits (f, g) only:

* ``TOP_K``: the protocols ranked by their inner accuracy; k (1..max) by the fused inner accuracy;
* ``GREEDY``: forward selection, each step adding the protocol that most raises the fused inner
  accuracy, stopping when none does.

The test fold's labels are read only to score the chosen fusion, so the figure is as honest as
:func:`~soundnet8.analysis.study.select_protocol`'s (which is the k = 1 case). Decision values are
cached per protocol (:class:`DecisionCache`) so that a resumed study fuses without refitting.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AnalysisError
from .linear import predict_from_scores
from .svm import OUTER, Decisions

MAX_MEMBERS = 5
"""Most protocols averaged in one fusion."""

Split = tuple[int, int]
Table = Mapping[str, Mapping[Split, Decisions]]


class FusionMethod(str, enum.Enum):
    TOP_K = "top-k"  # the k best protocols by inner accuracy, k by the fused inner accuracy
    GREEDY = "greedy"  # forward selection on the fused inner accuracy


@dataclass(frozen=True)
class FusionSelection:
    """Late fusion chosen per test fold on its training folds, scored on the test fold."""

    method: str
    folds: tuple[int, ...]
    fold_members: tuple[tuple[str, ...], ...]  # protocols averaged for each test fold
    fold_inner_accuracy: tuple[float, ...]  # the fusion's accuracy over that fold's inner splits
    fold_accuracy: tuple[float, ...]  # its accuracy on the test fold
    optimistic_members: tuple[str, ...]  # the best top-k by mean test-fold accuracy (optimistic)
    optimistic_accuracy: float
    n_candidates: int
    max_members: int

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))


def standardized(scores: np.ndarray) -> np.ndarray:
    """Scores centred and scaled by their spread over all clips and classes (no labels used)."""
    s = np.asarray(scores, np.float64)
    spread = s.std()
    return (s - s.mean()) / spread if spread > 0 else s - s.mean()


def fused_accuracy(table: Table, members: Sequence[str], split: Split) -> float:
    """Accuracy of the members' averaged standardised scores on one split."""
    parts = [table[m][split] for m in members]
    first = parts[0]
    for name, part in zip(members, parts):
        if not np.array_equal(part.clips, first.clips) or not np.array_equal(part.classes, first.classes):
            raise AnalysisError(f"{name}: split {split} scored other clips or classes than {members[0]}")
    mean = sum(standardized(p.scores) for p in parts) / len(parts)
    return float(np.mean(predict_from_scores(first.classes, mean) == first.truth))


def inner_splits(table: Table, fold: int) -> list[Split]:
    """The inner splits of test fold ``fold`` that every protocol scored."""
    common = set.intersection(*(set(d) for d in table.values()))
    splits = sorted(s for s in common if s[0] == fold and s[1] != OUTER)
    if not splits:
        raise AnalysisError(f"fold {fold}: no inner splits to choose a fusion from")
    return splits


def _inner(table: Table, members: Sequence[str], splits: Sequence[Split]) -> float:
    return float(np.mean([fused_accuracy(table, members, s) for s in splits]))


def _top_k(table: Table, names: list[str], splits: list[Split], max_members: int) -> tuple[tuple[str, ...], float]:
    single = [_inner(table, [n], splits) for n in names]
    ranked = [names[i] for i in np.argsort(-np.asarray(single), kind="stable")]  # ties: listing order
    best: tuple[tuple[str, ...], float] = ((), -1.0)
    for k in range(1, min(max_members, len(ranked)) + 1):
        acc = _inner(table, ranked[:k], splits)
        if acc > best[1]:  # strictly better: the smaller fusion on ties
            best = (tuple(ranked[:k]), acc)
    return best


def _greedy(table: Table, names: list[str], splits: list[Split], max_members: int) -> tuple[tuple[str, ...], float]:
    members: list[str] = []
    score = -1.0
    while len(members) < max_members:
        trials = [(_inner(table, members + [n], splits), n) for n in names if n not in members]
        if not trials:
            break
        acc, name = max(trials, key=lambda t: t[0])  # first maximum: listing order on ties
        if acc <= score:
            break
        members.append(name)
        score = acc
    return tuple(members), score


def _optimistic(table: Table, names: list[str], folds: tuple[int, ...], max_members: int) -> tuple[tuple[str, ...], float]:
    """Top-k by mean test-fold accuracy, k by the fused test-fold accuracy: chosen on the test folds."""
    outer = [(f, OUTER) for f in folds]
    single = [np.mean([fused_accuracy(table, [n], s) for s in outer]) for n in names]
    ranked = [names[i] for i in np.argsort(-np.asarray(single), kind="stable")]
    trials = [(float(np.mean([fused_accuracy(table, ranked[:k], s) for s in outer])), tuple(ranked[:k]))
              for k in range(1, min(max_members, len(ranked)) + 1)]  # fmt: skip
    acc, members = max(trials, key=lambda t: t[0])
    return members, acc


def select_fusion(
    table: Table,
    folds: Sequence[int],
    method: FusionMethod | str = FusionMethod.GREEDY,
    max_members: int = MAX_MEMBERS,
) -> FusionSelection:
    """For each test fold, the fusion its inner splits score best, scored on the test fold."""
    method = FusionMethod(method)
    names = list(table)
    if not names:
        raise AnalysisError("no protocols with decision values to fuse")
    if max_members < 1:
        raise AnalysisError(f"a fusion needs at least one member, got max_members={max_members}")
    choose = _top_k if method is FusionMethod.TOP_K else _greedy
    folds = tuple(int(f) for f in folds)
    members, inner, accuracy = [], [], []
    for f in folds:
        chosen, acc = choose(table, names, inner_splits(table, f), max_members)
        members.append(chosen)
        inner.append(acc)
        accuracy.append(fused_accuracy(table, chosen, (f, OUTER)))
    best, best_acc = _optimistic(table, names, folds, max_members)
    return FusionSelection(
        method=method.value,
        folds=folds,
        fold_members=tuple(members),
        fold_inner_accuracy=tuple(inner),
        fold_accuracy=tuple(accuracy),
        optimistic_members=best,
        optimistic_accuracy=best_acc,
        n_candidates=len(names),
        max_members=max_members,
    )


def fusion_note(selection: FusionSelection) -> str:
    """One markdown paragraph: the honest fusion figure, its members, the optimistic one beside."""
    members = "; ".join(" + ".join(m) for m in selection.fold_members)
    return (
        f"Score averaging ({selection.method}, up to {selection.max_members} of {selection.n_candidates} protocols, "
        f"chosen per test fold on its training folds): **{100 * selection.mean_accuracy:.2f}%** "
        f"(per fold: {', '.join(f'{100 * a:.2f}' for a in selection.fold_accuracy)}; members: {members}). "
        f"Chosen on the test folds (optimistic): {' + '.join(selection.optimistic_members)}, "
        f"{100 * selection.optimistic_accuracy:.2f}%."
    )


# --------------------------------------------------------------------------------------------
# Cache of decision values, one file per protocol


@dataclass(frozen=True)
class DecisionCache:
    """Decision values of finished protocols, ``DIR/<hash>.npz`` per (protocol, grid, folds)."""

    directory: Path

    def path(self, name: str, grid: Sequence[float], folds: str) -> Path:
        key = f"{name}|{','.join(f'{c:g}' for c in grid)}|{folds}"
        return Path(self.directory) / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"

    def has(self, name: str, grid: Sequence[float], folds: str) -> bool:
        return self.path(name, grid, folds).exists()

    def save(self, name: str, grid: Sequence[float], folds: str, decisions: Mapping[Split, Decisions]) -> None:
        target = self.path(name, grid, folds)
        target.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(decisions)
        arrays = {"name": np.array(name), "keys": np.array(keys, np.int64).reshape(-1, 2)}
        for i, key in enumerate(keys):
            d = decisions[key]
            arrays.update({f"clips{i}": d.clips, f"truth{i}": d.truth, f"scores{i}": d.scores.astype(np.float32), f"classes{i}": d.classes})
        partial = target.with_suffix(".part.npz")
        np.savez_compressed(partial, **arrays)
        partial.replace(target)  # a kill leaves no half-written cache entry

    def load(self, name: str, grid: Sequence[float], folds: str) -> dict[Split, Decisions]:
        with np.load(self.path(name, grid, folds)) as z:
            if str(z["name"]) != name:
                raise AnalysisError(f"{self.path(name, grid, folds)}: holds {z['name']}, not {name}")
            return {
                (int(f), int(g)): Decisions(z[f"clips{i}"], z[f"truth{i}"], z[f"scores{i}"], z[f"classes{i}"])
                for i, (f, g) in enumerate(z["keys"])
            }
