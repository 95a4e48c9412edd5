"""codec.tail_encoder / encode_field against codec.encode, on every wire vector message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from privmeter.parties.wire import decode
from privmeter.protocol.codec import encode, encode_field, tail_encoder

WIRE = Path(__file__).parents[1] / "vectors" / "wire"
MESSAGES = [
    decode(bytes.fromhex(v["hex"]))
    for p in sorted(WIRE.glob("*.json"))
    for v in json.loads(p.read_text())["vectors"]
]


@pytest.mark.parametrize(
    "msg", MESSAGES, ids=[f"{type(m).__name__}{i}" for i, m in enumerate(MESSAGES)]
)
def test_tail_encoder_is_encode_byte_for_byte(msg: object) -> None:
    names = [f.name for f in dataclasses.fields(msg)]  # type: ignore[arg-type]
    for k in range(1, len(names) + 1):
        last = names[-k:]
        f = tail_encoder(msg, last)
        assert f(*(getattr(msg, n) for n in last)) == encode(msg)
    # other values for the tail: the same bytes as encoding the replaced message
    n = names[-1]
    other = getattr(MESSAGES[0], "signature", None)
    if isinstance(getattr(msg, n), bytes) and other is not None:
        try:
            replaced = dataclasses.replace(msg, **{n: other})  # type: ignore[type-var]
        except ValueError:
            return
        assert tail_encoder(msg, [n])(other) == encode(replaced)


def test_tail_encoder_refuses_fields_that_are_not_last() -> None:
    msg = next(m for m in MESSAGES if type(m).__name__ == "Hello")
    with pytest.raises(ValueError, match="not the last fields"):
        tail_encoder(msg, ["meter_id"])
    with pytest.raises(ValueError):
        tail_encoder(msg, [])
    with pytest.raises(TypeError):
        tail_encoder(msg, ["last_interval"])(1, 2)
    with pytest.raises(TypeError):
        tail_encoder(object(), ["x"])


def test_encode_field_is_the_fields_bytes_in_the_message() -> None:
    for msg in MESSAGES:
        wire = encode(msg)
        last = [f.name for f in dataclasses.fields(msg)][-1]  # type: ignore[arg-type]
        assert wire.endswith(encode_field(last, getattr(msg, last)))
    assert encode_field("tag", b"") == b"\xa3tag\xc4\x00"
    assert encode_field("tag", bytes(16))[:-16] == b"\xa3tag\xc4\x10"


def test_epoch_cache_builds_each_bundle_once_and_is_per_cache() -> None:
    import inspect

    from privmeter.protocol import aggregation
    from privmeter.protocol.aggregation import AggregationHeadEnd, AggregationMeter, EpochCache

    bundle = next(m for m in MESSAGES if type(m).__name__ == "KeyBundle")
    mine, other = EpochCache(), EpochCache()
    ep = mine.get(bundle)
    assert mine.get(bundle) is ep and len(mine) == 1
    assert other.get(bundle) is not ep
    for cls in (AggregationMeter, AggregationHeadEnd):  # no process-wide default cache
        assert inspect.signature(cls).parameters["epochs"].default is None
    assert not any(isinstance(v, EpochCache) for v in vars(aggregation).values())
