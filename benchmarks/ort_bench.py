"""Model-only throughput of ONNX Runtime: sessions in 1..N worker processes, timed together.

Each measurement starts ``workers`` fresh processes (spawn), each with its own session, the same
prepared inputs and ``clips / workers`` clips per timed round. A barrier starts every round in all
workers at once and the parent times from that start to the moment the slowest worker is done, so
the figure is the throughput the whole machine delivers with that layout.
"""

from __future__ import annotations

import enum
import multiprocessing
import queue as queue_module
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundnet8.engine import arch
from soundnet8.engine.errors import SoundNetError
from soundnet8.engine.modelfile import INPUT_NAME
from soundnet8.engine.session import CUDA_PROVIDER, GraphOptimization, Provider, SessionConfig, create_session

from .measure import Stat
from .settings import InputKind

BARRIER_TIMEOUT_S = 900.0
"""A worker that has not reached the barrier by then has hung: the measurement fails."""


class Stage(enum.Enum):
    RAW = "raw"  # session.run of all nine outputs: the model phase
    POOLED = "pooled"  # the engine's Runner.features: model + mean over time of all nine outputs


@dataclass(frozen=True)
class SessionSpec:
    """A session to measure: the engine's own session, with at most a few options overridden."""

    provider: Provider = Provider.CPU
    threads: int = 1
    graph: GraphOptimization = GraphOptimization.ALL
    allow_spinning: bool | None = None
    cpu_arena: bool | None = None
    mem_pattern: bool | None = None
    iobinding: bool = False  # CUDA: inputs copied by the binding, outputs left on the device then fetched

    def session_config(self) -> SessionConfig:
        """The options handed to the engine's create_session (the one place sessions are made)."""
        return SessionConfig(self.provider, self.threads, self.graph, allow_spinning=self.allow_spinning,
                             cpu_arena=self.cpu_arena, mem_pattern=self.mem_pattern)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"provider": self.provider.value, "threads": self.threads, "graph": self.graph.value}
        for key in ("allow_spinning", "cpu_arena", "mem_pattern"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.iobinding:
            out["iobinding"] = True
        return out


def cuda_available() -> tuple[bool, str]:
    """Whether the CUDA provider can run here, and if not, why (for the skip message)."""
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        return False, ("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu instead of onnxruntime "
                       f"on a machine with an NVIDIA GPU; available: {', '.join(ort.get_available_providers())})")
    return True, ""


class ModelCall:
    """One timed call of the model, made the way the spec and stage say; returns nothing (outputs are
    discarded after fetching). Builds its session through the engine's create_session."""

    def __init__(self, model_path: str | Path, spec: SessionSpec, stage: Stage) -> None:
        session = create_session(model_path, spec.session_config())
        self.session, self.spec, self.stage = session, spec, stage
        self.outputs = list(arch.OUTPUTS)
        if stage is Stage.POOLED:
            from soundnet8.engine.runner import Request, Runner

            self.runner = Runner(session, Request(), batch_size=1 << 30)
        elif spec.iobinding:
            self.binding = session.io_binding()

    def __call__(self, batch: np.ndarray, waveforms: list[np.ndarray]) -> None:
        if self.stage is Stage.POOLED:
            self.runner.features(waveforms)
        elif self.spec.iobinding:
            self.binding.bind_cpu_input(INPUT_NAME, batch)
            for name in self.outputs:
                self.binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(self.binding)
            self.binding.copy_outputs_to_cpu()
        else:
            self.session.run(self.outputs, {INPUT_NAME: batch})


@dataclass(frozen=True)
class Arm:
    """Another model file or session spec timed in the same worker processes as a job's own."""

    label: str
    model_path: str
    spec: SessionSpec


@dataclass(frozen=True)
class ModelJob:
    model_path: str
    spec: SessionSpec
    kind: InputKind
    paths: tuple[str, ...]  # the input pool; clips cycle over it
    workers: int
    batch_size: int
    clips: int  # per timed round, over all workers (rounded up to whole batches per worker)
    warmup: int
    repeats: int
    stage: Stage = Stage.RAW
    # Compared configurations: each timed round runs the job's own session and then every arm, in an
    # order rotated every round, so load from other users of the machine hits all of them alike.
    arms: tuple[Arm, ...] = ()

    def clips_per_worker(self) -> int:
        per = -(-self.clips // self.workers)
        return -(-per // self.batch_size) * self.batch_size

    def all_arms(self) -> tuple[Arm, ...]:
        return (Arm("self", self.model_path, self.spec), *self.arms)


def round_order(n_arms: int, round_index: int) -> list[int]:
    """Arm indices in the order of timed round ``round_index`` (a rotation, so no arm is always first)."""
    return [(round_index + i) % n_arms for i in range(n_arms)]


def _worker(job: ModelJob, rank: int, barrier, results) -> None:
    try:
        from .data import model_inputs

        waveforms = model_inputs(job.paths, job.kind)
        n = job.clips_per_worker()
        order = [(rank * n + i) % len(waveforms) for i in range(n)]
        groups = [[waveforms[i] for i in order[s:s + job.batch_size]] for s in range(0, n, job.batch_size)]
        batches = [(np.ascontiguousarray(np.stack(g)), g) for g in groups]
        runs = []
        for arm in job.all_arms():
            runs.append(ModelCall(arm.model_path, arm.spec, job.stage))
            for _ in range(max(job.warmup, 1)):  # at least one: the first run allocates and picks kernels
                for batch, group in batches:
                    runs[-1](batch, group)
        results.put(("ready", rank, (runs[0].session.get_providers()[0], len(waveforms[0]))))
        for r in range(job.repeats):
            for index in round_order(len(runs), r):
                barrier.wait(BARRIER_TIMEOUT_S)
                for batch, group in batches:
                    runs[index](batch, group)
                barrier.wait(BARRIER_TIMEOUT_S)
    except BaseException:
        results.put(("error", rank, traceback.format_exc()))
        barrier.abort()  # release the parent and the other workers instead of letting them hang


@dataclass(frozen=True)
class ModelResult:
    clips_per_s: Stat
    clips_per_round: int
    samples: int  # input length
    provider_used: str
    vs_first: Stat | None = None  # per round, this arm's clips/s over the job's own (interleaved jobs)

    @property
    def gflops(self) -> Stat:
        macs = sum(arch.macs_per_sample_block(self.samples).values())
        return self.clips_per_s.scaled(2 * macs / 1e9)


def measure(job: ModelJob) -> ModelResult:
    """Clips/s of the job's own configuration (its arms, if any, are timed too but not returned)."""
    return measure_arms(job)[0]


def measure_arms(job: ModelJob) -> list[ModelResult]:
    """Clips/s of the job's own configuration and of each arm, timed in interleaved rounds."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(job.workers + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(job, rank, barrier, results), daemon=True) for rank in range(job.workers)]
    for p in procs:
        p.start()
    n_arms = len(job.all_arms())
    seconds: list[list[float]] = [[] for _ in range(n_arms)]
    provider_used, samples = "?", 0
    try:
        ready = 0
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while ready < job.workers:  # setup (inputs, sessions, warm-up) is not timed
            try:
                kind, rank, value = results.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p.exitcode for p in procs if p.exitcode is not None]
                if dead or time.monotonic() > deadline:  # died before it could report (e.g. killed)
                    raise SoundNetError(f"model benchmark: a worker exited ({dead}) or none was ready "
                                        f"after {BARRIER_TIMEOUT_S:.0f} s") from None
                continue
            if kind == "error":
                raise SoundNetError(f"model benchmark worker {rank} failed:\n{value}")
            ready += 1
            provider_used, samples = value
        for r in range(job.repeats):
            for index in round_order(n_arms, r):
                barrier.wait(BARRIER_TIMEOUT_S)
                start = time.perf_counter()
                barrier.wait(BARRIER_TIMEOUT_S)
                seconds[index].append(time.perf_counter() - start)
    except threading.BrokenBarrierError as exc:
        detail = "no message"
        try:
            detail = results.get(timeout=30)[2]
        except queue_module.Empty:
            pass
        raise SoundNetError(f"model benchmark worker failed:\n{detail}") from exc
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    per_round = job.clips_per_worker() * job.workers
    out = []
    for index in range(n_arms):
        ratio = Stat.of(seconds[0][r] / seconds[index][r] for r in range(job.repeats)) if n_arms > 1 else None
        out.append(ModelResult(Stat.of(per_round / s for s in seconds[index]), per_round, samples, provider_used, ratio))
    return out
