"""Frame-level protocols (flatten, the paper's windows, crops), the per-layer table, and the honest
choice of the best protocol."""

from __future__ import annotations

import numpy as np
import pytest

from soundnet8.analysis import (
    PAPER_WINDOWS,
    AnalysisError,
    Candidate,
    CropProtocol,
    FeatureSpec,
    crop_rows,
    cross_validate_svm,
    evaluate,
    flatten_rows,
    load_labels,
    select_protocol,
)
from soundnet8.analysis.frames import layer_frame_rate, pooled_rows
from soundnet8.analysis.reference import PAPER_TABLE6
from soundnet8.analysis.study import layer_candidates, study_candidates
from soundnet8.analysis.tables import read_csv, to_markdown, write_csv
from soundnet8.engine.store import FeatureStore

from .synthetic_store import synthetic_clips, write_synthetic_store

# --------------------------------------------------------------------------------------------
# Rows from frames


def _frames(lengths, channels=3):
    """Frames whose value encodes (clip, frame, channel) so every row can be checked by hand."""
    blocks = [np.array([[100 * i + t + c / 10 for c in range(channels)] for t in range(n)], np.float32) for i, n in enumerate(lengths)]
    return np.concatenate(blocks), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def test_paper_windows_on_pool5_are_1s_means_over_10s():
    fps = layer_frame_rate("pool5")  # 22050 / 8192 = 2.69 frames per second
    assert fps == pytest.approx(22050 / 8192)
    data, offsets = _frames([67, 67])  # 25 s of frames, as the engine's tiling to 20+ s gives
    rows, clip = crop_rows(data, offsets, PAPER_WINDOWS, frames_per_second=fps)
    # 10 s = 27 frames; 1 s = 3 frames, every 3 frames: windows at 0, 3, ..., 24 -> 9 per clip
    assert rows.shape == (18, 3)
    np.testing.assert_array_equal(clip, np.repeat([0, 1], 9))
    for w in range(9):
        np.testing.assert_allclose(rows[w], data[3 * w : 3 * w + 3].mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(rows[9 + w], data[67 + 3 * w : 67 + 3 * w + 3].mean(axis=0), rtol=1e-6)


def test_short_clips_are_repeated_to_the_span():
    data, offsets = _frames([4])  # fewer frames than 10 s: the clip's frames are repeated
    rows, _ = crop_rows(data, offsets, CropProtocol(1.0, 1.0, span_seconds=10.0), frames_per_second=1.0)
    assert rows.shape == (10, 3)
    np.testing.assert_allclose(rows[:, 0], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])


def test_crops_over_each_clips_duration_with_several_pools():
    data, offsets = _frames([10, 10])
    protocol = CropProtocol(crop_seconds=2.0, hop_seconds=1.0, span_seconds=None, pools=("mean", "max", "std"))
    rows, clip = crop_rows(data, offsets, protocol, frames_per_second=1.0, durations=np.array([5.0, 3.0]))
    # clip 0: span 5 frames, crops of 2 at 0..3 -> 4; clip 1: span 3 -> 2
    np.testing.assert_array_equal(clip, [0, 0, 0, 0, 1, 1])
    first = data[0:2]
    np.testing.assert_allclose(rows[0], np.concatenate([first.mean(0), first.max(0), first.std(0)]), rtol=1e-6)
    with pytest.raises(AnalysisError, match="durations"):
        crop_rows(data, offsets, protocol, frames_per_second=1.0)


def test_flatten_is_time_major_and_pooled_rows_match_means():
    data, offsets = _frames([3, 5])
    flat = flatten_rows(data, offsets)  # the shortest clip's 3 frames
    assert flat.shape == (2, 9)
    np.testing.assert_array_equal(flat[1], data[3:6].reshape(-1))
    np.testing.assert_allclose(pooled_rows(data, offsets)[1], data[3:8].mean(axis=0), rtol=1e-6)
    with pytest.raises(AnalysisError, match="no frames"):
        flatten_rows(data, np.array([0, 0, 8]))


# --------------------------------------------------------------------------------------------
# Stores


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    clips = synthetic_clips(n_classes=4, per_class=10, noise=1.5, seed=1)
    return write_synthetic_store(tmp_path_factory.mktemp("store") / "synthetic.h5", clips), clips


def test_window_protocol_cross_validates_per_clip(synthetic_store):
    path, clips = synthetic_store
    with FeatureStore(path) as store:
        labels = load_labels(store)
        e = evaluate(Candidate(FeatureSpec.of("pool5"), crops=PAPER_WINDOWS), store, labels, grid=(0.01, 1.0))
    r = e.result
    assert r.n_clips == 40 and r.truth.size == 40  # scored per clip, not per window
    assert r.n_rows == 40 * 9  # 9 one-second windows of the 10 s of synthetic frames
    np.testing.assert_array_equal(np.sort(r.clip_ids), np.arange(40))
    np.testing.assert_array_equal(r.truth, clips.labels[r.clip_ids])
    assert e.row(esc50_references=False).rows_per_clip == 9


def test_layer_table_has_every_layer_and_pool_and_roundtrips(synthetic_store, tmp_path):
    path, _ = synthetic_store
    with FeatureStore(path) as store:
        labels = load_labels(store)
        candidates = layer_candidates(store)
        assert [c.features.name for c in candidates] == [f"{layer}:{pool}" for layer in ("pool5", "conv6") for pool in ("mean", "max", "std")]
        evaluations = [evaluate(c, store, labels, grid=(0.01, 1.0)) for c in candidates]
    rows = [e.row(esc50_references=True) for e in evaluations]
    by_name = {r.features: r for r in rows}
    assert by_name["pool5:mean"].paper == PAPER_TABLE6["pool5"] and by_name["conv6:mean"].paper == PAPER_TABLE6["conv6"]
    assert by_name["pool5:max"].paper is None  # the paper reports mean pooling only
    assert all(r.paper is None for r in (e.row(esc50_references=False) for e in evaluations))
    for e, r in zip(evaluations, rows):
        assert r.nested_mean == pytest.approx(100 * e.result.mean_accuracy)
        assert r.dims == {"pool5": 16, "conv6": 24}[e.candidate.features.parts[0][0]]
    back = read_csv(write_csv(rows, tmp_path / "table.csv"))
    assert [r.features for r in back] == [r.features for r in rows]
    for a, b in zip(back, rows):
        assert a.nested_mean == pytest.approx(b.nested_mean, abs=0.005) and a.fold_C == b.fold_C and a.paper == b.paper
    md = to_markdown(rows)
    assert md.count("\n") == len(rows) + 2 and "72.9" in md and "**" in md


def test_study_candidates_cover_combinations_and_frames(synthetic_store):
    path, _ = synthetic_store
    with FeatureStore(path) as store:
        names = [c.name for c in study_candidates(store)]
    assert "pool5:mean,max,std" in names and "pool5:mean+conv6:mean" in names
    assert "pool5:mean [paper 1 s windows over 10 s]" in names
    assert any("crops" in n for n in names)
    assert "pool5:mean [clip pooled, signed sqrt]" in names
    with pytest.raises(AnalysisError, match="one layer"):
        Candidate(FeatureSpec.parse("pool5+conv6"), crops=PAPER_WINDOWS)


def test_feature_spec_parsing_and_concatenation(synthetic_store):
    path, clips = synthetic_store
    spec = FeatureSpec.parse("pool5:mean,max+conv6")
    assert spec.parts == (("pool5", "mean"), ("pool5", "max"), ("conv6", "mean")) and spec.name == "pool5:mean,max+conv6:mean"
    from soundnet8.analysis import load_features

    with FeatureStore(path) as store:
        X = load_features(store, spec)
        with pytest.raises(AnalysisError, match="no layer"):
            load_features(store, FeatureSpec.of("conv7"))
    np.testing.assert_allclose(X[:, 16:32], clips.features["pool5"]["max"], rtol=1e-6)
    assert X.shape == (40, 16 + 16 + 24)


# --------------------------------------------------------------------------------------------
# Honest choice among protocols


def test_protocol_choice_uses_inner_scores_not_test_scores():
    """Candidate A looks best on the test folds, B on the training folds: the honest procedure
    must take B on each fold (and report B's test accuracy), the optimistic one A."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), np.repeat(np.arange(3), 20)
    folds = np.tile(np.arange(1, 4), 20)
    a = cross_validate_svm(X, y, folds, (0.1, 1.0))
    b = cross_validate_svm(X + 0.01, y, folds, (0.1, 1.0))

    def forced(r, inner, outer):
        return type(r)(**{**r.__dict__, "inner_accuracy": tuple((inner, inner) for _ in r.folds), "fold_accuracy": (outer,) * 3})

    A, B = forced(a, 0.2, 0.9), forced(b, 0.8, 0.4)
    sel = select_protocol({"A": A, "B": B})
    assert sel.fold_choice == ("B", "B", "B") and sel.mean_accuracy == pytest.approx(0.4)
    assert sel.optimistic_choice == "A" and sel.optimistic_accuracy == pytest.approx(0.9)
    fixed = cross_validate_svm(X, y, folds, 0.1)
    with pytest.raises(AnalysisError, match="fixed C"):
        select_protocol({"A": A, "F": fixed})


def test_labels_without_folds_get_a_stated_stratified_split(tmp_path):
    from soundnet8.engine.store import write_arrays

    y = np.repeat(np.arange(3), 7)
    path = write_arrays(tmp_path / "nofolds.h5", paths=[f"c{i}" for i in range(21)], features={"pool5": {"mean": np.eye(21, 4)}}, labels=y, class_names=["a", "b", "c"])
    with FeatureStore(path) as store:
        labels = load_labels(store, n_splits=3, seed=7)
    assert labels.fold_source.value == "stratified" and "seed 7" in labels.fold_description
    for f in (1, 2, 3):  # every fold holds every class
        assert set(labels.labels[labels.folds == f]) == {0, 1, 2}
    with FeatureStore(path) as store:
        assert np.array_equal(load_labels(store, n_splits=3, seed=7).folds, labels.folds)  # seeded


# --------------------------------------------------------------------------------------------
# Commands


def test_analyze_table_command_writes_csv_markdown_and_choice(synthetic_store, tmp_path, capsys):
    from soundnet8.engine.cli import main

    path, _ = synthetic_store
    out = tmp_path / "table"
    assert main(["analyze", "table", str(path), "-o", str(out), "--C", "0.01", "1", "--layers", "pool5", "--study"]) == 0
    rows = read_csv(out / "table.csv")
    assert {r.features for r in rows} >= {"pool5:mean", "pool5:max", "pool5:std", "pool5"}  # "pool5": flattened frames
    assert any(r.protocol == "paper 1 s windows over 10 s" for r in rows)
    md = (out / "table.md").read_text()
    assert "Best protocol chosen honestly" in md and "stratified" not in md
    assert "[" in capsys.readouterr().out
    # a second run reuses the saved evaluations and writes the same table
    first = (out / "table.csv").read_text()
    assert main(["analyze", "table", str(path), "-o", str(out), "--C", "0.01", "1", "--layers", "pool5", "--study"]) == 0
    assert "(saved)" in capsys.readouterr().out
    assert (out / "table.csv").read_text() == first and (out / "table.md").read_text() == md


def test_analyze_svm_command_seed_config_and_windows(synthetic_store, tmp_path, capsys):
    import json

    from soundnet8.engine.cli import main

    path, _ = synthetic_store
    assert main(["analyze", "svm", str(path), "--layer", "pool5", "--seed-config", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["solver"] == "liblinear" and result["selection"] == "fixed" and result["grid"] == [0.1]
    assert main(["analyze", "svm", str(path), "--layer", "pool5", "--protocol", "windows", "--C", "0.1"]) == 0
    assert "360 rows" in capsys.readouterr().out  # 40 clips x 9 windows
    assert main(["analyze", "svm", str(path), "--layer", "conv9"]) == 1  # an error names the layer
    assert "conv9" in capsys.readouterr().err


def test_signed_sqrt_transform_and_unique_candidates(synthetic_store):
    from soundnet8.analysis.study import Transform, candidate_rows, unique_candidates

    path, clips = synthetic_store
    plain, rooted = Candidate(FeatureSpec.of("pool5")), Candidate(FeatureSpec.of("pool5"), transform=Transform.SQRT)
    with FeatureStore(path) as store:
        labels = load_labels(store)
        np.testing.assert_allclose(candidate_rows(rooted, store, labels).X, np.sqrt(clips.features["pool5"]["mean"]), rtol=1e-6)
    assert [c.name for c in unique_candidates([plain, rooted, Candidate(FeatureSpec.of("pool5"))])] == [plain.name, rooted.name]
    from soundnet8.analysis.study import references

    assert references(plain) == (PAPER_TABLE6["pool5"], 71.95)
    assert references(rooted) == (None, None)  # the paper did not transform its features
    assert references(Candidate(FeatureSpec.of("pool5"), flatten=True)) == (None, 63.0)
    assert references(Candidate(FeatureSpec.of("pool5"), crops=PAPER_WINDOWS)) == (None, None)


# --------------------------------------------------------------------------------------------
# Stores opened together, frame layers, resumable table runs


def test_frame_layers_are_the_recorded_ones_and_stores_must_match(synthetic_store, tmp_path):
    from soundnet8.analysis import open_stores
    from soundnet8.analysis.study import frame_candidates, frames_layers

    path, _ = synthetic_store
    bare = write_synthetic_store(tmp_path / "bare.h5", synthetic_clips(n_classes=4, per_class=10, seed=1), with_frames=False)
    with FeatureStore(path) as store, FeatureStore(bare) as no_frames:
        assert frames_layers(store) == ("pool5", "conv6")
        assert frames_layers(no_frames) == () and frame_candidates(no_frames) == []
        assert [c.protocol for c in frame_candidates(no_frames, store)] == ["frames flattened", "paper 1 s windows over 10 s"]
    with open_stores(bare, path) as (store, frames_store):
        assert frames_layers(frames_store) == ("pool5", "conv6") and store.n_clips == frames_store.n_clips
    other = write_synthetic_store(tmp_path / "other.h5", synthetic_clips(n_classes=4, per_class=5, seed=1))
    with pytest.raises(AnalysisError, match="same clips"):
        with open_stores(path, other):
            pass


def test_saved_evaluations_are_reused_only_for_the_same_grid_and_folds(tmp_path):
    from soundnet8.analysis.svm import FoldScores
    from soundnet8.analysis.table_run import SavedEvaluation, load_done, save_evaluation
    from soundnet8.analysis.tables import TableRow

    row = TableRow("pool5:mean", "clip pooled", 16, 1.0, 50.0, 1.0, (50.0, 50.0), (0.1, 1.0), 0.1, 50.0, None, None, 0.5)
    saved = SavedEvaluation(row, FoldScores((1, 2), (0.5, 0.5), ((0.4, 0.6), (0.5, 0.5))))
    log = tmp_path / "evaluations.jsonl"
    save_evaluation(log, "pool5:mean", (0.1, 1.0), "folds A", saved)
    save_evaluation(log, "pool5:max", (0.1, 10.0), "folds A", saved)  # another grid
    with open(log, "a") as f:
        f.write('{"name": "cut by a kill"')
    assert load_done(log, (0.1, 1.0), "folds A") == {"pool5:mean": saved}
    assert load_done(log, (0.1, 1.0), "folds B") == {}
    assert load_done(tmp_path / "none.jsonl", (0.1, 1.0), "folds A") == {}
