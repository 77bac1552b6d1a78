"""The shape of the package (DESIGN.md, "The next shape"), read from the source with ``ast``.

- No import cycle anywhere in ``osrbench/`` or in a plugin package under ``plugins/`` and
  ``examples/``. Every import statement counts, at module level and inside functions, and so do
  ``if TYPE_CHECKING:`` imports (a reader follows those too). ``from osrbench import x``
  counts as importing ``osrbench.x`` when ``x`` is a submodule, and the package's lazy public
  names (``osrbench._LAZY``) count as imports of ``osrbench``.
- Nothing below a command imports one: no library module imports ``osrbench.commands`` or
  ``osrbench.cli``.
- Only commands print: no ``print(`` outside ``osrbench/commands/``, ``cli.py`` and
  ``testing/__main__.py`` (the conformance suite's own report).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import osrbench

PACKAGE = Path(osrbench.__file__).resolve().parent

#: Modules that may print: the command line and the conformance suite's report.
MAY_PRINT = ("osrbench.cli", "osrbench.testing.__main__")


def module_paths(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    paths = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        paths[".".join(parts)] = path
    return paths


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def runtime_imports(module: str, source: str, modules: set[str], is_package: bool = False,
                    type_checking: bool = False) -> set[str]:
    """Modules of ``modules`` that ``module`` imports at run time (``type_checking``: and in its
    ``if TYPE_CHECKING:`` blocks, which are skipped otherwise)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                for inner in child.orelse:  # the ``else:`` branch runs
                    visit_one(inner)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
        visit(node)

    visit(ast.parse(source))
    return {m for m in found if m in modules and m != module}


def import_graph(package: Path = PACKAGE, type_checking: bool = False) -> dict[str, set[str]]:
    """module -> the package's modules it imports at run time (``type_checking``: or for type checkers)."""
    paths = module_paths(package)
    names = set(paths)
    graph = {m: runtime_imports(m, p.read_text(encoding="utf-8"), names, p.name == "__init__.py", type_checking)
             for m, p in paths.items()}
    if package == PACKAGE:
        graph["osrbench"] |= set(osrbench._LAZY.values())  # imported by the package's __getattr__
    return graph


#: The plugin packages of this repository (each a distribution's importable package).
PLUGIN_PACKAGES = sorted(p.parent for root in ("plugins", "examples")
                         for p in (PACKAGE.parent / root).glob("*/osrbench_*/__init__.py"))


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted; iterative (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    out.append(sorted(comp))
    return out


def _path(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """A shortest cycle ``start -> ... -> start`` inside ``within`` (breadth first)."""
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        nxt = []
        for m in todo:
            for child in sorted(graph[m] & within):
                if child == start:
                    cycle = [m]
                    while cycle[-1] != start:
                        cycle.append(prev[cycle[-1]])
                    return [start, *reversed(cycle[:-1]), start] if m != start else [start, start]
                if child not in prev:
                    prev[child] = m
                    nxt.append(child)
        todo = nxt
    raise AssertionError(f"{start} is in no cycle")


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per group of modules that import each other (a non-trivial component)."""
    out = []
    for comp in strongly_connected(graph):
        if len(comp) > 1 or comp[0] in graph[comp[0]]:
            out.append(_path(graph, comp[0], set(comp)))
    return out


def _is_command(module: str) -> bool:
    return (module in ("osrbench.cli", "osrbench.__main__", "osrbench.commands")  # python -m osrbench is the CLI
            or module.startswith("osrbench.commands."))


# ------------------------------------------------------------------------------------------ tests


def test_the_walker_sees_function_level_imports_and_skips_type_checking_blocks():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import osrbench.a\n"
        "from osrbench import b, CONSTANT\n"
        "from . import c\n"
        "if TYPE_CHECKING:\n    from osrbench import d\nelse:\n    from osrbench import e\n"
        "def f():\n    from osrbench.f import thing\n    class K:\n        import osrbench.g\n"
    )
    modules = {"osrbench", *(f"osrbench.{x}" for x in "abcdefg")}
    found = runtime_imports("osrbench.m", source, modules)
    assert found == {"osrbench", "osrbench.a", "osrbench.b", "osrbench.c", "osrbench.e", "osrbench.f",
                     "osrbench.g"}


def test_the_cycle_finder_finds_every_group_and_a_real_cycle_in_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"g"}, "g": {"f"}}
    cycles = sorted(import_cycles(graph))
    assert cycles == [["a", "b", "c", "a"], ["e", "e"], ["f", "g", "f"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert {"osrbench", "osrbench.cli", "osrbench.engine", "osrbench.commands.run", "osrbench.metrics"} <= set(graph)
    assert "osrbench.commands.run" in graph["osrbench.cli"]
    assert "osrbench.engine" in graph["osrbench.commands.run"]  # imported inside cmd_run


@pytest.mark.parametrize("type_checking", [False, True], ids=["run time", "with TYPE_CHECKING imports"])
def test_no_import_cycle_anywhere_in_the_package(type_checking):
    cycles = import_cycles(import_graph(type_checking=type_checking))
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PLUGIN_PACKAGES, ids=lambda p: p.name)
def test_no_import_cycle_in_a_plugin(package):
    """A plugin registers from a module that imports its methods, never the reverse."""
    cycles = import_cycles(import_graph(package, type_checking=True))
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_the_plugin_packages_are_found():
    assert {"osrbench_arpl", "osrbench_dias", "osrbench_softmax"} <= {p.name for p in PLUGIN_PACKAGES}


def test_no_library_module_imports_a_command():
    graph = import_graph()
    bad = sorted(f"{m} imports {', '.join(sorted(filter(_is_command, deps)))}"
                 for m, deps in graph.items() if not _is_command(m) and any(map(_is_command, deps)))
    assert not bad, "library modules importing the command line:\n" + "\n".join(bad)


def _prints(source: str) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]


def test_the_print_finder_finds_calls_not_words():
    assert _prints("x = 'print(1)'\n# print(2)\ndef f():\n    print(3)\n") == [4]


@pytest.mark.parametrize("module", sorted(m for m in module_paths() if not _is_command(m) and m not in MAY_PRINT))
def test_only_commands_print(module):
    lines = _prints(module_paths()[module].read_text(encoding="utf-8"))
    assert not lines, f"{module} calls print() on line(s) {lines}: return text or take a log callable"


# ------------------------------------------------------------------------------------ module sizes

#: The longest a module may be; those over LONG are named, with their reason, in the README.
MAX_LINES, LONG = 600, 400
ROOT = PACKAGE.parent


def _sources() -> list[Path]:
    """The host's and the plugins' modules (their tests aside)."""
    found = list(PACKAGE.rglob("*.py"))
    for pkg in PLUGIN_PACKAGES:
        found += [p for p in pkg.rglob("*.py") if "tests" not in p.relative_to(pkg).parts]
    return sorted(found)


def test_no_module_is_over_600_lines_and_each_over_400_is_named_in_the_readme():
    table = (ROOT / "README.md").read_text(encoding="utf-8").split("No module is over 600 lines", 1)[1]
    table = table.split("\n## ", 1)[0]
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in _sources()}
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}, "split these modules"
    unnamed = {m: n for m, n in sizes.items() if n > LONG and f"`{m}`" not in table}
    assert not unnamed, "name each in the README's architecture section with why it stays whole"
