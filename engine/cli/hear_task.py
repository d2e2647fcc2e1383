"""`soundnet8 hear-task`: write the HEAR task folder (hear-eval-kit's input) from an ESC-50 style manifest."""

from __future__ import annotations

import argparse

from soundnet8.engine.arch import SAMPLE_RATE
from soundnet8.engine.errors import ExitCode, SoundNetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True,
                        help="CSV with path/filename, label/target (+ category) and fold columns (ESC-50's meta/esc50.csv as is)")
    parser.add_argument("--audio-dir", default=None,
                        help="folder the manifest's relative paths are in (default: the manifest's folder)")
    parser.add_argument("-o", "--output", required=True, metavar="TASKS",
                        help="tasks folder; the task is written to TASKS/<name>-<version>-full/")
    parser.add_argument("--task-name", default="esc50")
    parser.add_argument("--task-version", default="v2.0.0",
                        help="version in the folder name (default: hear-preprocess's ESC-50 version)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds every clip is trimmed or zero-padded to (default: 5, ESC-50's length)")
    parser.add_argument("--sample-rates", default=str(SAMPLE_RATE),
                        help=f"comma-separated rates to write (default: {SAMPLE_RATE}, soundnet8.hear's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing task folder")


def _rates(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise SoundNetError(f"--sample-rates: expected comma-separated integers, got {text!r}") from exc


def run(args: argparse.Namespace) -> int:
    from soundnet8.hear.task import HearTaskOptions, write_hear_task

    options = HearTaskOptions(task_name=args.task_name, version=args.task_version, sample_duration=args.duration,
                              sample_rates=_rates(args.sample_rates), overwrite=args.overwrite)
    task = write_hear_task(args.manifest, args.audio_dir, args.output, options)
    counts = ", ".join(f"{split}: {n}" for split, n in zip(task.splits, task.clips_per_split))
    print(f"{task.path}: {sum(task.clips_per_split)} clips, {len(task.labels)} labels ({counts})")
    print(f"embed with: python -m heareval.embeddings.runner soundnet8.hear --tasks-dir {task.path.parent}")
    return ExitCode.OK


