"""Every exit path of the real ``soundnet8 extract``, each a subprocess on real audio (issue 10, item 2).

Interrupted, killed, doubled, reconfigured, starved of disk, or fed bad files, the command exits with
its documented status, keeps what was stored, and a re-run of the same command completes it with
every clip exactly once and the features of an uninterrupted run.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from soundnet8.engine.inputs import bundled_clips

from .extract_process import (
    FAST,
    alive_in_group,
    assert_same_rows,
    corpus,
    extract_args,
    group_gone_within,
    rows,
    run,
    segments,
    sha256,
    start,
    wait_for,
)

JOB = (*FAST, "--workers", "2", "--segment-rows", "4")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return corpus(tmp_path_factory.mktemp("clips"), 8)  # 48 clips: ~10 s of work for 2 workers


@pytest.fixture(scope="module")
def reference(tmp_path_factory, clips, onnx_path) -> Path:
    """The uninterrupted run every interrupted one must end up equal to."""
    store = tmp_path_factory.mktemp("reference") / "ref.h5"
    done = run(extract_args([clips], store, onnx_path, *JOB))
    assert done.returncode == 0, done.stderr
    return store


def kill_group(pgid: int) -> None:
    for pid in alive_in_group(pgid):
        os.kill(pid, signal.SIGKILL)


def resume_and_compare(clips: Path, store: Path, onnx_path: Path, reference: Path) -> None:
    again = run(extract_args([clips], store, onnx_path, *JOB))
    assert again.returncode == 0, again.stderr
    assert_same_rows(store, reference)
    assert segments(store) == []


def signal_mid_run(sig: signal.Signals, clips: Path, onnx_path: Path, store: Path):
    """Start a real extract, send ``sig`` to its whole process group once two segments are on disk;
    returns (exit status, stderr, seconds from the signal to the exit)."""
    # 0.3 s after each published segment: the job lasts seconds however fast the machine, so the
    # signal lands mid-run, not after the last clip
    env = {**os.environ, "SOUNDNET8_TEST_PAUSE_AT": "segment", "SOUNDNET8_TEST_PAUSE_SECONDS": "0.3"}
    proc = start(extract_args([clips], store, onnx_path, *JOB), env=env)
    try:
        wait_for(lambda: len(segments(store)) >= 2, 120, "two segments", proc)
        t0 = time.monotonic()
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        kill_group(proc.pid)
    assert group_gone_within(proc.pid, 5) == []
    return proc.returncode, err, took


@pytest.mark.slow
def test_sigint_mid_run_exits_130_keeps_the_work_and_a_rerun_completes(clips, reference, onnx_path, tmp_path):
    store = tmp_path / "out.h5"
    # what Ctrl-C does: the whole foreground group gets SIGINT
    returncode, err, took = signal_mid_run(signal.SIGINT, clips, onnx_path, store)
    assert returncode == 130, err
    assert took < 10, f"exit took {took:.1f} s"
    assert "interrupted" in err and "Traceback" not in err
    kept, _, _ = rows(store)  # readable, holds what was done
    assert 8 <= len(kept) < 48
    resume_and_compare(clips, store, onnx_path, reference)


@pytest.mark.slow
def test_sigterm_to_the_job_exits_143_keeps_the_work_and_a_rerun_completes(clips, reference, onnx_path, tmp_path):
    """What a scheduler does (SLURM's scancel or time limit, Kubernetes): SIGTERM to every process of
    the job, then SIGKILL after a grace period. The buffered clips are saved before the grace ends."""
    store = tmp_path / "out.h5"
    returncode, err, took = signal_mid_run(signal.SIGTERM, clips, onnx_path, store)
    assert returncode == 143, err
    assert took < 10, f"exit took {took:.1f} s"
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    kept, _, _ = rows(store)  # the store is consolidated: it holds what was done
    assert 8 <= len(kept) < 48 and segments(store) == []
    resume_and_compare(clips, store, onnx_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-run", "consolidate", "consolidated"])
def test_sigkill_then_resume_gives_every_clip_once(point, clips, reference, onnx_path, tmp_path):
    """mid-run: segments on disk; consolidate: STORE.h5.tmp complete, not yet published;
    consolidated: published, merged segments not yet deleted (their rows must not be added twice)."""
    store = tmp_path / "out.h5"
    marker = tmp_path / "paused"
    env = {**os.environ, "SOUNDNET8_TEST_PAUSE_AT": point, "SOUNDNET8_TEST_PAUSE_MARKER": str(marker)}
    if point == "mid-run":  # slowed down as in signal_mid_run, so the kill lands before the last clip
        env.update(SOUNDNET8_TEST_PAUSE_AT="segment", SOUNDNET8_TEST_PAUSE_SECONDS="0.3")
    proc = start(extract_args([clips], store, onnx_path, *JOB), env=env)
    try:
        if point == "mid-run":
            wait_for(lambda: len(segments(store)) >= 2, 120, "two segments", proc)
        else:
            wait_for(marker.exists, 180, f"the {point} pause", proc)
            assert store.with_name("out.h5.tmp").exists() == (point == "consolidate")
            assert segments(store), "the segments are still there at this point"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert group_gone_within(proc.pid, 10) == []
    finally:
        kill_group(proc.pid)
    resume_and_compare(clips, store, onnx_path, reference)


@pytest.mark.slow
def test_a_second_extract_on_the_same_store_fails_at_once(clips, reference, onnx_path, tmp_path):
    store = tmp_path / "out.h5"
    marker = tmp_path / "holding"
    # the first run holds the store, paused before publishing it, for as long as the second needs
    env = {**os.environ, "SOUNDNET8_TEST_PAUSE_AT": "consolidate", "SOUNDNET8_TEST_PAUSE_MARKER": str(marker),
           "SOUNDNET8_TEST_PAUSE_SECONDS": "40"}
    first = start(extract_args([clips], store, onnx_path, *JOB), env=env)
    try:
        wait_for(marker.exists, 180, "the first run holding the store", first)
        t0 = time.monotonic()
        second = run(extract_args([clips], store, onnx_path, *JOB))
        took = time.monotonic() - t0
        assert second.returncode == 1, second.stderr
        assert took < 30  # interpreter and model start-up, then the lock: no extraction
        message = second.stderr
        assert str(store) in message and "another process" in message
        assert f"pid {first.pid}" in message and socket.gethostname() in message
        assert first.poll() is None, "the first run must not be disturbed"
        _, err = first.communicate(timeout=240)
    finally:
        kill_group(first.pid)
    assert first.returncode == 0, err
    assert_same_rows(store, reference)


CHANGES = [  # (option, its value in the store, changed value, words the message must hold)
    ("--layers", "pool5", "pool2", ["layers", "pool5", "pool2"]),
    ("--pool", "mean", "max", ["pools", "mean", "max"]),
    ("--min-seconds", "0", "5", ["min_seconds", "0.0", "5.0"]),
    ("--mix", "first", "mean", ["mix", "first", "mean"]),
    ("--sample-rate", "resample", "native", ["sample_rate", "resample", "native"]),
    ("--compression", "gzip", "lzf", ["compression", "gzip", "lzf"]),
]
BASE = {"--layers": "pool5", "--pool": "mean", "--min-seconds": "0", "--mix": "first",
        "--sample-rate": "resample", "--compression": "gzip"}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, onnx_path) -> Path:
    store = tmp_path_factory.mktemp("small") / "small.h5"
    options = [x for pair in BASE.items() for x in pair]
    done = run(extract_args(bundled_clips()[:3], store, onnx_path, *options, "--workers", "1", "--progress", "none"))
    assert done.returncode == 0, done.stderr
    return store


@pytest.mark.parametrize(("option", "stored", "changed", "words"), CHANGES, ids=[c[0] for c in CHANGES])
def test_resume_with_a_changed_setting_is_refused(option, stored, changed, words, small_store, onnx_path, tmp_path):
    store = tmp_path / "store.h5"
    store.write_bytes(small_store.read_bytes())
    before = sha256(store)
    options = [x for key, value in {**BASE, option: changed}.items() for x in (key, value)]
    args = extract_args(bundled_clips()[:4], store, onnx_path, *options, "--workers", "1", "--progress", "none")
    refused = run(args)
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert str(store) in line and "cannot resume" in line
    for word in words:
        assert word in line, (word, line)
    assert sha256(store) == before
    fresh = run([*args, "--overwrite"])
    assert fresh.returncode == 0, fresh.stderr
    assert len(rows(store)[0]) == 4


def limited(max_bytes: int):
    """preexec_fn: files may not grow past ``max_bytes`` (writes beyond fail with EFBIG, as on a full disk)."""

    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.RLIM_INFINITY))

    return preexec


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["segment", "consolidation"])
def test_a_full_disk_is_exit_1_and_the_store_survives(stage, clips, onnx_path, tmp_path):
    store = tmp_path / "out.h5"
    first = run(extract_args(bundled_clips(), store, onnx_path, *FAST, "--workers", "1"))
    assert first.returncode == 0, first.stderr
    before, size = sha256(store), store.stat().st_size
    # a segment of 8 pool5 rows is ~30 kB, the store of 6 clips ~30 kB and of 54 clips ~45 kB
    limit = 20_000 if stage == "segment" else size + 10_000
    args = extract_args([clips, *bundled_clips()], store, onnx_path, *FAST, "--workers", "2", "--segment-rows", "8")
    full = run(args, preexec_fn=limited(limit))
    assert full.returncode == 1, full.stderr
    message = full.stderr.strip().splitlines()[-1]
    assert message.startswith("soundnet8 extract: error: ") and str(store) in message
    assert "the disk is full or a file-size limit was reached (File too large)" in message
    assert (".parts/seg-" in message) == (stage == "segment"), message
    assert "Traceback" not in full.stderr
    assert sha256(store) == before
    assert len(rows(store)[0]) == 6
    assert not store.with_name("out.h5.tmp").exists()
    again = run(args)
    assert again.returncode == 0, again.stderr
    paths = rows(store)[0]
    assert len(paths) == len(set(paths)) == 54


# --- bad inputs ---------------------------------------------------------------------------


def tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def header_only_wav(path: Path, rate: int = 16_000) -> Path:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 0)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def bad_inputs(folder: Path) -> tuple[dict[str, str], list[str]]:
    """A folder of bad files, each with the category its /errors reason must begin with, and good ones."""
    folder.mkdir()
    good = []
    for clip in bundled_clips()[:2]:
        (folder / clip.name).write_bytes(clip.read_bytes())
        good.append(clip.name)
    sf.write(folder / "short.wav", tone(0.1), 16_000)  # shorter than the trunk's receptive field: padded
    sf.write(folder / "two_seconds.wav", tone(2.0), 16_000)  # trunk valid, heads (~9.5 s) NaN
    (folder / "dir.wav").mkdir()  # a directory named like a file is searched, not read
    sf.write(folder / "dir.wav" / "inside.wav", tone(1.0), 16_000)
    good += ["short.wav", "two_seconds.wav", "dir.wav/inside.wav"]
    bad = {"empty.wav": "empty", "header_only.wav": "empty", "random.mp3": "not audio", "text.flac": "not audio",
           "nan.wav": "non-finite", "inf.wav": "non-finite", "fifo.wav": "not a file", "dangling.wav": "missing",
           "loop.wav": "unreadable", "through_a_file.wav": "unreadable", "one_sample.wav": "too short"}
    (folder / "empty.wav").write_bytes(b"")
    header_only_wav(folder / "header_only.wav")
    (folder / "random.mp3").write_bytes(np.random.default_rng(0).bytes(20_000))
    (folder / "text.flac").write_text("this is not audio\n" * 100)
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = tone(1.0)
        x[5000] = value
        sf.write(folder / name, x, 16_000, subtype="FLOAT")
    os.mkfifo(folder / "fifo.wav")  # must be refused without being opened (opening would block)
    (folder / "dangling.wav").symlink_to(folder / "gone.wav")
    (folder / "loop.wav").symlink_to(folder / "loop.wav")  # ELOOP, for root too
    (folder / "through_a_file.wav").symlink_to(folder / good[0] / "inner.wav")  # ENOTDIR, for root too
    sf.write(folder / "one_sample.wav", np.zeros(1, np.float32), 48_000)
    formats = sf.available_formats()
    for ext, fmt, subtype in [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"),
                              ("mp3", "MP3", "MPEG_LAYER_III"), ("ogg", "OGG", "VORBIS")]:
        if fmt not in formats:
            continue  # this libsndfile cannot write it; the others still run
        path = folder / f"truncated.{ext}"
        sf.write(path, np.tile(tone(3.0, 44_100), 1), 44_100, format=fmt, subtype=subtype)
        cut(path, 0.6)
        bad[path.name] = "truncated"
    return bad, good


@pytest.mark.slow
def test_bad_inputs_are_recorded_with_their_category_and_good_ones_stored(onnx_path, tmp_path):
    folder = tmp_path / "inputs"
    bad, good = bad_inputs(folder)
    assert {"truncated.wav", "truncated.flac", "truncated.ogg"} <= set(bad), "libsndfile writes these everywhere"
    store = tmp_path / "out.h5"
    args = extract_args([folder], store, onnx_path, "--layers", "pool5,scenes", "--min-seconds", "0",
                        "--progress", "none", "--workers", "2")
    done = run(args, timeout=180)
    assert done.returncode == 3, done.stderr
    paths, features, errors = rows(store)
    assert sorted(paths) == sorted(str(folder / name) for name in good)
    assert sorted(errors) == sorted(str(folder / name) for name in bad)
    for name, category in bad.items():
        assert errors[str(folder / name)].startswith(category), (name, errors[str(folder / name)])
    assert "gone.wav" in errors[str(folder / "dangling.wav")]
    with h5py.File(store, "r") as f:
        order = {p.decode(): i for i, p in enumerate(f["clips/path"][()])}
        row = order[str(folder / "two_seconds.wav")]
        assert np.isfinite(f["features/pool5/mean"][row]).all()
        assert np.isnan(f["features/scenes/mean"][row]).all()

    # fixed, a file is processed again with --retry-errors and its error row replaced
    fixed = folder / "truncated.wav"
    fixed.unlink()
    sf.write(fixed, tone(1.0, 44_100), 44_100)
    again = run([*args, "--retry-errors"], timeout=180)
    assert again.returncode == 3, again.stderr  # the others still fail
    paths, _, errors = rows(store)
    assert str(fixed) in paths and str(fixed) not in errors
    assert len(paths) == len(set(paths)) == len(good) + 1
    assert sorted(errors) == sorted(str(folder / name) for name in bad if name != "truncated.wav")
