"""Helpers of the configuration tests: credentials, parsing a snippet, writing a file, the
corpus of broken files (tests/bad_configs/), and running the command line on one in a
bounded subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from qf_exporter.config.file import ConfigError, parse_config
from tests.checks import assert_no_keys

ROOT = Path(__file__).resolve().parent.parent  # the repository's root
CORPUS = ROOT / "tests" / "bad_configs"
BOMB = (CORPUS / "yaml-alias-bomb.yaml").read_text("utf-8")

AK = "AKcfg-0123456789abcdef"
SK = "SKcfg-secret-do-not-print-0123456789"
CREDS = {"QIANFAN_ACCESS_KEY": AK, "QIANFAN_SECRET_KEY": SK}
GOOD = (
    "accounts:\n"
    f"  - {{name: prod, access_key: {AK}, secret_key: {SK}, jobs: [job-a]}}\n"
)
TIMEOUT = 20  # seconds; every refusal answers at once, a hang fails the test


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


# --- the command line in a bounded subprocess ------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any QIANFAN_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"  # a library's DeprecationWarning is not a problem line
    env.update(extra or {})
    return env


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
    assert_no_keys(result.stderr, keys=(AK, SK))
