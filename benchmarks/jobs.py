"""Whole jobs timed as a user runs them: a fresh process, from interpreter start to exit.

Start-up is part of what a user waits for, and on short jobs it decides the comparison, so these
figures include it:

* :func:`extract_command`: the real ``soundnet8 extract --manifest M -o STORE`` command.
* :func:`seed_job`: the seed notebook's loop as a script (``python -m soundnet8.benchmarks.jobs``):
  import torch, build the model, load the weights, then per clip decode, resample, x256, tile, one
  forward pass, mean over time.

Both read the same files; the caller warms the page cache first (:func:`warm_page_cache`), so
neither pays for the disk the other already read.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from soundnet8.engine.errors import SoundNetError

JOB_TIMEOUT_S = 3600.0


def warm_page_cache(paths) -> int:
    """Read every file once (bytes discarded): both sides of a comparison then start from a warm cache."""
    return sum(len(Path(p).read_bytes()) for p in paths)


def _timed(cmd: list[str], what: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SoundNetError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return wall


def extract_command(manifest: str | Path, store: str | Path, model: str | Path | None = None) -> float:
    """Wall seconds of ``soundnet8 extract`` (engine defaults) over ``manifest`` into a fresh ``store``."""
    cmd = [sys.executable, "-m", "soundnet8.engine.cli", "extract", "--manifest", str(manifest), "-o", str(store),
           "--overwrite", "--progress", "none"]
    if model is not None:
        cmd += ["--model", str(model)]
    return _timed(cmd, "soundnet8 extract")


def seed_job(paths, threads: int, workdir: Path) -> float:
    """Wall seconds of the seed-style script over ``paths`` with ``threads`` PyTorch threads."""
    listing = workdir / "seed-job-paths.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return _timed([sys.executable, "-m", __name__, "--threads", str(threads), str(listing)], "seed-style job")


def _seed_main(listing: Path, threads: int) -> int:
    import torch

    from .baselines import seed_waveform, torch_model

    model = torch_model(threads)
    paths = listing.read_text().split("\n")[:-1]
    with torch.inference_mode():
        for path in paths:
            outputs = model(torch.from_numpy(seed_waveform(path))[None])
            [out[0].mean(dim=-1).numpy() for out in outputs]  # what the seed kept: means over time
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the seed notebook's loop over a list of files (soundnet8 bench)")
    parser.add_argument("listing", type=Path, help="a file with one audio path per line")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads")
    args = parser.parse_args(argv)
    return _seed_main(args.listing, args.threads)


if __name__ == "__main__":
    sys.exit(main())
