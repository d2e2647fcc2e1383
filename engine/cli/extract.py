"""``soundnet8 extract``: audio files, directories or a manifest into an HDF5 feature store.

Parses the options into :class:`~soundnet8.engine.pipeline.ExtractOptions` and calls
:func:`soundnet8.engine.pipeline.extract`. Exit status: 0 every clip succeeded; 3 the job finished
but some clips failed (listed under /errors in the store); 1 a fatal error (nothing more could be
done; what was written is kept); 130 interrupted (what was written is kept; re-run the same command
to resume).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .. import arch
from ..audio import Mix, Preprocessing, SampleRateMode
from ..errors import ExitCode, SoundNetError
from ..modelfile import GRAPH_ENV_VAR, GraphVariant
from ..progress import LOG_INTERVAL_S, ProgressMode, ProgressOptions
from ..runner import Pool, Request
from ..session import Provider
from .common import add_model_arguments, comma_list, enum_list

if TYPE_CHECKING:
    from ..inputs import InputSet

LAYERS = comma_list(arch.OUTPUTS, "layer")
POOLS = enum_list(Pool, "pooling")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", type=Path, help="audio files and/or directories (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the HDF5 feature store to write")
    parser.add_argument("--manifest", type=Path, help="CSV with a path (or ESC-50 filename) column; label/fold/other columns kept")
    parser.add_argument("--audio-dir", type=Path, help="folder the manifest's paths are relative to (ESC-50: audio_16k)")
    parser.add_argument("--allow-missing", action="store_true", help="skip manifest rows whose file is absent")
    parser.add_argument("--shard", metavar="K/N",
                        help="process only shard K of N (1 <= K <= N) of the inputs, chosen by a hash of each path "
                             "(one store per shard; join them with soundnet8 merge); auto: the SLURM array task's")
    parser.add_argument("--layers", type=LAYERS, default=arch.OUTPUTS,
                        help=f"comma-separated outputs (default all: {','.join(arch.OUTPUTS)})")
    parser.add_argument("--pool", type=POOLS, default=(Pool.MEAN,),
                        help="comma-separated poolings over time: mean,max,std (default mean)")
    parser.add_argument("--frames", nargs="?", const="all", default=None, metavar="LAYERS",
                        help="also store frame-level features (ragged): of every extracted layer, or of LAYERS "
                             "(comma-separated; pool1 alone is 8x the audio's size)")
    parser.add_argument("--sample-rate", choices=[m.value for m in SampleRateMode], default="resample",
                        help="resample to 22,050 Hz (default) or feed native samples as the seed notebook did")
    parser.add_argument("--mix", choices=[m.value for m in Mix], default="first", help="multi-channel: first channel (default) or mean")
    parser.add_argument("--min-seconds", type=float, default=20.0,
                        help="tile shorter clips up to this many seconds x 22,050 samples, as the seed (default 20; 0 = never)")
    add_model_arguments(parser)
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per model call (equal lengths only)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session (default 1)")
    parser.add_argument("--layout", choices=["auto", "fused", "split"], default="auto",
                        help="fused: workers run the model (CPU default); split: workers decode, main runs the model (CUDA default)")
    parser.add_argument("--graph", choices=[v.value for v in GraphVariant], default=GraphVariant.AUTO.value,
                        help="graph variant: auto (default: the fastest on this machine, timed once and cached; "
                             f"${GRAPH_ENV_VAR} also forces one), or one of them; all give the same features")
    parser.add_argument("--compression", choices=["gzip", "lzf"], default="gzip", help="HDF5 filter (gzip: portable; lzf: faster)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="overwrite", action="store_false", default=False,
                       help="continue an existing store, skipping clips already in it (default)")
    group.add_argument("--overwrite", dest="overwrite", action="store_true", help="start the store afresh")
    parser.add_argument("--segment-rows", type=int, default=None,
                        help="clips per durable segment: at most this many are redone after a kill (default 1024)")
    parser.add_argument("--retry-errors", action="store_true", help="on resume, process again clips recorded under /errors")
    parser.add_argument("--progress", choices=[m.value for m in ProgressMode], default=ProgressMode.AUTO.value,
                        help="auto (default): a bar on a terminal, else a line every "
                             f"{LOG_INTERVAL_S:.0f} s (batch logs); bar; log; none")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=ProgressMode.NONE.value,
                        help="same as --progress none")
    ray = parser.add_argument_group("distributed (--backend ray; needs pip install 'soundnet8[distributed]')")
    ray.add_argument("--backend", choices=["local", "ray"], default="local",
                     help="local: this machine's worker processes (default); ray: a Ray cluster")
    ray.add_argument("--ray-address", metavar="ADDRESS", default=None,
                     help="join this Ray cluster (HOST:PORT, ray://..., or auto); default: start a local one")
    ray.add_argument("--actors", type=int, default=0,
                     help="model actors (default: one per GPU with --gpus-per-actor, else the CPUs decoding leaves)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (and ONNX Runtime threads) per actor (default 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (default 0: CPU actors)")


def _frames(args: argparse.Namespace) -> tuple[str, ...] | bool:
    if args.frames is None:
        return False
    if args.frames == "all":
        return True
    try:
        return LAYERS(args.frames)
    except argparse.ArgumentTypeError as exc:
        raise SoundNetError(f"--frames: {exc}") from exc


def _inputs(args: argparse.Namespace) -> InputSet:
    """The input set: the manifest's rows, or the audio files found under the given paths."""
    from ..inputs import discover, read_manifest

    if args.manifest:
        if args.inputs:
            raise SoundNetError("give either INPUT paths or --manifest, not both")
        return read_manifest(args.manifest, args.audio_dir, allow_missing=args.allow_missing)
    if args.inputs:
        return discover(args.inputs)
    raise SoundNetError("nothing to extract: give audio files/directories or --manifest CSV")


def _shard(args: argparse.Namespace, inputs: InputSet) -> tuple[InputSet, dict[str, str]]:
    """The shard's inputs and the run attribute recording it (none without --shard)."""
    from ..inputs import Shard
    from ..store import check_shard

    shard = Shard.parse(args.shard) if args.shard else None
    if not args.overwrite:
        check_shard(args.output, None if shard is None else str(shard))
    if shard is None:
        return inputs, {}
    selected = inputs.shard(shard)
    print(f"shard {shard}: {len(selected)} of {len(inputs)} inputs")
    return selected, {"shard": str(shard)}


def _extractor(args: argparse.Namespace, local):
    """``local`` (the engine's extract), or the Ray backend's with the Ray options bound."""
    if args.backend == "local":
        return local
    import functools

    from ..distributed import RayOptions, extract_ray

    options = RayOptions(address=args.ray_address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                         gpus_per_actor=args.gpus_per_actor, verbose=bool(getattr(args, "verbose", False)))
    return functools.partial(extract_ray, ray_options=options)


def run(args: argparse.Namespace) -> int:
    from ..modelfile import ensure_model
    from ..pipeline import ExtractOptions, Layout, extract
    from ..store import Compression

    inputs, shard_attrs = _shard(args, _inputs(args))
    if args.batch_size < 1 or args.workers < 0 or args.threads < 0:
        raise SoundNetError("--batch-size must be >= 1, --workers and --threads >= 0")
    options = ExtractOptions(
        request=Request(layers=args.layers, pools=args.pool, frames=_frames(args)),
        preprocessing=Preprocessing(SampleRateMode(args.sample_rate), Mix(args.mix), args.min_seconds),
        provider=Provider(args.provider), workers=args.workers, batch_size=args.batch_size,
        intra_op_threads=args.threads, layout=Layout(args.layout),
        progress=ProgressOptions(ProgressMode(args.progress)), graph=GraphVariant(args.graph),
    )
    model = ensure_model(args.model)
    summary = _extractor(args, extract)(inputs, args.output, model, options, overwrite=args.overwrite,
                      retry_errors=args.retry_errors, compression=Compression(args.compression),
                      segment_rows=args.segment_rows, settings_extra=shard_attrs)
    print(
        f"{args.output}: {summary.processed} clips processed in {summary.seconds:.1f} s "
        f"({summary.clips_per_second:.1f} clips/s, {summary.audio_seconds / 3600 / max(summary.seconds, 1e-9):.3f} audio-h/s), "
        f"{summary.failed} failed, {summary.skipped} already there; store holds {summary.store.total_rows} clips"
    )
    return ExitCode.SOME_FAILED if summary.failed else ExitCode.OK
