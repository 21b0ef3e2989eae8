"""The code blocks of README.md and docs/**/*.md (not docs/api/, not the changelog) are run
or checked here, so that what the pages show works as shown.  Rules for the pages:

Python blocks (```` ```python ````, ```` ```py ````, ```` ```{code-block} python ````)
    run.  All python blocks of a page run in order in ONE namespace (a page is a tutorial: a
    block sees the names of the blocks above it), as one test per page
    (``test_page_runs[PAGE]``).  They run in a fresh temporary working directory that holds
    links to the repository's top-level files and folders (``examples/``, ``benchmarks/``,
    ``constraints.txt``..., not ``runs/`` or ``data/``), as in a clone; torch uses 1 thread;
    torch, numpy and random are seeded 0; matplotlib draws with Agg.  The namespace is a
    module named ``hlop_docs_page`` (not ``__main__``: an ``if __name__ == "__main__":``
    part does not run).  No network, no GPU, no data but what hlop ships (the MNIST subset:
    ``hlop.data.load_embedded_mnist``, benchmark ``pmnist-subset``).  A page should run in
    under about 10 s; one that needs longer carries ``<!-- docs-test: slow -->`` (anywhere in
    the page) and runs in the full suite only (``pytest -m slow``).

``# file: NAME.py`` as a block's first line
    writes the block to NAME.py in the working directory (a relative path, folders allowed,
    no ``..``, not into one of the repository's top-level folders) when the page reaches
    it; it also runs, unless marked not-run.  Later python blocks can import it, and shell
    blocks of the page can name it (``hlop train --model NAME.py:mlp``, ``python NAME.py``):
    every file block of the page is written before its shell commands are checked.

``<!-- not-run: REASON -->`` on the line before the opening fence (one blank line between
    allowed): the block is not run (python) or not checked (shell); a ``file:`` block is
    still written.  REASON must not be empty, and a marker that precedes no code block is
    an error (``test_markup[PAGE]``).

Shell blocks (``sh``, ``bash``, ``shell``, ``console``)
    are checked, never run; nothing trains and no data is read.  In sh/bash/shell blocks every
    line is a command (an optional ``$ `` prompt is dropped); in console blocks only the lines
    with a ``$ `` prompt are (the rest is output).  Backslash-continued lines are joined (a
    ``> `` prompt on a continuation line is dropped), `` #`` comments dropped, here-document
    bodies skipped; ``&&``, ``||``, ``;``, ``|`` and ``$(...)`` separate commands, and leading
    ``VAR=value`` assignments and ``time``/``env``/``srun``/``nohup``/``exec`` are dropped.
    One test per line (``test_shell_command[PAGE:LINE]``).  What is checked:

    - ``hlop train ...``: hlop's own parser (full flag names: no abbreviations), then the
      configuration resolved exactly as ``hlop train ... --show-config`` resolves it (the
      preset, every flag, every ``--set`` key and value, a benchmark ``FILE.py:FUNCTION``
      of your data built); data directories need not exist.  A ``--model FILE.py:FUNCTION``
      or ``module:FUNCTION`` must import and have FUNCTION.
    - ``hlop compare ...``: the same, and every method of ``--methods`` known, ``--seeds``
      integers, no ``--set method=`` or ``seed=``.
    - ``hlop train --resume DIR``, ``hlop train --config FILE`` (FILE not in the working
      directory), ``hlop report ...``, ``hlop data fetch ...``: parsed only.
    - ``torchrun ... -m hlop ARGS``, ``python -m hlop ARGS``: ARGS as ``hlop ARGS``.
    - ``python PATH.py ARGS``: PATH exists; if it uses argparse, its ``--help`` lists every
      ``--flag`` of ARGS.
    - ``pip install``: every extra of ``.[a,b]`` / ``hlop[a]`` is one of pyproject's
      optional-dependencies; the files of ``-c`` / ``-r`` and the path of ``-e`` exist.
    - anything else (``cd``, ``ruff``, ``pytest``, ``nvidia-smi``...) is not checked.

    A command with placeholders (``hlop train BENCHMARK``, ``[--set k=v]``) fails: show real
    values, or mark the block not-run.

Blocks inside MyST directives written as fences (```` ````{note} ```` around a python fence)
and in list items count like the others.  The page lists come from
:func:`doc_pages.checked_pages` (tests/support/doc_pages.py).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import re
import subprocess
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from doc_pages import ROOT, checked_pages, fences

from hlop.errors import HlopError
from hlop.models.external import is_factory_reference, load_factory
from hlop.run.config import validate
from hlop.tools import cli
from hlop.tools.compare import known, run_config

PYTHON = {"python", "py", "python3"}
SHELL = {"sh", "bash", "shell", "zsh"}
CONSOLE = {"console", "shell-session"}
MARKER = re.compile(r"<!--\s*not[-_ ]?run\b\s*(:?)(.*?)-->", re.I)
SLOW = re.compile(r"<!--\s*docs-test:\s*slow\s*-->")
FILE = re.compile(r"#\s*file:\s*(\S+)\s*$")
#: top-level entries of the repository that the working directory does not link to
NOT_LINKED = {"runs", "data", "build", "dist"}


# ------------------------------------------------------------------------------ the blocks
@dataclass(frozen=True)
class Block:
    """A python or shell block of a page: ``line``, the line of its opening fence;
    ``first``, that of its first line; ``not_run``, the marker's reason (None: runs);
    ``file``, the NAME of a ``# file: NAME`` first line."""

    lang: str
    code: str
    line: int
    first: int
    not_run: str | None
    file: str | None

    @property
    def python(self) -> bool:
        return self.lang in PYTHON

    @property
    def shell(self) -> bool:
        return self.lang in SHELL | CONSOLE


def _marker(before: tuple[str, ...]) -> tuple[str, int] | None:
    """``(reason, k)`` of the not-run marker on the line before a fence (``k`` 0) or the one
    above a blank line (``k`` 1); the reason is "" when missing."""
    for k, line in enumerate(before[:2]):
        m = MARKER.fullmatch(line.strip())
        if m:
            return (m.group(2).strip() if m.group(1) else ""), k
        if line.strip():
            return None
    return None


def blocks(text: str) -> list[Block]:
    """The python and shell blocks of a page, in order."""
    out = []
    for f in fences(text):
        if f.lang not in PYTHON | SHELL | CONSOLE:
            continue
        marker = _marker(f.before)
        head = f.code.split("\n", 1)[0]
        name = FILE.fullmatch(head.strip()) if f.lang in PYTHON else None
        out.append(
            Block(
                f.lang,
                f.code,
                f.line,
                f.first,
                None if marker is None else marker[0],
                name.group(1) if name else None,
            )
        )
    return out


def markup_problems(text: str, root: Path = ROOT) -> list[str]:
    """What is wrong with a page's markers and file blocks (line: problem)."""
    problems = []
    attached, inside = set(), set()
    lines = text.split("\n")
    for f in fences(text):
        inside.update(range(f.line - 1, f.first + f.code.count("\n")))  # 0-based, fences too
        found = _marker(f.before)
        if found is not None:
            attached.add(f.line - 1 - found[1] - 1)  # 0-based line of the marker
            if not found[0]:
                problems.append(f"line {f.line}: not-run marker without a reason")
    for n, line in enumerate(lines):
        if MARKER.search(line) and n not in attached and n not in inside:
            problems.append(
                f"line {n + 1}: not-run marker not on the line before a code block's fence"
                " (one blank line between allowed)"
            )
    top = {p.name for p in linked_entries(root)}
    for b in blocks(text):
        if b.file is None:
            continue
        parts = Path(b.file).parts
        if Path(b.file).is_absolute() or ".." in parts:
            problems.append(f"line {b.line}: file: {b.file} is not a path inside the directory")
        elif parts[0] in top:
            problems.append(
                f"line {b.line}: file: {b.file} would write into the repository's {parts[0]}"
            )
    return problems


# ------------------------------------------------------------------ the working directory
def linked_entries(root: Path = ROOT) -> list[Path]:
    """The repository's top-level files and folders that a working directory links to."""
    return [
        e
        for e in sorted(root.iterdir())
        if not (e.name.startswith(".") or e.name in NOT_LINKED or e.name.endswith(".egg-info"))
    ]


def prepare_workdir(workdir: Path, root: Path = ROOT) -> None:
    """Links to the repository's top-level entries in ``workdir``: the clone that the
    pages' code sees (made once: a second call leaves them)."""
    for entry in linked_entries(root):
        link = workdir / entry.name
        if not link.is_symlink():
            link.symlink_to(entry, target_is_directory=entry.is_dir())


def write_file(block: Block, workdir: Path) -> None:
    target = workdir / block.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.code)


class BlockFailed(Exception):
    pass


def run_python(page: Path, page_blocks: list[Block], workdir: Path) -> None:
    """Run the page's python blocks in order in one namespace (cwd: ``workdir``); raises
    :class:`BlockFailed` naming the page and line of the block that raised."""
    module = types.ModuleType("hlop_docs_page")
    module.__file__ = str(workdir / "hlop_docs_page.py")
    previous = sys.modules.get(module.__name__)
    sys.modules[module.__name__] = module  # dataclasses and pickling look modules up
    sys.path.insert(0, str(workdir))
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (code of the pages may use the legacy global generator)
    try:
        for b in page_blocks:
            if not b.python:
                continue
            if b.file is not None:
                write_file(b, workdir)
            if b.not_run is not None:
                continue
            # line numbers of the page in tracebacks (and its lines shown: linecache reads it)
            code = compile("\n" * (b.first - 1) + b.code, str(page), "exec")
            try:
                exec(code, module.__dict__)
            except SystemExit as e:
                if e.code not in (None, 0):
                    raise BlockFailed(f"{page}:{b.line}: the block exited with {e.code!r}") from e
            except Exception as e:
                frames = traceback.format_exception(type(e), e, e.__traceback__.tb_next)
                raise BlockFailed(
                    f"{page}:{b.line}: the python block raised\n{''.join(frames)}"
                ) from e
    finally:
        sys.path.remove(str(workdir))
        for name, mod in list(sys.modules.items()):  # modules of the page's files
            if str(getattr(mod, "__file__", None) or "").startswith(str(workdir)):
                del sys.modules[name]
        if previous is not None:
            sys.modules[module.__name__] = previous


# ------------------------------------------------------------------------ shell commands
@dataclass(frozen=True)
class Command:
    """A logical line of a shell block: ``line`` in the page, ``text`` joined."""

    line: int
    text: str


def command_lines(block: Block) -> list[Command]:
    """The logical command lines of a shell block."""
    console = block.lang in CONSOLE
    lines = block.code.split("\n")
    out, i, heredoc = [], 0, None
    while i < len(lines):
        start, s = i, lines[i].strip()
        i += 1
        if heredoc is not None:
            if s == heredoc:
                heredoc = None
            continue
        if s.startswith("$ ") or s == "$":
            s = s[2:]
        elif console:
            continue  # output
        while s.endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            i += 1
            s = s[:-1].rstrip() + " " + (nxt[2:].lstrip() if nxt.startswith("> ") else nxt)
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", s)
        if m:
            heredoc = m.group(1)
        if s:
            out.append(Command(block.first + start, s))
    return out


SEPARATORS = {"&&", "||", "|", "|&", ";", "&", "(", ")", "$("}
REDIRECT = "<>"


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, each a list of words (quotes removed; comments,
    redirections and separators dropped).  A small lexer: enough for documented commands."""
    words: list[str | None] = []  # None: a separator
    cur: list[str] = []
    in_word = skip_target = False
    quote: str | None = None
    i = 0

    def flush():
        nonlocal cur, in_word, skip_target
        if in_word:
            if skip_target:
                skip_target = False
            else:
                words.append("".join(cur))
        cur, in_word = [], False

    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = None
            elif quote == '"' and c == "\\" and i + 1 < len(line) and line[i + 1] in '"\\$`':
                i += 1
                cur.append(line[i])
            else:
                cur.append(c)
        elif c.isspace():
            flush()
        elif c in "'\"":
            quote, in_word = c, True
        elif c == "\\" and i + 1 < len(line):
            i += 1
            cur.append(line[i])
            in_word = True
        elif c == "#" and not in_word:
            break  # a comment
        elif c == "$" and line[i + 1 : i + 2] == "(":
            flush()
            words.append(None)
            i += 1
        elif c in "&|;()":
            flush()
            words.append(None)
            if line[i + 1 : i + 2] in ("&", "|") and c in "&|":
                i += 1
        elif c in REDIRECT:
            if in_word and "".join(cur).isdigit():  # 2>file: the descriptor
                cur, in_word = [], False
            flush()
            while line[i + 1 : i + 2] in (">", "&"):
                i += 1
            if line[i + 1 : i + 2].isdigit() and line[i] == "&":  # >&1
                while line[i + 1 : i + 2].isdigit():
                    i += 1
            else:
                skip_target = True
        else:
            cur.append(c)
            in_word = True
        i += 1
    flush()
    commands, current = [], []
    for w in [*words, None]:
        if w is None:
            if current:
                commands.append(current)
            current = []
        else:
            current.append(w)
    return commands


WRAPPERS = {"time", "env", "srun", "nohup", "exec", "sudo", "command"}


def _strip_prefix(words: list[str]) -> list[str]:
    while words and (re.match(r"[A-Za-z_]\w*=", words[0]) or words[0] in WRAPPERS):
        words = words[1:]
    return words


def _is_python(word: str) -> bool:
    return re.fullmatch(r"(.*/)?python(\d+(\.\d+)?)?", word) is not None


def checked(words: list[str]) -> tuple[str, list[str]] | None:
    """``(kind, args)`` of a simple command that is checked (kind "hlop", "script" or
    "pip"), or None."""
    words = _strip_prefix(words)
    if not words:
        return None
    if words[0] == "hlop":
        return "hlop", words[1:]
    for k in range(len(words) - 1):  # torchrun ... -m hlop, python -m hlop
        if words[k] == "-m" and words[k + 1] == "hlop":
            return "hlop", words[k + 2 :]
    if words[0] in ("pip", "pip3") or (_is_python(words[0]) and words[1:3] == ["-m", "pip"]):
        rest = words[1:] if words[0].startswith("pip") else words[3:]
        return ("pip", rest) if "install" in rest else None
    if _is_python(words[0]):
        args = words[1:]
        while args and args[0].startswith("-") and args[0] != "-m":
            args = args[1:]  # python -u, -X ...
        if args and args[0].endswith(".py"):
            return "script", args
    return None


# --------------------------------------------------------------------------- the checks
def _parser() -> argparse.ArgumentParser:
    """hlop's parser, with full flag names only (an abbreviation works, but a page shows the
    flag as it is)."""
    parser = cli._parser()
    todo = [parser]
    while todo:
        p = todo.pop()
        p.allow_abbrev = False
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())
    return parser


def _last_line(text: str) -> str:
    lines = [s for s in text.strip().splitlines() if s.strip()]
    return lines[-1] if lines else text


def check_hlop(argv: list[str]) -> list[str]:
    """What is wrong with ``hlop ARGV`` run in the current directory (nothing: [])."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:
            if e.code in (None, 0):  # --help
                return []
            return [f"hlop's parser rejects it: {_last_line(out.getvalue())}"]
    try:
        with redirect_stdout(out), redirect_stderr(out):
            if args.command == "train":
                if args.resume or (args.config and not Path(args.config).is_file()):
                    return []  # parse-only: the run or file is not there
                args.show_config = True
                if cli._run(args) != 0:  # as hlop train ... --show-config: no data, no training
                    return [f"as --show-config: {_last_line(out.getvalue())}"]
            elif args.command == "compare":  # cli._compare's checks, without the study
                for item in args.set:
                    if item.partition("=")[0].strip() in cli.STUDY_KEYS:
                        return ["hlop compare sets method and seed per run: --methods, --seeds"]
                methods = cli._comma_list(args.methods, "methods")
                unknown = [m for m in methods if not known(m)]
                if unknown:
                    return [f"--methods: unknown method(s) {', '.join(unknown)}"]
                try:
                    seeds = [int(s) for s in cli._comma_list(args.seeds, "seeds")]
                except ValueError:
                    return [f"--seeds expects integers, got {args.seeds!r}"]
                base = cli.resolve_config(args, log=lambda *_: None)
                for m in methods:
                    validate(run_config(base, m, seeds[0]))
            model = getattr(args, "model", None)
            if model is not None and is_factory_reference(model):
                load_factory(model)
    except HlopError as e:
        return [f"hlop: error: {e}"]
    return []


#: run in one process: ``python SCRIPT --help`` for each script of argv, as JSON
HELP_RUNNER = """
import contextlib, io, json, os, runpy, sys
out = {}
for path in sys.argv[1:]:
    folder, buf, rc = os.path.dirname(path), io.StringIO(), 0
    os.chdir(folder)
    sys.path[0], sys.argv = folder, [path, "--help"]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:
        rc = 1
        buf.write(repr(e))
    for name, module in list(sys.modules.items()):  # the script's own modules
        if (getattr(module, "__file__", None) or "").startswith(folder + os.sep):
            del sys.modules[name]
    out[path] = [rc, buf.getvalue()]
print(json.dumps(out))
"""


@functools.cache
def _helps(paths: tuple[Path, ...], version: int = 0) -> dict[Path, tuple[int, str]]:
    """``python PATH --help`` of each of ``paths`` (exit status, output), in one process:
    torch is imported once for all of them (``version``: a key of the files' contents)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        return {p: (proc.returncode, proc.stdout + proc.stderr) for p in paths}
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {Path(k): (rc, text) for k, (rc, text) in found.items()}


def _uses_argparse(path: Path) -> bool:
    return "argparse" in path.read_text(errors="replace")


@functools.cache
def documented_scripts(root: Path = ROOT) -> tuple[Path, ...]:
    """The argparse scripts that the pages' commands run (``python PATH.py``)."""
    found = set()
    for _, text in page_texts(root):
        for c in page_commands(text):
            for words in split_commands(c.text):
                what = checked(words)
                if what and what[0] == "script":
                    path = root / what[1][0]
                    if path.is_file() and _uses_argparse(path):
                        found.add(path.resolve())
    return tuple(sorted(found))


def script_help(path: Path) -> tuple[int, str]:
    """``python PATH --help``: (exit status, output); the scripts of the pages are run all
    at once on the first call."""
    batch = documented_scripts()
    if path in batch:
        return _helps(batch)[path]
    return _helps((path,), path.stat().st_mtime_ns)[path]  # a file of a page, maybe rewritten


def check_script(args: list[str], workdir: Path) -> list[str]:
    path = workdir / args[0]
    if not path.is_file():
        return [f"{args[0]}: no such script"]
    if not _uses_argparse(path):
        return []
    rc, text = script_help(path.resolve())
    if rc != 0:
        return [f"python {args[0]} --help failed ({rc}): {_last_line(text)}"]
    known_flags = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", text))
    used = [a.split("=", 1)[0] for a in args[1:] if a.startswith("--") and a != "--"]
    missing = sorted({f for f in used if f not in known_flags})
    return [f"{args[0]} has no flag {f} (not in its --help)" for f in missing]


@functools.cache
def extras(root: Path = ROOT) -> frozenset[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return frozenset(_norm(e) for e in project.get("optional-dependencies", {}))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_pip(args: list[str], workdir: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for k, a in enumerate(args):
        m = re.fullmatch(r"(.+?)\[([^\]]*)\]", a)
        if m and (m.group(1) in (".", "./") or _norm(m.group(1)) == "hlop"):
            for e in m.group(2).split(","):
                if e.strip() and _norm(e.strip()) not in extras(root):
                    problems.append(f"{a}: pyproject.toml has no extra {e.strip()!r}")
        if a in ("-c", "-r", "--constraint", "--requirement", "-e", "--editable"):
            target = args[k + 1] if k + 1 < len(args) else ""
            target = re.sub(r"\[.*\]$", "", target)
            if target and not (workdir / target).exists():
                problems.append(f"{a} {target}: no such file")
    return problems


def check_command(command: Command, workdir: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with one command line (cwd: ``workdir``, prepared)."""
    problems = []
    commands = [(w, checked(w)) for w in split_commands(command.text)]
    commands = [(w, what) for w, what in commands if what is not None]
    for words, (kind, args) in commands:
        if kind == "hlop":
            found = check_hlop(args)
        elif kind == "script":
            found = check_script(args, workdir)
        else:
            found = check_pip(args, workdir, root)
        where = f"{' '.join(words)}: " if len(commands) > 1 else ""  # which one of the line
        problems += [f"{where}{p}" for p in found]
    return problems


# ------------------------------------------------------------------------ the test items
def page_texts(root: Path = ROOT) -> Iterator[tuple[Path, str]]:
    for page in checked_pages(root):
        yield page, (root / page).read_text()


def python_pages(root: Path = ROOT) -> list:
    params = []
    for page, text in page_texts(root):
        if any(b.python and b.not_run is None for b in blocks(text)):
            marks = [pytest.mark.slow] if SLOW.search(text) else []
            params.append(pytest.param(page, marks=marks, id=page.as_posix()))
    return params


def page_commands(text: str) -> list[Command]:
    """The command lines of a page's shell blocks that hold a checked command."""
    return [
        c
        for b in blocks(text)
        if b.shell and b.not_run is None
        for c in command_lines(b)
        if any(checked(w) for w in split_commands(c.text))
    ]


def shell_commands(root: Path = ROOT) -> list:
    return [
        pytest.param(page, c, id=f"{page.as_posix()}:{c.line}")
        for page, text in page_texts(root)
        for c in page_commands(text)
    ]


def check_page_command(page: Path, command: Command, workdir: Path, root: Path = ROOT):
    """Check ``command`` of ``page`` (relative to ``root``, or absolute) in ``workdir``,
    prepared for the page (links, the page's file blocks); the process's cwd changes to it."""
    prepare_workdir(workdir, root)
    for b in blocks((root / page).read_text()):
        if b.file is not None:
            write_file(b, workdir)
    os.chdir(workdir)
    return check_command(command, workdir, root)


@pytest.mark.parametrize("page", checked_pages(), ids=Path.as_posix)
def test_markup(page):
    problems = markup_problems((ROOT / page).read_text())
    assert not problems, f"{page}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", python_pages())
def test_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    torch.set_num_threads(1)  # the conftest puts the count back afterwards
    page_blocks = blocks((ROOT / page).read_text())
    prepare_workdir(tmp_path)
    try:
        run_python(ROOT / page, page_blocks, tmp_path)
    except BlockFailed as e:
        failure = str(e)
    else:
        return
    pytest.fail(failure, pytrace=False)  # outside the except: the page's traceback only


@pytest.mark.parametrize(("page", "command"), shell_commands())
def test_shell_command(page, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problems = check_page_command(page, command, tmp_path)
    assert not problems, f"{page}:{command.line}: {command.text}\n  " + "\n  ".join(problems)


# ------------------------------------------------------------ the checker's own tests
def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text)
    (tmp_path / "work").mkdir(exist_ok=True)
    return page


def _check_shell(tmp_path: Path, monkeypatch, text: str) -> list[str]:
    """The problems of every checked command of the page ``text``, as the tests find them."""
    page = _page(tmp_path, text)
    monkeypatch.chdir(tmp_path / "work")
    problems = []
    for c in page_commands(text):
        problems += check_page_command(page, c, tmp_path / "work")
    return problems


def test_split_commands():
    line = (
        'OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m hlop train --out-dir "runs/a b" '
        '--tasks 2 > log.txt 2>&1 && pip install -e ".[test]" | tee x; echo a#b  # note'
    )
    assert split_commands(line) == [
        ["OMP_NUM_THREADS=1", "torchrun", "--nproc_per_node=2", "-m", "hlop", "train",
         "--out-dir", "runs/a b", "--tasks", "2"],
        ["pip", "install", "-e", ".[test]"],
        ["tee", "x"],
        ["echo", "a#b"],
    ]  # fmt: skip
    assert checked(split_commands(line)[0]) == ("hlop", ["train", "--out-dir", "runs/a b",
                                                         "--tasks", "2"])  # fmt: skip
    assert split_commands("head=$(scontrol show x | head -n 1)")[1] == ["scontrol", "show", "x"]


def test_console_prompts_and_continuations():
    code = "$ hlop train \\\n>   --tasks 2\nhlop train --nope  (output)\n$ echo ok\n"
    (block,) = blocks(f"```console\n{code}```\n")
    assert command_lines(block) == [Command(2, "hlop train --tasks 2"), Command(5, "echo ok")]
    (block,) = blocks(f"```sh\n{code}```\n")
    assert [c.line for c in command_lines(block)] == [2, 4, 5]


def test_a_good_page_passes(tmp_path, monkeypatch):
    text = (
        "# Page\n\n```sh\n$ hlop train pmnist --data-dir no/such/dir --epochs 2 \\\n"
        "    --set hlop.iterations=3   # full MNIST: not read\n"
        "hlop compare pmnist-subset --methods baseline,hlop,replay --seeds 1,2 --out-dir s\n"
        "hlop train --resume runs/nowhere\nhlop report runs/x\n"
        'pip install -c constraints.txt -e ".[test,docs]"\n```\n'
    )
    assert _check_shell(tmp_path, monkeypatch, text) == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("hlop train --no-such-flag 3", "unrecognized arguments: --no-such-flag"),
        ("hlop train --epoch 2", "unrecognized arguments: --epoch"),  # an abbreviation
        ("hlop train --method nope", "invalid choice: 'nope'"),
        ("hlop train --set hlop.nope=3", "unknown configuration key 'hlop.nope'"),
        ("hlop train --set epochs=two", "cannot read 'two' as int"),
        ("hlop compare --methods hlop,nope --out-dir s", "unknown method(s) nope"),
        ("hlop compare --seeds 1,x --out-dir s", "--seeds expects integers"),
        ("hlop compare --set seed=3 --out-dir s", "sets method and seed per run"),
        ("torchrun --nproc_per_node=2 -m hlop train --lr x", "invalid float value"),
        ("hlop train --model nets.py:mlp", "no such file nets.py"),
        ('pip install -e ".[test,nope]"', "no extra 'nope'"),
        ("pip install -c no-such.txt -e .", "-c no-such.txt: no such file"),
        ("python benchmarks/no_such_script.py", "no such script"),
    ],
)
def test_a_broken_command_fails(tmp_path, monkeypatch, command, expected):
    problems = _check_shell(tmp_path, monkeypatch, f"```bash\n{command}\n```\n")
    assert problems and expected in problems[0], problems


def test_not_run_needs_a_reason_and_a_block(tmp_path, monkeypatch):
    good = "<!-- not-run: needs a GPU -->\n\n```sh\nhlop train --no-such-flag\n```\n"
    assert markup_problems(good) == []
    assert blocks(good)[0].not_run == "needs a GPU"
    assert _check_shell(tmp_path, monkeypatch, good) == []  # not checked
    for bad in ("<!-- not-run -->", "<!-- not-run: -->", "<!-- not-run:   -->"):
        problems = markup_problems(f"{bad}\n```python\n1 / 0\n```\n")
        assert problems == ["line 2: not-run marker without a reason"], problems
    stray = "<!-- not-run: far away -->\n\n\n```python\npass\n```\n"
    assert "not on the line before" in markup_problems(stray)[0]
    assert blocks(stray)[0].not_run is None  # and the block runs


def test_a_python_block_that_raises_fails(tmp_path):
    text = "```python\nx = 1\n```\n\ntext\n\n```python\ny = x + 1\nraise ValueError(y)\n```\n"
    page = _page(tmp_path, text)
    with pytest.raises(BlockFailed, match=r"page\.md:7: the python block raised") as e:
        run_python(page, blocks(text), tmp_path / "work")
    assert "ValueError: 2" in str(e.value) and f'"{page}", line 9' in str(e.value)
    marked = text.replace("\n```python\ny", "\n<!-- not-run: shows a failure -->\n```python\ny")
    run_python(page, blocks(marked), tmp_path / "work")


FILE_PAGE = """\
```python
# file: nets.py
from torch import nn


def mlp(input_shape, num_classes):
    return nn.Linear(784, num_classes)
```

```python
# file: tool.py
import argparse

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--good")
    p.parse_args()
```

```python
import nets

assert nets.mlp(None, 10).out_features == 10
```

```sh
hlop train pmnist-subset --model nets.py:mlp --tasks 2
python tool.py --good 1
```
"""


def test_file_blocks(tmp_path, monkeypatch):
    page = _page(tmp_path, FILE_PAGE)
    work = tmp_path / "work"
    monkeypatch.chdir(work)
    run_python(page, blocks(FILE_PAGE), work)
    assert (work / "nets.py").read_text().startswith("# file: nets.py\n")
    assert "nets" not in sys.modules  # the page's modules are forgotten
    assert _check_shell(tmp_path, monkeypatch, FILE_PAGE) == []
    for broken, expected in (
        (FILE_PAGE.replace("--model nets.py:mlp", "--model nets.py:nope"), "no function 'nope'"),
        (FILE_PAGE.replace('("--good")', '("--other")'), "has no flag --good"),
    ):
        problems = _check_shell(tmp_path, monkeypatch, broken)
        assert len(problems) == 1 and expected in problems[0], problems
    assert "would write into" in markup_problems(FILE_PAGE.replace(": nets.py", ": src/n.py"))[0]


def test_blocks_in_directives_and_code_block_fences():
    text = (
        "# T\n\n````{note}\nA note.\n\n```python\nx = 1\n```\n````\n\n"
        "```{code-block} python\n:caption: c\n\ny = 2\n```\n\n```{toctree}\nx\n```\n"
        "- item\n\n  <!-- not-run: in a list -->\n  ```sh\n  hlop train --nope\n  ```\n"
    )
    found = [(b.lang, b.code, b.line, b.first, b.not_run) for b in blocks(text)]
    assert found == [
        ("python", "x = 1\n", 6, 7, None),
        ("python", "y = 2\n", 11, 14, None),
        ("sh", "hlop train --nope\n", 23, 24, "in a list"),
    ]
    assert markup_problems(text) == []


def test_page_lists_and_the_slow_marker(tmp_path):
    for name, text in {
        "README.md": "```python\npass\n```\n",
        "docs/guide.md": "<!-- docs-test: slow -->\n```python\npass\n```\n",
        "docs/api/hlop.md": "```python\nraise\n```\n",
        "docs/changelog.md": "```python\nraise\n```\n",
        "docs/_build/old.md": "```python\nraise\n```\n",
        "docs/no-python.md": "```sh\nls\n```\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert [p.as_posix() for p in checked_pages(tmp_path)] == [
        "README.md", "docs/guide.md", "docs/no-python.md",
    ]  # fmt: skip
    params = python_pages(tmp_path)
    assert [(p.id, [m.name for m in p.marks]) for p in params] == [
        ("README.md", []),
        ("docs/guide.md", ["slow"]),
    ]
