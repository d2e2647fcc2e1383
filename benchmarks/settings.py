"""What a benchmark run measures and how hard: one frozen :class:`BenchSettings` per run.

Three modes share every code path and differ only in sizes: ``full`` (the committed results, about
20-30 minutes on 2 cores), ``quick`` (a 200-clip subset, a few minutes) and ``smoke`` (the CI test:
a handful of clips, one repeat, seconds per section).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from soundnet8.engine.session import GraphOptimization, Provider

from .models import ModelVariant


class Mode(enum.Enum):
    FULL = "full"
    QUICK = "quick"
    SMOKE = "smoke"


class InputKind(enum.Enum):
    """The two input shapes every model-only measurement is made on."""

    TILED_25S = "tiled-25s"  # a 5 s clip with default preprocessing: tiled x5 to 551,250 samples
    UNTILED_10S = "untiled-10s"  # two 5 s clips back to back, no tiling: 220,500 samples


class Section(enum.Enum):
    """Independent parts of a run (``--only`` / ``--skip`` pick among them)."""

    LIMIT = "limit"  # matmul peak, decode throughput
    MODEL = "model"  # ONNX Runtime grid: threads x workers x batch, per provider and input kind
    VARIANTS = "variants"  # Conv2d export, graph optimization levels, session options
    BASELINES = "baselines"  # PyTorch eager, seed-style pipeline, naive ORT loop
    E2E = "e2e"  # extract() into a store, peak RSS, scaling with corpus size


@dataclass(frozen=True)
class BenchSettings:
    mode: Mode
    providers: tuple[Provider, ...]
    sections: tuple[Section, ...]
    cores: int
    warmup: int  # untimed runs before each measurement
    repeats: int  # timed runs; medians, min and max are over these
    passes: int  # the model grid is measured in this many passes over all its configurations
    model_clips: int  # clips per timed repeat in model-only measurements
    input_pool: int  # distinct clips the model-only inputs are drawn from
    threads: tuple[int, ...]
    workers: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    graph_levels: tuple[GraphOptimization, ...]
    session_options: bool  # measure allow_spinning / arena / mem-pattern variants
    variants: tuple[ModelVariant, ...]  # exports/rewrites compared with the engine's conv1d model
    torch_batches: tuple[int, ...]
    torch_kinds: tuple[InputKind, ...]
    baseline_clips: int  # clips per repeat of the seed-style and naive loops
    e2e_clips: int  # clips of the end-to-end extraction
    e2e_repeats: int
    e2e_alternatives: int  # clips for the other worker/thread layouts end to end (0: skip them)
    scaling_clips: tuple[int, ...]  # corpus sizes for throughput-vs-size (empty: skip)
    decode_clips: int
    matmul_size: int
    limit_threads: tuple[int, ...]  # matmul thread counts (all cores is the peak; 1 gives the per-core figure)
    cuda_batches: tuple[int, ...] = (1, 8, 32, 64)
    job_clips: int = 200  # clips of the whole-job comparison (command vs seed-style script, start-up included)
    startup_repeats: int = 3  # one-clip extract commands timed for the start-up figure
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, enum.Enum) else v for v in value]
            out[key] = value
        return out


def default_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def settings_for(mode: Mode, providers: tuple[Provider, ...] = (Provider.CPU,),
                 sections: tuple[Section, ...] = tuple(Section), cores: int | None = None) -> BenchSettings:
    cores = cores or default_cores()
    # Every way to spend the cores: 1..cores threads, 1..cores workers, never oversubscribed.
    threads = tuple(sorted({1, cores}))
    workers = tuple(sorted({1, cores}))
    all_levels = tuple(GraphOptimization)
    if mode is Mode.FULL:
        return BenchSettings(
            mode, providers, sections, cores, warmup=2, repeats=6, passes=3, model_clips=16, input_pool=32,
            threads=threads, workers=workers, batch_sizes=(1, 4, 8), graph_levels=all_levels,
            session_options=True, variants=tuple(v for v in ModelVariant if v is not ModelVariant.CONV1D),
            torch_batches=(1, 4), torch_kinds=tuple(InputKind), baseline_clips=60,
            e2e_clips=2000, e2e_repeats=3, e2e_alternatives=500, scaling_clips=(100, 1000, 10_000), decode_clips=200,
            matmul_size=2048, limit_threads=tuple(sorted({1, cores})),
        )
    if mode is Mode.QUICK:
        return BenchSettings(
            mode, providers, sections, cores, warmup=1, repeats=3, passes=1, model_clips=8, input_pool=8,
            threads=threads, workers=workers, batch_sizes=(1, 4), graph_levels=(GraphOptimization.BASIC, GraphOptimization.ALL),
            session_options=False, variants=(ModelVariant.CONV2D, ModelVariant.MM_ALL), torch_batches=(1,),
            torch_kinds=tuple(InputKind), baseline_clips=8, e2e_clips=200,
            e2e_repeats=1, e2e_alternatives=0, scaling_clips=(), decode_clips=40, matmul_size=1024,
            limit_threads=tuple(sorted({1, cores})),
        )
    return BenchSettings(
        mode, providers, sections, cores, warmup=1, repeats=1, passes=1, model_clips=2, input_pool=2,
        threads=(cores,), workers=(1,), batch_sizes=(2,), graph_levels=(GraphOptimization.ALL,),
        session_options=False, variants=(ModelVariant.CONV2D, ModelVariant.MM_ALL), torch_batches=(1,),
        torch_kinds=(InputKind.TILED_25S,), baseline_clips=2, e2e_clips=6,
        e2e_repeats=1, e2e_alternatives=0, scaling_clips=(), decode_clips=4, matmul_size=512, limit_threads=(cores,),
        cuda_batches=(1, 8), job_clips=4, startup_repeats=1,
    )
