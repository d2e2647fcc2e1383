"""pytest-benchmark suite: the engine's hot paths, one call at a time, for regression tracking.

Run (not part of the test suite; ``--benchmark-enable`` overrides the project's ``--benchmark-disable``)::

    .venv/bin/python -m pytest benchmarks/bench_model.py --benchmark-enable -p no:cacheprovider \
        --benchmark-json=/tmp/bench-model.json

``soundnet8 bench`` is the tool for the reported figures (worker layouts, baselines, end to end);
this suite times single calls in one process: a session.run per provider, batch and input kind,
the Runner's pooling on top, and the loader. CUDA cases are marked ``gpu`` and skip without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

from soundnet8.benchmarks.data import load_corpus, model_inputs
from soundnet8.benchmarks.ort_bench import ModelCall, SessionSpec, Stage, cuda_available
from soundnet8.benchmarks.settings import InputKind
from soundnet8.engine import arch
from soundnet8.engine.modelfile import INPUT_NAME, ensure_model
from soundnet8.engine.session import Provider, SessionConfig, create_session


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(ensure_model().path)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus().subset(8)


@pytest.fixture(scope="module", params=list(InputKind), ids=lambda k: k.value)
def waveforms(request, corpus) -> list[np.ndarray]:
    return model_inputs(corpus.paths, request.param)


def _batch(waveforms: list[np.ndarray], size: int) -> np.ndarray:
    return np.stack([waveforms[i % len(waveforms)] for i in range(size)])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_session_run_cpu(benchmark, model_path, waveforms, threads, batch_size):
    session = create_session(model_path, SessionConfig(Provider.CPU, threads))
    batch = _batch(waveforms, batch_size)
    outputs = benchmark(session.run, list(arch.OUTPUTS), {INPUT_NAME: batch})
    assert outputs[0].shape[0] == batch_size


def test_runner_pooling_cpu(benchmark, model_path, waveforms):
    from soundnet8.engine.runner import Request, Runner

    runner = Runner(create_session(model_path, SessionConfig(Provider.CPU, 1)), Request(), batch_size=4)
    feats = benchmark(runner.features, waveforms[:4])
    assert len(feats) == 4


def test_load_clip(benchmark, corpus):
    from soundnet8.engine.audio import load

    clip = benchmark(load, corpus.paths[0])
    assert len(clip.waveform) > 0


@pytest.mark.gpu
@pytest.mark.parametrize("iobinding", [False, True], ids=["run", "iobinding"])
@pytest.mark.parametrize("batch_size", [1, 32])
def test_session_run_cuda(benchmark, model_path, waveforms, batch_size, iobinding):
    ok, reason = cuda_available()
    if not ok:
        pytest.skip(reason)
    run = ModelCall(model_path, SessionSpec(Provider.CUDA, 1, iobinding=iobinding), Stage.RAW)
    group = [waveforms[i % len(waveforms)] for i in range(batch_size)]
    benchmark(run, np.stack(group), group)
