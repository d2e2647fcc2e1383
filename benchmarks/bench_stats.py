"""Benchmark of :mod:`soundnet8.engine.stats` against the numpy reference (run by hand, not in CI).

    .venv/bin/python -m soundnet8.benchmarks.bench_stats [--rows 200000] [--cols 1024]
        [--label NAME] [--out benchmarks/results/stats-NAME.md] [--workdir DIR]

Measures, with identical results checked every time:

1. the seed's size (2,000 x 256): numpy (``np.percentile`` + one-hot product) vs ``neuron_stats``;
2. a synthetic ReLU-like matrix (default 200,000 x 1,024 float32, ~40% zeros, 50 classes) in
   memory: the same comparison, median of repeats;
3. the out-of-core path on the same matrix stored in a gzip feature store (the store's default
   layout): wall time and peak resident memory above the process's baseline (VmHWM after
   resetting it through /proc/self/clear_refs), in a fresh process; also ``method="columns"``;
4. JIT cost: first call in a fresh process with an empty numba cache (compile), then with the
   cache it left (load only), then a second call in the same process.

Each isolated measurement runs in a subprocess of this module (``--worker``) so that the
numbers of one do not inherit the memory or the compiled code of another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

N_CLASSES = 50  # ESC-50
Q = 95.0  # the seed's percentile
TOP_K = 10
SEED = 20240601
SEED_REPEATS = 51  # milliseconds each: many repeats, since the shared machine's noise is ms-sized
SEED_FEATURES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "seed_features"
RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# data


def synthetic(n: int, c: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like float32 activations: max(N(0.25, 1), 0) (about 40% zeros) times a per-neuron
    log-normal scale, and uniform labels over 50 classes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, c), dtype=np.float32)
    X += np.float32(0.25)
    np.maximum(X, 0, out=X)
    X *= rng.lognormal(0, 1, c).astype(np.float32)
    y = rng.integers(0, N_CLASSES, n)
    return X, y


def seed_matrix() -> tuple[np.ndarray, np.ndarray, str]:
    if (SEED_FEATURES / "X.npy").exists():
        return np.load(SEED_FEATURES / "X.npy"), np.load(SEED_FEATURES / "y.npy"), "seed X.npy (pool5)"
    X, y = synthetic(2000, 256)
    return X, y, "synthetic"


# --------------------------------------------------------------------------------------------
# measurements


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _numpy_reference(X, y):
    from soundnet8.engine.stats import reference_counts, reference_thresholds

    thr = reference_thresholds(X, Q)
    return thr, reference_counts(X, y, thr, N_CLASSES)


def compare_in_memory(X, y, repeats_numpy: int, repeats_ours: int) -> dict:
    from soundnet8.engine.stats import neuron_stats, percentile_thresholds, reference_thresholds

    neuron_stats(X[:64], y[:64], Q, N_CLASSES)  # compile (or load the cache) outside the timing
    t_np_thr, thr = _median_time(lambda: reference_thresholds(X, Q), repeats_numpy)
    t_np_all, (thr_np, counts_np) = _median_time(lambda: _numpy_reference(X, y), repeats_numpy)
    t_thr, thr_ours = _median_time(lambda: percentile_thresholds(X, Q), repeats_ours)
    t_counts, st0 = _median_time(lambda: neuron_stats(X, y, Q, N_CLASSES, top_k=0), repeats_ours)
    t_full, st = _median_time(lambda: neuron_stats(X, y, Q, N_CLASSES, top_k=TOP_K), repeats_ours)
    identical = (
        np.array_equal(thr_ours, thr)
        and np.array_equal(thr_np, thr)
        and np.array_equal(st0.thresholds, thr)
        and np.array_equal(st0.counts, counts_np)
        and np.array_equal(st.counts, counts_np)
    )
    return {
        "numpy_thresholds_s": t_np_thr,
        "numpy_thresholds_counts_s": t_np_all,
        "ours_thresholds_s": t_thr,
        "ours_thresholds_counts_s": t_counts,
        "ours_neuron_stats_s": t_full,
        "identical": bool(identical),
    }


def _worker(kind: str, args: argparse.Namespace) -> dict:
    """Isolated measurements, printed as JSON by the ``--worker`` subprocess."""
    import logging

    from soundnet8.engine import stats as S

    if kind == "in-memory":  # the same in-memory timings under another thread setting
        X, y = synthetic(args.rows, args.cols)
        S.neuron_stats(X[:64], y[:64], Q, N_CLASSES)
        t_thr, thr = _median_time(lambda: S.percentile_thresholds(X, Q), 5)
        t_counts, st = _median_time(lambda: S.neuron_stats(X, y, Q, N_CLASSES, top_k=0), 5)
        np.savez(args.result, thresholds=thr, counts=st.counts)
        return {"ours_thresholds_s": t_thr, "ours_thresholds_counts_s": t_counts}

    if kind in ("jit-cold", "jit-warm"):
        X, y = synthetic(2000, 256)
        t = time.perf_counter()
        S.neuron_stats(X, y, Q, N_CLASSES, top_k=TOP_K)
        first = time.perf_counter() - t
        t = time.perf_counter()
        S.neuron_stats(X, y, Q, N_CLASSES, top_k=TOP_K)
        second = time.perf_counter() - t
        X64 = X.astype(np.float64)
        t = time.perf_counter()
        S.neuron_stats(X64, y, Q, N_CLASSES, top_k=TOP_K)
        first64 = time.perf_counter() - t
        return {"first_call_s": first, "second_call_s": second, "first_call_float64_s": first64}

    from soundnet8.engine.store import FeatureStore

    passes: list[str] = []

    class _Passes(logging.Handler):
        def emit(self, record):
            passes.append(record.getMessage())

    stats_log = logging.getLogger(S.__name__)  # the scan logs its passes to a child of this logger
    stats_log.addHandler(_Passes())
    stats_log.setLevel(logging.DEBUG)
    with FeatureStore(args.store) as fs:
        ds = fs.dataset("synthetic", "mean")
        labels = fs.labels
        S.neuron_stats(ds[:64], labels[:64], Q, N_CLASSES)  # compile/load outside the measurement
        passes.clear()
        base = _rss_reset()
        t = time.perf_counter()
        if kind == "store-read":  # one pass of reading alone: what decompression costs
            rows = S.Rows(ds, name="read", chunk_rows=None, chunk_bytes=min(S.CHUNK_BYTES_MAX, args.budget // 4))
            for _ in rows:
                pass
            result = {}
        elif kind == "store-histogram":
            st = S.neuron_stats(ds, labels, Q, N_CLASSES, top_k=TOP_K, memory_budget=args.budget)
            result = {"thresholds": st.thresholds, "counts": st.counts}
        else:  # store-columns: thresholds only, numpy on column blocks
            thr = S.percentile_thresholds(ds, Q, method="columns", memory_budget=args.budget)
            result = {"thresholds": thr}
        wall = time.perf_counter() - t
        peak = _peak_rss() - base
    np.savez(args.result, **result)
    return {"wall_s": wall, "peak_rss_bytes": peak, "log": passes}


def _status() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _rss_reset() -> int:
    """Reset the peak-RSS mark (Linux >= 4.0) and return the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status()["VmRSS"]


def _peak_rss() -> int:
    return _status()["VmHWM"]


def _run_worker(kind: str, env_extra: dict[str, str] | None = None, **kwargs) -> dict:
    cmd = [sys.executable, "-m", "soundnet8.benchmarks.bench_stats", "--worker", kind]
    for key, value in kwargs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, **(env_extra or {}))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# report


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the big numpy reference")
    parser.add_argument("--label", default=f"{os.cpu_count()}cpu", help="machine label of the result file")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="where the synthetic store goes")
    parser.add_argument("--budget", type=int, default=None, help="memory budget of the out-of-core run (bytes)")
    # worker-only arguments
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def _header(say: Callable[..., None], args: argparse.Namespace) -> None:
    import numba

    say(f"# soundnet8 stats benchmark ({args.label})")
    say()
    say(f"- machine: {_machine()}; numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads), numpy {np.__version__}")
    say(f"- load average at start (1/5/15 min): {_load()} (the machine is shared: other work competes for its cores)")
    say(f"- q = {Q:g}, {N_CLASSES} classes, top-k = {TOP_K}; times are medians; 'identical' = np.array_equal on thresholds and counts")
    say()


def _seed_size(say: Callable[..., None]) -> None:
    """1. The seed's size, in memory."""
    Xs, ys, what = seed_matrix()
    r = compare_in_memory(Xs, ys, repeats_numpy=SEED_REPEATS, repeats_ours=SEED_REPEATS)
    say(f"## Seed size: {Xs.shape[0]:,} x {Xs.shape[1]} ({what}), in memory, {SEED_REPEATS} repeats")
    say()
    say("| | numpy | soundnet8 | speedup |")
    say("|---|---:|---:|---:|")
    say(f"| thresholds | {r['numpy_thresholds_s'] * 1e3:.2f} ms | {r['ours_thresholds_s'] * 1e3:.2f} ms | {r['numpy_thresholds_s'] / r['ours_thresholds_s']:.1f}x |")
    say(f"| thresholds + count matrix | {r['numpy_thresholds_counts_s'] * 1e3:.2f} ms | {r['ours_thresholds_counts_s'] * 1e3:.2f} ms | {r['numpy_thresholds_counts_s'] / r['ours_thresholds_counts_s']:.1f}x |")
    say(f"| + top-{TOP_K} clips, shares (neuron_stats) | | {r['ours_neuron_stats_s'] * 1e3:.2f} ms | |")
    say(f"\nidentical: {r['identical']}\n")


def _in_memory(say: Callable[..., None], args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """2. The synthetic matrix in memory, then under other thread settings; returns the matrix."""
    t = time.perf_counter()
    X, y = synthetic(args.rows, args.cols)
    gen = time.perf_counter() - t
    zeros = float((X == 0).mean())
    r = compare_in_memory(X, y, repeats_numpy=args.repeats, repeats_ours=5)
    say(f"## Synthetic {args.rows:,} x {args.cols:,} float32 ({X.nbytes / 2**20:.0f} MiB, {zeros:.1%} zeros), in memory")
    say()
    say(f"numpy: {args.repeats} repeats; soundnet8: 5 repeats (generated in {gen:.1f} s)")
    say()
    say("| | numpy | soundnet8 | speedup |")
    say("|---|---:|---:|---:|")
    say(f"| thresholds | {r['numpy_thresholds_s']:.2f} s | {r['ours_thresholds_s']:.2f} s | {r['numpy_thresholds_s'] / r['ours_thresholds_s']:.1f}x |")
    say(f"| thresholds + count matrix | {r['numpy_thresholds_counts_s']:.2f} s | {r['ours_thresholds_counts_s']:.2f} s | **{r['numpy_thresholds_counts_s'] / r['ours_thresholds_counts_s']:.1f}x** |")
    say(f"| + top-{TOP_K} clips, shares (neuron_stats) | | {r['ours_neuron_stats_s']:.2f} s | |")
    say(f"\nidentical: {r['identical']}\n")
    # The same under other thread settings, each in a fresh process (numba reads them at start).
    counts_np = _numpy_reference(X, y)
    say("Thread settings (fresh process each; soundnet8 medians of 5; speedup against the numpy medians above):")
    say()
    say("| setting | thresholds | thresholds + count matrix | speedup | identical |")
    say("|---|---:|---:|---:|:---:|")
    for label, env in (
        ("OMP_WAIT_POLICY=PASSIVE (what `soundnet8 stats` sets)", {"OMP_WAIT_POLICY": "PASSIVE"}),
        ("NUMBA_NUM_THREADS=1", {"NUMBA_NUM_THREADS": "1"}),
    ):
        res = Path(tempfile.mkdtemp(prefix="bench_stats_")) / "in-memory.npz"
        v = _run_worker("in-memory", env_extra=env, rows=args.rows, cols=args.cols, result=res)
        got = np.load(res)
        same = np.array_equal(got["thresholds"], counts_np[0]) and np.array_equal(got["counts"], counts_np[1])
        speedup = r["numpy_thresholds_counts_s"] / v["ours_thresholds_counts_s"]
        say(f"| {label} | {v['ours_thresholds_s']:.2f} s | {v['ours_thresholds_counts_s']:.2f} s | {speedup:.1f}x | {same} |")
    say()
    return X, y


def _out_of_core(say: Callable[..., None], args: argparse.Namespace, workdir: Path, store: Path, written: float,
                 nbytes: int, expected) -> None:
    """3. The same matrix read from a feature store by fresh processes."""
    import h5py

    with h5py.File(store) as f:
        ds = f["features/synthetic/mean"]
        layout = f"chunks {ds.chunks}, {ds.compression} {ds.compression_opts}, shuffle {ds.shuffle}"
    say(f"## Out of core: the same matrix in a feature store ({store.stat().st_size / 2**20:.0f} MiB on disk, {layout})")
    say()
    say(f"store written in {written:.1f} s; each run in a fresh process; peak = VmHWM - VmRSS before the call; memory budget {args.budget / 2**20:.0f} MiB")
    say()
    say("| method | wall | peak RSS above baseline | % of the array | identical | passes |")
    say("|---|---:|---:|---:|:---:|---|")
    for kind in ("store-read", "store-histogram", "store-columns"):
        res = workdir / f"{kind}.npz"
        out = _run_worker(kind, store=store, result=res, budget=args.budget)
        if kind == "store-read":
            say(f"| (reading alone: one pass of chunk reads, no computation) | {out['wall_s']:.2f} s | {out['peak_rss_bytes'] / 2**20:.0f} MiB | | | 1 |")
            continue
        got = np.load(res)
        same = np.array_equal(got["thresholds"], expected.thresholds) and (
            "counts" not in got or np.array_equal(got["counts"], expected.counts)
        )
        label = "histogram (neuron_stats: thresholds, counts, top-k)" if kind == "store-histogram" else "columns (thresholds only: np.percentile per column block)"
        note = "; ".join(m.split(": ", 1)[-1] for m in out["log"]) or "-"
        say(f"| {label} | {out['wall_s']:.2f} s | {out['peak_rss_bytes'] / 2**20:.0f} MiB | {out['peak_rss_bytes'] / nbytes:.1%} | {same} | {note} |")
    say()


def _jit(say: Callable[..., None]) -> None:
    """4. JIT cost, cold and from the cache."""
    cache = tempfile.mkdtemp(prefix="numba_cache_")
    cold = _run_worker("jit-cold", env_extra={"NUMBA_CACHE_DIR": cache})
    warm = _run_worker("jit-warm", env_extra={"NUMBA_CACHE_DIR": cache})
    say("## JIT warm-up (neuron_stats on 2,000 x 256, fresh process each)")
    say()
    say("| | first call | second call (same process) |")
    say("|---|---:|---:|")
    say(f"| empty numba cache (compiles float32 kernels) | {cold['first_call_s']:.2f} s | {cold['second_call_s'] * 1e3:.1f} ms |")
    say(f"| cache written by the run above (cache=True) | {warm['first_call_s']:.2f} s | {warm['second_call_s'] * 1e3:.1f} ms |")
    say(f"\nfloat64 data compiles its own kernels on first use: {cold['first_call_float64_s']:.2f} s cold, {warm['first_call_float64_s']:.2f} s from the cache.\n")
    say(f"- load average at end: {_load()}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from soundnet8.engine.stats import DEFAULT_MEMORY_BUDGET

    if args.budget is None:
        args.budget = DEFAULT_MEMORY_BUDGET
    if args.worker:
        print(json.dumps(_worker(args.worker, args)))
        return 0

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    _header(say, args)
    _seed_size(say)
    X, y = _in_memory(say, args)

    # 3. out of core: the store is written here, so the matrix is freed before the measuring processes run.
    from soundnet8.engine.stats import neuron_stats
    from soundnet8.engine.store import write_arrays

    expected = neuron_stats(X, y, Q, N_CLASSES, top_k=0)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_stats_"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "synthetic.h5"
    t = time.perf_counter()
    write_arrays(store, paths=[f"clip{i}" for i in range(args.rows)], features={"synthetic": {"mean": X}}, labels=y)
    written = time.perf_counter() - t
    nbytes = X.nbytes
    del X
    _out_of_core(say, args, workdir, store, written, nbytes, expected)
    _jit(say)

    out_path = args.out or RESULTS / f"stats-{args.label}.md"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    print(f"\nwritten {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
