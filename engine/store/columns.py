"""Manifest columns (/clips/meta/<column>): their storage types, decided once and written as decided.

A column is stored as one of three types, each holding every earlier one's values:

- ``INT`` (int64): integers only (bools count as 0/1), no missing value;
- ``FLOAT`` (float64): integers and floats; missing = NaN;
- ``STR`` (UTF-8): anything; missing = "", numbers written as Python's str(), integral floats
  without ".0" (so a number reads the same whether it was converted before or after storage).

The input set decides the types of its columns once (a :class:`ColumnSchema`, see
``soundnet8.engine.inputs``) and hands them to the writer, which resolves them against the store
being resumed (:meth:`ColumnSchema.for_store`) and writes every segment with the resolved types;
consolidation then only checks them. Writers given no schema (library callers adding their own
``ClipResult``s) fall back to inferring a column's type from the values it holds
(:meth:`ColumnSchema.infer`, :meth:`ColumnType.join`), so the type depends only on which kinds of
values (and missing values) the rows hold, however a run was split.

No h5py here: the input set uses this module without opening any store.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import StoreError
from .text import check_name, check_text

_EXACT_FLOAT_INT = 2**53  # integers below this survive a round trip through float64


class ColumnType(enum.Enum):
    """Storage type of a meta column; a later member holds every earlier one's values."""

    INT = "int64"
    FLOAT = "float64"
    STR = "str"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    @classmethod
    def of_value(cls, value: object, what: str) -> ColumnType | None:
        """The narrowest type holding ``value`` (None: a missing value, any type but INT holds it)."""
        if value is None:
            return None
        if isinstance(value, (bool, np.bool_, int, np.integer)):
            return cls.INT
        if isinstance(value, (float, np.floating)):
            return cls.FLOAT
        if isinstance(value, str):
            return cls.STR
        raise StoreError(f"{what}: meta values must be str, int, float, bool or None, not {type(value).__name__}")

    @classmethod
    def of_array(cls, array: Any) -> ColumnType:
        """The type of a stored column (an h5py dataset or a numpy array)."""
        if array.dtype.kind in "OUS":  # h5py's variable-length strings read as object arrays
            return cls.STR
        return cls.INT if array.dtype.kind in "iub" else cls.FLOAT

    @classmethod
    def join(cls, types: Iterable[ColumnType], *, missing: bool) -> ColumnType:
        """The narrowest type holding values of all ``types`` (and missing values, if ``missing``)."""
        found = list(types)
        joined = max(found, key=lambda t: t.rank) if found else cls.FLOAT
        if missing and joined is cls.INT:
            return cls.FLOAT  # int64 has no missing value; NaN marks it
        return joined

    @classmethod
    def infer(cls, values: Sequence[object], what: str) -> ColumnType:
        """The narrowest type holding ``values`` (None = missing) when nothing else decided it."""
        kinds = [k for k in (cls.of_value(v, what) for v in values) if k is not None]
        return cls.join(kinds, missing=any(v is None for v in values))

    def array(self, values: Sequence[object]) -> np.ndarray:
        """``values`` (None = missing) as this type's numpy array."""
        if self is ColumnType.INT:
            return np.array([int(v) for v in values], dtype=np.int64)
        if self is ColumnType.FLOAT:
            return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        return np.array([meta_str(v) for v in values], dtype=object)

    def convert(self, array: np.ndarray) -> np.ndarray:
        """A stored column's values as this type (unchanged when it already is)."""
        if ColumnType.of_array(array) is self:
            return array
        return self.array([meta_value(v) for v in array])


_ORDER = tuple(ColumnType)


def meta_value(value: Any) -> object:
    """A meta value as plain Python (numpy scalars unwrapped, bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def meta_str(value: object) -> str:
    """The string form of a meta value; the same whether converted early or after storage."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return ""
        # an int column becomes float64 when values are missing; writing integral floats as ints
        # gives the same text whether the number was converted before or after that promotion
        return str(int(value)) if value.is_integer() and abs(value) < _EXACT_FLOAT_INT else str(value)
    return str(value)


@dataclass(frozen=True)
class ColumnSchema:
    """The storage type of each meta column, by name (in column order)."""

    types: Mapping[str, ColumnType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        types = {check_name(name, "meta column name"): ColumnType(t) for name, t in dict(self.types).items()}
        object.__setattr__(self, "types", MappingProxyType(types))  # frozen all the way down

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.types)

    @classmethod
    def infer(cls, rows: Sequence[Mapping[str, object]], what: str = "meta") -> ColumnSchema:
        """The narrowest types holding the rows' values; a row without a column has it missing."""
        names = dict.fromkeys(name for row in rows for name in row)
        return cls({name: ColumnType.infer([row.get(name) for row in rows], f"{what} {name!r}") for name in names})

    @classmethod
    def joined(cls, sources: Sequence[Mapping[str, ColumnType]]) -> ColumnSchema:
        """Types holding the columns of every source; a source without a column has it missing."""
        names = dict.fromkeys(name for source in sources for name in source)
        return cls(
            {
                name: ColumnType.join(
                    (s[name] for s in sources if name in s), missing=any(name not in s for s in sources)
                )
                for name in names
            }
        )

    def arrays(self, rows: Sequence[Mapping[str, object]]) -> dict[str, np.ndarray]:
        """Every column of the schema as a typed array over ``rows`` (absent values are missing)."""
        return {name: t.array([row.get(name) for row in rows]) for name, t in self.types.items()}

    def check_row(self, meta: Mapping[str, object], where: str) -> dict[str, object]:
        """One clip's meta values as plain Python, checked against the schema."""
        checked = check_meta(meta, where)
        for name, value in checked.items():
            if name not in self.types:
                raise StoreError(f"{where}: meta column {name!r} is not among the columns {list(self.types)}")
            kind, want = ColumnType.of_value(value, where), self.types[name]
            if kind is not None and kind.rank > want.rank:
                raise StoreError(f"{where}: meta {name!r} value {value!r} does not fit its {want.value} column")
        for name, want in self.types.items():
            if want is ColumnType.INT and checked.get(name) is None:
                raise StoreError(f"{where}: meta {name!r} has no value, but its column is int64 (no missing value)")
        return checked

    def for_store(self, stored: Mapping[str, ColumnType], stored_rows: int, where: str) -> ColumnSchema:
        """The types to write new rows with, into a store whose columns are ``stored``.

        Stored columns are never converted: a new column gets missing values for the stored rows
        (int64 becomes float64 for them), integers go into a stored float64 column (lossless),
        a stored float64 or string column gets missing values for new rows without it; any other
        difference is a StoreError naming the column.
        """
        if not stored_rows:  # an empty store's columns hold nothing to keep: the schema decides
            return ColumnSchema(
                {**{name: ColumnType.join((), missing=True) for name in stored}, **self.types}
            )
        final: dict[str, ColumnType] = {}
        for name in dict.fromkeys([*stored, *self.types]):
            have, want = stored.get(name), self.types.get(name)
            if have is None:
                final[name] = ColumnType.join([want], missing=True)
            elif want is None and have is ColumnType.INT:
                raise StoreError(
                    f"{where}: meta column {name!r} holds int64 in the store, but this run's inputs have "
                    f"no {name!r} column (int64 has no missing value); resume with the same columns or "
                    "use --overwrite"
                )
            elif want is None or want is have or (want is ColumnType.INT and have is ColumnType.FLOAT):
                final[name] = have
            else:
                raise StoreError(
                    f"{where}: meta column {name!r} holds {have.value} values in the store but "
                    f"{want.value} values in this run's inputs; resume with the same manifest or use --overwrite"
                )
        return ColumnSchema(final)


def check_meta(meta: Mapping[str, object], where: str) -> dict[str, object]:
    """One clip's meta values as plain Python, with names and values an HDF5 store can hold."""
    checked: dict[str, object] = {}
    for name, value in meta.items():
        check_name(name, f"{where}: meta column name")
        ColumnType.of_value(value, f"{where}: meta column {name!r}")
        value = meta_value(value)
        if isinstance(value, str):
            check_text(value, f"meta {name!r} value")
        checked[name] = value
    return checked
