"""The machine's own limits, measured in the same run: single-precision matmul GFLOP/s and decode speed.

* Matmul: numpy float32 ``A @ B`` (n x n) on every core and on one, in a fresh subprocess whose BLAS
  threads are set with threadpoolctl. Where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (some of
  these machines set them for old OpenBLAS builds, and they slow a current one), the measuring
  subprocess is run both with them and with both unset, and the faster counts as the peak; what
  threadpoolctl reports (library, kernel architecture, threads) is recorded for each.
* ONNX Runtime's own GEMM (MLAS) on the same sizes: a one-node MatMul graph, for comparison.
* Decode: clips/s of the engine's loader (decode + resample + scale + tile) on one core, and of the
  decode alone: the ceiling of any pipeline whose model phase is faster (GPU runs).

Run as ``python -m soundnet8.benchmarks.limit matmul N THREADS REPEATS``: prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from .measure import Stat

OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class MatmulResult:
    gflops: Stat
    threads: int
    size: int
    env: str  # "as set" or "OPENBLAS_CORETYPE/L2_SIZE unset"
    blas: list  # threadpoolctl.threadpool_info() of the measuring process


def _matmul_child(size: int, threads: int, repeats: int) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        info = threadpool_info()
        for _ in range(2):
            a @ b
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - start)
    return {"gflops": [2 * size**3 / s / 1e9 for s in seconds], "blas": info}


def matmul(size: int, threads: int, repeats: int) -> list[MatmulResult]:
    """numpy float32 matmul GFLOP/s in a subprocess; twice where OPENBLAS overrides are set."""
    envs = [("as set", dict(os.environ))]
    if any(k in os.environ for k in OPENBLAS_OVERRIDES):
        clean = {k: v for k, v in os.environ.items() if k not in OPENBLAS_OVERRIDES}
        envs.append(("OPENBLAS_CORETYPE/L2_SIZE unset", clean))
    results = []
    for label, env in envs:
        proc = subprocess.run([sys.executable, "-m", __name__, "matmul", str(size), str(threads), str(repeats)],
                              capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"matmul subprocess failed: {proc.stderr.strip()[-800:]}")
        data = json.loads(proc.stdout)
        results.append(MatmulResult(Stat.of(data["gflops"]), threads, size, label, data["blas"]))
    return results


def ort_matmul(size: int, threads: int, repeats: int) -> Stat:
    """GFLOP/s of ONNX Runtime's MatMul (MLAS) on n x n float32, with ``threads`` intra-op threads."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a_info = helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])
    b_info = helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])
    c_info = helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm", [a_info, b_info], [c_info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((size, size), dtype=np.float32),
             "b": rng.standard_normal((size, size), dtype=np.float32)}
    for _ in range(2):
        session.run(None, feeds)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - start)
    return Stat.of(2 * size**3 / s / 1e9 for s in seconds)


@dataclass(frozen=True)
class DecodeResult:
    load_clips_per_s: Stat  # engine.audio.load: decode + resample + scale + tile, one core
    decode_clips_per_s: Stat  # soundfile decode alone
    clips: int


def decode(paths: tuple[str, ...], repeats: int) -> DecodeResult:
    """Per-core decode throughput (the loader is single-threaded: run in a one-core process)."""
    import soundfile as sf

    from soundnet8.engine.audio import load

    def loads() -> None:
        for p in paths:
            load(p)

    def reads() -> None:
        for p in paths:
            sf.read(p, dtype="float32", always_2d=True)

    out = {}
    for name, fn in (("load", loads), ("decode", reads)):
        fn()  # warm-up: file cache and imports
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        out[name] = Stat.of(len(paths) / s for s in seconds)
    return DecodeResult(out["load"], out["decode"], len(paths))


if __name__ == "__main__":  # the measuring subprocess of matmul()
    if len(sys.argv) != 5 or sys.argv[1] != "matmul":
        sys.exit("usage: python -m soundnet8.benchmarks.limit matmul SIZE THREADS REPEATS")
    print(json.dumps(_matmul_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
