"""The HDF5 feature store: its schema, a crash-safe resumable writer, and a read-only reader.

The public names below are imported on first use, so ``soundnet8.engine.store.columns`` (used by
the input set) loads without h5py.

Schema, format_version 1 (stable: readers may rely on everything below)
-----------------------------------------------------------------------
N clips, K classes, M failed inputs, C channels of a layer (``soundnet8.engine.arch``)::

    /clips/path              (N,)    UTF-8 variable-length   the audio file, as given to extract
    /clips/duration          (N,)    float64                 seconds of the original audio
    /clips/sample_rate       (N,)    int32                   the file's native rate (Hz; 0 = unknown)
    /clips/meta/<column>     (N,)    int64 | float64 | UTF-8 manifest columns (see "meta" below)
    /clips/label             (N,)    int64 in 0..K-1         only when labels are known
    /clips/fold              (N,)    int64                   only when folds are known
    /classes/name            (K,)    UTF-8                   class name of each label, when known
    /features/<layer>/<pool> (N, C)  float32                 pool in mean | max | std (over time)
    /frames/<layer>/data     (F, C)  float32                 optional frame-level outputs, all clips
    /frames/<layer>/offsets  (N+1,)  int64                   clip i = data[offsets[i]:offsets[i+1]]
    /frames/<layer> attrs    hop_samples (int), first_centre_samples (float), sample_rate (int,
                             22050), hop_seconds, first_centre_seconds (float): frame j of a clip is
                             centred on model-input sample first_centre_samples + j*hop_samples
                             (``FrameTiming``; stores written before these attrs lack them, and
                             ``FeatureStore`` derives the same values from ``arch``)
    /errors/path             (M,)    UTF-8                   inputs that could not be processed
    /errors/message          (M,)    UTF-8                   why (one line per input)
    /stats/..., /analysis/...                                derived results of other tools; kept

Every /clips, /features and /frames dataset is row-aligned with /clips/path (row i is one clip),
chunked by rows with an unlimited first dimension. /features and /frames/*/data chunks hold
(R, C) with R the largest power of two with R*C*4 <= 1 MiB, and R <= 1024 for /features; they are
compressed with gzip level 4 (default, readable everywhere) or lzf (faster; h5py/PyTables only),
shuffle filter on. Numeric /clips columns use the same filter; strings are not compressed.

meta: int64 (integers only), float64 (numbers; missing = NaN) or UTF-8 strings (missing = "",
numbers written as Python's str(), integral floats without ".0"). The input set decides each
column's type once and the writer writes it so (see ``columns``).

Root attributes: format_version (int, 1), soundnet8_version, weights_sha256, onnx_sha256, provider,
onnxruntime_version (str; when runs with different values were merged, the distinct values in
order joined by "; "), preprocessing (JSON object), layers, pools and frames (JSON lists; frames:
the layers stored frame by frame),
compression (str), created and updated (ISO-8601 UTC). Other run attributes given by the caller
are kept as extra attributes (the latest run's value wins).

Modules (one concept each)
--------------------------
``schema`` format version, settings, value types, attributes and structure checks;
``files`` lock, temp files, fsync and atomic publish (how the writer stays crash-safe);
``layout`` chunking and filters; ``columns`` meta column types; ``batch`` rows in memory;
``merge`` segments and consolidation; ``join`` finished stores (shards) joined into one;
``writer`` ``StoreWriter``; ``arrays`` ``write_arrays`` and ``update_store``; ``reader``
``FeatureStore``; ``text`` what HDF5 strings can hold.

Resume rule: each path is in the store at most once, as a feature row or as an error row; a path
already present is skipped by the caller (``StoreWriter.done``). With ``retry_errors`` the error
paths are offered again, and a new row for such a path replaces its error row.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

_PUBLIC = {
    "FORMAT_VERSION": "schema",
    "Compression": "schema",
    "StoreSettings": "schema",
    "ClipResult": "schema",
    "ClipError": "schema",
    "StoreSummary": "schema",
    "ColumnSchema": "columns",
    "ColumnType": "columns",
    "StoreWriter": "writer",
    "DEFAULT_SEGMENT_ROWS": "writer",
    "done_paths": "writer",
    "write_arrays": "arrays",
    "update_store": "arrays",
    "FeatureStore": "reader",
    "FrameBlock": "reader",
    "FrameTiming": "schema",
    "join_stores": "join",
    "JoinSummary": "join",
    "check_shard": "join",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC)
