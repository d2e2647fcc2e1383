"""A HEAR task folder from a labelled, folded manifest (ESC-50's ``meta/esc50.csv`` as is).

The layout is what hear-preprocess writes and hear-eval-kit reads (``heareval.embeddings.runner``,
``heareval.predictions``), checked against their sources::

    TASKS/esc50-v2.0.0-full/
        task_metadata.json      task_name, version, embedding_type "scene", prediction_type
                                "multiclass", split_mode "presplit_kfold", nfolds, splits, ...
        labelvocabulary.csv     idx,label (the labels sorted by name, as hear-preprocess does)
        fold00.json ...         {"1-100032-A-0.wav": ["dog"], ...}; manifest fold n -> fold{n-1:02d}
        22050/fold00/*.wav ...  mono PCM16 WAV at each sample rate, trimmed or zero-padded to
                                sample_duration (hear-preprocess's TrimPad)

Audio is decoded by the engine, mixed to mono by averaging (ffmpeg's downmix in hear-preprocess)
and resampled with soxr 'HQ' (hear-preprocess uses ffmpeg's soxr resampler).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from soundnet8.engine.arch import SAMPLE_RATE
from soundnet8.engine.audio import RESAMPLE_QUALITY, decode
from soundnet8.engine.errors import SoundNetError
from soundnet8.engine.inputs import InputSet, read_manifest
from soundnet8.engine.version import package_version

ESC50_EVALUATION = ("top1_acc", "mAP", "d_prime", "aucroc")
"""hear-preprocess's ESC-50 scores (all in heareval.score)."""

MODE = "full"


@dataclass(frozen=True)
class HearTaskOptions:
    task_name: str = "esc50"
    version: str = "v2.0.0"  # hear-preprocess's ESC-50 task version, whose layout this reproduces
    sample_duration: float = 5.0
    sample_rates: tuple[int, ...] = (SAMPLE_RATE,)
    evaluation: tuple[str, ...] = ESC50_EVALUATION
    overwrite: bool = False  # replace an existing task folder of the same name

    def __post_init__(self) -> None:
        if not self.task_name or not self.version or "/" in self.task_name + self.version:
            raise SoundNetError("hear-task: task name and version must be non-empty, without '/'")
        if not self.sample_duration > 0:
            raise SoundNetError(f"hear-task: sample_duration must be > 0, got {self.sample_duration!r}")
        if not self.sample_rates or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                                        for r in self.sample_rates):
            raise SoundNetError(f"hear-task: sample rates must be positive ints, got {self.sample_rates!r}")
        if not self.evaluation:
            raise SoundNetError("hear-task: at least one evaluation score is needed")

    @property
    def folder_name(self) -> str:
        """hear-preprocess's ``versioned_task_name``: ``{task_name}-{version}-{mode}``."""
        return f"{self.task_name}-{self.version}-{MODE}"


@dataclass(frozen=True)
class HearTask:
    """What :func:`write_hear_task` wrote."""

    path: Path
    splits: tuple[str, ...]
    labels: tuple[str, ...]
    clips_per_split: tuple[int, ...]


def split_name(fold: int) -> str:
    """Manifest fold n (1-based, as ESC-50) -> HEAR split ``fold{n-1:02d}``."""
    return f"fold{fold - 1:02d}"


def _assignments(inputs: InputSet, manifest: str | Path) -> dict[str, dict[str, tuple[str, str]]]:
    """split -> {wav name: (source path, label)}, checking what heareval relies on."""
    if not inputs.has_labels or not inputs.has_folds:
        raise SoundNetError(f"{manifest}: hear-task needs a label column and a fold column")
    folds = sorted({item.fold for item in inputs})
    if folds[0] < 1 or len(folds) < 3:  # heareval tests on one fold, validates on the next, trains on the rest
        raise SoundNetError(f"{manifest}: hear-task needs at least 3 folds numbered from 1, got {folds}")
    names: dict[str, str] = {}
    splits: dict[str, dict[str, tuple[str, str]]] = {split_name(f): {} for f in folds}
    for item in inputs:
        name = Path(item.path).stem + ".wav"
        if name in names:  # one flat namespace: heareval keys embeddings by file name
            raise SoundNetError(f"{manifest}: {item.path} and {names[name]} would both be {name}")
        names[name] = item.path
        splits[split_name(item.fold)][name] = (item.path, inputs.class_names[item.label])
    return splits


def _task_audio(path: str, rate: int, n_samples: int) -> np.ndarray:
    """Mono, resampled, trimmed or zero-padded to ``n_samples``, clipped to [-1, 1]."""
    samples, native = decode(path)
    x = samples.mean(axis=1, dtype=np.float64).astype(np.float32) if samples.ndim == 2 else samples
    if native != rate:
        x = soxr.resample(x, native, rate, RESAMPLE_QUALITY)
    out = np.zeros(n_samples, np.float32)
    out[:min(len(x), n_samples)] = x[:n_samples]
    return np.clip(out, -1.0, 1.0)


def _metadata(options: HearTaskOptions, splits: Sequence[str]) -> dict:
    return {
        "task_name": options.task_name,
        "version": options.version,
        "embedding_type": "scene",
        "prediction_type": "multiclass",
        "sample_duration": options.sample_duration,
        "split_mode": "presplit_kfold",
        "nfolds": len(splits),
        "evaluation": list(options.evaluation),
        "default_mode": MODE,
        "mode": MODE,
        "max_task_duration_by_fold": None,
        "splits": list(splits),
        "generated_by": f"soundnet8 {package_version()} hear-task",
    }


def write_hear_task(manifest: str | Path, audio_dir: str | Path | None, out_dir: str | Path,
                    options: HearTaskOptions = HearTaskOptions()) -> HearTask:
    """Write the HEAR task folder for ``manifest`` under ``out_dir`` (the TASKS folder); returns it.

    The folder is built under a temporary name and renamed when complete, so an interrupted run
    leaves no half task that heareval would read.
    """
    inputs = read_manifest(manifest, audio_dir)
    splits = _assignments(inputs, manifest)
    final = Path(out_dir) / options.folder_name
    if final.exists() and not options.overwrite:
        raise SoundNetError(f"{final} exists; pass overwrite (--overwrite) to replace it")
    work = final.with_name(final.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for rate in options.sample_rates:
        n_samples = int(round(options.sample_duration * rate))
        for split, files in splits.items():
            folder = work / str(rate) / split
            folder.mkdir(parents=True)
            for name, (path, _) in files.items():
                sf.write(folder / name, _task_audio(path, rate, n_samples), rate, subtype="PCM_16")
    for split, files in splits.items():
        labels = {name: [label] for name, (_, label) in sorted(files.items())}
        (work / f"{split}.json").write_text(json.dumps(labels, indent=1) + "\n")
    vocabulary = sorted({label for files in splits.values() for _, label in files.values()})
    with open(work / "labelvocabulary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(vocabulary))
    (work / "task_metadata.json").write_text(json.dumps(_metadata(options, list(splits)), indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    return HearTask(final, tuple(splits), tuple(vocabulary), tuple(len(f) for f in splits.values()))
