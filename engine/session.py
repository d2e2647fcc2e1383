"""The one place ONNX Runtime sessions are made.

Providers come from a closed set (auto/cpu/cuda). Threads are set deliberately: on small CPUs one
intra-op thread per worker process measures faster than one session spreading over every core,
so the caller passes the layout it wants and nothing is left to ONNX Runtime's defaults.
"""

from __future__ import annotations

import enum
import os
import warnings
from dataclasses import dataclass

from .errors import ModelError

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class Provider(enum.Enum):
    AUTO = "auto"  # CUDA when onnxruntime-gpu sees a GPU, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class GraphOptimization(enum.Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"

    def ort_level(self):
        import onnxruntime as ort

        return {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.value]


@dataclass(frozen=True)
class SessionConfig:
    """Everything a session is made from. The last three fields let benchmarks override one ONNX Runtime
    option at a time on top of the engine's settings; None keeps the engine's choice."""

    provider: Provider = Provider.AUTO
    intra_op_threads: int = 1
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    cuda_device: int = 0
    # cuDNN's exhaustive search pays off only when shapes repeat, which length bucketing ensures.
    cudnn_search: str = "EXHAUSTIVE"
    # cuDNN runs a 1-D convolution as 2-D: as N,C,1,D (on) or N,C,D,1 (off, ORT's default); None: the default.
    cudnn_conv1d_pad_to_nc1d: bool | None = None
    allow_spinning: bool | None = None  # None: off whenever the session has pool threads (see below)
    cpu_arena: bool | None = None  # None: ONNX Runtime's default (on)
    mem_pattern: bool | None = None  # None: ONNX Runtime's default (on)

    def spinning(self) -> bool | None:
        """The allow_spinning entry to set, or None to leave ONNX Runtime's default."""
        if self.allow_spinning is not None:
            return self.allow_spinning
        # Spinning idle threads steal the core a decoding worker needs: 1.17x measured (benchmarks/).
        return False if self.intra_op_threads != 1 else None


class CudaFallbackWarning(RuntimeWarning):
    """CUDA was asked for (or auto-selected) but the session runs on the CPU."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_provider(provider: Provider) -> Provider:
    """AUTO -> CUDA when onnxruntime-gpu is installed with its CUDA provider, else CPU."""
    available = available_providers()
    if provider is Provider.AUTO:
        return Provider.CUDA if CUDA_PROVIDER in available else Provider.CPU
    if provider is Provider.CUDA and CUDA_PROVIDER not in available:
        raise ModelError(
            f"provider 'cuda' is not available in this onnxruntime (available: {', '.join(available)}); "
            "install onnxruntime-gpu instead of onnxruntime (pip uninstall onnxruntime && pip install 'soundnet8[gpu]')"
        )
    return provider


def create_session(model_path: str | os.PathLike, config: SessionConfig = SessionConfig()):
    """An InferenceSession on the resolved provider, warning if CUDA silently fell back to CPU."""
    import onnxruntime as ort

    provider = resolve_provider(config.provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1  # the graph is a chain: no parallel branches to schedule
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = config.graph_optimization.ort_level()
    options.log_severity_level = 3  # ORT's own warnings go through our messages instead
    spinning = config.spinning()
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if config.cpu_arena is not None:
        options.enable_cpu_mem_arena = config.cpu_arena
    if config.mem_pattern is not None:
        options.enable_mem_pattern = config.mem_pattern
    if provider is Provider.CUDA:
        cuda_options = {"device_id": config.cuda_device, "cudnn_conv_algo_search": config.cudnn_search}
        if config.cudnn_conv1d_pad_to_nc1d is not None:
            cuda_options["cudnn_conv1d_pad_to_nc1d"] = "1" if config.cudnn_conv1d_pad_to_nc1d else "0"
        providers = [(CUDA_PROVIDER, cuda_options), CPU_PROVIDER]
    else:
        providers = [CPU_PROVIDER]
    try:
        session = ort.InferenceSession(str(model_path), options, providers=providers)
    except Exception as exc:
        raise ModelError(f"{model_path}: ONNX Runtime cannot load the model ({exc})") from exc
    if provider is Provider.CUDA and CUDA_PROVIDER not in session.get_providers():
        warnings.warn(
            "CUDA was requested but ONNX Runtime fell back to the CPU (CUDA/cuDNN libraries missing or "
            "no device); check `nvidia-smi` and onnxruntime-gpu's CUDA requirements",
            CudaFallbackWarning, stacklevel=2,
        )
    return session


def session_provider(session) -> Provider:
    """The provider a session actually runs on (CUDA may have fallen back to the CPU)."""
    return Provider.CUDA if session.get_providers()[0] == CUDA_PROVIDER else Provider.CPU
