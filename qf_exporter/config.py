"""The configuration file: validated classes that report every problem at once.

``load_config`` reads YAML, replaces ``${VAR}`` from the environment, applies
defaults and checks every value. It either returns a complete ``Config`` or raises
``ConfigError`` listing each problem with its path (``accounts[0].qps: must be > 0``).
Secrets are held in ``Secret`` objects (secrets.py) whose ``repr`` and ``str`` never
show them.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qf_exporter import yamlfile
from qf_exporter.patterns import Pattern, PatternError, compile_pattern
from qf_exporter.secrets import Secret, redact

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENV_ACCESS_KEY",
    "ENV_SECRET_KEY",
    "Account",
    "Config",
    "ConfigError",
    "Discovery",
    "Poll",
    "Secret",  # lives in secrets.py; still importable from here for older imports
    "V1Target",
    "load_config",
    "parse_config",
    "parse_duration",
    "redact",  # lives in secrets.py; still importable from here for older imports
]

DEFAULT_ENDPOINT = "https://qianfan.baidubce.com"
ENV_ACCESS_KEY = "QIANFAN_ACCESS_KEY"
ENV_SECRET_KEY = "QIANFAN_SECRET_KEY"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class V1Target:
    task_id: int
    job_id: int

    @property
    def name(self) -> str:
        return f"{self.task_id}/{self.job_id}"


@dataclass(frozen=True)
class Discovery:
    """Which jobs ``discover: true`` adds (all of them unless filtered)."""

    interval: float = 600.0
    include: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    models: tuple[str, ...] = ()
    train_modes: tuple[str, ...] = ()
    max_age: float | None = None


@dataclass(frozen=True)
class Account:
    name: str
    access_key: Secret
    secret_key: Secret
    endpoint: str = DEFAULT_ENDPOINT
    qps: float = 5.0
    jobs: tuple[str, ...] = ()
    tasks: tuple[V1Target, ...] = ()
    discover: bool = False
    discovery: Discovery = field(default_factory=Discovery)
    max_runs: int | None = None

    def secrets(self) -> tuple[str, ...]:
        return (self.access_key.reveal(), self.secret_key.reveal())


@dataclass(frozen=True)
class Poll:
    interval: float = 60.0
    finished_interval: float = 1800.0
    stale_after: float = 600.0
    timeout: float = 10.0
    concurrency: int = 4
    retries: int = 3
    finished_retention: float | None = None
    # The most one upstream answer may hold once decoded (gzip inflates): a bigger
    # one is refused as invalid_response, so no answer can cost more memory than this.
    max_response_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    accounts: tuple[Account, ...]
    poll: Poll = field(default_factory=Poll)
    warnings: tuple[str, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for a in self.accounts for s in a.secrets() if s)


# --- parsing helpers ----------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``1h``, ``1h30m``, ``7d`` or plain seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s, 5m, 1h or a number of seconds")
    if isinstance(value, int | float):
        return _finite_seconds(float(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return _finite_seconds(number)
        pos, total = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return _finite_seconds(total)  # 400 digits of seconds is not a duration
    raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h or a number of seconds")


def _finite_seconds(number: float) -> float:
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be a duration like 30s, 5m, 1h or a number of seconds >= 0")
    return number


class _Checker:
    """Collects problems while walking the raw YAML."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.problems: list[str] = []
        self.environ = environ
        # Paths whose value used an unset ${VAR}: that is their problem, reported once.
        self.unresolved: set[str] = set()
        self._flagged: list[str] = []
        # Credential values seen anywhere; no problem line may show one.
        self.secrets: set[str] = {
            v.strip() for k, v in environ.items() if k in (ENV_ACCESS_KEY, ENV_SECRET_KEY)
        }

    def scrubbed(self) -> list[str]:
        # Very short values would blank out ordinary words; real keys are 32+ characters.
        secrets = [s for s in self.secrets if len(s) >= 6]
        return [redact(line, secrets) for line in self.problems]

    def problem(self, path: str, message: str) -> None:
        self._flagged.append(path)
        element = re.compile(re.escape(path) + r"\[\d+\]")
        if any(u == path or element.fullmatch(u) for u in self.unresolved):
            return  # a consequence of the unset environment variable already reported
        self.problems.append(f"{path}: {message}")

    def flagged(self, path: str) -> bool:
        """Whether ``path`` or anything below it had a problem (or an unset variable)."""
        return any(
            p == path or p.startswith((path + ".", path + "["))
            for p in (*self._flagged, *self.unresolved)
        )

    def expand(self, value: Any, path: str) -> Any:
        """Replace ``${VAR}`` in strings from the environment (recursively)."""
        if isinstance(value, str):
            missing = [m for m in _ENV_REF.findall(value) if m not in self.environ]
            for name in dict.fromkeys(missing):
                self.problems.append(f"{path}: environment variable {name} is not set")
            if missing:
                self.unresolved.add(path)
            return _ENV_REF.sub(lambda m: self.environ.get(m.group(1), ""), value)
        if isinstance(value, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, _join(path, str(k))) for k, v in value.items()}
        return value

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path or "(top level)", "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.problem(_join(path, str(key)), "unknown key" + hint)
        return value

    def get(
        self,
        raw: Mapping[str, Any],
        path: str,
        key: str,
        convert: Callable[[Any], Any],
        default: Any,
    ) -> Any:
        if key not in raw or raw[key] is None:
            return default
        try:
            return convert(raw[key])
        except (TypeError, ValueError, OverflowError) as exc:
            self.problem(_join(path, key), str(exc))
            return default


def _join(path: str, key: str) -> str:
    if not key.isprintable():
        key = repr(key)  # a key with a newline must not split its problem line in two
    return f"{path}.{key}" if path else key


def _positive(convert: Callable[[Any], float]) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        result = convert(value)
        if not result > 0:
            raise ValueError("must be > 0")
        return result

    return check


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def _show_duration(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _limits(
    convert: Callable[[Any], Any],
    low: float | None = None,
    high: float | None = None,
    show: Callable[[float], str] = lambda v: f"{v:g}" if v % 1 else str(int(v)),
) -> Callable[[Any], Any]:
    """``convert``, then a range check: values that are valid but would make the
    exporter misbehave (an interval of 1 ms floods the log, one of 1e14 s overflows
    the scheduler, a timeout of 1e10 s overflows the socket) are refused up front."""

    def check(value: Any) -> Any:
        result = convert(value)
        if low is not None and result < low:
            raise ValueError(f"must be at least {show(low)}")
        if high is not None and result > high:
            raise ValueError(f"must be at most {show(high)}")
        return result

    return check


def _number(value: Any) -> float:
    # A numeric string is accepted: ``qps: ${QPS}`` gives one.
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


_SIZE = re.compile(r"\s*([0-9]+)\s*(B|KiB|MiB|GiB)?\s*")
_SIZE_UNIT = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
MIN_RESPONSE_BYTES = 64 * 1024  # the largest documented answer (a 100-run page) fits
MAX_RESPONSE_BYTES = 1024**3


def _size(value: Any) -> int:
    """A size in bytes: ``33554432``, or ``512KiB``, ``32MiB``, ``1GiB``."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError("must be a size in bytes, or like 512KiB, 32MiB, 1GiB")
        return int(match.group(1)) * _SIZE_UNIT[match.group(2)]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a size in bytes, or like 512KiB, 32MiB, 1GiB")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _regex_list(value: Any) -> tuple[Pattern, ...]:
    """Patterns in RE2 syntax (linear-time matching, as Prometheus)."""
    patterns = []
    for text in _string_list(value):
        try:
            patterns.append(compile_pattern(text))
        except PatternError as exc:
            raise ValueError(
                f"{text!r} is not a valid regular expression: {exc} (RE2 syntax)"
            ) from None
    return tuple(patterns)


_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_JOB_ID = re.compile(r"^\S{1,128}$")

_TOP_KEYS = {"accounts", "poll"}
_POLL_KEYS = {
    "interval",
    "finished_interval",
    "stale_after",
    "timeout",
    "concurrency",
    "retries",
    "finished_retention",
    "max_response_bytes",
}
_ACCOUNT_KEYS = {
    "name",
    "endpoint",
    "access_key",
    "secret_key",
    "secret_key_file",
    "qps",
    "jobs",
    "tasks",
    "discover",
    "discovery",
    "max_runs",
}
_DISCOVERY_KEYS = {"interval", "include", "exclude", "models", "train_modes", "max_age"}


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
    c = _Checker(env)
    top = c.mapping(raw, "", _TOP_KEYS)
    literal_secrets = (
        [
            f"accounts[{i}].secret_key"
            for i, item in enumerate(top.get("accounts") or [])
            if isinstance(item, dict)
            and isinstance(item.get("secret_key"), str)
            and _ENV_REF.sub("", item["secret_key"]).strip()
        ]
        if isinstance(top.get("accounts"), list)
        else []
    )
    top = c.expand(top, "")
    for item in top.get("accounts") if isinstance(top.get("accounts"), list) else []:
        if isinstance(item, dict):
            for key in ("access_key", "secret_key"):
                if isinstance(item.get(key), str):
                    c.secrets.add(item[key].strip())
    poll = _poll(c, c.mapping(top.get("poll"), "poll", _POLL_KEYS))
    accounts_raw = top.get("accounts")
    accounts: list[Account] = []
    warnings: list[str] = []
    if not isinstance(accounts_raw, list) or not accounts_raw:
        c.problem("accounts", "must be a non-empty list of accounts")
    else:
        names: set[str] = set()
        for i, item in enumerate(accounts_raw):
            account = _account(c, item, f"accounts[{i}]", env, warnings, base)
            if account is None:
                continue
            if account.name in names:
                c.problem(f"accounts[{i}].name", f"duplicate account name {account.name!r}")
            names.add(account.name)
            accounts.append(account)
    if c.problems:
        raise ConfigError(c.scrubbed())
    return Config(tuple(accounts), poll, tuple(warnings)), literal_secrets


# Bounds (README, "Configuration"): what lies outside them is a mistake, or would make
# the exporter misbehave, so --config.check refuses it.
INTERVAL_BOUNDS = (1.0, DAY)  # poll.interval, poll.finished_interval, discovery.interval
MAX_STALE_AFTER = 7 * DAY
MAX_AGE = 3650 * DAY  # poll.finished_retention, discovery.max_age
MAX_CONCURRENCY = 64
MAX_RETRIES = 10
QPS_BOUNDS = (0.01, 1000.0)
MAX_RUNS = 1_000_000


def _poll(c: _Checker, raw: dict[str, Any]) -> Poll:
    d = Poll()
    period = _limits(_positive(parse_duration), *INTERVAL_BOUNDS, show=_show_duration)
    interval = c.get(raw, "poll", "interval", period, d.interval)
    finished = c.get(raw, "poll", "finished_interval", period, d.finished_interval)
    stale = c.get(
        raw,
        "poll",
        "stale_after",
        _limits(_positive(parse_duration), high=MAX_STALE_AFTER, show=_show_duration),
        d.stale_after,
    )
    timeout = c.get(
        raw,
        "poll",
        "timeout",
        _limits(_positive(parse_duration), high=INTERVAL_BOUNDS[1], show=_show_duration),
        d.timeout,
    )
    concurrency = c.get(
        raw, "poll", "concurrency", _limits(_positive(_integer), high=MAX_CONCURRENCY),
        d.concurrency,
    )
    retries = c.get(raw, "poll", "retries", _integer, d.retries)
    if retries < 0:
        c.problem("poll.retries", "must be >= 0")
    elif retries > MAX_RETRIES:
        c.problem("poll.retries", f"must be at most {MAX_RETRIES}")
    retention = c.get(
        raw,
        "poll",
        "finished_retention",
        _limits(parse_duration, high=MAX_AGE, show=_show_duration),
        None,
    )
    max_bytes = c.get(raw, "poll", "max_response_bytes", _size, d.max_response_bytes)
    if not MIN_RESPONSE_BYTES <= max_bytes <= MAX_RESPONSE_BYTES:
        c.problem("poll.max_response_bytes", "must be between 64KiB and 1GiB")
    # Compare only values that were given and valid (not a default standing in).
    given = {
        key: not c.flagged(f"poll.{key}")
        for key in ("interval", "finished_interval", "stale_after", "timeout")
    }
    if given["interval"] and given["finished_interval"] and finished < interval:
        c.problem("poll.finished_interval", "must be >= poll.interval")
    if given["interval"] and given["stale_after"] and stale < interval:
        c.problem("poll.stale_after", "must be >= poll.interval")
    if given["interval"] and given["timeout"] and timeout > interval:
        # A read would still be waiting when the next poll is due.
        c.problem("poll.timeout", "must be <= poll.interval")
    return Poll(interval, finished, stale, timeout, concurrency, retries, retention, max_bytes)


def _endpoint(value: Any) -> str:
    text = _string(value).strip().rstrip("/")
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


def _account(
    c: _Checker,
    item: Any,
    path: str,
    env: Mapping[str, str],
    warnings: list[str],
    base: Path | None,
) -> Account | None:
    raw = c.mapping(item, path, _ACCOUNT_KEYS)
    if not isinstance(item, dict):
        return None
    name = c.get(raw, path, "name", _string, None)
    if name is None:
        if raw.get("name") is None:
            c.problem(f"{path}.name", "is required")
        name = ""
    elif not _ACCOUNT_NAME.match(name):
        c.problem(f"{path}.name", "must be 1-64 characters of letters, digits, _ . : -")
    endpoint = c.get(raw, path, "endpoint", _endpoint, DEFAULT_ENDPOINT)
    qps = c.get(raw, path, "qps", _limits(_positive(_number), *QPS_BOUNDS), 5.0)
    jobs = c.get(raw, path, "jobs", _string_list, ())
    for j, job in enumerate(jobs):
        if not _JOB_ID.match(job):
            c.problem(f"{path}.jobs[{j}]", "must be a job id without spaces")
    if len(set(jobs)) != len(jobs):
        c.problem(f"{path}.jobs", "lists a job more than once")
    tasks = _tasks(c, raw.get("tasks"), f"{path}.tasks")
    discover = c.get(raw, path, "discover", _boolean, False)
    discovery = _discovery(
        c,
        c.mapping(raw.get("discovery"), f"{path}.discovery", _DISCOVERY_KEYS),
        f"{path}.discovery",
    )
    max_runs = c.get(raw, path, "max_runs", _limits(_positive(_integer), high=MAX_RUNS), None)
    if max_runs is not None and max_runs < len(tasks):
        warnings.append(
            f"{path}.max_runs: {max_runs} is less than the {len(tasks)} V1 pairs configured: "
            "the oldest runs will not be exported"
        )
    if raw.get("discovery") is not None and not discover:
        warnings.append(f"{path}.discovery: ignored without discover: true")
    if (
        not jobs
        and not tasks
        and not discover
        and not any(c.flagged(f"{path}.{key}") for key in ("jobs", "tasks", "discover"))
    ):
        c.problem(path, "has nothing to poll: give jobs, tasks or discover: true")
    access_key, secret_key = _credentials(c, raw, path, env, warnings, base)
    if access_key is None or secret_key is None:
        return None
    return Account(
        name=name,
        access_key=access_key,
        secret_key=secret_key,
        endpoint=endpoint,
        qps=qps,
        jobs=jobs,
        tasks=tasks,
        discover=discover,
        discovery=discovery,
        max_runs=max_runs,
    )


def _tasks(c: _Checker, raw: Any, path: str) -> tuple[V1Target, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.problem(path, "must be a list of {task_id, job_id}")
        return ()
    result: list[V1Target] = []
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        entry = c.mapping(item, p, {"task_id", "job_id"})
        if not isinstance(item, dict):
            continue
        ids = []
        for key in ("task_id", "job_id"):
            value = entry.get(key)
            # ASCII digits only ("²".isdigit() is true, int("²") fails); an id fits int64.
            if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
                c.problem(f"{p}.{key}", "is required and must be a positive integer")
            else:
                ids.append(value)
        if len(ids) == 2:
            target = V1Target(ids[0], ids[1])
            if target in result:
                c.problem(p, f"duplicate task/job pair {target.name}")
            result.append(target)
    return tuple(result)


def _discovery(c: _Checker, raw: dict[str, Any], path: str) -> Discovery:
    d = Discovery()
    return Discovery(
        interval=c.get(
            raw,
            path,
            "interval",
            _limits(_positive(parse_duration), *INTERVAL_BOUNDS, show=_show_duration),
            d.interval,
        ),
        include=c.get(raw, path, "include", _regex_list, ()),
        exclude=c.get(raw, path, "exclude", _regex_list, ()),
        models=c.get(raw, path, "models", _string_list, ()),
        train_modes=c.get(raw, path, "train_modes", _string_list, ()),
        max_age=c.get(
            raw,
            path,
            "max_age",
            _limits(_positive(parse_duration), high=MAX_AGE, show=_show_duration),
            None,
        ),
    )


def _credential(
    c: _Checker, raw: dict[str, Any], path: str, key: str, fallback: str | None, required: str
) -> str | None:
    """A key's value from the config, else from the environment; never shown in a problem."""
    value = raw.get(key)
    if value is None:
        value = fallback
        if value is None or not value.strip():
            c.problem(f"{path}.{key}", required)
            return None
    if not isinstance(value, str):
        c.problem(f"{path}.{key}", "must be a string (quote it)")
        return None
    if not value.strip():
        c.problem(f"{path}.{key}", "must not be empty")
        return None
    return value.strip()


def _credentials(
    c: _Checker,
    raw: dict[str, Any],
    path: str,
    env: Mapping[str, str],
    warnings: list[str],
    base: Path | None,
) -> tuple[Secret | None, Secret | None]:
    access = _credential(
        c,
        raw,
        path,
        "access_key",
        env.get(ENV_ACCESS_KEY),
        f"is required (or set {ENV_ACCESS_KEY})",
    )
    secret_file = raw.get("secret_key_file")
    secret: str | None = None
    if raw.get("secret_key") is not None and secret_file is not None:
        c.problem(f"{path}.secret_key_file", "give secret_key or secret_key_file, not both")
        return None, None
    if secret_file is not None:
        p = f"{path}.secret_key_file"
        if not isinstance(secret_file, str) or not secret_file.strip():
            c.problem(p, "must be a file path")
            return None, None
        file = Path(secret_file)
        if base is not None and not file.is_absolute():
            file = base / file
        try:
            # A regular file of a few KiB: a FIFO would hang the read (and every later
            # reload), /dev/zero would fill the memory.
            text, info = yamlfile.read_text(file, yamlfile.MAX_SECRET_BYTES)
        except OSError as exc:
            c.problem(p, f"cannot read {file}: {exc.strerror or exc}")
            return None, None
        except yamlfile.FileRefused as exc:
            c.problem(p, f"{file} is {exc}")
            return None, None
        secret = text.strip()
        c.secrets.add(secret)
        world_readable = bool(info.st_mode & stat.S_IROTH)
        if not secret:
            c.problem(p, f"{file} is empty")
            return None, None
        if world_readable:
            warnings.append(f"{p} {file} can be read by every user: chmod o-r it")
    else:
        secret = _credential(
            c,
            raw,
            path,
            "secret_key",
            env.get(ENV_SECRET_KEY),
            f"is required (or secret_key_file, or set {ENV_SECRET_KEY})",
        )
    if access is None or secret is None:
        return None, None
    return Secret(access), Secret(secret)
