"""Linear-SVM transfer learning on the official folds, with honest choice of C.

The seed notebook: ``make_pipeline(StandardScaler(), LinearSVC(C=0.1, max_iter=10000))``, trained
on four ESC-50 folds and tested on the fifth, five times; C picked by ``GridSearchCV`` over
``logspace(-4, 1, 6)`` using the *test* folds' accuracy, which flatters the result (the same
folds choose C and score it). :func:`cross_validate_svm` reports both:

* ``NESTED`` (the default): for each test fold, C is chosen by cross-validation inside the
  training folds only (leave one training fold out), then the model is refitted on all training
  folds with that C and scored on the test fold;
* ``TEST_FOLDS``: the seed's choice, the C whose mean test-fold accuracy is best, labelled as
  optimistic wherever it is shown.

Rows may be sub-clip samples (windows): ``groups`` says which clip each row belongs to, and a
clip's decision is the mean of its rows' decision values (the SoundNet paper's protocol).
"""

from __future__ import annotations

import enum
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError
from .linear import LinearModel, predict_from_scores, squared_hinge_path

SEED_C = 0.1
"""The seed's chosen C."""

SEED_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 1, 6))
"""The seed's GridSearchCV grid: 1e-4 ... 10."""

SEED_MAX_ITER = 10_000
"""The seed's LinearSVC(max_iter=...)."""

SEED_FOLD_ACCURACY = (0.7325, 0.7000, 0.7250, 0.7275, 0.7125)
"""The seed's published per-fold accuracies on its pool5 features at C = 0.1."""

SEED_MEAN_ACCURACY = 0.7195

INNER_SPLITS = 5
"""Inner folds when the training set is a single outer fold (a stated train/test split)."""

DEFAULT_SEED = 0
"""Random seed of the stratified inner split (the only randomness in this module)."""


class Solver(str, enum.Enum):
    """How a linear SVM is fitted."""

    NEWTON = "newton"  # exact finite Newton along the C path (soundnet8.analysis.linear), fast
    LIBLINEAR = "liblinear"  # sklearn LinearSVC(C=C, max_iter=10000), everything else default: the seed
    LOGISTIC = "logistic"  # sklearn LogisticRegression (multinomial, L2), warm-started along the grid


LOGISTIC_MAX_ITER = 1000
"""lbfgs iterations per C of the logistic regression (warm starts along the grid keep it low)."""


class Selection(str, enum.Enum):
    """How C is chosen."""

    FIXED = "fixed"  # one C, given
    NESTED = "nested"  # chosen inside the training folds: honest
    TEST_FOLDS = "test-folds"  # chosen by the test folds' mean accuracy (the seed): optimistic


SELECTION_LABELS = {
    Selection.FIXED: "fixed C",
    Selection.NESTED: "nested (C chosen inside the training folds)",
    Selection.TEST_FOLDS: "C chosen on the test folds (optimistic, the seed's method)",
}


@dataclass(frozen=True)
class FoldScores:
    """The per-fold numbers of a cross-validation that choosing among protocols needs (small
    enough to save and reload, unlike a whole :class:`CVResult`)."""

    folds: tuple[int, ...]
    fold_accuracy: tuple[float, ...]
    inner_accuracy: tuple[tuple[float, ...], ...] | None

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))


@dataclass(frozen=True, eq=False)
class Decisions:
    """Clip decision values of one test set (an outer test fold, or an inner split) at the C chosen
    for its outer fold: what score averaging (late fusion) of several protocols needs."""

    clips: np.ndarray  # (n,) group id of each clip, sorted
    truth: np.ndarray  # (n,) label of each clip
    scores: np.ndarray  # (n, K) decision values, or (n,) for two classes
    classes: np.ndarray  # (K,) the labels the scores' columns stand for


@dataclass(frozen=True, eq=False)
class CVResult:
    """Cross-validated accuracy of a linear SVM; one entry per test fold unless said otherwise.

    ``fold_accuracy`` and ``predictions`` come from the honest ``selection`` (NESTED, or FIXED
    for one C). ``grid_accuracy[i][j]`` is the accuracy of grid value i on test fold j, from which
    the optimistic test-fold choice is read (:attr:`test_fold_C`).
    """

    selection: Selection
    solver: Solver
    grid: tuple[float, ...]
    folds: tuple[int, ...]  # the test folds, in order
    fold_C: tuple[float, ...]  # C used on each test fold
    fold_accuracy: tuple[float, ...]
    fold_size: tuple[int, ...]  # clips in each test fold
    grid_accuracy: tuple[tuple[float, ...], ...]  # (len(grid), len(folds))
    inner_accuracy: tuple[tuple[float, ...], ...] | None  # (len(folds), len(grid)), NESTED only
    clip_ids: np.ndarray  # (n,) group id of each scored clip (row index when no groups)
    truth: np.ndarray  # (n,) label of each scored clip
    predictions: np.ndarray  # (n,) out-of-fold prediction of each scored clip
    clip_fold: np.ndarray  # (n,) the test fold each clip was scored in
    converged: bool
    seconds: float
    n_rows: int  # rows (a clip's windows count separately)
    n_clips: int  # distinct clips (groups)
    n_features: int
    decisions: dict[tuple[int, int], Decisions] | None = None  # keep_decisions: clip scores per split


    @property
    def mean_accuracy(self) -> float:
        """Mean of the per-fold accuracies (the seed's and the paper's figure)."""
        return float(np.mean(self.fold_accuracy))

    @property
    def scores(self) -> FoldScores:
        return FoldScores(self.folds, self.fold_accuracy, self.inner_accuracy)

    @property
    def std_accuracy(self) -> float:
        return float(np.std(self.fold_accuracy))

    @property
    def grid_mean(self) -> tuple[float, ...]:
        return tuple(float(np.mean(row)) for row in self.grid_accuracy)

    @property
    def test_fold_C(self) -> float:
        """The seed's choice: the C with the best mean test-fold accuracy (first on ties)."""
        return self.grid[int(np.argmax(self.grid_mean))]

    @property
    def test_fold_accuracy(self) -> float:
        """Mean accuracy at :attr:`test_fold_C`: optimistic, since those folds chose it."""
        return float(max(self.grid_mean))

    @property
    def test_fold_fold_accuracy(self) -> tuple[float, ...]:
        return tuple(self.grid_accuracy[int(np.argmax(self.grid_mean))])

    def summary(self) -> str:
        folds = ", ".join(f"{a:.4f}" for a in self.fold_accuracy)
        lines = [
            f"{SELECTION_LABELS[self.selection]}: mean accuracy {self.mean_accuracy:.4f} "
            f"(per fold: {folds}; C per fold: {', '.join(f'{c:g}' for c in self.fold_C)})"
        ]
        if len(self.grid) > 1:
            lines.append(
                f"{SELECTION_LABELS[Selection.TEST_FOLDS]}: C={self.test_fold_C:g}, "
                f"mean accuracy {self.test_fold_accuracy:.4f}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Fitting one training set along the grid


def _fit_grid(X: np.ndarray, y: np.ndarray, grid: Sequence[float], solver: Solver) -> list[LinearModel]:
    """Standardised-input models for every C of ``grid`` (X already standardised)."""
    if solver is Solver.NEWTON:
        return list(squared_hinge_path(X, y, grid))
    if solver is Solver.LOGISTIC:
        return _logistic_path(X, y, grid)
    from sklearn.svm import LinearSVC

    return [_fit_sklearn(LinearSVC(C=c, max_iter=SEED_MAX_ITER), X, y) for c in grid]


def _fit_sklearn(estimator, X: np.ndarray, y: np.ndarray) -> LinearModel:
    """Fit a scikit-learn linear classifier, noting whether it converged, as a LinearModel."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X, y)
    return LinearModel(
        classes=estimator.classes_,
        coef=np.array(estimator.coef_, np.float64),
        intercept=np.array(estimator.intercept_, np.float64),
        C=float(estimator.C),
        n_iter=int(np.max(estimator.n_iter_)),
        converged=not any(issubclass(w.category, ConvergenceWarning) for w in caught),
    )


def _logistic_path(X: np.ndarray, y: np.ndarray, grid: Sequence[float]) -> list[LinearModel]:
    """Multinomial logistic regression for every C, fitted in increasing C from the previous
    solution (the optimum moves little between neighbouring C), returned in grid order."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(max_iter=LOGISTIC_MAX_ITER, warm_start=True)
    fitted = {c: _fit_sklearn(lr.set_params(C=float(c)), X, y) for c in sorted(grid)}
    return [fitted[c] for c in grid]


def _group_scores(model: LinearModel, X: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean decision value of each group's rows."""
    scores = model.decision_function(X)
    flat = scores if scores.ndim == 2 else scores[:, None]
    sums = np.zeros((n_groups, flat.shape[1]))
    np.add.at(sums, inverse, flat)
    sums /= np.bincount(inverse, minlength=n_groups)[:, None]
    return sums if scores.ndim == 2 else sums[:, 0]


@dataclass(frozen=True)
class _Split:
    """Training and test rows of one split, and the test rows' clips."""

    train: np.ndarray  # row indices
    test: np.ndarray  # row indices
    test_inverse: np.ndarray  # clip index (0..n_test_clips-1) of each test row
    test_clips: np.ndarray  # group id of each test clip
    test_truth: np.ndarray  # label of each test clip


def _split(train: np.ndarray, test: np.ndarray, y: np.ndarray, groups: np.ndarray) -> _Split:
    clips, first, inverse = np.unique(groups[test], return_index=True, return_inverse=True)
    return _Split(train, test, inverse, clips, y[test][first])


@dataclass(frozen=True)
class _Scored:
    """Accuracy and clip predictions of every grid value on one test set."""

    accuracy: list[float]
    predictions: list[np.ndarray]
    scores: list[np.ndarray] | None  # clip decision values per grid value, when kept
    split: _Split
    classes: np.ndarray


def _fit_and_score(X, y, train: np.ndarray, tests: Sequence[_Split], grid, solver, keep: bool) -> tuple[list[_Scored], bool]:
    """Fit the grid once on ``train`` (scaler included) and score it on each test set."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X[train])
    models = _fit_grid(scaler.transform(X[train]), y[train], grid, solver)
    out = []
    for split in tests:
        X_test = scaler.transform(X[split.test])
        accuracy, predictions, kept = [], [], []
        for model in models:
            scores = _group_scores(model, X_test, split.test_inverse, split.test_clips.size)
            pred = predict_from_scores(model.classes, scores)
            predictions.append(pred)
            accuracy.append(float(np.mean(pred == split.test_truth)))
            kept.append(scores.astype(np.float32))
        out.append(_Scored(accuracy, predictions, kept if keep else None, split, models[0].classes))
    return out, all(m.converged for m in models)


# --------------------------------------------------------------------------------------------
# Inner folds


def inner_folds(y_groups: np.ndarray, n_splits: int = INNER_SPLITS, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Stratified fold ids 0..n_splits-1 for clips labelled ``y_groups``: each class's clips in a
    seeded random order dealt round-robin, so every fold gets its share of every class."""
    rng = np.random.default_rng(seed)
    out = np.empty(y_groups.size, np.int64)
    offset = 0
    for label in np.unique(y_groups):
        idx = np.flatnonzero(y_groups == label)
        rng.shuffle(idx)
        out[idx] = (offset + np.arange(idx.size)) % n_splits
        offset += idx.size  # continue the deal so small classes do not all start in fold 0
    return out


# --------------------------------------------------------------------------------------------
# Cross-validation as a set of training jobs
#
# Nested selection on k folds needs, for test fold f, the grid trained on the folds other than f
# and g and scored on g, for every other fold g. That training set is the same for (f, g) and
# (g, f): one fit serves both inner scores, so k outer fits and k(k-1)/2 inner fits do the work
# of k + k(k-1) (15 instead of 25 for 5 folds). Scores are the same as fitting each separately.

OUTER = -1
"""Inner-fold key of an outer test (the test fold itself)."""


@dataclass(frozen=True)
class _Job:
    train: np.ndarray
    tests: tuple[_Split, ...]
    keys: tuple[tuple[int, int], ...]  # (test fold f, inner fold g or OUTER) for each test set


def _plan(y, folds, groups, tested: np.ndarray, nested: bool, seed: int) -> list[_Job]:
    def rows(exclude) -> np.ndarray:
        return np.flatnonzero(~np.isin(folds, list(exclude)))

    jobs = [_Job(rows([f]), (_split(rows([f]), np.flatnonzero(folds == f), y, groups),), ((int(f), OUTER),)) for f in tested]
    if not nested:
        return jobs
    all_folds = np.unique(folds)
    tested_set = {int(f) for f in tested}
    if all_folds.size >= 3:  # leave one training fold out, fits shared between fold pairs
        pairs = sorted({tuple(sorted((int(f), int(g)))) for f in tested for g in all_folds if g != f})
        for a, b in pairs:
            train = rows([a, b])
            if np.unique(y[train]).size < 2:
                continue
            tests, keys = [], []
            for f, g in ((a, b), (b, a)):
                if f in tested_set:
                    tests.append(_split(train, np.flatnonzero(folds == g), y, groups))
                    keys.append((f, g))
            jobs.append(_Job(train, tuple(tests), tuple(keys)))
        return jobs
    for f in tested:  # one training fold (a stated split): a seeded stratified split of its clips
        train = rows([f])
        clips, first, inverse = np.unique(groups[train], return_index=True, return_inverse=True)
        inner = inner_folds(y[train][first], INNER_SPLITS, seed)[inverse]
        for g in np.unique(inner):
            tr, te = train[inner != g], train[inner == g]
            if np.unique(y[tr]).size >= 2:
                jobs.append(_Job(tr, (_split(tr, te, y, groups),), ((int(f), int(g)),)))
    return jobs


def _run_job(X, y, job: _Job, grid, solver, keep: bool = False) -> tuple[dict[tuple[int, int], _Scored], bool]:
    scored, ok = _fit_and_score(X, y, job.train, job.tests, grid, solver, keep)
    return dict(zip(job.keys, scored)), ok


def _as_grid(C: float | Sequence[float]) -> tuple[float, ...]:
    values = [C] if np.isscalar(C) else list(C)
    try:
        grid = tuple(float(c) for c in values)
    except (TypeError, ValueError):
        raise AnalysisError(f"C must be a positive number or a sequence of them, got {C!r}") from None
    if not grid or any(not (c > 0 and math.isfinite(c)) for c in grid):
        raise AnalysisError(f"C must be a positive number or a sequence of them, got {C!r}")
    if len(set(grid)) != len(grid):
        raise AnalysisError(f"C values repeat: {grid}")
    return grid


def _check_inputs(X, y, folds, groups):
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise AnalysisError(f"features must be a non-empty (n, d) array, got shape {X.shape}")
    n = X.shape[0]
    y = np.asarray(y)
    folds = np.asarray(folds)
    if y.shape != (n,) or folds.shape != (n,):
        raise AnalysisError(f"labels {y.shape} and folds {folds.shape} must both have shape ({n},)")
    if y.dtype.kind not in "iu" or folds.dtype.kind not in "iu":
        raise AnalysisError("labels and folds must be integer arrays")
    if groups is None:
        groups = np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise AnalysisError(f"groups {groups.shape} must have shape ({n},)")
    order = np.argsort(groups, kind="stable")
    same = groups[order][1:] == groups[order][:-1]
    if np.any(same & (y[order][1:] != y[order][:-1])) or np.any(same & (folds[order][1:] != folds[order][:-1])):
        raise AnalysisError("every row of a group (clip) must have the same label and fold")
    if not np.all(np.isfinite(X)):
        raise AnalysisError("features contain NaN or infinite values")
    return X, y, folds, groups


def _tested_folds(folds: np.ndarray, test_folds: Sequence[int] | None) -> np.ndarray:
    all_folds = np.unique(folds)
    tested = all_folds if test_folds is None else np.unique(np.asarray(list(test_folds)))
    if tested.size == 0 or not np.isin(tested, all_folds).all():
        raise AnalysisError(f"test folds {tested.tolist()} must be among the folds {all_folds.tolist()}")
    if all_folds.size < 2:
        raise AnalysisError(f"cross-validation needs at least two folds, got {all_folds.tolist()}")
    return tested


def _selection(selection: Selection | str | None, grid: tuple[float, ...]) -> Selection:
    """NESTED for a grid and FIXED for one C unless told; a told selection must fit the grid."""
    if selection is None:
        return Selection.NESTED if len(grid) > 1 else Selection.FIXED
    selection = Selection(selection)
    if (selection is Selection.FIXED) != (len(grid) == 1):
        raise AnalysisError(f"selection {selection.value!r} does not fit {len(grid)} value(s) of C")
    return selection


def _inner_accuracy(scores: dict, tested: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """Per test fold: the mean accuracy of each C over that fold's inner splits."""
    out = []
    for f in tested:
        per_split = [v.accuracy for (tf, g), v in scores.items() if tf == f and g != OUTER]
        if not per_split:
            raise AnalysisError(f"fold {f}: nested selection needs training data that can be split (too few clips per class)")
        out.append(tuple(float(v) for v in np.mean(per_split, axis=0)))
    return tuple(out)


def _kept_decisions(scores: dict[tuple[int, int], _Scored], tested: np.ndarray, chosen: list[int]) -> dict[tuple[int, int], Decisions]:
    """Every split's clip scores at the C chosen for its outer fold."""
    index = {int(f): j for f, j in zip(tested, chosen)}
    return {
        key: Decisions(v.split.test_clips, v.split.test_truth, v.scores[index[key[0]]], v.classes)
        for key, v in scores.items()
    }


def cross_validate_svm(
    X: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    C: float | Sequence[float] = SEED_C_GRID,
    *,
    solver: Solver | str = Solver.NEWTON,
    selection: Selection | str | None = None,
    groups: np.ndarray | None = None,
    test_folds: Sequence[int] | None = None,
    n_jobs: int = 1,
    seed: int = DEFAULT_SEED,
    keep_decisions: bool = False,
) -> CVResult:
    """StandardScaler + linear SVM (LinearSVC's problem) on each test fold in turn.

    ``C``: one value (FIXED) or a grid (NESTED selection, the optimistic test-fold choice reported
    beside it). ``selection=TEST_FOLDS`` with a grid skips the inner cross-validation and uses the
    seed's choice (the best mean test-fold accuracy, optimistic): the seed's GridSearchCV, for
    reproducing it and timing it. ``solver``: NEWTON (exact and fast) or LIBLINEAR (the seed's
    LinearSVC call, for exact reproduction). ``groups``: clip id of each row when clips have
    several rows (their decision values are averaged). ``test_folds``: the folds scored (default:
    every fold; a stated train/test split is ``folds`` 0/1 with ``test_folds=[1]``, and C is then
    chosen by a seeded stratified split of the training clips). ``n_jobs``: fits run in parallel
    (each training set is fitted once along the whole grid; 15 of them for 5 nested folds).
    ``keep_decisions``: also return every split's clip scores at the chosen C (late fusion).
    """
    start = time.perf_counter()
    solver = Solver(solver)
    grid = _as_grid(C)
    X, y, folds, groups = _check_inputs(X, y, folds, groups)
    tested = _tested_folds(folds, test_folds)
    selection = _selection(selection, grid)
    nested = selection is Selection.NESTED
    jobs = _plan(y, folds, groups, tested, nested, seed)
    if n_jobs == 1 or len(jobs) == 1:
        done = [_run_job(X, y, job, grid, solver, keep_decisions) for job in jobs]
    else:
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=n_jobs)(delayed(_run_job)(X, y, job, grid, solver, keep_decisions) for job in jobs)
    scores: dict[tuple[int, int], _Scored] = {}
    for part, _ in done:
        scores.update(part)
    outer = [scores[(int(f), OUTER)] for f in tested]
    splits = [job.tests[0] for job in jobs[: len(tested)]]
    inner_accuracy = None
    if nested:
        inner_accuracy = _inner_accuracy(scores, tested)
        chosen = [int(np.argmax(acc)) for acc in inner_accuracy]
    else:  # FIXED (one C) or TEST_FOLDS: the C with the best mean test-fold accuracy, everywhere
        best = int(np.argmax([np.mean([o.accuracy[i] for o in outer]) for i in range(len(grid))]))
        chosen = [best] * len(outer)
    return CVResult(
        selection=selection,
        solver=solver,
        grid=grid,
        folds=tuple(int(f) for f in tested),
        fold_C=tuple(grid[j] for j in chosen),
        fold_accuracy=tuple(o.accuracy[j] for o, j in zip(outer, chosen)),
        fold_size=tuple(int(sp.test_clips.size) for sp in splits),
        grid_accuracy=tuple(tuple(o.accuracy[i] for o in outer) for i in range(len(grid))),
        inner_accuracy=inner_accuracy,
        clip_ids=np.concatenate([sp.test_clips for sp in splits]),
        truth=np.concatenate([sp.test_truth for sp in splits]),
        predictions=np.concatenate([o.predictions[j] for o, j in zip(outer, chosen)]),
        clip_fold=np.concatenate([np.full(sp.test_clips.size, f) for sp, f in zip(splits, tested)]),
        converged=all(ok for _, ok in done),
        seconds=time.perf_counter() - start,
        n_rows=int(X.shape[0]),
        n_clips=int(np.unique(groups).size),
        n_features=int(X.shape[1]),
        decisions=_kept_decisions(scores, tested, chosen) if keep_decisions else None,
    )


def seed_reproduction(X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, n_jobs: int = 1) -> CVResult:
    """The seed's exact configuration: StandardScaler + LinearSVC(C=0.1, max_iter=10000)."""
    return cross_validate_svm(X, y, folds, C=SEED_C, solver=Solver.LIBLINEAR, n_jobs=n_jobs)


def confusion_counts(result: CVResult, n_classes: int | None = None) -> np.ndarray:
    """(K, K) counts over all test folds: row = true class, column = predicted class."""
    k = int(max(result.truth.max(), result.predictions.max()) + 1) if n_classes is None else int(n_classes)
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (result.truth, result.predictions), 1)
    return counts


DIFFICULTY_SHARE = 0.1
"""Easy and difficult classes: the best and worst tenth by recall (5 of ESC-50's 50), at least 1."""


@dataclass(frozen=True, eq=False)
class ClassDifficulty:
    """Per-class recall from a confusion matrix, and the classes at either end."""

    recall: np.ndarray  # (K,) correct / clips of the class (NaN for a class without test clips)
    easy: tuple[int, ...]  # highest recall first
    difficult: tuple[int, ...]  # lowest recall first


def class_difficulty(counts: np.ndarray, n_each: int | None = None) -> ClassDifficulty:
    """Easy and difficult classes read off a (K, K) confusion matrix (rows = true classes).

    ``n_each`` classes at each end (default: a tenth of the classes, at least one, at most half);
    ties are broken by class index so the choice is deterministic."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise AnalysisError(f"a confusion matrix must be square, got {counts.shape}")
    k = counts.shape[0]
    support = counts.sum(axis=1)
    recall = np.where(support > 0, np.diag(counts) / np.maximum(support, 1), np.nan)
    n = max(1, round(k * DIFFICULTY_SHARE)) if n_each is None else int(n_each)
    scored = np.flatnonzero(support > 0)
    n = max(0, min(n, scored.size // 2))
    index = np.arange(k)
    best_first = scored[np.lexsort((index[scored], -recall[scored]))]
    worst_first = scored[np.lexsort((index[scored], recall[scored]))]
    return ClassDifficulty(
        recall=recall,
        easy=tuple(int(i) for i in best_first[:n]),
        difficult=tuple(int(i) for i in worst_first[:n]),
    )
