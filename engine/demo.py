"""The main job on the bundled default: the model on six bundled ESC-10 clips, each clip's true class
beside its top scenes and objects (``soundnet8 demo`` prints them, and exits non-zero when a clip
fails: the demo is also the first check of a fresh installation)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import AudioError
from .inputs import bundled_clips, bundled_manifest
from .modelfile import ModelInfo
from .predict import Prediction, predict
from .session import SessionConfig

UNKNOWN_CATEGORY = "?"


@dataclass(frozen=True)
class DemoResult:
    category: str  # the clip's ESC-10 class in the bundled manifest ("?" when it is not listed)
    result: Prediction | AudioError

    @property
    def failed(self) -> bool:
        return isinstance(self.result, AudioError)


def bundled_categories() -> dict[str, str]:
    """{file name: ESC-10 class} of the bundled clips."""
    with open(bundled_manifest(), newline="") as f:
        return {row["path"]: row["category"] for row in csv.DictReader(f)}


def demo_clips() -> list[Path]:
    """The bundled clips: those present and those the manifest lists (a missing one then fails)."""
    listed = {bundled_manifest().parent / name for name in bundled_categories()}
    return sorted(set(bundled_clips()) | listed)


def demo(model: ModelInfo, session_config: SessionConfig = SessionConfig(), k: int = 3) -> Iterator[DemoResult]:
    """Top-k predictions of each bundled clip, with its true class (a clip that cannot be read or
    run has its AudioError as result)."""
    category = bundled_categories()
    for result in predict(demo_clips(), model=model, session_config=session_config, k=k):
        name = result.path.rsplit("/", 1)[-1]
        yield DemoResult(category.get(name, UNKNOWN_CATEGORY), result)
