"""``soundnet8 demo``: the model (exported on first use) on the six bundled ESC-10 clips, each clip's
true class beside its top scenes and objects (:func:`soundnet8.engine.demo.demo`). Exits 3
(SOME_FAILED) when a bundled clip fails: a fresh installation that cannot run them is broken."""

from __future__ import annotations

import argparse
import sys

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
    total = failed = 0
    for item in demo(model, config, k=args.top):
        total += 1
        failed += item.failed
        print(f"[ESC-10 class: {item.category}]", end=" ")
        # a failing clip is shown and the others still run; the exit status reports it
        print(f"{item.result}" if isinstance(item.result, AudioError) else format_prediction(item.result))
    if failed:
        print(f"soundnet8 demo: {failed} of {total} bundled clips failed", file=sys.stderr)
        return ExitCode.SOME_FAILED
    return ExitCode.OK
