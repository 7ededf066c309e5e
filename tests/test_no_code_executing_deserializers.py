"""Messages and requests are data, never code: no deserializer that can run code, anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "jsonpickle",
    "shelve",
    "marshal",
}
FORBIDDEN_CALLS = {"eval", "exec"}


def test_no_module_imports_or_calls_a_code_executing_deserializer() -> None:
    offenders: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} calls {node.func.id}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr in {"load", "unsafe_load"}
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} uses yaml.{node.attr}")
            offenders += [
                f"{path.relative_to(SRC)}:{node.lineno} imports {name}"
                for name in names
                if name in FORBIDDEN_MODULES
            ]
    assert offenders == []
