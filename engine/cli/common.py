"""Argument helpers shared by several command modules (model choice, comma-separated lists)."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..session import Provider

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--provider``, as every command that runs the ONNX model takes them."""
    parser.add_argument("--model", type=Path, default=None,
                        help="ONNX model file (default: $SOUNDNET8_MODEL or the cache, exported on first use)")
    parser.add_argument("--provider", choices=[p.value for p in Provider], default=Provider.AUTO.value,
                        help="execution provider (auto = CUDA when onnxruntime-gpu sees a GPU, else CPU)")


def comma_list(choices: Sequence[str], what: str,
               convert: Callable[[str], T] = str) -> Callable[[str], tuple[T, ...]]:
    """An argparse ``type=``: "a,b,a" -> (convert(a), convert(b)); an unknown or empty list is a usage error."""

    def parse(text: str) -> tuple[T, ...]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown or text!r}; choose from {','.join(choices)}")
        return tuple(dict.fromkeys(convert(v) for v in values))

    return parse


def enum_list(enum_cls: type[E], what: str) -> Callable[[str], tuple[E, ...]]:
    """:func:`comma_list` over an enum's values, giving its members."""
    return comma_list([e.value for e in enum_cls], what, enum_cls)
