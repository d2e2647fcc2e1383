"""Graph variants: every forced choice gives the same features through extract, the automatic choice is
timed once per machine and configuration and then read from its cache, and the store keeps naming the
canonical model (so it resumes across variants) while recording the variants run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soundnet8.engine.errors import ModelError
from soundnet8.engine.inputs import bundled_clips, discover
from soundnet8.engine.modelfile import (
    CACHE_ENV_VAR, GRAPH_ENV_VAR, VARIANTS, GraphVariant, forced_variant, model_info, variant_path, variants_dir,
)
from soundnet8.engine.pipeline import ExtractOptions, extract
from soundnet8.engine.request import Pool, Request
from soundnet8.engine.session import (
    PLANS_FILE, Provider, SessionConfig, choose_graph, plan_key, read_plans,
)
from soundnet8.engine.store import FeatureStore

from .conftest import relative_error

TOLERANCE = 1e-4
CPU1 = SessionConfig(Provider.CPU, intra_op_threads=1)


@pytest.fixture(scope="module")
def model(onnx_path, tmp_path_factory):
    """The fresh export, with a model cache of its own (variants and plans start empty)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV_VAR, str(tmp_path_factory.mktemp("cache")))
        mp.delenv(GRAPH_ENV_VAR, raising=False)
        yield model_info(onnx_path)


def _options(graph: GraphVariant, **kw) -> ExtractOptions:
    return ExtractOptions(request=Request(pools=(Pool.MEAN, Pool.MAX)), provider=Provider.CPU, workers=1,
                          progress=False, graph=graph, **kw)


def _features(store: Path) -> tuple[dict, dict, list[str]]:
    with FeatureStore(store) as fs:
        order = np.argsort(fs.paths)
        feats = {(layer, pool): fs.features(layer, pool)[order] for layer in fs.layers for pool in fs.pools(layer)}
        return feats, fs.attrs, sorted(fs.paths)


@pytest.fixture(scope="module")
def plain_store(model, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("plain") / "plain.h5"
    extract(discover(bundled_clips()), store, model, _options(GraphVariant.PLAIN))
    return store


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v is not GraphVariant.PLAIN])
def test_a_forced_variant_gives_the_same_features_through_extract(model, plain_store, tmp_path, variant):
    store = tmp_path / f"{variant.value}.h5"
    extract(discover(bundled_clips()), store, model, _options(variant))
    want, want_attrs, want_paths = _features(plain_store)
    got, attrs, paths = _features(store)
    assert paths == want_paths and set(got) == set(want)
    for key in want:
        finite = np.isfinite(want[key])
        assert np.array_equal(finite, np.isfinite(got[key])), key
        assert relative_error(got[key][finite], want[key][finite]) <= TOLERANCE, key
    assert attrs["graph_variant"] == variant.value and want_attrs["graph_variant"] == "plain"
    assert attrs["onnx_sha256"] == want_attrs["onnx_sha256"] == model.sha256  # the canonical model, not the variant
    assert variant_path(model, variant) != model.path


def test_a_store_resumes_across_variants_and_keeps_both_as_provenance(model, plain_store, tmp_path):
    clips = bundled_clips()
    store = tmp_path / "mixed.h5"
    extract(discover(clips[:3]), store, model, _options(GraphVariant.PLAIN))
    summary = extract(discover(clips), store, model, _options(GraphVariant.MATMUL))  # another machine's choice
    assert summary.skipped == 3 and summary.processed == 3
    got, attrs, _ = _features(store)
    want, _, _ = _features(plain_store)
    assert attrs["graph_variant"] == "plain; matmul"
    for key in want:
        finite = np.isfinite(want[key])
        assert relative_error(got[key][finite], want[key][finite]) <= TOLERANCE, key


def test_auto_times_the_variants_once_then_reads_the_plan(model):
    first = choose_graph(model, CPU1)
    assert first.source == "timed" and set(first.seconds) == {v.value for v in VARIANTS}
    assert first.variant.value == min(first.seconds, key=first.seconds.get) and first.path.is_file()
    again = choose_graph(model, CPU1)
    assert again.source == "cached" and again.variant is first.variant and again.seconds == first.seconds
    plans = read_plans(model)
    entry = plans[json.dumps(plan_key(CPU1), sort_keys=True)]
    assert set(entry["key"]) >= {"cpu", "isa", "onnxruntime", "threads", "provider"}
    assert entry["key"]["threads"] == 1 and entry["key"]["provider"] == "cpu"
    # Another thread count is another plan.
    other = choose_graph(model, SessionConfig(Provider.CPU, intra_op_threads=2))
    assert other.source == "timed" and len(read_plans(model)) == 2


def test_the_cached_plan_decides(model):
    choose_graph(model, CPU1)  # make sure a plan exists
    path = variants_dir(model) / PLANS_FILE
    plans = json.loads(path.read_text())
    name = json.dumps(plan_key(CPU1), sort_keys=True)
    for variant in VARIANTS:  # whatever the timing said, the plan on disk is what is used
        plans[name]["variant"] = variant.value
        path.write_text(json.dumps(plans))
        choice = choose_graph(model, CPU1)
        assert choice.variant is variant and choice.source == "cached"
        assert choice.path == variant_path(model, variant)


def test_environment_forces_a_variant_and_the_option_wins(model, monkeypatch):
    monkeypatch.setenv(GRAPH_ENV_VAR, "matmul-conv12")
    assert forced_variant() is GraphVariant.MATMUL_CONV12
    choice = choose_graph(model, CPU1)
    assert choice.variant is GraphVariant.MATMUL_CONV12 and choice.source == "forced"
    assert choose_graph(model, CPU1, GraphVariant.PLAIN).path == model.path
    monkeypatch.setenv(GRAPH_ENV_VAR, "fastest")
    with pytest.raises(ModelError, match=GRAPH_ENV_VAR):
        choose_graph(model, CPU1)


def test_cli_graph_option(model, tmp_path):
    from soundnet8.engine.cli import main

    store = tmp_path / "cli.h5"
    code = main(["extract", str(bundled_clips()[0]), "-o", str(store), "--model", str(model.path),
                 "--layers", "pool5", "--workers", "1", "--no-progress", "--provider", "cpu",
                 "--graph", "matmul-conv12"])
    assert code == 0
    with FeatureStore(store) as fs:
        assert fs.attrs["graph_variant"] == "matmul-conv12"


def test_variants_are_derived_without_torch(model, tmp_path):
    code = ("import sys, runpy; sys.argv = ['variants', sys.argv[1], '-o', sys.argv[2], '--variant', 'matmul'];"
            "import soundnet8.export.variants as v; v.main(sys.argv[1:]);"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code, str(model.path), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "matmul.onnx").is_file() and not (tmp_path / "matmul-conv12.onnx").exists()


def test_an_unwritable_cache_falls_back_to_the_plain_graph(model, tmp_path, monkeypatch):
    from soundnet8.engine.session import ChoiceSource

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(blocker / "cache"))  # nothing can be created below a file
    choice = choose_graph(model, CPU1)
    assert choice.variant is GraphVariant.PLAIN and choice.path == model.path
    assert choice.source is ChoiceSource.FALLBACK


def test_a_read_only_cache_with_a_plan_from_an_older_variant_list_uses_that_plan(model, tmp_path, monkeypatch):
    """After an upgrade that adds variants the plan key misses; a cache that cannot be written still has
    the variant timed earlier, which beats the plain graph."""
    from soundnet8.engine.session import ChoiceSource

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    folder = variants_dir(model)
    folder.mkdir(parents=True)
    old_key = {**plan_key(CPU1), "variants": ["plain", "matmul"]}  # what an older soundnet8 keyed it by
    (folder / PLANS_FILE).write_text(json.dumps({json.dumps(old_key, sort_keys=True): {
        "key": old_key, "variant": "matmul", "seconds": {"plain": 0.2, "matmul": 0.1}}}))
    variant_path(model, GraphVariant.MATMUL)  # its file, derived while the cache was writable
    # the plans' lock cannot be opened, as in a read-only cache (a folder in its way: root included)
    (folder / "plans.lock").mkdir()
    choice = choose_graph(model, CPU1)
    assert choice.variant is GraphVariant.MATMUL and choice.source is ChoiceSource.FALLBACK
    assert choice.path == folder / "matmul.onnx"


def test_auto_on_a_resumed_store_keeps_its_variant_so_resume_is_bit_identical(model, tmp_path):
    clips = bundled_clips()
    whole, resumed = tmp_path / "whole.h5", tmp_path / "resumed.h5"
    extract(discover(clips), whole, model, _options(GraphVariant.MATMUL_CONV12))
    extract(discover(clips[:2]), resumed, model, _options(GraphVariant.MATMUL_CONV12))
    choose_graph(model, CPU1)  # this machine's plan exists; make it name another variant
    path = variants_dir(model) / PLANS_FILE
    plans = json.loads(path.read_text())
    plans[json.dumps(plan_key(CPU1), sort_keys=True)]["variant"] = GraphVariant.PLAIN.value
    path.write_text(json.dumps(plans))
    extract(discover(clips), resumed, model, _options(GraphVariant.AUTO))
    want, _, want_paths = _features(whole)
    got, attrs, paths = _features(resumed)
    assert attrs["graph_variant"] == "matmul-conv12" and paths == want_paths
    for key in want:
        assert np.array_equal(got[key], want[key], equal_nan=True), key
