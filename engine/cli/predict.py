"""``soundnet8 predict FILE...``: the top-k scenes and objects of audio files
(:func:`soundnet8.engine.predict.predict`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AudioError, ExitCode, SoundNetError
from .common import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="audio files")
    parser.add_argument("-k", "--top", type=int, default=5, help="how many classes to show (default 5)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..modelfile import ensure_model
    from ..predict import format_prediction, predict
    from ..session import Provider, SessionConfig

    if args.top < 1:
        raise SoundNetError("--top must be at least 1")
    config = SessionConfig(Provider(args.provider), intra_op_threads=0)  # 0: ORT uses every core
    failed = 0
    for result in predict(args.files, model=ensure_model(args.model), session_config=config, k=args.top):
        if isinstance(result, AudioError):
            failed += 1
            print(f"{result.path}: error: {result.reason}")
        else:
            print(format_prediction(result))
    return ExitCode.SOME_FAILED if failed else ExitCode.OK
