"""Shared fixtures: the real pretrained weights, one ONNX export per test session, real audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ESC50_AUDIO = SHARED / "esc50" / "audio_16k"
ESC50_META = SHARED / "esc50" / "meta" / "esc50.csv"
SEED_FEATURES = SHARED / "reference" / "seed_features"


CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
"""CI=1: a test whose ../shared data is absent fails instead of skipping (CI must not pass by skipping)."""


def requires_shared(path: Path):
    """Skip (fail under CI=1) when ``path`` of ../shared is absent."""
    reason = f"needs ../shared data: {path} is absent"
    if path.exists():
        return pytest.mark.skipif(False, reason=reason)
    return pytest.mark.shared_missing(reason=reason) if CI else pytest.mark.skipif(True, reason=reason)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "shared_missing(reason): ../shared data absent under CI=1: the test fails")


def pytest_runtest_setup(item) -> None:
    marker = item.get_closest_marker("shared_missing")
    if marker is not None:
        pytest.fail(f"{marker.kwargs['reason']} (CI is set: a test needing ../shared fails instead of skipping)",
                    pytrace=False)


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
