"""The one place ONNX Runtime sessions are made.

Providers come from a closed set (auto/cpu/cuda). Threads are set deliberately: on small CPUs one
intra-op thread per worker process measures faster than one session spreading over every core,
so the caller passes the layout it wants and nothing is left to ONNX Runtime's defaults.
"""

from __future__ import annotations

import enum
import fcntl
import json
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError
from .modelfile import (
    INPUT_NAME, VARIANTS, GraphVariant, ModelInfo, derive_variants, forced_variant, variant_file, variant_path, variants_dir,
)

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class Provider(enum.Enum):
    AUTO = "auto"  # CUDA when onnxruntime-gpu sees a GPU, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class GraphOptimization(enum.Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"

    def ort_level(self):
        import onnxruntime as ort

        return {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.value]


@dataclass(frozen=True)
class SessionConfig:
    """Everything a session is made from. The last three fields let benchmarks override one ONNX Runtime
    option at a time on top of the engine's settings; None keeps the engine's choice."""

    provider: Provider = Provider.AUTO
    intra_op_threads: int = 1
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    cuda_device: int = 0
    # cuDNN's exhaustive search pays off only when shapes repeat, which length bucketing ensures.
    cudnn_search: str = "EXHAUSTIVE"
    # cuDNN runs a 1-D convolution as 2-D: as N,C,1,D (on) or N,C,D,1 (off, ORT's default); None: the default.
    cudnn_conv1d_pad_to_nc1d: bool | None = None
    allow_spinning: bool | None = None  # None: off whenever the session has pool threads (see below)
    cpu_arena: bool | None = None  # None: ONNX Runtime's default (on)
    mem_pattern: bool | None = None  # None: ONNX Runtime's default (on)

    def spinning(self) -> bool | None:
        """The allow_spinning entry to set, or None to leave ONNX Runtime's default."""
        if self.allow_spinning is not None:
            return self.allow_spinning
        # Spinning idle threads steal the core a decoding worker needs: 1.17x measured (benchmarks/).
        return False if self.intra_op_threads != 1 else None


class CudaFallbackWarning(RuntimeWarning):
    """CUDA was asked for (or auto-selected) but the session runs on the CPU."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_provider(provider: Provider) -> Provider:
    """AUTO -> CUDA when onnxruntime-gpu is installed with its CUDA provider, else CPU."""
    available = available_providers()
    if provider is Provider.AUTO:
        return Provider.CUDA if CUDA_PROVIDER in available else Provider.CPU
    if provider is Provider.CUDA and CUDA_PROVIDER not in available:
        raise ModelError(
            f"provider 'cuda' is not available in this onnxruntime (available: {', '.join(available)}); "
            "install onnxruntime-gpu instead of onnxruntime (pip uninstall onnxruntime && pip install 'soundnet8[gpu]')"
        )
    return provider


def create_session(model_path: str | os.PathLike, config: SessionConfig = SessionConfig()):
    """An InferenceSession on the resolved provider, warning if CUDA silently fell back to CPU."""
    import onnxruntime as ort

    provider = resolve_provider(config.provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1  # the graph is a chain: no parallel branches to schedule
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = config.graph_optimization.ort_level()
    options.log_severity_level = 3  # ORT's own warnings go through our messages instead
    spinning = config.spinning()
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if config.cpu_arena is not None:
        options.enable_cpu_mem_arena = config.cpu_arena
    if config.mem_pattern is not None:
        options.enable_mem_pattern = config.mem_pattern
    if provider is Provider.CUDA:
        cuda_options = {"device_id": config.cuda_device, "cudnn_conv_algo_search": config.cudnn_search}
        if config.cudnn_conv1d_pad_to_nc1d is not None:
            cuda_options["cudnn_conv1d_pad_to_nc1d"] = "1" if config.cudnn_conv1d_pad_to_nc1d else "0"
        providers = [(CUDA_PROVIDER, cuda_options), CPU_PROVIDER]
    else:
        providers = [CPU_PROVIDER]
    try:
        session = ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as exc:
        raise ModelError(f"{model_path}: ONNX Runtime cannot load the model ({exc})") from exc
    if provider is Provider.CUDA and CUDA_PROVIDER not in session.get_providers():
        warnings.warn(
            "CUDA was requested but ONNX Runtime fell back to the CPU (CUDA/cuDNN libraries missing or "
            "no device); check `nvidia-smi` and onnxruntime-gpu's CUDA requirements",
            CudaFallbackWarning, stacklevel=2,
        )
    return session


def session_provider(session) -> Provider:
    """The provider a session actually runs on (CUDA may have fallen back to the CPU)."""
    return Provider.CUDA if session.get_providers()[0] == CUDA_PROVIDER else Provider.CPU


# --- the fastest graph for this machine (timed once, cached like an FFTW plan) ------------------------

PLANS_FILE = "plans.json"
TUNE_SAMPLES = 551_250
"""Input length the variants are timed on: a 5 s clip with the default tiling (25 s at 22,050 Hz)."""
TUNE_ROUNDS = 5
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")
"""CPU features that change which kernels ONNX Runtime runs (x86 and Arm names)."""


class ChoiceSource(str, enum.Enum):
    FORCED = "forced"  # by the option or $SOUNDNET8_GRAPH
    CACHED = "cached"  # a plan timed earlier on this machine and configuration
    TIMED = "timed"  # timed just now (first use)
    FALLBACK = "fallback"  # the plain graph: the cache could not be written (the reason is logged)


@dataclass(frozen=True)
class GraphChoice:
    variant: GraphVariant
    path: Path
    source: ChoiceSource
    seconds: Mapping[str, float] = field(default_factory=dict)  # median s per call of each variant timed


def cpu_identity() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the ISA_FLAGS it has), from /proc/cpuinfo where there is one."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux: the platform's words only
        pass
    model = fields.get("model name") or fields.get("CPU part") or platform.processor() or "unknown"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return model, tuple(f for f in ISA_FLAGS if f in flags)


def plan_key(config: SessionConfig) -> dict:
    """What a timing depends on: the CPU, its instruction sets, ONNX Runtime, threads, provider."""
    import onnxruntime

    model, isa = cpu_identity()
    return {"cpu": model, "isa": list(isa), "cores": os.cpu_count() or 1, "onnxruntime": onnxruntime.__version__,
            "threads": config.intra_op_threads, "provider": resolve_provider(config.provider).value,
            "samples": TUNE_SAMPLES, "variants": [v.value for v in VARIANTS]}  # a new variant is timed too


def read_plans(model: ModelInfo) -> dict:
    path = variants_dir(model) / PLANS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); the graph variants are timed again", path, exc)
        return {}


def _write_plans(model: ModelInfo, plans: dict) -> None:
    path = variants_dir(model) / PLANS_FILE
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    tmp.write_text(json.dumps(plans, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def time_variants(paths: Mapping[GraphVariant, Path], config: SessionConfig, rounds: int = TUNE_ROUNDS,
                  samples: int = TUNE_SAMPLES) -> dict[GraphVariant, float]:
    """Median seconds per call of each graph, timed in interleaved rounds (so load from other
    processes hits every variant alike) after one untimed call each."""
    import numpy as np

    x = np.random.default_rng(0).uniform(-256, 256, (1, samples)).astype(np.float32)
    sessions = {}
    for v, p in paths.items():
        try:
            sessions[v] = create_session(p, config)
        except Exception as exc:  # a variant this provider or machine cannot run: time the others
            if v is GraphVariant.PLAIN:  # the model itself: its error is the job's
                raise
            log.warning("graph variant %s left out: %s", v.value, exc)
    outputs = {v: [o.name for o in s.get_outputs()] for v, s in sessions.items()}
    times: dict[GraphVariant, list[float]] = {v: [] for v in sessions}
    order = list(sessions)
    for r in range(rounds + 1):
        for v in order[r % len(order):] + order[:r % len(order)]:
            start = time.perf_counter()
            sessions[v].run(outputs[v], {INPUT_NAME: x})
            if r:  # round 0 warms up: allocations, kernel choice
                times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def _candidates(model: ModelInfo) -> dict[GraphVariant, Path]:
    paths = {}
    try:
        derive_variants(model)
    except ModelError as exc:  # one at a time below, so one failing variant leaves the others
        log.warning("%s", exc)
    for variant in VARIANTS:
        try:
            paths[variant] = variant_path(model, variant)
        except ModelError as exc:  # e.g. a Conv2d-layout export the rewrites do not apply to
            log.warning("graph variant %s left out: %s", variant.value, exc)
    return paths


def choose_graph(model: ModelInfo, config: SessionConfig = SessionConfig(),
                 option: GraphVariant = GraphVariant.AUTO) -> GraphChoice:
    """The graph to run: ``option`` (or ``$SOUNDNET8_GRAPH``) if forced, else the fastest variant for
    this machine and session configuration, timed once and cached in ``variants_dir(model)``."""
    forced = forced_variant(option)
    if forced is not GraphVariant.AUTO:
        return GraphChoice(forced, variant_path(model, forced), ChoiceSource.FORCED)
    key = plan_key(config)
    name = json.dumps(key, sort_keys=True)
    plan = read_plans(model).get(name)
    if plan and plan.get("variant") in {v.value for v in VARIANTS}:
        variant = GraphVariant(plan["variant"])
        return GraphChoice(variant, variant_path(model, variant), ChoiceSource.CACHED, plan.get("seconds", {}))
    try:
        variants_dir(model).mkdir(parents=True, exist_ok=True)
        return _time_and_cache(model, config, key)
    except OSError as exc:  # e.g. a read-only cache: run the export as it is rather than fail the job
        earlier = _earlier_plan(model, key)
        if earlier is not None:  # timed here before new variants were added: better than the plain graph
            log.warning("graph variants not timed (%s): running %s, timed here earlier", exc, earlier.variant.value)
            return earlier
        log.warning("graph variants not timed (%s): running the plain graph", exc)
        return GraphChoice(GraphVariant.PLAIN, model.path, ChoiceSource.FALLBACK)


def _earlier_plan(model: ModelInfo, key: dict) -> GraphChoice | None:
    """A cached plan for this machine and configuration made with another list of variants (an older
    soundnet8), if its variant's file is in the cache: what a read-only cache can still offer."""
    def same(other: dict) -> bool:
        return {k: v for k, v in other.items() if k != "variants"} == {k: v for k, v in key.items() if k != "variants"}

    for plan in read_plans(model).values():
        name = plan.get("variant")
        if not (isinstance(plan.get("key"), dict) and same(plan["key"]) and name in {v.value for v in VARIANTS}):
            continue
        path = variant_file(model, GraphVariant(name))
        if path.is_file():
            return GraphChoice(GraphVariant(name), path, ChoiceSource.FALLBACK, plan.get("seconds", {}))
    return None


def _time_and_cache(model: ModelInfo, config: SessionConfig, key: dict) -> GraphChoice:
    name = json.dumps(key, sort_keys=True)
    with open(variants_dir(model) / "plans.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process times at a time: concurrent timings disturb each other
        plans = read_plans(model)
        if name not in plans:
            paths = _candidates(model)
            seconds = time_variants(paths, config)
            best = min(seconds, key=seconds.get)
            plans[name] = {"key": key, "variant": best.value, "seconds": {v.value: s for v, s in seconds.items()},
                           "timed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _write_plans(model, plans)
            log.info("graph variants timed on this machine: %s -> %s", ", ".join(
                f"{v.value} {1000 * s:.1f} ms" for v, s in seconds.items()), best.value)
            return GraphChoice(best, paths[best], ChoiceSource.TIMED, plans[name]["seconds"])
    variant = GraphVariant(plans[name]["variant"])
    return GraphChoice(variant, variant_path(model, variant), ChoiceSource.CACHED, plans[name]["seconds"])
