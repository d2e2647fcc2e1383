"""Reduced precision on this CPU: int8 (``soundnet8.export.quantize``) and bfloat16, each against float32.

For every mode: model-only speed (one intra-op thread, batches of 4 ESC-50 clips tiled to 25 s,
interleaved rounds, median) against the float32 graph the engine chooses on this machine
(``session.choose_graph``); the relative error of every output against that graph; and, for the
modes asked for, ESC-50 accuracy of pool5 and conv6 mean features with the study's nested
cross-validation over the 5 official folds (``analysis.svm_run.run_svm``).

Two commands, so that only the timing holds the machine's benchmark lock::

    flock /tmp/bench.lock python -m soundnet8.benchmarks.precision speed      # speed, errors, bf16
    python -m soundnet8.benchmarks.precision accuracy --modes fp32,int8-qdq-u8  # extract + SVM

Both merge their section into ``benchmarks/results/precision/<machine>.json`` and rewrite the
Markdown beside it from that file.

bfloat16: ONNX Runtime's CPU execution provider has no bfloat16 Conv/MatMul kernels (a bf16 graph
fails to load: :func:`ort_bf16_probe` checks it on the installed version), so the bf16 figure is
PyTorch's (the export's model cast to bfloat16, oneDNN's AVX512-BF16 kernels) next to PyTorch float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from soundnet8.engine import arch
from soundnet8.engine.modelfile import INPUT_NAME, GraphVariant, ModelInfo, ensure_model, variant_path
from soundnet8.engine.session import Provider, SessionConfig, choose_graph, create_session
from soundnet8.export.quantize import (
    Activations, Calibration, Format, Method, QuantizeOptions, calibration_waveforms, quantize,
)

from .data import SHARED_ESC50, load_corpus, model_inputs
from .machine import collect
from .settings import InputKind

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "precision"
BATCH = 4
THREADS = 1
ERROR_CLIPS = 40  # spread over ESC-50's folds and classes
CALIBRATION_CLIPS = 8  # fold-1 clips of ESC-50, one per class (the study's leakage note is in the report)
FP32 = "fp32"  # the engine's chosen float32 graph: the reference of every comparison
ACCURACY_FEATURES = ("pool5", "conv6")
MEAN_FEATURES = ("pool5", "conv6")  # also compared as clip means: what the classifier sees

Sessions = Mapping[str, Callable[[np.ndarray], list[np.ndarray]]]


def int8_modes() -> dict[str, tuple[GraphVariant, QuantizeOptions]]:
    """Each int8 mode: the float graph it is built from and its options. On the MATMUL variant conv1
    is a MatMul, which only-Conv quantization leaves in float32 (conv1 fp32 with the fast conv1)."""
    modes = {}
    for activations in Activations:
        for keep in (False, True):
            options = QuantizeOptions(activations=activations, keep_conv1_fp32=keep)
            modes[options.name] = (GraphVariant.PLAIN, options)
    modes["int8-qdq-u8-conv1fp32-matmul"] = (GraphVariant.MATMUL, QuantizeOptions())
    percentile = QuantizeOptions(calibration=Calibration.PERCENTILE)
    modes[percentile.name] = (GraphVariant.PLAIN, percentile)
    modes[f"{percentile.name}-conv1fp32-matmul"] = (GraphVariant.MATMUL, percentile)
    modes["int8-qoperator-u8"] = (GraphVariant.PLAIN, QuantizeOptions(format=Format.QOPERATOR))
    modes["int8-dynamic"] = (GraphVariant.PLAIN, QuantizeOptions(method=Method.DYNAMIC))
    return modes


def esc50_calibration_paths(n: int = CALIBRATION_CLIPS) -> tuple[str, ...]:
    """The first ``n`` classes' first fold-1 clip of ESC-50 (labels are never used: ranges only)."""
    corpus = load_corpus()
    seen, out = set(), []
    for path, row in zip(corpus.paths, corpus.rows):
        if row.get("fold", "1") == "1" and row.get("target") not in seen:
            seen.add(row.get("target"))
            out.append(path)
    return tuple(out[:n])


def build_models(model: ModelInfo, folder: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the int8 modes (all, or ``names``) into ``folder``; ``fp32``: the engine's chosen graph."""
    import onnx

    chosen = choose_graph(model, SessionConfig(Provider.CPU, intra_op_threads=THREADS))
    paths: dict[str, Path] = {FP32: chosen.path}
    wanted = {k: v for k, v in int8_modes().items() if names is None or k in names}
    waveforms = calibration_waveforms(esc50_calibration_paths()) if wanted else []
    for name, (variant, options) in wanted.items():
        target = folder / f"{name}.onnx"
        if not target.is_file():
            source = onnx.load(str(variant_path(model, variant)))
            onnx.save(quantize(source, options, waveforms), str(target))
        paths[name] = target
    return paths


def ort_sessions(paths: Mapping[str, Path]) -> dict[str, Callable[[np.ndarray], list[np.ndarray]]]:
    config = SessionConfig(Provider.CPU, intra_op_threads=THREADS)
    out = {}
    for name, path in paths.items():
        session = create_session(path, config)
        out[name] = lambda x, s=session: s.run(list(arch.OUTPUTS), {INPUT_NAME: x})
    return out


def torch_sessions() -> dict[str, Callable[[np.ndarray], list[np.ndarray]]]:
    """PyTorch float32 and bfloat16 (weights and activations; outputs returned as float32)."""
    import torch

    from .baselines import torch_model

    fp32 = torch_model(THREADS)
    bf16 = torch_model(THREADS).to(torch.bfloat16)

    def run(model, dtype):
        def call(x: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [o.float().numpy() for o in model(torch.from_numpy(x).to(dtype))]
        return call

    return {"torch-fp32": run(fp32, torch.float32), "torch-bf16": run(bf16, torch.bfloat16)}


def time_modes(sessions: Sessions, batch: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each mode, in interleaved rounds after one untimed call each."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    for r in range(rounds + 1):
        for name in order[r % len(order):] + order[: r % len(order)]:
            start = time.perf_counter()
            sessions[name](batch)
            if r:
                times[name].append(time.perf_counter() - start)
    return times


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e| (the project's parity metric), for one clip's output."""
    scale = float(np.abs(expected).max())
    return float(np.abs(actual.astype(np.float64) - expected).max() / (scale if scale > 0 else 1.0))


def mean_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||mean_a - mean_e|| / ||mean_e|| of one clip's time-averaged output: the classifier's input."""
    a, e = actual.astype(np.float64).mean(axis=-1), expected.astype(np.float64).mean(axis=-1)
    norm = float(np.linalg.norm(e))
    return float(np.linalg.norm(a - e) / (norm if norm > 0 else 1.0))


def feature_errors(sessions: Sessions, reference: str, batches: Sequence[np.ndarray]) -> dict[str, dict]:
    """mode -> output (and ``<layer>:mean``) -> {max, median} over clips of the error vs ``reference``."""
    per_clip: dict[str, dict[str, list[float]]] = {k: {} for k in sessions if k != reference}
    for batch in batches:
        expected = sessions[reference](batch)
        for name in per_clip:
            actual = sessions[name](batch)
            for out, a, e in zip(arch.OUTPUTS, actual, expected):
                for i in range(batch.shape[0]):
                    per_clip[name].setdefault(out, []).append(relative_error(a[i], e[i]))
                    if out in MEAN_FEATURES:
                        per_clip[name].setdefault(f"{out}:mean", []).append(mean_error(a[i], e[i]))
    return {name: {out: {"max": max(v), "median": statistics.median(v)} for out, v in outs.items()}
            for name, outs in per_clip.items()}


def ort_bf16_probe() -> dict[str, str]:
    """What ONNX Runtime's CPU provider says to one-node bfloat16 graphs ("runs" where it runs them):
    MatMul (bf16 in ONNX since opset 13) and Conv (bf16 in ONNX from opset 22)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    cases = {"MatMul (opset 17)": ("MatMul", [1, 64], [64, 2], 17), "Conv (opset 22)": ("Conv", [1, 1, 64], [2, 1, 4], 22)}
    out = {}
    for label, (op, x_shape, w_shape, opset) in cases.items():
        x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, x_shape)
        y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)
        w = helper.make_tensor("w", TensorProto.BFLOAT16, w_shape, [0] * int(np.prod(w_shape)))
        graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], "bf16", [x], [y], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            out[label] = "runs"
        except Exception as exc:  # the answer sought: ORT's own message, recorded in the results
            out[label] = f"{type(exc).__name__}: {str(exc).strip()[:240]}"
    return out


def speed_section(model: ModelInfo, folder: Path, rounds: int, error_clips: int) -> dict:
    """Speed and feature error of float32, every int8 mode and PyTorch float32/bfloat16."""
    corpus = load_corpus()
    paths = build_models(model, folder)
    timing_clips = corpus.subset(BATCH * 10).paths[:BATCH]
    batch = np.stack(model_inputs(timing_clips, InputKind.TILED_25S))
    sessions = {**ort_sessions(paths), **torch_sessions()}
    times = time_modes(sessions, batch, rounds)
    clips = corpus.subset(error_clips).paths
    waves = model_inputs(clips, InputKind.TILED_25S)
    batches = [np.stack(waves[i:i + BATCH]) for i in range(0, len(waves), BATCH)]
    errors = feature_errors({k: v for k, v in sessions.items() if not k.startswith("torch")}, FP32, batches)
    errors.update(feature_errors({k: v for k, v in sessions.items() if k.startswith("torch")}, "torch-fp32", batches))
    return {
        "fp32_graph": paths[FP32].stem if paths[FP32] != model.path else "plain",
        "calibration": {"source": "ESC-50 fold 1, first clip of each of the first classes",
                        "clips": [Path(p).name for p in esc50_calibration_paths()]},
        "modes": {name: {"file": str(paths.get(name, "")), "options": int8_modes()[name][1].to_dict()
                         if name in int8_modes() else None} for name in sessions},
        "timing": {"batch": BATCH, "threads": THREADS, "samples": int(batch.shape[1]), "rounds": rounds,
                   "clips": [Path(p).name for p in timing_clips],
                   "seconds": {k: sorted(v) for k, v in times.items()},
                   "ms_per_clip": {k: 1000 * statistics.median(v) / BATCH for k, v in times.items()}},
        "errors": {"clips": len(clips), "reference": {"onnx": FP32, "torch": "torch-fp32"}, "by_mode": errors},
        "ort_bf16": ort_bf16_probe(),
    }


def esc50_accuracy(model_path: Path | None, workdir: Path, graph: GraphVariant, n_jobs: int) -> dict:
    """Extract ESC-50's pool5/conv6 means with ``model_path`` (None: the engine's model and choice)
    and cross-validate each with the study's nested protocol."""
    from soundnet8.analysis.svm_run import SvmOptions, run_svm
    from soundnet8.engine.inputs import read_manifest
    from soundnet8.engine.modelfile import model_info
    from soundnet8.engine.pipeline import ExtractOptions, extract
    from soundnet8.engine.progress import ProgressMode, ProgressOptions
    from soundnet8.engine.request import Request

    model = ensure_model() if model_path is None else model_info(model_path)
    inputs = read_manifest(SHARED_ESC50 / "meta" / "esc50.csv", SHARED_ESC50 / "audio_16k")
    store = workdir / f"{model.path.stem}-{graph.value}.h5"
    options = ExtractOptions(request=Request(layers=ACCURACY_FEATURES), graph=graph,
                             progress=ProgressOptions(ProgressMode.NONE))
    chosen = choose_graph(model, SessionConfig(Provider.CPU, intra_op_threads=options.intra_op_threads), graph)
    summary = extract(inputs, store, model, options, overwrite=True)
    out = {"graph": chosen.variant.value, "extract_seconds": summary.seconds, "clips": summary.processed,
           "failed": summary.failed}
    for layer in ACCURACY_FEATURES:
        run = run_svm(store, options=SvmOptions(layer=layer, pool="mean", n_jobs=n_jobs))
        r = run.result
        out[f"{layer}:mean"] = {"nested_accuracy": r.mean_accuracy, "fold_accuracy": list(r.fold_accuracy),
                                "fold_C": list(r.fold_C), "seconds": r.seconds}
    store.unlink()
    return out


def accuracy_section(model: ModelInfo, folder: Path, names: Sequence[str], n_jobs: int) -> dict:
    paths = build_models(model, folder, [n for n in names if n != FP32])
    out = {}
    for name in names:
        if name == FP32:
            out[name] = esc50_accuracy(None, folder, GraphVariant.AUTO, n_jobs)
        else:
            out[name] = esc50_accuracy(paths[name], folder, GraphVariant.PLAIN, n_jobs)
        print(f"{name}: " + ", ".join(f"{k} {100 * v['nested_accuracy']:.2f}%" for k, v in out[name].items()
                                      if isinstance(v, dict)), flush=True)
    return out


# --- results ---------------------------------------------------------------------------------------

MAX_COST_POINTS = 0.5
"""A mode is worth an option only if it is faster and loses at most this many accuracy points on
both pool5 and conv6 mean features."""


def verdicts(results: Mapping) -> dict[str, dict]:
    """For each mode with accuracy figures: speedup vs fp32, accuracy deltas, and whether it qualifies."""
    speed = results.get("speed", {}).get("timing", {}).get("ms_per_clip", {})
    acc = results.get("accuracy", {})
    base = acc.get(FP32)
    out = {}
    for name, figures in acc.items():
        if name == FP32 or base is None:
            continue
        deltas = {f"{layer}:mean": 100 * (figures[f"{layer}:mean"]["nested_accuracy"]
                                          - base[f"{layer}:mean"]["nested_accuracy"]) for layer in ACCURACY_FEATURES}
        speedup = speed[FP32] / speed[name] if name in speed and FP32 in speed else None
        ok = speedup is not None and speedup > 1 and all(d >= -MAX_COST_POINTS for d in deltas.values())
        out[name] = {"speedup": speedup, "delta_points": deltas, "qualifies": ok}
    return out


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _error_cells(errors: Mapping | None, outputs: Sequence[str]) -> list[str]:
    if not errors:
        return ["" for _ in outputs]
    return [f"{errors[o]['max']:.3g} / {errors[o]['median']:.3g}" if o in errors else "" for o in outputs]


def markdown(results: Mapping) -> str:
    speed = results.get("speed", {})
    timing = speed.get("timing", {})
    ms = timing.get("ms_per_clip", {})
    errors = speed.get("errors", {}).get("by_mode", {})
    acc = results.get("accuracy", {})
    judged = verdicts(results)
    shown = ("pool1", "conv4", "pool5", "conv6", "pool5:mean", "conv6:mean", "objects")
    lines = [f"# Reduced precision on {results['machine']['name']}", "",
             f"CPU: {results['machine']['cpu_model']}, {results['machine']['cores']} cores, "
             f"ISA: {' '.join(results['machine']['isa'])}; onnxruntime {results['machine']['versions'].get('onnxruntime')}, "
             f"torch {results['machine']['versions'].get('torch')}.", ""]
    if timing:
        lines += [f"Speed: model only, {timing['threads']} intra-op thread, batches of {timing['batch']} ESC-50 clips "
                  f"tiled to 25 s ({timing['samples']:,} samples), {timing['rounds']} interleaved rounds, median, under "
                  f"`flock /tmp/bench.lock`. `fp32` is the graph the engine chooses here ({speed['fp32_graph']}). "
                  f"Errors: max / median over {speed['errors']['clips']} ESC-50 clips of max|a-e|/max|e| per clip "
                  "(`:mean`: ||mean a - mean e|| / ||mean e|| of the clip's time-averaged features), against `fp32` "
                  "(PyTorch modes against PyTorch float32). Accuracy: ESC-50 extracted through the engine's `extract` "
                  "(fp32 with the graph it chose then, int8 files run as they are; `graph` per mode in the JSON), "
                  "then `analysis.svm_run.run_svm` (nested C choice) on the 5 official folds.", ""]
    header = ["mode", "ms/clip", "x vs fp32", *[f"err {o}" for o in shown], "pool5 mean acc (Δ)", "conv6 mean acc (Δ)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys([*ms, *acc]):
        row = [f"`{name}`", _cell(ms.get(name), ".1f"),
               _cell(ms[FP32] / ms[name] if name in ms and FP32 in ms and not name.startswith("torch") else None, ".2f"),
               *_error_cells(errors.get(name), shown)]
        for layer in ACCURACY_FEATURES:
            figure = acc.get(name, {}).get(f"{layer}:mean")
            delta = judged.get(name, {}).get("delta_points", {}).get(f"{layer}:mean")
            row.append("" if figure is None else f"{100 * figure['nested_accuracy']:.2f}%"
                       + ("" if delta is None else f" ({delta:+.2f})"))
        lines.append("| " + " | ".join(row) + " |")
    probe = speed.get("ort_bf16", {})
    lines += ["", "ONNX Runtime's CPU provider on one-node bfloat16 graphs:", ""]
    lines += [f"* {op}: {answer}" for op, answer in (probe.items() if isinstance(probe, dict) else [("Conv", probe)])]
    lines.append("")
    if judged:
        good = [k for k, v in judged.items() if v["qualifies"]]
        lines += [f"Qualifying modes (faster than fp32 and ≤ {MAX_COST_POINTS} points lost on both pool5 and conv6 "
                  f"means, nested CV over the 5 official folds): {', '.join(good) if good else 'none'}.", ""]
    return "\n".join(lines + findings(results))


def findings(results: Mapping) -> list[str]:
    """What the figures mean, in words that hold whatever they are (the numbers come from ``results``)."""
    ms = results.get("speed", {}).get("timing", {}).get("ms_per_clip", {})
    lines = ["## Reading", ""]
    if "torch-bf16" in ms and FP32 in ms:
        lines += [f"* bfloat16: ONNX Runtime cannot run it on the CPU (above), and the engine never imports torch, so "
                  f"a bf16 option has no runtime to use. PyTorch's bf16 ({ms['torch-bf16']:.1f} ms/clip) is "
                  f"{ms['torch-fp32'] / ms['torch-bf16']:.2f}x PyTorch float32 but {ms[FP32] / ms['torch-bf16']:.2f}x "
                  f"the engine's float32 graph ({ms[FP32]:.1f} ms/clip): slower than what the engine already does."]
    lines += ["* int8 activations: SoundNet has no normalisation, so every activation scales with the clip's loudness, "
              "and ESC-50's clips span tens of dB. One static scale per tensor, calibrated on a few clips, leaves quiet "
              "clips' features a handful of 8-bit levels (their errors are the maxima above, ~100%) while loud clips fare "
              "well (the medians). Dynamic quantization rescales per call but per batch and per whole tensor, and "
              "ConvInteger has no fast kernel here.",
              "* uint8 activations (with int8 weights) take ONNX Runtime's VNNI u8s8 kernels and let the quantizer fold "
              "each Relu into its Conv (asymmetric ranges >= 0); int8 activations are symmetric, keep the Relu and its "
              "extra QDQ pair, and measure far slower. ONNX Runtime's quantizer docstring recommends the same for VNNI "
              "CPUs (onnxruntime/quantization/quantize.py, 'Choosing parameters for CPU inference').",
              "* Calibration clips: ESC-50 fold 1 (no labels used; ranges only). Fold 1 is also a test fold of the "
              "nested CV, so the calibration saw (unlabelled) audio of one test fold: a leak in principle, too small to "
              "matter beside the costs measured.", ""]
    judged = results.get("verdicts", {})
    if judged:
        good = [k for k, v in judged.items() if v["qualifies"]]
        lines += ["## Verdict", "",
                  (f"Ship `--precision` for: {', '.join(good)}." if good else
                   "No `--precision` option: no reduced-precision mode is both faster than the engine's float32 graph "
                   f"and within {MAX_COST_POINTS} accuracy points on both pool5 and conv6 means."), ""]
    return lines


def write_results(section: str, payload: dict, folder: Path = RESULTS_DIR) -> Path:
    """Merge ``payload`` as ``section`` into ``<machine>.json`` and rewrite ``<machine>.md``."""
    machine = collect()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{machine.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = machine.to_dict()
    # accuracy is run a few modes at a time: merge the modes, keep the others measured earlier
    results[section] = {**results.get(section, {}), **payload} if section == "accuracy" else payload
    if section == "accuracy":
        results["verdicts"] = verdicts(results)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundnet8.benchmarks.precision", description=__doc__.split("\n")[0])
    parser.add_argument("section", choices=("speed", "accuracy"))
    parser.add_argument("--modes", default=FP32, help="accuracy: comma-separated modes (fp32 and int8 names)")
    parser.add_argument("--rounds", type=int, default=9, help="speed: timed rounds (default %(default)s)")
    parser.add_argument("--error-clips", type=int, default=ERROR_CLIPS)
    parser.add_argument("--workdir", type=Path, help="where the quantized files and stores go (default: a temp dir)")
    parser.add_argument("--n-jobs", type=int, default=2, help="accuracy: SVM fits in parallel")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    model = ensure_model()
    with tempfile.TemporaryDirectory(prefix="soundnet8-precision-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.section == "speed":
            payload = speed_section(model, folder, args.rounds, args.error_clips)
        else:
            payload = accuracy_section(model, folder, [m.strip() for m in args.modes.split(",") if m.strip()], args.n_jobs)
    print(f"written: {write_results(args.section, payload, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
