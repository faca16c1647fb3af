"""Loading the configuration file: defaults, durations, ${VAR}, problems, size cap.

Credentials and file permissions: test_credentials.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qf_exporter.config.file import (
    DEFAULT_ENDPOINT,
    ConfigError,
    Discovery,
    Poll,
    V1Target,
    load_config,
    parse_config,
    parse_duration,
)
from qf_exporter.util import yamlfile
from tests.config_text import AK, CREDS, GOOD, MINIMAL, SK, parse, problems

# --- defaults --------------------------------------------------------------------------


def test_minimal_config_gets_every_default() -> None:
    config = parse(MINIMAL)
    assert config.poll == Poll()
    assert config.poll.interval == 60
    assert config.poll.finished_interval == 1800
    assert config.poll.stale_after == 600
    assert config.poll.timeout == 10
    assert config.poll.concurrency == 4
    assert config.warnings == ()
    (account,) = config.accounts
    assert account.name == "default"
    assert account.endpoint == DEFAULT_ENDPOINT == "https://qianfan.baidubce.com"
    assert account.qps == 5
    assert account.jobs == ("job-abc",)
    assert account.tasks == ()
    assert account.discover is False
    assert account.discovery == Discovery()
    assert account.max_runs is None


@pytest.mark.parametrize(("poll", "timeout"), [
    ("interval: 2s", 2.0),  # as Prometheus' scrape_timeout: never above the interval
    ("interval: 10s", 10.0),
    ("interval: 5m", 10.0),
    ("{interval: 2s, timeout: soon}", None),  # not a duration: that is its problem
    ("{interval: 2s, timeout: 1}", 1.0),  # given: kept
])
def test_an_unset_timeout_is_at_most_the_interval(poll: str, timeout: float | None) -> None:
    text = MINIMAL + f"poll: {poll}\n" if poll.startswith("{") else MINIMAL + (
        f"poll:\n  {poll}\n")
    if timeout is None:
        assert problems(text) == ["poll.timeout: 'soon' is not a duration like 30s, 5m, 1h "
                                  "or a number of seconds"]
        return
    assert parse(text).poll.timeout == timeout


def test_a_timeout_above_the_interval_names_the_value_to_lower() -> None:
    assert problems(MINIMAL + "poll: {interval: 2s, timeout: 10s}\n") == [
        "poll.timeout: must be <= poll.interval: lower poll.timeout to at most 2s "
        "(or leave it unset: it is then min(10s, poll.interval))"
    ]


def test_full_config_from_the_spec() -> None:
    config = parse(
        """
        accounts:
          - name: default
            endpoint: http://127.0.0.1:8080/
            access_key: ${QIANFAN_ACCESS_KEY}
            secret_key: ${QIANFAN_SECRET_KEY}
            qps: 2.5
            jobs: [job-n509xxxq3, job-2]
            tasks:
              - {task_id: 10250, job_id: 6205}
              - {task_id: "7", job_id: 8}
            discover: true
            discovery: {interval: 15m, include: ["^prod-"], exclude: [tmp], max_age: 7d}
          - name: second
            access_key: other-ak
            secret_key: other-sk
            tasks: [{task_id: 1, job_id: 2}]
        poll:
          interval: 30s
          finished_interval: 1h
          stale_after: 10m
          timeout: 5
          concurrency: 8
        """
    )
    first, second = config.accounts
    assert first.endpoint == "http://127.0.0.1:8080"  # the trailing slash is dropped
    assert first.access_key.reveal() == AK
    assert first.secret_key.reveal() == SK
    assert first.qps == 2.5
    assert first.jobs == ("job-n509xxxq3", "job-2")
    assert first.tasks == (V1Target(10250, 6205), V1Target(7, 8))
    assert first.tasks[0].name == "10250/6205"
    assert first.discover is True
    assert first.discovery.interval == 900
    assert first.discovery.max_age == 7 * 86400
    assert [p.pattern for p in first.discovery.include] == ["^prod-"]
    assert second.access_key.reveal() == "other-ak"
    assert second.secret_key.reveal() == "other-sk"
    assert config.poll == Poll(30, 3600, 600, 5, 8)
    assert set(config.secrets()) == {AK, SK, "other-ak", "other-sk"}


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("7d", 604800),
        ("1w", 604800),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1h0m30s", 3630),
        (" 45s ", 45),
        ("90", 90),
        ("2.5", 2.5),
        (90, 90),
        (2.5, 2.5),
        (0, 0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "5 m",
        "5x",
        "m5",
        "1h 30m",
        "-5s",
        "-5",
        "1e400",
        "nan",
        "inf",
        True,
        None,
        [5],
        "5m-",
    ],
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), (45, 45)]
)
def test_durations_in_the_file(value: object, seconds: float) -> None:
    config = parse(
        MINIMAL
        + f"""
poll:
  interval: {value}
  finished_interval: 1d
  stale_after: 7d
"""
    )
    assert config.poll.interval == seconds
    assert config.poll.finished_interval == 86400


# --- ${VAR} ----------------------------------------------------------------------------


def test_env_substitution_uses_the_given_environment() -> None:
    env = {"MY_AK": "ak-from-env", "MY_SK": "sk-from-env", "JOB": "job-77", "HOST": "sim:9"}
    config = parse(
        """
        accounts:
          - name: a
            endpoint: http://${HOST}
            access_key: ${MY_AK}
            secret_key: pre-${MY_SK}-post
            jobs:
              - ${JOB}
        """,
        env,
    )
    (account,) = config.accounts
    assert account.access_key.reveal() == "ak-from-env"
    assert account.secret_key.reveal() == "pre-sk-from-env-post"
    assert account.jobs == ("job-77",)
    assert account.endpoint == "http://sim:9"


def test_env_substitution_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFX_TEST_AK", "ak-monkeypatched")
    monkeypatch.setenv("QFX_TEST_SK", "sk-monkeypatched")
    config = parse_config(
        "accounts: [{name: a, jobs: [j], access_key: '${QFX_TEST_AK}',"
        " secret_key: '${QFX_TEST_SK}'}]"
    )
    assert config.accounts[0].access_key.reveal() == "ak-monkeypatched"
    assert config.accounts[0].secret_key.reveal() == "sk-monkeypatched"


def test_numbers_may_come_from_the_environment() -> None:
    config = parse(
        """
        accounts:
          - name: a
            jobs: [j]
            qps: ${QPS}
        poll:
          interval: ${INTERVAL}
          concurrency: ${CONC}
        """,
        {**CREDS, "QPS": "3", "INTERVAL": "2m", "CONC": "6"},
    )
    assert config.accounts[0].qps == 3
    assert config.poll.interval == 120
    assert config.poll.concurrency == 6


def test_an_unset_variable_is_one_problem_per_value() -> None:
    found = problems(
        """
        accounts:
          - name: a
            access_key: ${NOT_SET_AK}
            secret_key: ${NOT_SET_SK}
            qps: ${NOT_SET_QPS}
            jobs:
              - ${NOT_SET_JOB}
        """,
        {},
    )
    assert found == [
        "accounts[0].access_key: environment variable NOT_SET_AK is not set",
        "accounts[0].secret_key: environment variable NOT_SET_SK is not set",
        "accounts[0].qps: environment variable NOT_SET_QPS is not set",
        "accounts[0].jobs[0]: environment variable NOT_SET_JOB is not set",
    ]


def test_an_empty_variable_is_set_but_empty() -> None:
    found = problems(
        MINIMAL.replace("jobs:", "access_key: ${AK}\n    jobs:"),
        {"AK": "", "QIANFAN_SECRET_KEY": SK},
    )
    assert found == ["accounts[0].access_key: must not be empty"]


# --- many problems at once -------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        """
        accounts:
          - name: a
            qps: 0
            jobs: [job with space]
            tasks: [{task_id: -1, job_id: 2}]
            discover: maybe
            endpoint: ftp://x
            colour: blue
          - name: a
            jobs: [j]
        poll:
          interval: soon
          concurrency: 0
          retries: -1
        """
    )
    assert found == [
        "poll.interval: 'soon' is not a duration like 30s, 5m, 1h or a number of seconds",
        "poll.concurrency: must be > 0",
        "poll.retries: must be >= 0",
        "accounts[0].colour: unknown key",
        "accounts[0].endpoint: must be an http:// or https:// URL with a host and no path,"
        " query or user",
        "accounts[0].qps: must be > 0",
        "accounts[0].jobs[0]: must be a job id without spaces",
        "accounts[0].tasks[0].task_id: is required and must be a positive integer",
        "accounts[0].discover: must be true or false",
        "accounts[1].name: duplicate account name 'a'",
    ]


def test_a_bad_interval_does_not_invent_comparison_problems() -> None:
    found = problems(MINIMAL + "poll: {interval: bogus, finished_interval: 30s}\n")
    assert found == [
        "poll.interval: 'bogus' is not a duration like 30s, 5m, 1h or a number of seconds"
    ]
    found = problems(MINIMAL + "poll: {interval: 5m, finished_interval: 1m, stale_after: 2m}\n")
    assert found == [
        "poll.finished_interval: must be >= poll.interval",
        "poll.stale_after: must be >= poll.interval",
    ]


def test_duplicate_keys_are_refused() -> None:
    (line,) = problems(MINIMAL + "    qps: 1\n    qps: 2\n")
    assert line.startswith("config: invalid YAML at line 6")
    assert "duplicate key 'qps'" in line


def test_merge_keys_may_be_overridden() -> None:
    config = parse(
        """
        accounts:
          - &first
            name: a
            qps: 1
            jobs: [job-a]
          - <<: *first
            name: b
            qps: 2
        """
    )
    assert [(a.name, a.qps, a.jobs) for a in config.accounts] == [
        ("a", 1, ("job-a",)),
        ("b", 2, ("job-a",)),
    ]


def test_unknown_key_suggests_the_right_one() -> None:
    assert problems(MINIMAL + "    secret_key_flie: /x\n") == [
        "accounts[0].secret_key_flie: unknown key (did you mean secret_key_file?)"
    ]


def test_load_config_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"
    ]


def test_warnings_for_a_cap_below_the_v1_pairs_and_idle_discovery() -> None:
    from qf_exporter.config.file import parse_config

    config = parse_config(
        """
accounts:
  - name: a
    access_key: ak
    secret_key: sk
    max_runs: 1
    tasks: [{task_id: 1, job_id: 2}, {task_id: 1, job_id: 3}]
    discovery: {interval: 5m}
""",
        environ={},
    )
    assert config.warnings == (
        "accounts[0].max_runs: 1 is less than the 2 V1 pairs configured: "
        "the oldest runs will not be exported",
        "accounts[0].discovery: ignored without discover: true",
    )


# --- the size cap on upstream answers ---------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("33554432", 32 * 1024 * 1024), ("32MiB", 32 * 1024 * 1024), ("512KiB", 512 * 1024),
    ("1GiB", 1024**3), ("65536", 65536), ("'2 MiB'", 2 * 1024 * 1024),
])
def test_max_response_bytes(text: str, size: int) -> None:
    config = parse(MINIMAL + f"poll:\n  max_response_bytes: {text}\n")
    assert config.poll.max_response_bytes == size
    assert parse(MINIMAL).poll.max_response_bytes == 32 * 1024 * 1024  # the default


@pytest.mark.parametrize("text", ["32MB", "lots", "-1", "1.5MiB", "true", "1024", "2GiB"])
def test_bad_max_response_bytes(text: str) -> None:
    (problem,) = problems(MINIMAL + f"poll:\n  max_response_bytes: {text}\n")
    assert problem.startswith("poll.max_response_bytes: ")


def test_teams_on_accounts_jobs_pairs_and_discovery_rules() -> None:
    config = parse(
        """
        accounts:
          - name: a
            team: ml-platform
            jobs: [job-plain, {id: job-owned, team: nlp}, {id: job-nobody, team: ""}]
            tasks:
              - {task_id: 1, job_id: 2, team: vision.cv:eu}
              - {task_id: 3, job_id: 4}
            discover: true
            discovery:
              teams: [{match: '^nlp-', team: nlp}, {match: 'cv', team: vision}]
          - name: b
            jobs: [job-b]
        """
    )
    a, b = config.accounts
    assert (a.team, b.team) == ("ml-platform", "")
    # The long form is the same job id as the plain one: sharding and labels see the id.
    assert a.jobs == ("job-plain", "job-owned", "job-nobody")
    assert [getattr(job, "team", None) for job in a.jobs] == [None, "nlp", ""]
    assert [pair.team for pair in a.tasks] == ["vision.cv:eu", None]
    assert a.tasks[0] == V1Target(1, 2)  # the owner is not part of the pair's identity
    assert a.discovery.team_of("nlp-summarise") == "nlp"
    assert a.discovery.team_of("my-cv-nlp-") == "vision"
    assert a.discovery.team_of("ranking") is None


@pytest.mark.parametrize("team", ["nlp team", "x" * 65, "nlp/vision", "团队", 7])
def test_bad_team_values_are_refused_by_path(team: object) -> None:
    (problem,) = problems(f"accounts: [{{name: a, jobs: [{{id: job-x, team: {team!r}}}]}}]")
    assert problem.startswith("accounts[0].jobs[0].team: must be")


def test_the_examples_team_lines_are_valid_once_uncommented() -> None:
    """config.example.yaml shows the team settings commented out; as written there they
    must pass the checks."""
    example = (Path(__file__).parent.parent.parent / "config.example.yaml").read_text("utf-8")
    text = re.sub(r"(?m)^(\s*)# (team: |- \{id: |- \{task_id: |discovery:|\s+teams:|\s+- \{match)",
                  r"\1\2", example)
    assert text.count("team") > example.count("\n# team")  # something was uncommented
    config = parse_config(text, {"QIANFAN_ACCESS_KEY": AK, "QIANFAN_SECRET_KEY": SK})
    (account,) = config.accounts
    assert account.team == "ml-platform"
    assert [getattr(job, "team", None) for job in account.jobs] == [None, "nlp"]
    assert [pair.team for pair in account.tasks] == [None, "speech"]
    assert account.discovery.team_of("nlp-chat") == "nlp"


# --- size limit, aliases, bounds ---------------------------------------------------


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

