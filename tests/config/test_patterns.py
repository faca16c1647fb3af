"""Discovery's filters in RE2: linear-time matching, the usual meaning of a pattern, and
a refused pattern named by its path with RE2's reason."""

from __future__ import annotations

import pytest

from qf_exporter.config.file import ConfigError, parse_config
from qf_exporter.config.patterns import PatternError, compile_pattern
from tests.config_text import python


def test_backtracking_pattern_matches_in_linear_time() -> None:
    """``^(a+)+$`` against 28 characters took Python's re minutes (holding the GIL, so
    even /-/healthy froze); RE2 answers at once, here against 100,000 characters too."""
    script = (
        "from qf_exporter.config.file import parse_config\n"
        "config = parse_config(\"accounts: [{name: a, access_key: k, secret_key: s, "
        "discover: true, discovery: {include: ['^(a+)+$'], exclude: ['(x+x+)+y']}}]\")\n"
        "d = config.accounts[0].discovery\n"
        "for name in ['a' * 27 + '!', 'a' * 100_000 + '!', 'x' * 100_000]:\n"
        "    print(any(p.search(name) for p in d.include), "
        "any(p.search(name) for p in d.exclude))\n"
        "print(d.include[0].search('a' * 28) is not None)\n"
    )
    result = python(["-c", script], "matching a backtracking pattern")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False False"] * 3 + ["True"]


def test_patterns_keep_their_usual_meaning() -> None:
    prod = compile_pattern("^prod-")
    assert prod.pattern == "^prod-"
    assert prod.search("prod-sft") and not prod.search("dev-prod-sft")
    assert compile_pattern("(?i)-TMP$").search("prod-sft-tmp")
    assert compile_pattern(r"^\w+-\d{3}$").search("sft-123")
    assert compile_pattern("训练").search("千帆训练任务")
    for bad in (r"(a)\1", "(?=x)", "(?<!x)y", "a{1001}", "(unclosed"):
        with pytest.raises(PatternError):
            compile_pattern(bad)


def test_refused_pattern_problem_names_its_path_and_reason() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "accounts: [{name: a, access_key: k, secret_key: s, discover: true,\n"
            "  discovery: {include: ['^ok', '(a)\\1']}}]"
        )
    assert info.value.problems == [
        "accounts[0].discovery.include: '(a)\\\\1' is not a valid regular expression: "
        "invalid escape sequence: \\1 (RE2 syntax)"
    ]

