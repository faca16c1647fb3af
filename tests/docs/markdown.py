"""Reading Markdown the way GitHub renders it: headings, their anchors, and links."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"(?ms)^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$")
_HEADING = re.compile(r"(?m)^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def without_code_blocks(text: str) -> str:
    """The text with fenced code blocks removed (no headings or links inside them)."""
    return _FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading's text (before duplicates get -1, -2, ...).

    GitHub takes the heading as rendered (no backticks, a link's text only), lowers it,
    drops every character that is not a letter, digit, underscore, hyphen or space, and
    turns each space into a hyphen.
    """
    text = _LINK.sub(r"\1", heading)
    text = _CODE_SPAN.sub(r"\2", text)
    text = re.sub(r"[*_]{1,2}(\S.*?)[*_]{1,2}", r"\1", text) if "*" in text else text
    slug = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return slug.replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every heading outside code blocks, in order."""
    return [(len(m.group(1)), m.group(2)) for m in _HEADING.finditer(without_code_blocks(text))]


def anchors(text: str) -> list[str]:
    """Every heading's anchor in order, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    result = []
    for _, heading in headings(text):
        slug = github_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.append(slug if count == 0 else f"{slug}-{count}")
    return result


def sections(text: str) -> dict[str, tuple[str, str]]:
    """anchor -> (the heading line, its text up to the next heading of any level)."""
    body = without_code_blocks(text)
    parts = _HEADING.split(body)
    names = anchors(text)
    # split() gives: text, hashes, heading, text, hashes, heading, text, ...
    return {
        name: (f"{parts[i]} {parts[i + 1]}", parts[i + 2])
        for name, i in zip(names, range(1, len(parts), 3), strict=True)
    }


def links(text: str) -> list[str]:
    """The target of every inline link outside code blocks and code spans."""
    prose = _CODE_SPAN.sub("", without_code_blocks(text))
    return [m.group(2) for m in _LINK.finditer(prose)]
