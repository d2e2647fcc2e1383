"""``soundnet8 demo``: the main job on the bundled default — the model (exported on first use) on
six bundled ESC-10 clips, printing each clip's true class beside its top scenes and objects."""

from __future__ import annotations

import argparse
import csv

from .inputs import bundled_clips, bundled_manifest
from .modelfile import ensure_model
from .predict import add_common_model_arguments, format_prediction, predict
from .session import Provider, SessionConfig

HELP = "print the top scenes and objects for the bundled ESC-10 clips"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--top", type=int, default=3, help="how many classes to show (default 3)")
    add_common_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    model = ensure_model(args.model)
    print(f"model: {model.path} (weights sha256 {model.weights_sha256[:12]}…)")
    with open(bundled_manifest(), newline="") as f:
        category = {row["path"]: row["category"] for row in csv.DictReader(f)}
    config = SessionConfig(Provider(args.provider), intra_op_threads=0)
    for result in predict(bundled_clips(), model=model, session_config=config, k=args.top):
        name = getattr(result, "path", "")
        print(f"[ESC-10 class: {category.get(name.rsplit('/', 1)[-1], '?')}]", end=" ")
        print(format_prediction(result) if not hasattr(result, "reason") else f"{result}")
    return 0
