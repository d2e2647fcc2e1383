"""The files next to a store and the protocol that keeps it crash-safe: lock, temp files, atomic publish.

``STORE.h5`` is only ever replaced whole, by ``os.replace`` of a complete, fsync'd file, so a
reader (plain h5py included) never sees a half-written store, whenever the writer is killed.

- ``STORE.h5.parts/seg-<run>-<k>.h5``: segments, small complete stores of one run's new rows,
  written as ``.h5.tmp`` and renamed once closed and fsync'd.
- ``STORE.h5.tmp``: consolidation output (see ``merge``).
- ``STORE.h5.<pid>.tmp``: the private temp file of ``write_arrays`` / ``update_store``.
- ``STORE.h5.lock``: ``flock``'d by the one process writing the store.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

PARTS_SUFFIX = ".parts"
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".h5"


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Make a closed file durable and atomically give it its final name."""
    fsync(tmp)
    os.replace(tmp, final)
    fsync(final.parent)  # the rename itself must survive a power cut


def unlink(path: Path) -> None:
    """Remove ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class StoreFiles:
    """The store and the files the writer keeps next to it."""

    store: Path

    @property
    def tmp(self) -> Path:
        return self.store.with_name(self.store.name + TMP_SUFFIX)

    @property
    def parts(self) -> Path:
        return self.store.with_name(self.store.name + PARTS_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.store.with_name(self.store.name + LOCK_SUFFIX)

    def segment(self, run_id: str, k: int) -> Path:
        """The final name of segment ``k`` of run ``run_id`` (run ids sort by start time)."""
        return self.parts / f"{SEGMENT_PREFIX}{run_id}-{k:06d}{SEGMENT_SUFFIX}"

    def segments(self) -> list[Path]:
        """Finished segments, oldest first (run ids sort by start time, k is zero-padded)."""
        if not self.parts.is_dir():
            return []
        return sorted(
            p for p in self.parts.iterdir() if p.name.startswith(SEGMENT_PREFIX) and p.name.endswith(SEGMENT_SUFFIX)
        )

    def stale_tmps(self) -> list[Path]:
        """Temporary files of writers that were killed (only ever removed under the lock)."""
        found = [self.tmp] if self.tmp.exists() else []
        if self.parts.is_dir():
            found += sorted(p for p in self.parts.iterdir() if p.name.endswith(TMP_SUFFIX))
        prefix = self.store.name + "."
        if self.store.parent.is_dir():
            for p in sorted(self.store.parent.iterdir()):
                # write_arrays / update_store temp files: STORE.h5.<pid>.tmp
                middle = p.name[len(prefix) : -len(TMP_SUFFIX)]
                if p.name.startswith(prefix) and p.name.endswith(TMP_SUFFIX) and middle.isdigit():
                    found.append(p)
        return found

    def private_tmp(self) -> Path:
        return self.store.with_name(f"{self.store.name}.{os.getpid()}{TMP_SUFFIX}")


class Lock:
    """An exclusive flock on STORE.h5.lock, held while a process writes the store."""

    def __init__(self, files: StoreFiles) -> None:
        self.path = files.lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise StoreError(
                    f"{files.store}: another process{who} is writing this store (lock {self.path} is held); "
                    "wait for it to finish or stop it"
                ) from None
            raise StoreError(f"{files.store}: cannot lock {self.path}: {exc}") from exc
        # the pid is informational only (for the message above); the flock is what excludes
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock
