"""The audio every section measures on: the shared ESC-50 (or the bundled ESC-10 clips as a fallback).

All sections of a run draw from one :class:`Corpus`, so model-only, baselines and end-to-end figures
are made on the same clips. Model-only inputs come in two shapes (:class:`InputKind`): a 5 s clip
with the default preprocessing (tiled to 25 s, 551,250 samples) and 10 s untiled (two consecutive
clips back to back, 220,500 samples: long enough for the conv8 heads).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundnet8.engine.audio import Preprocessing, load
from soundnet8.engine.errors import SoundNetError
from soundnet8.engine.inputs import DEMO_DIR

from .settings import InputKind

SHARED_ESC50 = Path(__file__).resolve().parents[1].parent / "shared" / "esc50"
"""Where the project's shared data puts ESC-50 (``../shared`` from the repository root)."""


@dataclass(frozen=True)
class Corpus:
    """Clips in a fixed order with their manifest rows (label, fold, category)."""

    source: str  # "esc50" or "bundled-esc10"
    paths: tuple[str, ...]
    rows: tuple[dict[str, str], ...]  # the manifest row of each path (without the path column)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, n: int) -> Corpus:
        """``n`` clips spread evenly over the corpus (so every fold and class is represented)."""
        if n >= len(self.paths):
            return self
        idx = np.linspace(0, len(self.paths), n, endpoint=False).astype(int)
        return Corpus(self.source, tuple(self.paths[i] for i in idx), tuple(self.rows[i] for i in idx))


def _audio_file(audio_dir: Path, name: str) -> Path:
    path = audio_dir / name
    if path.exists():
        return path
    flac = path.with_suffix(".flac")  # the shared copy is FLAC while the CSV says .wav
    return flac if flac.exists() else path


def load_corpus(esc50: Path | None = None) -> Corpus:
    """ESC-50 from ``esc50`` (or ``../shared/esc50``); the 6 bundled ESC-10 clips when absent."""
    root = Path(esc50) if esc50 else SHARED_ESC50
    meta, audio_dir = root / "meta" / "esc50.csv", root / "audio_16k"
    if meta.is_file() and audio_dir.is_dir():
        source, csv_path, name_col = "esc50", meta, "filename"
    elif esc50 is not None:
        raise SoundNetError(f"{root}: not an ESC-50 folder (needs meta/esc50.csv and audio_16k/)")
    else:
        source, csv_path, audio_dir, name_col = "bundled-esc10", DEMO_DIR / "manifest.csv", DEMO_DIR, "path"
    paths, rows = [], []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            path = _audio_file(audio_dir, row.pop(name_col))
            if not path.is_file():
                raise SoundNetError(f"{csv_path}: listed file {path} is missing")
            paths.append(str(path.resolve()))
            rows.append({k: row[k] for k in ("fold", "target", "label", "category") if k in row})
    return Corpus(source, tuple(paths), tuple(rows))


def write_manifest(corpus: Corpus, path: Path, copies: int = 1, link_dir: Path | None = None) -> Path:
    """A manifest CSV of ``corpus`` (absolute paths). With ``copies`` > 1 the corpus is listed again
    through symlinked folders (``link_dir/rep<k>``), so every row is a distinct path the store
    accepts while the audio is the same: how a 10,000-clip collection is made from ESC-50."""
    dirs = {os.path.dirname(p) for p in corpus.paths}
    if copies > 1 and (link_dir is None or len(dirs) != 1):
        raise SoundNetError("copies > 1 needs a link_dir and a corpus from one folder")
    audio_dir = next(iter(dirs))
    columns = sorted({k for row in corpus.rows for k in row})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *columns])
        for k in range(copies):
            folder = audio_dir
            if k > 0:
                assert link_dir is not None
                folder = str(link_dir / f"rep{k}")
                if not os.path.lexists(folder):
                    link_dir.mkdir(parents=True, exist_ok=True)
                    os.symlink(audio_dir, folder)
            for p, row in zip(corpus.paths, corpus.rows):
                writer.writerow([os.path.join(folder, os.path.basename(p)), *(row.get(c, "") for c in columns)])
    return path


def scaled_manifest(corpus: Corpus, n: int, workdir: Path) -> Path:
    """A manifest of exactly ``n`` distinct paths cycling over ``corpus``."""
    copies = -(-n // len(corpus))
    full = write_manifest(corpus, workdir / f"manifest-{n}-full.csv", copies, workdir / "links")
    out = workdir / f"manifest-{n}.csv"
    with open(full) as src, open(out, "w") as dst:
        for i, line in enumerate(src):
            if i > n:
                break
            dst.write(line)
    full.unlink()
    return out


def model_inputs(paths: tuple[str, ...], kind: InputKind) -> list[np.ndarray]:
    """Prepared waveforms (float32, model-ready) of ``paths`` in the shape ``kind`` asks for."""
    if kind is InputKind.TILED_25S:
        return [load(p).waveform for p in paths]
    untiled = Preprocessing(min_seconds=0)
    single = [load(p, untiled).waveform for p in paths]
    pairs = [np.concatenate([single[i], single[(i + 1) % len(single)]]) for i in range(len(single))]
    length = min(len(p) for p in pairs)  # equal lengths: one bucket, as a real collection of 10 s clips
    return [p[:length] for p in pairs]
