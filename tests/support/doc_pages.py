"""The Markdown pages of the repository (README.md and docs/), read the way GitHub and MyST
read them: their fenced code blocks and their links, with the line numbers of the page.

The parser is markdown-it-py's CommonMark one (it comes with myst-parser, in the ``[docs]``
extra that ``[test]`` pulls): it knows fences inside lists and block quotes, tildes and
longer fences, and links from code spans, which line-based regular expressions get wrong.
The content of MyST directives written as fences (```` ```{note} ````) is read as Markdown
too, since their code blocks and links end up on the site.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]

#: MyST directives whose fence holds something else than Markdown
RAW_DIRECTIVES = {
    "toctree", "eval-rst", "math", "include", "literalinclude", "csv-table", "list-table",
    "raw", "autodoc", "automodule", "autoclass", "autofunction", "mermaid", "code-cell",
}  # fmt: skip
CODE_DIRECTIVES = {"code-block", "code", "sourcecode"}


def pages(root: Path = ROOT) -> list[Path]:
    """Every Markdown page: README.md and docs/**/*.md (not the built site), relative to
    ``root``."""
    found = [Path("README.md")] if (root / "README.md").is_file() else []
    docs = root / "docs"
    found += sorted(
        p.relative_to(root) for p in docs.rglob("*.md") if "_build" not in p.relative_to(docs).parts
    )
    return found


def checked_pages(root: Path = ROOT) -> list[Path]:
    """The pages whose code blocks the tests run and check: all but the API reference
    (docs/api/, generated from the docstrings) and the changelog (history)."""
    return [
        p
        for p in pages(root)
        if p.parts[:2] != ("docs", "api") and not p.name.lower().startswith("changelog")
    ]


@dataclass(frozen=True)
class Fence:
    """One fenced code block: ``line`` is the 1-based line of its opening fence in the page,
    ``first`` that of its first line of code; ``before`` the page's lines above the fence
    (the nearest last), for markers."""

    lang: str
    code: str
    line: int
    first: int
    before: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    target: str
    line: int
    image: bool


_md = MarkdownIt("commonmark").enable("table")
_HTML_LINK = re.compile(r"""<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)


def _directive(info: str) -> tuple[str, str] | None:
    """``("name", "argument")`` for a MyST directive fence (info ``{name} argument``)."""
    m = re.fullmatch(r"\{([\w:-]+)\}\s*(.*)", info.strip())
    return (m.group(1), m.group(2).strip()) if m else None


def _strip_options(code: str) -> tuple[str, int]:
    """A directive's content without its leading ``:key: value`` lines (and the blank line
    after them), with the number of lines removed."""
    lines = code.split("\n")
    n = 0
    while n < len(lines) and re.match(r"\s*:[\w-]+:", lines[n]):
        n += 1
    if n and n < len(lines) and not lines[n].strip():
        n += 1
    return "\n".join(lines[n:]), n


def _walk(text: str, offset: int, lines: list[str]) -> Iterator[tuple[str, object]]:
    """("fence", Fence) and ("link", Link) items of ``text``, whose first line is line
    ``offset + 1`` of the page; ``lines`` are the page's lines."""
    for tok in _md.parse(text):
        if tok.map is None:
            continue
        start = offset + tok.map[0]  # 0-based line of the token in the page
        if tok.type == "fence":
            info = tok.info.strip()
            directive = _directive(info)
            code, skipped = tok.content, 0
            if directive is None:
                lang = info.split()[0].lower() if info else ""
            elif directive[0] in CODE_DIRECTIVES:
                lang = directive[1].split()[0].lower() if directive[1] else ""
                code, skipped = _strip_options(code)
            elif directive[0] in RAW_DIRECTIVES:
                continue
            else:  # an admonition or the like: Markdown inside
                body, skipped = _strip_options(code)
                yield from _walk(body, start + 1 + skipped, lines)
                continue
            before = tuple(reversed(lines[max(0, start - 3) : start]))
            yield "fence", Fence(lang, code, start + 1, start + 2 + skipped, before)
        elif tok.type == "inline":
            line = start + 1  # of the paragraph's first line; its line breaks count on
            for child in tok.children or ():
                if child.type in ("softbreak", "hardbreak"):
                    line += 1
                elif child.type == "link_open":
                    yield "link", Link(str(child.attrs.get("href", "")), line, False)
                elif child.type == "image":
                    yield "link", Link(str(child.attrs.get("src", "")), line, True)
                elif child.type == "html_inline":
                    for m in _HTML_LINK.finditer(child.content):
                        yield "link", Link(m.group(1), line, False)
        elif tok.type == "html_block":
            for k, line in enumerate(tok.content.split("\n")):
                for m in _HTML_LINK.finditer(line):
                    yield "link", Link(m.group(1), start + 1 + k, False)


def fences(text: str) -> list[Fence]:
    """The fenced code blocks of a page, in order."""
    lines = text.split("\n")
    return [item for kind, item in _walk(text, 0, lines) if kind == "fence"]  # type: ignore[misc]


def links(text: str) -> list[Link]:
    """The links and images of a page (Markdown and HTML), in order."""
    lines = text.split("\n")
    return [item for kind, item in _walk(text, 0, lines) if kind == "link"]  # type: ignore[misc]


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the page's headings (lowercase, punctuation but ``-`` and
    ``_`` dropped, spaces to ``-``, repeats numbered ``-1``, ``-2``...)."""
    seen: dict[str, int] = {}
    out = set()
    tokens = _md.parse(text)
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open":
            continue
        inline = tokens[i + 1]
        words = "".join(
            c.content for c in inline.children or () if c.type in ("text", "code_inline")
        )
        slug = re.sub(r"[^\w\- ]", "", words.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out
