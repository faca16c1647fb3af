"""One careful reader for the YAML files the exporter is given (--config.file and
--web.config.file), and for the small files they name (secret_key_file).

A file is read only when it is a regular file of bounded size: it is opened
non-blocking (a FIFO with no writer does not hang the open), the opened descriptor is
checked with ``fstat`` (a FIFO, a device such as /dev/zero, a socket or a directory is
refused) and at most ``limit`` bytes are read, whatever ``st_size`` said.

YAML is read with PyYAML's safe loader, made strict and bounded:

* a key given twice in one mapping is refused (YAML would keep the last one);
* keys must be strings (``on:``, ``1:`` and ``[a]:`` keys are refused);
* tags other than the standard scalar, sequence and mapping ones are refused
  (``!!binary``, ``!!set``, ``!!python/...``);
* nesting deeper than ``MAX_DEPTH`` levels is refused (it would otherwise exhaust
  Python's recursion limit);
* an alias inside the node it refers to (``x: &a [*a]``) is refused;
* excessive aliasing (a "billion laughs" document) is refused with go-yaml's rule:
  once more than 100 values come from aliases and more than 1,000 values are read in
  all, the share of values that come from aliases may not pass 99 % (falling to 10 %
  for documents of 400,000 to 4,000,000 values); and no document may expand to more
  than ``MAX_VALUES`` values. Sizes are counted while composing, from the size of each
  anchored node, so a bomb is refused without ever being expanded.

Every problem is one line (``invalid YAML at line 3, column 5: ...``); nothing here
raises anything but ``FileRefused``, ``OSError`` (from ``read_bounded``) and
``YamlRefused``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent
from yaml.nodes import MappingNode, Node

MAX_FILE_BYTES = 1 << 20  # a configuration file
MAX_SECRET_BYTES = 4096  # a file holding one credential
MAX_DEPTH = 64
MAX_VALUES = 1_000_000
# go-yaml (yaml.v2/v3 decode.go): allowed share of values that come from aliases.
_RATIO_LOW, _RATIO_HIGH = 400_000, 4_000_000

_CORE = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(
    _CORE + name
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")
)


class FileRefused(Exception):
    """The file is not something to read: ``str()`` says why, without the file's name
    (``not a regular file (a FIFO)``, ``larger than 4 KiB``, ``not UTF-8 text``)."""


class YamlRefused(Exception):
    """The text is not acceptable YAML: ``str()`` is one line, without the file's name."""


def _size(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit % 1024 == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def read_bounded(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most ``limit`` bytes, and its ``fstat``.

    Raises ``OSError`` when it cannot be opened or read, ``FileRefused`` when it is not
    a regular file or is larger than ``limit``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise FileRefused(f"larger than {_size(limit)}")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:  # the file may have grown since fstat
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileRefused(f"larger than {_size(limit)}")
        return b"".join(chunks), info
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], limit: int) -> tuple[str, os.stat_result]:
    """``read_bounded`` decoded as UTF-8 (``FileRefused`` when it is not)."""
    data, info = read_bounded(path, limit)
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError:
        raise FileRefused("not UTF-8 text") from None


def _ratio(decoded: int) -> float:
    if decoded <= _RATIO_LOW:
        return 0.99
    if decoded >= _RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _RATIO_LOW) / (_RATIO_HIGH - _RATIO_LOW)


class _Loader(yaml.SafeLoader):
    """SafeLoader with the limits above, checked while the document is composed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[str] = []  # anchors of the collections being composed
        self._totals: list[int] = []  # values composed so far under each open node
        self._anchor_sizes: dict[str, int] = {}  # values an alias to each anchor expands to
        self._decoded = 0
        self._aliased = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, AliasEvent):
            anchor = str(event.anchor)
            if anchor in self._open:
                raise ComposerError(None, None, f"found a recursive alias *{anchor}", mark)
            node = super().compose_node(parent, index)  # refuses an undefined alias
            self._count(self._anchor_sizes[anchor], event, aliased=True)
            return node
        if len(self._totals) >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        defined: str | None = event.anchor if isinstance(event, NodeEvent) else None
        if defined is not None and defined in self.anchors:  # PyYAML's own says only
            first = self.anchors[defined].start_mark.line + 1  # "second occurrence"
            raise ComposerError(
                None, None, f"found duplicate anchor &{defined} (first at line {first})", mark
            )
        if defined is not None and isinstance(event, CollectionStartEvent):
            self._open.append(defined)
        self._totals.append(0)
        node = super().compose_node(parent, index)
        size = 1 + self._totals.pop()
        if defined is not None and isinstance(event, CollectionStartEvent):
            self._open.pop()
        if node is not None and node.tag not in ALLOWED_TAGS:
            tag = "!!" + node.tag[len(_CORE) :] if node.tag.startswith(_CORE) else node.tag
            raise ComposerError(None, None, f"tag {tag} is not allowed", node.start_mark)
        if defined is not None:
            self._anchor_sizes[defined] = size
        self._count(1, event, aliased=False)
        if self._totals:
            self._totals[-1] += size - 1  # the children; the node itself counted above
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[no-untyped-call]
        except (ValueError, OverflowError) as exc:
            # An integer of more than 4,300 digits, a date like 2024-02-30.
            reason = str(exc).split(";")[0]
            raise ConstructorError(
                None, None, f"cannot read this value: {reason}", node.start_mark
            ) from None

    def _count(self, values: int, event: Any, aliased: bool) -> None:
        self._decoded += values
        if self._totals:
            self._totals[-1] += values
        if aliased:
            self._aliased += values
        if (
            self._aliased > 100
            and self._decoded > 1000
            and self._aliased / self._decoded > _ratio(self._decoded)
        ):
            raise ComposerError(
                None, None, "document contains excessive aliasing", event.start_mark
            )
        if self._decoded > MAX_VALUES:
            raise ComposerError(
                None,
                None,
                f"document holds more than {MAX_VALUES:,} values (aliases expanded)",
                event.start_mark,
            )


def _construct_mapping(loader: _Loader, node: MappingNode) -> dict[Any, Any]:
    """A mapping whose keys are strings, each given once (YAML would keep the last)."""
    seen: set[str] = set()
    for key_node, _value_node in node.value:
        if key_node.tag == _CORE + "merge":
            continue  # keys written next to a merge (<<: *base) override it: not duplicates
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if not isinstance(key, str):
            raise ConstructorError(
                None, None, "found a key that is not a string (quote it)", key_node.start_mark
            )
        if key in seen:
            raise ConstructorError(None, None, f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_Loader.add_constructor(_CORE + "map", _construct_mapping)  # type: ignore[arg-type]


def parse(text: str) -> Any:
    """The one document in ``text`` (``None`` when empty), or ``YamlRefused``."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # checked as the loader starts
        raise YamlRefused(
            f"invalid YAML at character {exc.position + 1}: unacceptable character "
            f"#x{exc.character:04x}: {exc.reason}"
        ) from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise YamlRefused(f"invalid YAML{where}: {problem}") from None
    except (ValueError, OverflowError, RecursionError, MemoryError) as exc:
        # A last resort: the limits above and construct_object should leave none of these.
        raise YamlRefused(f"invalid YAML: {type(exc).__name__}") from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class Loaded:
    """What ``load`` read: the data, or the problems (one line each, without the file's
    name); ``info`` is the file's ``fstat`` when it could be read."""

    data: Any = None
    problems: tuple[str, ...] = ()
    info: os.stat_result | None = None


def load(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> Loaded:
    """Read and parse one YAML file."""
    try:
        text, info = read_text(path, limit)
    except OSError as exc:
        return Loaded(problems=(f"cannot read the file: {exc.strerror or exc}",))
    except FileRefused as exc:
        return Loaded(problems=(str(exc),))
    try:
        return Loaded(parse(text), info=info)
    except YamlRefused as exc:
        return Loaded(problems=(str(exc),), info=info)
