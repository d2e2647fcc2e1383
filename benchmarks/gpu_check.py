"""The GPU check: on a machine with an NVIDIA GPU and no network, install onnxruntime-gpu from local
wheels into a venv, check CUDA parity with the CPU, and measure, all within a time budget.

    benchmarks/gpu_check.sh [WHEELS_DIR]          (or $SOUNDNET8_WHEELS)

Stages (``--stage``): ``install`` makes the venv (``python -m venv --without-pip``; this interpreter's
pip installs every wheel of the folder into it with ``--no-index --no-deps``, and a ``.pth`` file
adds this interpreter's site-packages after the venv's own, so numpy, h5py and soundnet8 itself come
from the project's environment while ``onnxruntime`` is the GPU build); ``measure`` runs
:mod:`.gpu_measure` inside the venv; ``all`` (default) does both, re-running this module with the
venv's Python and the NVIDIA wheels' library folders on ``LD_LIBRARY_PATH``.

The budget (default 450 s, under 8 minutes) counts from the start, installation included; the
measure stage gets the deadline, not a duration, so whatever the install took is already spent.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from soundnet8.engine.errors import SoundNetError
from soundnet8.engine.modelfile import cache_root

WHEELS_ENV_VAR = "SOUNDNET8_WHEELS"
DEFAULT_BUDGET_S = 450.0
"""Seconds for the whole check, installation included: under the 8 minutes asked for."""

ORT_GPU = "onnxruntime_gpu"
BRIDGE_PTH = "soundnet8_project_env.pth"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_WHEEL_NAME = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$"
)


class GpuCheckError(SoundNetError):
    """The GPU check cannot go on: missing wheels, a failed install, no CUDA provider, parity failed."""


# --- wheels -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # normalised: lower case, '-' and '.' as '_'
    version: str
    python: tuple[str, ...]  # e.g. ("cp311",) or ("py3",)
    abi: str
    platform: str

    def version_key(self) -> tuple:
        return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.+]", self.version))


def parse_wheel(path: str | Path) -> Wheel | None:
    """The parts of a wheel's file name (PEP 427), or None if it is not one."""
    path = Path(path)
    match = _WHEEL_NAME.match(path.name)
    if not match:
        return None
    name = re.sub(r"[-_.]+", "_", match["name"]).lower()
    return Wheel(path, name, match["version"], tuple(match["python"].split(".")), match["abi"], match["platform"])


def compatible(wheel: Wheel, python: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Whether this Python can install ``wheel`` (by its python tag; platforms are left to pip)."""
    tags = {f"cp{python[0]}{python[1]}", f"py{python[0]}", f"py{python[0]}{python[1]}", "py2.py3"}
    return any(tag in tags for tag in wheel.python) or wheel.abi == "abi3"


@dataclass(frozen=True)
class WheelSet:
    onnxruntime_gpu: Wheel
    others: tuple[Wheel, ...]  # CUDA/cuDNN (nvidia-*) and anything else in the folder

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.onnxruntime_gpu.path, *(w.path for w in self.others))


def discover_wheels(folder: str | Path, python: tuple[int, int] = sys.version_info[:2]) -> WheelSet:
    """The wheels of ``folder`` this Python can install: the newest onnxruntime-gpu and every other
    wheel (one per name, the newest)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GpuCheckError(f"wheel folder {folder} does not exist")
    newest: dict[str, Wheel] = {}
    for path in sorted(folder.glob("*.whl")):
        wheel = parse_wheel(path)
        if wheel is None or not compatible(wheel, python):
            continue
        if wheel.name not in newest or wheel.version_key() > newest[wheel.name].version_key():
            newest[wheel.name] = wheel
    if ORT_GPU not in newest:
        tag = f"cp{python[0]}{python[1]}"
        raise GpuCheckError(f"{folder}: no onnxruntime_gpu-*.whl for this Python ({tag}); put the onnxruntime-gpu "
                            "wheel and its nvidia-* CUDA/cuDNN wheels there")
    return WheelSet(newest.pop(ORT_GPU), tuple(newest[k] for k in sorted(newest)))


def resolve_wheels_dir(arg: str | None, environ: dict[str, str] | None = None) -> Path:
    """The folder given on the command line, else ``$SOUNDNET8_WHEELS``."""
    environ = os.environ if environ is None else environ
    value = arg or environ.get(WHEELS_ENV_VAR)
    if not value:
        raise GpuCheckError(f"give the wheel folder as an argument or in ${WHEELS_ENV_VAR}")
    return Path(value)


# --- the budget ---------------------------------------------------------------------------------

@dataclass
class Budget:
    """A deadline on the wall clock (``time.time``, so it survives handing over to another process)."""

    deadline: float
    clock: object = field(default=time.time, repr=False)

    @classmethod
    def starting_now(cls, seconds: float, clock=time.time) -> Budget:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def allows(self, seconds: float, reserve: float = 0.0) -> bool:
        """Whether ``seconds`` more still leave ``reserve`` for what comes after."""
        return self.remaining() - reserve >= seconds

    def until(self, reserve: float) -> Budget:
        """A budget ending ``reserve`` seconds before this one (a section's share)."""
        return Budget(self.deadline - reserve, self.clock)


# --- the venv -----------------------------------------------------------------------------------

def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python*/site-packages"))
    if not found:
        raise GpuCheckError(f"{venv}: no lib/python*/site-packages (not a venv?)")
    return found[0]


def bridge_lines(paths: dict[str, str] | None = None) -> list[str]:
    """``.pth`` lines adding this interpreter's site-packages (with their own .pth files, e.g. the
    editable install of soundnet8) after the venv's: ``site.addsitedir`` appends, so the venv wins."""
    paths = paths or sysconfig.get_paths()
    dirs = dict.fromkeys([paths["purelib"], paths["platlib"]])
    return [f"import site; site.addsitedir({d!r})" for d in dirs]


def nvidia_library_dirs(site_packages: Path) -> list[Path]:
    """The lib/ folders of the nvidia-* wheels (libcudnn, libcublas...), for LD_LIBRARY_PATH."""
    return sorted(p for p in (site_packages / "nvidia").glob("*/lib") if p.is_dir())


def child_environment(venv: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    libs = [str(p) for p in nvidia_library_dirs(venv_site_packages(venv))]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1.0), env=env)
    except subprocess.TimeoutExpired:
        raise GpuCheckError(f"{what} did not finish within the time budget ({timeout:.0f} s)") from None
    if proc.returncode != 0:
        raise GpuCheckError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc.stdout


def install(venv: Path, wheels: tuple[Path, ...], budget: Budget) -> Path:
    """Make the venv at ``venv`` (reused if there) and install ``wheels`` into it, offline."""
    python = venv_python(venv)
    if not python.exists():
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the venv", budget.remaining())
    (venv_site_packages(venv) / BRIDGE_PTH).write_text("\n".join(bridge_lines()) + "\n")
    if wheels:
        _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps",
              "--disable-pip-version-check", "--no-input", *map(str, wheels)], "installing the wheels", budget.remaining())
    return python


def check_venv(venv: Path, budget: Budget) -> str:
    """The venv's onnxruntime must be its own (not the project's CPU build) and offer CUDA."""
    code = ("import onnxruntime as o, json; "
            "print(json.dumps([o.__file__, o.__version__, o.get_available_providers()]))")
    import json

    out = _run([str(venv_python(venv)), "-c", code], "importing onnxruntime in the venv", budget.remaining(),
               env=child_environment(venv))
    location, version, providers = json.loads(out.strip().splitlines()[-1])
    if not Path(location).resolve().is_relative_to(venv.resolve()):
        raise GpuCheckError(f"the venv imports onnxruntime from {location}, not from its own onnxruntime-gpu")
    if "CUDAExecutionProvider" not in providers:
        raise GpuCheckError(f"onnxruntime {version} in the venv offers no CUDAExecutionProvider ({providers})")
    return version


# --- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", nargs="?", help=f"folder of onnxruntime-gpu + nvidia-* wheels (default ${WHEELS_ENV_VAR})")
    parser.add_argument("--stage", choices=["all", "install", "measure"], default="all")
    parser.add_argument("--venv", type=Path, default=cache_root() / "gpu-venv", help="the venv to make (default %(default)s)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for everything (default %(default)s)")
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # set by the 'all' stage for 'measure'
    parser.add_argument("--out", type=Path, help=f"results folder (default {RESULTS_DIR}/gpu-<machine>)")
    parser.add_argument("--machine", help="machine name (default from nvidia-smi and /proc/cpuinfo)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the engine's cached export)")
    parser.add_argument("--esc50", type=Path, help="ESC-50 folder for the end-to-end run (default ../shared/esc50, "
                        "else the bundled clips)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="provider measured as the device (cpu: a dry run of every step on a machine without a GPU)")
    sizes = parser.add_argument_group("sizes (defaults: the full check)")
    sizes.add_argument("--batches", type=int_list, help="batch sizes, comma-separated (default 1,2,4,8,16,32,64)")
    sizes.add_argument("--lengths", type=int_list, help="input lengths in samples (default 551250,220500,110250)")
    sizes.add_argument("--min-time", type=float, help="seconds of timed runs per case (default 1)")
    sizes.add_argument("--e2e-clips", type=int, help="clips of the end-to-end run (default 2000)")
    return parser


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: '1,2,4' -> (1, 2, 4), every value >= 1."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1: {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.budget <= 0:
        raise GpuCheckError("--budget must be > 0 seconds")
    return args


def measure_argv(args: argparse.Namespace, deadline: float) -> list[str]:
    """The arguments of the measure stage that the 'all' stage runs in the venv."""
    argv = ["--stage", "measure", "--deadline", repr(deadline), "--device", args.device]
    for key in ("out", "machine", "model", "esc50", "batches", "lengths", "min_time", "e2e_clips"):
        value = getattr(args, key)
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    budget = Budget(args.deadline) if args.deadline else Budget.starting_now(args.budget)
    if args.stage == "measure":
        from .gpu_measure import MeasureOptions, run_check

        done = run_check(MeasureOptions.from_args(args), budget)
        print(f"gpu check: results in {done.folder} ({'parity ok' if done.parity_ok else 'PARITY FAILED'})")
        return 0 if done.parity_ok else 1
    wheels = discover_wheels(resolve_wheels_dir(args.wheels))
    started = time.time()
    install(args.venv, wheels.paths, budget)
    version = check_venv(args.venv, budget) if args.device == "cuda" else "not checked (--device cpu)"
    print(f"gpu check: onnxruntime-gpu {version} in {args.venv} ({time.time() - started:.0f} s)", flush=True)
    if args.stage == "install":
        return 0
    cmd = [str(venv_python(args.venv)), "-m", __name__, *measure_argv(args, budget.deadline)]
    try:  # the measure stage keeps its own deadline; the grace covers writing the report after a late step
        return subprocess.run(cmd, env=child_environment(args.venv), timeout=budget.remaining() + 120).returncode
    except subprocess.TimeoutExpired:
        raise GpuCheckError("the measure stage overran its deadline by more than 2 minutes") from None


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except SoundNetError as exc:
        print(f"gpu check: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
