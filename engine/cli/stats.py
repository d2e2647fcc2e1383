"""``soundnet8 stats STORE.h5``: per-neuron thresholds and class selectivity, written to the store.

Calls :func:`soundnet8.engine.stats.store_stats` for the chosen layers (all by default),
writes them under ``/stats/<layer>/<pool>/`` and prints, per layer, a one-line summary and the
most selective neurons with their top class's name.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TextIO

from ..errors import ExitCode

MIB = 2**20
OMP_WAIT_POLICY = "PASSIVE"
"""Numba's OpenMP pool spins while idle by default; when other processes keep the cores busy,
that spinning cost ~9 ms per kernel launch here (4 us when passive), and each pass launches one
kernel per chunk. Set for this process unless the user chose otherwise."""
DEFAULT_SHOW = 10  # neurons printed per layer
CLASS_WIDTH = 24  # class names are cut to this many characters in the table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..stats import DEFAULT_MEMORY_BUDGET, DEFAULT_Q, DEFAULT_TOP_K

    parser.add_argument("store", type=Path, help="the feature store (HDF5)")
    parser.add_argument(
        "--layer", dest="layers", action="append", metavar="LAYER",
        help="layer to analyse (repeatable; default: every layer having the pool)",
    )  # fmt: skip
    parser.add_argument("--pool", default="mean", help="pooling over time: mean, max or std (default: mean)")
    parser.add_argument(
        "--percentile", type=float, default=DEFAULT_Q, metavar="Q",
        help=f"activation threshold percentile in [0, 100] (default: {DEFAULT_Q:g}, the seed's)",
    )  # fmt: skip
    parser.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, metavar="K",
        help=f"top activating clips stored per neuron (default: {DEFAULT_TOP_K})",
    )  # fmt: skip
    parser.add_argument(
        "--show", type=int, default=DEFAULT_SHOW, metavar="N",
        help=f"most selective neurons printed per layer (default: {DEFAULT_SHOW}; 0: summary only)",
    )  # fmt: skip
    parser.add_argument(
        "--by", choices=("seed", "active"), default="seed",
        help="rank neurons by the seed's share, top-class count / (N * (100 - q) / 100) (default), "
        "or by the share of their actual activations (active; noisy for neurons tied at zero)",
    )  # fmt: skip
    parser.add_argument(
        "--memory-budget", type=float, default=DEFAULT_MEMORY_BUDGET / MIB, metavar="MIB",
        help=f"working memory per layer in MiB (default: {DEFAULT_MEMORY_BUDGET // MIB})",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only; leave the store unchanged")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)  # read when numba's pool starts
    from ..stats import StatsError, store_stats

    out = sys.stdout
    if args.top_k < 0 or args.show < 0:
        raise StatsError("--top-k and --show must be non-negative")
    if not math.isfinite(args.memory_budget) or args.memory_budget <= 0:
        raise StatsError(f"--memory-budget must be a positive number of MiB, not {args.memory_budget}")
    results = store_stats(
        args.store,
        args.layers,
        args.pool,
        args.percentile,
        args.top_k,
        memory_budget=int(args.memory_budget * MIB),
        write=not args.no_write,
    )
    for stats in results.values():
        print_layer(stats, args.show, args.by, out)
    if not args.no_write:
        print(f"written: /stats/<layer>/{args.pool} for {', '.join(results)} in {args.store}", file=out)
    return ExitCode.OK


def print_layer(stats, show: int, by: str, out: TextIO) -> None:
    """A summary line, then a plain table of the ``show`` most selective neurons."""
    s = stats.summary()
    print(
        f"{stats.name}: {s.n_neurons} neurons x {s.n_clips} clips, q={stats.q:g} "
        f"({stats.seed_denominator:g} clips above the threshold when untied; {s.n_tied} neurons have "
        f"fewer because of ties, {s.n_silent} none)",
        file=out,
    )
    if s.n_classes == 0:
        print("  the store has no labels: no class selectivity", file=out)
        return
    above = "; ".join(
        f"> {lv:.0%}: {b} neurons ({a} by share of actual activations)"
        for lv, a, b in zip(s.levels, s.n_above_active, s.n_above_seed)
    )
    print(f"  top-class share (seed's definition) {above}", file=out)
    print(f"  median share {s.median_share_seed:.3f} (seed), {s.median_share_active:.3f} (actual)", file=out)
    if show == 0:
        return
    print(
        f"  {'neuron':>6}  {'top class':<{CLASS_WIDTH}}  {'count':>6}  {'active':>6}  {'actual':>6}  "
        f"{'seed':>6}  {'threshold':>10}",
        file=out,
    )
    for c in stats.most_selective(show, by=by):
        k = int(stats.top_class[c])
        count = int(stats.counts[c, k]) if k >= 0 else 0
        print(
            f"  {c:>6}  {stats.class_name(k)[:CLASS_WIDTH]:<{CLASS_WIDTH}}  {count:>6}  "
            f"{int(stats.n_active[c]):>6}  {_fmt(stats.share_active[c])}  {_fmt(stats.share_seed[c])}  "
            f"{float(stats.thresholds[c]):>10.4g}",
            file=out,
        )


def _fmt(share: float) -> str:
    return f"{'-':>6}" if math.isnan(share) else f"{share:>6.3f}"
