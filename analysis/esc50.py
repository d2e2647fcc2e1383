"""What the analysis knows about ESC-50 (Piczak 2015): class names and the 5 major categories.

Used only for stores whose classes are ESC-50's; every other dataset brings its own class names
(and gets no major categories unless the caller gives a grouping).
"""

from __future__ import annotations

from collections.abc import Sequence

ESC50_CLASSES: tuple[str, ...] = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)  # fmt: skip
"""ESC-50's 50 categories in ``target`` order (0..49)."""

ESC50_MAJOR_CATEGORIES: tuple[str, ...] = (
    "Animals",
    "Natural soundscapes & water sounds",
    "Human non-speech sounds",
    "Interior/domestic sounds",
    "Exterior/urban noises",
)
"""ESC-50's major categories: target // 10 indexes this tuple."""

CLASSES_PER_MAJOR = 10

ESC50_META_COLUMNS = frozenset({"esc10", "src_file", "take"})
"""Manifest columns only ESC-50 (and ESC-10) carry."""

_INDEX = {name: i for i, name in enumerate(ESC50_CLASSES)}


def _key(name: str) -> str:
    # "Crackling fire", "crackling-fire" and "crackling_fire" are the same class.
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def esc50_index(name: str) -> int | None:
    """ESC-50 target of a class name, or None when it is not an ESC-50 class."""
    return _INDEX.get(_key(name))


def is_esc50(class_names: Sequence[str] | None, meta_columns: Sequence[str] = ()) -> bool:
    """True for a store of ESC-50 (or a subset such as ESC-10): every class name is an ESC-50
    category, and either all 50 are present or the manifest has ESC-50's own columns."""
    if not class_names:
        return False
    if any(esc50_index(n) is None for n in class_names):
        return False
    return len({esc50_index(n) for n in class_names}) == len(ESC50_CLASSES) or ESC50_META_COLUMNS <= set(meta_columns)


def major_category_of(name: str) -> str | None:
    """ESC-50 major category of a class name (None for a name ESC-50 does not have)."""
    index = esc50_index(name)
    return None if index is None else ESC50_MAJOR_CATEGORIES[index // CLASSES_PER_MAJOR]


def major_groups(class_names: Sequence[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(major category names in ESC-50 order, major index of each class) for ESC-50 classes."""
    majors = [major_category_of(n) for n in class_names]
    if any(m is None for m in majors):
        missing = [n for n, m in zip(class_names, majors) if m is None]
        raise ValueError(f"not ESC-50 classes: {missing[:5]}")
    present = tuple(m for m in ESC50_MAJOR_CATEGORIES if m in majors)
    return present, tuple(present.index(m) for m in majors)
