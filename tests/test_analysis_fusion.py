"""Score averaging of protocols chosen inside the training folds, logistic regression, power + L2
normalisation per block, enumerated joins, and the study's subset and cache options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soundnet8.analysis import FeatureSpec, open_stores
from soundnet8.analysis.errors import AnalysisError
from soundnet8.analysis.fusion import DecisionCache, FusionMethod, fused_accuracy, inner_splits, select_fusion
from soundnet8.analysis.study import Candidate, Transform, candidate_rows, join_candidates, lever_candidates
from soundnet8.analysis.svm import OUTER, Solver, cross_validate_svm
from soundnet8.analysis.table_run import StudySet, TableOptions, default_jobs, run_table

from .synthetic_store import synthetic_clips, write_synthetic_store

LAYERS = {"conv4": 8, "pool5": 16, "conv6": 24, "conv7": 12}
GRID = (0.001, 0.01, 0.1, 1.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    clips = synthetic_clips(n_classes=5, per_class=10, noise=2.0, seed=3, layers=LAYERS)
    return write_synthetic_store(tmp_path_factory.mktemp("fusion") / "s.h5", clips, with_frames=False), clips


PROTOCOLS = (
    Candidate(FeatureSpec.parse("conv4:mean")),
    Candidate(FeatureSpec.parse("pool5:mean,std")),
    Candidate(FeatureSpec.parse("conv6:mean")),
    Candidate(FeatureSpec.parse("conv7:mean")),
    Candidate(FeatureSpec.parse("pool5:mean+conv6:std"), classifier=Solver.LOGISTIC),
)


def _decision_table(path, labels_override=None):
    """Decision values of every protocol, with the clips' labels optionally replaced."""
    table, results = {}, {}
    with open_stores(path, None) as (s, _):
        labels = TableOptions().folds.labels(s)
        for c in PROTOCOLS:
            rows = candidate_rows(c, s, labels)
            y = rows.labels if labels_override is None else labels_override
            r = cross_validate_svm(rows.X, y, rows.folds, GRID, solver=c.classifier, keep_decisions=True)
            table[c.name], results[c.name] = r.decisions, r
    return table, results


def test_single_protocol_decisions_reproduce_its_nested_scores(store):
    path, _ = store
    table, results = _decision_table(path)
    for name, r in results.items():
        for j, f in enumerate(r.folds):
            assert fused_accuracy(table, [name], (f, OUTER)) == pytest.approx(r.fold_accuracy[j])
            inner = np.mean([fused_accuracy(table, [name], s) for s in inner_splits(table, f)])
            assert inner == pytest.approx(max(r.inner_accuracy[j]))


@pytest.mark.parametrize("method", list(FusionMethod))
def test_fusion_chosen_per_fold_does_not_see_that_folds_labels(store, method):
    """Permuting test fold f's labels (and refitting everything) leaves fold f's choice unchanged:
    the choice is made on the other folds only. Another fold's choice may change (f is training
    data there), so only fold f is compared."""
    path, clips = store
    table, _ = _decision_table(path)
    chosen = select_fusion(table, (1, 2, 3, 4, 5), method, max_members=3)
    assert max(len(m) for m in chosen.fold_members) >= 1
    rng = np.random.default_rng(0)
    for k, f in enumerate((1, 3)):
        y = clips.labels.copy()
        in_f = np.flatnonzero(clips.folds == f)
        y[in_f] = rng.permutation(y[in_f])
        y[in_f] = (y[in_f] + 1 + k) % clips.labels.max()  # surely different labels, not just reordered
        permuted, _ = _decision_table(path, y)
        again = select_fusion(permuted, (1, 2, 3, 4, 5), method, max_members=3)
        j = f - 1
        assert again.fold_members[j] == chosen.fold_members[j]
        assert again.fold_inner_accuracy[j] == pytest.approx(chosen.fold_inner_accuracy[j])
        assert again.fold_accuracy[j] != chosen.fold_accuracy[j]  # the test fold's labels did change


def test_fusion_averages_standardised_scores_and_never_loses_on_the_inner_splits(store):
    path, _ = store
    table, _ = _decision_table(path)
    fusion = select_fusion(table, (1, 2, 3, 4, 5), FusionMethod.GREEDY)
    for j, f in enumerate(fusion.folds):
        best_single = max(np.mean([fused_accuracy(table, [n], s) for s in inner_splits(table, f)]) for n in table)
        assert fusion.fold_inner_accuracy[j] >= best_single - 1e-12
    # averaging is invariant to each member's scale and offset (scores are standardised)
    name = next(iter(table))
    scaled = {**table, "scaled": {k: type(d)(d.clips, d.truth, 7.0 * d.scores + 3.0, d.classes) for k, d in table[name].items()}}
    other = [n for n in table if n != name][0]
    for split in table[name]:
        assert fused_accuracy(scaled, ["scaled", other], split) == fused_accuracy(table, [name, other], split)


def test_logistic_regression_matches_sklearn(store):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    path, clips = store
    X = clips.features["pool5"]["mean"]
    r = cross_validate_svm(X, clips.labels, clips.folds, 0.1, solver=Solver.LOGISTIC)
    train, test = clips.folds != 1, clips.folds == 1
    scaler = StandardScaler().fit(X[train])
    lr = LogisticRegression(C=0.1, max_iter=1000).fit(scaler.transform(X[train]), clips.labels[train])
    expected = np.mean(lr.predict(scaler.transform(X[test])) == clips.labels[test])
    assert r.fold_accuracy[0] == pytest.approx(expected)
    assert r.mean_accuracy > 1.5 / 5  # well above chance


def test_signed_sqrt_and_l2_per_block(store):
    path, clips = store
    spec = FeatureSpec.parse("pool5:mean,std+conv6:mean")
    with open_stores(path, None) as (s, _):
        labels = TableOptions().folds.labels(s)
        X = candidate_rows(Candidate(spec, transform=Transform.L2), s, labels).X
        Xs = candidate_rows(Candidate(spec, transform=Transform.SQRT_L2), s, labels).X
    widths = [16, 16, 24]
    for start, w in zip(np.cumsum([0] + widths[:-1]), widths):
        assert np.allclose(np.linalg.norm(X[:, start : start + w], axis=1), 1.0)
    raw = clips.features["conv6"]["mean"]
    root = np.sqrt(raw)
    assert np.allclose(Xs[:, 32:], root / np.linalg.norm(root, axis=1, keepdims=True), atol=1e-6)
    name = Candidate(spec, transform=Transform.SQRT_L2, classifier=Solver.LOGISTIC).name
    assert name == "pool5:mean,std+conv6:mean [clip pooled, signed sqrt, L2 per block, logistic regression]"


def test_joins_are_enumerated_and_levers_exist_in_the_store(store):
    path, _ = store
    with open_stores(path, None) as (s, _):
        joins = join_candidates(s, pool_sets=(("mean", "std"),))
        levers = lever_candidates(s)
    plain = [c for c in joins if c.transform is Transform.NONE]
    assert len(plain) == 11  # 6 pairs + 4 triples + 1 quadruple of conv4..conv7
    assert {c.transform for c in joins} == {Transform.NONE, Transform.SQRT_L2}
    assert len({c.name for c in levers}) == len(levers) and any(c.classifier is Solver.LOGISTIC for c in levers)


def test_study_subset_caches_decisions_and_resumes(store, tmp_path):
    path, _ = store
    names = ("pool5:mean,std+conv6:mean,std", "conv6:mean", "conv7:mean,std")
    options = TableOptions(grid=GRID, study=True, study_set=StudySet.LEVERS, only=names, frame_protocols=False, n_jobs=1)
    first = run_table(path, tmp_path, options=options)
    assert {r.features for r in first.rows} == {"pool5:mean,std+conv6:mean,std", "conv6:mean", "conv7:mean,std"}
    assert len(list((tmp_path / "decisions").glob("*.npz"))) == 3
    payload = json.loads((tmp_path / "table.json").read_text())
    assert set(payload["fusion"]) == {"top-k", "greedy"} and "protocol_selection" in payload and payload["run_seconds"] >= 0
    lines = []
    again = run_table(path, tmp_path, options=options, echo=lines.append)
    assert all("(saved)" in line for line in lines) and len(lines) == 3
    assert again.fusions == first.fusions
    # a cache deleted: that protocol alone is refitted
    DecisionCache(tmp_path / "decisions").path(names[1], GRID, payload["folds"]).unlink()
    lines.clear()
    run_table(path, tmp_path, options=options, echo=lines.append)
    assert sum("(saved)" not in line for line in lines) == 1
    with pytest.raises(AnalysisError, match="no such candidate"):
        run_table(path, tmp_path, options=TableOptions(grid=GRID, study=True, only=("nope",)))


def test_default_jobs_are_the_cores():
    assert TableOptions().n_jobs == default_jobs() >= 1
