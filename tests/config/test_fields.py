"""The declared-key reader on its own: a small section declared here, read and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

import pytest

from qf_exporter.config.fields import (
    Bound,
    Checker,
    distinct,
    each,
    integer,
    key,
    keys_of,
    read_by,
    read_fields,
    section,
    show_duration,
    string,
    string_list,
)
from qf_exporter.config.file import (
    Account,
    Config,
    ConfigError,
    Discovery,
    Poll,
    V1Target,
    parse_config,
)
from tests.config_text import GOOD


@dataclass(frozen=True)
class Inner:
    size: int = field(default=2, metadata=key(integer, Bound(1, 9, above_zero=True)))


@dataclass(frozen=True)
class Sample:
    label: str = field(metadata=key(string, required="is required"))
    count: int = field(default=3, metadata=key(integer, Bound(0, 5, below="must be >= 0")))
    tags: tuple[str, ...] = field(
        default=(),
        metadata=key(string_list, each(re.compile(r"^\w+$"), "must be a word"),
                     distinct("repeats a tag")),
    )
    inner: Inner = field(default_factory=Inner, metadata=section(Inner))
    token: str = field(default="", metadata=read_by(None, also=("token_file",)))
    note: str = "not a key of the file"


def read(raw: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    c = Checker({})
    values = read_fields(c, c.mapping(raw, "s", keys_of(Sample)), "s", Sample)
    return values, c.problems


def test_the_keys_are_the_declared_fields_and_their_alternatives() -> None:
    assert keys_of(Sample) == {"label", "count", "tags", "inner", "token", "token_file"}
    assert keys_of(Poll) == {f.name for f in fields(Poll)}
    assert keys_of(Discovery) == {f.name for f in fields(Discovery)}
    assert keys_of(Account) == {f.name for f in fields(Account)} | {"secret_key_file"}
    assert keys_of(V1Target) == {"task_id", "job_id", "team"}
    assert keys_of(Config) == {"accounts", "poll"}


def test_absent_keys_take_the_declared_defaults() -> None:
    values, found = read({"label": "x"})
    assert values == {"label": "x", "count": 3, "tags": (), "inner": Inner()}
    assert found == []


def test_a_required_key_that_is_absent_is_a_problem_and_left_out() -> None:
    values, found = read({"label": None})
    assert "label" not in values
    assert found == ["s.label: is required"]


def test_a_value_that_does_not_convert_is_a_problem_and_the_default_stands_in() -> None:
    values, found = read({"label": "x", "count": "many", "inner": {"size": "big"}})
    assert values["count"] == 3 and values["inner"] == Inner(2)
    assert found == ["s.count: must be an integer", "s.inner.size: must be an integer"]


def test_a_value_that_fails_a_check_is_a_problem_at_its_path() -> None:
    values, found = read({"label": "x", "count": -1, "tags": ["a b", "c", "c"],
                          "inner": {"size": 0, "colour": 1}})
    assert found == [
        "s.count: must be >= 0",
        "s.tags[0]: must be a word",
        "s.tags: repeats a tag",
        "s.inner.colour: unknown key",
        "s.inner.size: must be > 0",
    ]
    assert values["tags"] == ("a b", "c", "c")  # kept: later rules see what was written


def test_bounds_say_where_the_limit_is() -> None:
    days = Bound(1.0, 86400.0, above_zero=True, show=show_duration)
    assert list(days(0)) == [("", "must be > 0")]
    assert list(days(0.5)) == [("", "must be at least 1s")]
    assert list(days(86401)) == [("", "must be at most 1d")]
    assert list(days(60)) == []
    assert list(Bound(high=64)(65)) == [("", "must be at most 64")]
    assert list(Bound(0.01)(0.001)) == [("", "must be at least 0.01")]


def test_an_unknown_key_suggests_a_declared_one() -> None:
    c = Checker({})
    c.mapping({"tokn_file": 1}, "s", keys_of(Sample))
    assert c.problems == ["s.tokn_file: unknown key (did you mean token_file?)"]


def test_a_key_with_a_line_break_is_shown_escaped() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + 'poll: {"a\\nb": 1}\n')
    assert info.value.problems == ["poll.'a\\nb': unknown key"]

