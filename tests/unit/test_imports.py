"""The package's import structure: no import cycles between hlop's modules, and a lazy
``hlop`` package (``import hlop.core.circuit`` does not load the networks, the training rules...).

Quick: the graph is read from the source with :mod:`ast`; nothing is trained.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

SRC = REPO / "src"
PACKAGE_DIR = SRC / "hlop"


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes):
    """Every Import / ImportFrom in ``nodes`` and below them (in functions too), except those
    in the body of an ``if TYPE_CHECKING:`` block (its ``else:`` branch runs, so it counts)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse)
        else:
            yield from _imports(ast.iter_child_nodes(node))


def import_graph(root: Path, package: str = "hlop") -> dict[str, set[str]]:
    """Module -> the package's modules it imports, read from the source under ``root``.

    Relative imports are resolved; ``from . import x`` counts as importing the submodule
    ``x`` when there is one, or else the submodule the top package's ``__init__`` takes ``x``
    from. The top package's ``__init__`` and ``__main__`` are left out
    (as nodes and as targets): the former only re-exports lazily, the latter is an entry point.
    """
    files = {_module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    excluded = {package, f"{package}.__main__"}
    # names the top package re-exports (lazily or not) -> the submodule that defines them, so
    # that ``from hlop import SpikingMLP`` counts as importing hlop.models.base
    reexports: dict[str, str] = {}
    if package in files:
        for node in ast.walk(ast.parse(files[package].read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                for alias in node.names:
                    reexports[alias.asname or alias.name] = f"{package}.{node.module}"
    modules = set(files) - excluded
    graph: dict[str, set[str]] = {}
    for name in sorted(modules):
        path = files[name]
        is_pkg = path.name == "__init__.py"
        # the package a relative import of level 1 is relative to
        here = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports([ast.parse(path.read_text(encoding="utf-8"), str(path))]):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                base_parts = here.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets.add(base)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in files:
                    targets.add(sub)
                elif base == package and alias.name in reexports:
                    targets.add(reexports[alias.name])
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles found by a depth-first search, one per back edge, each as ``[a, b, ..., a]``.

    Empty if and only if the graph has no cycle (not every cycle of a tangled graph is
    listed, but each strongly connected part with a cycle yields at least one).
    """
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _fmt(cycle: list[str]) -> str:
    return " -> ".join(cycle)


# ---------------------------------------------------------------- the cycle finder itself


def test_find_cycles_on_hand_made_graphs():
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert [_fmt(c) for c in find_cycles(cyclic)] == ["a -> b -> c -> a"]
    assert find_cycles({"x": {"x"}}) == [["x", "x"]]
    # a diamond and a chain: shared targets are not cycles
    acyclic = {"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set(), "e": {"a", "d"}}
    assert find_cycles(acyclic) == []
    assert find_cycles({}) == []


def test_import_graph_on_a_scratch_package(tmp_path):
    """The walker resolves relative imports, counts imports inside functions and
    ``from . import submodule``, and skips ``if TYPE_CHECKING:`` blocks."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import A\n",
        "__main__.py": "from .a import A\n",
        "a.py": "from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n"
        "    from .c import C\nelse:\n    import os\nA = 1\n",
        "b.py": "def f():\n    from .sub.d import D\n    return D\n",
        "c.py": "import pkg.a\nimport typing\nif typing.TYPE_CHECKING:\n    import pkg.b\n",
        "sub/__init__.py": "",
        "sub/d.py": "from .. import c, A, __version__\nD = 1\n",  # A: re-exported from a
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.d"},
        "pkg.c": {"pkg.a"},
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.c", "pkg.a"},
    }
    assert [_fmt(c) for c in find_cycles(graph)] == [
        "pkg.a -> pkg.b -> pkg.sub.d -> pkg.a",
        "pkg.a -> pkg.b -> pkg.sub.d -> pkg.c -> pkg.a",
    ]
    # without the import in the function, no cycle is left
    (pkg / "b.py").write_text("B = 1\n")
    assert find_cycles(import_graph(pkg, "pkg")) == []


# ---------------------------------------------------------------- hlop itself


def test_hlop_has_no_import_cycles():
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 20, f"the walk found too few modules: {sorted(graph)}"
    assert "hlop.core.circuit" in graph and "hlop.data.containers" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between hlop's modules:\n" + "\n".join(map(_fmt, cycles))


#: The layers of the package, one sub-package each, in order (docs/extending.md, "Where things
#: are"): a module imports only modules of its own layer or of layers before it.
#: ``hlop.errors``, the one module beside the sub-packages, is in the first.
LAYERS = ("core", "spiking", "layers", "models", "data", "loop", "methods", "run", "tools")


def layer_of() -> dict[str, int]:
    """Every module of the package -> the index of its layer (its sub-package)."""
    graph = import_graph(PACKAGE_DIR)
    out = {}
    for module in graph:
        folder = module.split(".")[1]
        out[module] = LAYERS.index("core" if folder == "errors" else folder)
    return out


def test_every_module_is_in_a_layer_folder():
    top = sorted(p.name for p in PACKAGE_DIR.iterdir() if p.suffix == ".py" or p.is_dir())
    top = [n for n in top if n not in ("__pycache__",)]
    assert top == sorted(["__init__.py", "__main__.py", "errors.py", *LAYERS]), top


def test_modules_import_only_their_layer_and_those_before():
    graph, layer = import_graph(PACKAGE_DIR), layer_of()
    upward = [
        f"{m} ({list(LAYERS)[layer[m]]}) imports {d} ({list(LAYERS)[layer[d]]})"
        for m, deps in graph.items()
        for d in deps
        if layer[d] > layer[m]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_layer_check_sees_an_upward_import():
    graph, layer = import_graph(PACKAGE_DIR), layer_of()
    assert any(layer[d] < layer[m] for m, deps in graph.items() for d in deps)  # edges exist
    assert layer["hlop.core.circuit"] < layer["hlop.loop.distributed"] < layer["hlop.run.config"]


def _loaded_after(code: str) -> tuple[list[str], list[str]]:
    """What ``code`` printed, and the hlop modules loaded once it ran, in a fresh interpreter
    (on this checkout's src)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    script = (
        f"{code}\nimport sys\n"
        "print(sorted(m for m in sys.modules if m == 'hlop' or m.startswith('hlop.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    *printed, last = out.stdout.strip().splitlines()
    return printed, ast.literal_eval(last)


def test_importing_the_circuit_loads_only_what_it_needs():
    _, loaded = _loaded_after("import hlop.core.circuit")
    assert set(loaded) <= {
        "hlop",
        "hlop.core",
        "hlop.core.circuit",
        "hlop.errors",
        "hlop.core.choices",
        "hlop.core.precision",
    }, loaded


def test_importing_hlop_is_lazy():
    _, loaded = _loaded_after("import hlop\nassert hlop.__version__")
    assert loaded == ["hlop"]
    printed, _ = _loaded_after(
        "import hlop\nprint(hlop.SpikingMLP.__module__, hlop.SpikingMLP.__name__)\n"
        "print(hlop.HLOP.__module__, hlop.HLOP.__name__)"
    )
    assert printed == ["hlop.models.mlp SpikingMLP", "hlop.layers.attach HLOP"]


def test_public_names_resolve():
    import hlop

    for name in hlop.__all__:
        assert getattr(hlop, name) is not None, name
    assert set(hlop.__all__) <= set(dir(hlop))
    assert "HlopError" in hlop.__all__
    from hlop import HLOP, LateralCircuit, SpikingMLP  # noqa: F401

    with pytest.raises(AttributeError, match="no_such_name"):
        hlop.no_such_name  # noqa: B018


# ---------------------------------------------------------------- the package's shape


def _modules() -> dict[str, Path]:
    return {_module_name(p, PACKAGE_DIR, "hlop"): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_no_module_is_over_500_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines (split them by what they hold): {long}"


def _names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)
    }


def test_only_the_run_and_cli_layers_read_the_configuration():
    """The Config is resolved into components at the top of a run (hlop.run.build): the
    loop, the methods, the networks and the neurons never see it."""
    readers = sorted(m for m, p in _modules().items() if _names_used(p) & {"cfg", "Config"})
    assert len(readers) <= 9, readers  # hlop.run.api: the harness from Python reads it too
    assert all(m.startswith(("hlop.run.", "hlop.tools.")) for m in readers), readers


def _calls(attribute: str) -> list[str]:
    """The modules (with line numbers) that call ``.attribute(...)``."""
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == attribute
            ):
                found.append(f"{module}:{node.lineno}")
    return found


def test_hlop_task_schedule_is_written_once():
    """One call site each of the generous block and of the fit (the task lifecycle), and a
    circuit's merge in the lifecycle alone, but for GPM's own bases."""
    assert [c.split(":")[0] for c in _calls("generous_block")] == ["hlop.core.lifecycle"]
    assert [c.split(":")[0] for c in _calls("fit_block")] == ["hlop.core.lifecycle"]
    merges = sorted({c.split(":")[0] for c in _calls("merge")})
    assert merges == ["hlop.core.lifecycle", "hlop.methods.gpm"], merges
