"""Reading one answer within bounds: inflating is bounded and complete, the cap counts
decoded bytes, and one read's answers add up to a bounded total."""

from __future__ import annotations

import gzip
import io
import time
import zlib

import pytest

from qf_exporter.qianfan import bounded, errors, watchdog
from qf_exporter.qianfan.client import MAX_LISTED, MAX_PAGES


class _Raw:
    """Stands in for a urllib3 response: hands out the given pieces."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self._io = io.BytesIO(data)
        self._piece = piece

    def read(self, amount: int, decode_content: bool = False) -> bytes:
        assert decode_content is False
        return self._io.read(min(amount, self._piece))


def _read(data: bytes, encoding: str = "", cap: int = 1 << 20) -> bytes:
    with watchdog.watched(time.monotonic() + 600) as watch:
        return bytes(bounded.read_body(_Raw(data), encoding, watch, cap))


def test_gzip_and_deflate_are_inflated_whole_even_in_several_members() -> None:
    text = b'{"result": {"taskList": []}}'
    assert _read(gzip.compress(text), "gzip") == text
    assert _read(gzip.compress(text[:10]) + gzip.compress(text[10:]), "gzip") == text
    assert _read(zlib.compress(text), "deflate") == text
    assert _read(text, "identity") == text
    with pytest.raises(errors.InvalidResponse):
        _read(text, "br")
    with pytest.raises(errors.InvalidResponse):
        _read(b"\x1f\x8b garbage", "gzip")


def test_the_cap_counts_decoded_bytes() -> None:
    bomb = gzip.compress(b" " * (4 << 20))  # 4 MiB in a few KiB
    assert len(bomb) < 64 * 1024
    with pytest.raises(bounded.TooLarge):
        _read(bomb, "gzip", cap=1 << 20)
    assert len(_read(bomb, "gzip", cap=4 << 20)) == 4 << 20
    with pytest.raises(bounded.TooLarge):
        _read(b"x" * 101, cap=100)


def test_a_read_budget_names_its_bound() -> None:
    budget = bounded.ReadBudget(max_bytes=100, max_values=10)
    budget.charge("A", b"[1,2,3]")
    with pytest.raises(errors.InvalidResponse, match=r"larger than 100 bytes .*MAX_READ_BYTES"):
        budget.charge("A", b" " * 100)
    budget = bounded.ReadBudget(max_bytes=100, max_values=10)
    with pytest.raises(errors.InvalidResponse, match=r"more than 10 JSON values .*MAX_READ_VALUES"):
        budget.charge("A", b"[" + b"0," * 10 + b"0]")
    assert bounded.json_values(b'{"a":[1,2],"b":{"c":3}}') >= 6  # never fewer than there are
    assert MAX_LISTED <= MAX_PAGES * 100
