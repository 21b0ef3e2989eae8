"""The version is defined once, as ``hlop.__version__`` in ``src/hlop/__init__.py``: the
package metadata takes it from there (pyproject's ``dynamic = ["version"]``), the run outputs
and the documentation site read it from there, and no other file writes it out."""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import hlop

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = Path("src", "hlop", "__init__.py")
# where the version number is history, not a definition: the changelog's release headings
# (and constraints.txt, whose pins are other packages' versions)
ALLOWED = re.compile(r"CHANGELOG[^/]*$|constraints\.txt$")


def test_installed_metadata_is_hlop_version():
    assert metadata.version("hlop") == hlop.__version__, (
        "the installed metadata is stale: reinstall (pip install -e .)"
    )


def test_pyproject_takes_the_version_from_the_package():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "hlop.__version__"


def repository_files() -> list[Path]:
    """The files of the checkout, tracked or new, less the ignored ones (.venv, runs, ...)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: its file list comes from git")
    return [Path(p) for p in sorted(set(out.decode().split("\0"))) if p]


def version_mentions(text: str, version: str) -> list[int]:
    """Line numbers where ``version`` appears as a whole version number (for 2.3.4: not
    12.3.4 or 2.3.4.5)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(version)}(?!\w|\.\d)")
    return [n for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]


def test_version_mentions_pattern():
    text = "v 2.3.4\nhlop==2.3.4.\n12.3.4\n2.3.4.5\n2.3.45\n(2.3.4)\n2x3y4"
    assert version_mentions(text, "2.3.4") == [1, 2, 6]


def test_no_other_file_hard_codes_the_version():
    found = []
    for path in repository_files():
        if path == DEFINITION or ALLOWED.search(path.as_posix()):
            continue
        try:
            text = (ROOT / path).read_bytes().decode()
        except (OSError, UnicodeDecodeError):  # deleted in the work tree, or not text
            continue
        found += [f"{path}:{n}" for n in version_mentions(text, hlop.__version__)]
    assert not found, f"{hlop.__version__} written out here; read hlop.__version__ instead: {found}"
