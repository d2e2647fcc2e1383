"""``soundnet8 demo``: the model (exported on first use) on the six bundled ESC-10 clips, each clip's
true class beside its top scenes and objects (:func:`soundnet8.engine.demo.demo`)."""

from __future__ import annotations

import argparse

from ..errors import AudioError, ExitCode
from .common import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--top", type=int, default=3, help="how many classes to show (default 3)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..demo import demo
    from ..modelfile import ensure_model
    from ..predict import format_prediction
    from ..session import Provider, SessionConfig

    model = ensure_model(args.model)
    print(f"model: {model.path} (weights sha256 {model.weights_sha256[:12]}…)")
    config = SessionConfig(Provider(args.provider), intra_op_threads=0)  # 0: ORT uses every core
    for item in demo(model, config, k=args.top):
        print(f"[ESC-10 class: {item.category}]", end=" ")
        # a bundled clip that fails to decode is shown, not fatal: the demo shows what the engine does
        print(f"{item.result}" if isinstance(item.result, AudioError) else format_prediction(item.result))
    return ExitCode.OK
