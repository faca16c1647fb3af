"""The import-linter contracts in pyproject.toml hold: imports point one way between
the subpackages, and no modules of one room import each other in a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(no_cache=True))")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_contracts_are_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package and its contracts with one import added to one module."""
    shutil.copytree(REPO / "qf_exporter", tmp_path / "qf_exporter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "qf_exporter" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return tmp_path


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    result = lint_imports(copy_with(tmp_path, "util/yamlfile.py", "import qf_exporter.web.routes"))
    assert result.returncode == 1
    assert "qf_exporter.util.yamlfile -> qf_exporter.web.routes" in result.stdout


def test_a_cycle_in_a_room_breaks_the_contracts(tmp_path: Path) -> None:
    result = lint_imports(copy_with(tmp_path, "polling/cadence.py",
                                    "import qf_exporter.polling.discovery"))
    assert result.returncode == 1
    assert "No import cycle between the modules of a room BROKEN" in result.stdout


def test_parsing_may_not_import_the_configuration(tmp_path: Path) -> None:
    result = lint_imports(copy_with(tmp_path, "qianfan/models.py",
                                    "import qf_exporter.config.file"))
    assert result.returncode == 1
    assert "Parsing Qianfan's answers does not depend on the configuration BROKEN" in result.stdout
