"""Messages and requests are data, never code.

No module of the workspace's distributions (``*/src/``) imports or calls a deserializer that can
run code (pickle and its relatives, marshal, shelve, an unsafe YAML load, eval and exec), as the
syntax tree says, not a text search;
the scanner is checked against examples of each form it must catch. And what the service really
decodes a queued reservation with (the channel's msgspec JSON decoder) refuses a pickle that would
run code, and turns the markers of code-carrying JSON formats into nothing but data.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from brokerq import BrokerQueue
from brokerq.codec import DECODE_ERRORS
from brokerq.redis import RedisAdapter
from reservations.channels import Admission, ReserveEvent, reservation_channel

ROOT = Path(__file__).resolve().parents[1]
# Every distribution of the workspace keeps its code under <distribution>/src.
SOURCES = sorted(ROOT.glob("*/src"))

UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "jsonpickle",
    "joblib",
    "shelve",
    "marshal",
}
UNSAFE_BUILTINS = {"eval", "exec"}
# yaml functions that build arbitrary Python objects (full_load: any class, in older PyYAML).
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
YAML_LOADS = {"load", "load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_ATTRIBUTES = {"read_pickle", "to_pickle"}  # pandas


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _safe_yaml_loader(call: ast.Call) -> bool:
    loaders = [kw.value for kw in call.keywords if kw.arg == "Loader"] + call.args[1:2]
    return any(_dotted(loader).split(".")[-1] in SAFE_YAML_LOADERS for loader in loaders)


def unsafe_uses(source: str) -> list[str]:
    """Each import or call of a code-executing deserializer in ``source``, as ``line: what``."""
    found: list[str] = []
    yaml_names: set[str] = set()  # local names bound to the yaml module
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{node.lineno}: import {alias.name}")
                if alias.name == "yaml":
                    yaml_names.add(alias.asname or "yaml")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in UNSAFE_MODULES:
                found.append(f"{node.lineno}: from {node.module} import ...")
            if root == "yaml":
                for alias in node.names:
                    if alias.name in UNSAFE_YAML | YAML_LOADS:
                        found.append(f"{node.lineno}: from yaml import {alias.name}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            parts = name.split(".")
            if name in UNSAFE_BUILTINS or name in {f"builtins.{b}" for b in UNSAFE_BUILTINS}:
                found.append(f"{node.lineno}: {name}()")
            if name in {"__import__", "importlib.import_module", "import_module"} and node.args:
                target = node.args[0]
                if (
                    isinstance(target, ast.Constant)
                    and isinstance(target.value, str)
                    and target.value.split(".")[0] in UNSAFE_MODULES
                ):
                    found.append(f"{node.lineno}: {name}({target.value!r})")
            if len(parts) == 2 and (parts[0] in yaml_names or parts[0] == "yaml"):
                if parts[1] in UNSAFE_YAML:
                    found.append(f"{node.lineno}: {name}()")
                elif parts[1] in YAML_LOADS and not _safe_yaml_loader(node):
                    found.append(f"{node.lineno}: {name}() without a safe Loader")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{node.lineno}: {name}(allow_pickle=...)")
        elif isinstance(node, ast.Attribute) and node.attr in UNSAFE_ATTRIBUTES:
            found.append(f"{node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import pickle as p",
        "from pickle import loads",
        "import _pickle",
        "import dill",
        "from cloudpickle import loads",
        "import jsonpickle",
        "import shelve",
        "import marshal",
        "from joblib import load",
        "eval(text)",
        "exec(code)",
        "builtins.eval(text)",
        "__import__('pickle')",
        "importlib.import_module('marshal')",
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.load_all(text, yaml.UnsafeLoader)",
        "import yaml\nyaml.unsafe_load(text)",
        "import yaml\nyaml.full_load(text)",
        "import yaml as y\ny.unsafe_load(text)",
        "from yaml import unsafe_load",
        "numpy.load(path, allow_pickle=True)",
        "pandas.read_pickle(path)",
    ],
)
def test_the_scanner_catches(snippet: str) -> None:
    assert unsafe_uses(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "import json\njson.loads(text)",
        "import msgspec\nmsgspec.json.decode(data, type=int)",
        "import yaml\nyaml.safe_load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.load(text, yaml.CSafeLoader)",
        "ast.literal_eval(text)",
        "model.evaluate(x)",
        "numpy.load(path, allow_pickle=False)",
    ],
)
def test_the_scanner_lets_data_only_decoding_through(snippet: str) -> None:
    assert unsafe_uses(snippet) == []


def test_no_module_in_src_uses_a_code_executing_deserializer() -> None:
    assert SOURCES, "no <distribution>/src folder found"
    files = sorted(f for src in SOURCES for f in src.rglob("*.py"))
    assert len(files) > 50  # the scan sees the source tree
    offenders = [
        f"{path.relative_to(ROOT)}:{use}"
        for path in files
        for use in unsafe_uses(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


# -- what the service decodes with ------------------------------------------------------------

RAN: list[str] = []


def _ran(marker: str) -> None:
    RAN.append(marker)


class RunsCode:
    """Unpickling this calls ``_ran``: what a hostile payload does with a real command."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_ran, ("unpickled",))


@pytest.fixture
def decode() -> Any:
    # The codec the API and the workers build for the reservation queue. A client that connects
    # to nothing until its first command: decoding needs no server.
    queue = BrokerQueue(RedisAdapter("redis://127.0.0.1:1/0"))
    return reservation_channel(queue).codec.decode


def test_the_reservation_decoder_is_msgspec_json() -> None:
    queue = BrokerQueue(RedisAdapter("redis://127.0.0.1:1/0"))
    codec = reservation_channel(queue).codec
    assert type(codec).__name__ == "MsgspecCodec"
    decoders = [v for v in vars(codec).values() if isinstance(v, msgspec.json.Decoder)]
    assert [d.type for d in decoders] == [ReserveEvent]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_payload_is_refused_and_runs_nothing(decode: Any, protocol: int) -> None:
    payload = pickle.dumps(RunsCode(), protocol=protocol)
    pickle.loads(payload)  # the payload is live: unpickling it does run code
    assert RAN == ["unpickled"]
    RAN.clear()
    with pytest.raises(DECODE_ERRORS):
        decode(payload)
    assert RAN == []


def test_code_carrying_json_markers_stay_data(decode: Any) -> None:
    event = {
        "userId": 1,
        "eventId": 2,
        "requestId": "r-1",
        "admission": "ADMITTED",
        "seq": 1,
        "acceptedAtMs": 5,
    }
    # jsonpickle's and other formats' markers for "build this object": ignored, never followed.
    hostile = {
        **event,
        "py/object": "os.system",
        "py/reduce": [{"py/function": "os.system"}, {"py/tuple": ["true"]}],
        "__class__": "subprocess.Popen",
        "!!python/object/apply:os.system": ["true"],
    }
    got = decode(msgspec.json.encode(hostile))
    assert type(got) is ReserveEvent
    assert got == ReserveEvent(
        userId=1, eventId=2, requestId="r-1", admission=Admission.ADMITTED, seq=1, acceptedAtMs=5
    )
    # A marker in place of a field is a type error, not an object.
    with pytest.raises(DECODE_ERRORS):
        decode(msgspec.json.encode({**event, "requestId": {"py/object": "os.system"}}))


def test_the_running_service_loads_no_code_executing_deserializer_library() -> None:
    # pickle itself comes with the standard library's own modules; third-party ones that exist
    # only to turn bytes into arbitrary objects must not be loaded by the service's code paths.
    script = textwrap.dedent(
        """
        import sys
        import brokerq.bullmq, brokerq.redis, reservations.app, reservations.cli
        import reservations.worker
        print(sorted({m.split(".")[0] for m in sys.modules}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    assert {"reservations", "brokerq", "msgspec"} <= loaded
    assert loaded & {"dill", "cloudpickle", "jsonpickle", "joblib", "yaml", "shelve"} == set()
