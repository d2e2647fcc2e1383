"""Running the real ``soundnet8 extract`` as a subprocess, and watching its process group (tests only).

Processes are found through /proc (psutil is not a dependency); a zombie (state Z) is dead, only
not yet reaped (in a container, init may never reap it), so it does not count as alive.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np

from soundnet8.engine.inputs import bundled_clips

COMMAND = [sys.executable, "-m", "soundnet8.engine.cli", "extract"]
# one small layer: the point is the job, not the features; one graph: runs compared for equality
# must not differ by the variant each run timed fastest (the variants agree to ~1e-6, not bitwise)
FAST = ["--layers", "pool5", "--progress", "none", "--graph", "plain"]


def corpus(folder: Path, copies: int) -> Path:
    """``copies`` x the 6 bundled clips (real 5 s ESC-10 audio) under distinct names in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for clip in bundled_clips():
            shutil.copyfile(clip, folder / f"c{k:03d}_{clip.name}")
    return folder


def extract_args(inputs: Sequence[Path | str], store: Path, model: Path, *extra: str) -> list[str]:
    return [*COMMAND, *map(str, inputs), "-o", str(store), "--model", str(model), "--provider", "cpu", *extra]


def start(args: Sequence[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """The command in its own session, so that its process group is its own (pgid = its pid), with SIGINT
    at its default as in a terminal's foreground job: a test run started in the background (``cmd &`` in a
    script) has SIGINT ignored, which the command would inherit and, rightly, keep."""
    return subprocess.Popen(list(args), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=_default_sigint, **kwargs)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(args: Sequence[str], timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)


def alive_in_group(pgid: int) -> list[int]:
    """Pids of the living (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def segments(store: Path) -> list[Path]:
    parts = store.with_name(store.name + ".parts")
    return sorted(parts.glob("seg-*.h5")) if parts.is_dir() else []


def group_gone_within(pgid: int, seconds: float) -> list[int]:
    """Wait up to ``seconds`` for the group to empty; the pids still alive then."""
    deadline = time.monotonic() + seconds
    while alive_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive_in_group(pgid)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(store: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    """The store's clip paths (in order), each path's features (layers/pools concatenated), its errors."""
    with h5py.File(store, "r") as f:
        paths = [p.decode() for p in f["clips/path"][()]]
        keys = sorted(f"{layer}/{pool}" for layer in f["features"] for pool in f["features"][layer])
        stacked = np.concatenate([f["features"][k][()] for k in keys], axis=1) if keys else np.zeros((len(paths), 0))
        errors = dict(zip((p.decode() for p in f["errors/path"][()]), (m.decode() for m in f["errors/message"][()])))
    return paths, dict(zip(paths, stacked)), errors


def assert_same_rows(store: Path, reference: Path) -> None:
    """Every clip of ``reference`` exactly once in ``store``, with equal features."""
    paths, features, errors = rows(store)
    ref_paths, ref_features, ref_errors = rows(reference)
    assert len(paths) == len(set(paths)), "a clip is stored twice"
    assert sorted(paths) == sorted(ref_paths)
    assert errors == ref_errors
    for path in ref_paths:
        np.testing.assert_array_equal(features[path], ref_features[path], err_msg=path)
