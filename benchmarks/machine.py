"""What machine a run was made on: CPU model and cores, GPU, library versions, relevant environment.

Read from /proc/cpuinfo, /proc/meminfo and ``nvidia-smi`` (when present) so that no extra package
is needed.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
"""CPU features that decide which kernels ONNX Runtime, OpenBLAS and PyTorch pick."""

ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")

PACKAGES = ("onnxruntime", "onnxruntime-gpu", "torch", "numpy", "soxr", "soundfile", "h5py", "onnx", "soundnet8")


@dataclass(frozen=True)
class MachineInfo:
    name: str
    cpu_model: str
    cores: int  # usable by this process (affinity)
    logical_cpus: int
    isa: tuple[str, ...]
    memory_gib: float
    gpu: str  # "none" or nvidia-smi's name(s) and memory
    ort_providers: tuple[str, ...]
    versions: dict[str, str]
    python: str
    platform: str
    env: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key and key not in fields:
                    fields[key] = value.strip()
    except OSError:  # not Linux: fall back to platform below
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or "unknown-cpu"


def isa_flags() -> tuple[str, ...]:
    flags = set(_cpuinfo().get("flags", "").split())
    return tuple(f for f in ISA_FLAGS if f in flags)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def gpu_description() -> str:
    """nvidia-smi's GPU names and memory, or 'none'."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"none (nvidia-smi failed: {proc.stderr.strip()[:200] or 'no output'})"
    return "; ".join(line.strip() for line in proc.stdout.splitlines() if line.strip())


def short_cpu_name(model: str) -> str:
    """'Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz' -> 'intel-xeon-platinum-8480'."""
    text = re.sub(r"\((r|tm|R|TM)\)", " ", model)
    text = re.sub(r"@.*$", " ", text)
    text = re.sub(r"\b(cpu|processor|\d+-core)\b", " ", text, flags=re.IGNORECASE)
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words[:4]) or "unknown"


def short_gpu_name(gpu: str) -> str | None:
    if gpu.startswith("none"):
        return None
    first = gpu.split(";")[0].split(",")[0]
    words = [w for w in re.findall(r"[a-z0-9]+", first.lower()) if w not in ("nvidia", "tesla")]
    return "-".join(words[:3]) or "gpu"


def machine_name(cores: int, cpu: str, gpu: str) -> str:
    """``cpu2-intel-xeon``; with a GPU ``h100-80gb-hbm3-cpu16-...``: directory-safe and stable."""
    name = f"cpu{cores}-{short_cpu_name(cpu)}"
    gpu_short = short_gpu_name(gpu)
    return f"{gpu_short}-{name}" if gpu_short else name


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def collect(name: str | None = None) -> MachineInfo:
    import onnxruntime

    cpu = cpu_model()
    cores = usable_cores()
    gpu = gpu_description()
    return MachineInfo(
        name=name or machine_name(cores, cpu, gpu), cpu_model=cpu, cores=cores, logical_cpus=os.cpu_count() or cores,
        isa=isa_flags(), memory_gib=memory_gib(), gpu=gpu,
        ort_providers=tuple(onnxruntime.get_available_providers()), versions=package_versions(),
        python=platform.python_version(), platform=platform.platform(),
        env={k: os.environ[k] for k in ENV_VARS if k in os.environ},
    )
