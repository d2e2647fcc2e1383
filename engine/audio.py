"""SoundNet's input contract: from an audio file to the waveform the model reads.

SoundNet8 was trained on raw 22,050 Hz mono waveforms in [-256, 256]. :func:`load` turns any file
libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...) into that input, in this order:

1. decode to float32 samples in [-1, 1], shape (frames, channels) (:func:`decode`);
2. keep the first channel (:attr:`Mix.FIRST`, the original loader) or average them (:attr:`Mix.MEAN`);
3. resample to 22,050 Hz with soxr 'HQ' (:attr:`SampleRateMode.RESAMPLE`), or feed the file's own
   samples unchanged (:attr:`SampleRateMode.NATIVE`: what the seed notebook did with
   ``librosa.load(sr=None)``, which reproduces its published features on 44.1 kHz ESC-50);
4. multiply by :data:`~soundnet8.engine.arch.INPUT_SCALE` (256) and clip to [-256, 256];
5. when shorter than ``min_samples`` (20 s worth of 22,050 Hz samples by default, counted in samples
   whatever the file's rate, as the seed did), tile it with the seed's exact expression
   ``np.tile(x, int(L / len(x) + 1))``. Nothing is ever truncated; ``min_seconds=0`` disables tiling.

Every problem with a file (missing, unreadable, not audio, empty, truncated, NaN/Inf samples, too
short to resample) is an :class:`~soundnet8.engine.errors.AudioError` naming the file and the reason.

:func:`iter_blocks` streams steps 1-4 in fixed-size blocks for files too long to hold in memory;
its concatenation equals :func:`prepare` before tiling (soxr's streaming and one-shot paths give
bit-identical output). Long files are never tiled, so the stream does not tile.
"""

from __future__ import annotations

import enum
import math
import numbers
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from .arch import INPUT_SCALE, SAMPLE_RATE
from .errors import AudioError, SoundNetError

RESAMPLE_QUALITY = "HQ"
"""soxr quality preset: 'HQ' is soxr's default, 20-bit precision, far below the model's sensitivity."""

DEFAULT_MIN_SECONDS = 20.0
"""The seed's and the original loader's minimum input length (441,000 samples at 22,050 Hz)."""

MPEG_FRAME_ESTIMATE_SLACK = 0.02
"""For MP3, libsndfile's frame count is an estimate (libsndfile issues #1001, #1086 show valid files
decoding ~0.5 % short), so a shortfall counts as truncation only beyond this fraction."""

_SIZE_PLACEHOLDER_MIN = 0x7FFF_F000
"""Chunk sizes at or above this are 'unknown length' placeholders of streamed WAV/AIFF writers."""

_SHOULD_BE = re.compile(r"^\s*([A-Za-z][\w ]*?)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
"""libsndfile logs a header size it had to correct as 'data : 192000 (should be 95978)'."""

_PREPARE_ARRAY = "<array>"
"""The 'path' AudioError names when prepare() is given an array rather than a file."""


class Problem(enum.Enum):
    """What is wrong with a file: every :class:`AudioError` reason (an /errors row) begins with one."""

    MISSING = "missing"
    NOT_A_FILE = "not a file"
    UNREADABLE = "unreadable"
    EMPTY = "empty"
    NOT_AUDIO = "not audio"
    TRUNCATED = "truncated"
    NON_FINITE = "non-finite"
    TOO_SHORT = "too short"


def _bad(path: str | Path, problem: Problem, detail: str) -> AudioError:
    """An AudioError whose reason begins with ``problem`` (not repeated when ``detail`` begins with it)."""
    word = problem.value
    return AudioError(path, detail if detail.startswith(word) else f"{word}: {detail}")


class SampleRateMode(enum.Enum):
    """How the file's sample rate is brought to the model's."""

    RESAMPLE = "resample"  # soxr HQ to 22,050 Hz: the rate SoundNet was trained at
    NATIVE = "native"  # the file's samples as they are (the seed notebook; wrong unless 22,050 Hz)


class Mix(enum.Enum):
    """How a multi-channel file becomes one channel."""

    FIRST = "first"  # the original SoundNet loader
    MEAN = "mean"


@dataclass(frozen=True)
class Preprocessing:
    """Everything that decides the model input for a given file (stored with the features)."""

    sample_rate_mode: SampleRateMode = SampleRateMode.RESAMPLE
    mix: Mix = Mix.FIRST
    min_seconds: float = DEFAULT_MIN_SECONDS

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate_mode, SampleRateMode):
            raise SoundNetError(
                f"preprocessing: sample_rate_mode must be a SampleRateMode, got {self.sample_rate_mode!r}"
            )
        if not isinstance(self.mix, Mix):
            raise SoundNetError(f"preprocessing: mix must be a Mix, got {self.mix!r}")
        seconds = self.min_seconds
        # numbers.Real admits numpy scalars (what a store's attributes read back as); bool is not a length
        is_number = isinstance(seconds, numbers.Real) and not isinstance(seconds, (bool, np.bool_))
        if not is_number or not math.isfinite(seconds) or seconds < 0:
            raise SoundNetError(f"preprocessing: min_seconds must be a finite number >= 0, got {seconds!r}")
        object.__setattr__(self, "min_seconds", float(seconds))

    @property
    def min_samples(self) -> int:
        """Tiling target L in samples (22,050 per second whatever the file's rate, as the seed)."""
        return int(round(self.min_seconds * SAMPLE_RATE))

    def to_dict(self) -> dict[str, str | float]:
        """JSON-able form, for store attributes."""
        return {
            "sample_rate_mode": self.sample_rate_mode.value,
            "mix": self.mix.value,
            "min_seconds": float(self.min_seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; every key is required and no other is accepted."""
        expected = {"sample_rate_mode", "mix", "min_seconds"}
        keys = set(data)
        if keys != expected:
            raise SoundNetError(
                f"preprocessing settings: expected keys {sorted(expected)}, got {sorted(keys)}"
            )
        try:
            mode = SampleRateMode(data["sample_rate_mode"])
            mix = Mix(data["mix"])
        except ValueError as exc:
            raise SoundNetError(f"preprocessing settings: {exc}") from exc
        return cls(sample_rate_mode=mode, mix=mix, min_seconds=data["min_seconds"])


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field-wise is ambiguous
class Clip:
    """One file turned into a model input."""

    path: str
    waveform: np.ndarray  # float32 (n,), model input: 22,050 Hz (unless NATIVE), x256, clipped, tiled
    duration: float  # seconds of the original audio (frames / native_rate)
    native_rate: int  # the file's sample rate (Hz)


class AudioInfo(NamedTuple):
    """Header facts of a file (a tuple, so ``frames, rate, channels, duration = info(p)`` works)."""

    frames: int
    rate: int
    channels: int
    duration: float  # seconds


# --------------------------------------------------------------------------------------------
# decoding


def _open(path: str | Path) -> sf.SoundFile:
    """Open ``path`` for reading after the checks that need no decoding; the caller closes it."""
    _check_regular(path)
    try:
        # A plain open first, so a missing file or a permission problem gets the OS's own words
        # instead of libsndfile's generic "System error".
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise _bad(path, Problem.MISSING, "file not found") from None
    except OSError as exc:
        raise _bad(path, Problem.UNREADABLE, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise _bad(path, Problem.EMPTY, "empty file (0 bytes)")
    try:
        f = sf.SoundFile(path)
    except sf.LibsndfileError as exc:
        raise _bad(path, Problem.NOT_AUDIO, f"unsupported or corrupt audio: {exc.error_string}") from exc
    except sf.SoundFileError as exc:
        raise _bad(path, Problem.NOT_AUDIO, f"unsupported or corrupt audio: {exc}") from exc
    try:
        if f.channels < 1:
            raise _bad(path, Problem.NOT_AUDIO, f"no audio channels (header says {f.channels})")
        if f.samplerate < 1:
            raise _bad(path, Problem.NOT_AUDIO, f"invalid sample rate {f.samplerate} Hz")
        if f.frames == 0 and f.format == "OGG":  # a cut Ogg file loses the last page, which gives the length
            raise _bad(path, Problem.TRUNCATED, "truncated or empty Ogg stream: no samples can be decoded")
        if f.frames == 0:
            raise _bad(path, Problem.EMPTY, "empty audio (0 samples)")
        _check_header_sizes(path, f)
    except BaseException:
        f.close()
        raise
    return f


def _check_regular(path: str | Path) -> None:
    """Refuse what is not a regular file before opening it (opening a FIFO would block)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise _bad(path, Problem.MISSING, f"dangling symbolic link to {os.readlink(path)}") from None
        raise _bad(path, Problem.MISSING, "file not found") from None
    except OSError as exc:
        raise _bad(path, Problem.UNREADABLE, f"cannot read file: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise _bad(path, Problem.NOT_A_FILE, "is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise _bad(path, Problem.NOT_A_FILE, "not a regular file (a FIFO, socket or device)")


def _check_header_sizes(path: str | Path, f: sf.SoundFile) -> None:
    # libsndfile silently shortens WAV/AIFF/AU/W64/RF64 files cut short to what is there, and only
    # says so in its log ("data : 192000 (should be 95978)"): a declared size larger than the file
    # holds means bytes are missing. Smaller declared sizes (trailing junk) are harmless.
    for chunk, declared, actual in _SHOULD_BE.findall(f.extra_info):
        declared_n, actual_n = int(declared), int(actual)
        placeholder = declared_n == 0 or declared_n >= _SIZE_PLACEHOLDER_MIN
        # +1: a missing pad byte after an odd-sized chunk is a common, harmless writer bug.
        if not placeholder and declared_n > actual_n + 1:
            raise AudioError(
                path,
                f"truncated file: the header declares {declared_n} bytes for '{chunk}' "
                f"but the file holds {actual_n}",
            )


def _read_blocks(path: str | Path, f: sf.SoundFile, block_frames: int) -> Iterator[np.ndarray]:
    """Yield float32 (frames, channels) blocks of ``f`` until its end, checking every sample is
    finite and that as many frames were decoded as the header promised."""
    expected = f.frames
    done = 0
    while True:
        try:
            block = f.read(block_frames, dtype="float32", always_2d=True)
        except sf.LibsndfileError as exc:
            raise AudioError(
                path,
                f"truncated or corrupt audio (decoding failed after {done} of {expected} frames "
                f"were returned): {exc.error_string}",
            ) from exc
        if len(block) == 0:
            break
        finite = np.isfinite(block)
        if not finite.all():
            bad = np.flatnonzero(~finite.all(axis=1))
            count = int(np.count_nonzero(~finite))
            first = done + int(bad[0])
            raise _bad(
                path,
                Problem.NON_FINITE,
                f"{count} NaN/Inf samples, the first at frame {first} "
                f"({first / f.samplerate:.4f} s)",
            )
        done += len(block)
        yield block
    _check_complete(path, f, done)


def _check_complete(path: str | Path, f: sf.SoundFile, done: int) -> None:
    expected = f.frames
    slack = MPEG_FRAME_ESTIMATE_SLACK if f.format == "MPEG" else 0.0
    if done < expected * (1.0 - slack):
        raise AudioError(
            path, f"truncated audio: decoded {done} frames, the header says {expected}"
        )
    if done == 0:  # an MPEG estimate can promise frames that are not there
        raise _bad(path, Problem.EMPTY, "empty audio (0 samples)")


def _decode_open(path: str | Path, f: sf.SoundFile) -> np.ndarray:
    blocks = list(_read_blocks(path, f, f.frames))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file: float32 samples of shape (frames, channels) and the file's rate (Hz)."""
    with _open(path) as f:
        return _decode_open(path, f), f.samplerate


def info(path: str | Path) -> AudioInfo:
    """Header facts of ``path`` without decoding it (same checks on opening as :func:`decode`)."""
    with _open(path) as f:
        return AudioInfo(f.frames, f.samplerate, f.channels, f.frames / f.samplerate)


# --------------------------------------------------------------------------------------------
# preparation


def _mono(samples: np.ndarray, mix: Mix) -> np.ndarray:
    if samples.ndim == 1:
        mono = samples
    elif mix is Mix.FIRST:
        mono = samples[:, 0]
    else:
        mono = samples.mean(axis=1, dtype=np.float64)  # float64: exact for 2 channels, then cast
    return np.ascontiguousarray(mono, dtype=np.float32)


def _resampled_length(frames: int, native_rate: int) -> int:
    # soxr's output length, in its own double arithmetic: frames / (in / out ratio) + 0.5, truncated.
    # Exact-integer rounding differs at halves (480 samples at 48 kHz: 220.5 -> soxr gives 220).
    return int(frames / (native_rate / SAMPLE_RATE) + 0.5)


def _too_short(frames: int, rate: int) -> str:
    return f"too short to resample: {frames} samples at {rate} Hz give none at {SAMPLE_RATE} Hz"


def _resamples(native_rate: int, options: Preprocessing) -> bool:
    return options.sample_rate_mode is SampleRateMode.RESAMPLE and native_rate != SAMPLE_RATE


def _scale_clip(x: np.ndarray, *, owned: bool = False) -> np.ndarray:
    """x * 256 clipped to [-256, 256]; in place when ``owned`` (``x`` is a fresh array of ours:
    a new array costs page faults, measured ~0.2 ms a clip)."""
    x = np.multiply(x, np.float32(INPUT_SCALE), out=x if owned else None)
    np.clip(x, -INPUT_SCALE, INPUT_SCALE, out=x)
    return x


def tile_count(n: int, min_samples: int) -> int:
    """How many copies of an ``n``-sample waveform the seed's tiling makes (1: not tiled).

    Literally the seed's ``int(L / n + 1)`` in float arithmetic, applied only when ``L > n``: an
    exact multiple gets one copy more than needed (5 s at 22,050 Hz -> 5 copies, 551,250 samples).
    """
    if n < 1:
        raise SoundNetError(f"cannot tile an empty waveform (n={n})")
    return int(min_samples / n + 1) if min_samples > n else 1


def model_length(frames: int, native_rate: int, options: Preprocessing = Preprocessing()) -> int:
    """Length of :func:`prepare`'s output for a file of ``frames`` at ``native_rate``, without
    decoding it (e.g. from :func:`info`, to size buffers or group files by length)."""
    n = _resampled_length(frames, native_rate) if _resamples(native_rate, options) else frames
    return n * tile_count(n, options.min_samples) if n > 0 else 0


def _prepare_untiled(
    samples: np.ndarray, native_rate: int, options: Preprocessing, path: str | Path
) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2) or samples.size == 0:
        raise AudioError(
            path, f"expected non-empty samples of shape (n,) or (n, channels), got {samples.shape}"
        )
    if int(native_rate) != native_rate or native_rate < 1:
        raise _bad(path, Problem.NOT_AUDIO, f"invalid sample rate {native_rate!r}")
    native_rate = int(native_rate)
    x = _mono(samples, options.mix)
    finite = np.isfinite(x)
    if not finite.all():  # decode() already refuses these; arrays given to prepare() may not be clean
        count, first = int(np.count_nonzero(~finite)), int(np.argmin(finite))
        raise _bad(path, Problem.NON_FINITE, f"{count} NaN/Inf samples, the first at sample {first}")
    if _resamples(native_rate, options):
        x = soxr.resample(x, native_rate, SAMPLE_RATE, RESAMPLE_QUALITY)
        if len(x) == 0:
            raise AudioError(path, _too_short(len(samples), native_rate))
        return _scale_clip(x, owned=True)
    return _scale_clip(x)  # x may share the caller's samples: not in place


def _prepare(
    samples: np.ndarray, native_rate: int, options: Preprocessing, path: str | Path
) -> np.ndarray:
    return TiledWaveform.of(_prepare_untiled(samples, native_rate, options, path), options).array()


def prepare(samples: np.ndarray, native_rate: int, options: Preprocessing = Preprocessing()) -> np.ndarray:
    """Model input (float32, (n,)) from decoded samples ((n,) or (n, channels), [-1, 1])."""
    return _prepare(samples, native_rate, options, _PREPARE_ARRAY)


@dataclass(frozen=True, eq=False)
class TiledWaveform:
    """A model input held untiled: ``base`` repeated ``copies`` times is :attr:`Clip.waveform`.
    Tiling is left to whoever fills the batch (:meth:`write_into`), which saves one 25 s copy a clip."""

    base: np.ndarray  # float32 (n,): resampled, scaled, clipped
    copies: int = 1

    @classmethod
    def of(cls, base: np.ndarray, options: Preprocessing) -> TiledWaveform:
        return cls(base, tile_count(len(base), options.min_samples))

    @property
    def samples(self) -> int:
        """Length of the model input."""
        return len(self.base) * self.copies

    def array(self) -> np.ndarray:
        """The model input, ``np.tile(base, copies)`` (the seed's tiling)."""
        return np.tile(self.base, self.copies) if self.copies > 1 else self.base

    def write_into(self, out: np.ndarray) -> None:
        """Write the model input into ``out`` (shape (samples,)): the same values as :meth:`array`."""
        out.reshape(self.copies, len(self.base))[...] = self.base


@dataclass(frozen=True, eq=False)
class PreparedClip:
    """One file turned into a model input kept untiled (see :func:`load_prepared`)."""

    path: str
    waveform: TiledWaveform
    duration: float  # seconds of the original audio (frames / native_rate)
    native_rate: int

    def clip(self) -> Clip:
        """As a :class:`Clip`, tiled."""
        return Clip(path=self.path, waveform=self.waveform.array(), duration=self.duration, native_rate=self.native_rate)


def load_prepared(
    path: str | Path, options: Preprocessing = Preprocessing(), *, max_samples: int | None = None
) -> PreparedClip | None:
    """:func:`load` with the file opened once and the tiling deferred; None, without decoding, when
    the header says the model input would be longer than ``max_samples`` (stream it with
    :func:`iter_blocks`). The same checks, in the same order, raise the same :class:`AudioError` as
    :func:`info` then :func:`load`."""
    with _open(path) as f:
        rate = f.samplerate
        if max_samples is not None and model_length(f.frames, rate, options) > max_samples:
            return None
        samples = _decode_open(path, f)
    base = _prepare_untiled(samples, rate, options, path)
    return PreparedClip(str(path), TiledWaveform.of(base, options), len(samples) / rate, rate)


def load(path: str | Path, options: Preprocessing = Preprocessing()) -> Clip:
    """Decode and prepare one file (what worker processes call: they get paths, not arrays)."""
    clip = load_prepared(path, options)
    assert clip is not None  # no max_samples: never left to streaming
    return clip.clip()


def iter_model_input(
    path: str | Path, options: Preprocessing = Preprocessing(), block_samples: int = 1 << 20
) -> Iterator[np.ndarray]:
    """The whole model input of ``path`` in blocks: :func:`iter_blocks`, repeated as the seed's tiling
    repeats a clip shorter than ``options.min_samples`` (a long ``--min-seconds`` can make a tiled clip
    long enough to be streamed; each copy decodes the file again, so memory stays a few blocks)."""
    header = info(path)
    n = _resampled_length(header.frames, header.rate) if _resamples(header.rate, options) else header.frames
    for _ in range(tile_count(n, options.min_samples) if n > 0 else 1):
        yield from iter_blocks(path, options, block_samples)


def iter_blocks(
    path: str | Path, options: Preprocessing = Preprocessing(), block_samples: int = 1 << 20
) -> Iterator[np.ndarray]:
    """Stream the prepared (mixed, resampled, scaled, clipped; never tiled) waveform of ``path``
    in float32 blocks of exactly ``block_samples`` (the last one may be shorter).

    Memory stays around a few blocks whatever the file's length. Problems found mid-file (a
    truncated or corrupt stream, NaN/Inf samples) raise :class:`AudioError` when reached, after the
    blocks before them were yielded.
    """
    if isinstance(block_samples, bool) or not isinstance(block_samples, int) or block_samples < 1:
        raise SoundNetError(f"iter_blocks: block_samples must be a positive int, got {block_samples!r}")
    with _open(path) as f:
        rate = f.samplerate
        stream = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
            if _resamples(rate, options)
            else None
        )
        # Read about one output block of input per step.
        read_frames = max(1, math.ceil(block_samples * rate / SAMPLE_RATE))
        pending: list[np.ndarray] = []
        n_pending = 0

        def pieces() -> Iterator[np.ndarray]:
            for block in _read_blocks(path, f, read_frames):
                x = _mono(block, options.mix)
                yield x if stream is None else stream.resample_chunk(x, last=False)
            if stream is not None:
                yield stream.resample_chunk(np.zeros(0, np.float32), last=True)

        produced = 0
        for piece in pieces():
            if len(piece) == 0:
                continue
            pending.append(_scale_clip(piece))
            n_pending += len(piece)
            while n_pending >= block_samples:
                buf = pending[0] if len(pending) == 1 else np.concatenate(pending)
                out, rest = buf[:block_samples], buf[block_samples:]
                # Copy when a remainder shares the buffer, so a kept block does not pin it.
                yield out.copy() if len(rest) else out
                produced += block_samples
                pending, n_pending = ([rest] if len(rest) else []), len(rest)
        if n_pending:
            produced += n_pending
            yield pending[0] if len(pending) == 1 else np.concatenate(pending)
        if produced == 0:
            raise AudioError(path, _too_short(f.frames, rate))
