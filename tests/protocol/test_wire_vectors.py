"""Fixed-bytes wire vectors (tests/vectors/wire/*.json): every codec tag, byte for byte.

Each vector's message is rebuilt from its JSON fields, encoded and compared
with the stored bytes, and the stored bytes are decoded back to the same
message.  The vectors cover exactly the tags of
:func:`privmeter.parties.wire.wire_messages`, and every ``@message`` in the
source is in a module that registry lists (or is benchmark-only): a new
message without a vector, or outside the registry, fails here.  After a
deliberate wire change: ``PYTHONPATH=src python3 tests/vectors/gen_wire_vectors.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from privmeter.parties.wire import MESSAGE_MODULES, decode, wire_messages
from privmeter.protocol.codec import encode

ROOT = Path(__file__).parents[2]
WIRE = ROOT / "tests" / "vectors" / "wire"
BENCH_ONLY = {"agg.bench.paillier": "privmeter.bench.aggregation"}  # not a message between parties

_spec = importlib.util.spec_from_file_location(
    "gen_wire_vectors", ROOT / "tests" / "vectors" / "gen_wire_vectors.py"
)
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

FILES = {p.stem: json.loads(p.read_text()) for p in sorted(WIRE.glob("*.json"))}
VECTORS = [(tag, v) for tag, d in FILES.items() for v in d["vectors"]]


def _message(tag: str, fields: dict[str, Any]) -> Any:
    cls = wire_messages()[tag]
    hints = typing.get_type_hints(cls)
    return cls(**{k: gen.from_json(x, hints[k]) for k, x in fields.items()})


@pytest.mark.parametrize(("tag", "vector"), VECTORS, ids=[v["name"] for _, v in VECTORS])
def test_vector_encodes_to_its_bytes_and_decodes_back(tag: str, vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["hex"])
    msg = _message(tag, vector["fields"])
    assert encode(msg) == wire
    back = decode(wire)
    assert back == msg and type(back) is type(msg)
    assert encode(back) == wire


def test_every_registered_tag_has_a_vector() -> None:
    assert all(d["tag"] == tag for tag, d in FILES.items())
    assert set(FILES) == set(wire_messages())
    assert all(FILES[t]["vectors"] for t in FILES)


def test_generator_reproduces_the_files(tmp_path: Path) -> None:
    gen.main(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in WIRE.glob("*.json"))
    for p in tmp_path.iterdir():
        assert p.read_text() == (WIRE / p.name).read_text(), p.name


def _declared_tags() -> dict[str, str]:
    """Every ``@message("tag")`` in src/privmeter, by AST: tag -> module (nothing imported)."""
    src = ROOT / "src"
    out: dict[str, str] = {}
    for path in sorted((src / "privmeter").rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for d in node.decorator_list:
                    if (
                        isinstance(d, ast.Call)
                        and isinstance(d.func, ast.Name)
                        and d.func.id == "message"
                        and d.args
                        and isinstance(d.args[0], ast.Constant)
                    ):
                        out[d.args[0].value] = module
    return out


def test_every_message_in_the_source_is_in_the_registry() -> None:
    declared = _declared_tags()
    listed = {m.__name__ for m in MESSAGE_MODULES}
    outside = {t: m for t, m in declared.items() if m not in listed and BENCH_ONLY.get(t) != m}
    assert not outside, f"wire messages outside privmeter.parties.wire.MESSAGE_MODULES: {outside}"
    assert set(declared) - set(BENCH_ONLY) == set(wire_messages())
