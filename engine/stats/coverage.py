"""What a derived result covers: the store rows it was computed from.

Derived groups (``/stats/...``, and ``/analysis/...`` for tools that store results there) outlive
the rows they were computed from: a resumed ``extract`` adds rows and keeps them byte for byte.
So each records, as attributes, how many rows it saw and a fingerprint of their clip paths in row
order; a reader compares them with the store as it is now and flags or refuses a stale result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ATTR_ROWS = "coverage_n_rows"
ATTR_PATHS = "coverage_paths_sha256"


@dataclass(frozen=True)
class Coverage:
    """The rows a derived result was computed from: their number and the sha256 of their paths."""

    n_rows: int
    paths_sha256: str

    @classmethod
    def of_paths(cls, paths: Iterable[str]) -> Coverage:
        """Coverage of the rows whose clip paths are ``paths``, in row order."""
        digest = hashlib.sha256()
        n = 0
        for path in paths:
            # NUL ends each path: no two lists of paths hash alike by re-splitting one string
            digest.update(str(path).encode("utf-8", "surrogatepass") + b"\0")
            n += 1
        return cls(n, digest.hexdigest())

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Coverage | None:
        """The coverage recorded in a group's attributes (None when it records none)."""
        if ATTR_ROWS not in attrs or ATTR_PATHS not in attrs:
            return None
        return cls(int(attrs[ATTR_ROWS]), str(attrs[ATTR_PATHS]))

    def attrs(self) -> dict[str, Any]:
        """The attributes to store on a derived group."""
        return {ATTR_ROWS: self.n_rows, ATTR_PATHS: self.paths_sha256}


def staleness(recorded: Coverage | None, current: Coverage) -> str | None:
    """Why a result with ``recorded`` coverage no longer describes a store at ``current``
    (e.g. "computed from 20 rows, store now has 60"), or None when it still does."""
    if recorded is None:
        return f"records no coverage (written by an older version), store now has {current.n_rows} rows"
    if recorded.n_rows != current.n_rows:
        return f"computed from {recorded.n_rows} rows, store now has {current.n_rows}"
    if recorded.paths_sha256 != current.paths_sha256:
        return f"computed from {recorded.n_rows} rows of other clips (their paths differ), store now has {current.n_rows}"
    return None
