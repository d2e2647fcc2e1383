"""``--sample-rate native`` reproduces the seed notebook's preprocessing slip.

The seed fed native 44.1 kHz samples to the 22,050 Hz model (x256, tiled to 441,000 samples). The
shared data holds a 16 kHz copy of ESC-50, not the 44.1 kHz originals, so bit-exact reproduction of
the published features is impossible here. What can be shown: the bundled ESC-10 clips, brought back
to 44.1 kHz and extracted in native mode, land on the seed's published row of the same clip (nearest
row of its fold, same label), far closer than correctly resampled features do.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from soundnet8.engine.audio import Preprocessing, SampleRateMode
from soundnet8.engine.inputs import InputItem, InputSet, bundled_manifest, read_manifest
from soundnet8.engine.modelfile import model_info
from soundnet8.engine.pipeline import ExtractOptions, extract
from soundnet8.engine.runner import Request
from soundnet8.engine.session import Provider
from soundnet8.engine.store import FeatureStore

from .conftest import SEED_FEATURES, requires_shared

ROWS_PER_FOLD = 400
# Relative distance (max |diff| / max |row|) to the seed row; the missing >8 kHz band of the 16 kHz
# copy (which native mode shifts into the model's 4-11 kHz range) accounts for what remains.
NATIVE_MATCH = 0.3


def _distances(block: np.ndarray, f: np.ndarray) -> np.ndarray:
    return np.abs(block - f).max(axis=1) / np.abs(block).max(axis=1)


@requires_shared(SEED_FEATURES)
def test_native_mode_lands_on_the_seed_rows(onnx_path, tmp_path):
    X = np.load(SEED_FEATURES / "X.npy")
    y = np.load(SEED_FEATURES / "y.npy")
    demo = read_manifest(bundled_manifest())
    items = []
    for item in demo:
        audio, rate = sf.read(item.path, dtype="float32")
        path = tmp_path / (item.path.rsplit("/", 1)[-1].replace(".flac", ".wav"))
        sf.write(path, soxr.resample(audio, rate, 44_100, "HQ"), 44_100, subtype="FLOAT")
        items.append(InputItem(str(path), label=item.label, fold=item.fold))
    inputs = InputSet(tuple(items), class_names=demo.class_names)
    model = model_info(onnx_path)
    stores = {}
    for mode in SampleRateMode:
        options = ExtractOptions(request=Request(layers=("pool5",)), preprocessing=Preprocessing(mode),
                                 provider=Provider.CPU, workers=1, progress=False)
        stores[mode] = tmp_path / f"{mode.value}.h5"
        extract(inputs, stores[mode], model, options)
    with FeatureStore(stores[SampleRateMode.NATIVE]) as native, FeatureStore(stores[SampleRateMode.RESAMPLE]) as good:
        for i, item in enumerate(demo):
            block = slice((item.fold - 1) * ROWS_PER_FOLD, item.fold * ROWS_PER_FOLD)
            d_native = _distances(X[block], native.features("pool5")[i])
            d_good = _distances(X[block], good.features("pool5")[i])
            target = int(item.path.rsplit("-", 1)[1].split(".")[0])  # ESC-50 names end in -<target>
            nearest = int(np.argmin(d_native))
            assert d_native[nearest] < NATIVE_MATCH, item.path
            assert y[block][nearest] == target, item.path
            assert d_native[nearest] < d_good.min(), item.path
