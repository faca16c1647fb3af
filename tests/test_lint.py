"""ruff and mypy stay clean (both are configured in pyproject.toml), and the code's
comments cite only files that exist."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]])
def test_clean(tool: list[str]) -> None:
    pytest.importorskip(tool[0])
    result = subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# Files of other projects that comments cite by their path there.
OUTSIDE = {
    "docs/web-configuration.md": "prometheus/exporter-toolkit",
    "web-configuration.md": "prometheus/exporter-toolkit",
    "python/qianfan/consts.py": "baidubce/bce-qianfan-sdk",
    "python/qianfan/tests/utils/mock_server.py": "baidubce/bce-qianfan-sdk",
    "python/qianfan/trainer/actions.py": "baidubce/bce-qianfan-sdk",
    "qianfan/common/cli/trainer.py": "baidubce/bce-qianfan-sdk",
}
FILE_NAME = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.(?:py|md|yml|yaml|json|toml))\b")
# Documents that lived beside the repository, never in it.
GONE = re.compile(r"\bSPEC\b|\bseed 00\d|\.\./shared")


def _prose(path: Path) -> Iterator[tuple[int, str]]:
    """The comments and docstrings of a Python file, with their line numbers."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                for offset, line in enumerate(body[0].value.value.splitlines()):
                    yield body[0].lineno + offset, line


def test_comments_name_only_files_the_repository_has() -> None:
    """No comment or docstring cites a file that is not here (a moved module, a page
    that became docs/, a document that never was in the repository)."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    tracked = set(listed)
    names = {Path(p).name for p in listed}
    wrong: list[str] = []
    for rel in listed:
        if not rel.endswith(".py") or rel.startswith("tests/fixtures/"):
            continue
        for line, text in _prose(ROOT / rel):
            if GONE.search(text):
                wrong.append(f"{rel}:{line}: {text.strip()}")
            for ref in FILE_NAME.findall(text):
                known = (ref in OUTSIDE or ref in tracked
                         or ("/" not in ref and ref in names)
                         or any(p.endswith("/" + ref) for p in listed))
                if not known:
                    wrong.append(f"{rel}:{line}: {ref}")
    assert not wrong, "\n".join(wrong)


MOST_FUNCTION_LINES = 50
MOST_CLASS_LINES = 200


def test_functions_and_classes_stay_small() -> None:
    """Each part reads in one sitting: no function over 50 lines, no class over 200
    (complexity is ruff's C90, at most 10)."""
    large: list[str] = []
    for path in sorted((ROOT / "qf_exporter").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                most = MOST_CLASS_LINES if isinstance(node, ast.ClassDef) else MOST_FUNCTION_LINES
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > most:
                    large.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}, "
                                 f"{lines} lines (at most {most})")
    assert not large, "\n".join(large)
