"""Relative links of the Markdown pages point to files that exist, without a network.

Every ``[text](path)`` and ``![alt](path)`` (and HTML ``href``/``src``) of README.md and
docs/**/*.md that has no scheme (``https:``, ``mailto:``...) must name an existing file or
folder, relative to its page.  Anchors (``path#anchor``, ``#anchor``) are checked on the
pages that are not part of the site (README.md), with the anchors GitHub gives headings: in
docs/, ``sphinx-build -n`` checks them with MyST's (test_site.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from doc_pages import ROOT, github_anchors, links, pages

SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """The broken relative links of ``page`` (relative to ``root``), as ``line: problem``."""
    text = (root / page).read_text()
    on_site = page.parts[0] == "docs"
    problems = []
    for link in links(text):
        target = link.target.strip()
        if not target or SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path.partition("?")[0])
        what = "image" if link.image else "link"
        if path:
            # /path: from the repository's root, as GitHub reads it
            file = root / path.lstrip("/") if path.startswith("/") else (root / page).parent / path
            if not file.exists():
                problems.append(f"line {link.line}: {what} {target}: no such file")
                continue
        else:
            file = root / page
        if anchor and not on_site and file.suffix == ".md" and file.is_file():
            if anchor not in github_anchors(file.read_text()):
                problems.append(
                    f"line {link.line}: {what} {target}: {file.relative_to(root)} has no "
                    f"heading with anchor #{anchor}"
                )
    return problems


@pytest.mark.parametrize("page", pages(), ids=Path.as_posix)
def test_relative_links_exist(page):
    problems = link_problems(page)
    assert not problems, f"{page}:\n" + "\n".join(problems)


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "a.png").write_bytes(b"")
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Your data, step 2\n\n![a](figures/a.png) ![b](figures/b.png)\n"
        "[x](#not-checked-on-the-site) [up](../README.md)\n"
    )
    (tmp_path / "README.md").write_text(
        "# Title\n\n## Install it\n\n"
        "[ok](docs/guide.md) [ok](docs/guide.md#your-data-step-2) [ok](#install-it)\n"
        "[gone](docs/gone.md) [bad](docs/guide.md#nowhere) [bad](#install)\n"
        "`[code](not/a/link.md)` [web](https://example.org/x) [mail](mailto:a@b.c)\n"
        '<img src="docs/figures/missing.png">\n'
    )
    assert link_problems(Path("README.md"), tmp_path) == [
        "line 6: link docs/gone.md: no such file",
        "line 6: link docs/guide.md#nowhere: docs/guide.md has no heading with anchor #nowhere",
        "line 6: link #install: README.md has no heading with anchor #install",
        "line 8: link docs/figures/missing.png: no such file",
    ]
    assert link_problems(Path("docs/guide.md"), tmp_path) == [
        "line 5: image figures/b.png: no such file"
    ]
