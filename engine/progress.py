"""Progress of a long job: a redrawn bar on a terminal, a line every 30 s in a batch log, or nothing.

A bar redrawn per clip fills a batch log (181 KB for 2,000 clips, issue 12), so ``AUTO`` draws the bar
only when the stream is a terminal and otherwise prints one self-contained line every
:data:`LOG_INTERVAL_S` seconds plus a final line. The line's text comes from pure functions
(:func:`format_line`, :func:`format_final`) so it can be tested without a job.
"""

from __future__ import annotations

import enum
import sys
import time
from dataclasses import dataclass
from typing import TextIO

LOG_INTERVAL_S = 30.0
"""Seconds between two progress lines in ``LOG`` mode."""

LOG_PREFIX = "soundnet8: "  # the CLI's logging format, so progress lines read like the rest of the log


class ProgressMode(enum.Enum):
    AUTO = "auto"  # BAR when the stream is a terminal, else LOG
    BAR = "bar"
    LOG = "log"
    NONE = "none"


@dataclass(frozen=True)
class ProgressOptions:
    mode: ProgressMode = ProgressMode.AUTO
    interval: float = LOG_INTERVAL_S  # LOG mode: seconds between lines (tests pass a shorter one)


@dataclass(frozen=True)
class Snapshot:
    """Where a job stands: counts so far and the seconds since it started."""

    done: int
    total: int
    failed: int
    elapsed: float
    audio_seconds: float

    @property
    def clips_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def audio_hours_per_second(self) -> float:
        return self.audio_seconds / 3600 / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the mean rate so far; None before the first clip."""
        rate = self.clips_per_second
        return max(self.total - self.done, 0) / rate if rate > 0 else None


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_line(s: Snapshot) -> str:
    """One progress line: done/total, rates, ETA and failures."""
    percent = 100.0 * s.done / s.total if s.total else 100.0
    return (f"{LOG_PREFIX}{s.done}/{s.total} clips ({percent:.1f}%), {s.clips_per_second:.1f} clips/s, "
            f"{s.audio_hours_per_second:.3f} audio-h/s, ETA {format_duration(s.eta)}, {s.failed} failed")


def format_final(s: Snapshot) -> str:
    """The last line of a job: what was done, in how long, at what rate ("stopped" if cut short)."""
    word = "done" if s.done >= s.total else "stopped"
    return (f"{LOG_PREFIX}{word}: {s.done}/{s.total} clips in {format_duration(s.elapsed)}, "
            f"{s.clips_per_second:.1f} clips/s, {s.audio_hours_per_second:.3f} audio-h/s, {s.failed} failed")


def resolve_mode(mode: ProgressMode, stream: TextIO) -> ProgressMode:
    """AUTO -> BAR on a terminal, LOG otherwise (a pipe, a file, a closed stream)."""
    if mode is not ProgressMode.AUTO:
        return mode
    try:
        return ProgressMode.BAR if stream.isatty() else ProgressMode.LOG
    except (AttributeError, ValueError):  # no isatty, or a closed stream: not a terminal
        return ProgressMode.LOG


class Progress:
    """Counts clips and reports them as ``options`` says; use as a context manager (or call close())."""

    def __init__(self, total: int, options: ProgressOptions = ProgressOptions(), stream: TextIO | None = None,
                 clock=time.perf_counter) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(options.mode, self.stream)
        self.interval = options.interval
        self.total = total
        self.done = self.failed = 0
        self.audio_seconds = 0.0
        self._clock = clock
        self._started = self._last_line = clock()
        self._bar = None
        self._closed = False
        if self.mode is ProgressMode.BAR:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="clip", dynamic_ncols=True, smoothing=0.1, file=self.stream)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.done, self.total, self.failed, self._clock() - self._started, self.audio_seconds)

    def update(self, *, failed: bool = False, audio_seconds: float = 0.0) -> None:
        """One more clip done (``failed``: recorded as an error)."""
        self.done += 1
        self.failed += int(failed)
        self.audio_seconds += audio_seconds
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{self.snapshot().audio_hours_per_second:.2f} audio-h/s, "
                                      f"{self.failed} failed", refresh=False)
        elif self.mode is ProgressMode.LOG:
            now = self._clock()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._print(format_line(self.snapshot()))

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar, or print the final line (LOG mode); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode is ProgressMode.LOG:
            self._print(format_final(self.snapshot()))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
