"""What an HDF5 UTF-8 string can hold: checks for names and paths, repair for diagnostics."""

from __future__ import annotations

from ..errors import StoreError


def check_text(text: str, what: str) -> str:
    """``text`` if an HDF5 UTF-8 string can hold it, else a StoreError naming ``what``."""
    if not isinstance(text, str):
        raise StoreError(f"{what} must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise StoreError(f"{what} {text!r} contains a NUL character, which HDF5 strings cannot hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"{what} {text!r} is not valid UTF-8 (undecodable bytes in a file name?)") from None
    return text


def check_name(name: str, what: str) -> str:
    """``name`` if it can name an HDF5 dataset of a group (no "/", not "." or empty)."""
    check_text(name, what)
    if "/" in name or name in (".", ""):
        raise StoreError(f"{what} {name!r} cannot be an HDF5 name")
    return name


def clean_message(text: str) -> str:
    """An error message made storable (HDF5 strings end at NUL; UTF-8 holds no lone surrogates)."""
    # Messages are diagnostics from decoders: keep them rather than failing the run over one.
    text = str(text).replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")
