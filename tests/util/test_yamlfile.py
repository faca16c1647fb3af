"""The careful YAML reader: bounded reads of regular files only, and YAML that used to
crash or run away (alias bombs, recursion, deep nesting, odd keys and tags) refused as
one problem line."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from qf_exporter.util import yamlfile
from tests.config_text import BOMB


def test_read_bounded_stops_at_the_limit_even_if_the_file_grows(tmp_path: Path) -> None:
    """fstat's size is checked first, but the read itself is bounded too."""
    path = tmp_path / "f"
    path.write_bytes(b"a" * 10)
    assert yamlfile.read_bounded(path, 10)[0] == b"a" * 10
    with pytest.raises(yamlfile.FileRefused, match="larger than 9 bytes"):
        yamlfile.read_bounded(path, 9)


def test_read_bounded_refuses_a_directory_and_a_device(tmp_path: Path) -> None:
    with pytest.raises(yamlfile.FileRefused, match=r"not a regular file \(a directory\)"):
        yamlfile.read_bounded(tmp_path, 100)
    with pytest.raises(yamlfile.FileRefused, match=r"\(a character device\)"):
        yamlfile.read_bounded("/dev/zero", 100)


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    assert len(BOMB.encode()) < 600
    tracemalloc.start()
    try:
        with pytest.raises(yamlfile.YamlRefused, match="excessive aliasing"):
            yamlfile.parse(BOMB)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20  # 9^9 strings would take gigabytes


def test_the_alias_ratio_follows_go_yaml() -> None:
    """More than 99 % of the values from aliases is refused once the document holds more
    than 1,000 values; the same values written out are fine."""

    def document(aliases: int) -> str:
        # 4 values (root, a, the list, b's list) + 5 for the anchored list + 5 per alias
        return "a: &a [1, 2, 3, 4]\nb: [" + ", ".join(["*a"] * aliases) + "]\n"

    assert len(yamlfile.parse(document(198))["b"]) == 198  # 999 values, 99.1 % aliased
    with pytest.raises(yamlfile.YamlRefused, match="excessive aliasing"):
        yamlfile.parse(document(199))  # 1,004 values, 99.1 % aliased
    written_out = "b: [" + ", ".join(["[1, 2, 3, 4]"] * 199) + "]\n"
    assert len(yamlfile.parse(written_out)["b"]) == 199


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x: &a [*a]\n", "line 1, column 8: found a recursive alias *a"),
        ("x: &a {y: [*a]}\n", "line 1, column 12: found a recursive alias *a"),
        ("x: &a {<<: *a}\n", "line 1, column 12: found a recursive alias *a"),
        ("&a {*a : 1}\n", "line 1, column 5: found a recursive alias *a"),
        ("x: *nope\n", "line 1, column 4: found undefined alias 'nope'"),
        ("x: &a 1\ny: &a 2\n", "line 2, column 4: found duplicate anchor &a (first at line 1)"),
        ("x: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
        ("".join("  " * i + f"k{i}:\n" for i in range(100)), "nested deeper than 64 levels"),
        ("1: x\n", "line 1, column 1: found a key that is not a string"),
        ("x: {on: 1}\n", "line 1, column 5: found a key that is not a string"),
        ("? [a, b]\n: x\n", "line 1, column 3: found a key that is not a string"),
        ("x: 1\nx: 2\n", "line 2, column 1: found duplicate key 'x'"),
        ("x: !!set {a, b}\n", "tag !!set is not allowed"),
        ("x: !!python/name:os.system\n", "tag !!python/name:os.system is not allowed"),
        ("x: !local 1\n", "tag !local is not allowed"),
        ("x: " + "1" * 5000 + "\n", "cannot read this value: Exceeds the limit"),
        ("x: 2023-02-29\n", "cannot read this value: day is out of range"),
        ("x: 1\n---\ny: 2\n", "but found another document"),
        ("x: [\n", "invalid YAML at line 2"),
    ],
)
def test_yaml_that_would_crash_or_run_away_is_one_problem(text: str, problem: str) -> None:
    with pytest.raises(yamlfile.YamlRefused) as info:
        yamlfile.parse(text)
    message = str(info.value)
    assert message.startswith("invalid YAML")
    assert problem in message
    assert "\n" not in message


def test_nesting_within_the_limit_and_standard_tags_are_fine() -> None:
    assert yamlfile.parse("x: " + "[" * 60 + "]" * 60) is not None
    assert yamlfile.parse("x: !!str 123\ny: !!int '7'\nz: !!float 1\n") == {
        "x": "123",
        "y": 7,
        "z": 1.0,
    }

