"""The house rules of the repository's layout, checked on the source (README, "Layout").

- no module under engine/, export/, analysis/, benchmarks/, hear/ over 600 lines, no function over 80;
- no import of a private name (``_x``) from a module of another package, tests included;
- analysis/ reaches the engine only through the store reader, the stats API, arch constants and errors;
- engine/ never imports torch (at module level or lazily).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it is installed as (pyproject's package-dir)
PACKAGES = {
    "engine": "soundnet8.engine",
    "export": "soundnet8.export",
    "analysis": "soundnet8.analysis",
    "benchmarks": "soundnet8.benchmarks",
    "hear": "soundnet8.hear",
}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
# module -> the names analysis/ may take from it (None: any public name of that module itself)
ANALYSIS_MAY_IMPORT: dict[str, frozenset[str] | None] = {
    "soundnet8.engine.store": frozenset({"FeatureStore", "FrameBlock", "FrameTiming"}),  # the reader
    "soundnet8.engine.stats": None,  # the stats API (its package's public names, not its modules)
    "soundnet8.engine.arch": None,
    "soundnet8.engine.errors": None,
    "soundnet8.engine.version": frozenset({"package_version"}),
}


def _sources() -> list[tuple[Path, str]]:
    """(file, dotted module name) of every project module, tests included."""
    out = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((path, ".".join([package, *parts])))
    for path in sorted((ROOT / "tests").rglob("*.py")):
        out.append((path, "tests." + ".".join(path.relative_to(ROOT / "tests").with_suffix("").parts)))
    return out


SOURCES = _sources()
PRODUCT = [(p, m) for p, m in SOURCES if not m.startswith("tests.")]


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _spec(dotted: str):
    try:
        return importlib.util.find_spec(dotted)
    except (ImportError, ValueError):
        return None


def _is_module(dotted: str) -> bool:
    return _spec(dotted) is not None


def _container(dotted: str) -> str:
    """The package a name defined in module ``dotted`` belongs to (a package contains its own names)."""
    spec = _spec(dotted)
    return dotted if spec is not None and spec.submodule_search_locations is not None else dotted.rpartition(".")[0]


def _imports(path: Path, module: str):
    """(imported module, imported name or None, line, local name) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno, alias.asname
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path)
            for alias in node.names:
                yield source, alias.name, node.lineno, alias.asname or alias.name


@pytest.mark.parametrize("path", [p for p, _ in PRODUCT], ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    text = path.read_text()
    n_lines = len(text.splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {n_lines} lines (limit {MAX_MODULE_LINES})"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_private_names_imported_across_packages():
    offences = []
    for path, module in SOURCES:
        own = _package_of(module, path)
        aliases = {}  # local name -> soundnet8 module it names
        for source, name, line, local in _imports(path, module):
            if not source.startswith("soundnet8"):
                continue
            target = source if name is None else f"{source}.{name}"
            if name is None and local is not None:
                aliases[local] = target  # import soundnet8.x.y as local
            if name is not None and _is_module(target):
                aliases[local] = target
                source_pkg = target.rpartition(".")[0]
                private = _is_private(name.split(".")[-1])
            else:
                source_pkg = _container(source)
                private = (name is not None and _is_private(name)) or any(_is_private(p) for p in source.split("."))
            if private and source_pkg != own:
                offences.append(f"{path.relative_to(ROOT)}:{line}: {target}")
        # module._private attribute access through an imported module of another package
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                target = aliases[node.value.id]
                if _is_private(node.attr) and target.rpartition(".")[0] != own:
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}.{node.attr}")
    assert not offences, "private names used across packages:\n" + "\n".join(offences)


def test_analysis_uses_only_public_engine_apis():
    offences = []
    for path, module in PRODUCT:
        if not module.startswith("soundnet8.analysis"):
            continue
        for source, name, line, _local in _imports(path, module):
            target = source if name is None else f"{source}.{name}"
            if not target.startswith("soundnet8.engine"):
                continue
            allowed = source in ANALYSIS_MAY_IMPORT and name is not None and not _is_private(name)
            if allowed and ANALYSIS_MAY_IMPORT[source] is not None:
                allowed = name in ANALYSIS_MAY_IMPORT[source]
            if not allowed or _is_module(target):
                offences.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not offences, "analysis/ reaches into the engine beyond its public APIs:\n" + "\n".join(offences)


def test_engine_never_imports_torch():
    offences = [
        f"{path.relative_to(ROOT)}:{line}"
        for path, module in PRODUCT
        if module.startswith("soundnet8.engine")
        for source, name, line, _local in _imports(path, module)
        if source.split(".")[0] == "torch"
    ]
    assert not offences, "engine/ imports torch: " + ", ".join(offences)


def test_reading_a_store_loads_neither_the_audio_stack_nor_onnxruntime():
    import subprocess
    import sys

    from soundnet8.engine.audio import SampleRateMode
    from soundnet8.engine.store.reader import NATIVE_RATE_MODE

    assert NATIVE_RATE_MODE == SampleRateMode.NATIVE.value  # the reader's spelling of the recorded mode
    code = (
        "import sys; from soundnet8.engine.store import FeatureStore; import soundnet8.engine.store.reader; "
        "print(sorted(m for m in ('soundfile', 'soxr', 'onnxruntime', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
