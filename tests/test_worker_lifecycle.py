"""Processes started by soundnet8 die with it, however it ends (issue 10, item 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from soundnet8.engine.lifecycle import ORPHAN_EXIT_STATUS

from .extract_process import (
    FAST,
    alive_in_group,
    corpus,
    extract_args,
    group_gone_within,
    rows,
    run,
    segments,
    start,
    wait_for,
)


@pytest.mark.slow
def test_sigkill_of_extract_leaves_no_process_of_its_group(onnx_path, tmp_path):
    clips = corpus(tmp_path / "clips", 20)  # 120 clips: minutes of work for 2 workers
    store = tmp_path / "out.h5"
    proc = start(extract_args([clips], store, onnx_path, *FAST, "--workers", "2", "--segment-rows", "4"))
    try:
        # mid-run: both workers exist (main + 2 workers + multiprocessing's resource tracker) and
        # the first results are on disk
        wait_for(lambda: len(alive_in_group(proc.pid)) >= 4 and segments(store), 120, "workers and a segment", proc)
        workers = set(alive_in_group(proc.pid)) - {proc.pid}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        left = group_gone_within(proc.pid, 10)
        assert left == [], f"processes of the killed extract still alive 10 s later: {left} (workers were {workers})"
    finally:
        for pid in alive_in_group(proc.pid):
            os.kill(pid, signal.SIGKILL)


CHILD_OF_KILLED_PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from soundnet8.engine.lifecycle import subprocess_dies_with_parent
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             preexec_fn=subprocess_dies_with_parent())
    print(child.pid, flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_a_subprocess_started_like_the_model_export_dies_with_its_parent():
    # ensure_model() runs the one-time export with this preexec_fn: a killed job leaves no export running
    parent = subprocess.Popen([sys.executable, "-c", CHILD_OF_KILLED_PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert child in alive_in_group(parent.pid)
        parent.kill()
        parent.wait(10)
        assert group_gone_within(parent.pid, 10) == []
    finally:
        for pid in alive_in_group(parent.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    # the race the parent-death signal cannot cover: the parent died before the child armed it
    # (the child then has another parent than the one it was given)
    code = f"from soundnet8.engine.lifecycle import die_with_parent; die_with_parent({os.getpid() + 10**6}); print('lived')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == ORPHAN_EXIT_STATUS
    assert "lived" not in proc.stdout


def is_pool_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.slow
def test_a_killed_worker_is_exit_1_with_the_work_kept(onnx_path, tmp_path):
    # what the out-of-memory killer does: one worker vanishes; the job stops cleanly and resumes
    clips = corpus(tmp_path / "clips", 8)
    store = tmp_path / "out.h5"
    args = extract_args([clips], store, onnx_path, *FAST, "--workers", "2", "--segment-rows", "4")
    # 0.3 s after each published segment: the pool is still busy when its worker is killed
    proc = start(args, env={**os.environ, "SOUNDNET8_TEST_PAUSE_AT": "segment", "SOUNDNET8_TEST_PAUSE_SECONDS": "0.3"})
    try:
        wait_for(lambda: segments(store) and any(map(is_pool_worker, alive_in_group(proc.pid))), 120,
                 "a worker and a segment", proc)
        os.kill(next(filter(is_pool_worker, alive_in_group(proc.pid))), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        for pid in alive_in_group(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 1, err
    assert "a worker process died" in err and "Traceback" not in err
    assert group_gone_within(proc.pid, 10) == []
    kept = rows(store)[0]
    assert 4 <= len(kept) < 48
    again = run(args)
    assert again.returncode == 0, again.stderr
    paths = rows(store)[0]
    assert len(paths) == len(set(paths)) == 48
