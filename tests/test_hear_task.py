"""The HEAR task folder written from an ESC-50 style manifest: the layout heareval reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundnet8.engine.audio import decode
from soundnet8.engine.errors import SoundNetError
from soundnet8.engine.inputs import bundled_manifest
from soundnet8.hear.task import HearTaskOptions, write_hear_task

from .conftest import ESC50_AUDIO, ESC50_META, requires_shared


def _check_task(task, expected: dict[str, tuple[str, int]], sample_rate: int = 22050) -> None:
    """``expected``: wav name -> (category, manifest fold)."""
    root = task.path
    metadata = json.loads((root / "task_metadata.json").read_text())
    splits = sorted({f"fold{fold - 1:02d}" for _, fold in expected.values()})
    assert metadata["splits"] == splits == list(task.splits)
    for key, value in {"embedding_type": "scene", "prediction_type": "multiclass", "split_mode": "presplit_kfold",
                       "nfolds": len(splits), "sample_duration": 5.0, "task_name": "esc50"}.items():
        assert metadata[key] == value, key
    assert "top1_acc" in metadata["evaluation"]

    with open(root / "labelvocabulary.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["idx", "label"]
    vocabulary = [label for _, label in rows[1:]]
    assert [int(i) for i, _ in rows[1:]] == list(range(len(vocabulary)))
    assert vocabulary == sorted({category for category, _ in expected.values()}) == list(task.labels)

    seen: dict[str, str] = {}
    for split in splits:
        labels = json.loads((root / f"{split}.json").read_text())
        wavs = sorted(p.name for p in (root / str(sample_rate) / split).iterdir())
        assert sorted(labels) == wavs
        for name, value in labels.items():
            assert name not in seen, f"{name} in {seen.get(name)} and {split}"  # folds are disjoint
            seen[name] = split
            category, fold = expected[name]
            assert value == [category] and value[0] in vocabulary
            assert split == f"fold{fold - 1:02d}"
            info = sf.info(str(root / str(sample_rate) / split / name))
            got = (info.samplerate, info.frames, info.channels, info.subtype)
            assert got == (sample_rate, 5 * sample_rate, 1, "PCM_16")
    assert set(seen) == set(expected)


def test_bundled_clips_make_a_task(tmp_path):
    manifest = bundled_manifest()
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    task = write_hear_task(manifest, None, tmp_path)
    assert task.path == tmp_path / "esc50-v2.0.0-full"
    assert not (tmp_path / "esc50-v2.0.0-full.partial").exists()
    _check_task(task, {Path(r["path"]).stem + ".wav": (r["category"], int(r["fold"])) for r in rows})

    # The audio is the clip, resampled: compare with an independent soxr resampling of the FLAC.
    import soxr

    row = rows[0]
    samples, rate = decode(manifest.parent / row["path"])
    expected = soxr.resample(samples[:, 0], rate, 22050, "HQ")[:5 * 22050]
    written, _ = sf.read(task.path / "22050" / f"fold{int(row['fold']) - 1:02d}" / (Path(row["path"]).stem + ".wav"),
                         dtype="float32")
    assert np.abs(written[:len(expected)] - np.clip(expected, -1, 1)).max() < 2 / 32768  # PCM16 rounding


def test_existing_task_needs_overwrite(tmp_path):
    write_hear_task(bundled_manifest(), None, tmp_path)
    with pytest.raises(SoundNetError, match="exists"):
        write_hear_task(bundled_manifest(), None, tmp_path)
    task = write_hear_task(bundled_manifest(), None, tmp_path, HearTaskOptions(overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [task.path.name]


def test_other_sample_rates_and_durations(tmp_path):
    task = write_hear_task(bundled_manifest(), None, tmp_path, HearTaskOptions(sample_rates=(16000, 22050),
                                                                                sample_duration=2.0))
    for rate in (16000, 22050):
        for wav in (task.path / str(rate)).glob("*/*.wav"):
            info = sf.info(str(wav))
            assert (info.samplerate, info.frames) == (rate, 2 * rate)


def test_manifest_without_enough_folds_is_refused(tmp_path):
    manifest = tmp_path / "two_folds.csv"
    source = bundled_manifest()
    lines = source.read_text().splitlines()
    manifest.write_text("\n".join(line for line in lines if not line.endswith(",5,crying_baby")) + "\n")
    with pytest.raises(SoundNetError, match="3 folds"):
        write_hear_task(manifest, source.parent, tmp_path / "tasks")
    assert not (tmp_path / "tasks" / "esc50-v2.0.0-full").exists()


@requires_shared(ESC50_META)
def test_official_esc50_manifest(tmp_path):
    """ESC-50's own esc50.csv (``.wav`` names found as the converted ``.flac``), a few clips per fold."""
    with open(ESC50_META, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader]
    picked = [r for fold in "12345" for r in [r for r in rows if r["fold"] == fold][:2]]
    manifest = tmp_path / "esc50.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    task = write_hear_task(manifest, ESC50_AUDIO, tmp_path / "tasks")
    assert task.splits == ("fold00", "fold01", "fold02", "fold03", "fold04")
    assert task.clips_per_split == (2, 2, 2, 2, 2)
    _check_task(task, {r["filename"]: (r["category"], int(r["fold"])) for r in picked})


def test_task_writer_does_not_need_torch():
    import subprocess
    import sys

    code = "import sys, soundnet8.hear.task, soundnet8.hear; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
