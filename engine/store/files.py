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
import io
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

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
    try:
        fsync(tmp)  # where writes are delayed, a full disk shows here (ENOSPC)
        os.replace(tmp, final)
        fsync(final.parent)  # the rename itself must survive a power cut
    except OSError as exc:
        raise write_error(final, exc) from exc


PAUSE_ENV = "SOUNDNET8_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "SOUNDNET8_TEST_PAUSE_MARKER"
PAUSE_SECONDS_ENV = "SOUNDNET8_TEST_PAUSE_SECONDS"


def test_pause(point: str) -> None:
    """A hook for crash tests: stop at ``point`` when $SOUNDNET8_TEST_PAUSE_AT names it.

    $SOUNDNET8_TEST_PAUSE_AT is a comma-separated list of points (``merge``: a join's temp file is
    partly written; ``consolidate``: STORE.h5.tmp is complete, not yet published; ``consolidated``:
    STORE.h5 is replaced, its merged segments not yet deleted; ``segment``: a segment was just
    published, which with a short pause slows a small job enough for a signal to land mid-run). At a named
    point the process writes its pid to $SOUNDNET8_TEST_PAUSE_MARKER (if set) and sleeps
    $SOUNDNET8_TEST_PAUSE_SECONDS (default 60), so a test can SIGKILL it at a known moment.
    Unset (always, outside tests), it costs one environment lookup.
    """
    if point not in os.environ.get(PAUSE_ENV, "").split(","):
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()} {point}\n")
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "60")))


test_pause.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever pytest collects


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
            holder = os.pread(self._fd, 256, 0).decode("utf-8", "replace").split()
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder[0]})" if holder else ""
                host = f"on host {' '.join(holder[1:])}; " if len(holder) > 1 else ""
                raise StoreError(
                    f"{files.store}: another process{who} is writing this store ({host}lock {self.path} is held); "
                    "wait for it to finish or stop it"
                ) from None
            raise StoreError(f"{files.store}: cannot lock {self.path}: {exc}") from exc
        # pid and host are informational only (for the message above); the flock is what excludes
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock


class _Sink(io.RawIOBase):
    """The file object HDF5 writes a new file through: it never reports a failed write to HDF5.

    Why: HDF5 is left inconsistent by a write error (a full disk, a file-size limit): closing the
    file fails half-way and the library's exit handler later closes freed objects, a segmentation
    fault at exit (HDF5 2.0 / h5py 3.16). Here the first OSError is recorded and later writes are
    discarded, so HDF5 always closes cleanly; :class:`NewFile` then raises the recorded error."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._raw = open(path, "w+b", buffering=0)  # unbuffered: every write's error is seen here
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer: Any) -> int:
        return self._raw.readinto(buffer)  # short reads (of discarded bytes) are zero-filled by h5py

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        done = 0
        if self.error is None:
            try:
                # an unbuffered write may be short (the disk filled part-way); h5py ignores the count,
                # so write the rest here and call a write that makes no progress a full disk
                while done < n:
                    wrote = self._raw.write(view[done:])
                    if not wrote:
                        raise OSError(errno.ENOSPC, "short write: no space left")
                    done += wrote
                return n
            except OSError as exc:
                self.error = exc
        self._raw.seek(n - done, os.SEEK_CUR)  # the file is abandoned: pretend, so HDF5 carries on to close
        return n

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._raw.truncate(size)
            except OSError as exc:
                self.error = exc
        return self.tell() if size is None else size

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        self._raw.close()
        super().close()


class NewFile:
    """``h5py.File(path, "w", **kwargs)`` that survives a full disk: ``with NewFile(p) as f: ...``.

    A write failure is raised as :class:`StoreError` naming the file and the cause once HDF5 has
    closed the file (see :class:`_Sink`), or earlier by :meth:`check`, which long writers call between
    steps so that they stop soon after the disk fills. The partial file is removed on any failure."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.path = Path(path)
        self._kwargs = kwargs
        self._sink: _Sink | None = None
        self._file: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        self._sink = _Sink(self.path)
        try:
            self._file = h5py.File(self._sink, "w", **self._kwargs)
        except BaseException:
            self._sink.close()
            unlink(self.path)
            raise
        return self._file

    def check(self) -> None:
        """Raise the write failure, if there was one (HDF5 has not seen it)."""
        if self._sink is not None and self._sink.error is not None:
            raise write_error(self.path, self._sink.error)

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._sink is not None and self._file is not None
        try:
            self._file.close()
        finally:
            self._sink.close()
            if exc_type is not None or self._sink.error is not None:
                unlink(self.path)  # never leave a partial file under a name a reader could pick up
        if exc_type is None:
            self.check()
        return False


def write_error(path: Path, exc: OSError) -> StoreError:
    """The error for a failed write of ``path`` (says when the disk is full)."""
    full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    cause = "the disk is full or a file-size limit was reached" if full else "writing failed"
    return StoreError(
        f"{path}: cannot write: {cause} ({exc.strerror or exc}); what was stored before is kept: "
        "free space and re-run the same command to resume"
    )
