"""The configuration file: what it may hold, and reading it with every problem at once.

Each key is declared once, as a field of the class that holds it (``Poll``,
``Discovery``, ``Account``, ``V1Target``): its default, its converter and its bounds.
The keys a section may hold, the reading and the problem messages all follow from
those declarations (fields.py); only what spans several keys (the credentials,
the order of the poll intervals, duplicate names) is written out here.

``load_config`` reads YAML, replaces ``${VAR}`` from the environment, applies defaults
and checks every value. It either returns a complete ``Config`` or raises
``ConfigError`` listing each problem with its path (``accounts[0].qps: must be > 0``).
Secrets are held in ``Secret`` objects (util/secrets.py) whose ``repr`` and ``str`` never
show them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qf_exporter.config.fields import (
    DAY,
    Bound,
    Checker,
    Problem,
    Scalar,
    boolean,
    integer,
    join,
    key,
    keys_of,
    number_or_raise,
    parse_duration,
    read_by,
    read_fields,
    read_list,
    regex,
    regex_list,
    section,
    show_duration,
    size,
    string,
    string_list,
)
from qf_exporter.config.patterns import Pattern
from qf_exporter.util import yamlfile
from qf_exporter.util.secrets import Secret

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENV_ACCESS_KEY",
    "ENV_SECRET_KEY",
    "Account",
    "Config",
    "ConfigError",
    "Discovery",
    "Poll",
    "TeamRule",
    "V1Target",
    "V2Job",
    "load_config",
    "parse_config",
    "parse_duration",
]

DEFAULT_ENDPOINT = "https://qianfan.baidubce.com"
ENV_ACCESS_KEY = "QIANFAN_ACCESS_KEY"
ENV_SECRET_KEY = "QIANFAN_SECRET_KEY"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- bounds (docs/configuration.md, "What is refused, and why") ---------------------------
# What lies outside them is a mistake, or would make the exporter misbehave, so
# --config.check refuses it.
INTERVAL_BOUNDS = (1.0, DAY)  # poll.interval, poll.finished_interval, discovery.interval
MAX_STALE_AFTER = 7 * DAY
MAX_AGE = 3650 * DAY  # poll.finished_retention, discovery.max_age
MAX_CONCURRENCY = 64
MAX_RETRIES = 10
QPS_BOUNDS = (0.01, 1000.0)
MAX_RUNS = 1_000_000
MIN_RESPONSE_BYTES = 64 * 1024  # the largest documented answer (a 100-run page) fits
MAX_RESPONSE_BYTES = 1024**3
DEFAULT_TIMEOUT = 10.0  # poll.timeout when unset, unless poll.interval is shorter

_PERIOD = Bound(*INTERVAL_BOUNDS, above_zero=True, show=show_duration)
_AGE = Bound(high=MAX_AGE, above_zero=True, show=show_duration)
_RETENTION = Bound(high=MAX_AGE, show=show_duration)  # 0s: finished runs are not kept
_SIZE_RANGE = "must be between 64KiB and 1GiB"
_ID_PROBLEM = "is required and must be a positive integer"
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_JOB_ID = re.compile(r"^\S{1,128}$")
_TEAM = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")


def _account_name(name: str) -> list[tuple[str, str]]:
    if _ACCOUNT_NAME.match(name):
        return []
    return [("", "must be 1-64 characters of letters, digits, _ . : -")]


def _team(team: str) -> list[Problem]:
    """The ``team`` label's value (who owns a run, for alert routing); empty means no
    owner."""
    if _TEAM.match(team):
        return []
    return [("", "must be at most 64 characters of letters, digits, _ . : -")]


def _job_id(job_id: str) -> list[Problem]:
    return [] if _JOB_ID.match(job_id) else [("", "must be a job id without spaces")]


def _endpoint(value: Any) -> str:
    text = string(value).strip().rstrip("/")
    problem = "must be an http:// or https:// URL with a host and no path, query or user"
    try:
        url = urlsplit(text)
        port_ok = url.port is None or url.port > 0
    except ValueError:
        raise ValueError(problem) from None
    if (
        url.scheme not in ("http", "https")
        or not url.hostname
        or not port_ok
        or url.path
        or url.query
        or url.fragment
        or "@" in url.netloc
        or any(ch.isspace() for ch in text)
    ):
        raise ValueError(problem)
    return text


def _id(value: Any) -> int:
    # ASCII digits only ("²".isdigit() is true, int("²") fails); an id fits int64.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValueError(_ID_PROBLEM)
    return value


# --- the file's sections, one declaration per key --------------------------------------


@dataclass(frozen=True)
class V1Target:
    task_id: int = field(metadata=key(_id, required=_ID_PROBLEM))
    job_id: int = field(metadata=key(_id, required=_ID_PROBLEM))
    # Who owns the pair's run (None: the account's team). Not part of the pair's identity.
    team: str | None = field(default=None, compare=False, metadata=key(string, _team))

    @property
    def name(self) -> str:
        return f"{self.task_id}/{self.job_id}"


def _tasks(c: Checker, value: Any, path: str, default: Any) -> tuple[V1Target, ...]:
    """``tasks:``, a list of {task_id, job_id, team?}, no pair given twice."""
    result: list[V1Target] = []
    for where, ids in read_list(c, value, path, V1Target, "must be a list of {task_id, job_id}"):
        target = V1Target(**ids)
        if target in result:
            c.problem(where, f"duplicate task/job pair {target.name}")
        result.append(target)
    return tuple(result)


class V2Job(str):
    """A V2 job id, with the team that owns its runs when the file names one.

    It compares and hashes as the id itself: sharding, discovery and the ``target``
    label take it as the plain string it is, and code that builds an ``Account`` may
    pass plain ids.
    """

    team: str | None

    def __new__(cls, job_id: str, team: str | None = None) -> V2Job:
        job = super().__new__(cls, job_id)
        job.team = team
        return job


_JOB = Scalar(string, (_job_id,))


@dataclass(frozen=True)
class _JobEntry:
    """The long form of a ``jobs:`` item, ``{id: job-x, team: nlp}``."""

    id: str = field(metadata=key(string, _job_id, required="is required"))
    team: str | None = field(default=None, metadata=key(string, _team))


def _job(c: Checker, item: str | dict[str, Any], where: str) -> V2Job | None:
    if isinstance(item, str):
        return V2Job(_JOB(c, item, where, ""))
    entry = read_fields(c, c.mapping(item, where, keys_of(_JobEntry)), where, _JobEntry)
    return V2Job(entry["id"], entry["team"]) if "id" in entry else None


def _jobs(c: Checker, value: Any, path: str, default: Any) -> tuple[V2Job, ...]:
    """``jobs:``, a list of job ids (``- job-x``) or ``{id, team}``, none given twice."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(
        isinstance(v, dict) or (isinstance(v, str) and v) for v in items
    ):
        c.problem(path, "must be a list of non-empty strings (job ids) or {id, team}")
        return ()
    jobs = [job for i, item in enumerate(items) if (job := _job(c, item, f"{path}[{i}]"))]
    if len(set(jobs)) != len(jobs):
        c.problem(path, "lists a job more than once")
    return tuple(jobs)


@dataclass(frozen=True)
class TeamRule:
    """A ``discovery.teams`` rule: the jobs whose name ``match`` finds are ``team``'s."""

    match: Pattern = field(metadata=key(regex, required="is required"))
    team: str = field(metadata=key(string, _team, required="is required"))


def _team_rules(c: Checker, value: Any, path: str, default: Any) -> tuple[TeamRule, ...]:
    return tuple(TeamRule(**rule) for _, rule in read_list(
        c, value, path, TeamRule, "must be a list of {match, team}"))


@dataclass(frozen=True)
class Discovery:
    """Which jobs ``discover: true`` adds (all of them unless filtered)."""

    interval: float = field(default=600.0, metadata=key(parse_duration, _PERIOD))
    include: tuple[Pattern, ...] = field(default=(), metadata=key(regex_list))
    exclude: tuple[Pattern, ...] = field(default=(), metadata=key(regex_list))
    models: tuple[str, ...] = field(default=(), metadata=key(string_list))
    train_modes: tuple[str, ...] = field(default=(), metadata=key(string_list))
    max_age: float | None = field(default=None, metadata=key(parse_duration, _AGE))
    # Who owns a listed job: the first rule whose pattern its name matches.
    teams: tuple[TeamRule, ...] = field(default=(), metadata=read_by(_team_rules))

    def team_of(self, job_name: str) -> str | None:
        """The team of the first rule that matches ``job_name`` (None: no rule does)."""
        return next((rule.team for rule in self.teams if rule.match.search(job_name)), None)


@dataclass(frozen=True)
class Account:
    name: str = field(metadata=key(string, _account_name, required="is required"))
    # Read together, after every other key: see _credentials.
    access_key: Secret = field(metadata=read_by(None))
    secret_key: Secret = field(metadata=read_by(None, also=("secret_key_file",)))
    endpoint: str = field(default=DEFAULT_ENDPOINT, metadata=key(_endpoint))
    qps: float = field(default=5.0,
                       metadata=key(number_or_raise, Bound(*QPS_BOUNDS, above_zero=True)))
    # The default owner of the account's runs (the ``team`` label): "" for none.
    team: str = field(default="", metadata=key(string, _team))
    jobs: tuple[str, ...] = field(default=(), metadata=read_by(_jobs))
    tasks: tuple[V1Target, ...] = field(default=(), metadata=read_by(_tasks))
    discover: bool = field(default=False, metadata=key(boolean))
    discovery: Discovery = field(default_factory=Discovery, metadata=section(Discovery))
    max_runs: int | None = field(
        default=None, metadata=key(integer, Bound(high=MAX_RUNS, above_zero=True))
    )

    def secrets(self) -> tuple[str, ...]:
        return (self.access_key.reveal(), self.secret_key.reveal())

    @property
    def owners(self) -> tuple[str | None, ...]:
        """The team named for each job and V1 pair, in order (None: not named). Not
        part of ``==``, where a job is its id and a pair its two ids: a reload compares
        it too."""
        return tuple(job.team if isinstance(job, V2Job) else None for job in self.jobs) + tuple(
            pair.team for pair in self.tasks)


@dataclass(frozen=True)
class Poll:
    interval: float = field(default=60.0, metadata=key(parse_duration, _PERIOD))
    finished_interval: float = field(default=1800.0, metadata=key(parse_duration, _PERIOD))
    stale_after: float = field(
        default=600.0,
        metadata=key(parse_duration, Bound(high=MAX_STALE_AFTER, above_zero=True,
                                           show=show_duration)),
    )
    # Left unset in the file, it is min(10s, interval) (see _parse).
    timeout: float = field(
        default=DEFAULT_TIMEOUT,
        metadata=key(parse_duration, Bound(high=DAY, above_zero=True, show=show_duration)),
    )
    concurrency: int = field(
        default=4, metadata=key(integer, Bound(high=MAX_CONCURRENCY, above_zero=True))
    )
    retries: int = field(
        default=3, metadata=key(integer, Bound(0, MAX_RETRIES, below="must be >= 0"))
    )
    finished_retention: float | None = field(
        default=None, metadata=key(parse_duration, _RETENTION)
    )
    # The most one upstream answer may hold once decoded (gzip inflates): a bigger
    # one is refused as invalid_response, so no answer can cost more memory than this.
    max_response_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata=key(
            size,
            Bound(MIN_RESPONSE_BYTES, MAX_RESPONSE_BYTES, below=_SIZE_RANGE, above=_SIZE_RANGE),
        ),
    )


@dataclass(frozen=True)
class Config:
    # accounts are read by _accounts: names must differ across the list.
    accounts: tuple[Account, ...] = field(metadata=read_by(None))
    poll: Poll = field(default_factory=Poll, metadata=section(Poll))
    warnings: tuple[str, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for a in self.accounts for s in a.secrets() if s)


# --- the loader -----------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises ``ConfigError`` with every problem.

    The file must be a regular file of at most 1 MiB (a FIFO or a device would block
    or never end).
    """
    try:
        text, info = yamlfile.read_text(path, yamlfile.MAX_FILE_BYTES)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    except yamlfile.FileRefused as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    config, literal_secrets = _parse(
        text, environ, source=str(path), base=Path(path).resolve().parent
    )
    warnings = []
    world_readable = bool(info.st_mode & stat.S_IROTH)
    if world_readable and literal_secrets:
        warnings.append(
            f"{path} holds a secret_key ({', '.join(literal_secrets)}) and can be read by "
            f"every user on this machine: chmod o-r it, or use secret_key_file or "
            f"{ENV_SECRET_KEY}"
        )
    return Config(config.accounts, config.poll, tuple(warnings) + config.warnings)


def parse_config(
    text: str,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
    base: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate config text; relative ``secret_key_file`` paths are taken from ``base``
    (the config file's directory; the working directory when not given)."""
    return _parse(text, environ, source, Path(base) if base is not None else None)[0]


def _parse(
    text: str, environ: Mapping[str, str] | None, source: str, base: Path | None
) -> tuple[Config, list[str]]:
    """The config and the paths of the secret_keys written literally into the text."""
    env = os.environ if environ is None else environ
    try:
        raw = yamlfile.parse(text)  # safe, strict and bounded: see yamlfile
    except yamlfile.YamlRefused as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError([f"{source}: must be a mapping with accounts (and poll)"])
    c = Checker(env, (v.strip() for k, v in env.items() if k in (ENV_ACCESS_KEY, ENV_SECRET_KEY)))
    # Every ${VAR} first: an unset one is its value's only problem, reported in file order.
    top = c.expand(c.mapping(raw, "", keys_of(Config)), "")
    poll: Poll = read_fields(c, top, "", Config)["poll"]
    raw_poll = top.get("poll")
    timeout_given = isinstance(raw_poll, dict) and raw_poll.get("timeout") is not None
    if not timeout_given:
        # As Prometheus' scrape_timeout: the default never exceeds the interval.
        poll = replace(poll, timeout=min(DEFAULT_TIMEOUT, poll.interval))
    _poll_order(c, poll, timeout_given)
    accounts, literal_secrets = _accounts(c, top.get("accounts"), env, base)
    if c.problems:
        raise ConfigError(c.scrubbed())
    return Config(accounts, poll, tuple(c.warnings)), literal_secrets


def _poll_order(c: Checker, poll: Poll, timeout_given: bool) -> None:
    """The intervals against each other, where both were given and valid (comparing a
    value already refused would invent a second problem)."""
    given = {
        name: not c.flagged(f"poll.{name}")
        for name in ("interval", "finished_interval", "stale_after", "timeout")
    }
    if not given["interval"]:
        return
    if given["finished_interval"] and poll.finished_interval < poll.interval:
        c.problem("poll.finished_interval", "must be >= poll.interval")
    if given["stale_after"] and poll.stale_after < poll.interval:
        c.problem("poll.stale_after", "must be >= poll.interval")
    if timeout_given and given["timeout"] and poll.timeout > poll.interval:
        # A read would still be waiting when the next poll is due.
        c.problem("poll.timeout", f"must be <= poll.interval: lower poll.timeout to at most "
                  f"{show_duration(poll.interval)} (or leave it unset: it is then "
                  f"min(10s, poll.interval))")


def _accounts(
    c: Checker, value: Any, env: Mapping[str, str], base: Path | None
) -> tuple[tuple[Account, ...], list[str]]:
    """Every account, in one pass, and the paths of secret_keys written into the file."""
    if not isinstance(value, list) or not value:
        c.problem("accounts", "must be a non-empty list of accounts")
        return (), []
    accounts: list[Account] = []
    literal_secrets: list[str] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        path = f"accounts[{i}]"
        if join(path, "secret_key") in c.literal:
            literal_secrets.append(join(path, "secret_key"))
        account = _account(c, item, path, env, base)
        if account is None:
            continue
        if account.name in names:
            c.problem(f"{path}.name", f"duplicate account name {account.name!r}")
        names.add(account.name)
        accounts.append(account)
    return tuple(accounts), literal_secrets


def _account(
    c: Checker, item: Any, path: str, env: Mapping[str, str], base: Path | None
) -> Account | None:
    """One account; None when it has no usable credentials (the problem is reported)."""
    if item is None:
        # An absent section means its defaults; an empty list item is a mistake (a
        # stray "-"), and an account has no defaults to fall back on.
        c.problem(path, "must be an account (a mapping with name and credentials), not empty")
        return None
    raw = c.mapping(item, path, keys_of(Account))
    if not isinstance(item, dict):
        return None
    for name in ("access_key", "secret_key"):
        if isinstance(raw.get(name), str):
            c.secrets.add(raw[name].strip())
    values = read_fields(c, raw, path, Account)
    _account_rules(c, raw, values, path)
    access_key, secret_key = _credentials(c, raw, path, env, base)
    if access_key is None or secret_key is None:
        return None
    # A nameless account (already a problem) still counts once among the names.
    values.setdefault("name", "")
    return Account(access_key=access_key, secret_key=secret_key, **values)


def _account_rules(c: Checker, raw: dict[str, Any], values: dict[str, Any], path: str) -> None:
    """What spans an account's keys: something to poll, and settings that do nothing."""
    jobs, tasks, discover = values["jobs"], values["tasks"], values["discover"]
    max_runs = values["max_runs"]
    if max_runs is not None and max_runs < len(tasks):
        c.warnings.append(
            f"{path}.max_runs: {max_runs} is less than the {len(tasks)} V1 pairs configured: "
            "the oldest runs will not be exported"
        )
    if raw.get("discovery") is not None and not discover:
        c.warnings.append(f"{path}.discovery: ignored without discover: true")
    if (
        not jobs
        and not tasks
        and not discover
        and not any(c.flagged(f"{path}.{name}") for name in ("jobs", "tasks", "discover"))
    ):
        c.problem(path, "has nothing to poll: give jobs, tasks or discover: true")


# --- credentials: from the file, a secret_key_file or the environment ------------------


def _credential(
    c: Checker, raw: dict[str, Any], path: str, name: str, fallback: str | None, required: str
) -> str | None:
    """A key's value from the config, else from the environment; never shown in a problem."""
    value = raw.get(name)
    if value is None:
        value = fallback
        if value is None or not value.strip():
            c.problem(f"{path}.{name}", required)
            return None
    if not isinstance(value, str):
        c.problem(f"{path}.{name}", "must be a string (quote it)")
        return None
    if not value.strip():
        c.problem(f"{path}.{name}", "must not be empty")
        return None
    return value.strip()


def _credentials(
    c: Checker, raw: dict[str, Any], path: str, env: Mapping[str, str], base: Path | None
) -> tuple[Secret | None, Secret | None]:
    access = _credential(
        c, raw, path, "access_key", env.get(ENV_ACCESS_KEY),
        f"is required (or set {ENV_ACCESS_KEY})",
    )
    secret_file = raw.get("secret_key_file")
    if raw.get("secret_key") is not None and secret_file is not None:
        c.problem(f"{path}.secret_key_file", "give secret_key or secret_key_file, not both")
        return None, None
    if secret_file is not None:
        secret = _secret_key_file(c, secret_file, f"{path}.secret_key_file", base)
    else:
        secret = _credential(
            c, raw, path, "secret_key", env.get(ENV_SECRET_KEY),
            f"is required (or secret_key_file, or set {ENV_SECRET_KEY})",
        )
    if access is None or secret is None:
        return None, None
    return Secret(access), Secret(secret)


def _secret_key_file(c: Checker, value: Any, path: str, base: Path | None) -> str | None:
    """The secret key held in the file ``value`` names (relative to ``base``)."""
    if not isinstance(value, str) or not value.strip():
        c.problem(path, "must be a file path")
        return None
    file = Path(value)
    if base is not None and not file.is_absolute():
        file = base / file
    try:
        # A regular file of a few KiB: a FIFO would hang the read (and every later
        # reload), /dev/zero would fill the memory.
        text, info = yamlfile.read_text(file, yamlfile.MAX_SECRET_BYTES)
    except OSError as exc:
        c.problem(path, f"cannot read {file}: {exc.strerror or exc}")
        return None
    except yamlfile.FileRefused as exc:
        c.problem(path, f"{file} is {exc}")
        return None
    secret = text.strip()
    c.secrets.add(secret)
    if not secret:
        c.problem(path, f"{file} is empty")
        return None
    if info.st_mode & stat.S_IROTH:
        c.warnings.append(f"{path} {file} can be read by every user: chmod o-r it")
    return secret
