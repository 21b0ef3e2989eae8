"""MathJax served from the built site, so that math renders without a network.

The MathJax 3 files come from the ``sphinx-mathjax-offline`` distribution (in the ``[docs]``
extra): its files are there, but its package directory has a hyphen in its name and cannot
be imported as the Sphinx extension it means to be, so this extension does its job: point
``mathjax_path`` at a local copy and copy the one component we use (TeX input, HTML output)
and its fonts into ``_static/mathjax`` after a successful build.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

COMPONENT = "tex-chtml.js"
FONTS = Path("output", "chtml", "fonts", "woff-v2")


def mathjax_dir() -> Path:
    """The MathJax directory that ``sphinx-mathjax-offline`` installed."""
    try:
        dist = metadata.distribution("sphinx-mathjax-offline")
    except metadata.PackageNotFoundError as e:
        raise ExtensionError(
            'MathJax for offline math comes from sphinx-mathjax-offline: pip install -e ".[docs]"'
        ) from e
    for file in dist.files or ():
        if file.name == COMPONENT:
            return Path(dist.locate_file(file)).parent
    raise ExtensionError(f"sphinx-mathjax-offline has no {COMPONENT}")


def copy_mathjax(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    source, target = mathjax_dir(), Path(app.outdir, "_static", "mathjax")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / COMPONENT, target / COMPONENT)
    shutil.copytree(source / FONTS, target / FONTS, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    mathjax_dir()  # fail at once, with the fix, where the files are missing
    app.config.mathjax_path = f"mathjax/{COMPONENT}"
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
