"""Golden outputs: the real `soundnet8 demo` and `soundnet8 predict` commands, run as a user runs them,
print the top scenes and objects the README shows for the bundled clips (names in order, percentages
within 0.2 points), and `demo` exits non-zero when a bundled clip fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from soundnet8.engine.inputs import DEMO_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
PERCENT_POINTS = 0.2  # README percentages are printed to 0.1 point

HEADER = re.compile(r"^\[ESC-10 class: (?P<category>[^\]]+)\] (?P<path>\S+)$")
LINE = re.compile(r"^  (?P<kind>scenes |objects): (?P<items>.+)$")
# object names hold commas ("motor scooter, scooter 4.2%"): a name ends where " <number>%" does
ITEM = re.compile(r"(?P<name>.+?) (?P<percent>\d+(?:\.\d+)?)%(?:, |$)")


@dataclass
class Shown:
    """One clip of a demo / predict printout."""

    name: str  # the clip's file name
    category: str | None
    lists: dict[str, list[tuple[str, float]]]  # "scenes" / "objects" -> [(name, percent)]


def parse_listing(text: str) -> dict[str, Shown]:
    """{file name: what was printed for it} from `soundnet8 demo` or `soundnet8 predict` output."""
    shown: dict[str, Shown] = {}
    current: Shown | None = None
    for line in text.splitlines():
        header = HEADER.match(line)
        if header or (line and not line.startswith(" ") and line.endswith(".flac")):
            path = header["path"] if header else line.strip()
            current = Shown(path.rsplit("/", 1)[-1], header["category"] if header else None, {})
            shown[current.name] = current
        elif (m := LINE.match(line)) and current is not None:
            items = [(i["name"], float(i["percent"])) for i in ITEM.finditer(m["items"])]
            assert "".join(i.group(0) for i in ITEM.finditer(m["items"])) == m["items"], line
            current.lists[m["kind"].strip()] = items
    return shown


def readme_demo_block() -> dict[str, Shown]:
    """The README's `soundnet8 demo` printout (the block after "`soundnet8 demo` prints")."""
    text = README.read_text(encoding="utf-8")
    start = text.index("`soundnet8 demo` prints")
    block = re.search(r"```\n(.*?)```", text[start:], re.S)
    assert block, "README: no code block after the demo sentence"
    golden = parse_listing(block.group(1))
    # the README shows a subset of clips and lines: make sure the test still compares something
    assert len(golden) >= 4 and sum("objects" in s.lists for s in golden.values()) >= 2, golden
    assert all(len(s.lists.get("scenes", [])) == 3 for s in golden.values()), golden
    return golden


def run_command(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("soundnet8")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "soundnet8.engine.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=600)


def assert_matches_golden(actual: dict[str, Shown], golden: dict[str, Shown], with_category: bool) -> None:
    for name, want in golden.items():
        assert name in actual, f"{name} not printed"
        got = actual[name]
        if with_category:
            assert got.category == want.category, name
        for kind, items in want.lists.items():
            printed = got.lists[kind][: len(items)]
            assert [n for n, _ in printed] == [n for n, _ in items], (name, kind, printed, items)
            for (label, p), (_, q) in zip(printed, items):
                assert abs(p - q) <= PERCENT_POINTS, (name, kind, label, p, q)


def test_readme_parser_reads_names_with_commas():
    shown = parse_listing(
        "[ESC-10 class: dog] .../engine/demo/x.flac\n"
        "  scenes : pasture 30.5%, field/wild 7.6%, yard 6.2%\n"
        "  objects: dogsled, dog sled, dog sleigh 4.8%, Great Dane 3.7%\n"
    )
    assert shown["x.flac"].category == "dog"
    assert shown["x.flac"].lists["objects"] == [("dogsled, dog sled, dog sleigh", 4.8), ("Great Dane", 3.7)]


def test_demo_prints_the_readme_results():
    golden = readme_demo_block()
    done = run_command("demo", "--provider", "cpu")
    assert done.returncode == 0, done.stderr
    actual = parse_listing(done.stdout)
    assert len(actual) == len(list(DEMO_DIR.glob("*.flac"))) == 6
    assert_matches_golden(actual, golden, with_category=True)


def test_predict_prints_the_readme_results():
    golden = readme_demo_block()
    done = run_command("predict", *(str(DEMO_DIR / name) for name in golden), "-k", "3", "--provider", "cpu")
    assert done.returncode == 0, done.stderr
    assert_matches_golden(parse_listing(done.stdout), golden, with_category=False)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_demo_exits_non_zero_when_a_clip_fails(tmp_path, damage):
    """The real command on a copy of the bundled folder with one clip broken: that clip's error is
    printed, the others still run, and the exit status is 3 (SOME_FAILED)."""
    demo_dir = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, demo_dir)
    broken = sorted(demo_dir.glob("*.flac"))[2]
    if damage == "truncated":
        broken.write_bytes(broken.read_bytes()[:300])
    else:
        broken.unlink()
    # the command's own main, with the bundled folder pointed at the copy
    code = (
        "import sys; from pathlib import Path; import soundnet8.engine.inputs as inputs;"
        f"inputs.DEMO_DIR = Path({str(demo_dir)!r});"
        "from soundnet8.engine.cli import main; sys.exit(main(['demo', '--provider', 'cpu']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=os.environ.copy())
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "1 of 6 bundled clips failed" in done.stderr
    assert f"{broken}: " in done.stdout  # the failing clip, named with its reason
    assert len([s for s in parse_listing(done.stdout).values() if s.lists]) == 5
