"""The one exception type of soundnet8, and the exit statuses of its command line.

Every error the package raises on purpose is a :class:`SoundNetError` (or a subclass), so callers
can catch one type; messages name the file or object concerned and say what is wrong.
A command turns an uncaught SoundNetError into :attr:`ExitCode.FATAL` (see soundnet8.engine.cli).
"""

from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    """The exit statuses every ``soundnet8`` command shares (a script can tell the cases apart)."""

    OK = 0
    FATAL = 1  # nothing (more) could be done: bad arguments, missing model, unreadable store...
    USAGE = 2  # argparse's own status for a malformed command line
    SOME_FAILED = 3  # the job finished, but some inputs failed (they are recorded, e.g. /errors)
    INTERRUPTED = 130  # Ctrl-C; what was written so far is kept and a re-run resumes
    TERMINATED = 143  # SIGTERM (a scheduler stopping the job): handled like Ctrl-C, 128 + 15 as a shell reports it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that the same code saves the work done: schedulers
    (SLURM, Kubernetes) send SIGTERM and wait a grace period before SIGKILL."""


class SoundNetError(Exception):
    """Base class of every deliberate soundnet8 error."""


class WeightsError(SoundNetError):
    """The pretrained weights are missing, altered, or not the expected arrays."""


class ModelError(SoundNetError):
    """The ONNX model cannot be built, found, or run (including provider problems)."""


class AudioError(SoundNetError):
    """One audio file cannot be turned into a model input; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StoreError(SoundNetError):
    """A feature store is missing, malformed, or incompatible with the request."""
