"""Wire messages, bitmaps and the neighbour graph of masked aggregation.

Messages (codec tags ``agg.*``) are frozen, keyword-only dataclasses whose
``__post_init__`` checks sizes and ranges, so :func:`privmeter.protocol.codec.decode`
never yields a malformed one.  Sets of meters travel as bitmaps over the
epoch's roster (sorted meter ids): 1,000 meters cost 125 bytes.  Per-peer
records (encrypted shares, recovery pads, revealed shares) travel as one
``bytes`` field of fixed-size records in the sender's neighbour order, so
decoding costs the same for 5 or 5,000 neighbours.

The neighbour graph (Bell et al. CCS 2020) is a Harary graph on a
pseudorandom permutation of the roster: each meter is joined to the
``degree/2`` meters on either side of it in the permuted cycle.  The
permutation seed is SHA-256 over every meter's signed key advertisement
(each carries a fresh meter-chosen nonce), so the head-end cannot choose a
graph that isolates a victim; all it could do is re-run setup with a
different subset of meters, which every meter sees (the roster is signed
material).  Security needs an honest majority among each meter's
neighbours: the Shamir threshold is a strict majority of the
``degree + 1`` share holders (neighbours and the meter itself).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from privmeter.crypto.keyagreement import PUBLIC_BYTES
from privmeter.errors import InvalidArgument, MessageTooLarge
from privmeter.protocol.codec import DEFAULT_MAX_BYTES, WIRE_VERSION, decode, encode, message

__all__ = [
    "AEAD_OVERHEAD",
    "DENSE_RECORD_BYTES",
    "HEADEND_ID",
    "MAX_COMMITTEE",
    "MAX_DEGREE",
    "MAX_DIM",
    "MAX_ROSTER",
    "SHARE_RECORD_BYTES",
    "Announcement",
    "Certificate",
    "IntervalStart",
    "KeyAdvert",
    "KeyBundle",
    "MaskedInput",
    "bitmap_from",
    "bitmap_to_set",
    "committee_size",
    "decode_input",
    "default_degree",
    "degree_for",
    "failure_chance",
    "graph_seed",
    "neighbours",
    "quorum_for",
    "record_bytes",
    "ring",
    "threshold_for",
]

HEADEND_ID = (
    "@headend"  # the head-end's party id in key derivation (meter ids never start with "@")
)
MAX_ROSTER = 20_000  # a feeder of "a few thousand" meters, with margin
MAX_DEGREE = 1_024
MAX_DIM = 64  # values per reading vector (e.g. energy, power, per-phase ...)
MIN_DEGREE = 16  # below this a sparse graph gives too little privacy per meter
AEAD_OVERHEAD = 16  # Poly1305 tag
SHARE_RECORD_BYTES = 32 + AEAD_OVERHEAD  # (b-share, z-share) encrypted
VIEW_KEY_BYTES = 16  # the sender's per-interval view key (see aggregation.py), in every record
DENSE_RECORD_BYTES = SHARE_RECORD_BYTES + VIEW_KEY_BYTES  # the record of every graph since v2
MAX_COMMITTEE = 160  # endorsing committee of a sparse graph: at most this many meters
TAG_BYTES = 16
SIGNATURE_BYTES = 64


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or value.startswith("@"):
        raise InvalidArgument(f"{name} must be 1..64 characters not starting with '@'")


def _check_group(group: str, epoch: int) -> None:
    if not isinstance(group, str) or not 0 < len(group) <= 64:
        raise InvalidArgument("group id must be 1..64 characters")
    if not 0 <= epoch < 1 << 63:
        raise InvalidArgument("epoch out of range")


@message("agg.advert")
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyAdvert:
    """A party's X25519 public key for one epoch, signed with its Ed25519 key."""

    group: str
    epoch: int
    party_id: str
    public: bytes
    nonce: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_group(self.group, self.epoch)
        if not isinstance(self.party_id, str) or not 0 < len(self.party_id) <= 64:
            raise InvalidArgument("party id must be 1..64 characters")
        if len(self.public) != PUBLIC_BYTES or len(self.nonce) != 16:
            raise InvalidArgument("advert public key must be 32 bytes and nonce 16 bytes")
        if len(self.signature) != SIGNATURE_BYTES:
            raise InvalidArgument("advert signature must be 64 bytes")


@message("agg.bundle")
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyBundle:
    """The head-end's relay of every meter's advert, plus its own, for one epoch."""

    group: str
    epoch: int
    first_interval: int
    dim: int
    degree: int
    headend: KeyAdvert
    adverts: tuple[KeyAdvert, ...]

    def __post_init__(self) -> None:
        _check_group(self.group, self.epoch)
        if not 0 <= self.first_interval < 1 << 62:
            raise InvalidArgument("first interval out of range")
        if not 1 <= self.dim <= MAX_DIM:
            raise InvalidArgument(f"dim must be in [1, {MAX_DIM}]")
        if not 2 <= len(self.adverts) <= MAX_ROSTER:
            raise InvalidArgument(f"a group has 2..{MAX_ROSTER} meters")
        if not 1 <= self.degree <= min(MAX_DEGREE, len(self.adverts) - 1):
            raise InvalidArgument("degree out of range")
        for a in self.adverts:
            _check_id("meter id", a.party_id)
        if self.headend.party_id != HEADEND_ID:
            raise InvalidArgument("head-end advert must use the head-end id")


@message("agg.announce")
@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    """What the head-end states at the start of ``interval`` (signed).

    ``enrolled``: meters whose self-mask shares for ``interval`` were relayed;
    ``survivors`` / ``dropped``: the previous interval's enrolled meters whose
    masked value did / did not arrive (disjoint, together the previous
    enrolled set).  All three are bitmaps over the roster.
    """

    group: str
    epoch: int
    interval: int
    roster_size: int
    enrolled: bytes
    survivors: bytes
    dropped: bytes

    def __post_init__(self) -> None:
        _check_group(self.group, self.epoch)
        if not 0 <= self.interval < 1 << 62:
            raise InvalidArgument("interval out of range")
        if not 2 <= self.roster_size <= MAX_ROSTER:
            raise InvalidArgument("roster size out of range")
        nb = (self.roster_size + 7) // 8
        for name in ("enrolled", "survivors", "dropped"):
            if len(getattr(self, name)) != nb:
                raise InvalidArgument(f"{name} bitmap must be {nb} bytes")


@message("agg.cert")
@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """A quorum's endorsements of one announcement (sparse graphs only).

    ``signers``: bitmap over the roster of the committee members whose
    signatures follow; ``signatures``: their Ed25519 signatures (64 bytes
    each, in roster order) over the endorsement payload of ``announcement``
    (``aggregation.endorsement_payload``: bundle digest and the encoded
    announcement, context ``privmeter/agg/endorse/v1``).
    """

    announcement: Announcement
    signers: bytes
    signatures: bytes

    def __post_init__(self) -> None:
        n = self.announcement.roster_size
        if len(self.signers) != (n + 7) // 8:
            raise InvalidArgument(f"signer bitmap must be {(n + 7) // 8} bytes")
        val = int.from_bytes(self.signers, "little")
        if val >> n:
            raise InvalidArgument("signer bitmap names a meter outside the roster")
        count = val.bit_count()
        if not 1 <= count <= MAX_COMMITTEE:
            raise InvalidArgument(f"a certificate has 1..{MAX_COMMITTEE} signers")
        if len(self.signatures) != SIGNATURE_BYTES * count:
            raise InvalidArgument("one 64-byte signature per signer")


@message("agg.start.v2")
@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalStart:
    """Head-end -> one meter: the signed announcement and the shares relayed to it.

    ``certificate``: sparse graphs only, the quorum's endorsements of the
    PREVIOUS interval's announcement (its survivors and dropped decide the
    reveals the meter now makes, for interval t-2); None in complete graphs,
    or when no quorum endorsed it (the meter then reveals nothing).
    ``shares``: the records for this interval t from the neighbours enrolled
    for t.  ``late``: only for a meter that did not answer the interval it
    now reveals for (t-1 in a complete graph, t-2 in a sparse one), that
    interval's records from its neighbours enrolled for it, so that it can
    still reveal: a share holder then needs to be online when the reveals
    are due, not also when the shares were relayed (availability
    (1 - dropout) instead of (1 - dropout)^2).
    """

    announcement: Announcement
    signature: bytes
    certificate: Certificate | None = None
    shares: bytes
    late: bytes = b""

    def __post_init__(self) -> None:
        if len(self.signature) != SIGNATURE_BYTES:
            raise InvalidArgument("announcement signature must be 64 bytes")
        for blob in (self.shares, self.late):
            if len(blob) % 16 or len(blob) > DENSE_RECORD_BYTES * MAX_DEGREE:
                raise InvalidArgument(
                    "relayed shares must be whole records, at most one per neighbour"
                )
        c = self.certificate
        if c is not None and (
            c.announcement.group,
            c.announcement.epoch,
            c.announcement.roster_size,
            c.announcement.interval + 1,
        ) != (
            self.announcement.group,
            self.announcement.epoch,
            self.announcement.roster_size,
            self.announcement.interval,
        ):
            raise InvalidArgument(
                "the certificate must be for the previous announcement of this group"
            )


@message("agg.input.v2")
@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInput:
    """Meter -> head-end, once per interval (the only message of a common interval).

    ``masked``: y_t (empty if the meter was not enrolled for ``interval``);
    ``shares``: encrypted (b, z) shares for ``interval + 1``, one record per
    neighbour; ``recovery``: per neighbour, the pairwise mask for
    ``interval + 1`` padded with the recovery key z; ``reveals``: for
    ``reveal_interval`` (``interval - 1`` in a complete graph, ``interval - 2``
    in a sparse one, or -1 for none) one share per held
    peer, a b-share for survivors and a z-share for the dropped;
    ``endorsement``: sparse graphs only (else empty), the meter's Ed25519
    signature over the endorsement payload of the announcement of
    ``interval`` it was shown, at most one per interval; ``tag``:
    keyed BLAKE2b-128 (``aggregation.input_mac``) under the meter/head-end MAC key over the message with
    an empty tag.
    """

    group: str
    epoch: int
    interval: int
    meter_id: str
    masked: tuple[int, ...]
    shares: bytes
    recovery: bytes
    reveal_interval: int
    reveals: bytes
    endorsement: bytes = b""
    tag: bytes

    def __post_init__(self) -> None:
        _check_group(self.group, self.epoch)
        _check_id("meter id", self.meter_id)
        if not 0 <= self.interval < 1 << 62:
            raise InvalidArgument("interval out of range")
        if self.reveal_interval not in (-1, self.interval - 1, self.interval - 2):
            raise InvalidArgument("reveals must be for one of the two previous intervals")
        if len(self.masked) > MAX_DIM or any(not 0 <= v < 1 << 64 for v in self.masked):
            raise InvalidArgument("masked values must be uint64")
        if len(self.shares) % 16 or len(self.shares) > DENSE_RECORD_BYTES * MAX_DEGREE:
            raise InvalidArgument("shares must be whole records")
        if len(self.recovery) > 8 * MAX_DIM * MAX_DEGREE or len(self.recovery) % 8:
            raise InvalidArgument("recovery pads too long")
        if len(self.reveals) % 16 or len(self.reveals) > 16 * MAX_DEGREE:
            raise InvalidArgument("reveals must be whole 16-byte shares")
        if self.reveal_interval == -1 and self.reveals:
            raise InvalidArgument("reveals without an interval")
        if len(self.endorsement) not in (0, SIGNATURE_BYTES):
            raise InvalidArgument("endorsement must be empty or a 64-byte signature")
        if len(self.tag) not in (0, TAG_BYTES):
            raise InvalidArgument("tag must be 16 bytes")


# -- fast decoding of the head-end's hot message ---------------------------------

_INPUT_TAG = "agg.input.v2"
_INPUT_FIELDS: tuple[tuple[str, type[Any] | None], ...] = (
    ("group", str),
    ("epoch", int),
    ("interval", int),
    ("meter_id", str),
    ("masked", None),
    ("shares", bytes),
    ("recovery", bytes),
    ("reveal_interval", int),
    ("reveals", bytes),
    ("endorsement", bytes),
    ("tag", bytes),
)


class _NotPlain(Exception):
    """Internal: the bytes are not the plain canonical form; let the codec judge."""


def _no_ext(code: int, data: bytes) -> Any:
    raise _NotPlain


def decode_input(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> MaskedInput:
    """``codec.decode(data, expect=MaskedInput)``, specialised for the head-end's hot path.

    Accepts exactly the plain form :func:`~privmeter.protocol.codec.encode`
    writes (native msgpack types, no ext values) and checks every field's exact
    type before building the dataclass (whose ``__post_init__`` still checks
    sizes and ranges).  Anything else is handed to the generic codec, so the
    result, or the error raised, is the codec's: the two never disagree (a
    property test checks it), this path just skips the generic type-hint walk.
    """
    if not isinstance(data, bytes):
        return decode(data, max_bytes=max_bytes, expect=MaskedInput)
    if len(data) > max_bytes:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True)
        if type(obj) is not list or len(obj) != 3:
            raise _NotPlain
        version, tag, fields = obj
        if type(version) is not int or version != WIRE_VERSION or tag != _INPUT_TAG:
            raise _NotPlain
        if type(fields) is not dict or len(fields) != len(_INPUT_FIELDS):
            raise _NotPlain
        kwargs: dict[str, Any] = {}
        for name, typ in _INPUT_FIELDS:
            v = fields[name]  # KeyError: a field is missing
            if typ is None:  # masked: an array of plain ints
                if type(v) is not list or any(type(x) is not int for x in v):
                    raise _NotPlain
                v = tuple(v)
            elif type(v) is not typ:
                raise _NotPlain
            kwargs[name] = v
        return MaskedInput(**kwargs)
    except Exception:  # not plain, or invalid (msgpack raises odd types on garbage)
        pass  # the codec decides, and raises its own error
    return decode(data, max_bytes=max_bytes, expect=MaskedInput)  # type: ignore[no-any-return]


# -- bitmaps -------------------------------------------------------------------


def bitmap_from(indices: Iterable[int], size: int) -> bytes:
    out = bytearray((size + 7) // 8)
    for i in indices:
        out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def bitmap_to_set(data: bytes, size: int) -> frozenset[int]:
    """Decode a bitmap; raises ``ValueError`` if a bit beyond ``size`` is set."""
    val = int.from_bytes(data, "little")
    if val >> size:
        raise InvalidArgument("bitmap names a meter outside the roster")
    return frozenset(i for i in range(size) if (val >> i) & 1)


# -- neighbour graph -------------------------------------------------------------


def default_degree(n: int) -> int:
    """Neighbours per meter: everyone in small groups, else ~4 log2 n in [32, 64]."""
    if n - 1 <= 32:
        return n - 1
    k = max(32, min(64, 4 * math.ceil(math.log2(n))))
    return min(k + (k % 2), n - 1)


def failure_chance(n: int, degree: int, dropout: float) -> float:
    """Chance that an interval cannot be unmasked when each meter is away
    independently with probability ``dropout``: some survivor has fewer than
    ``threshold_for(degree)`` of its ``degree + 1`` share holders online when
    the reveals are due, or (sparse graphs) fewer than :func:`quorum_for` of
    the committee endorsed the announcement (see docs/aggregation.md,
    "Availability")."""
    holders, thr, up = degree + 1, threshold_for(degree), 1.0 - dropout
    per_meter = sum(math.comb(holders, i) * up**i * dropout ** (holders - i) for i in range(thr))
    ok = (1.0 - min(per_meter, 1.0)) ** max(1, round(n * up))
    if degree < n - 1:  # sparse: a quorum of the committee must endorse the announcement
        c, q = committee_size(n, degree), quorum_for(n, degree)
        ok *= 1.0 - min(1.0, sum(math.comb(c, i) * up**i * dropout ** (c - i) for i in range(q)))
    return 1.0 - ok


def degree_for(n: int, dropout: float, *, target: float = 1e-6) -> int:
    """The smallest (even) degree, from :func:`default_degree` up, whose
    :func:`failure_chance` at ``dropout`` is at most ``target``; the complete
    graph if none is (small groups, heavy churn).  The head-end picks the
    degree of each epoch with it from the dropout it has observed."""
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgument("dropout must be in [0, 1)")
    k = default_degree(n)
    top = min(n - 1, MAX_DEGREE)
    while k < top and failure_chance(n, k, dropout) > target:
        k = min(k + 8, top)
        if k < n - 1:
            k += k % 2
    return k


def record_bytes(n: int, degree: int) -> int:
    """Bytes of one encrypted share record: b-share, z-share and the sender's
    view key (every graph: the key pads the b-shares by the enrolled set)."""
    return DENSE_RECORD_BYTES


def committee_size(n: int, degree: int) -> int:
    """Meters of a sparse graph's endorsing committee: ``min(n, degree + 1,
    MAX_COMMITTEE)`` (the first of :func:`ring`'s order), as many as a
    meter's share holders.  Any fixed set gives quorum intersection; its
    size only buys availability (a majority of it must answer, as a
    majority of each survivor's holders must) and costs each meter
    :func:`quorum_for` signature checks per interval (docs/aggregation.md,
    "Consistency round")."""
    return min(n, degree + 1, MAX_COMMITTEE)


def quorum_for(n: int, degree: int) -> int:
    """Endorsements a certificate needs: a strict majority of the committee,
    so two certificates for one interval share a signer."""
    return committee_size(n, degree) // 2 + 1


def threshold_for(degree: int) -> int:
    """Shamir threshold: a strict majority of a meter's share holders.

    The holders of a meter's shares are its ``degree`` neighbours and the
    meter itself (it keeps one share, which helps when it is alive next
    interval), so ``degree + 1`` holders and a majority threshold.
    """
    return (degree + 1) // 2 + 1


def graph_seed(adverts: Sequence[KeyAdvert]) -> bytes:
    h = hashlib.sha256(b"privmeter/agg/graph/v1")
    for a in adverts:
        h.update(encode(a))
    return h.digest()


def ring(n: int, seed: bytes) -> list[int]:
    """The pseudorandom cycle order of the roster indices the sparse graph is built on."""
    draws = hashlib.shake_256(seed).digest(8 * n)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):  # Fisher-Yates with 64-bit draws (bias < 2**-40)
        j = int.from_bytes(draws[8 * i : 8 * i + 8], "little") % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def neighbours(n: int, degree: int, seed: bytes) -> list[list[int]]:
    """Symmetric neighbour lists (sorted roster indices) of a permuted Harary graph:
    each meter joined to the ``degree/2`` meters either side of it on :func:`ring`."""
    if degree >= n - 1:
        return [[j for j in range(n) if j != i] for i in range(n)]
    if degree % 2:
        raise InvalidArgument("a sparse graph needs an even degree")
    perm = ring(n, seed)
    half = degree // 2
    out: list[list[int]] = [[] for _ in range(n)]
    for pos, node in enumerate(perm):
        out[node] = sorted(perm[(pos + d) % n] for d in range(-half, half + 1) if d)
    return out
