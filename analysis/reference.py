"""Published numbers our results are shown beside (accuracy on ESC-50, official 5 folds, %).

Aytar, Vondrick & Torralba, "SoundNet: Learning Sound Representations from Unlabeled Video",
NeurIPS 2016, Table 6 (8-layer SoundNet, VGG teacher, linear SVM on one layer's features).
"""

from __future__ import annotations

PAPER = "SoundNet (Aytar et al., NeurIPS 2016)"

PAPER_TABLE6: dict[str, float] = {
    "conv4": 66.0,
    "conv5": 69.3,
    "pool5": 72.9,
    "conv6": 73.3,
    "conv7": 59.8,
    "conv8": 43.7,
}
"""Table 6, ESC-50, 8-layer, VGG teacher: accuracy (%) by layer."""

PAPER_HEADLINE = 74.2
"""The paper's headline ESC-50 accuracy (%): pool5, 8-layer, AlexNet teacher. The bar to beat."""

PAPER_LAYER_OF: dict[str, str] = {
    "conv4": "conv4",
    "pool5": "pool5",
    "conv6": "conv6",
    "conv7": "conv7",
    "objects": "conv8",  # the two conv8 heads: the paper reports one conv8 figure
    "scenes": "conv8",
}
"""Our output name -> the row of Table 6 it corresponds to (conv5 before pooling is not stored)."""

SEED_NOTEBOOK = "seed notebook (Plumail & Rakotoarivony)"

SEED_POOL5_MEAN = 71.95
"""Seed: pool5 mean over time, StandardScaler + LinearSVC(C=0.1), C chosen on the test folds; its
features came from 44.1 kHz audio fed unresampled to the 22,050 Hz model."""

SEED_POOL5_FLATTEN = 63.0
"""Seed: pool5 frames flattened (time x channels) instead of averaged: "0.63 in cross validation"."""

SEED_C_GRID_ACCURACY: dict[float, float] = {
    1e-4: 57.00,
    1e-3: 64.10,
    1e-2: 71.10,
    1e-1: 71.95,
    1.0: 66.65,
    10.0: 63.15,
}
"""Seed: GridSearchCV mean test-fold accuracy (%) of each C on its pool5 features."""

EXPECTED_RESAMPLED: dict[tuple[str, str], float] = {
    ("pool5", "mean"): 70.0,
    ("conv6", "mean"): 73.0,
    ("conv7", "mean"): 63.0,
}
"""The project's expectation (issue) with correct 22,050 Hz preprocessing on the 16 kHz copy:
pool5 ~70 (C=0.1), conv6 ~73 (C=0.01), conv7 ~63. Approximate, for orientation only."""


def paper_accuracy(layer: str) -> float | None:
    """Table 6's accuracy for one of our layers, or None when the paper has no such row."""
    row = PAPER_LAYER_OF.get(layer)
    return None if row is None else PAPER_TABLE6[row]
