"""Which linear-classifier protocol works best on SoundNet features, chosen honestly.

A *candidate* is a way of turning a store into classifier rows: one layer's pooled features, a
concatenation of poolings or layers, or frame-level rows (the paper's 1 s windows, time-shifted
or shorter crops as augmentation). Every candidate is evaluated with nested selection of C
(:func:`~soundnet8.analysis.svm.cross_validate_svm`), on the same folds.

Picking the best candidate by its test-fold accuracy would be the seed's optimism again, one
level up. :func:`select_protocol` instead chooses, for each test fold, the candidate whose
*inner* cross-validation (on the training folds only) scored best, and reports that candidate's
accuracy on the test fold: an honest estimate of "take the best protocol" as a procedure. The
optimistic best-on-test figure is reported beside it, labelled.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import FeatureSpec, Labels, load_features
from .errors import AnalysisError
from .frames import PAPER_WINDOWS, CropProtocol, crop_rows, flatten_rows, has_frame_rate, layer_frame_rate
from .reference import SEED_POOL5_FLATTEN, SEED_POOL5_MEAN, paper_accuracy
from .svm import SEED_C_GRID, CVResult, FoldScores, Solver, cross_validate_svm
from .tables import TableRow

log = logging.getLogger(__name__)

class Transform(str, enum.Enum):
    """Element-wise transform of the rows before standardisation."""

    NONE = "none"
    SQRT = "signed sqrt"  # sign(x) * sqrt(|x|): power normalisation, tames bursty ReLU features
    L2 = "L2 per block"  # each (layer, pool) block of a row scaled to unit norm: blocks weigh alike
    SQRT_L2 = "signed sqrt, L2 per block"  # both, in that order (as in Fisher-vector pipelines)


CLASSIFIER_NAMES = {Solver.NEWTON: "linear SVM", Solver.LIBLINEAR: "liblinear SVM", Solver.LOGISTIC: "logistic regression"}
"""How a candidate's classifier is named in its protocol (the SVM, the default, is not named)."""

CLIP_PROTOCOL = "clip pooled"
"""Protocol name of rows that are whole-clip pooled features (``/features``)."""

FLATTEN_PROTOCOL = "frames flattened"


@dataclass(frozen=True)
class Candidate:
    """One protocol: which features, and how clips become rows."""

    features: FeatureSpec
    crops: CropProtocol | None = None  # None: the store's clip-level pooled features
    flatten: bool = False  # frames flattened (time x channels), the seed's first attempt
    transform: Transform = Transform.NONE
    classifier: Solver = Solver.NEWTON  # the linear SVM, or LOGISTIC regression

    def __post_init__(self) -> None:
        if (self.crops is not None or self.flatten) and len(self.features.layers) != 1:
            raise AnalysisError("frame-level protocols take one layer (layers have different frame rates)")
        if self.crops is not None and self.flatten:
            raise AnalysisError("a candidate is either cropped or flattened, not both")

    @property
    def protocol(self) -> str:
        base = FLATTEN_PROTOCOL if self.flatten else CLIP_PROTOCOL if self.crops is None else self.crops.name
        if self.transform is not Transform.NONE:
            base = f"{base}, {self.transform.value}"
        return base if self.classifier is Solver.NEWTON else f"{base}, {CLASSIFIER_NAMES[self.classifier]}"

    @property
    def name(self) -> str:
        return self.features.name if self.protocol == CLIP_PROTOCOL else f"{self.features.name} [{self.protocol}]"

    @property
    def table_features(self) -> str:
        """The features column of the table (flattened frames have no pooling)."""
        return self.features.layers[0] if self.flatten else self.features.name

    @property
    def needs_frames(self) -> bool:
        return self.crops is not None or self.flatten


@dataclass(frozen=True, eq=False)
class Evaluation:
    candidate: Candidate
    result: CVResult

    def row(self, *, esc50_references: bool = True) -> TableRow:
        """The table row; the paper's and the seed's ESC-50 numbers beside it when asked (they
        mean nothing for another dataset)."""
        paper, seed = references(self.candidate) if esc50_references else (None, None)
        return TableRow.of(self.candidate.table_features, self.candidate.protocol, self.result, paper=paper, seed=seed)


def references(candidate: Candidate) -> tuple[float | None, float | None]:
    """(paper %, seed %) for the candidates the paper's Table 6 and the seed measured: one layer's
    mean over time, untransformed (and the seed's flattened pool5 frames)."""
    layer, pool = candidate.features.parts[0]
    if len(candidate.features.parts) != 1 or candidate.transform is not Transform.NONE or candidate.classifier is not Solver.NEWTON:
        return None, None
    if candidate.flatten:
        return None, SEED_POOL5_FLATTEN if layer == "pool5" else None
    if candidate.crops is not None or pool != "mean":
        return None, None
    return paper_accuracy(layer), SEED_POOL5_MEAN if layer == "pool5" else None


# --------------------------------------------------------------------------------------------
# Candidate lists


def layer_candidates(store, layers: Sequence[str] | None = None, pools: Sequence[str] | None = None) -> list[Candidate]:
    """Every (layer, pool) of the store's /features (optionally restricted): the per-layer table."""
    out = []
    for layer in layers or store.layers:
        if layer not in store.layers:
            raise AnalysisError(f"{store.path}: no layer {layer!r} (it has {', '.join(store.layers)})")
        for pool in store.pools(layer):
            if pools is None or pool in pools:
                out.append(Candidate(FeatureSpec.of(layer, pool)))
    return out


TIME_SHIFTS = CropProtocol(crop_seconds=5.0, hop_seconds=1.0, span_seconds=10.0, name="5 s crops every 1 s over 10 s")
"""Augmentation by time shifts: 5 s crops (ESC-50's clip length) of the clip repeated to 10 s,
one every second: circular shifts of the clip at 1 s steps."""

SHORT_CROPS = CropProtocol(crop_seconds=3.0, hop_seconds=0.5, span_seconds=None, name="3 s crops every 0.5 s")
"""Augmentation by shorter crops inside each clip's own duration."""

STUDY_LAYERS = ("pool5", "conv6", "conv7")
"""The layers the paper and the seed found best; combinations are explored among them."""


def study_candidates(store, frames_store=None, layers: Sequence[str] = STUDY_LAYERS) -> list[Candidate]:
    """Beyond one layer's mean: poolings combined, layers combined, and (with frames) the
    paper's windows and augmentation by time shifts or shorter crops."""
    present = [layer for layer in layers if layer in store.layers]
    out: list[Candidate] = []
    for layer in present:
        pools = store.pools(layer)
        for combo in (("mean", "max"), ("mean", "std"), ("mean", "max", "std")):
            if all(p in pools for p in combo):
                out.append(Candidate(FeatureSpec(tuple((layer, p) for p in combo))))
    for size in (2, 3):
        for start in range(len(present) - size + 1):
            group = present[start : start + size]
            if all("mean" in store.pools(layer) for layer in group):
                out.append(Candidate(FeatureSpec(tuple((layer, "mean") for layer in group))))
    if len(present) == 3:
        out.append(Candidate(FeatureSpec(((present[0], "mean"), (present[2], "mean")))))
    for start in range(len(present) - 1):  # neighbouring layers, each with mean and std
        pair = present[start : start + 2]
        if all(p in store.pools(layer) for layer in pair for p in ("mean", "std")):
            out.append(Candidate(FeatureSpec(tuple((layer, p) for layer in pair for p in ("mean", "std")))))
    # power normalisation of the single layers and of the widest combinations
    for spec in [FeatureSpec.of(layer) for layer in present] + [c.features for c in out if len(c.features.layers) > 1 or len(c.features.parts) >= 3]:
        if all(pool in store.pools(layer) for layer, pool in spec.parts):
            out.append(Candidate(spec, transform=Transform.SQRT))
    framed = [layer for layer in present if layer in frames_layers(frames_store if frames_store is not None else store)]
    if framed:
        for layer in framed:
            out.append(Candidate(FeatureSpec.of(layer), crops=PAPER_WINDOWS))
        for layer in framed:
            if layer != "conv7":  # conv7's frames are 1.5 s apart: too coarse for crops
                out.append(Candidate(FeatureSpec.of(layer), crops=TIME_SHIFTS))
                out.append(Candidate(FeatureSpec.of(layer), crops=SHORT_CROPS))
    return out


JOIN_LAYERS = ("conv4", "pool5", "conv6", "conv7")
"""Layers whose joins are enumerated: the paper's best four."""

JOIN_POOLS = (("mean", "std"), ("mean", "max", "std"))
"""Poolings taken of every joined layer (mean+std did best per layer; max is the third pooling)."""


def join_candidates(store, layers: Sequence[str] = JOIN_LAYERS, pool_sets: Sequence[Sequence[str]] = JOIN_POOLS) -> list[Candidate]:
    """Every join of two or more of ``layers`` (each with one of ``pool_sets``), in both SVM and
    power + L2 form: enumerated, so the measurement (and the honest choice) picks among them."""
    present = [layer for layer in layers if layer in store.layers]
    out = []
    for transform in (Transform.NONE, Transform.SQRT_L2):
        for pools in pool_sets:
            for size in range(2, len(present) + 1):
                for group in itertools.combinations(present, size):
                    if all(p in store.pools(layer) for layer in group for p in pools):
                        spec = FeatureSpec(tuple((layer, p) for layer in group for p in pools))
                        out.append(Candidate(spec, transform=transform))
    return out


LEVER_JOINS = ("pool5:mean,std+conv6:mean,std", "conv4:mean,std+pool5:mean,std+conv6:mean,std")
"""The best joins measured so far (77.45% and 78.05%): the levers are applied to them."""

LEVER_EXTRA = (
    "conv4:mean,std+pool5:mean,std+conv6:mean,std+conv7:mean,std",
    "conv4:mean,max,std+pool5:mean,max,std+conv6:mean,max,std",
    "conv6:mean",
    "conv7:mean,std",
)
"""Wider joins, and single layers that may add to a fusion what the joins miss."""


def lever_candidates(store) -> list[Candidate]:
    """A short study of the levers on the best joins: power + L2 normalisation, logistic
    regression, wider joins; with their decision values kept, they are the fusion's pool."""
    best, second = (FeatureSpec.parse(text) for text in reversed(LEVER_JOINS))
    out = [Candidate(best), Candidate(second)]  # most telling first: a cut-short run still says most
    for spec in (best, second):
        out += [Candidate(spec, transform=Transform.SQRT_L2), Candidate(spec, classifier=Solver.LOGISTIC)]
    out += [Candidate(FeatureSpec.parse(text)) for text in LEVER_EXTRA]
    out += [Candidate(spec, transform=Transform.SQRT_L2, classifier=Solver.LOGISTIC) for spec in (best, second)]
    out += [Candidate(FeatureSpec.parse(text), classifier=Solver.LOGISTIC) for text in LEVER_EXTRA[:2]]
    return [c for c in out if all(layer in store.layers and pool in store.pools(layer) for layer, pool in c.features.parts)]


def unique_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates without repeats (same name), first occurrence kept."""
    seen: dict[str, Candidate] = {}
    for c in candidates:
        seen.setdefault(c.name, c)
    return list(seen.values())


def frames_layers(store) -> tuple[str, ...]:
    """Layers with frame-level outputs in a store, as its writer recorded them (``attrs["frames"]``)."""
    recorded = store.frame_layers
    return tuple(layer for layer in store.layers if layer in recorded)


PRIMARY_LAYERS = ("pool5", "conv6", "conv7")
"""The headline features: the first of these the store has (mean pooling), as the seed used pool5."""


def default_primary(store) -> FeatureSpec:
    """Mean pooling of the first of :data:`PRIMARY_LAYERS` the store has, else its first features."""
    for layer in PRIMARY_LAYERS:
        if layer in store.layers and "mean" in store.pools(layer):
            return FeatureSpec.of(layer, "mean")
    layer = store.layers[0]
    return FeatureSpec.of(layer, store.pools(layer)[0])


def frame_candidates(store, frames_store=None) -> list[Candidate]:
    """Flatten versus mean and the paper's windows, for pool5 (else the first framed layer)."""
    framed = frames_layers(frames_store if frames_store is not None else store)
    if not framed:
        return []
    layer = "pool5" if "pool5" in framed else framed[0]
    spec = FeatureSpec.of(layer, "mean")
    out = [Candidate(spec, flatten=True)]
    if not has_frame_rate(layer):
        return out  # a layer without a known frame rate: no time-based windows
    out.append(Candidate(spec, crops=PAPER_WINDOWS))
    return out


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True, eq=False)
class Rows:
    """Classifier rows of a candidate: X (R, d), labels/folds per row, clip of each row."""

    X: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    groups: np.ndarray | None


def candidate_rows(candidate: Candidate, store, labels: Labels, frames_store=None) -> Rows:
    """The rows a candidate trains and tests on."""
    if not candidate.needs_frames:
        blocks = [load_features(store, FeatureSpec((part,))) for part in candidate.features.parts]
        X = np.hstack([transform_block(block, candidate.transform) for block in blocks])
        return Rows(X, labels.labels, labels.folds, None)
    source = frames_store if frames_store is not None else store
    layer = candidate.features.parts[0][0]
    data, offsets = source.frames(layer)
    if candidate.flatten:
        rows = Rows(flatten_rows(data, offsets), labels.labels, labels.folds, None)
    else:
        fps = layer_frame_rate(layer)
        X, clip = crop_rows(data, offsets, candidate.crops, frames_per_second=fps, durations=source.durations)
        rows = Rows(X, labels.labels[clip], labels.folds[clip], clip)
    return Rows(transform_block(rows.X, candidate.transform), rows.labels, rows.folds, rows.groups)


def transform_block(X: np.ndarray, transform: Transform) -> np.ndarray:
    """One feature block's rows transformed (the L2 norm is taken per row of the block)."""
    if transform in (Transform.SQRT, Transform.SQRT_L2):
        X = np.sign(X) * np.sqrt(np.abs(X))
    if transform in (Transform.L2, Transform.SQRT_L2):
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norm > 0, norm, 1.0)
    return X


def evaluate(
    candidate: Candidate,
    store,
    labels: Labels,
    *,
    frames_store=None,
    grid: Sequence[float] = SEED_C_GRID,
    n_jobs: int = 1,
    keep_decisions: bool = False,
) -> Evaluation:
    rows = candidate_rows(candidate, store, labels, frames_store)
    result = cross_validate_svm(
        rows.X, rows.labels, rows.folds, grid, groups=rows.groups, test_folds=labels.test_folds, n_jobs=n_jobs,
        solver=candidate.classifier, keep_decisions=keep_decisions,
    )  # fmt: skip
    log.info("%s: nested %.2f%% (%.0f s)", candidate.name, 100 * result.mean_accuracy, result.seconds)
    return Evaluation(candidate, result)


# --------------------------------------------------------------------------------------------
# Honest choice among candidates


@dataclass(frozen=True)
class ProtocolSelection:
    """The best-protocol procedure, scored honestly (choice made on training folds only)."""

    folds: tuple[int, ...]
    fold_choice: tuple[str, ...]  # candidate chosen for each test fold by its inner-CV accuracy
    fold_accuracy: tuple[float, ...]  # that candidate's (nested-C) accuracy on the test fold
    optimistic_choice: str  # the candidate with the best mean test-fold accuracy
    optimistic_accuracy: float
    n_candidates: int
    candidates: tuple[str, ...] = field(default=())

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))


def select_protocol(evaluations: Sequence[Evaluation] | Mapping[str, CVResult | FoldScores]) -> ProtocolSelection:
    """Nested choice of protocol (and C) per test fold; see the module docstring."""
    if isinstance(evaluations, Mapping):
        named = list(evaluations.items())
    else:
        named = [(e.candidate.name, e.result) for e in evaluations]
    if not named:
        raise AnalysisError("no evaluations to choose from")
    folds = named[0][1].folds
    for name, r in named:
        if r.folds != folds:
            raise AnalysisError(f"{name}: evaluated on folds {r.folds}, the others on {folds}")
        if r.inner_accuracy is None:
            raise AnalysisError(f"{name}: no inner cross-validation (a fixed C); cannot choose honestly")
    choice, accuracy = [], []
    for j in range(len(folds)):
        inner = [max(r.inner_accuracy[j]) for _, r in named]
        best = int(np.argmax(inner))  # first on ties: candidates are listed simplest first
        choice.append(named[best][0])
        accuracy.append(named[best][1].fold_accuracy[j])
    means = [r.mean_accuracy for _, r in named]
    top = int(np.argmax(means))
    return ProtocolSelection(
        folds=folds,
        fold_choice=tuple(choice),
        fold_accuracy=tuple(accuracy),
        optimistic_choice=named[top][0],
        optimistic_accuracy=means[top],
        n_candidates=len(named),
        candidates=tuple(n for n, _ in named),
    )
