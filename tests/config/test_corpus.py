"""`qf-exporter --config.check` against a corpus of broken files (tests/bad_configs/).

Each file is checked in a real subprocess, the way an operator (or a CI job) runs it:
exit status 2, one stderr line per problem naming its path, nothing on stdout, no
traceback, and never a credential in the output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.checks import assert_no_keys
from tests.config_text import CORPUS, ROOT, clean_env

EXPECTED: dict[str, object] = yaml.safe_load((CORPUS / "expected.yaml").read_text("utf-8"))

CORPUS_AK = "AKcorpus0123456789abcdef"
CORPUS_SK = "SKcorpus-do-not-leak-0123456789"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def check(config: Path | str, env: Mapping[str, str] | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "qf_exporter", f"--config.file={config}", "--config.check"],
        cwd=ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def case(name: str) -> tuple[dict[str, str], list[str]]:
    entry = EXPECTED[name]
    if isinstance(entry, dict):
        return {k: str(v) for k, v in (entry.get("env") or {}).items()}, list(entry["problems"])
    assert isinstance(entry, list)
    return {}, list(entry)


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    """Every corpus file checked once, in parallel (each is a fresh interpreter)."""
    names = sorted(EXPECTED)
    with ThreadPoolExecutor(max_workers=max(4, os.cpu_count() or 1)) as pool:
        done = pool.map(lambda n: check(CORPUS / n, case(n)[0]), names)
        return dict(zip(names, done, strict=True))


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.glob("*.yaml")} - {"expected.yaml"}
    assert len(files) >= 25
    assert files == set(EXPECTED), "every broken file needs an entry, every entry a file"
    for name in EXPECTED:
        assert case(name)[1], f"{name} lists no problem"


def problem_path(line: str) -> str:
    return line.split(": ", 1)[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_config_is_rejected(results: dict[str, Result], name: str) -> None:
    result = results[name]
    _env, expected = case(name)
    shown = str(CORPUS / name)
    expected = [e.replace("{file}", shown) for e in expected]
    where = f"{name}: stdout={result.stdout!r} stderr={result.stderr!r}"

    assert result.returncode == 2, where
    assert result.stdout == "", where
    assert "Traceback" not in result.stdout + result.stderr, where
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), where
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(want), f"{where}\n  wanted a line starting {want!r}"
        # Every line names where the problem is: a config path or the file itself.
        path = problem_path(line)
        assert path == problem_path(want), where
        assert path == shown or path[0].isalpha(), where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_config_output_holds_no_credentials(results: dict[str, Result], name: str) -> None:
    result = results[name]
    env, _expected = case(name)
    secrets = {CORPUS_AK, CORPUS_SK, *(v for k, v in env.items() if k.startswith("QIANFAN_"))}
    assert_no_keys(result.stdout, result.stderr, keys=tuple(filter(None, secrets)))


# --- the other side: valid files ------------------------------------------------------

AK = "AKvalid-0123456789abcdef"
SK = "SKvalid-never-printed-0123456789abcdef"


def test_valid_config_from_environment_passes_without_showing_keys(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n"
        "  - name: default\n"
        "    access_key: ${QIANFAN_ACCESS_KEY}\n"
        "    secret_key: ${QIANFAN_SECRET_KEY}\n"
        "    qps: 5\n"
        "    jobs: [job-n509xxxq3]\n"
        "    tasks:\n"
        "      - {task_id: 10250, job_id: 6205}\n"
        "poll:\n  interval: 60s\n  finished_interval: 30m\n  stale_after: 10m\n"
        "  timeout: 10s\n  concurrency: 4\n",
        encoding="utf-8",
    )
    os.chmod(config, 0o644)
    result = check(config, {"QIANFAN_ACCESS_KEY": AK, "QIANFAN_SECRET_KEY": SK})
    assert result.returncode == 0, result
    assert "configuration is valid" in result.stdout
    assert "account default" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert_no_keys(result.stdout, result.stderr, keys=(AK, SK))


def test_valid_config_with_literal_keys_warns_without_showing_them(tmp_path: Path) -> None:
    secret_file = tmp_path / "sk"
    secret_file.write_text(SK + "-file\n", encoding="utf-8")
    os.chmod(secret_file, 0o644)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"accounts:\n"
        f"  - {{name: a, access_key: {AK}, secret_key: {SK}, jobs: [job-a]}}\n"
        f"  - {{name: b, access_key: {AK}-b, secret_key_file: {secret_file}, discover: true}}\n",
        encoding="utf-8",
    )
    os.chmod(config, 0o644)
    result = check(config)
    assert result.returncode == 0, result
    assert "configuration is valid" in result.stdout
    output = result.stdout + result.stderr
    assert "can be read by every user" in output  # the config file and the secret file
    assert "accounts[1].secret_key_file" in output
    assert "Traceback" not in output
    assert_no_keys(output, keys=(AK, SK, SK + "-file"))


def test_check_of_invalid_config_never_shows_credentials(tmp_path: Path) -> None:
    """Credentials in a broken file, in the environment and in a secret file stay hidden,
    whichever fields around them are broken."""
    secret_file = tmp_path / "sk"
    secret_file.write_text(SK + "-file", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"accounts:\n"
        f"  - name: 'bad name {SK}'\n"
        f"    access_key: {AK}\n"
        f"    secret_key: {SK}\n"
        f"    secret_key_file: {secret_file}\n"
        f"    endpoint: 'https://{AK}:{SK}@qianfan.example/'\n"
        f"    qps: 0\n"
        f"  - name: b\n"
        f"    access_key: [{AK}]\n"
        f"    secret_key: {{value: {SK}}}\n"
        f"    jobs: ['{AK} {SK}']\n"
        f"  - name: c\n"
        f"    secret_key_file: {secret_file}\n"
        f"    tasks: [{{task_id: '{SK}', job_id: '{AK}'}}]\n"
        f"    discovery: {{include: ['({SK}']}}\n",
        encoding="utf-8",
    )
    env = {"QIANFAN_ACCESS_KEY": AK + "-env", "QIANFAN_SECRET_KEY": SK + "-env"}
    result = check(config, env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) >= 8, result.stderr
    assert_no_keys(result.stderr, keys=(AK, SK, SK + "-file", AK + "-env", SK + "-env"))


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = check(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory"
    ]
