"""A stand-in for `soundnet8 extract` used by tests/test_store.py: writes synthetic clips to a store.

Run as ``python _store_worker.py STORE N SEGMENT_ROWS`` (optionally ``--retry-errors``). Clip i
has deterministic features (a function of i only), so any run, interrupted or not, must leave the
same rows; every ERROR_EVERY-th clip fails. The test kills this process with SIGKILL at various
moments, observing its INFO log lines (stderr) to hit consolidations.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from soundnet8.engine.store import ClipError, ClipResult, StoreSettings, StoreWriter

ERROR_EVERY = 23
CLASSES = ("dog", "rain", "sea", "crackling fire")

SETTINGS = StoreSettings(
    layers=("pool1", "pool2"),
    pools=("mean", "max"),
    frames=True,
    preprocessing={"sample_rate": 22050, "recipe": "test"},
    weights_sha256="w" * 64,
    onnx_sha256="o" * 64,
)


def clip_path(i: int) -> str:
    return f"/data/clips/{i:05d}-é.wav"  # non-ASCII on purpose: UTF-8 round trip


def make_item(i: int, settings: StoreSettings = SETTINGS) -> ClipResult | ClipError:
    """The deterministic result (or failure) of input ``i``."""
    if i % ERROR_EVERY == ERROR_EVERY - 1:
        return ClipError(clip_path(i), f"cannot decode clip {i}: synthetic failure")
    rng = np.random.default_rng(1000 + i)
    channels = {"pool1": 16, "pool2": 32}
    features = {
        (layer, pool): rng.standard_normal(channels[layer]).astype(np.float32)
        for layer in settings.layers
        for pool in settings.pools
    }
    frames = (
        {layer: rng.standard_normal((i % 5, channels[layer])).astype(np.float32) for layer in settings.layers}
        if settings.frames
        else None
    )
    meta = {"take": "ABC"[i % 3], "index": i, "gain": 0.5 * i}
    return ClipResult(
        clip_path(i), 5.0 + i / 8, 16000 + i, meta, features, frames, label=i % len(CLASSES), fold=1 + i % 5
    )


def run(store: str, n: int, segment_rows: int, *, retry_errors: bool = False) -> None:
    with StoreWriter(
        store,
        SETTINGS,
        run_attrs={"provider": "CPUExecutionProvider", "onnxruntime_version": "test"},
        class_names=CLASSES,
        segment_rows=segment_rows,
        retry_errors=retry_errors,
    ) as writer:
        print("started", flush=True)
        for i in range(n):
            if clip_path(i) not in writer.done:
                writer.add(make_item(i))
    print("finished", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), retry_errors="--retry-errors" in sys.argv)
