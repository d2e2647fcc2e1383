#!/usr/bin/env bash
# GPU check: install onnxruntime-gpu from local wheels into a venv, check CUDA parity with the CPU and
# measure model-only and end-to-end throughput in under 8 minutes; results in benchmarks/results/gpu-<machine>/.
#
#   benchmarks/gpu_check.sh [WHEELS_DIR] [--budget S] [--out DIR] [--model FILE] [--esc50 DIR] ...
#
# WHEELS_DIR (default $SOUNDNET8_WHEELS) holds onnxruntime_gpu-*.whl and its nvidia-* CUDA/cuDNN wheels.
# Runs with the project's Python ($SOUNDNET8_PYTHON, else .venv/bin/python, else python3), whose
# packages the new venv reuses. Everything is in soundnet8.benchmarks.gpu_check (see its docstring).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${SOUNDNET8_PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
cd "$root"
exec "$python" -m soundnet8.benchmarks.gpu_check "$@"
