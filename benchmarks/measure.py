"""Timing primitives: repeated runs summarised as median/min/max, results as plain rows, peak RSS.

Machines are shared, so a single timing means little: every figure is the median of several timed
runs after untimed warm-up, reported with its min and max, and ratios between rows of the same run
are the numbers to quote.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Summary of repeated measurements of one quantity (e.g. clips/s)."""

    median: float
    min: float
    max: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> Stat:
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("a Stat needs at least one value")
        return cls(statistics.median(values), min(values), max(values), values)

    def scaled(self, factor: float) -> Stat:
        return Stat.of(v * factor for v in self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "values": list(self.values)}


@dataclass(frozen=True)
class Row:
    """One measured configuration: its section, a short name, every setting, and the figure."""

    section: str
    name: str
    params: Mapping[str, Any]
    unit: str
    stat: Stat
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "name": self.name, "params": dict(self.params), "unit": self.unit,
                **self.stat.to_dict(), "extra": dict(self.extra)}


@dataclass(frozen=True)
class Skipped:
    """A measurement that could not be made here (e.g. CUDA without onnxruntime-gpu), and why."""

    section: str
    name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "name": self.name, "reason": self.reason}


# --- peak memory ----------------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the process ended while we listed /proc
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # ended meanwhile
        return 0


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum of RSS over ``pid`` and all its descendants, the largest single RSS), in bytes."""
    children = _children_map()
    total = largest = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        rss = _rss_bytes(p)
        total += rss
        largest = max(largest, rss)
        stack.extend(children.get(p, ()))
    return total, largest


class PeakRSS:
    """Samples the RSS of a process tree in a background thread; ``peak`` is the largest sum seen.

    Sampling (every ``interval`` s) can miss a short spike; the kernel's exact per-process figure
    (``ru_maxrss``) is reported alongside by the caller.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak = self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total, largest = tree_rss(self.pid)
            self.peak, self.peak_single = max(self.peak, total), max(self.peak_single, largest)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
