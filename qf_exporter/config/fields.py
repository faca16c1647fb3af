"""Declared configuration keys, and the reader that checks a file against them.

A key of the configuration file is declared once, as the field of the dataclass that
holds its value: the default is the field's default, and the field's metadata (made by
``key``, ``section`` or ``read_by``) holds how the written value is converted and what
it must satisfy. From those declarations follow the set of keys a mapping may hold
(``keys_of``), the reading of a whole section (``read_fields``) and every problem
message, each with the path of the value it is about (``poll.interval: must be at
least 1s``).

``Checker`` collects problems and warnings instead of stopping at the first one, so
that an operator sees everything wrong with a file at once. Nothing here knows which
keys the exporter has: that is file.py.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from qf_exporter.config.patterns import Pattern, PatternError, compile_pattern
from qf_exporter.util.secrets import redact

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

Problem = tuple[str, str]
"""What a check found: where below the key's path (``""`` or ``"[2]"``), and what."""

Check = Callable[[Any], Iterable[Problem]]
"""A rule a converted value must satisfy: the problems it finds (none: the value is fine)."""

Reader = Callable[["Checker", Any, str, Any], Any]
"""Reads one key: (checker, the value as written or None, its path, the field's default)
-> the value, or ``dataclasses.MISSING`` when a key without a default could not be read."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def join(path: str, key: str) -> str:
    if not key.isprintable():
        key = repr(key)  # a key with a newline must not split its problem line in two
    return f"{path}.{key}" if path else key


class Checker:
    """Collects problems and warnings while the raw YAML is walked."""

    def __init__(self, environ: Mapping[str, str], secrets: Iterable[str] = ()) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.environ = environ
        # Paths whose value used an unset ${VAR}: that is their problem, reported once.
        self.unresolved: set[str] = set()
        # Paths whose string held text of its own besides ${VAR} references.
        self.literal: set[str] = set()
        self._flagged: list[str] = []
        # Credential values seen anywhere; no problem line may show one.
        self.secrets: set[str] = set(secrets)

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
            if _ENV_REF.sub("", value).strip():
                self.literal.add(path)
            return _ENV_REF.sub(lambda m: self.environ.get(m.group(1), ""), value)
        if isinstance(value, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, join(path, str(k))) for k, v in value.items()}
        return value

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        """``value`` as a mapping (``{}`` when absent), each unknown key a problem."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path or "(top level)", "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.problem(join(path, str(key)), "unknown key" + hint)
        return value


# --- declaring keys ----------------------------------------------------------------------

KEY = "qf_exporter.key"  # the metadata entry that makes a dataclass field a key of the file


@dataclass(frozen=True)
class Key:
    """A dataclass field's declaration as a key of the file."""

    read: Reader | None  # None: the section's own code reads it (the credentials)
    also: tuple[str, ...] = ()  # further keys that may give the value (secret_key_file)


@dataclass(frozen=True)
class Scalar:
    """Reads a value with ``convert``, then holds it to ``checks``.

    An absent value (or ``null``) is the default, or the problem ``required`` when the
    key must be given. A value that cannot be converted is a problem and the default
    stands in. A converted value that fails a check is a problem and is kept: the file
    is refused either way, and a later rule (duplicate names) still sees what was
    written.
    """

    convert: Callable[[Any], Any]
    checks: tuple[Check, ...] = ()
    required: str | None = None

    def __call__(self, c: Checker, value: Any, path: str, default: Any) -> Any:
        if value is None:
            if self.required is not None:
                c.problem(path, self.required)
            return default
        try:
            result = self.convert(value)
        except (TypeError, ValueError, OverflowError) as exc:
            c.problem(path, str(exc))
            return default
        for check in self.checks:
            for below, message in check(result):
                c.problem(path + below, message)
        return result


@dataclass(frozen=True)
class Nested:
    """Reads a mapping of keys declared by the dataclass ``cls`` into a ``cls``."""

    cls: type[Any]

    def __call__(self, c: Checker, value: Any, path: str, default: Any) -> Any:
        raw = c.mapping(value, path, keys_of(self.cls))
        return self.cls(**read_fields(c, raw, path, self.cls))


def key(convert: Callable[[Any], Any], *checks: Check, required: str | None = None
        ) -> dict[str, Key]:
    """Field metadata: a value converted by ``convert`` and held to ``checks``."""
    return {KEY: Key(Scalar(convert, checks, required))}


def section(cls: type[Any]) -> dict[str, Key]:
    """Field metadata: a mapping whose keys the dataclass ``cls`` declares."""
    return {KEY: Key(Nested(cls))}


def read_by(reader: Reader | None, also: tuple[str, ...] = ()) -> dict[str, Key]:
    """Field metadata: a key read by ``reader`` (None: by its section's own code)."""
    return {KEY: Key(reader, also)}


def keys_of(cls: type[Any]) -> set[str]:
    """The keys a mapping read into ``cls`` may hold."""
    declared = [(f.name, f.metadata[KEY]) for f in fields(cls) if KEY in f.metadata]
    return {name for name, _ in declared} | {k for _, spec in declared for k in spec.also}


def read_fields(c: Checker, raw: Mapping[str, Any], path: str, cls: type[Any]) -> dict[str, Any]:
    """The values of ``cls``'s keys that have a reader, read from ``raw`` in the order they
    are declared. A key without a default that could not be read is left out."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        spec: Key | None = f.metadata.get(KEY)
        if spec is None or spec.read is None:
            continue
        default = f.default if f.default_factory is MISSING else f.default_factory()
        value = spec.read(c, raw.get(f.name), join(path, f.name), default)
        if value is not MISSING:
            values[f.name] = value
    return values


def read_list(
    c: Checker, value: Any, path: str, cls: type[Any], problem: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each mapping of the list ``value`` read into ``cls``'s keys: its path and its
    values, for each item whose required keys could all be read (the others are
    problems already). Anything but a list is the problem ``problem``."""
    if value is None:
        return
    if not isinstance(value, list):
        c.problem(path, problem)
        return
    required = {f.name for f in fields(cls)
                if KEY in f.metadata and f.default is MISSING and f.default_factory is MISSING}
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        entry = c.mapping(item, where, keys_of(cls))
        if not isinstance(item, dict):
            continue
        values = read_fields(c, entry, where, cls)
        if required <= values.keys():
            yield where, values


# --- checks --------------------------------------------------------------------------


def show_number(value: float) -> str:
    return f"{value:g}" if value % 1 else str(int(value))


def show_duration(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Bound:
    """The range a number must lie in: values that are valid but would make the exporter
    misbehave (an interval of 1 ms floods the log, one of 1e14 s overflows the
    scheduler, a timeout of 1e10 s overflows the socket) are refused up front.

    ``above_zero`` refuses 0 itself first (``must be > 0``); ``below`` and ``above``
    replace the wording for a value under ``low`` or over ``high``.
    """

    low: float | None = None
    high: float | None = None
    above_zero: bool = False
    show: Callable[[float], str] = show_number
    below: str | None = None
    above: str | None = None

    def __call__(self, value: float) -> Iterator[Problem]:
        if self.above_zero and not value > 0:
            yield "", "must be > 0"
        elif self.low is not None and value < self.low:
            yield "", self.below or f"must be at least {self.show(self.low)}"
        elif self.high is not None and value > self.high:
            yield "", self.above or f"must be at most {self.show(self.high)}"


def each(pattern: re.Pattern[str], message: str) -> Check:
    """Every element of a list must match ``pattern``; each that does not is a problem."""

    def check(values: Iterable[str]) -> Iterator[Problem]:
        for i, value in enumerate(values):
            if not pattern.match(value):
                yield f"[{i}]", message

    return check


def distinct(message: str) -> Check:
    """No element of a list may be given twice."""

    def check(values: tuple[Any, ...]) -> Iterator[Problem]:
        if len(set(values)) != len(values):
            yield "", message

    return check


# --- converters: a written value to its type, or ValueError saying what it must be ------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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


def number_or_raise(value: Any) -> float:
    """A finite number (a numeric string too); ``ValueError`` saying what it must be."""
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


def integer(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


_SIZE = re.compile(r"\s*([0-9]+)\s*(B|KiB|MiB|GiB)?\s*")
_SIZE_UNIT = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def size(value: Any) -> int:
    """A size in bytes: ``33554432``, or ``512KiB``, ``32MiB``, ``1GiB``."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError("must be a size in bytes, or like 512KiB, 32MiB, 1GiB")
        return int(match.group(1)) * _SIZE_UNIT[match.group(2)]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a size in bytes, or like 512KiB, 32MiB, 1GiB")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def regex(value: Any) -> Pattern:
    """A pattern in RE2 syntax (linear-time matching, as Prometheus)."""
    text = string(value)
    try:
        return compile_pattern(text)
    except PatternError as exc:
        raise ValueError(
            f"{text!r} is not a valid regular expression: {exc} (RE2 syntax)"
        ) from None


def regex_list(value: Any) -> tuple[Pattern, ...]:
    """Patterns in RE2 syntax."""
    return tuple(regex(text) for text in string_list(value))
