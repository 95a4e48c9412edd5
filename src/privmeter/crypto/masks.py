"""Pseudorandom masks: expand 16-byte seeds into vectors of uint64 (mod 2**64).

What it is for: in masked aggregation every meter hides its reading under
a self mask ``PRG(b_t)`` and pairwise masks ``PRG(s_uv, t)``; the head-end
removes survivors' self masks every interval.  This module is that PRG,
with numpy ``uint64`` arrays so that a whole group's masks are summed in
one vectorised call (wrap-around addition is exactly arithmetic mod 2**64).

Construction: keyed BLAKE2b (RFC 7693) in counter mode: block ``i`` is
``BLAKE2b-512(key=seed, person="privmeter-mask", domain || interval || index
|| i)`` so each (seed, domain, interval, index) names a distinct keystream
and one seed gives independent masks for every interval.  Output bytes are
read as little-endian uint64.  (AES-CTR through pyca/cryptography was
measured 20x slower here, dominated by per-key object set-up: the head-end
expands one fresh seed per meter per interval, so per-key cost is what
counts.)

Security assumption: keyed BLAKE2b is a pseudorandom function (its design
goal as a keyed MAC/PRF; the same assumption WireGuard and libsodium's
``crypto_generichash`` rely on).  Guarantee: a mask is computationally indistinguishable from
uniform in ``(Z/2**64)**dim`` to anyone without the seed, so a masked
reading reveals nothing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from privmeter.errors import InvalidArgument

__all__ = [
    "DOMAIN_PAIR",
    "DOMAIN_RECOVERY",
    "DOMAIN_SELF",
    "MASK_DTYPE",
    "MODULUS",
    "SEED_BYTES",
    "expand",
    "expand_bytes",
    "expand_each",
    "expand_many",
    "expand_sum",
    "expand_sum_ints",
    "from_signed",
    "to_signed",
    "xor_bytes",
]

MASK_DTYPE = np.uint64
MODULUS = 1 << 64
SEED_BYTES = 16  # AES-128 key
DOMAIN_SELF = 1  # self mask b_{u,t}
DOMAIN_PAIR = 2  # pairwise mask m_{uv,t}
DOMAIN_RECOVERY = 3  # one-time pad hiding m_{uv,t} under the recovery key z_{u,t}

_PERSON = b"privmeter-mask"
_BLOCK = 64  # BLAKE2b-512 output bytes per counter block


def _label(domain: int, interval: int, index: int, counter: int) -> bytes:
    return struct.pack(">IQII", domain, interval & 0xFFFFFFFFFFFFFFFF, index, counter)


def expand_bytes(seed: bytes, nbytes: int, *, domain: int, interval: int, index: int = 0) -> bytes:
    """``nbytes`` pseudorandom bytes from ``seed`` for (domain, interval, index)."""
    if len(seed) != SEED_BYTES:
        raise InvalidArgument(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if nbytes <= _BLOCK:
        return hashlib.blake2b(
            _label(domain, interval, index, 0), key=seed, person=_PERSON, digest_size=nbytes
        ).digest()
    out = b"".join(
        hashlib.blake2b(_label(domain, interval, index, i), key=seed, person=_PERSON).digest()
        for i in range(-(-nbytes // _BLOCK))
    )
    return out[:nbytes]


def expand_many(
    seed: bytes, items: Sequence[tuple[int, int]], *, domain: int, interval: int
) -> bytes:
    """``expand_bytes(seed, nbytes, index=i)`` for each ``(i, nbytes)``, concatenated.

    One call for the head-end's recovery of a dropped meter (one pad per live
    neighbour): the seed is checked once and short outputs take a single
    BLAKE2b call each.
    """
    if len(seed) != SEED_BYTES:
        raise InvalidArgument(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    b2 = hashlib.blake2b
    parts = []
    for index, nbytes in items:
        if nbytes <= _BLOCK:
            parts.append(
                b2(
                    _label(domain, interval, index, 0), key=seed, person=_PERSON, digest_size=nbytes
                ).digest()
            )
        else:
            parts.append(expand_bytes(seed, nbytes, domain=domain, interval=interval, index=index))
    return b"".join(parts)


def expand_each(seeds: Sequence[bytes], nbytes: int, *, domain: int, interval: int) -> bytes:
    """``expand_bytes(s, nbytes, domain=domain, interval=interval)`` for each seed
    in ``seeds``, concatenated: a meter's pairwise masks, one call per interval
    (the label is packed once and short outputs take one BLAKE2b call each)."""
    if seeds and set(map(len, seeds)) != {SEED_BYTES}:
        raise InvalidArgument(f"mask seeds must be {SEED_BYTES} bytes")
    if nbytes <= _BLOCK:
        label = _label(domain, interval, 0, 0)
        b2 = hashlib.blake2b
        return b"".join(
            [b2(label, key=s, person=_PERSON, digest_size=nbytes).digest() for s in seeds]
        )
    return b"".join([expand_bytes(s, nbytes, domain=domain, interval=interval) for s in seeds])


def expand_sum_ints(seeds: Sequence[bytes], dim: int, *, domain: int, interval: int) -> list[int]:
    """:func:`expand_sum` as ``dim`` Python ints in ``[0, 2**64)``, without numpy:
    cheaper for one meter's few short vectors, where numpy's per-call cost dominates."""
    words = struct.unpack(
        f"<{len(seeds) * dim}Q", expand_each(seeds, 8 * dim, domain=domain, interval=interval)
    )
    return [sum(words[i::dim]) % MODULUS for i in range(dim)]


def expand(seed: bytes, dim: int, *, domain: int, interval: int, index: int = 0) -> np.ndarray:
    """A mask vector of ``dim`` uint64 values."""
    data = expand_bytes(seed, 8 * dim, domain=domain, interval=interval, index=index)
    return np.frombuffer(data, dtype="<u8").astype(MASK_DTYPE)


def expand_sum(seeds: Iterable[bytes], dim: int, *, domain: int, interval: int) -> np.ndarray:
    """Sum (mod 2**64) of the masks of many seeds: the head-end's hot loop.

    The keystreams are concatenated and summed column-wise by numpy in one
    call; uint64 addition wraps, which is exactly reduction mod 2**64.
    """
    nbytes = 8 * dim
    if nbytes <= _BLOCK:
        label = _label(domain, interval, 0, 0)
        b2 = hashlib.blake2b
        parts = [b2(label, key=s, person=_PERSON, digest_size=nbytes).digest() for s in seeds]
    else:
        parts = [expand_bytes(s, nbytes, domain=domain, interval=interval) for s in seeds]
    if not parts:
        return np.zeros(dim, dtype=MASK_DTYPE)
    arr = np.frombuffer(b"".join(parts), dtype="<u8").reshape(len(parts), dim)
    total: np.ndarray = arr.sum(axis=0, dtype=MASK_DTYPE)
    return total


def from_signed(values: Sequence[int]) -> np.ndarray:
    """Signed readings (Wh; export negative) as uint64 residues mod 2**64."""
    out = np.empty(len(values), dtype=MASK_DTYPE)
    for i, v in enumerate(values):
        if not -(1 << 63) <= v < (1 << 63):
            raise InvalidArgument(f"reading {v!r} outside the signed 64-bit range")
        out[i] = v % MODULUS
    return out


def to_signed(arr: np.ndarray) -> tuple[int, ...]:
    """uint64 residues back to signed integers in [-2**63, 2**63)."""
    return tuple(int(x) for x in arr.astype(MASK_DTYPE).view(np.int64))


def xor_bytes(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise InvalidArgument("xor of unequal lengths")
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")
