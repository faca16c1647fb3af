"""Helpers of the configuration tests: credentials, parsing a snippet, writing a file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from qf_exporter.config.file import ConfigError, parse_config

AK = "AKcfg-0123456789abcdef"
SK = "SKcfg-secret-do-not-print-0123456789"
CREDS = {"QIANFAN_ACCESS_KEY": AK, "QIANFAN_SECRET_KEY": SK}


def parse(text: str, environ: dict[str, str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return parse_config(textwrap.dedent(text), CREDS if environ is None else environ, **kw)  # type: ignore[arg-type]


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    os.chmod(path, mode)
    return path


MINIMAL = """
accounts:
  - name: default
    jobs: [job-abc]
"""
