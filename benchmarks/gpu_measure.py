"""The measure stage of the GPU check (run by :mod:`.gpu_check` inside the venv with onnxruntime-gpu).

In order, each within what is left of the budget (a measurement that does not fit is recorded as
skipped, never half made):

1. parity: every output of the device session against the CPU session on the bundled real clips,
   relative error <= 1e-4 (the project's metric: max |a - e| / max |e|); a CUDA session that fell
   back to the CPU is an error, so no CPU figure is ever reported as a GPU one;
2. the float16 plan: whether conv1 can run in float16 on inputs in [-256, 256] (:mod:`.fp16`);
3. model-only clips/s: cuDNN algorithm search x ``cudnn_conv1d_pad_to_nc1d`` at one batch, then the
   best of those over batch 1..64 and the length buckets, then plain ``run`` and device-resident
   inputs against IOBinding, then the engine's graph variants (parity-checked on the device
   too), then float16;
4. end to end: ``extract()`` in the SPLIT layout, one decoding worker per CPU core.

``device`` CPU runs every step with the CPU provider standing in for the GPU (the CPU tests).
"""

from __future__ import annotations

import argparse
import enum
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from soundnet8.engine import arch
from soundnet8.engine.errors import ModelError
from soundnet8.engine.modelfile import INPUT_NAME, VARIANTS, GraphVariant, ModelInfo, variant_path
from soundnet8.engine.session import CPU_PROVIDER, CUDA_PROVIDER, Provider, SessionConfig, create_session

from .gpu_check import RESULTS_DIR, Budget, GpuCheckError
from .gpu_report import GpuCheckResults, write_report
from .measure import Row, Skipped, Stat

ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
LENGTHS = (551_250, 220_500, 110_250)
"""Length buckets: 25 s (a 5 s ESC-50 clip with the default tiling), 10 s and 5 s untiled (no heads)."""
PARITY_TOLERANCE = 1e-4


class Transfer(enum.Enum):
    RUN = "run"  # session.run: inputs and outputs through host memory each call
    IOBINDING = "iobinding"  # what the engine does on CUDA: host input bound, outputs on the device, then copied
    DEVICE = "device-resident"  # input already on the device, outputs left there: the model alone


class Precision(enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"  # everything after the input in float16
    FP16_CONV1_FP32 = "fp16-conv1-fp32"  # conv1 (and its pool) in float32, the rest in float16


@dataclass(frozen=True)
class Case:
    batch: int
    length: int
    algo: str
    pad_nc1d: bool
    transfer: Transfer = Transfer.IOBINDING
    precision: Precision = Precision.FP32
    graph: GraphVariant = GraphVariant.PLAIN  # the engine's graph variants (float32 only)

    @property
    def name(self) -> str:
        graph = "" if self.graph is GraphVariant.PLAIN else f"-{self.graph.value}"
        return (f"b{self.batch}-n{self.length}-{self.algo.lower()}-nc1d{int(self.pad_nc1d)}-"
                f"{self.transfer.value}-{self.precision.value}{graph}")

    def params(self) -> dict:
        return {"batch": self.batch, "samples": self.length, "cudnn_conv_algo_search": self.algo,
                "cudnn_conv1d_pad_to_nc1d": self.pad_nc1d, "transfer": self.transfer.value,
                "precision": self.precision.value, "graph": self.graph.value}


@dataclass(frozen=True)
class MeasureOptions:
    device: Provider = Provider.CUDA
    model: Path | None = None
    out: Path | None = None
    machine: str | None = None
    esc50: Path | None = None
    batches: tuple[int, ...] = BATCHES
    lengths: tuple[int, ...] = LENGTHS
    algos: tuple[str, ...] = ALGO_SEARCHES
    min_time: float = 1.0  # seconds of timed runs per case (at least min_runs runs)
    min_runs: int = 3
    e2e_clips: int = 2000
    e2e_reserve: float = 100.0  # seconds kept for the end-to-end run
    report_reserve: float = 10.0
    tolerance: float = PARITY_TOLERANCE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MeasureOptions:
        sizes = {key: getattr(args, key) for key in ("batches", "lengths", "min_time", "e2e_clips")
                 if getattr(args, key, None) is not None}
        return cls(device=Provider(args.device), model=args.model, out=args.out, machine=args.machine,
                   esc50=args.esc50, **sizes)

    @property
    def reference_batch(self) -> int:
        """The batch the session options are compared at."""
        return 16 if 16 in self.batches else max(self.batches)


@dataclass(frozen=True)
class Parity:
    errors: dict[str, float]  # output -> relative error over all clips
    tolerance: float
    clips: int
    provider_used: str

    @property
    def ok(self) -> bool:
        return all(e <= self.tolerance for e in self.errors.values())

    def to_dict(self) -> dict:
        return {"ok": self.ok, "tolerance": self.tolerance, "clips": self.clips, "provider_used": self.provider_used,
                "relative_errors": self.errors, "max_relative_error": max(self.errors.values())}


@dataclass(frozen=True)
class CheckDone:
    folder: Path
    parity_ok: bool


# --- inputs and sessions --------------------------------------------------------------------------

def parity_clips() -> list[np.ndarray]:
    """The bundled real clips with the default preprocessing (all of one length: one batch)."""
    from soundnet8.engine.audio import load
    from soundnet8.engine.inputs import bundled_clips

    return [load(p).waveform for p in bundled_clips()]


def bucket_batch(pool: list[np.ndarray], batch: int, length: int) -> np.ndarray:
    """``batch`` real clips tiled (or cut) to ``length`` samples, cycling over ``pool``."""
    return np.ascontiguousarray(np.stack([np.resize(pool[i % len(pool)], length) for i in range(batch)]), np.float32)


def device_session(model_path: Path, device: Provider, algo: str = "EXHAUSTIVE", pad_nc1d: bool | None = None):
    config = SessionConfig(device, intra_op_threads=0 if device is Provider.CPU else 1, cudnn_search=algo,
                           cudnn_conv1d_pad_to_nc1d=pad_nc1d)
    session = create_session(model_path, config)
    wanted = CUDA_PROVIDER if device is Provider.CUDA else CPU_PROVIDER
    if session.get_providers()[0] != wanted:
        raise GpuCheckError(f"the session runs on {session.get_providers()[0]}, not {wanted}: no GPU figure can be made")
    return session


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    return float(np.abs(actual - expected).max() / (scale if scale > 0 else 1.0)) if expected.size else 0.0


def parity(model_path: Path, device: Provider, clips: list[np.ndarray], tolerance: float = PARITY_TOLERANCE,
           device_model: Path | None = None) -> Parity:
    """Every output of ``device_model`` (default the same model) on ``device`` against the CPU, on a
    batch of all ``clips`` and on the first clip alone."""
    reference = create_session(model_path, SessionConfig(Provider.CPU, intra_op_threads=0))
    session = device_session(device_model or model_path, device)
    errors = dict.fromkeys(arch.OUTPUTS, 0.0)
    for batch in (np.stack(clips), np.stack(clips[:1])):
        expected = reference.run(list(arch.OUTPUTS), {INPUT_NAME: batch})
        actual = session.run(list(arch.OUTPUTS), {INPUT_NAME: batch})
        for name, a, e in zip(arch.OUTPUTS, actual, expected):
            errors[name] = max(errors[name], relative_error(a, e))
    return Parity(errors, tolerance, len(clips), session.get_providers()[0])


# --- timing -----------------------------------------------------------------------------------------

def _timed_runs(call, min_time: float, min_runs: int) -> list[float]:
    call()  # warm-up: allocations and (EXHAUSTIVE) cuDNN's algorithm search happen on the first run
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return times


def _call(session, transfer: Transfer, batch: np.ndarray, device: Provider):
    import onnxruntime as ort

    outputs = list(arch.OUTPUTS)
    where = "cuda" if device is Provider.CUDA else "cpu"
    if transfer is Transfer.RUN:
        return lambda: session.run(outputs, {INPUT_NAME: batch})
    binding = session.io_binding()
    if transfer is Transfer.DEVICE:
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(batch, where, 0))
    else:
        binding.bind_cpu_input(INPUT_NAME, batch)
    for name in outputs:
        binding.bind_output(name, where)

    def call():
        session.run_with_iobinding(binding)
        if transfer is Transfer.IOBINDING:
            binding.copy_outputs_to_cpu()
    return call


class Sweep:
    """Model-only measurements sharing sessions and inputs; each case is timed only if it fits."""

    def __init__(self, models: dict[Precision, Path], options: MeasureOptions, budget: Budget,
                 graphs: dict[GraphVariant, Path] | None = None) -> None:
        self.models, self.options, self.budget = models, options, budget
        self.graphs = graphs or {}
        self.pool = [np.resize(w, options.lengths[0]) for w in parity_clips()]
        self.sessions: dict[tuple, object] = {}
        self.rows: list[Row] = []
        self.skipped: list[Skipped] = []
        self._last_cost = 2.0 * options.min_time

    def _session(self, case: Case):
        key = (case.precision, case.graph, case.algo, case.pad_nc1d)
        if key not in self.sessions:
            path = self.models[case.precision] if case.graph is GraphVariant.PLAIN else self.graphs[case.graph]
            self.sessions[key] = device_session(path, self.options.device, case.algo, case.pad_nc1d)
        return self.sessions[key]

    def measure(self, case: Case) -> Row | None:
        done = next((r for r in self.rows if r.name == case.name), None)
        if done is not None or any(s.name == case.name for s in self.skipped):
            return done
        if not self.budget.allows(self._last_cost):
            self.skipped.append(Skipped("gpu-model", case.name, "time budget"))
            return None
        started = time.perf_counter()
        try:
            call = _call(self._session(case), case.transfer, bucket_batch(self.pool, case.batch, case.length),
                         self.options.device)
            times = _timed_runs(call, self.options.min_time, self.options.min_runs)
        except GpuCheckError:
            raise
        except Exception as exc:  # e.g. out of device memory at batch 64: recorded, the sweep goes on
            self.skipped.append(Skipped("gpu-model", case.name, f"{type(exc).__name__}: {str(exc)[:300]}"))
            return None
        self._last_cost = time.perf_counter() - started
        row = Row("gpu-model", case.name, case.params(), "clips/s", Stat.of(case.batch / t for t in times),
                  {"runs": len(times), "case_seconds": round(self._last_cost, 3)})
        self.rows.append(row)
        return row


def best(rows: list[Row | None], key=lambda r: r.stat.median) -> Row | None:
    found = [r for r in rows if r is not None]
    return max(found, key=key) if found else None


def run_sweep(sweep: Sweep) -> Row | None:
    """The model-only grid in priority order; returns the best fp32 IOBinding row at the main length."""
    o = sweep.options
    main, ref = o.lengths[0], o.reference_batch
    choices = [(algo, pad) for algo in o.algos for pad in (False, True)]
    first = [sweep.measure(Case(ref, main, algo, pad)) for algo, pad in choices]
    top = best(first)
    algo, pad = (top.params["cudnn_conv_algo_search"], top.params["cudnn_conv1d_pad_to_nc1d"]) if top else choices[0]
    base = Case(ref, main, algo, pad)
    by_batch = [sweep.measure(replace(base, batch=b, length=n)) for n in o.lengths for b in o.batches]
    winner = best([r for r in by_batch if r is not None and r.params["samples"] == main]) or top
    few = sorted({min(o.batches), ref, max(o.batches)})
    for transfer in (Transfer.DEVICE, Transfer.RUN):
        for b in few:
            sweep.measure(replace(base, batch=b, transfer=transfer))
    for graph in sweep.graphs:
        for b in few:
            sweep.measure(replace(base, batch=b, graph=graph))
    for precision in (Precision.FP16, Precision.FP16_CONV1_FP32):
        for b in few:
            sweep.measure(replace(base, batch=b, precision=precision))
    return winner


# --- float16, end to end, the whole stage ---------------------------------------------------------

def fp16_models(model_path: Path, folder: Path) -> tuple[dict[Precision, Path], dict]:
    """The model files per precision (float16 ones written to ``folder``) and the float16 plan."""
    import onnx

    from . import fp16

    model = onnx.load(str(model_path))
    plan = fp16.plan(model)
    paths = {Precision.FP32: model_path}
    for precision, keep in ((Precision.FP16, False), (Precision.FP16_CONV1_FP32, True)):
        paths[precision] = folder / f"soundnet8-{precision.value}.onnx"
        onnx.save(fp16.to_fp16(model, keep), str(paths[precision]))
    return paths, plan.to_dict()


def fp16_parity(models: dict[Precision, Path], options: MeasureOptions, clips: list[np.ndarray]) -> dict:
    """The float16 models' error against float32 on the CPU reference (reported, not a pass/fail)."""
    out = {}
    for precision in (Precision.FP16, Precision.FP16_CONV1_FP32):
        try:
            result = parity(models[Precision.FP32], options.device, clips, options.tolerance, models[precision])
            out[precision.value] = {"max_relative_error": max(result.errors.values()), "relative_errors": result.errors}
        except GpuCheckError:
            raise
        except Exception as exc:  # a provider without float16 kernels: say so, measure the rest
            out[precision.value] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def end_to_end(options: MeasureOptions, model_path: Path, batch: int, budget: Budget) -> dict:
    """``extract()`` in the SPLIT layout with one decoding worker per core, within the budget."""
    from .data import load_corpus, scaled_manifest, write_manifest
    from .e2e import E2EJob, run
    from .machine import usable_cores

    corpus = load_corpus(options.esc50)
    workers = usable_cores()
    params = {"clips": options.e2e_clips, "corpus": corpus.source, "workers": workers, "batch": batch, "layout": "split"}
    if budget.remaining() < 10:
        return {"params": params, "skipped": "time budget"}
    with tempfile.TemporaryDirectory(prefix="soundnet8-gpu-e2e-") as tmp:
        folder = Path(tmp)
        if corpus.source == "esc50" and options.e2e_clips <= len(corpus):
            manifest = write_manifest(corpus.subset(options.e2e_clips), folder / "manifest.csv")
        else:
            manifest = scaled_manifest(corpus, options.e2e_clips, folder)
        job = E2EJob(str(manifest), str(folder / "store.h5"), str(model_path), provider=options.device.value,
                     workers=workers, batch_size=batch, layout="split")
        try:
            result = run(job, timeout_s=budget.remaining())
        except Exception as exc:  # a timeout or a failed run is a finding, reported with the rest
            return {"params": params, "skipped": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return {"params": params, "clips": result.clips, "failed": result.failed, "seconds": result.seconds,
            "wall_seconds": result.wall_seconds, "clips_per_s": result.clips_per_s,
            "cpu_per_clip_ms": result.cpu_per_clip_ms, "peak_rss_tree": result.peak_rss_tree}


def graph_variants(model: ModelInfo, options: MeasureOptions, clips: list[np.ndarray]) -> tuple[dict, dict]:
    """The engine's other graph variants (files) and their parity on the device against the CPU."""
    paths, checks = {}, {}
    for variant in (v for v in VARIANTS if v is not GraphVariant.PLAIN):
        try:
            paths[variant] = variant_path(model, variant)
        except ModelError as exc:  # reported; the plain graph is measured all the same
            checks[variant.value] = {"error": str(exc)[:300]}
            continue
        result = parity(model.path, options.device, clips, options.tolerance, paths[variant])
        checks[variant.value] = result.to_dict()
    return paths, checks


def run_check(options: MeasureOptions, budget: Budget) -> CheckDone:
    """The whole measure stage; writes the results folder even when parity fails."""
    from soundnet8.engine.modelfile import ensure_model

    from .machine import collect

    started = time.time()
    model = ensure_model(options.model)
    model_path = Path(model.path)
    machine = collect(options.machine)
    name = machine.name if options.device is Provider.CUDA else f"{machine.name}-cpu-standin"
    folder = options.out or RESULTS_DIR / f"gpu-{name}"
    clips = parity_clips()
    try:
        check = parity(model_path, options.device, clips, options.tolerance)
    except GpuCheckError as exc:  # e.g. CUDA fell back to the CPU (libraries missing): say so in the results
        results = GpuCheckResults(machine=machine.to_dict(), device=options.device.value,
                                  parity={"ok": False, "error": str(exc)}, seconds=time.time() - started)
        write_report(results, folder)
        raise
    results = GpuCheckResults(machine=machine.to_dict(), device=options.device.value, parity=check.to_dict())
    with tempfile.TemporaryDirectory(prefix="soundnet8-gpu-") as tmp:
        if check.ok:
            models, plan = fp16_models(model_path, Path(tmp))
            graphs, graph_parity = graph_variants(model, options, clips)
            results = replace(results, fp16_plan=plan, fp16_parity=fp16_parity(models, options, clips),
                              graph_parity=graph_parity)
            sweep = Sweep(models, options, budget.until(options.e2e_reserve + options.report_reserve), graphs)
            winner = run_sweep(sweep)
            sweep.sessions.clear()  # free the device memory before extract() makes its own session
            batch = min(winner.params["batch"], 64) if winner else 4
            e2e = end_to_end(options, model_path, batch, budget.until(options.report_reserve))
            results = replace(results, rows=tuple(sweep.rows), skipped=tuple(sweep.skipped), e2e=e2e)
    results = replace(results, seconds=time.time() - started, budget_left=budget.remaining())
    write_report(results, folder)
    return CheckDone(folder, check.ok)
