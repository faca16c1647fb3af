"""Every relative link and anchor in the README, docs/ and the chart's README resolves.

A newcomer follows links; a renamed heading or a moved file must fail here, not leave
a dead link. Anchors follow GitHub's rules (tests/docs/markdown.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.docs.markdown import REPO, anchors, github_anchor, headings, links

PAGES = sorted(
    [REPO / "README.md", REPO / "deploy/helm/qf-exporter/README.md",
     *(REPO / "docs").glob("*.md")]
)


def _broken(page: Path) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md":
            if fragment not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading with that anchor")
        elif fragment:
            problems.append(f"{target}: an anchor into a file that is not Markdown")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert page.exists()
    assert _broken(page) == []


# A path in the repository named in code (`qf_exporter/polling/estimate.py`,
# `tests/faults/test_matrix.py::test_x`), or a module by its room (`exposition/store.py`).
_REPO_PATH = re.compile(
    r"`((?:qf_exporter|tests|deploy|grafana|benchmarks|docs)/[\w./-]*?)(?:::\w+)?`"
)
_ROOM_PATH = re.compile(r"`((?:util|config|qianfan|polling|exposition|web|simulator)/[\w.-]+\.py)`")


def test_every_file_the_docs_name_exists() -> None:
    """Modules, tests and deploy files named in the text are not links, but a renamed or
    moved file must fail here all the same."""
    missing = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        named = [REPO / m.group(1) for m in _REPO_PATH.finditer(text)]
        named += [REPO / "qf_exporter" / m.group(1) for m in _ROOM_PATH.finditer(text)]
        missing += [f"{page.name}: {p.relative_to(REPO)}" for p in named if not p.exists()]
    assert missing == []


def test_no_page_has_two_headings_with_one_anchor() -> None:
    """GitHub numbers a repeated anchor (-1, -2): a link to it would silently land on the
    first. Every heading on a page is told apart by its own words."""
    for page in PAGES:
        found = [github_anchor(h) for _, h in headings(page.read_text(encoding="utf-8"))]
        repeated = sorted({a for a in found if found.count(a) > 1})
        assert repeated == [], page.relative_to(REPO).as_posix()


def test_the_readme_links_every_docs_page() -> None:
    readme = links((REPO / "README.md").read_text(encoding="utf-8"))
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert pages == {t.removeprefix("docs/") for t in readme if t.startswith("docs/")}


def test_the_link_checker_sees_what_github_sees(tmp_path: Path) -> None:
    """The checker itself: a dead file, a dead anchor and a link in code are told apart."""
    (tmp_path / "b.md").write_text("# Two `words`, here\n\n## Again\n\n## Again\n")
    page = tmp_path / "a.md"
    page.write_text(
        "# A\n\n[ok](b.md#two-words-here) [ok](b.md#again-1) [ok](#a) [web](https://x.y/#z)\n"
        "[gone](c.md) [bad](b.md#two) `[code](c.md)`\n\n```\n[fenced](d.md)\n```\n"
    )
    assert _broken(page) == ["c.md: no such file", "b.md#two: no heading with that anchor"]
    assert github_anchor("QianfanRunFailed") == "qianfanrunfailed"
    assert github_anchor("Design: how it works") == "design-how-it-works"
    assert github_anchor("The run's console page") == "the-runs-console-page"
    assert github_anchor("Two identical replicas for availability") == (
        "two-identical-replicas-for-availability"
    )
    assert github_anchor("TLS and basic auth (`--web.config.file`)") == (
        "tls-and-basic-auth---webconfigfile"
    )
