"""The versioned wire codec for every privmeter message (msgpack, no pickle).

A message is a frozen, slotted, keyword-only dataclass registered with
:func:`message` under a short tag.  On the wire it is one msgpack array::

    [WIRE_VERSION, tag, {field_name: value, ...}]

Values are msgpack natives; integers outside the 64-bit range (ciphertexts,
Paillier/ElGamal values) travel as ext type 1 holding the signed big-endian
two's-complement bytes; a nested registered message travels as ext type 2
holding its own encoding; tuples travel as arrays.  ``docs/wire-format.md``
documents the layout and every tag.

Guarantee: :func:`decode` never returns an object that does not match its
dataclass annotations exactly (field set, types, nesting); anything else --
oversized, truncated, unknown version or tag, extra or missing fields, wrong
types, values the dataclass's ``__post_init__`` rejects -- raises a
:class:`~privmeter.errors.RemoteProtocolError` subclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgpack

from privmeter.errors import (
    InvalidArgument,
    InvalidArgumentType,
    MalformedMessage,
    MessageTooLarge,
    UnsupportedVersion,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_ID_CHARS",
    "WIRE_VERSION",
    "check_id",
    "decode",
    "encode",
    "encode_field",
    "message",
    "registered",
    "tail_encoder",
]

WIRE_VERSION = 1
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # 4 MiB: a 1,000-meter share bundle fits, a flood does not
MAX_NESTING = 8
MAX_ID_CHARS = 64  # meter, household, group and event ids on the wire
_EXT_BIGINT = 1
_EXT_MESSAGE = 2

_REGISTRY: dict[str, type[Any]] = {}
_TAGS: dict[type[Any], str] = {}
_HINTS: dict[type[Any], dict[str, Any]] = {}

T = TypeVar("T")


def message(tag: str) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a wire message under ``tag``."""

    def deco(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise InvalidArgumentType(f"{cls.__name__} must be a dataclass")
        if tag in _REGISTRY and _REGISTRY[tag] is not cls:
            raise InvalidArgument(f"message tag {tag!r} registered twice")
        _REGISTRY[tag] = cls
        _TAGS[cls] = tag
        return cls

    return deco


def check_id(value: str, what: str) -> None:
    """Validate a party/group/event id inside a message's ``__post_init__``.

    Raises ``InvalidArgument``, a ValueError (which :func:`decode` turns into MalformedMessage).
    """
    if not value or len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(
            f"{what} must be 1-{MAX_ID_CHARS} printable characters, got {value!r:.80}"
        )


def registered() -> dict[str, type[Any]]:
    """Tag -> class for every registered message (for docs and tests)."""
    return dict(_REGISTRY)


def _hints(cls: type[Any]) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = typing.get_type_hints(cls)
        _HINTS[cls] = h
    return h


# -- encoding ------------------------------------------------------------------


def _int_to_bytes(x: int) -> bytes:
    length = (x.bit_length() + 8) // 8
    return x.to_bytes(length, "big", signed=True)


def _default(obj: Any) -> Any:
    if isinstance(obj, int):  # only reached for ints msgpack cannot hold natively
        return msgpack.ExtType(_EXT_BIGINT, _int_to_bytes(int(obj)))
    if dataclasses.is_dataclass(obj) and type(obj) in _TAGS:
        return msgpack.ExtType(_EXT_MESSAGE, encode(obj))
    raise InvalidArgumentType(f"cannot encode {type(obj).__name__}")


def _prep(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        if -(1 << 63) <= v < (1 << 64):
            return int(v)
        return msgpack.ExtType(_EXT_BIGINT, _int_to_bytes(int(v)))
    if isinstance(v, tuple | list):
        return [_prep(x) for x in v]
    if isinstance(v, dict):
        return {k: _prep(x) for k, x in v.items()}
    return v


def encode(msg: Any) -> bytes:
    """Encode a registered message to bytes."""
    cls = type(msg)
    tag = _TAGS.get(cls)
    if tag is None:
        raise InvalidArgumentType(f"{cls.__name__} is not a registered message")
    fields = {f.name: _prep(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
    packed: bytes = msgpack.packb([WIRE_VERSION, tag, fields], default=_default, use_bin_type=True)
    return packed


def encode_field(name: str, value: Any) -> bytes:
    """The bytes field ``name`` = ``value`` adds to a message's encoding: its
    name, then its value, exactly as :func:`encode` writes them."""
    pack = msgpack.Packer(default=_default, use_bin_type=True).pack
    out: bytes = pack(name) + pack(_prep(value))
    return out


def tail_encoder(msg: Any, last: Sequence[str]) -> Callable[..., bytes]:
    """Encode many messages that differ from ``msg`` only in its last fields.

    ``last`` names the message's last fields, in order.  The result ``f``
    takes their values positionally: ``f(*values) == encode(replace(msg,
    **dict(zip(last, values))))`` byte for byte, and the fields before them
    are encoded once, here.  For a sender of one message per peer with a
    large common part.  ``f`` does not run the message's ``__post_init__``:
    the caller gives values it accepts.
    """
    cls = type(msg)
    tag = _TAGS.get(cls)
    if tag is None:
        raise InvalidArgumentType(f"{cls.__name__} is not a registered message")
    names = [f.name for f in dataclasses.fields(msg)]
    k = len(last)
    if k == 0 or names[-k:] != list(last):
        raise InvalidArgument(f"{list(last)} are not the last fields of {cls.__name__} {names}")
    packer = msgpack.Packer(default=_default, use_bin_type=True)
    pack = packer.pack
    prefix: bytes = (
        packer.pack_array_header(3)
        + pack(WIRE_VERSION)
        + pack(tag)
        + packer.pack_map_header(len(names))
        + b"".join([pack(n) + pack(_prep(getattr(msg, n))) for n in names[:-k]])
    )
    heads: list[bytes] = [pack(n) for n in last]

    def encode_tail(*values: Any) -> bytes:
        if len(values) != k:
            raise InvalidArgumentType(f"expected {k} values ({', '.join(last)}), got {len(values)}")
        parts = [prefix]
        for h, v in zip(heads, values, strict=True):
            parts.append(h)
            parts.append(pack(v if type(v) is bytes else _prep(v)))  # bytes: as they are (hot path)
        return b"".join(parts)

    return encode_tail


# -- decoding ------------------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_BIGINT:
        if not data:
            raise MalformedMessage("empty big integer")
        return int.from_bytes(data, "big", signed=True)
    if code == _EXT_MESSAGE:
        return _Nested(data)
    raise MalformedMessage(f"unknown msgpack ext type {code}")


class _Nested:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _check(value: Any, hint: Any, where: str, depth: int, max_bytes: int) -> Any:
    """Type-check (and convert) one decoded value against a type hint."""
    if depth > MAX_NESTING:
        raise MalformedMessage(f"{where}: nested too deeply")
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(hint):
            try:
                return _check(value, alt, where, depth, max_bytes)
            except MalformedMessage as exc:
                errors.append(str(exc))
        raise MalformedMessage(f"{where}: {type(value).__name__} matches none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise MalformedMessage(f"{where}: expected None, got {type(value).__name__}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise MalformedMessage(f"{where}: expected bool, got {type(value).__name__}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise MalformedMessage(f"{where}: expected int, got {type(value).__name__}")
    if hint is float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        raise MalformedMessage(f"{where}: expected float, got {type(value).__name__}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise MalformedMessage(f"{where}: expected str, got {type(value).__name__}")
    if hint is bytes:
        if isinstance(value, bytes):
            return value
        raise MalformedMessage(f"{where}: expected bytes, got {type(value).__name__}")
    if origin is tuple:
        if not isinstance(value, list):
            raise MalformedMessage(f"{where}: expected array, got {type(value).__name__}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _check(v, args[0], f"{where}[{i}]", depth + 1, max_bytes)
                for i, v in enumerate(value)
            )
        if len(args) != len(value):
            raise MalformedMessage(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(
            _check(v, a, f"{where}[{i}]", depth + 1, max_bytes)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise MalformedMessage(f"{where}: expected map, got {type(value).__name__}")
        kh, vh = typing.get_args(hint)
        return {
            _check(k, kh, f"{where}.key", depth + 1, max_bytes): _check(
                v, vh, f"{where}[{k!r}]", depth + 1, max_bytes
            )
            for k, v in value.items()
        }
    if isinstance(hint, type) and hint in _TAGS:
        if not isinstance(value, _Nested):
            raise MalformedMessage(f"{where}: expected nested {hint.__name__}")
        inner = _decode(value.data, max_bytes, depth + 1)
        if type(inner) is not hint:
            raise MalformedMessage(f"{where}: expected {hint.__name__}, got {type(inner).__name__}")
        return inner
    raise InvalidArgumentType(f"codec cannot check type {hint!r} at {where}")


def decode(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, expect: type[T] | None = None
) -> Any:
    """Decode and fully validate one message; ``expect`` pins its class."""
    msg = _decode(data, max_bytes, 0)
    if expect is not None and type(msg) is not expect:
        raise MalformedMessage(f"expected {expect.__name__}, got {type(msg).__name__}")
    return msg


def _decode(data: bytes, max_bytes: int, depth: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_ext_hook,
            use_list=True,
        )
    except MalformedMessage:
        raise
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise MalformedMessage(f"undecodable message: {type(exc).__name__}") from None
    except Exception as exc:  # msgpack raises a few odd types on garbage
        raise MalformedMessage(f"undecodable message: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) != 3:
        raise MalformedMessage("message must be [version, tag, fields]")
    version, tag, fields = obj
    if version != WIRE_VERSION:
        raise UnsupportedVersion(f"wire version {version!r}, expected {WIRE_VERSION}")
    if not isinstance(tag, str) or tag not in _REGISTRY:
        raise MalformedMessage(f"unknown message tag {tag!r}")
    if not isinstance(fields, dict):
        raise MalformedMessage("message fields must be a map")
    cls = _REGISTRY[tag]
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if set(fields) != set(names):
        missing = sorted(set(names) - set(fields))
        extra = sorted(set(fields) - set(names), key=str)
        raise MalformedMessage(f"{tag}: missing fields {missing}, unexpected fields {extra}")
    kwargs = {
        name: _check(fields[name], hints[name], f"{tag}.{name}", depth, max_bytes) for name in names
    }
    try:
        return cls(**kwargs)
    except MalformedMessage:
        raise
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"{tag}: {exc}") from None
