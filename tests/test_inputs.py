"""What to extract (soundnet8.engine.inputs): discovery, manifests (ESC-50's own), bundled clips."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundnet8.engine.errors import SoundNetError
from soundnet8.engine.inputs import (
    DEMO_DIR,
    InputItem,
    InputSet,
    bundled_clips,
    bundled_manifest,
    discover,
    read_manifest,
)

from .conftest import requires_shared

SHARED = Path(__file__).resolve().parents[2] / "shared"
ESC50_CSV = SHARED / "esc50" / "meta" / "esc50.csv"
ESC50_AUDIO = SHARED / "esc50" / "audio_16k"
needs_esc50 = requires_shared(ESC50_CSV)

ONE_MEGABYTE = 1_000_000


def tone(path: Path, seconds: float = 0.1, rate: int = 16_000, **kwargs) -> Path:
    """A short generated audio file (the content does not matter to these tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, **kwargs)
    return path


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def esc50_rows() -> list[dict[str, str]]:
    with open(ESC50_CSV, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------
# discover


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    tone(root / "b.wav")
    tone(root / "A.WAV")  # upper-case extension
    tone(root / "sub" / "c.Flac", format="FLAC")
    tone(root / "sub" / "deeper" / "d.aif", format="AIFF")
    tone(root / "a_dir" / "e.ogg", format="OGG")
    tone(root / ".hidden" / "x.wav")  # hidden folder: skipped
    tone(root / "._b.wav")  # hidden file (macOS litter): skipped
    (root / "notes.txt").write_text("not audio")
    (root / "features.npy").write_bytes(b"\x93NUMPY")
    return root


def test_discover_walks_directories_in_sorted_order(tree):
    found = discover([tree])
    rel = [Path(p).relative_to(tree).as_posix() for p in found.paths]
    assert rel == ["A.WAV", "a_dir/e.ogg", "b.wav", "sub/c.Flac", "sub/deeper/d.aif"]
    assert all(os.path.isabs(p) for p in found.paths)
    assert not found.has_labels and not found.has_folds and found.class_names is None
    assert all(item.meta == {} and item.label is None for item in found)


def test_discover_is_deterministic_and_removes_duplicates(tree, monkeypatch):
    monkeypatch.chdir(tree)
    inputs = ["sub/c.Flac", tree, str(tree / "b.wav"), "b.wav", tree / "sub"]
    found = discover(inputs)
    rel = [Path(p).relative_to(tree).as_posix() for p in found.paths]
    # argument order first, each file once, directories in sorted order
    assert rel == ["sub/c.Flac", "A.WAV", "a_dir/e.ogg", "b.wav", "sub/deeper/d.aif"]
    assert discover(inputs) == found


def test_discover_takes_named_files_whatever_their_extension(tree):
    found = discover([tree / "notes.txt"])
    assert found.paths == (str(tree / "notes.txt"),)  # decoding will report it if it is not audio


def test_discover_names_a_missing_input(tree):
    with pytest.raises(SoundNetError, match="no-such-dir: no such file or directory"):
        discover([tree, tree / "no-such-dir"])


def test_discover_refuses_to_find_nothing(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing to hear")
    with pytest.raises(SoundNetError, match="no audio files found"):
        discover([tmp_path])


# ------------------------------------------------------------------------------------------
# read_manifest on generated manifests


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    folder = tmp_path / "clips"
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        tone(folder / name)
    return folder


def test_manifest_with_string_labels(clips):
    manifest = write_csv(
        clips / "list.csv",
        [
            ["path", "label", "fold", "gain", "count", "note"],
            ["a.wav", "rain", "1", "0.5", "3", "x"],
            ["b.wav", "dog", "2", "1", "4", "7"],
            ["c.wav", "rain", "2", "-2.5e-1", "5", ""],
            ["d.wav", "cat", "1", "3", "-6", "y"],
        ],
    )
    s = read_manifest(manifest)
    assert s.paths == tuple(str(clips / n) for n in ("a.wav", "b.wav", "c.wav", "d.wav"))
    assert s.class_names == ("cat", "dog", "rain")  # sorted distinct labels
    assert s.labels().tolist() == [2, 1, 2, 0]
    assert s.folds().tolist() == [1, 2, 2, 1]
    assert (s.label_column, s.fold_column, s.source) == ("label", "fold", str(manifest))
    assert s.meta_columns == ("label", "fold", "gain", "count", "note")
    assert s.column("gain") == [0.5, 1.0, -0.25, 3.0]  # all numbers -> float
    assert s.column("count") == [3, 4, 5, -6]  # all integers -> int
    assert all(type(v) is int for v in s.column("count"))
    assert s.column("note") == ["x", "7", "", "y"]  # not all numbers -> str
    assert s.column("label") == ["rain", "dog", "rain", "cat"]  # the raw value stays in meta
    assert s.items[0].meta["fold"] == 1


def test_manifest_with_int_labels_and_names_keeps_the_numbers(clips):
    manifest = write_csv(
        clips / "list.csv",
        [["path", "label", "category"], ["a.wav", "3", "owl"], ["b.wav", "0", "bee"], ["c.wav", "3", "owl"]],
    )
    s = read_manifest(manifest)
    assert s.labels().tolist() == [3, 0, 3]
    assert s.class_names == ("bee", "1", "2", "owl")  # unused indices are named by their number
    assert not s.has_folds


def test_manifest_with_int_labels_and_no_names(clips):
    s = read_manifest(write_csv(clips / "l.csv", [["path", "label"], ["a.wav", "2"], ["b.wav", "0"]]))
    assert s.class_names == ("0", "1", "2")
    assert s.labels().tolist() == [2, 0]


def test_manifest_without_labels(clips):
    s = read_manifest(write_csv(clips / "l.csv", [["path"], ["b.wav"], ["a.wav"]]))
    assert s.paths == (str(clips / "b.wav"), str(clips / "a.wav"))  # manifest order, not sorted
    assert not s.has_labels and s.class_names is None
    with pytest.raises(SoundNetError, match="has no labels"):
        s.labels()


def test_manifest_paths_resolve_against_audio_dir_and_absolute(tmp_path, clips):
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    manifest = write_csv(elsewhere / "l.csv", [["path"], ["a.wav"], [str(clips / "b.wav")]])
    with pytest.raises(SoundNetError, match="do not exist"):
        read_manifest(manifest)  # relative to the CSV's folder: not there
    s = read_manifest(manifest, audio_dir=clips)
    assert s.paths == (str(clips / "a.wav"), str(clips / "b.wav"))
    with pytest.raises(SoundNetError, match="nowhere: audio folder not found"):
        read_manifest(manifest, audio_dir=tmp_path / "nowhere")


def test_manifest_matches_on_the_stem(tmp_path):
    folder = tmp_path / "converted"
    tone(folder / "x.flac", format="FLAC")
    tone(folder / "y.wav")
    s = read_manifest(write_csv(folder / "l.csv", [["filename"], ["x.wav"], ["y.wav"]]))
    assert s.paths == (str(folder / "x.flac"), str(folder / "y.wav"))  # exact name first


def test_manifest_ambiguous_stem_is_an_error(tmp_path):
    folder = tmp_path / "both"
    tone(folder / "x.flac", format="FLAC")
    tone(folder / "x.ogg", format="OGG")
    with pytest.raises(SoundNetError, match=r"line 2: x.wav does not exist and several files share its stem"):
        read_manifest(write_csv(folder / "l.csv", [["path"], ["x.wav"]]))


def test_manifest_missing_files_are_an_error_naming_them(clips):
    rows = [["path", "label"]] + [[f"gone{i}.wav", "a"] for i in range(8)] + [["a.wav", "b"]]
    manifest = write_csv(clips / "l.csv", rows)
    with pytest.raises(SoundNetError) as err:
        read_manifest(manifest)
    message = str(err.value)
    assert message.startswith(str(manifest))
    assert "8 of 9 listed files do not exist" in message
    assert "gone0.wav" in message and "gone4.wav" in message and "and 3 more" in message
    assert "gone5.wav" not in message


def test_manifest_missing_files_skipped_when_allowed(clips, caplog):
    manifest = write_csv(clips / "l.csv", [["path", "label"], ["gone.wav", "x"], ["a.wav", "y"]])
    with caplog.at_level(logging.WARNING):
        s = read_manifest(manifest, allow_missing=True)
    assert s.paths == (str(clips / "a.wav"),)
    assert s.missing == (str(clips / "gone.wav"),)
    assert s.class_names == ("x", "y")  # names come from every row, listed or skipped
    assert s.labels().tolist() == [1]
    assert "skipping 1 of 2 listed files" in caplog.text and "gone.wav" in caplog.text


def test_manifest_all_missing_is_an_error_even_when_allowed(clips):
    manifest = write_csv(clips / "l.csv", [["path"], ["gone.wav"]])
    with pytest.raises(SoundNetError, match="none of the 1 listed files exist"):
        read_manifest(manifest, allow_missing=True)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["file", "label"], ["a.wav", "x"]], r"no path column \(one of \('path', 'filename'\)\)"),
        ([["path"]], "lists no files"),
        ([["path", "label"], ["a.wav", "x"], ["b.wav", ""]], "line 3: empty label"),
        ([["path", "label"], ["a.wav", "-1"]], "line 2: negative label -1"),
        ([["path", "fold"], ["a.wav", "one"]], "line 2: fold 'one' is not an integer"),
        ([["path", "label"], ["a.wav"]], "line 2 has 1 fields, the header 2"),
        ([["path"], [""]], None),  # a blank line is skipped: nothing left
        ([["path"], ["a.wav"], ["./a.wav"]], r"line 3 lists .*a.wav again \(first on line 2\)"),
        ([["path", "Path"], ["a.wav", "a.wav"]], "duplicate column names"),
        (
            [["path", "target", "category"], ["a.wav", "0", "dog"], ["b.wav", "0", "cat"]],
            "label 0 is named 'dog' on line 2 and 'cat' on line 3",
        ),
    ],
)
def test_manifest_errors(clips, rows, message):
    manifest = write_csv(clips / "bad.csv", rows)
    with pytest.raises(SoundNetError, match=message or "lists no files") as err:
        read_manifest(manifest)
    assert str(manifest) in str(err.value)


def test_manifest_not_found_and_empty(tmp_path):
    with pytest.raises(SoundNetError, match="absent.csv: manifest not found"):
        read_manifest(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SoundNetError, match="empty.csv: empty manifest"):
        read_manifest(tmp_path / "empty.csv")


def test_manifest_tolerates_a_bom_and_padded_cells(clips):
    (clips / "bom.csv").write_text("\ufeffPath , Label\n a.wav , dog \n\nb.wav,cat\n", encoding="utf-8")
    s = read_manifest(clips / "bom.csv")
    assert s.paths == (str(clips / "a.wav"), str(clips / "b.wav"))
    assert s.class_names == ("cat", "dog") and s.label_column == "Label"


# ------------------------------------------------------------------------------------------
# InputSet invariants


def test_input_set_validates_labels(tmp_path):
    with pytest.raises(SoundNetError, match="label 2 is not in 0..1"):
        InputSet(items=(InputItem("/a", label=2),), class_names=("x", "y"))
    with pytest.raises(SoundNetError, match="no class names"):
        InputSet(items=(InputItem("/a", label=0),))
    with pytest.raises(SoundNetError, match="some items have no label"):
        InputSet(items=(InputItem("/a", label=0), InputItem("/b")), class_names=("x",))
    with pytest.raises(SoundNetError, match="some items have a fold and others not"):
        InputSet(items=(InputItem("/a", fold=1), InputItem("/b")))
    with pytest.raises(SoundNetError, match="listed twice"):
        InputSet(items=(InputItem("/a"), InputItem("/a")))


def test_input_item_is_immutable_and_hashable():
    meta = {"take": "A"}
    item = InputItem("/a.wav", meta=meta, label=1, fold=2)
    meta["take"] = "B"  # the caller's dict is copied
    assert item.meta["take"] == "A"
    with pytest.raises(TypeError):
        item.meta["take"] = "C"  # type: ignore[index]
    assert len({item, InputItem("/a.wav", meta={"take": "A"}, label=1, fold=2)}) == 1


# ------------------------------------------------------------------------------------------
# the official ESC-50 metadata, as is


@needs_esc50
def test_esc50_manifest_as_is():
    rows = esc50_rows()
    s = read_manifest(ESC50_CSV, audio_dir=ESC50_AUDIO)
    assert len(s) == 2000
    assert s.label_column == "target" and s.fold_column == "fold"
    # the stems match: the CSV says .wav, the files are .flac
    assert s.paths == tuple(str(ESC50_AUDIO / (r["filename"][:-4] + ".flac")) for r in rows)
    assert s.labels().tolist() == [int(r["target"]) for r in rows]
    assert len(s.class_names) == 50
    assert s.class_names[0] == "dog" and s.class_names[1] == "rooster" and s.class_names[49] == "hand_saw"
    assert all(s.class_names[int(r["target"])] == r["category"] for r in rows)  # indexed by target
    folds = s.folds()
    assert sorted(set(folds.tolist())) == [1, 2, 3, 4, 5]
    assert np.bincount(folds).tolist() == [0, 400, 400, 400, 400, 400]
    assert np.bincount(s.labels()).tolist() == [40] * 50
    assert s.meta_columns == ("fold", "target", "category", "esc10", "src_file", "take")
    assert set(s.column("esc10")) == {"True", "False"}
    assert s.items[0].meta == {
        "fold": 1, "target": 0, "category": "dog", "esc10": "True", "src_file": 100032, "take": "A",
    }  # fmt: skip


@needs_esc50
def test_esc50_manifest_against_a_partial_folder(tmp_path):
    esc10 = [r for r in esc50_rows() if r["esc10"] == "True"]
    folder = tmp_path / "esc10"
    folder.mkdir()
    for r in esc10:
        stem = r["filename"][:-4]
        os.symlink(ESC50_AUDIO / f"{stem}.flac", folder / f"{stem}.flac")
    with pytest.raises(SoundNetError, match="1600 of 2000 listed files do not exist"):
        read_manifest(ESC50_CSV, audio_dir=folder)
    s = read_manifest(ESC50_CSV, audio_dir=folder, allow_missing=True)
    assert len(s) == 400 and len(s.missing) == 1600
    assert len(s.class_names) == 50  # still ESC-50's numbering and names
    assert sorted({s.class_names[i] for i in s.labels()}) == sorted({r["category"] for r in esc10})


# ------------------------------------------------------------------------------------------
# bundled ESC-10 demo clips


def test_bundled_clips_and_manifest():
    clips = bundled_clips()
    assert len(clips) == 6 and all(p.suffix == ".flac" and p.parent == DEMO_DIR for p in clips)
    assert sum(p.stat().st_size for p in DEMO_DIR.iterdir()) < ONE_MEGABYTE
    s = read_manifest(bundled_manifest())
    assert sorted(s.paths) == [str(p) for p in clips]
    assert s.class_names == tuple(sorted(s.class_names)) and len(set(s.class_names)) == 6
    assert [s.class_names[label] for label in s.labels()] == s.column("category")
    for path in clips:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.duration) == (16_000, 1, "FLAC", 5.0)


@needs_esc50
def test_bundled_clips_are_esc10_copies_with_attribution():
    by_stem = {r["filename"][:-4]: r for r in esc50_rows()}
    attribution = (DEMO_DIR / "ATTRIBUTION.md").read_text()
    assert "https://creativecommons.org/licenses/by/3.0/" in attribution
    assert "Piczak" in attribution and "CC BY 3.0" in attribution and "16 kHz" in attribution
    demo = read_manifest(bundled_manifest())
    for item in demo:
        path = Path(item.path)
        row = by_stem[path.stem]
        assert row["esc10"] == "True"  # CC BY 3.0: the only ESC-50 audio allowed in the repo
        assert path.read_bytes() == (ESC50_AUDIO / path.name).read_bytes()
        assert row["category"] == item.meta["category"] and int(row["fold"]) == item.fold
        assert f"`{path.name}` | {row['category']} |" in attribution
        assert f"[{row['src_file']}](https://freesound.org/s/{row['src_file']}/)" in attribution
