"""Progress reporting: pure formatting, the LOG mode's pacing, and the real command in a batch log."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from soundnet8.engine.inputs import discover
from soundnet8.engine.modelfile import ensure_model
from soundnet8.engine.pipeline import ExtractOptions, extract
from soundnet8.engine.progress import (
    LOG_INTERVAL_S, LOG_PREFIX, Progress, ProgressMode, ProgressOptions, Snapshot, format_duration,
    format_final, format_line, resolve_mode,
)
from soundnet8.engine.request import Request
from soundnet8.engine.session import Provider

LINE = re.compile(r"\d+/\d+ clips \(")  # a periodic progress line
FINAL = re.compile(r"(done|stopped): \d+/\d+ clips in ")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- pure functions ------------------------------------------------------------------------------

def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(59.6) == "0:01:00"
    assert format_duration(3 * 3600 + 7 * 60 + 5) == "3:07:05"
    assert format_duration(None) == "?"


def test_snapshot_rates_and_eta():
    s = Snapshot(done=100, total=400, failed=2, elapsed=50.0, audio_seconds=100 * 5.0)
    assert s.clips_per_second == pytest.approx(2.0)
    assert s.audio_hours_per_second == pytest.approx(500 / 3600 / 50)
    assert s.eta == pytest.approx(150.0)  # 300 clips left at 2 clips/s
    assert Snapshot(0, 10, 0, 0.0, 0.0).eta is None
    assert Snapshot(0, 10, 0, 0.0, 0.0).clips_per_second == 0.0


def test_format_line_has_every_figure():
    line = format_line(Snapshot(done=100, total=400, failed=2, elapsed=50.0, audio_seconds=100 * 36.0))
    assert line.startswith(LOG_PREFIX)
    assert "100/400 clips (25.0%)" in line
    assert "2.0 clips/s" in line
    assert "0.020 audio-h/s" in line  # 3,600 s of audio in 50 s
    assert "ETA 0:02:30" in line
    assert "2 failed" in line
    assert "\r" not in line and "\n" not in line


def test_format_final_says_done_or_stopped():
    assert "done: 400/400 clips in 0:01:40" in format_final(Snapshot(400, 400, 0, 100.0, 0.0))
    stopped = format_final(Snapshot(10, 400, 1, 5.0, 0.0))
    assert "stopped: 10/400" in stopped and "1 failed" in stopped


def test_auto_mode_is_a_bar_on_a_terminal_and_a_log_elsewhere():
    assert resolve_mode(ProgressMode.AUTO, Terminal()) is ProgressMode.BAR
    assert resolve_mode(ProgressMode.AUTO, io.StringIO()) is ProgressMode.LOG
    closed = io.StringIO()
    closed.close()
    assert resolve_mode(ProgressMode.AUTO, closed) is ProgressMode.LOG
    for mode in (ProgressMode.BAR, ProgressMode.LOG, ProgressMode.NONE):
        assert resolve_mode(mode, Terminal()) is mode and resolve_mode(mode, io.StringIO()) is mode


# --- pacing --------------------------------------------------------------------------------------

def test_log_mode_prints_one_line_per_interval_and_a_final_line():
    clock, stream = FakeClock(), io.StringIO()
    with Progress(1000, ProgressOptions(ProgressMode.LOG), stream=stream, clock=clock) as progress:
        for i in range(1000):  # 1,000 clips over 100 simulated seconds
            clock.now = (i + 1) * 0.1
            progress.update(failed=(i % 100 == 0), audio_seconds=5.0)
    lines = stream.getvalue().splitlines()
    assert len([x for x in lines if LINE.search(x)]) == int(100 // LOG_INTERVAL_S)
    assert FINAL.search(lines[-1]) and "done: 1000/1000" in lines[-1] and "10 failed" in lines[-1]
    assert "10.0 clips/s" in lines[-1]
    assert "300/1000 clips" in lines[0]  # the first line after 30 s, not before


def test_shorter_interval_through_the_options():
    clock, stream = FakeClock(), io.StringIO()
    with Progress(10, ProgressOptions(ProgressMode.LOG, interval=1.0), stream=stream, clock=clock) as progress:
        for i in range(10):
            clock.now = float(i + 1)
            progress.update()
    assert len(stream.getvalue().splitlines()) == 11  # one per second + the final line


def test_none_mode_prints_nothing_and_bar_mode_draws_a_bar():
    stream = io.StringIO()
    with Progress(5, ProgressOptions(ProgressMode.NONE), stream=stream) as progress:
        for _ in range(5):
            progress.update()
    assert stream.getvalue() == ""
    stream = Terminal()
    with Progress(5, ProgressOptions(ProgressMode.BAR), stream=stream) as progress:
        for _ in range(5):
            progress.update()
    assert "5/5" in stream.getvalue() and not FINAL.search(stream.getvalue())


def test_extract_options_accept_the_old_bool():
    assert ExtractOptions(progress=False).progress_options().mode is ProgressMode.NONE
    assert ExtractOptions(progress=True).progress_options().mode is ProgressMode.AUTO
    options = ProgressOptions(ProgressMode.LOG, interval=2.0)
    assert ExtractOptions(progress=options).progress_options() == options


# --- through the engine and the real command ----------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return ensure_model()  # the cached export: the engine, not torch


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory) -> Path:
    """30 short real clips (cut from the bundled ESC-10 ones), so a per-clip redraw would show."""
    from soundnet8.engine.inputs import bundled_clips

    folder = tmp_path_factory.mktemp("many")
    clips = bundled_clips()
    for i in range(30):
        audio, rate = sf.read(clips[i % len(clips)], dtype="float32")
        sf.write(folder / f"c{i:02d}.flac", audio[: rate * (1 + i % 2)], rate)
    return folder


def test_extract_passes_the_interval_through(model, many_clips, tmp_path, capsys):
    options = ExtractOptions(request=Request(layers=("pool5",)), provider=Provider.CPU, workers=1,
                             progress=ProgressOptions(ProgressMode.LOG, interval=0.0))
    extract(discover([many_clips]), tmp_path / "s.h5", model, options)
    err = capsys.readouterr().err.splitlines()
    assert len([x for x in err if LINE.search(x)]) == 30  # interval 0: a line per clip
    assert "done: 30/30 clips" in err[-1]


def _run_cli(folder: Path, store: Path, model_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "soundnet8.engine.cli", "extract", str(folder), "-o", str(store),
           "--model", str(model_path), "--layers", "pool5", "--workers", "1", "--min-seconds", "0",
           "--provider", "cpu", *extra]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)  # stderr is a pipe: not a terminal
    return proc, time.monotonic() - started


@pytest.mark.parametrize("extra", [(), ("--progress", "auto"), ("--progress", "log")])
def test_batch_log_is_a_few_lines_not_a_redraw_per_clip(model, many_clips, tmp_path, extra):
    proc, seconds = _run_cli(many_clips, tmp_path / "s.h5", model.path, *extra)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no bar redraws
    lines = [x for x in proc.stderr.splitlines() if LINE.search(x)]
    assert len(lines) <= seconds / LOG_INTERVAL_S + 1  # bounded by time, not by the 30 clips
    finals = [x for x in proc.stderr.splitlines() if FINAL.search(x)]
    assert len(finals) == 1 and "done: 30/30 clips" in finals[0] and "0 failed" in finals[0]
    assert len(proc.stderr.splitlines()) <= 8  # a few lines in all (the first use also logs the graph timing)


@pytest.mark.parametrize("extra", [("--progress", "none"), ("--no-progress",)])
def test_no_progress_prints_no_progress(model, many_clips, tmp_path, extra):
    proc, _ = _run_cli(many_clips, tmp_path / "s.h5", model.path, *extra)
    assert proc.returncode == 0, proc.stderr
    assert not LINE.search(proc.stderr) and not FINAL.search(proc.stderr) and "\r" not in proc.stderr


def test_bar_mode_forced_in_a_pipe_draws_the_bar(model, many_clips, tmp_path):
    proc, _ = _run_cli(many_clips, tmp_path / "s.h5", model.path, "--progress", "bar")
    assert proc.returncode == 0, proc.stderr
    assert "30/30" in proc.stderr and not FINAL.search(proc.stderr)
