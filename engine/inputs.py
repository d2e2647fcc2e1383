"""What to extract: audio files found on disk, or listed in a CSV manifest with labels and folds.

An :class:`InputSet` is an ordered, duplicate-free tuple of :class:`InputItem` (absolute path plus
the manifest's other columns) and, when the manifest has labels, the class names, so that a store
can write ``/clips/label`` (ints 0..K-1), ``/clips/fold`` and ``/classes/name`` (K names).

Manifest columns (names matched case-insensitively, first match wins):

- path: ``path``, else ``filename`` (ESC-50). Relative paths are resolved against ``audio_dir`` when
  given, else against the CSV's folder. When the named file does not exist, a single audio file
  with the same stem in the same folder is used (ESC-50's CSV says ``.wav``, a converted copy may
  be ``.flac``).
- label: ``label``, else ``target`` (ESC-50). All integers (>= 0): kept as they are, K = max + 1,
  names from a ``category`` or ``class_name`` column (ESC-50) or, without one, the numbers
  themselves; an index no row uses is named by its number. Otherwise strings: class names are the
  sorted distinct labels and a label is its index.
- fold: ``fold``, integers.

Every column but the path one is kept in ``meta``, as int where the whole column is integers, as
float where it is all numbers, else as str; that decision is :attr:`InputSet.meta_schema`, which
the store's writer is given so it stores each column with exactly that type. Files a manifest lists that do not exist are an error
naming the first few, unless ``allow_missing=True``: then they are skipped with a logged warning and
listed in :attr:`InputSet.missing`.

Shards (for job arrays): :meth:`InputSet.shard` keeps the items of one :class:`Shard` ``K/N``,
chosen by a hash of each absolute path (:func:`shard_index`), so the N shards are disjoint, cover
the whole set, and a path stays in its shard however the inputs are listed, ordered or extended.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .errors import SoundNetError
from .store.columns import ColumnSchema, ColumnType

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3",
        ".aiff", ".aif", ".aifc", ".au", ".snd", ".w64", ".rf64", ".caf",
    }
)  # fmt: skip
"""Extensions (lower case) taken from directories; explicitly named files are taken whatever theirs."""

PATH_COLUMNS = ("path", "filename")
LABEL_COLUMNS = ("label", "target")
FOLD_COLUMNS = ("fold",)
CLASS_NAME_COLUMNS = ("category", "class_name")
"""Manifest column roles, by preference; ``filename``/``target``/``category`` are ESC-50's."""

MISSING_SHOWN = 5
"""How many missing files an error or warning names before summarising the rest."""

DEMO_DIR = Path(__file__).parent / "demo"
"""The bundled ESC-10 clips (CC BY 3.0, see ATTRIBUTION.md there)."""

_INT = re.compile(r"^[+-]?\d+$")

MetaValue = str | int | float

SHARD_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")
"""The environment ``--shard auto`` reads (a SLURM job array; see :meth:`Shard.from_environment`)."""


def shard_index(path: str, n: int) -> int:
    """The 0-based shard (of ``n``) that ``path`` belongs to: blake2b of its UTF-8 text, mod ``n``.

    A pure function of the path string: it does not depend on the other inputs, their order or
    number, the machine or the Python process (``hash()`` is salted per process; blake2b is not).
    """
    digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


@dataclass(frozen=True)
class Shard:
    """Shard ``k`` of ``n`` (1-based, 1 <= k <= n, as SLURM's 1-based array task ids): the inputs
    whose :func:`shard_index` is ``k - 1``. Written ``K/N`` (the ``--shard`` value, the store's
    ``shard`` attribute)."""

    k: int
    n: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.k, int)) or self.n < 1 or not 1 <= self.k <= self.n:
            raise SoundNetError(
                f"shard {self.k}/{self.n}: need 1 <= K <= N (K is 1-based; for a 0-based array task id "
                "use K = id + 1, or --shard auto under SLURM)"
            )

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def holds(self, path: str) -> bool:
        return shard_index(path, self.n) == self.k - 1

    @classmethod
    def parse(cls, text: str, environ: Mapping[str, str] | None = None) -> Shard:
        """``K/N``, or ``auto``: the SLURM job array task this process runs in."""
        if text.strip().lower() == "auto":
            return cls.from_environment(os.environ if environ is None else environ)
        k, sep, n = text.partition("/")
        if not sep or not _INT.match(k.strip()) or not _INT.match(n.strip()):
            raise SoundNetError(f"shard {text!r}: expected K/N (e.g. 2/8) or auto")
        return cls(int(k), int(n))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Shard:
        """The shard of this SLURM array task: K = task id - min + 1 of N = max - min + 1.

        Using the array's bounds makes ``--array=0-7`` and ``--array=1-8`` both give 1/8 .. 8/8.
        Arrays with a step (``--array=0-15:2``) or a task limit changing the ids are refused.
        """
        missing = [name for name in SHARD_ENV[:3] if name not in environ]
        if missing:
            raise SoundNetError(
                f"--shard auto: {', '.join(missing)} not set (not a SLURM job array task); "
                "give --shard K/N, e.g. --shard $((PBS_ARRAY_INDEX))/N under PBS"
            )
        try:
            task, low, high = (int(environ[name]) for name in SHARD_ENV[:3])
            step = int(environ.get(SHARD_ENV[3], "1"))
        except ValueError as exc:
            raise SoundNetError(f"--shard auto: SLURM array variables are not integers: {exc}") from None
        if step != 1:
            raise SoundNetError(f"--shard auto: SLURM array step is {step}; use consecutive ids or --shard K/N")
        return cls(task - low + 1, high - low + 1)


@dataclass(frozen=True)
class InputItem:
    """One file to extract, with its manifest row."""

    path: str  # absolute
    meta: Mapping[str, MetaValue] = field(default_factory=dict, hash=False)
    label: int | None = None  # index into InputSet.class_names
    fold: int | None = None

    def __post_init__(self) -> None:
        # A read-only copy, so the frozen item cannot change through the caller's dict.
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@dataclass(frozen=True)
class InputSet:
    """The ordered files of one extraction job, with their labels, folds and class names."""

    items: tuple[InputItem, ...]
    class_names: tuple[str, ...] | None = None  # None exactly when there are no labels
    label_column: str | None = None  # the manifest column labels came from
    fold_column: str | None = None
    meta_columns: tuple[str, ...] = ()  # keys of every item's meta, in manifest order
    source: str | None = None  # the manifest, when read from one
    missing: tuple[str, ...] = ()  # listed files skipped because absent (allow_missing=True)
    meta_schema: ColumnSchema | None = None  # storage type of each meta column; None: from the values

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        if self.meta_schema is None:  # a set built by hand: the values say what they are
            object.__setattr__(self, "meta_schema", ColumnSchema.infer([item.meta for item in self.items]))
        where = self.source or "input set"
        labelled = [item.label is not None for item in self.items]
        if self.class_names is None:
            if any(labelled):
                raise SoundNetError(f"{where}: items have labels but there are no class names")
        else:
            object.__setattr__(self, "class_names", tuple(self.class_names))
            if not all(labelled):
                raise SoundNetError(f"{where}: some items have no label")
            k = len(self.class_names)
            bad = next((i for i in self.items if not 0 <= i.label < k), None)
            if bad is not None:
                raise SoundNetError(f"{where}: {bad.path}: label {bad.label} is not in 0..{k - 1}")
        if len({item.fold is None for item in self.items}) > 1:
            raise SoundNetError(f"{where}: some items have a fold and others not")
        paths = [item.path for item in self.items]
        if len(set(paths)) != len(paths):
            raise SoundNetError(f"{where}: a file is listed twice")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[InputItem]:
        return iter(self.items)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(item.path for item in self.items)

    @property
    def has_labels(self) -> bool:
        return self.class_names is not None

    @property
    def has_folds(self) -> bool:
        return bool(self.items) and self.items[0].fold is not None

    def labels(self) -> np.ndarray:
        """int64 (n,) labels, indices into :attr:`class_names` (for ``/clips/label``)."""
        if not self.has_labels:
            raise SoundNetError(f"{self.source or 'input set'}: has no labels")
        return np.array([item.label for item in self.items], dtype=np.int64)

    def folds(self) -> np.ndarray:
        """int64 (n,) folds (for ``/clips/fold``)."""
        if not self.has_folds:
            raise SoundNetError(f"{self.source or 'input set'}: has no folds")
        return np.array([item.fold for item in self.items], dtype=np.int64)

    def shard(self, shard: Shard) -> InputSet:
        """The items of one shard, in their order; labels' class names and the meta columns' types
        stay those of the whole set, so every shard's store has the same schema."""
        return dataclasses.replace(self, items=tuple(item for item in self.items if shard.holds(item.path)))

    def column(self, name: str) -> list[MetaValue]:
        """One metadata column, in item order."""
        if name not in self.meta_columns:
            where = self.source or "input set"
            raise SoundNetError(f"{where}: no column {name!r} (has {list(self.meta_columns)})")
        return [item.meta[name] for item in self.items]


# --------------------------------------------------------------------------------------------
# files and directories


def _is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _walk_audio(directory: str) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        # Hidden entries are skipped: they are tool litter (e.g. macOS "._x.wav"), never audio.
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            os.path.join(root, name) for name in files if not name.startswith(".") and _is_audio_name(name)
        )
    # Sort on path components so the order is the same whatever os.walk's order was.
    return sorted(found, key=lambda p: Path(p).relative_to(directory).parts)


def discover(inputs: Sequence[str | Path]) -> InputSet:
    """The audio files named by ``inputs``: files as given, directories searched recursively for
    :data:`AUDIO_EXTENSIONS` (any case), in argument order then sorted path order, each file once."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    seen: dict[str, None] = {}
    for raw in inputs:
        path = os.path.abspath(os.fspath(raw))
        if os.path.isdir(path):
            for found in _walk_audio(path):
                seen.setdefault(found, None)
        elif os.path.exists(path):
            seen.setdefault(path, None)
        else:
            raise SoundNetError(f"{raw}: no such file or directory")
    if not seen:
        raise SoundNetError(f"no audio files found in {', '.join(map(str, inputs)) or '(no inputs)'}")
    return InputSet(items=tuple(InputItem(path) for path in seen))


def bundled_clips() -> list[Path]:
    """The bundled ESC-10 demo clips (16 kHz FLAC), sorted by name."""
    return sorted(DEMO_DIR.glob("*.flac"))


def bundled_manifest() -> Path:
    """The bundled clips' manifest (path, label, fold, category): ``read_manifest(bundled_manifest())``."""
    return DEMO_DIR / "manifest.csv"


# --------------------------------------------------------------------------------------------
# manifests


def _find_column(header: Sequence[str], candidates: Sequence[str]) -> str | None:
    lowered = {name.lower(): name for name in reversed(header)}  # reversed: the first wins
    return next((lowered[c] for c in candidates if c in lowered), None)


def _typed_column(values: Sequence[str]) -> tuple[ColumnType, list[MetaValue]]:
    """A manifest column's storage type, decided here once for the whole column, and its values."""
    if values and all(_INT.match(v) for v in values):
        return ColumnType.INT, [int(v) for v in values]
    try:
        return ColumnType.FLOAT, [float(v) for v in values]
    except ValueError:
        return ColumnType.STR, list(values)


def _typed_columns(
    columns: Mapping[str, Sequence[str]], names: Sequence[str]
) -> tuple[dict[str, list[MetaValue]], ColumnSchema]:
    """The typed values of the meta columns and their types (what the store will keep)."""
    typed = {name: _typed_column(columns[name]) for name in names}
    return {name: values for name, (_, values) in typed.items()}, ColumnSchema(
        {name: kind for name, (kind, _) in typed.items()}
    )


def _folds(csv_path: Path, lines: Sequence[int], values: Sequence[str]) -> list[int | None]:
    folds: list[int | None] = []
    for line, value in zip(lines, values):
        if not _INT.match(value):
            raise SoundNetError(f"{csv_path}: line {line}: fold {value!r} is not an integer")
        folds.append(int(value))
    return folds


def _check_missing(csv_path: Path, missing: Sequence[str], n_rows: int, found_any: bool, allow_missing: bool) -> None:
    """Refuse listed files that do not exist, or (allow_missing) warn that they are skipped."""
    shown = ", ".join(missing[:MISSING_SHOWN]) + (
        f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    )
    if not allow_missing:
        raise SoundNetError(
            f"{csv_path}: {len(missing)} of {n_rows} listed files do not exist: {shown} "
            f"(allow_missing skips them)"
        )
    if not found_any:
        raise SoundNetError(f"{csv_path}: none of the {n_rows} listed files exist: {shown}")
    log.warning("%s: skipping %d of %d listed files that do not exist: %s", csv_path, len(missing), n_rows, shown)


class _StemIndex:
    """Finds a same-stem audio file in a folder, listing each folder once."""

    def __init__(self) -> None:
        self._dirs: dict[str, dict[str, list[str]]] = {}

    def find(self, path: str) -> list[str]:
        folder, name = os.path.split(path)
        if folder not in self._dirs:
            index: dict[str, list[str]] = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []  # a folder that cannot be listed simply holds no candidate
            for entry in names:
                if _is_audio_name(entry):
                    index.setdefault(os.path.splitext(entry)[0], []).append(os.path.join(folder, entry))
            self._dirs[folder] = index
        return self._dirs[folder].get(os.path.splitext(name)[0], [])


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows; blank lines skipped, ragged rows refused."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            rows: list[tuple[int, list[str]]] = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise SoundNetError(
                        f"{csv_path}: line {reader.line_num} has {len(cells)} fields, "
                        f"the header {len(header)}"
                    )
                rows.append((reader.line_num, [c.strip() for c in cells]))
    except FileNotFoundError:
        raise SoundNetError(f"{csv_path}: manifest not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SoundNetError(f"{csv_path}: cannot read manifest: {exc}") from exc
    if not header or not any(header):
        raise SoundNetError(f"{csv_path}: empty manifest (no header line)")
    if len(set(h.lower() for h in header)) != len(header):
        raise SoundNetError(f"{csv_path}: duplicate column names in {header}")
    if not rows:
        raise SoundNetError(f"{csv_path}: the manifest lists no files")
    return header, rows


def _labels_and_names(
    csv_path: Path, lines: Sequence[int], raw: Sequence[str], names: Sequence[str] | None
) -> tuple[list[int], tuple[str, ...]]:
    for line, value in zip(lines, raw):
        if value == "":
            raise SoundNetError(f"{csv_path}: line {line}: empty label")
    if all(_INT.match(v) for v in raw):
        labels = [int(v) for v in raw]
        for line, label in zip(lines, labels):
            if label < 0:
                raise SoundNetError(f"{csv_path}: line {line}: negative label {label}")
        k = max(labels) + 1
        class_names = [str(i) for i in range(k)]
        if names is not None:
            named: dict[int, tuple[str, int]] = {}
            for line, label, name in zip(lines, labels, names):
                previous = named.setdefault(label, (name, line))
                if previous[0] != name:
                    raise SoundNetError(
                        f"{csv_path}: label {label} is named {previous[0]!r} on line {previous[1]} "
                        f"and {name!r} on line {line}"
                    )
            for label, (name, _) in named.items():
                class_names[label] = name
        return labels, tuple(class_names)
    ordered = tuple(sorted(set(raw)))
    index = {name: i for i, name in enumerate(ordered)}
    return [index[v] for v in raw], ordered


def read_manifest(
    csv_path: str | Path, audio_dir: str | Path | None = None, *, allow_missing: bool = False
) -> InputSet:
    """The files a CSV manifest lists, with labels, folds and metadata (see the module docstring).

    The official ESC-50 ``meta/esc50.csv`` works as is, with ``audio_dir`` its audio folder.
    """
    csv_path = Path(csv_path)
    header, rows = _read_rows(csv_path)
    path_col = _find_column(header, PATH_COLUMNS)
    if path_col is None:
        raise SoundNetError(f"{csv_path}: no path column (one of {PATH_COLUMNS}) among {header}")
    label_col = _find_column(header, LABEL_COLUMNS)
    fold_col = _find_column(header, FOLD_COLUMNS)
    name_col = _find_column(header, CLASS_NAME_COLUMNS)
    if audio_dir is not None:
        base = Path(audio_dir)
        if not base.is_dir():
            raise SoundNetError(f"{audio_dir}: audio folder not found")
    else:
        base = csv_path.parent

    lines = [line for line, _ in rows]
    columns = {name: [cells[i] for _, cells in rows] for i, name in enumerate(header)}

    labels: list[int | None] = [None] * len(rows)
    class_names: tuple[str, ...] | None = None
    if label_col is not None:
        names = columns[name_col] if name_col is not None and name_col != label_col else None
        int_labels, class_names = _labels_and_names(csv_path, lines, columns[label_col], names)
        labels = list(int_labels)

    folds = _folds(csv_path, lines, columns[fold_col]) if fold_col is not None else [None] * len(rows)

    meta_columns = tuple(name for name in header if name != path_col)
    typed, meta_schema = _typed_columns(columns, meta_columns)

    stems = _StemIndex()
    items: list[InputItem] = []
    missing: list[str] = []
    first_line: dict[str, int] = {}
    for i, (line, value) in enumerate(zip(lines, columns[path_col])):
        if value == "":
            raise SoundNetError(f"{csv_path}: line {line}: empty path")
        path = os.path.abspath(os.path.join(base, value))  # join keeps absolute values as they are
        if not os.path.isfile(path):
            candidates = stems.find(path)
            if len(candidates) > 1:
                raise SoundNetError(
                    f"{csv_path}: line {line}: {value} does not exist and several files share its "
                    f"stem: {', '.join(os.path.basename(c) for c in candidates)}"
                )
            if not candidates:
                missing.append(path)
                continue
            path = candidates[0]
        if path in first_line:
            raise SoundNetError(
                f"{csv_path}: line {line} lists {path} again (first on line {first_line[path]})"
            )
        first_line[path] = line
        meta = {name: typed[name][i] for name in meta_columns}
        items.append(InputItem(path=path, meta=meta, label=labels[i], fold=folds[i]))

    if missing:
        _check_missing(csv_path, missing, len(rows), bool(items), allow_missing)

    return InputSet(
        items=tuple(items),
        class_names=class_names,
        label_column=label_col,
        fold_column=fold_col,
        meta_columns=meta_columns,
        meta_schema=meta_schema,
        source=str(csv_path),
        missing=tuple(missing),
    )
