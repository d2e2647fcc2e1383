"""End to end: the engine's ``extract()`` (what ``soundnet8 extract`` runs) from a manifest into a store.

Each run is a fresh ``python -m soundnet8.benchmarks.e2e`` process, so its peak memory is its own:
the parent samples the RSS of the whole process tree (main + workers) while it runs, and the child
reports the kernel's ``ru_maxrss`` of itself and of its largest worker. Throughput is the engine's
own figure (``ExtractSummary``: clips over the time from the first task to the store's close,
consolidation included); the process's wall time (imports, model check) is kept beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from soundnet8.engine import arch
from soundnet8.engine.errors import SoundNetError

from .measure import PeakRSS


@dataclass(frozen=True)
class E2EJob:
    manifest: str
    store: str
    model_path: str
    provider: str = "cpu"
    workers: int = 0  # 0: one per core (the engine's default)
    threads: int = 1
    batch_size: int = 4
    layout: str = "auto"

    def params(self) -> dict:
        return {"provider": self.provider, "workers": self.workers, "threads": self.threads,
                "batch": self.batch_size, "layout": self.layout}


@dataclass(frozen=True)
class E2EResult:
    clips: int
    failed: int
    seconds: float  # extract()'s own time
    wall_seconds: float  # the whole process, interpreter start to exit
    peak_rss_tree: int  # bytes, sampled sum over the process tree
    maxrss_main: int  # bytes, kernel's peak of the main process
    maxrss_worker: int  # bytes, kernel's peak of the largest worker
    workers: int
    cpu_main_s: float  # CPU seconds (user + system) of the main process: reading, pooling results, writing
    cpu_workers_s: float  # CPU seconds of all workers together: decoding and the model

    @property
    def cpu_per_clip_ms(self) -> dict[str, float]:
        """Where the work went, independent of how busy the shared machine was."""
        n = max(self.clips, 1)
        return {"main": 1000 * self.cpu_main_s / n, "workers": 1000 * self.cpu_workers_s / n}

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def run(job: E2EJob, timeout_s: float = 3600) -> E2EResult:
    cmd = [sys.executable, "-m", __name__, json.dumps(asdict(job))]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRSS(proc.pid) as peak:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise SoundNetError(f"end-to-end run exceeded {timeout_s:.0f} s") from None
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SoundNetError(f"end-to-end run failed (exit {proc.returncode}): {err.strip()[-1500:]}")
    data = json.loads(out.strip().splitlines()[-1])
    return E2EResult(data["clips"], data["failed"], data["seconds"], wall, peak.peak,
                     data["maxrss_main"], data["maxrss_worker"], data["workers"], data["cpu_main_s"], data["cpu_workers_s"])


def store_features(store: str | Path, paths) -> dict[str, dict[str, np.ndarray]]:
    """path -> output -> mean-pooled features, read back from a store."""
    from soundnet8.engine.store import FeatureStore

    with FeatureStore(store) as fs:
        rows = {str(p): i for i, p in enumerate(fs.paths)}
        missing = [p for p in paths if p not in rows]
        if missing:
            raise SoundNetError(f"{store}: {len(missing)} clips missing, e.g. {missing[0]}")
        matrices = {name: fs.features(name, "mean") for name in arch.OUTPUTS}
    return {p: {name: m[rows[p]] for name, m in matrices.items()} for p in paths}


def _child(job: E2EJob) -> dict:
    from soundnet8.engine.audio import Preprocessing
    from soundnet8.engine.inputs import read_manifest
    from soundnet8.engine.modelfile import model_info
    from soundnet8.engine.pipeline import ExtractOptions, Layout, extract
    from soundnet8.engine.runner import Request
    from soundnet8.engine.session import Provider

    inputs = read_manifest(Path(job.manifest))
    options = ExtractOptions(request=Request(), preprocessing=Preprocessing(), provider=Provider(job.provider),
                             workers=job.workers, batch_size=job.batch_size, intra_op_threads=job.threads,
                             layout=Layout(job.layout), progress=False)
    summary = extract(inputs, job.store, model_info(job.model_path), options, overwrite=True)
    kib = 1024  # ru_maxrss is in KiB on Linux
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"clips": summary.processed, "failed": summary.failed, "seconds": summary.seconds,
            "workers": options.resolved_workers(),
            "maxrss_main": own.ru_maxrss * kib, "maxrss_worker": children.ru_maxrss * kib,
            # Includes the start (imports, model check) as well; over thousands of clips it is small.
            "cpu_main_s": own.ru_utime + own.ru_stime, "cpu_workers_s": children.ru_utime + children.ru_stime}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one end-to-end extraction (used by soundnet8 bench)")
    parser.add_argument("job", help="E2EJob as JSON")
    args = parser.parse_args(argv)
    result = _child(E2EJob(**json.loads(args.job)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
