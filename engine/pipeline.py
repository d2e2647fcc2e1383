"""The extraction pipeline: paths in, a feature store out, in bounded memory.

    inputs ──► bounded window of tasks (index-tagged groups of paths) ──► worker processes
    worker: decode + resample (+ model, in the fused layout) ──► results tagged by index
    main:   reorder buffer ──► StoreWriter (segments, atomic consolidation)

Layouts:
* ``FUSED`` (CPU default): every worker owns an ONNX Runtime session with few intra-op threads and
  does decode, model and pooling for its clips; the main process only writes. On small CPUs this
  measures faster than one many-threaded session (see benchmarks/).
* ``SPLIT`` (CUDA default): workers decode and resample; the main process batches equal lengths and
  runs one session (on the GPU).

At most ``2 * workers`` tasks are in flight and results are written in input order, so memory is
bounded whatever the corpus size; long files are streamed through windows (see runner.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from .audio import Clip, PreparedClip, Preprocessing, info, iter_model_input, load_prepared
from .errors import AudioError, SoundNetError
from .inputs import InputItem, InputSet
from .lifecycle import die_with_parent
from .modelfile import GraphVariant, ModelInfo
from .progress import Progress, ProgressMode, ProgressOptions
from .runner import LONG_INPUT, ClipFeatures, Request, Runner
from .session import Provider, SessionConfig, choose_graph, create_session, resolve_provider
from .store import ClipError, ClipResult, FeatureStore, StoreSettings, StoreSummary, StoreWriter
from .store.schema import ATTR_JOIN

log = logging.getLogger(__name__)


class Layout(enum.Enum):
    AUTO = "auto"  # FUSED on CPU, SPLIT on CUDA
    FUSED = "fused"
    SPLIT = "split"


@dataclass(frozen=True)
class ExtractOptions:
    request: Request = Request()
    preprocessing: Preprocessing = Preprocessing()
    provider: Provider = Provider.AUTO
    workers: int = 0  # 0: one per CPU core
    batch_size: int = 4
    intra_op_threads: int = 1  # per worker session (fused) or the main session (split: 0 = all cores)
    layout: Layout = Layout.AUTO
    # A bool is still accepted (True: AUTO, False: NONE), as before --progress existed.
    progress: ProgressOptions | bool = ProgressOptions()
    graph: GraphVariant = GraphVariant.AUTO  # AUTO: the fastest variant on this machine (timed once, cached)

    def progress_options(self) -> ProgressOptions:
        if isinstance(self.progress, ProgressOptions):
            return self.progress
        return ProgressOptions(ProgressMode.AUTO if self.progress else ProgressMode.NONE)

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ExtractSummary:
    store: StoreSummary
    processed: int  # clips attempted in this run
    failed: int  # of which recorded under /errors
    skipped: int  # already in the store (resume)
    seconds: float
    audio_seconds: float

    @property
    def clips_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


# --- what a worker does ------------------------------------------------------------------------

Task = list[tuple[int, str]]  # (input index, path): workers get paths, never arrays or metadata
Outcome = tuple[int, "ClipResult | ClipError | Clip | PreparedClip | None"]  # None: a long file, to stream


def _error(path: str, exc: Exception) -> ClipError:
    if isinstance(exc, AudioError):
        return ClipError(path, exc.reason)
    return ClipError(path, f"{type(exc).__name__}: {exc}")


def _result(path: str, duration: float, rate: int, feats: ClipFeatures) -> ClipResult:
    # meta, label and fold are attached by the main process, which holds the input set.
    return ClipResult(path=path, duration=duration, sample_rate=rate, meta={},
                      features=feats.pooled, frames=feats.frames)


class Worker:
    """What one worker holds: the preprocessing and, where it runs the model, a runner on its session.

    A pool's processes each build one (see :func:`_start_process`); the in-process and SPLIT paths build
    theirs in the main process."""

    def __init__(self, preprocessing: Preprocessing, runner: Runner | None = None) -> None:
        self.preprocessing = preprocessing
        self.runner = runner

    @classmethod
    def build(cls, model_path: str | None, config: SessionConfig | None, request: Request,
              preprocessing: Preprocessing, batch_size: int) -> Worker:
        """A worker that decodes only (``model_path`` None) or also runs the model on its own session."""
        if model_path is None:
            return cls(preprocessing)
        return cls(preprocessing, Runner(create_session(model_path, config or SessionConfig()), request,
                                         batch_size=batch_size))

    def _prepared(self, task: Task) -> list[Outcome]:
        """Each file opened once: its untiled model input, None when long (left to streaming), or its error."""
        out: list[Outcome] = []
        for index, path in task:
            try:
                out.append((index, load_prepared(path, self.preprocessing, max_samples=LONG_INPUT)))
            except Exception as exc:  # recorded under /errors, never fatal for the job
                out.append((index, _error(path, exc)))
        return out

    def decode(self, task: Task) -> list[Outcome]:
        """SPLIT layout: decode only (long files are left to the main process, which streams them)."""
        return [(index, value.clip() if isinstance(value, PreparedClip) else value)
                for index, value in self._prepared(task)]

    def process(self, task: Task) -> list[Outcome]:
        """FUSED layout: decode, run the model and pool, for every clip of the task (tiled straight
        into the model's batch buffer)."""
        return self.run_clips(task, self._prepared(task))

    def _long(self, path: str) -> ClipResult:
        assert self.runner is not None
        header = info(path)
        feats = self.runner.features_windowed(iter_model_input(path, self.preprocessing))
        return _result(path, header.duration, header.rate, feats)

    def run_clips(self, task: Task, decoded: list[Outcome]) -> list[Outcome]:
        """Features of the decoded clips of ``task`` (long files, left undecoded, stream through windows)."""
        runner = self.runner
        assert runner is not None, "a decode-only worker cannot run the model"
        paths = dict(task)
        out: list[Outcome] = []
        clips: list[tuple[int, Clip | PreparedClip]] = []
        for index, value in decoded:
            if isinstance(value, ClipError):
                out.append((index, value))
            elif value is None:  # long file: stream it through windows
                try:
                    out.append((index, self._long(paths[index])))
                except Exception as exc:
                    out.append((index, _error(paths[index], exc)))
            else:
                clips.append((index, value))
        try:
            feats = runner.features([clip.waveform for _, clip in clips])
        except Exception:
            feats = None  # one bad clip must not sink its batch mates: retry one at a time below
        for n, (index, clip) in enumerate(clips):
            try:
                f = feats[n] if feats is not None else runner.features([clip.waveform])[0]
                out.append((index, _result(paths[index], clip.duration, clip.native_rate, f)))
            except Exception as exc:
                out.append((index, _error(paths[index], exc)))
        return sorted(out, key=lambda pair: pair[0])


# A pool's initializer can only leave state in its process's globals: this is that process's Worker.
_process_worker: Worker | None = None


def _start_process(parent_pid: int, model_path: str | None, config: SessionConfig | None, request: Request,
                   preprocessing: Preprocessing, batch_size: int) -> None:
    global _process_worker
    die_with_parent(parent_pid)  # a SIGKILLed main process must not leave workers behind
    # the main process handles Ctrl-C and SIGTERM (a scheduler signals the whole job) and saves the
    # work; its workers end with it (die_with_parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _process_worker = Worker.build(model_path, config, request, preprocessing, batch_size)


def _decode_in_process(task: Task) -> list[Outcome]:
    assert _process_worker is not None
    return _process_worker.decode(task)


def _process_in_process(task: Task) -> list[Outcome]:
    assert _process_worker is not None
    return _process_worker.process(task)


# --- the main loop -------------------------------------------------------------------------------

def _tasks(items: Sequence[tuple[int, InputItem]], size: int) -> Iterator[Task]:
    for start in range(0, len(items), size):
        yield [(index, item.path) for index, item in items[start:start + size]]


def _ordered(executor: ProcessPoolExecutor, fn: Callable[[Task], list[Outcome]], tasks: Iterator[Task],
             max_in_flight: int) -> Iterator[tuple[Task, list[Outcome]]]:
    """Run ``fn`` over ``tasks`` with at most ``max_in_flight`` pending; yield in task order."""
    pending: dict[Future, int] = {}
    done: dict[int, tuple[Task, list[Outcome]]] = {}
    submitted = emitted = 0
    task_list: dict[int, Task] = {}
    exhausted = False
    while True:
        while not exhausted and len(pending) + len(done) < max_in_flight:
            task = next(tasks, None)
            if task is None:
                exhausted = True
                break
            task_list[submitted] = task
            pending[executor.submit(fn, task)] = submitted
            submitted += 1
        if emitted in done:
            yield done.pop(emitted)
            emitted += 1
            continue
        if not pending:
            return
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            number = pending.pop(future)
            done[number] = (task_list.pop(number), future.result())


def _mp_context():
    # spawn: workers start clean (no forked ORT threads or HDF5 handles from the parent).
    return multiprocessing.get_context("spawn")


def store_settings(options: ExtractOptions, model: ModelInfo, compression=None) -> StoreSettings:
    """The store settings an extraction with ``options`` writes (and a resumed store must match)."""
    settings_kwargs = dict(
        layers=options.request.layers, pools=tuple(p.value for p in options.request.pools),
        frames=options.request.frames, preprocessing=options.preprocessing.to_dict(),
        weights_sha256=model.weights_sha256, onnx_sha256=model.sha256,
    )
    if compression is not None:
        settings_kwargs["compression"] = compression
    return StoreSettings(**settings_kwargs)


def with_item(result: ClipResult | ClipError, item: InputItem) -> ClipResult | ClipError:
    """``result`` with its input's manifest row (meta, label, fold) attached; errors as they are."""
    if isinstance(result, ClipResult):
        return dataclasses.replace(result, meta=dict(item.meta), label=item.label, fold=item.fold)
    return result


def resumed_graph(store_path: str | os.PathLike, option: GraphVariant, *, overwrite: bool = False) -> GraphVariant:
    """``AUTO`` on a store being resumed means the variant its first run used: variants agree only to
    ~1e-6, so this keeps a resumed store bit-identical to an uninterrupted run. A forced variant (option
    or ``$SOUNDNET8_GRAPH``), a new store or ``--overwrite`` leave the choice to :func:`choose_graph`."""
    if option is not GraphVariant.AUTO or overwrite or os.environ.get("SOUNDNET8_GRAPH") or not os.path.exists(store_path):
        return option
    try:
        with FeatureStore(store_path) as fs:
            recorded = str(fs.attrs.get("graph_variant", ""))
    except SoundNetError:
        return option  # the writer says what is wrong with the store
    first = recorded.split(ATTR_JOIN)[0]
    known = {v.value for v in GraphVariant if v is not GraphVariant.AUTO}
    return GraphVariant(first) if first in known else option


def extract(inputs: InputSet, store_path: str | os.PathLike, model: ModelInfo, options: ExtractOptions = ExtractOptions(),
            *, overwrite: bool = False, retry_errors: bool = False, settings_extra: dict | None = None,
            compression=None, segment_rows: int | None = None) -> ExtractSummary:
    """Extract features of ``inputs`` into the store at ``store_path`` (resuming what is there)."""
    import onnxruntime

    provider = resolve_provider(options.provider)
    layout = options.layout
    if layout is Layout.AUTO:
        layout = Layout.SPLIT if provider is Provider.CUDA else Layout.FUSED
    settings = store_settings(options, model, compression)
    # onnx_sha256 above names the canonical model, so a store resumes on a machine that picks another
    # variant; the variant run is provenance, accumulated over runs.
    option = resumed_graph(store_path, options.graph, overwrite=overwrite)
    graph = choose_graph(model, SessionConfig(provider, intra_op_threads=options.intra_op_threads), option)
    run_attrs = {"provider": provider.value, "onnxruntime_version": onnxruntime.__version__,
                 "layout": layout.value, "graph_variant": graph.variant.value, **(settings_extra or {})}
    started = time.perf_counter()
    processed = failed = 0
    audio_seconds = 0.0
    writer_kwargs = {"segment_rows": segment_rows} if segment_rows else {}
    with StoreWriter(store_path, settings, run_attrs=run_attrs, class_names=inputs.class_names,
                     meta_schema=inputs.meta_schema, overwrite=overwrite, retry_errors=retry_errors,
                     **writer_kwargs) as writer:
        todo = [(i, item) for i, item in enumerate(inputs.items) if item.path not in writer.done]
        skipped = len(inputs) - len(todo)
        if skipped:
            log.info("resuming: %d of %d clips already in %s", skipped, len(inputs), store_path)
        workers = options.resolved_workers()
        # closing: the worker pool (or the in-process SIGINT handler) is released as soon as the loop
        # ends, also when writing fails, rather than whenever the generator is collected.
        with Progress(len(todo), options.progress_options()) as progress:
            with contextlib.closing(_results(todo, str(graph.path), options, layout, provider, workers)) as results:
                for index, result in results:
                    result = with_item(result, inputs.items[index])
                    writer.add(result)
                    processed += 1
                    seconds = 0.0
                    if isinstance(result, ClipError):
                        failed += 1
                        log.warning("%s: %s", result.path, result.message)
                    else:
                        seconds = result.duration
                        audio_seconds += seconds
                    progress.update(failed=isinstance(result, ClipError), audio_seconds=seconds)
        summary = writer.close()
    return ExtractSummary(summary, processed, failed, skipped, time.perf_counter() - started, audio_seconds)


def _results(todo: Sequence[tuple[int, InputItem]], model_path: str, options: ExtractOptions, layout: Layout,
             provider: Provider, workers: int) -> Iterator[tuple[int, ClipResult | ClipError]]:
    if not todo:
        return
    config = SessionConfig(provider, intra_op_threads=options.intra_op_threads)
    tasks = _tasks(todo, options.batch_size)
    if layout is Layout.FUSED and workers == 1:  # in-process: no pickling, and the simplest thing to debug
        yield from _in_process(Worker.build(model_path, config, options.request, options.preprocessing,
                                            options.batch_size), tasks)
        return
    if layout is Layout.FUSED:
        init = (model_path, config, options.request, options.preprocessing, options.batch_size)
        with _pool(workers, init) as pool:
            for _, outcomes in _ordered(pool, _process_in_process, tasks, 2 * workers):
                yield from outcomes
        return
    # SPLIT: decode in workers, model here.
    here = Worker.build(model_path, config, options.request, options.preprocessing, options.batch_size)
    with _pool(workers, (None, None, options.request, options.preprocessing, options.batch_size)) as pool:
        for task, decoded in _ordered(pool, _decode_in_process, tasks, 2 * workers):
            yield from here.run_clips(task, decoded)


def _in_process(worker: Worker, tasks: Iterator[Task]) -> Iterator[Outcome]:
    """Every task in this process, with Ctrl-C raising KeyboardInterrupt (the writer then saves the
    work done); the caller's SIGINT handler is put back however the loop ends."""
    on_main = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if on_main else None
    try:
        for task in tasks:
            yield from worker.process(task)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _pool(workers: int, init: tuple) -> Iterator[ProcessPoolExecutor]:
    """Worker processes built by :func:`_start_process`; on any exception, pending tasks are dropped
    instead of waited for."""
    initargs = (os.getpid(), *init)
    with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_start_process, initargs=initargs) as pool:
        try:
            yield pool
        except BrokenProcessPool as exc:
            _stop(pool, kill=True)
            if "initializer" in str(exc):
                raise SoundNetError("a worker process failed while starting (its error is printed above); "
                                    "the clips stored so far are kept") from exc
            raise SoundNetError(
                "a worker process died (killed from outside, e.g. by the out-of-memory killer); the clips "
                "stored so far are kept: re-run the same command to resume (fewer --workers use less memory)"
            ) from exc
        except BaseException:
            _stop(pool, kill=False)  # the workers finish their current task and exit normally
            raise


def _stop(pool: ProcessPoolExecutor, *, kill: bool) -> None:
    """Drop pending tasks; with ``kill``, kill the workers too. A broken pool needs it: the executor
    then terminate()s its workers, which ignore SIGTERM (the main process handles it), so one blocked
    on a full result pipe would keep the executor's shutdown waiting for ever."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the stdlib keeps no public list
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes if kill else ():
        with contextlib.suppress(ProcessLookupError, ValueError):  # already gone, or already closed
            process.kill()
