"""soundnet8 analysis: what scientists run on feature stores.

* :func:`cross_validate_svm`: StandardScaler + linear SVM on the official folds, C chosen by nested
  cross-validation (and the seed's optimistic test-fold choice reported beside it); the exact
  seed configuration via ``solver=Solver.LIBLINEAR`` or :func:`seed_reproduction`.
* :func:`squared_hinge_path`: LinearSVC's problem solved exactly along a C path (the fast solver).
* :mod:`.study`: per-layer tables, frame-level protocols, honest choice of the best protocol.
* :mod:`.figures`, :mod:`.embedding`, :mod:`.neurons`: the figures; :func:`build_report`: the HTML page
  (its data computed in :mod:`.report_data`, rendered from ``templates/report.html.j2``).
* :func:`run_svm`, :func:`run_table`, :func:`run_grid_speed`: what ``soundnet8 analyze`` runs.

The engine is used only through its store reader, its stats API, the architecture's constants and
its errors.

matplotlib and umap are imported only by the functions that draw or embed.
"""

from .data import FeatureSpec, FoldOptions, FoldSource, Labels, labels_from_arrays, load_features, load_labels, open_stores
from .errors import AnalysisError
from .esc50 import ESC50_CLASSES, ESC50_MAJOR_CATEGORIES, is_esc50, major_category_of
from .frames import PAPER_WINDOWS, CropProtocol, crop_rows, flatten_rows
from .linear import LinearModel, squared_hinge_path
from .report import ReportOptions, build_report
from .speed import run_grid_speed
from .study import Candidate, Evaluation, ProtocolSelection, evaluate, select_protocol
from .svm import (
    SEED_C,
    SEED_C_GRID,
    SEED_FOLD_ACCURACY,
    SEED_MEAN_ACCURACY,
    ClassDifficulty,
    CVResult,
    Selection,
    Solver,
    class_difficulty,
    confusion_counts,
    cross_validate_svm,
    seed_reproduction,
)
from .svm_run import SvmOptions, SvmProtocol, run_svm
from .table_run import TableOptions, run_table
from .tables import TableRow

__all__ = [
    "AnalysisError",
    "CVResult",
    "Candidate",
    "ClassDifficulty",
    "CropProtocol",
    "ESC50_CLASSES",
    "ESC50_MAJOR_CATEGORIES",
    "Evaluation",
    "FeatureSpec",
    "FoldOptions",
    "FoldSource",
    "Labels",
    "LinearModel",
    "PAPER_WINDOWS",
    "ProtocolSelection",
    "ReportOptions",
    "SEED_C",
    "SEED_C_GRID",
    "SEED_FOLD_ACCURACY",
    "SEED_MEAN_ACCURACY",
    "Selection",
    "Solver",
    "SvmOptions",
    "SvmProtocol",
    "TableOptions",
    "TableRow",
    "build_report",
    "class_difficulty",
    "confusion_counts",
    "crop_rows",
    "cross_validate_svm",
    "evaluate",
    "flatten_rows",
    "is_esc50",
    "labels_from_arrays",
    "load_features",
    "load_labels",
    "major_category_of",
    "open_stores",
    "run_grid_speed",
    "run_svm",
    "run_table",
    "seed_reproduction",
    "select_protocol",
    "squared_hinge_path",
]
