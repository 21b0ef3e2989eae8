"""The documentation site builds without a warning, and reads without a network.

``sphinx-build -W -n --keep-going -b html docs OUT``: warnings are errors, and ``-n``
(nit-picky) also fails on every cross-reference that resolves nowhere (a page, an anchor, a
documented name).  Math is rendered by a MathJax that the site carries (docs/_ext/
offline_math.py): the pages load it from ``_static/mathjax/`` and no script from the web.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from doc_pages import ROOT

MATHJAX = "_static/mathjax/tex-chtml.js"
SCRIPT_SRC = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']([^"']*)["']""", re.I)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The build (once for the module) and its HTML folder: with ``--keep-going`` the pages
    are written even where there are warnings."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(out / ".doctrees"), "docs", str(out / "html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, out / "html"


def scripts(html: str) -> list[str]:
    return SCRIPT_SRC.findall(html)


def test_scripts_pattern():
    html = "<script src=\"_static/a.js\"></script><SCRIPT defer src='https://x/y.js'>"
    assert scripts(html) == ["_static/a.js", "https://x/y.js"]


@pytest.mark.slow  # a build of every page and the API reference: 15 s and more
def test_the_site_builds_without_warnings(build):
    proc, site = build
    if proc.returncode != 0:
        pytest.fail(
            f"sphinx-build -W -n failed ({proc.returncode}); its warnings:\n"
            f"{proc.stderr}{proc.stdout}",
            pytrace=False,
        )
    assert (site / "index.html").is_file()


@pytest.mark.slow
def test_math_is_served_by_the_site(build):
    _, site = build
    assert (site / "index.html").is_file(), "no site built"
    assert (site / MATHJAX).is_file()
    assert any((site / "_static" / "mathjax" / "output").rglob("*.woff")), "no MathJax fonts"
    with_math, remote = [], []
    for page in sorted(site.rglob("*.html")):
        for src in scripts(page.read_text(errors="replace")):
            if re.match(r"(https?:)?//", src):
                remote.append(f"{page.relative_to(site)}: {src}")
            elif src.endswith(MATHJAX):
                # the path from the page to the site's copy
                assert (page.parent / src).resolve() == (site / MATHJAX).resolve(), src
                with_math.append(page)
    assert not remote, "scripts loaded from the web:\n" + "\n".join(remote)
    assert with_math, f"no page loads {MATHJAX} (the site has math: docs/method.md)"
