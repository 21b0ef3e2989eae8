"""Sphinx configuration of hlop's documentation site (``sphinx-build -W docs docs/_build``).

Pages are Markdown (MyST); the API reference is generated from the docstrings (autodoc with
napoleon for their ``Args:`` sections); math renders with a MathJax bundled in the
``sphinx-mathjax-offline`` package, so the site builds and reads without a network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hlop

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "hlop"
author = "the hlop developers"
copyright = "2026, the hlop developers"
version = release = hlop.__version__  # defined once, in src/hlop/__init__.py

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "offline_math",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
# a method that has no docstring of its own (an override of ``nn.Module.forward``, of a plugin
# event) is not documented with its base's text
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"hlop {release}"
html_static_path: list[str] = []

# Types of other packages (torch, numpy, the standard library) have no page here: a reference
# to one, from a signature's annotations, is left as text.
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|collections\.abc|pathlib|enum|typing|os)(\..*)?"),
]


def _drop_object_base(app, name, obj, options, bases: list) -> None:
    """A class whose only base is ``object`` gets no "Bases: object" line."""
    bases[:] = [base for base in bases if base is not object]


def setup(app) -> None:
    app.connect("autodoc-process-bases", _drop_object_base)
