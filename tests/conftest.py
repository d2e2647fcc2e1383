"""Shared fixtures: the real pretrained weights, one ONNX export per test session, real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ESC50_AUDIO = SHARED / "esc50" / "audio_16k"
ESC50_META = SHARED / "esc50" / "meta" / "esc50.csv"
SEED_FEATURES = SHARED / "reference" / "seed_features"


def requires_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"needs ../shared data: {path} is absent")


@pytest.fixture(scope="session")
def weights():
    pytest.importorskip("torch", reason="export tests need torch (pip install 'soundnet8[export]')")
    from soundnet8.export.weights import load_weights

    return load_weights()


@pytest.fixture(scope="session")
def onnx_path(tmp_path_factory, weights) -> Path:
    """A fresh export of the real model, made once for the whole test session."""
    from soundnet8.export.onnx_export import export_onnx

    return export_onnx(tmp_path_factory.mktemp("model") / "soundnet8.onnx", weights)


@pytest.fixture(scope="session")
def torch_model(weights):
    from soundnet8.export.model import build_model

    return build_model(weights)


@pytest.fixture(scope="session")
def demo_clips() -> list[Path]:
    from soundnet8.engine.inputs import bundled_clips

    return bundled_clips()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e| (the parity metric of the project)."""
    scale = float(np.abs(expected).max())
    return float(np.abs(actual - expected).max() / (scale if scale > 0 else 1.0))
