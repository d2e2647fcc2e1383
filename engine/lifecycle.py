"""Helper processes die with the process that started them, however it ends (SIGKILL included).

A cluster preempts a job with SIGKILL, which no handler sees: without this, worker processes are
reparented to init and live on, holding memory and CPU until the node reboots. Two mechanisms:

* Linux: the parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), which the kernel sends when
  the thread that started the process exits. Pools and subprocesses are started from the main thread.
* Everywhere: a daemon thread that polls the parent pid and exits the process once it changed (the
  process was reparented), for platforms without the signal and for the race where the parent died
  before the signal was armed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 1.0
"""How often a child checks its parent is alive (the bound on its life after the parent's, off Linux)."""

ORPHAN_EXIT_STATUS = 70  # os.EX_SOFTWARE: the parent vanished


def _prctl():
    """libc's prctl, or None off Linux (dlopen(NULL): the interpreter is linked against libc)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def _arm_death_signal(prctl) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (``prctl`` None: no-op)."""
    if prctl is not None and prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")


def _exit_if_orphaned(parent_pid: int) -> None:
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT_STATUS)  # no cleanup to do: the parent owned every file


def _watch(parent_pid: int) -> None:
    stop = threading.Event()
    while not stop.wait(PARENT_POLL_S):
        _exit_if_orphaned(parent_pid)


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when ``parent_pid`` (its parent) dies: call first thing in a child.

    ``parent_pid`` is the parent's pid as the parent saw it, so a parent that died before this call
    (the child is then already reparented) is caught by the comparison."""
    _arm_death_signal(_prctl())
    _exit_if_orphaned(parent_pid)  # after arming: a death from here on sends the signal
    threading.Thread(target=_watch, args=(parent_pid,), name="soundnet8-parent-watch", daemon=True).start()


def subprocess_dies_with_parent():
    """A ``preexec_fn`` for :mod:`subprocess`: the child is killed when this process dies (Linux).

    Runs in the forked child before ``exec`` (the parent-death signal survives exec), so it only
    makes system calls (libc is looked up here, in the parent); off Linux it does nothing."""
    parent_pid = os.getpid()
    prctl = _prctl()

    def preexec() -> None:
        _arm_death_signal(prctl)
        _exit_if_orphaned(parent_pid)

    return preexec
