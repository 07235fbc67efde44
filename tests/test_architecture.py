"""The package's import structure: no import cycles between rubix_eqx modules, and no
private name imported from another subpackage.

Read from the source with `ast` (nothing is imported): every `import` and `from ... import`
statement, at module level and inside functions or classes, relative imports resolved.
"""

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1] / "rubix_eqx"
PACKAGE = "rubix_eqx"


def _modules() -> dict[str, Path]:
    """Dotted module name → source file, for every module of rubix_eqx."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(importer: str, level: int, module: str | None) -> str:
    """The absolute name of `from <level dots><module> import ...` inside `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]  # a module's relative imports start at its package
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """`(module, imported name or None, line)` for each import statement in module `name`,
    resolved to absolute module names (all of them, not only rubix_eqx's)."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, node.level, node.module)
            out.extend((base, alias.name, node.lineno) for alias in node.names)
    return out


def _target(module: str, imported: str | None) -> str | None:
    """The rubix_eqx module an import statement loads: `from pkg import sub` loads the
    submodule `pkg.sub` if there is one, else `pkg` itself."""
    if imported is not None and f"{module}.{imported}" in MODULES:
        return f"{module}.{imported}"
    return module if module in MODULES else None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        edges = set()
        for module, imported, _ in _imports(name):
            target = _target(module, imported)
            if target is not None and target != name:
                edges.add(target)
        # Importing `a.b.c` runs `a/__init__` and `a/b/__init__` first; those edges are
        # implied, and counting them would make every package's `__init__` (which imports
        # its own modules) part of a "cycle".
        graph[name] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _package(name: str) -> str:
    """The first-level subpackage of a module (`"fit"`, `"io"`, ...); root modules (and
    their private subpackage `_stages`) are `"<root>"`."""
    parts = name.split(".")
    if len(parts) == 1 or (len(parts) == 2 and not _is_package(name)):
        return "<root>"
    return "<root>" if parts[1].startswith("_") else parts[1]


def _private_crossings() -> list[str]:
    """`from X import _y` where X lies in another package than the importer and `_y` is a
    private name (not a module: root modules are private by name, so importing one as a
    module is as public as `from .._cube import Cube`)."""
    found = []
    for name in MODULES:
        for module, imported, line in _imports(name):
            if imported is None or not imported.startswith("_") or imported.startswith("__"):
                continue
            if f"{module}.{imported}" in MODULES or module not in MODULES:
                continue
            if _package(module) != _package(name):
                path = MODULES[name].relative_to(ROOT.parent)
                found.append(f"{path}:{line}: from {module} import {imported}")
    return found


def test_modules_found():
    # The walk sees the whole package, and relative imports resolve to real modules.
    assert len(MODULES) > 40
    assert "rubix_eqx.galaxy._galaxy" in MODULES
    assert "rubix_eqx.galaxy._galaxy" in _graph()["rubix_eqx.galaxy._io"]
    assert _absolute("rubix_eqx.fit._spaxels", 2, "_cube") == "rubix_eqx._cube"
    assert _absolute("rubix_eqx.fit", 1, "_spaxels") == "rubix_eqx.fit._spaxels"


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_names_across_packages():
    found = _private_crossings()
    assert not found, "private names imported from another package:\n" + "\n".join(found)
