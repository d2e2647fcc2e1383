"""Linear SVM transfer learning: the exact solver, the seed's reproduction, nested selection of C."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from soundnet8.analysis import (
    SEED_C_GRID,
    SEED_FOLD_ACCURACY,
    SEED_MEAN_ACCURACY,
    AnalysisError,
    Selection,
    Solver,
    class_difficulty,
    confusion_counts,
    cross_validate_svm,
    seed_reproduction,
    squared_hinge_path,
)

from .conftest import SEED_FEATURES, requires_shared

# The Newton solver's optimum against liblinear's primal solver run to tol=1e-10: they agree to
# ~1e-7 (liblinear's own precision); 1e-6 leaves room for BLAS differences.
COEF_RTOL = 1e-6


def _blobs(n_per_class: int, d: int, k: int, seed: int, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * spread
    y = np.repeat(np.arange(k), n_per_class)
    X = centers[y] + rng.standard_normal((y.size, d))
    return X, y


def _folds(y: np.ndarray, n_folds: int) -> np.ndarray:
    """Round-robin folds within each class (every fold has every class)."""
    out = np.empty_like(y)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        out[idx] = np.arange(idx.size) % n_folds + 1
    return out


# --------------------------------------------------------------------------------------------
# The solver


@pytest.mark.parametrize(
    ("n_per_class", "d", "k"),
    [(30, 10, 4), (20, 200, 3), (40, 12, 2)],  # n > d, d > n (rotated, kernel form), binary
)
@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_newton_solves_linearsvc_problem(n_per_class, d, k, C):
    from sklearn.svm import LinearSVC

    X, y = _blobs(n_per_class, d, k, seed=d + k, spread=0.5)
    ours = squared_hinge_path(X, y, [C])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LinearSVC(C=C, dual=False, tol=1e-10, max_iter=100_000).fit(X, y)
    assert ours.converged
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(ours.coef, ref.coef_, rtol=0, atol=COEF_RTOL * scale)
    np.testing.assert_allclose(ours.intercept, ref.intercept_, rtol=0, atol=COEF_RTOL * max(scale, 1.0))
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_path_order_and_warm_starts_do_not_change_solutions():
    X, y = _blobs(25, 8, 3, seed=1)
    grid = [10.0, 1e-4, 0.1, 1e-2]
    path = squared_hinge_path(X, y, grid)
    assert [m.C for m in path] == grid  # returned in the order given
    for model in path:
        alone = squared_hinge_path(X, y, [model.C])[0]  # from w = 0, no warm start
        np.testing.assert_allclose(model.coef, alone.coef, rtol=0, atol=1e-8 * np.abs(alone.coef).max())


def test_solver_stationarity_at_the_optimum():
    """The returned weights zero the objective's gradient (independent of any other solver)."""
    X, y = _blobs(30, 6, 3, seed=2)
    C = 0.5
    model = squared_hinge_path(X, y, [C])[0]
    Xb = np.hstack([X, np.ones((X.shape[0], 1))])
    for k, cls in enumerate(model.classes):
        t = np.where(y == cls, 1.0, -1.0)
        w = np.append(model.coef[k], model.intercept[k])
        margin = t * (Xb @ w)
        grad = w + 2 * C * Xb.T @ np.where(margin < 1, (margin - 1) * t, 0.0)
        assert np.linalg.norm(grad) < 1e-8 * np.linalg.norm(w)


def test_solver_rejects_bad_input():
    X, y = _blobs(5, 3, 2, seed=0)
    with pytest.raises(AnalysisError, match="two classes"):
        squared_hinge_path(X, np.zeros(len(y), int), [1.0])
    with pytest.raises(AnalysisError, match="positive"):
        squared_hinge_path(X, y, [0.0])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(AnalysisError, match="NaN"):
        squared_hinge_path(bad, y, [1.0])


# --------------------------------------------------------------------------------------------
# The seed's numbers


@pytest.fixture(scope="module")
def seed_data():
    X = np.load(SEED_FEATURES / "X.npy")
    y = np.load(SEED_FEATURES / "y.npy")
    folds = np.arange(X.shape[0]) // 400 + 1  # rows are ordered fold 1..5, 400 each
    return X, y, folds


@requires_shared(SEED_FEATURES)
@pytest.mark.slow
def test_seed_configuration_reproduces_published_accuracy(seed_data):
    """The seed's exact LinearSVC(C=0.1, max_iter=10000) on its features: its published numbers."""
    result = seed_reproduction(*seed_data, n_jobs=2)
    assert result.solver is Solver.LIBLINEAR and result.selection is Selection.FIXED
    assert result.fold_accuracy == pytest.approx(SEED_FOLD_ACCURACY, abs=1e-12)  # k/400: exact
    assert result.mean_accuracy == pytest.approx(SEED_MEAN_ACCURACY, abs=1e-12)


@requires_shared(SEED_FEATURES)
@pytest.mark.slow
def test_fast_solver_reproduces_the_seed_grid(seed_data):
    """The seed's GridSearchCV (C on the test folds) with the Newton solver: its chosen C and
    0.7195, and every published grid mean (C = 1e-4 .. 1) within half a point (they are the same
    optimum; C = 10 did not converge in the seed, so its 0.6315 is not a target)."""
    X, y, folds = seed_data
    result = cross_validate_svm(X, y, folds, SEED_C_GRID, selection=Selection.TEST_FOLDS, n_jobs=2)
    assert result.converged and result.inner_accuracy is None
    assert result.test_fold_C == 0.1 and set(result.fold_C) == {0.1}
    assert result.mean_accuracy == pytest.approx(SEED_MEAN_ACCURACY, abs=1 / 400)
    # Same optimum as liblinear's; one clip per fold of slack for a near-tie under other BLAS builds
    # (measured here: identical, 0.7325 0.7000 0.7250 0.7275 0.7125).
    seed_row = result.grid_accuracy[SEED_C_GRID.index(0.1)]
    assert np.abs(np.array(seed_row) - SEED_FOLD_ACCURACY).max() <= 1 / 400 + 1e-12
    published = [0.57, 0.641, 0.711, 0.7195, 0.6665]
    assert np.abs(np.array(result.grid_mean[:5]) - published).max() <= 0.005


# --------------------------------------------------------------------------------------------
# Nested selection


@pytest.fixture(scope="module")
def small():
    X, y = _blobs(15, 12, 4, seed=3, spread=0.6)
    return X, y, _folds(y, 5)


def test_nested_choice_never_sees_the_test_fold(small):
    """Scrambling the test fold's labels and features leaves its chosen C and inner scores as they
    were (only its test accuracy moves); the optimistic choice is allowed to move."""
    X, y, folds = small
    base = cross_validate_svm(X, y, folds, SEED_C_GRID, test_folds=[1])
    rng = np.random.default_rng(0)
    X2, y2 = X.copy(), y.copy()
    test = folds == 1
    y2[test] = rng.permutation(y2[test])
    X2[test] = rng.standard_normal((test.sum(), X.shape[1]))
    scrambled = cross_validate_svm(X2, y2, folds, SEED_C_GRID, test_folds=[1])
    assert scrambled.fold_C == base.fold_C
    assert scrambled.inner_accuracy == base.inner_accuracy
    assert scrambled.fold_accuracy != base.fold_accuracy


def test_nested_choice_matches_gridsearch_on_training_folds(small):
    """C chosen for each test fold = sklearn's GridSearchCV over the training folds only."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y, folds = small
    grid = (1e-3, 1e-2, 0.1, 1.0)
    result = cross_validate_svm(X, y, folds, grid)
    for f, chosen, inner in zip(result.folds, result.fold_C, result.inner_accuracy):
        train = folds != f
        search = GridSearchCV(
            make_pipeline(StandardScaler(), LinearSVC(dual=False, tol=1e-10, max_iter=100_000)),
            {"linearsvc__C": list(grid)},
            cv=PredefinedSplit(folds[train]),
        ).fit(X[train], y[train])
        np.testing.assert_allclose(inner, search.cv_results_["mean_test_score"], atol=1e-12)
        assert chosen == search.best_params_["linearsvc__C"]


def test_test_fold_selection_is_the_optimistic_choice(small):
    X, y, folds = small
    grid = (1e-3, 0.1, 10.0)
    nested = cross_validate_svm(X, y, folds, grid)
    seedlike = cross_validate_svm(X, y, folds, grid, selection="test-folds")
    assert seedlike.selection is Selection.TEST_FOLDS and seedlike.inner_accuracy is None
    assert seedlike.grid_accuracy == nested.grid_accuracy
    assert seedlike.fold_C == (nested.test_fold_C,) * len(nested.folds)
    assert seedlike.mean_accuracy == pytest.approx(nested.test_fold_accuracy)
    with pytest.raises(AnalysisError, match="does not fit"):
        cross_validate_svm(X, y, folds, 0.1, selection="nested")


def test_grid_rows_equal_fixed_C_runs_and_optimistic_choice_is_their_best(small):
    X, y, folds = small
    grid = (1e-3, 0.1, 10.0)
    result = cross_validate_svm(X, y, folds, grid)
    for c, row in zip(grid, result.grid_accuracy):
        fixed = cross_validate_svm(X, y, folds, c)
        assert fixed.selection is Selection.FIXED and fixed.inner_accuracy is None
        assert fixed.fold_accuracy == row
    assert result.test_fold_C == grid[int(np.argmax([np.mean(r) for r in result.grid_accuracy]))]
    assert result.test_fold_accuracy == max(np.mean(r) for r in result.grid_accuracy)
    # out-of-fold predictions: one per clip, from the honest choice, consistent with the accuracies
    assert result.truth.size == X.shape[0]
    per_fold = [np.mean(result.predictions[result.clip_fold == f] == result.truth[result.clip_fold == f]) for f in result.folds]
    np.testing.assert_allclose(per_fold, result.fold_accuracy)


def test_parallel_folds_give_identical_results(small):
    X, y, folds = small
    one = cross_validate_svm(X, y, folds, (0.01, 1.0), n_jobs=1)
    two = cross_validate_svm(X, y, folds, (0.01, 1.0), n_jobs=2)
    assert one.fold_accuracy == two.fold_accuracy and one.fold_C == two.fold_C
    np.testing.assert_array_equal(one.predictions, two.predictions)


def test_groups_average_decisions_per_clip(small):
    """Every clip as two identical rows: the squared hinge doubles, as if C doubled, and the
    clip's mean decision is its row's decision: so C/2 on doubled rows = C on single rows."""
    X, y, folds = small
    grid = (0.01, 0.1, 1.0)
    single = cross_validate_svm(X, y, folds, grid)
    rows = np.repeat(np.arange(X.shape[0]), 2)
    doubled = cross_validate_svm(X[rows], y[rows], folds[rows], tuple(c / 2 for c in grid), groups=rows)
    assert doubled.fold_accuracy == single.fold_accuracy
    assert doubled.truth.size == X.shape[0] and doubled.n_rows == 2 * X.shape[0] and doubled.n_clips == X.shape[0]
    np.testing.assert_array_equal(doubled.clip_ids, single.clip_ids)
    np.testing.assert_array_equal(doubled.predictions, single.predictions)


def test_stated_split_selects_C_inside_the_training_rows(small):
    X, y, folds = small
    split = np.where(folds == 5, 1, 0)  # one train / test split
    result = cross_validate_svm(X, y, split, (0.01, 1.0), test_folds=[1])
    assert result.folds == (1,) and len(result.inner_accuracy) == 1
    assert result.truth.size == int((split == 1).sum())
    # the inner split is stratified and seeded: the same seed gives the same choice
    again = cross_validate_svm(X, y, split, (0.01, 1.0), test_folds=[1])
    assert again.inner_accuracy == result.inner_accuracy


def test_input_errors_name_the_problem(small):
    X, y, folds = small
    with pytest.raises(AnalysisError, match="same label and fold"):
        cross_validate_svm(X, y, folds, 1.0, groups=np.zeros(len(y), int))
    with pytest.raises(AnalysisError, match="at least two folds"):
        cross_validate_svm(X, y, np.ones_like(folds), 1.0)
    with pytest.raises(AnalysisError, match="positive"):
        cross_validate_svm(X, y, folds, [-1.0])
    with pytest.raises(AnalysisError, match="test folds"):
        cross_validate_svm(X, y, folds, 1.0, test_folds=[9])


def test_confusion_and_difficulty_come_from_the_predictions():
    counts = np.array([[9, 1, 0], [5, 5, 0], [0, 2, 8]])
    d = class_difficulty(counts, n_each=1)
    np.testing.assert_allclose(d.recall, [0.9, 0.5, 0.8])
    assert d.easy == (0,) and d.difficult == (1,)
    assert class_difficulty(np.eye(20, dtype=int)).easy == (0, 1)  # ties: lower index, a tenth each


def test_confusion_counts_sum_to_scored_clips(small):
    X, y, folds = small
    result = cross_validate_svm(X, y, folds, 0.1)
    counts = confusion_counts(result, 4)
    assert counts.sum() == X.shape[0]
    assert np.trace(counts) == round(result.mean_accuracy * X.shape[0])  # equal-size folds


def test_grid_speed_compares_both_solvers_on_the_same_folds(small):
    from soundnet8.analysis.speed import grid_speed

    X, y, folds = small
    report = grid_speed(X, y, folds, grid=(0.01, 0.1, 1.0))
    # same optimum on a small problem liblinear solves: identical grid means
    assert report.max_grid_difference <= 1 / X.shape[0]
    assert report.seed.chosen_C == report.newton_grid.chosen_C
    assert report.seed.cpu_seconds > 0 and report.newton_grid.cpu_seconds > 0
    text = report.markdown()
    assert "Speed-up of the grid" in text and text.count("| newton path") == 3
