"""Files that used to crash, hang or run away are refused: by --config.check (exit 2, one
line naming the file or the key), by a reload (the old configuration keeps running and
``qianfan_config_last_reload_successful`` is 0), and by --web.config.file.

The broken files that can be committed are in tests/bad_configs/; the ones that cannot
(a FIFO, a file over the size limit) are made here. Anything that hung before runs in a
subprocess with a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import (
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from qf_exporter.config.patterns import PatternError, compile_pattern
from qf_exporter.util import yamlfile
from qf_exporter.web.webconfig.schema import load_web_config
from tests.config.test_corpus import CORPUS, clean_env
from tests.helpers import parse_samples, value

ROOT = Path(__file__).resolve().parent.parent.parent
AK = "AKharden0123456789abcdef"
SK = "SKharden-never-shown-0123456789abcdef"
GOOD = (
    "accounts:\n"
    f"  - {{name: prod, access_key: {AK}, secret_key: {SK}, jobs: [job-a]}}\n"
)
TIMEOUT = 20  # seconds; every case here answers at once, a hang fails the test


def python(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    """``python *argv`` in a clean environment; a failure when it takes over TIMEOUT."""
    try:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took more than {TIMEOUT}s")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return python(["-m", "qf_exporter", *args], f"qf-exporter {' '.join(args)}")


def check(config: Path | str) -> subprocess.CompletedProcess[str]:
    return run(f"--config.file={config}", "--config.check")


def assert_refused(result: subprocess.CompletedProcess[str], *lines: str) -> None:
    where = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == 2, where
    assert result.stdout == "", where
    assert "Traceback" not in result.stderr, where
    assert result.stderr.splitlines() == list(lines), where
    assert SK not in result.stderr and AK not in result.stderr


# --- files that are not regular files, or too big ------------------------------------


def test_fifo_as_config_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert_refused(check(fifo), f"{fifo}: not a regular file (a FIFO)")


def test_fifo_as_secret_key_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "sk"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"accounts:\n  - {{name: prod, access_key: {AK}, secret_key_file: {fifo}, "
        "jobs: [job-a]}\n",
        encoding="utf-8",
    )
    assert_refused(
        check(config), f"accounts[0].secret_key_file: {fifo} is not a regular file (a FIFO)"
    )


def test_device_as_config_file_is_refused() -> None:
    assert_refused(check("/dev/zero"), "/dev/zero: not a regular file (a character device)")


def test_config_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD + "#" * yamlfile.MAX_FILE_BYTES + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == [f"{config}: larger than 1 MiB"]


def test_config_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    padding = "#" * (yamlfile.MAX_FILE_BYTES - len(GOOD) - 1)
    config.write_text(GOOD + padding + "\n", encoding="utf-8")
    assert config.stat().st_size == yamlfile.MAX_FILE_BYTES
    assert load_config(config).accounts[0].jobs == ("job-a",)


def test_secret_key_file_over_a_few_kib_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "sk"
    big.write_text("x" * (yamlfile.MAX_SECRET_BYTES + 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"accounts: [{{name: a, access_key: {AK}, secret_key_file: {big}, jobs: [j]}}]"
        )
    assert info.value.problems == [f"accounts[0].secret_key_file: {big} is larger than 4 KiB"]


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


# --- YAML that used to crash or run away ----------------------------------------------

BOMB = (CORPUS / "yaml-alias-bomb.yaml").read_text("utf-8")


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


def test_aliases_within_reason_are_fine() -> None:
    """Anchors and merge keys to share settings between accounts stay usable."""
    accounts = "".join(
        f"  - {{<<: *base, name: acct{i}, access_key: {AK}{i}, jobs: *jobs}}\n"
        for i in range(200)
    )
    text = (
        "accounts:\n"
        f"  - &base {{name: base, access_key: {AK}, secret_key: {SK}, qps: 2,\n"
        "      jobs: &jobs [job-a, job-b, job-c, job-d, job-e, job-f, job-g, job-h]}\n"
        + accounts
    )
    config = parse_config(text)
    assert len(config.accounts) == 201
    assert {a.qps for a in config.accounts} == {2.0}
    assert config.accounts[200].jobs == config.accounts[0].jobs
    assert config.accounts[200].secret_key.reveal() == SK


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


# --- the same reader for --web.config.file -------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("basic_auth_users: &a {x: *a}\n", "found a recursive alias *a"),
        (BOMB, "document contains excessive aliasing"),
        ("basic_auth_users: {}\nbasic_auth_users: {}\n", "found duplicate key"),
        ("basic_auth_users: {1: x}\n", "found a key that is not a string"),
    ],
)
def test_web_config_is_read_by_the_same_reader(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    (line,) = info.value.problems
    assert line.startswith("invalid YAML at line") and problem in line


def test_web_config_must_be_a_small_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config("/dev/zero")
    assert info.value.problems == ["not a regular file (a character device)"]
    fifo = tmp_path / "web.yml"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    config.write_text(GOOD, encoding="utf-8")
    result = run(f"--config.file={config}", f"--web.config.file={fifo}", "--config.check")
    assert_refused(result, f"{fifo}: not a regular file (a FIFO)")


# --- reloads ------------------------------------------------------------------------


def reload_successful(exporter: Exporter) -> float | None:
    return value(parse_samples(exporter.exposition()), "qianfan_config_last_reload_successful")


@pytest.fixture
def reloadable(tmp_path: Path) -> Iterator[tuple[Exporter, Path]]:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD, encoding="utf-8")
    exporter = Exporter(load_config(path), config_path=str(path), process_metrics=False)
    yield exporter, path
    exporter.stop()


BROKEN_ON_RELOAD = [
    *sorted(p.name for p in CORPUS.glob("yaml-*.yaml")),
    "secret-file-dev-zero.yaml",
    "interval-too-long.yaml",
    "timeout-huge.yaml",
    "regex-backreference.yaml",
]


@pytest.mark.parametrize("name", BROKEN_ON_RELOAD)
def test_reload_refuses_a_broken_file_and_keeps_the_old_config(
    reloadable: tuple[Exporter, Path], name: str
) -> None:
    exporter, path = reloadable
    running = exporter.poller.config
    assert reload_successful(exporter) == 1
    path.write_text((CORPUS / name).read_text("utf-8"), encoding="utf-8")

    ok, message = exporter.reload()

    assert not ok
    assert message.startswith("configuration refused, still running the previous one:")
    assert reload_successful(exporter) == 0
    assert exporter.poller.config is running

    path.write_text(GOOD.replace("job-a", "job-b"), encoding="utf-8")
    assert exporter.reload() == (True, "configuration reloaded")
    assert reload_successful(exporter) == 1
    assert exporter.poller.config.accounts[0].jobs == ("job-b",)


def test_reload_refuses_a_fifo_secret_key_file(reloadable: tuple[Exporter, Path]) -> None:
    exporter, path = reloadable
    fifo = path.parent / "sk"
    os.mkfifo(fifo)
    path.write_text(
        f"accounts: [{{name: prod, access_key: {AK}, secret_key_file: {fifo}, jobs: [j]}}]\n",
        encoding="utf-8",
    )
    ok, message = exporter.reload()  # O_NONBLOCK: returns at once, no writer needed
    assert not ok and "is not a regular file (a FIFO)" in message
    assert reload_successful(exporter) == 0


def test_reload_survives_an_unexpected_error(
    reloadable: tuple[Exporter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should checking ever fail with something other than ConfigError, the reload is
    still refused and reported, not a dead reload thread with the metric left at 1."""
    exporter, path = reloadable

    def broken(_path: str) -> Config:
        raise RecursionError(f"maximum recursion depth exceeded near {SK}")

    monkeypatch.setattr("qf_exporter.app.load_config", broken)
    ok, message = exporter.reload()
    assert not ok
    assert message.endswith(f"{path}: cannot be loaded (RecursionError)")
    assert SK not in message
    assert reload_successful(exporter) == 0


# --- discovery patterns: RE2 --------------------------------------------------------


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


# --- bounds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("poll", "account"),
    [
        (
            "{interval: 1d, finished_interval: 1d, stale_after: 7d, timeout: 1d,"
            " concurrency: 64, retries: 10, finished_retention: 3650d}",
            "qps: 1000, max_runs: 1000000, discovery: {interval: 1d, max_age: 3650d}",
        ),
        (
            "{interval: 1s, finished_interval: 1s, stale_after: 1s, timeout: 1s,"
            " concurrency: 1, retries: 0, finished_retention: 0s}",
            "qps: 0.01, max_runs: 1, discovery: {interval: 1s, max_age: 1s}",
        ),
    ],
)
def test_values_at_the_bounds_are_accepted(poll: str, account: str) -> None:
    config = parse_config(
        f"accounts: [{{name: a, access_key: {AK}, secret_key: {SK}, discover: true,"
        f" {account}}}]\npoll: {poll}\n"
    )
    assert config.poll.timeout == config.poll.interval


def test_a_value_out_of_bounds_is_one_problem_not_a_cascade() -> None:
    """An interval refused for its size is not also compared with the others."""
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + "poll: {interval: 2d, finished_interval: 1h, stale_after: 1h}\n")
    assert info.value.problems == ["poll.interval: must be at most 1d"]


def test_a_key_with_a_line_break_is_shown_escaped() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + 'poll: {"a\\nb": 1}\n')
    assert info.value.problems == ["poll.'a\\nb': unknown key"]
