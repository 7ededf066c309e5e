"""brokerq's core is layered: its modules import one another without a cycle (not even one
hidden in a function), none reaches into another object's private attributes, and a channel's
options are declared once."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path

import brokerq
from brokerq import BrokerQueue, ChannelOptions, Processing
from brokerq.channel import Channel
from brokerq.options import ChannelOptionsDict

PACKAGE = Path(brokerq.__file__).parent
CORE = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


class _Imports(ast.NodeVisitor):
    """The core modules a module imports when it runs, wherever the import statement stands;
    ``if TYPE_CHECKING:`` blocks (annotations only) do not count."""

    def __init__(self, core: set[str]) -> None:
        self.core = core
        self.found: dict[str, int] = {}
        self.in_functions: dict[str, int] = {}
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
        elif node.level == 0 and node.module and node.module.startswith("brokerq."):
            names = [node.module.split(".")[1]]
        else:
            return
        for name in names:
            module = (name or "").split(".")[0]
            if module in self.core:
                self.found[module] = node.lineno
                if self._depth:
                    self.in_functions[module] = node.lineno


def _graph() -> tuple[dict[str, set[str]], dict[str, dict[str, int]]]:
    core = {p.stem for p in CORE}
    graph: dict[str, set[str]] = {}
    lazy: dict[str, dict[str, int]] = {}
    for path in CORE:
        visitor = _Imports(core)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        graph[path.stem] = set(visitor.found)
        if visitor.in_functions:
            lazy[path.stem] = visitor.in_functions
    return graph, lazy


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_core_modules_import_one_another_without_a_cycle() -> None:
    graph, _ = _graph()
    assert graph["queue"] >= {"channel"} and graph["channel"] >= {"consumer"}  # the test sees
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_core_module_hides_an_import_of_another_in_a_function() -> None:
    _, lazy = _graph()
    assert lazy == {}


def test_no_core_module_reaches_into_another_objects_private_attributes() -> None:
    reaches = []
    for path in CORE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not _own(node.value)
            ):
                reaches.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert reaches == []


def _own(value: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: the object's own attributes."""
    if isinstance(value, ast.Name):
        return value.id in {"self", "cls"}
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def test_channel_options_are_declared_once() -> None:
    fields = {f.name: f for f in dataclasses.fields(ChannelOptions) if f.init}
    keywords = typing.get_type_hints(ChannelOptionsDict)
    assert list(keywords) == list(fields)
    hints = typing.get_type_hints(ChannelOptions)
    assert {name: hints[name] for name in fields} == keywords
    # Neither the queue nor the channel lists them again.
    declare = inspect.signature(BrokerQueue.channel).parameters
    assert [p.kind for p in declare.values()][-1] is inspect.Parameter.VAR_KEYWORD
    assert set(declare) == {"self", "name", "type_", "options"}
    assert set(inspect.signature(Channel.__init__).parameters) == {
        "self", "queue", "name", "type_", "options"
    }  # fmt: skip
    assert ChannelOptions().process is Processing.AT_LEAST_ONCE
