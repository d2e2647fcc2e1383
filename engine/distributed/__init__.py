"""Extraction beyond one machine: the Ray Data backend (``soundnet8 extract --backend ray``).

Ray is an optional extra (``pip install 'soundnet8[distributed]'``), imported only when a run
uses it; importing this package imports neither Ray nor h5py.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

_PUBLIC = {
    "RayOptions": "ray_backend",
    "extract_ray": "ray_backend",
    "require_ray": "ray_backend",
    "INSTALL_HINT": "ray_backend",
    "SegmentSpec": "segments",
    "SegmentWriter": "segments",
    "CompactingWriter": "segments",
    "RaySummary": "ray_backend",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
