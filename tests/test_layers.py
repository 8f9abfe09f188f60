"""The package's layers, checked on every import statement (function-local ones included).

The rules (``docs/architecture.md``, "Layers"):

- ``core`` imports nothing of ours outside ``core``, and none of trio, triopg,
  prometheus_client (nor anything else that does I/O: httpx, asyncpg, trio_websocket);
- ``feeds`` and ``store`` never import ``pipeline``; ``observe`` never imports ``store``;
- ``mockexchange`` (the Binance test double) imports only ``core`` and ``feeds`` of ours;
- the product never imports the load tool (``oraculo_trio.loadtest``); ``cli.py`` alone
  dispatches the ``loadtest`` and ``compare`` subcommands to it;
- no import cycle between modules (imports under ``if TYPE_CHECKING:`` do not run, so they
  do not count for cycles).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = "oraculo_trio"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

IO_LIBRARIES = ("trio", "trio_websocket", "triopg", "asyncpg", "prometheus_client", "httpx")


@attrs.frozen
class Import:
    """One imported module name, where it is imported, and whether it runs at import time."""

    source: Path
    line: int
    target: str
    type_checking: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        inside = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
        yield child, inside
        yield from _walk(child, inside)


def imports_of(path: Path, text: str | None = None) -> list[Import]:
    """Every module ``path`` imports, at any depth; ``from a import b`` names ``a.b`` too
    when ``a.b`` is a module of ours (it may be a submodule or a name in ``a``).

    ``text`` stands for the file's content when given (a test's edited copy)."""
    source = path.read_text() if text is None else text
    tree = ast.parse(source, filename=str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found = []
    for node, type_checking in _walk(tree, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(path, node.lineno, alias.name, type_checking))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(path, node.lineno, base, type_checking))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if _module_path(candidate) is not None:
                    found.append(Import(path, node.lineno, candidate, type_checking))
    return found


def _module_path(name: str) -> Path | None:
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    inner = name.split(".")[1:]
    if not inner:
        return ROOT / "__init__.py"
    module = ROOT.joinpath(*inner)
    for candidate in (module.with_suffix(".py"), module / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def all_imports() -> list[Import]:
    return [found for path in sorted(ROOT.rglob("*.py")) for found in imports_of(path)]


def layer_of(module: str) -> str:
    """``core``, ``feeds``, ..., or the module itself for top-level modules (``cli``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(imports: list[Import]) -> list[str]:
    """Each import that breaks a layer rule, as ``file:line imports X: rule``."""
    found = []
    for item in imports:
        source = module_name(item.source)
        layer = layer_of(source)
        target = item.target
        ours = _within(target, PACKAGE)
        where = f"{item.source.relative_to(ROOT.parent)}:{item.line} imports {target}"
        if layer == "core":
            if ours and not _within(target, f"{PACKAGE}.core"):
                found.append(f"{where}: core imports nothing of ours outside core")
            if _within(target, *IO_LIBRARIES):
                found.append(f"{where}: core does no I/O (no trio, triopg, prometheus_client)")
        if layer in ("feeds", "store") and _within(target, f"{PACKAGE}.pipeline"):
            found.append(f"{where}: {layer} never imports pipeline")
        if layer == "observe" and _within(target, f"{PACKAGE}.store"):
            found.append(f"{where}: observe never imports store")
        if (
            layer == "mockexchange"
            and ours
            and not _within(
                target, f"{PACKAGE}.core", f"{PACKAGE}.feeds", f"{PACKAGE}.mockexchange"
            )
        ):
            found.append(f"{where}: mockexchange imports only core and feeds of ours")
        if (
            layer not in ("loadtest", "cli")
            and source != PACKAGE
            and _within(target, f"{PACKAGE}.loadtest")
        ):
            found.append(f"{where}: the product never imports the load tool (cli.py aside)")
    return found


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Every cycle of run-time imports between our modules (one per strongly connected
    component larger than one module, or a module importing itself)."""
    graph: dict[str, set[str]] = {}
    for item in imports:
        if item.type_checking:
            continue
        target_path = _module_path(item.target)
        if target_path is None:
            continue
        source, target = module_name(item.source), module_name(target_path)
        graph.setdefault(source, set())
        # Importing a module runs its package's __init__ first, not the other way round:
        # ``a.b`` importing its own package ``a`` is no cycle by itself.
        if source != target and not source.startswith(target + "."):
            graph[source].add(target)
    return _strongly_connected(graph)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        # Tarjan's algorithm; the graph is small (a few hundred modules).
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_import_keeps_to_its_layer() -> None:
    broken = violations(all_imports())
    assert not broken, "layer rules broken:\n" + "\n".join(broken)


def test_no_import_cycle() -> None:
    cycles = import_cycles(all_imports())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("path", "line", "rule"),
    [
        ("core/book.py", "import trio", "core does no I/O"),
        ("core/book.py", "from oraculo_trio.pipeline import shards", "outside core"),
        (
            "feeds/binance.py",
            "from oraculo_trio.pipeline.feed import Backoff",
            "never imports pipeline",
        ),
        ("store/base.py", "import oraculo_trio.pipeline.service", "never imports pipeline"),
        ("observe/health.py", "from oraculo_trio.store import base", "never imports store"),
        ("pipeline/service.py", "from oraculo_trio.loadtest import runner", "load tool"),
        ("mockexchange/rest.py", "from oraculo_trio.observe import metrics", "only core and feeds"),
    ],
)
def test_a_broken_rule_is_named_with_its_file(path: str, line: str, rule: str) -> None:
    # One real module with one bad import added inside a function, as a careless edit would:
    # the failure names the file, the line and the rule.
    source = ROOT / path
    edited = source.read_text() + f"\n\ndef _careless() -> None:\n    {line}\n"
    broken = violations(imports_of(source, edited))
    line_number = edited.count("\n")
    expected_where = f"{PACKAGE}/{path}:{line_number}"
    assert any(entry.startswith(expected_where) and rule in entry for entry in broken), broken


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
