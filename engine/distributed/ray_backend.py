"""Distributed extraction on Ray Data: the driver's side.

    driver: list inputs ─► drop those already in the store (resume) ─► dataset of paths (+ manifest rows)
    cluster: decode tasks (CPU) ─► model actors (ActorPool; each writes store segments) ─► small rows
    driver: progress from those rows ─► consolidation of every segment with the store's merger

The driver holds the store's writer (its lock and resume bookkeeping) and never touches audio: the
dataset carries paths, the decode tasks read the files, the actors write segments into
``STORE.h5.parts/`` on a filesystem every node sees, and the writer's ``close()`` merges them (each
path once). An actor that dies is restarted and its batch retried; a driver that dies leaves only
published segments (and temp files the next writer removes), which the same command merges on
start and then skips.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import SoundNetError
from ..inputs import InputItem, InputSet
from ..modelfile import ModelInfo
from ..pipeline import ExtractOptions, ExtractSummary, resumed_graph, store_settings
from ..progress import Progress
from ..store import StoreWriter
from ..store.files import StoreFiles
from .segments import SegmentSpec
from .stages import NO_VALUE, ModelActor, decode_batch, encode_meta

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'soundnet8[distributed]'"
DECODE_CPU_SHARE = 1 / 8
"""Share of the cluster's CPUs left to decode tasks when sizing the actor pool. Decoding and
resampling a 5 s ESC-50 FLAC takes ~3.5 ms against ~110 ms of model on one core (measured); the
rest is headroom for longer, MP3 or 44.1 kHz files."""

RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray backend runs (what local extraction's ``workers`` is to a machine)."""

    address: str | None = None  # None: start a local cluster; "auto" or HOST:PORT / ray://...: join one
    actors: int = 0  # model actors; 0: every GPU (gpus_per_actor > 0) or the CPUs decoding leaves free
    cpus_per_actor: float = 1.0  # also the actor's ONNX Runtime intra-op threads (at least 1)
    gpus_per_actor: float = 0.0
    clips_per_segment: int = 64  # clips per actor call and per segment (redone at most after a crash)
    decode_batch: int = 16  # clips per decode call
    compact_rows: int = 0  # an actor's rows per compacted segment; 0: the store's tallest feature chunk
    verbose: bool = False  # Ray's own logs and progress bars on the terminal

    def __post_init__(self) -> None:
        if self.actors < 0 or self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise SoundNetError("--actors must be >= 0, --cpus-per-actor > 0, --gpus-per-actor >= 0")
        if self.clips_per_segment < 1 or self.decode_batch < 1:
            raise SoundNetError("clips per segment and decode batch must be >= 1")

    def actor_count(self, cluster_cpus: float, cluster_gpus: float) -> int:
        """The actor pool's size on a cluster with these resources."""
        if self.actors:
            return self.actors
        if self.gpus_per_actor > 0:
            return max(1, int(cluster_gpus // self.gpus_per_actor))
        free = cluster_cpus - max(1.0, math.ceil(cluster_cpus * DECODE_CPU_SHARE))
        return max(1, int(free // self.cpus_per_actor))


@dataclass(frozen=True)
class RaySummary(ExtractSummary):
    """:class:`ExtractSummary` plus where the time went on the cluster."""

    actors: int = 0
    per_node: Mapping[str, int] = field(default_factory=dict)  # clips done by each node (id prefix)
    segments: int = 0  # segments the actors wrote (merged by the driver at the end)
    consolidate_seconds: float = 0.0  # the driver's final merge
    startup_seconds: float = 0.0  # from the call to the first finished clip (cluster, actors, first batch)

    @property
    def steady_clips_per_second(self) -> float:
        """Throughput between the first finished batch and the end of the pipeline (no start-up, no merge).

        An upper bound of a long run's rate: decode tasks start before the actors are ready, so
        some decoding is done before the window opens."""
        busy = self.seconds - self.startup_seconds - self.consolidate_seconds
        return self.processed / busy if busy > 0 else 0.0


def require_ray():
    """The ``ray`` module, or a SoundNetError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pyarrow, pandas)
    except ImportError as exc:
        raise SoundNetError(f"--backend ray needs Ray Data ({exc}); install it with: {INSTALL_HINT}") from None
    return ray


def local_cpus() -> int:
    """Logical CPUs of a cluster started here: every core for actors plus a share for decode tasks
    (a local cluster sized exactly to the cores starves the decode tasks behind the actors)."""
    cores = os.cpu_count() or 1
    return cores + max(1, math.ceil(cores * DECODE_CPU_SHARE))


RAY_ENV = ("RAY_BACKEND_LOG_LEVEL", "RAY_DEDUP_LOGS")  # what quiet_ray sets, and puts back


@contextmanager
def quiet_ray(verbose: bool) -> Iterator[None]:
    """Ray's loggers, C++ core logs and Python warnings kept off the terminal unless ``verbose``."""
    level = logging.INFO if verbose else logging.ERROR
    previous = {name: logging.getLogger(name).level for name in RAY_LOGGERS}
    environment = {key: os.environ.get(key) for key in RAY_ENV}
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose:  # read by the core worker and the processes a local cluster starts
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    with warnings.catch_warnings():
        if not verbose:
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        try:
            yield
        finally:
            for name, old in previous.items():
                logging.getLogger(name).setLevel(old)
            for key, value in environment.items():  # a library caller (a notebook) gets its environment back
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextmanager
def connected(options: RayOptions) -> Iterator[object]:
    """Ray initialised for this run (joined or started locally), quiet unless verbose; shut down after."""
    ray = require_ray()
    with quiet_ray(options.verbose):
        if ray.is_initialized():  # a caller's session (e.g. a notebook): use it, leave it running
            yield ray
            return
        kwargs = dict(log_to_driver=options.verbose, logging_level=logging.INFO if options.verbose else logging.ERROR)
        if options.address is None:
            kwargs.update(num_cpus=local_cpus(), include_dashboard=False)
        else:
            kwargs["address"] = options.address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SoundNetError(f"cannot connect to the Ray cluster at {options.address!r}: {exc}") from exc
        try:
            yield ray
        finally:
            ray.shutdown()


def pending(inputs: InputSet, done: Set[str]) -> list[tuple[int, InputItem]]:
    """(index, item) of the inputs not yet in the store: what the dataset is built from."""
    return [(i, item) for i, item in enumerate(inputs.items) if item.path not in done]


def input_table(todo: Sequence[tuple[int, InputItem]]):
    """The dataset's rows as one Arrow table: paths and manifest rows, no audio."""
    import pyarrow as pa

    return pa.table({
        "index": pa.array([i for i, _ in todo], pa.int64()),
        "path": pa.array([item.path for _, item in todo], pa.string()),
        "meta": pa.array([encode_meta(item.meta) for _, item in todo], pa.string()),
        "label": pa.array([NO_VALUE if item.label is None else item.label for _, item in todo], pa.int64()),
        "fold": pa.array([NO_VALUE if item.fold is None else item.fold for _, item in todo], pa.int64()),
    })


def input_dataset(ray, todo: Sequence[tuple[int, InputItem]], slots: int):
    """A dataset of ``todo`` in blocks small enough to keep every decode slot busy."""
    table = input_table(todo)
    rows = min(4096, max(4, len(todo) // max(1, 4 * slots)))
    return ray.data.from_arrow([table.slice(start, rows) for start in range(0, len(todo), rows)])


def pipeline(ray, dataset, model: ModelInfo, options: ExtractOptions, ray_options: RayOptions,
             spec: SegmentSpec, actors: int, batch_size: int):
    """Decode tasks, then the model actor pool (``batch_size`` clips a call); rows say which clip finished where."""
    decoded = dataset.map_batches(decode_batch, batch_size=ray_options.decode_batch, batch_format="numpy",
                                  num_cpus=1, fn_kwargs={"preprocessing": options.preprocessing})
    # Ray Data restarts a dead pool actor and retries its unfinished batches (max_restarts and
    # max_task_retries default to -1 for actor pools); the segments make a retry harmless.
    return decoded.map_batches(
        ModelActor, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ray_options.cpus_per_actor, num_gpus=ray_options.gpus_per_actor or None,
        fn_constructor_kwargs=dict(
            model=model, graph=options.graph, provider=options.provider, threads=int(ray_options.cpus_per_actor),
            request=options.request, preprocessing=options.preprocessing, batch_size=options.batch_size,
            spec=spec, compact_rows=ray_options.compact_rows,
        ),
    )


def _quiet_data(ray, verbose: bool) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = verbose


def _first_line(exc: BaseException) -> str:
    """Ray's error text starts with the cause and goes on with remote tracebacks: keep the cause."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _run(ray, todo, model, options, ray_options, spec, progress: Progress) -> dict:
    """Run the pipeline over ``todo``; return RaySummary's counts; log per-node counts."""
    _quiet_data(ray, ray_options.verbose)
    resources = ray.cluster_resources()
    actors = ray_options.actor_count(resources.get("CPU", 1.0), resources.get("GPU", 0.0))
    log.info("ray: %d clips on %d node(s), %d model actor(s)", len(todo), len(ray.nodes()), actors)
    dataset = input_dataset(ray, todo, max(1, int(resources.get("CPU", 1.0))))
    failed, audio_seconds = 0, 0.0
    per_node: collections.Counter[str] = collections.Counter()
    # a small job still gives every actor several calls (else one actor finishes its last big batch alone)
    batch_size = max(1, min(ray_options.clips_per_segment, math.ceil(len(todo) / (8 * actors))))
    batch_size = math.ceil(batch_size / options.batch_size) * options.batch_size  # whole model batches
    rows = pipeline(ray, dataset, model, options, ray_options, spec, actors, batch_size)
    first = None
    for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
        first = first or time.perf_counter()
        for bad, seconds, node in zip(batch["failed"], batch["audio_seconds"], batch["node"]):
            failed += int(bad)
            audio_seconds += float(seconds)
            per_node[str(node)] += 1
            progress.update(failed=bool(bad), audio_seconds=float(seconds))
    for node, count in sorted(per_node.items()):
        log.info("ray: node %s processed %d clips", node, count)
    return dict(processed=sum(per_node.values()), failed=failed, audio_seconds=audio_seconds, actors=actors,
                per_node=dict(per_node), first_result=first)


def extract_ray(inputs: InputSet, store_path: str | os.PathLike, model: ModelInfo,
                options: ExtractOptions = ExtractOptions(), ray_options: RayOptions = RayOptions(), *,
                overwrite: bool = False, retry_errors: bool = False, settings_extra: dict | None = None,
                compression=None, segment_rows: int | None = None) -> RaySummary:
    """Extract ``inputs`` into ``store_path`` on a Ray cluster; the same store as :func:`extract`.

    ``segment_rows``, when given, is the clips per actor call and segment (RayOptions.clips_per_segment)."""
    import onnxruntime

    require_ray()  # fail before taking the store's lock
    # a resumed store keeps its first run's graph variant on every node (bit-identical resume)
    options = replace(options, graph=resumed_graph(store_path, options.graph, overwrite=overwrite))
    if segment_rows is not None:
        ray_options = replace(ray_options, clips_per_segment=segment_rows)
    settings = store_settings(options, model, compression)
    run_attrs = {"provider": options.provider.value, "onnxruntime_version": onnxruntime.__version__,
                 "layout": "split", "backend": "ray", **(settings_extra or {})}
    started = time.perf_counter()
    counts: dict = dict(processed=0, failed=0, audio_seconds=0.0)
    with StoreWriter(store_path, settings, run_attrs=run_attrs, class_names=inputs.class_names,
                     meta_schema=inputs.meta_schema, overwrite=overwrite, retry_errors=retry_errors) as writer:
        todo = pending(inputs, writer.done)
        skipped = len(inputs) - len(todo)
        if skipped:
            log.info("resuming: %d of %d clips already in %s", skipped, len(inputs), store_path)
        if todo:
            spec = SegmentSpec.for_store(store_path, settings, run_attrs, inputs.class_names, inputs.meta_schema)
            with connected(ray_options) as ray, Progress(len(todo), options.progress_options()) as progress:
                try:
                    counts = _run(ray, todo, model, options, ray_options, spec, progress)
                except ray.exceptions.RayError as exc:  # e.g. an actor that cannot load the model on a node
                    raise SoundNetError(f"the Ray job failed ({type(exc).__name__}): {_first_line(exc)}; the "
                                        "segments written so far are kept: re-run the same command to resume") from exc
        segments = len(StoreFiles(Path(store_path)).segments())
        merge_started = time.perf_counter()
        summary = writer.close()
        merge_seconds = time.perf_counter() - merge_started
    processed, failed = counts.pop("processed"), counts.pop("failed")
    first = counts.pop("first_result", None)
    summary = replace(summary, rows_added=processed - failed, errors_added=failed)
    return RaySummary(summary, processed, failed, skipped, time.perf_counter() - started,
                      segments=segments, consolidate_seconds=merge_seconds,
                      startup_seconds=(first - started) if first else 0.0, **counts)

