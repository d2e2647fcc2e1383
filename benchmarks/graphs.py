"""The engine's graph variants in a benchmark run: which one ``extract`` runs here, and their files.

Rows of the engine's own variants are named ``graph-<variant>`` (e.g. ``graph-nchwc``); the plain
export is the ``conv1d`` row, as in every other section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soundnet8.engine.modelfile import VARIANTS, GraphVariant, ModelInfo, variant_path
from soundnet8.engine.session import Provider, SessionConfig, choose_graph

GRAPH_PREFIX = "graph-"
PLAIN_ROW = "conv1d"


def graph_check(model: ModelInfo) -> dict[str, Any]:
    """The graph variant the engine runs here (one worker thread on the CPU, as extract's default), and the
    timings it was chosen by: what every end-to-end figure of the run was made with."""
    choice = choose_graph(model, SessionConfig(Provider.CPU, intra_op_threads=1))
    return {"variant": choice.variant.value, "source": choice.source.value,
            "ms_per_call": {k: round(1000 * v, 2) for k, v in choice.seconds.items()}}


def engine_graphs(model: ModelInfo) -> dict[str, Path]:
    """Row name -> file of the graph variants ``extract`` chooses among (all but ``plain``)."""
    return {f"{GRAPH_PREFIX}{v.value}": variant_path(model, v) for v in VARIANTS if v is not GraphVariant.PLAIN}


def chosen_graph(checks: dict[str, Any]) -> str | None:
    """The row name of the graph extract runs here, from a run's checks (None: not recorded)."""
    graph = checks.get("graph_variant")
    if not graph:
        return None
    return PLAIN_ROW if graph["variant"] == GraphVariant.PLAIN.value else f"{GRAPH_PREFIX}{graph['variant']}"
