"""The Ray Data backend on a real two-node Ray cluster on this machine (CPU only).

``soundnet8 extract --backend ray --ray-address`` (a separate driver process, as a user runs it)
against a head node and a worker node of ``ray.cluster_utils.Cluster``: the store equals local
extraction's (same paths once each, features within 1e-5 (max |difference| / max |feature|, per dataset), same schema and provenance plus
``backend``), bad files are /errors rows, a SIGKILLed driver resumes with the same command, and a
SIGKILLed model actor loses and duplicates nothing.

Each node has 4 logical CPUs and each actor asks for 2.5, so the two actors sit on different nodes
and decode tasks always find a CPU (two one-CPU actors on a 2-CPU cluster starve the decode tasks).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import ESC50_AUDIO, ESC50_META, relative_error, requires_shared

ray = pytest.importorskip("ray", reason="the Ray backend needs pip install 'soundnet8[distributed]'")
pytest.importorskip("ray.data")

h5py = pytest.importorskip("h5py")

pytestmark = [requires_shared(ESC50_AUDIO), requires_shared(ESC50_META), pytest.mark.slow]

N_ESC50 = 30
RAY_ARGS = ["--backend", "ray", "--actors", "2", "--cpus-per-actor", "2.5", "--segment-rows", "4",
            "--progress", "log"]
# provenance of the run, not of the features: graph_variant is each machine's (and thread count's)
# fastest graph, so actors with --cpus-per-actor threads may time another winner than 1-thread workers
ATTRS_OF_THE_RUN = {"created", "updated", "layout", "backend", "graph_variant"}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    address = cluster.address
    try:
        cluster.add_node(num_cpus=4)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        # what `ray stop` would do, limited to this cluster's processes (a developer's own Ray stays up)
        for pid in _processes_of(address):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile: nothing to stop
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        assert not _processes_of(address)


def _processes_of(address: str) -> list[int]:
    """Processes of this machine started for the cluster at ``address`` (they name it on their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if address.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, demo_clips) -> Path:
    """Bundled demo clips, ESC-50 clips, one 80 s file (windowed path) and two unreadable files."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("ray_inputs")
    with open(ESC50_META, newline="") as f:
        esc = list(csv.DictReader(f))[:N_ESC50]
    rows = [(str(ESC50_AUDIO / Path(r["filename"]).with_suffix(".flac")), r["target"], r["category"], r["fold"])
            for r in esc]
    names = {r["target"]: r["category"] for r in csv.DictReader(open(ESC50_META, newline=""))}
    for clip in demo_clips:
        target = clip.stem.rsplit("-", 1)[1]
        rows.append((str(clip), target, names[target], clip.name.split("-", 1)[0]))
    long_audio = np.concatenate([sf.read(r[0], dtype="float32")[0] for r in rows[:16]])  # 80 s at 16 kHz
    sf.write(folder / "long.flac", long_audio, 16000)
    rows.append((str(folder / "long.flac"), rows[0][1], rows[0][2], "1"))
    (folder / "noise.wav").write_bytes(os.urandom(4096))
    (folder / "empty.flac").write_bytes(b"")
    rows += [(str(folder / "noise.wav"), "0", names["0"], "1"), (str(folder / "empty.flac"), "0", names["0"], "1")]
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "target", "category", "fold"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, manifest) -> Path:
    from soundnet8.engine.inputs import read_manifest
    from soundnet8.engine.modelfile import ensure_model
    from soundnet8.engine.pipeline import ExtractOptions, extract
    from soundnet8.engine.progress import ProgressMode, ProgressOptions

    out = tmp_path_factory.mktemp("local") / "local.h5"
    options = ExtractOptions(workers=2, progress=ProgressOptions(ProgressMode.NONE))
    extract(read_manifest(manifest), out, ensure_model(None), options)
    return out


def command(manifest: Path, out: Path, cluster) -> list[str]:
    return [sys.executable, "-m", "soundnet8.engine.cli", "extract", "--manifest", str(manifest), "-o", str(out),
            *RAY_ARGS, "--ray-address", cluster.address]


def run_cli(manifest: Path, out: Path, cluster) -> subprocess.CompletedProcess:
    return subprocess.run(command(manifest, out, cluster), capture_output=True, text=True, timeout=300)


def contents(path: Path) -> dict:
    """A store as {path: (features by key, duration, label, fold)}, its errors and attributes."""
    with h5py.File(path, "r") as f:
        paths = [p.decode() for p in f["clips/path"][()]]
        keys = [(layer, pool) for layer in f["features"] for pool in f["features"][layer]]
        arrays = {key: f["features"][key[0]][key[1]][()] for key in keys}
        rows = {p: ({k: arrays[k][i] for k in keys}, f["clips/duration"][i], f["clips/label"][i], f["clips/fold"][i])
                for i, p in enumerate(paths)}
        errors = [p.decode() for p in f["errors/path"][()]]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        classes = [c.decode() for c in f["classes/name"][()]]
    return {"paths": paths, "rows": rows, "errors": errors, "attrs": attrs, "classes": classes}


def assert_equal_stores(ray_store: Path, local_store: Path) -> dict:
    got, want = contents(ray_store), contents(local_store)
    assert len(got["paths"]) == len(set(got["paths"])), "a clip is in the store twice"
    assert sorted(got["paths"]) == sorted(want["paths"])
    assert sorted(got["errors"]) == sorted(want["errors"])
    assert not set(got["errors"]) & set(got["paths"])
    assert got["classes"] == want["classes"]
    for path, (_, duration, label, fold) in want["rows"].items():
        assert got["rows"][path][1:] == (duration, label, fold), path
    for key in next(iter(want["rows"].values()))[0]:  # the project's parity metric, per dataset
        expected = np.stack([features[key] for features, *_ in want["rows"].values()])
        actual = np.stack([got["rows"][path][0][key] for path in want["rows"]])
        assert relative_error(actual, expected) <= 1e-5, key
    assert got["attrs"]["backend"] == "ray"
    same = {k: v for k, v in want["attrs"].items() if k not in ATTRS_OF_THE_RUN}
    assert {k: got["attrs"][k] for k in same} == same
    return got


def test_ray_store_equals_local_store(cluster, manifest, local_store, tmp_path):
    out = tmp_path / "ray.h5"
    done = run_cli(manifest, out, cluster)
    assert done.returncode == 3, done.stderr  # SOME_FAILED: the two unreadable files
    got = assert_equal_stores(out, local_store)
    assert len(got["errors"]) == 2 and len(got["paths"]) == N_ESC50 + 7
    nodes = set(re.findall(r"ray: node (\w+) processed \d+ clips", done.stderr))
    # the job ran on the two-node cluster; which nodes' actors took clips is Ray's scheduling (on a
    # small job one actor may finish everything while the other is still starting), not a promise
    assert "on 2 node(s)" in done.stderr and 1 <= len(nodes) <= 2, done.stderr
    assert not (out.parent / (out.name + ".parts")).exists() or not list((out.parent / (out.name + ".parts")).iterdir())
    again = run_cli(manifest, out, cluster)  # nothing left to do: exits at once, store unchanged
    assert again.returncode == 0, again.stderr
    assert "0 clips processed" in again.stdout and contents(out)["paths"] == got["paths"]


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the driver ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _segments(out: Path) -> list[Path]:
    parts = out.parent / (out.name + ".parts")
    return sorted(parts.glob("seg-*.h5")) if parts.is_dir() else []


def test_driver_killed_resumes_with_every_clip_once(cluster, manifest, local_store, tmp_path):
    out = tmp_path / "ray.h5"
    driver = subprocess.Popen(command(manifest, out, cluster), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(_segments(out)) >= 2, driver)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(timeout=60)
    # usually killed before consolidation (only segments on disk); on a slow machine it may have got
    # further: either way the same command must complete the store with every clip once
    resumed = run_cli(manifest, out, cluster)
    # the bad files may have been recorded by the killed run (then skipped) or by this one
    failed = int(re.search(r"(\d+) failed", resumed.stdout).group(1))
    assert resumed.returncode == (3 if failed else 0), resumed.stderr
    skipped = int(re.search(r"(\d+) already there", resumed.stdout).group(1))
    assert skipped >= 2  # the segments of the killed run were kept, not redone
    assert_equal_stores(out, local_store)


def _actor_pids() -> set[int]:
    """Processes of this machine running a model actor (Ray titles them after the actor's class)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ModelActor" in title:
                pids.add(int(entry.name))
    return pids


# The library call, with actors compacting every 8 rows (so a kill can also land inside a compaction).
DRIVER = """
import sys
from soundnet8.engine.distributed import RayOptions, extract_ray
from soundnet8.engine.inputs import read_manifest
from soundnet8.engine.modelfile import ensure_model
from soundnet8.engine.pipeline import ExtractOptions
from soundnet8.engine.progress import ProgressMode, ProgressOptions

manifest, out, address = sys.argv[1:]
options = RayOptions(address=address, actors=2, cpus_per_actor=2.5, compact_rows=8)
summary = extract_ray(read_manifest(manifest), out, ensure_model(None),
                      ExtractOptions(progress=ProgressOptions(ProgressMode.NONE)), options, segment_rows=4)
sys.exit(3 if summary.failed else 0)
"""


def test_actor_killed_mid_run_loses_and_duplicates_nothing(cluster, manifest, local_store, tmp_path):
    out = tmp_path / "ray.h5"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(manifest), str(out), cluster.address],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_segments(out)) >= 1 and _actor_pids(), driver)
        victim = min(_actor_pids())
        os.kill(victim, signal.SIGKILL)
        assert driver.poll() is None  # killed mid-run
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 3, stderr
    assert victim not in _actor_pids()
    assert_equal_stores(out, local_store)


def test_compacted_segments_merge_raw_with_every_clip_once(tmp_path, caplog):
    """An actor's per-call segments become whole-chunk segments, merged by raw chunk copies, every clip once."""
    from soundnet8.engine import arch
    from soundnet8.engine.distributed import CompactingWriter, SegmentSpec
    from soundnet8.engine.store import ClipError, ClipResult, ColumnSchema, StoreSettings, StoreWriter

    settings = StoreSettings(layers=("conv7",), pools=("mean", "max"), frames=False, preprocessing={},
                             weights_sha256="w", onnx_sha256="o")
    store = tmp_path / "s.h5"
    spec = SegmentSpec.for_store(store, settings, {"backend": "ray"}, None, ColumnSchema({"take": "str"}))
    unit = 256  # conv7's feature chunk height
    assert spec.layout.features[("conv7", "mean")].chunk_rows == unit
    rng = np.random.default_rng(1)
    rows = {f"/a/{i:04d}.flac": rng.random(arch.output_channels("conv7")).astype(np.float32) for i in range(700)}
    writer = CompactingWriter(spec, None, unit)
    paths = list(rows)
    for start in range(0, len(paths), 60):  # 60 clips a call, one of them failing
        batch = paths[start:start + 60]
        writer.write([ClipResult(p, 5.0, 16000, {"take": "A"}, {("conv7", "mean"): rows[p], ("conv7", "max"): rows[p]},
                                 None) for p in batch[1:]], [ClipError(batch[0], "unreadable")])
    assert writer.compacted == 512
    parts = sorted(p.name for p in (tmp_path / "s.h5.parts").iterdir())
    compacted = [name for name in parts if name.startswith("seg-0-")]
    assert len(compacted) == 2 and parts[:2] == compacted  # 2 x 256 rows, sorted before the rest
    with caplog.at_level(logging.DEBUG, logger="soundnet8.engine.store.merge"):
        with StoreWriter(store, settings, run_attrs={"backend": "ray"}, meta_schema=ColumnSchema({"take": "str"})) as w:
            summary = w.close()
    raw = re.search(r"appended (\d+) of (\d+) segment\(s\) as raw chunks", caplog.text)
    assert raw and int(raw.group(1)) >= 2, caplog.text  # the compacted ones: chunks copied verbatim
    assert (summary.total_rows, summary.total_errors) == (700 - 12, 12)
    with h5py.File(store, "r") as f:
        got = [p.decode() for p in f["clips/path"][()]]
        assert len(got) == len(set(got)) and set(got) == set(paths) - set(paths[::60])
        means = f["features/conv7/mean"][()]
        assert all(np.array_equal(means[i], rows[p]) for i, p in enumerate(got))
        assert set(p.decode() for p in f["errors/path"][()]) == set(paths[::60])


def test_quiet_ray_gives_the_callers_logging_and_environment_back(monkeypatch):
    import logging as logging_

    from soundnet8.engine.distributed.ray_backend import RAY_ENV, RAY_LOGGERS, quiet_ray

    monkeypatch.delenv("RAY_BACKEND_LOG_LEVEL", raising=False)
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    levels = {name: logging_.getLogger(name).level for name in RAY_LOGGERS}
    with quiet_ray(verbose=False):
        assert os.environ["RAY_BACKEND_LOG_LEVEL"] == "fatal"  # quiet inside
        assert all(logging_.getLogger(name).level == logging_.ERROR for name in RAY_LOGGERS)
    assert "RAY_BACKEND_LOG_LEVEL" not in os.environ and os.environ["RAY_DEDUP_LOGS"] == "0"
    assert {name: logging_.getLogger(name).level for name in RAY_LOGGERS} == levels
    assert set(RAY_ENV) == {"RAY_BACKEND_LOG_LEVEL", "RAY_DEDUP_LOGS"}
