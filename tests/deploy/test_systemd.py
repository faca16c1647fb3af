"""The systemd unit: hardened, and accepted by systemd-analyze where it exists."""

from __future__ import annotations

import configparser
import shutil
import sys
from pathlib import Path

import pytest

from tests.deploy.files import (
    SYSTEMD_UNIT,
    run,
)


def systemd_unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    # Directives may repeat (SystemCallFilter=): keep the last, enough for these checks.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8").replace("\\\n", " ")
    parser.read_string(text)
    return parser


def test_systemd_unit_is_hardened() -> None:
    unit = systemd_unit()
    service = unit["Service"]
    assert service["ExecStart"].split()[0].endswith("/qf-exporter")
    assert "--config.file=" in service["ExecStart"]
    assert "HUP" in service["ExecReload"] and "$MAINPID" in service["ExecReload"]
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert service["LoadCredential"].startswith("qianfan_sk:/")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # The config must point secret_key_file at the credential: the comment says where.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8")
    assert "/run/credentials/qf-exporter.service/qianfan_sk" in text


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed (optional)")
    # ExecStart must exist for `verify`; point it at a binary that does.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8").replace(
        "/opt/qf-exporter/bin/qf-exporter", sys.executable
    )
    unit = tmp_path / "qf-exporter.service"
    unit.write_text(text, encoding="utf-8")
    result = run([analyze, "verify", str(unit)])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
