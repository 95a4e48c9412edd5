"""Regenerate the fixed-bytes wire vectors, one file per codec tag, in tests/vectors/wire/.

Usage: ``PYTHONPATH=src python3 tests/vectors/gen_wire_vectors.py`` (from the repository root).

Each ``wire/<tag>.json`` holds one or more vectors of that message: its
``fields`` (JSON: bytes and integers outside the 64-bit range as hex strings,
tuples as lists, a nested message as ``{"tag": ..., "fields": ...}``) and the
``hex`` of its codec encoding.  ``tests/test_wire_vectors.py`` rebuilds every
message from its fields, encodes it and compares the bytes, decodes the bytes
back, and checks that the vectors cover exactly the tags of
:func:`privmeter.parties.wire.wire_messages`.

The values are fixed, not random: byte strings are SHAKE-256 of a label (the
tag, the field and the vector), sizes match what each message's
``__post_init__`` accepts.  They are well-formed messages, not the output of a
protocol run (signatures are not valid signatures): the vectors pin the bytes
on the wire, the protocol tests check the meaning.  Rerun this script after a
deliberate wire change (a new tag, see docs/wire-format.md on versioning) and
review the diff; a change it makes otherwise is a wire change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

from privmeter.parties.wire import wire_messages
from privmeter.protocol.codec import encode

HERE = Path(__file__).parent
OUT = HERE / "wire"


def fixed(label: str, n: int) -> bytes:
    """``n`` fixed bytes that look random: SHAKE-256 of ``label``."""
    return hashlib.shake_256(label.encode()).digest(n)


def big(label: str, bits: int) -> int:
    """A fixed ``bits``-bit integer (top bit set): outside msgpack's 64-bit range when bits > 64."""
    return int.from_bytes(fixed(label, (bits + 7) // 8), "big") | (1 << (bits - 1))


def _bitmap(n: int, members: list[int]) -> bytes:
    out = bytearray((n + 7) // 8)
    for i in members:
        out[i // 8] |= 1 << (i % 8)
    return bytes(out)


# One function per tag: the vectors' fields (several vectors where one message has shapes worth
# pinning apart: a big integer vs a small one, an empty vs a full optional part, a nested message).
def vectors() -> dict[str, list[dict[str, Any]]]:
    f = fixed
    advert = {
        "group": "feeder-1",
        "epoch": 7,
        "party_id": "m-001",
        "public": f("advert.public", 32),
        "nonce": f("advert.nonce", 16),
        "signature": f("advert.sig", 64),
    }
    headend_advert = {
        **advert,
        "party_id": "@headend",
        "public": f("advert.he.public", 32),
        "nonce": f("advert.he.nonce", 16),
        "signature": f("advert.he.sig", 64),
    }
    announce = {
        "group": "feeder-1",
        "epoch": 7,
        "interval": 1_700_000,
        "roster_size": 12,
        "enrolled": _bitmap(12, list(range(12))),
        "survivors": _bitmap(12, [0, 1, 2, 4, 5, 7, 8, 9, 11]),
        "dropped": _bitmap(12, [3, 6, 10]),
    }
    cert = {
        "announcement": ("agg.announce", {**announce, "interval": 1_699_999}),
        "signers": _bitmap(12, [0, 4, 7]),
        "signatures": f("agg.cert.sigs", 3 * 64),
    }
    offer = {
        "group": "feeder-1",
        "public": big("cmp.public", 2048),
        "bits": 16,
        "radix": 4,
        "values": tuple(big(f"cmp.value.{i}", 300) for i in range(64)),
    }  # 16 bits in radix 4: 8 digits
    challenge = {
        "offer_digest": f("cmp.offer_digest", 32),
        "values": tuple(big(f"cmp.ch.{i}", 300) for i in range(16)),
    }
    echo = {
        "event_id": "ev-1",
        "group_id": "feeder-1",
        "meter_id": "m-001",
        "digest": f("dr.echo.digest", 32),
        "signature": f("dr.echo.sig", 64),
    }
    record = {
        "meter_id": "m-001",
        "interval": 1_700_000,
        "kind": "energy",
        "event_id": "",
        "key_id": f("bill.key_id", 16),
        "ciphertext": f("bill.ciphertext", 512),
        "signature": f("bill.sig", 64),
    }
    return {
        "agg.advert": [advert],
        "agg.announce": [announce],
        "agg.bundle": [
            {
                "group": "feeder-1",
                "epoch": 7,
                "first_interval": 1_700_000,
                "dim": 1,
                "degree": 2,
                "headend": ("agg.advert", headend_advert),
                "adverts": tuple(
                    (
                        "agg.advert",
                        {**advert, "party_id": f"m-00{i}", "public": f(f"advert.public.{i}", 32)},
                    )
                    for i in range(1, 4)
                ),
            }
        ],
        "agg.cert": [cert],
        "agg.input.v2": [
            {
                "group": "feeder-1",
                "epoch": 7,
                "interval": 1_700_000,
                "meter_id": "m-001",
                "masked": (2**64 - 1, 12345),
                "shares": f("agg.shares", 128),
                "recovery": f("agg.recovery", 48),
                "reveal_interval": 1_699_998,
                "reveals": f("agg.reveals", 48),
                "endorsement": f("agg.endorsement", 64),
                "tag": f("agg.tag", 16),
            },
            {
                "group": "feeder-1",
                "epoch": 7,
                "interval": 1_700_000,
                "meter_id": "m-001",
                "masked": (),
                "shares": f("agg.shares.dense", 128),
                "recovery": f("agg.recovery.dense", 48),
                "reveal_interval": 1_699_999,
                "reveals": f("agg.reveals.dense", 48),
                "endorsement": b"",
                "tag": f("agg.tag.dense", 16),
            },
        ],
        "agg.start.v2": [
            {
                "announcement": ("agg.announce", announce),
                "signature": f("agg.start.sig", 64),
                "certificate": ("agg.cert", cert),
                "shares": f("agg.start.shares", 128),
                "late": b"",
            },
            {
                "announcement": ("agg.announce", announce),
                "signature": f("agg.start.sig.dense", 64),
                "certificate": None,
                "shares": f("agg.start.shares.dense", 128),
                "late": f("agg.start.late", 64),
            },
        ],
        "bill.dispute": [
            {"meter_id": "m-001", "statement_digest": f("bill.st_digest", 32), "reason": "tariff"}
        ],
        "bill.proof": [
            {
                "meter_id": "m-001",
                "statement_digest": f("bill.st_digest", 32),
                "bill": 123_456,
                "r": big("bill.r", 2048),
            },
            {
                "meter_id": "m-002",
                "statement_digest": f("bill.st_digest.2", 32),
                "bill": -4_200,
                "r": 1,
            },
        ],
        "bill.receipt": [
            {
                "meter_id": "m-001",
                "interval": 1_700_000,
                "kind": "reading",
                "event_id": "",
                "record_digest": f("bill.rec_digest", 32),
                "seq": 41,
                "chain": f("bill.chain", 32),
                "signature": f("bill.receipt.sig", 64),
            }
        ],
        "bill.record": [
            record,
            {**record, "kind": "dr_rebate", "event_id": "ev-1", "signature": f("bill.sig.adj", 64)},
        ],
        "bill.statement": [
            {
                "meter_id": "m-001",
                "key_id": f("bill.key_id", 16),
                "plan_id": "flat-2026",
                "tariff_digest": f("bill.tariff", 32),
                "feed_digest": f("bill.feed", 32),
                "start": 1_700_000,
                "end": 1_702_880,
                "record_count": 2_880,
                "log_digest": f("bill.log", 32),
                "bill_ciphertext": f("bill.bill_ct", 512),
                "fixed_charge": 9_000_000,
                "issued_at": 1_767_225_600,
                "signature": f("bill.statement.sig", 64),
            }
        ],
        "cmp.challenge": [challenge],
        "cmp.offer": [offer],
        "dr.answer": [
            {
                "event_id": "ev-1",
                "meter_id": "m-001",
                "query_id": 3,
                "challenge_digest": f("dr.ch_digest", 32),
                "zero_found": True,
                "signature": f("dr.answer.sig", 64),
            }
        ],
        "dr.directive": [
            {
                "event_id": "ev-1",
                "meter_id": "m-001",
                "action": "curtail",
                "start_interval": 1_700_010,
                "duration_minutes": 60,
                "issued_at": 1_767_225_600,
                "signature": f("dr.dir.sig", 64),
            }
        ],
        "dr.echo": [echo],
        "dr.echoes": [
            {
                "event_id": "ev-1",
                "echoes": (
                    ("dr.echo", echo),
                    ("dr.echo", {**echo, "meter_id": "m-002", "signature": f("dr.echo.sig.2", 64)}),
                ),
            }
        ],
        "dr.event": [
            {
                "event_id": "ev-1",
                "group_id": "feeder-1",
                "action": "shift",
                "side": "above",
                "start_interval": 1_700_010,
                "duration_minutes": 60,
                "issued_at": 1_767_225_600,
                "expires_at": 1_767_229_200,
                "bits": 16,
                "radix": 4,
                "signature": f("dr.event.sig", 64),
            }
        ],
        "dr.offer": [
            {
                "event_id": "ev-1",
                "meter_id": "m-001",
                "reading_interval": 1_700_009,
                "offer": ("cmp.offer", offer),
                "signature": f("dr.offer.sig", 64),
            }
        ],
        "dr.query": [
            {
                "event_id": "ev-1",
                "meter_id": "m-001",
                "query_id": 3,
                "issued_at": 1_767_225_600,
                "challenge": ("cmp.challenge", challenge),
                "signature": f("dr.query.sig", 64),
            }
        ],
        "net.auth": [{"identity": f("net.identity", 32), "signature": f("net.auth.sig", 64)}],
        "net.client_auth": [{"sealed": f("net.client_sealed", 120)}],
        "net.error": [{"code": "malformed"}],
        "net.hello": [{"versions": (1,), "ephemeral": f("net.client_eph", 32)}],
        "net.ping": [{"nonce": 0}, {"nonce": 2**64 - 1}],
        "net.pong": [{"nonce": 0}, {"nonce": 2**64 - 1}],
        "net.relay": [
            {
                "sender": "m-001",
                "recipient": "m-002",
                "context": "agg",
                "nonce": f("net.relay.nonce", 12),
                "ciphertext": f("net.relay.ct", 80),
            }
        ],
        "net.server_hello": [
            {
                "version": 1,
                "ephemeral": f("net.server_eph", 32),
                "sealed": f("net.server_sealed", 120),
            }
        ],
        "net.welcome": [{"server_id": "headend", "party_id": "m-001"}],
        "ring.ptoken": [
            {
                "group": "feeder-1",
                "round": 5,
                "sender": "m-001",
                "ciphertext": big("ring.pct", 4096),
                "final": False,
            }
        ],
        "ring.start": [{"group": "feeder-1", "round": 5}],
        "ring.token": [
            {
                "group": "feeder-1",
                "round": 5,
                "sender": "m-001",
                "receiver": "m-002",
                "ciphertext": f("ring.ct", 24),
            }
        ],
        "ring.total": [
            {"group": "feeder-1", "round": 5, "total": 98_765},
            {"group": "feeder-1", "round": 6, "total": -1_234},
        ],
        "sys.bye": [{"reason": "shutdown"}],
        "sys.enrol": [
            {
                "meter_id": "m-001",
                "household_key_json": '{"n": "c0ffee"}',
                "plan_id": "flat-2026",
                "mac": f("sys.enrol.mac", 32),
            }
        ],
        "sys.enrolled": [{"doc": '{"meter_id": "m-001"}', "signature": f("sys.enrolled.sig", 64)}],
        "sys.epoch": [{"group": "feeder-1", "epoch": 7, "first_interval": 1_700_000}],
        "sys.feed": [{"feed_json": '{"prices": []}'}],
        "sys.hello": [
            {"meter_id": "m-001", "group": "feeder-1", "last_interval": -1},
            {"meter_id": "m-002", "group": "feeder-1", "last_interval": 1_700_000},
        ],
        "sys.relay": [
            {"meter_id": "m-001", "payload": b"\x93\x01\xa7sys.bye\x81\xa6reason\xa8shutdown"}
        ],
        "sys.roster": [{"doc": '{"group": "feeder-1"}', "signature": f("sys.roster.sig", 64)}],
        "sys.settle": [
            {
                "period": 202601,
                "statement": f("sys.settle.st", 200),
                "log": (f("sys.settle.log.0", 150), f("sys.settle.log.1", 150)),
            },
            {"period": 202602, "statement": f("sys.settle.st.2", 200), "log": ()},
        ],
        "sys.tick": [{"now": 1_767_225_600, "interval": 1_700_000}],
    }


def build(tag: str, fields: dict[str, Any]) -> Any:
    """The message ``tag`` with ``fields`` (a nested message given as ``(tag, fields)``)."""

    def value(v: Any) -> Any:
        if (
            isinstance(v, tuple)
            and len(v) == 2
            and isinstance(v[0], str)
            and isinstance(v[1], dict)
        ):
            return build(*v)
        if isinstance(v, tuple):
            return tuple(value(x) for x in v)
        return v

    return wire_messages()[tag](**{k: value(v) for k, v in fields.items()})


def to_json(v: Any) -> Any:
    """JSON for a field value: bytes and big integers as hex strings."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {
            "tag": _tag_of(v),
            "fields": {f.name: to_json(getattr(v, f.name)) for f in dataclasses.fields(v)},
        }
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    if isinstance(v, bool) or v is None or isinstance(v, str | float):
        return v
    if isinstance(v, int):
        return (
            v
            if -(1 << 63) <= v < (1 << 64)
            else {"int": format(v, "x") if v >= 0 else "-" + format(-v, "x")}
        )
    if isinstance(v, tuple):
        return [to_json(x) for x in v]
    raise TypeError(f"no JSON for {type(v).__name__}")


def from_json(v: Any, hint: Any) -> Any:
    """The inverse of :func:`to_json` for a field of type ``hint``."""
    if isinstance(v, dict) and "tag" in v:
        cls = wire_messages()[v["tag"]]
        hints = typing.get_type_hints(cls)
        return cls(**{k: from_json(x, hints[k]) for k, x in v["fields"].items()})
    if isinstance(v, dict) and "bytes" in v:
        return bytes.fromhex(v["bytes"])
    if isinstance(v, dict) and "int" in v:
        s = v["int"]
        return -int(s[1:], 16) if s.startswith("-") else int(s, 16)
    if isinstance(v, list):
        args = typing.get_args(hint)
        return tuple(
            from_json(x, args[0] if len(args) == 2 and args[1] is Ellipsis else args[i])
            for i, x in enumerate(v)
        )
    return v


def _tag_of(msg: Any) -> str:
    return next(t for t, c in wire_messages().items() if c is type(msg))


def main(out_dir: Path = OUT) -> None:
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("*.json"):
        old.unlink()
    for tag, vs in vectors().items():
        out = []
        for i, fields in enumerate(vs):
            msg = build(tag, fields)
            out.append(
                {"name": f"{tag}#{i}", "fields": to_json(msg)["fields"], "hex": encode(msg).hex()}
            )
        (out_dir / f"{tag}.json").write_text(
            json.dumps({"tag": tag, "vectors": out}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
