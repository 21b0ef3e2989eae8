"""The API reference (``docs/api/*.md``) documents every public name: each name in
``hlop.__all__``, ``hlop.data.__all__`` and ``hlop.methods.__all__`` is the target of an
autodoc directive (``.. autoclass:: hlop.HLOP``), under that name or under any other path to
the same object (``hlop.data.DataError`` is documented as ``hlop.errors.DataError``).

Quick: the pages are read as text and the names resolved with importlib; Sphinx is not run
(``sphinx-build -W -n docs ...`` checks the rest: every directive builds, every reference
resolves).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from helpers import REPO

API_DIR = REPO / "docs" / "api"

#: the packages whose ``__all__`` the reference covers, name by name
PACKAGES = ("hlop", "hlop.data", "hlop.methods")

#: an autodoc directive and its target, e.g. ``.. autoclass:: hlop.HLOP``
DIRECTIVE = re.compile(
    r"^\s*\.\.\s+auto(?:class|function|exception|data|attribute|method|module|decorator|"
    r"property)::\s+(\S+)",
    re.MULTILINE,
)


def directive_targets(pages: list[Path]) -> dict[str, Path]:
    """Every autodoc directive target of ``pages``, with the page it is on."""
    return {m.group(1): page for page in pages for m in DIRECTIVE.finditer(page.read_text())}


def resolve(dotted: str) -> object:
    """The object a dotted path names: its longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"nothing of {dotted!r} can be imported")


def missing_names(targets: dict[str, Path]) -> list[str]:
    """The public names of :data:`PACKAGES` that no target documents (compared by identity)."""
    documented = [resolve(t) for t in targets]
    missing = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if not any(obj is d for d in documented):
                missing.append(f"{package}.{name}")
    return missing


@pytest.fixture(scope="module")
def pages() -> list[Path]:
    found = sorted(API_DIR.glob("*.md"))
    assert found, f"no API pages in {API_DIR}"
    return found


def test_every_public_name_is_documented(pages):
    missing = missing_names(directive_targets(pages))
    assert not missing, (
        "public names without an autodoc directive in docs/api/*.md (add one, e.g. "
        f"'.. autoclass:: hlop.NAME', to the page of its group): {', '.join(missing)}"
    )


def test_every_directive_target_exists(pages):
    broken = []
    for target, page in directive_targets(pages).items():
        try:
            resolve(target)
        except (ImportError, AttributeError) as e:
            broken.append(f"{page.name}: {target} ({e})")
    assert not broken, "autodoc targets that do not resolve: " + "; ".join(broken)


def test_a_removed_directive_is_caught(pages, tmp_path):
    """The check fails when a name's only directive goes (here: hlop.HLOP's)."""
    line = ".. autoclass:: hlop.HLOP\n"
    edited = []
    for page in pages:
        text = page.read_text()
        copy = tmp_path / page.name
        copy.write_text(text.replace(line, ""))
        edited.append(copy)
    assert any(line in page.read_text() for page in pages)
    assert "hlop.HLOP" in missing_names(directive_targets(edited))
