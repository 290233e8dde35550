"""The library's layers: every import of every module of ``lib/musicrnn`` (at the top and inside
functions) points down the house plan's table, never up, and nothing imports in a circle.

The order is written here and checked against the README's list of modules and, when that file
is there, against ``../shared/DESIGN.md``'s table (which may lack modules added after it).
Modules in one row (``errors``/``paths``, ``runner``/``cli``) may import each other as long as
no cycle forms.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lib" / "musicrnn"
DESIGN = Path(os.environ.get("MUSICRNN_SHARED", ROOT.parent / "shared")) / "DESIGN.md"

# Bottom-up, as DESIGN.md's table: a module may import those in earlier rows, never later ones.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "paths"),
    ("timing",),
    ("datasets",),
    ("notes",),
    ("statistics",),
    ("styles",),
    ("sequences",),
    ("model",),
    ("plots",),
    ("audio",),
    ("training",),
    ("generation",),
    ("evaluation",),
    ("experiments",),
    ("live",),
    ("gestures",),
    ("widgets",),
    ("runner", "cli"),
)
RANK = {module: row for row, modules in enumerate(LAYERS) for module in modules}


def package_imports(source: str, modules: set[str]) -> list[tuple[str, int]]:
    """``(module, line)`` for every import of a module of the package in ``source``: relative
    (``from . import x``, ``from .x import y``) and absolute (``from musicrnn.x import y``,
    ``import musicrnn.x``, ``from musicrnn import x``), at any depth, and
    ``importlib.import_module`` with a literal name. Names taken from the package itself that
    are not modules (``from . import __version__``) come back as ``"__init__"``."""
    found: list[tuple[str, int]] = []

    def from_package(names: list[ast.alias], line: int) -> None:
        for alias in names:
            found.append((alias.name if alias.name in modules else "__init__", line))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1:
                found.append(("<outside the package>", node.lineno))
            elif node.level == 1:
                if node.module:
                    found.append((node.module.split(".")[0], node.lineno))
                else:
                    from_package(node.names, node.lineno)
            elif node.module == "musicrnn":
                from_package(node.names, node.lineno)
            elif node.module and node.module.startswith("musicrnn."):
                found.append((node.module.split(".")[1], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "musicrnn":
                    found.append((parts[1] if len(parts) > 1 else "__init__", node.lineno))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            name = node.args[0].value
            if name.startswith("musicrnn.") or name.startswith("."):
                found.append((name.lstrip(".").removeprefix("musicrnn.").split(".")[0],
                              node.lineno))
    return found


def _modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {name for name, _ in package_imports((PACKAGE / f"{m}.py").read_text(), modules)
                if name in modules and name != m}
            for m in sorted(modules)}


def test_the_import_reader_sees_every_form_of_import():
    source = (
        "from . import errors, __version__\n"
        "from .training import train\n"
        "import numpy as np\n"
        "def f():\n"
        "    from musicrnn.cli import main\n"
        "    import musicrnn.live as live\n"
        "    if True:\n"
        "        from musicrnn import plots\n"
        "    return importlib.import_module('musicrnn.widgets')\n"
        "class C:\n"
        "    def g(self):\n"
        "        from .model.sub import x\n"
    )
    found = package_imports(source, {"errors", "training", "cli", "live", "plots", "widgets",
                                     "model"})
    assert sorted(found) == sorted([("errors", 1), ("__init__", 1), ("training", 2), ("cli", 5),
                                    ("live", 6), ("plots", 8), ("widgets", 9), ("model", 12)])


def test_every_module_has_a_layer_and_the_package_lists_them_in_order():
    import musicrnn

    assert _modules() == set(RANK), "add the new module to LAYERS and to the README's list"
    assert list(musicrnn._MODULES) == [m for row in LAYERS for m in row]


def test_no_module_imports_one_above_it():
    modules = _modules()
    violations = []
    for module in sorted(modules):
        path = PACKAGE / f"{module}.py"
        for name, line in package_imports(path.read_text(), modules):
            if name == "__init__":
                continue  # a constant of the package itself (its __init__ imports nothing)
            if name not in RANK:
                violations.append(f"{path.name}:{line} imports {name!r}, not a module of the "
                                  "package")
            elif RANK[name] > RANK[module]:
                violations.append(f"{path.name}:{line} imports {name} (row {RANK[name]}), above "
                                  f"{module} (row {RANK[module]})")
    assert not violations, "\n".join(violations)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                cycles.append(" -> ".join(path[path.index(name):] + [name]))
            elif name not in state:
                visit(name, path + [name])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def _readme_order() -> list[str]:
    """The modules named in backquotes in the README's "The library" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The library"):]
    section = section[:section.index("\n## ", 1)]
    order = [m for m in re.findall(r"`(\w+)`", section) if m in RANK]
    return [m for i, m in enumerate(order) if m not in order[:i]]  # the first mention of each


def test_the_readme_lists_every_module_in_layer_order():
    order = _readme_order()
    assert order == [m for row in LAYERS for m in row]


def test_design_md_lists_the_same_layers_in_the_same_order():
    """The house plan's table, in its order. A module the project added after the plan was
    written (``styles``) may be missing from it: the plan lives outside the repository, so the
    README's list (checked above) is where such a module is written down; every row the plan
    does list must be here, in the same order."""
    if not DESIGN.is_file():
        pytest.skip(f"the house plan is not at {DESIGN}")
    text = DESIGN.read_text()
    table = text[text.index("## The library"):]
    rows = []
    for line in table.splitlines()[1:]:
        if line.startswith("## "):
            break
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2 and "`" in cells[1]:
            rows.append(tuple(re.findall(r"`(\w+)`", cells[1])))
    planned = {m for row in rows for m in row}
    unknown = planned - set(RANK)
    assert not unknown, f"the plan lists modules the package does not have: {sorted(unknown)}"
    assert tuple(rows) == tuple(row for row in LAYERS if set(row) & planned)
    assert all(set(row) <= planned for row in LAYERS if set(row) & planned), \
        "a row of the plan lists only part of one of our rows"
