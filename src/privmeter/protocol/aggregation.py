"""Robust masked aggregation (the default secure sum): sans-IO meter and head-end.

Per interval an honest head-end learns the group total and which meters took
part; a lying one learns nothing beyond sums over sets of at least
``min_survivors`` meters (the bound below).  Bonawitz et al. CCS 2017, with
the sparse neighbour graph of Bell et al. CCS 2020; the common interval
costs ONE message per meter.  ``docs/aggregation.md`` has the
message-sequence listing; in brief, with arithmetic mod 2**64:

* Setup (per epoch): meters send :class:`KeyAdvert` (X25519 key signed by
  the meter key); the head-end relays a :class:`KeyBundle`; each meter checks
  every signature against the registered meter keys, derives the graph and
  the pairwise secrets with its neighbours and a MAC key with the head-end.
* Interval t: the head-end sends each meter an :class:`IntervalStart` (signed
  announcement: enrolled set E_t, previous survivors U_{t-1} and dropped
  D_{t-1}; plus the shares for t its neighbours sent it).  The meter answers
  one :class:`MaskedInput`: y_t = x_t + PRG(b_t) + sum_v +-PRG(s_uv, t) over
  enrolled neighbours; fresh b_{t+1}, z_{t+1} Shamir-shared to neighbours
  (encrypted pairwise, with a fresh view key k_{t+1});
  per neighbour the pairwise mask for t+1 padded with z_{t+1} (so a dropped
  meter's masks for that ONE interval can be recovered); and its reveals
  for t-1: a b-share for each held peer in U_{t-1}, a z-share for each in
  D_{t-1}.
* Sparse graphs add a consistency round, pipelined: the meter also signs
  the announcement of t it was shown (``endorsement``); the start of t+1
  carries a :class:`Certificate`, a quorum of the epoch's committee's
  endorsements of the announcement of t, and the reveals for t-1 wait for
  it (they ride in the answer for t+1, not t).
* The total of interval t is final when the head-end closes interval t+1
  (complete graph) or t+2 (sparse graph): :attr:`AggregationHeadEnd.lag`.

Rules that make the attacks fail:

1. For one peer and one interval a meter reveals a b-share or a z-share,
   never both, and answers each interval once (``ReplayedMessage``).
   Revealing z recovers only that interval's pairwise masks, never the
   epoch key, so a falsely dropped meter keeps its self mask and nothing
   else of its past or future leaks.
2. Threshold ``(degree + 1) // 2 + 1``, a majority of a peer's holders: the
   head-end never gets both the b and the z of one peer.
3. A meter's degree floor is :func:`default_degree` of the roster size,
   computed by the meter (the head-end may only ask for more).
4. Before revealing anything for t-1 a meter checks the announcement: signed
   by the head-end, survivors and dropped partition its E_{t-1},
   ``|U_{t-1}| >= min_survivors`` (:class:`~privmeter.errors.GroupTooSmall`),
   and the isolation rule (:meth:`_Epoch.isolated`,
   :class:`~privmeter.errors.IsolationRefused`): every survivor it holds, and
   every surviving neighbour of every dropped meter it holds, lies in a set
   of at least ``min_survivors`` survivors connected in the neighbour graph.
5. Each b-share and u's own self-mask seed are padded by a constant keyed by
   u's view key and the enrolled set, so a meter told a different enrolled
   set from its holders is never unmasked.  Complete graphs (the default up
   to 33 meters): each reveal for peer u is also padded by g(x), a
   pseudorandom polynomial of degree < threshold with g(0) = 0 keyed by u's
   view key and the announcement's survivor/dropped sets.  Shares revealed
   under different announcements do not combine, and two majorities of
   the (common) holder set intersect, so an equivocating head-end gains
   nothing.
6. Sparse graphs: the announcement that decides the reveals for t-2 is the
   one of t-1 as certified by exactly a quorum (strict majority) of the
   committee (:func:`committee_size` meters, fixed by the bundle), each
   signature valid, and equal to the one this meter endorsed
   (:class:`~privmeter.errors.EquivocationRefused`); no certificate, no
   reveals.  A meter endorses one announcement per interval, so two
   certificates for one interval are impossible and every revealing holder
   acts on the same announcement: rule 4 then holds globally.
7. Every incoming message is checked (codec types and sizes, group, epoch,
   interval, signature / MAC, roster) before any state changes; on error the
   party raises and its state is as before.

Role states (docs/states.md): each side of one (group, epoch) moves along its
table, :data:`AGG_METER` (advertised / running) and :data:`AGG_HEADEND`
(collecting / running), checked before anything changes; which interval may
be answered or fed (once each, in order; only the open one) is checked on the
interval numbers after the table.

The bound (docs/threat-model.md, proof sketch in docs/aggregation.md):
whatever bundle degree and announcements the head-end sends, from what the
meters reveal it can compute readings only as sums over connected sets of
at least ``min_survivors`` survivors, also when different meters are shown
different announcements (tests/adversary/test_aggregation.py).

Security assumptions: the head-end and the network may be active
adversaries against privacy; at most ``threshold - 1`` of any meter's
neighbours collude with the head-end (and, for rules 5 and 6, none: a
colluding holder knows the view keys, a colluding committee member may sign
two announcements); X25519/HKDF, ChaCha20-Poly1305, Ed25519,
SHAKE-256 and keyed BLAKE2b (PRG, and MAC of the meter inputs) are secure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import operator
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from privmeter.crypto import masks, shamir
from privmeter.crypto.keyagreement import AgreementKey, sign_advert, verify_advert
from privmeter.crypto.numtheory import SYSTEM_RNG, RandomSource
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    EquivocationRefused,
    GroupTooSmall,
    InvalidArgument,
    InvalidCiphertext,
    InvalidSignature,
    IsolationRefused,
    LocalProtocolError,
    MalformedMessage,
    ReplayedMessage,
    StaleMessage,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.protocol.aggregation_messages import (
    HEADEND_ID,
    TAG_BYTES,
    VIEW_KEY_BYTES,
    Announcement,
    Certificate,
    IntervalStart,
    KeyAdvert,
    KeyBundle,
    MaskedInput,
    bitmap_from,
    bitmap_to_set,
    committee_size,
    decode_input,
    default_degree,
    graph_seed,
    neighbours,
    quorum_for,
    record_bytes,
    ring,
    threshold_for,
)
from privmeter.protocol.codec import DEFAULT_MAX_BYTES, decode, encode, encode_field, tail_encoder
from privmeter.protocol.states import Machine, Refusal, register

if TYPE_CHECKING:
    from privmeter.protocol.membership import MembershipPolicy

__all__ = [
    "AGG_HEADEND",
    "AGG_METER",
    "ANNOUNCE_CONTEXT",
    "ENDORSE_CONTEXT",
    "AggregateResult",
    "AggregationHeadEnd",
    "AggregationMeter",
    "EpochCache",
    "HeadEndState",
    "HeadEndStep",
    "MeterMessage",
    "MeterState",
    "endorsement_payload",
    "epoch_digest",
    "input_mac",
]

ANNOUNCE_CONTEXT = b"privmeter/agg/announce/v1"
ENDORSE_CONTEXT = b"privmeter/agg/endorse/v1"
VERIFY_SAMPLE = 32  # non-neighbour adverts each meter spot-checks at setup
_S = shamir.SHARE_BYTES


class MeterState(Enum):
    """A meter's side of one (group, epoch)."""

    ADVERTISED = "advertised"  # key sent, waiting for the bundle
    RUNNING = "running"  # epoch set up, answering intervals


class MeterMessage(Enum):
    BUNDLE = "bundle"  # KeyBundle
    START = "start"  # IntervalStart (which interval may be answered: once each, in order)


AGG_METER = register(
    Machine(
        "aggregation meter",
        MeterState,
        MeterMessage,
        MeterState.ADVERTISED,
        {
            MeterState.ADVERTISED: {MeterMessage.BUNDLE: MeterState.RUNNING},
            MeterState.RUNNING: {MeterMessage.START: MeterState.RUNNING},
        },
    )
)


class HeadEndState(Enum):
    """The head-end's side of one (group, epoch)."""

    COLLECTING = "collecting"  # taking the meters' key adverts
    RUNNING = "running"  # bundle made: intervals opened, inputs taken, intervals closed


class HeadEndStep(Enum):
    ADVERT = "advert"  # KeyAdvert
    BUNDLE = "bundle"  # local: make_bundle (again when running: the same bundle)
    OPEN = "open"  # local: open_interval
    INPUT = "input"  # MaskedInput (for the open interval only: checked in handle_input)
    CLOSE = "close"  # local: close_interval


_NOT_SET_UP = Refusal(
    UnexpectedMessage, "epoch not set up: collect adverts and make_bundle() first"
)
AGG_HEADEND = register(
    Machine(
        "aggregation head-end",
        HeadEndState,
        HeadEndStep,
        HeadEndState.COLLECTING,
        {
            HeadEndState.COLLECTING: {
                HeadEndStep.ADVERT: HeadEndState.COLLECTING,
                HeadEndStep.BUNDLE: HeadEndState.RUNNING,
            },
            HeadEndState.RUNNING: {
                HeadEndStep.BUNDLE: HeadEndState.RUNNING,
                HeadEndStep.OPEN: HeadEndState.RUNNING,
                HeadEndStep.INPUT: HeadEndState.RUNNING,
                HeadEndStep.CLOSE: HeadEndState.RUNNING,
            },
        },
        {
            (HeadEndState.RUNNING, HeadEndStep.ADVERT): Refusal(
                UnexpectedMessage, "key advert after the epoch was set up"
            ),
            (HeadEndState.COLLECTING, HeadEndStep.OPEN): _NOT_SET_UP,
            (HeadEndState.COLLECTING, HeadEndStep.INPUT): _NOT_SET_UP,
            (HeadEndState.COLLECTING, HeadEndStep.CLOSE): _NOT_SET_UP,
        },
    )
)


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """The outcome of one interval: ``total`` is None if it could not be unmasked."""

    interval: int
    total: tuple[int, ...] | None
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    error: str = ""


_MAC_PERSON = b"privmeter-aggmac"  # BLAKE2b personalisation: this MAC and nothing else
# The wire form of an input ends with its tag field (``"tag": bin8(16 bytes)``, the codec's
# encode_field); the MAC'd body is the same bytes with an empty tag (``"tag": bin8(0)``).
_TAG_FIELD_HEAD = encode_field("tag", bytes(TAG_BYTES))[:-TAG_BYTES]
_TAG_FIELD_BYTES = len(_TAG_FIELD_HEAD) + TAG_BYTES
_EMPTY_TAG_FIELD = encode_field("tag", b"")


def input_mac(key: bytes, body: bytes) -> bytes:
    """The 16-byte tag of a meter input: keyed BLAKE2b (a PRF, hence a MAC) over
    ``body``, the encoding of the input with an empty tag."""
    return hashlib.blake2b(body, key=key, digest_size=16, person=_MAC_PERSON).digest()


def _mac(key: bytes, msg: MaskedInput, wire: bytes | None = None) -> bytes:
    """Tag of ``msg``; ``wire``, if given, is its received encoding (``msg ==
    decode(wire)``), from which the body is cut without re-encoding.

    Sound because the tag is the last field: if ``wire`` ends with a 16-byte
    tag, replacing it by an empty one gives exactly the bytes the meter MAC'd
    (the meter only tags canonical encodings, and decoding is deterministic).
    """
    if wire is not None and wire[-_TAG_FIELD_BYTES:-TAG_BYTES] == _TAG_FIELD_HEAD:
        body = wire[:-_TAG_FIELD_BYTES] + _EMPTY_TAG_FIELD
    else:
        body = encode(dataclasses.replace(msg, tag=b""))
    return input_mac(key, body)


_Held = tuple[int, int, bytes]  # a held peer's (b-share, z-share, view key or b"")


def _view_digest(interval: int, survivors: bytes, dropped: bytes) -> bytes:
    """The announcement's decision about ``interval``, as the view pads bind it."""
    return hashlib.sha256(
        b"privmeter/agg/view/v1" + struct.pack(">Q", interval) + survivors + b"|" + dropped
    ).digest()


def _enrol_digest(interval: int, enrolled: bytes) -> bytes:
    return hashlib.sha256(
        b"privmeter/agg/enrol/v1" + struct.pack(">Q", interval) + enrolled
    ).digest()


def _view_pad(key: bytes, view: bytes, alive: bool, xpow: Sequence[int]) -> int:
    """g(x) for the pseudorandom polynomial g of degree < threshold with
    g(0) = 0 that ``key`` (the peer's view key) and ``view`` determine, one per
    kind of share; ``xpow`` is (x, x**2, ..., x**(threshold-1)) for the
    holder's x.  Holders that saw the same announcement add the same g: it
    vanishes when the head-end interpolates at 0; shares padded under
    different announcements do not combine."""
    data = hashlib.shake_256(key + (b"b" if alive else b"z") + view).digest(16 * len(xpow))
    # coefficient j is the 128-bit big-endian word j: (hi << 64) + lo, parsed in one call
    words = np.frombuffer(data, dtype=">u8")
    mul = operator.mul
    hi: int = sum(map(mul, words[0::2].tolist(), xpow))
    lo: int = sum(map(mul, words[1::2].tolist(), xpow))
    return ((hi << 64) + lo) % shamir.PRIME


def _enrol_pad(key: bytes, enrol: bytes) -> int:
    """A constant added to every b-share and to the peer's own self-mask seed:
    the rebuilt seed is right only if the holders' enrolled set is the one
    the peer masked with."""
    return int.from_bytes(hashlib.shake_256(key + b"e" + enrol).digest(16), "big") % shamir.PRIME


def epoch_digest(bundle: KeyBundle) -> bytes:
    """The epoch's identity in endorsements: SHA-256 over the encoded bundle."""
    return hashlib.sha256(b"privmeter/agg/epoch/v1" + encode(bundle)).digest()


def endorsement_payload(epoch_digest: bytes, ann: Announcement) -> bytes:
    """What a meter signs (context :data:`ENDORSE_CONTEXT`) to endorse the
    announcement it was shown: the epoch's bundle digest and the encoded
    announcement, hashed.  Signers of one certificate share the bundle."""
    return hashlib.sha256(epoch_digest + encode(ann)).digest()


def _share_nonce(interval: int, sender: int) -> bytes:
    return struct.pack(">QI", interval, sender)


def _share_ad(group: str, epoch: int, interval: int, sender: int, receiver: int) -> bytes:
    return group.encode() + struct.pack(">QQII", epoch, interval, sender, receiver)


class _Epoch:
    """Roster, graph and parameters both sides derive identically from a bundle."""

    def __init__(self, bundle: KeyBundle) -> None:
        self.bundle = bundle
        self.roster: tuple[str, ...] = tuple(a.party_id for a in bundle.adverts)
        self.n = len(self.roster)
        self.index = {m: i for i, m in enumerate(self.roster)}
        self.degree = bundle.degree
        self.threshold = threshold_for(bundle.degree)
        self.dense = bundle.degree >= self.n - 1  # complete graph: reveals bound to the view
        # sparse graphs: reveals for t-2 follow the certified announcement of t-1
        self.lag = 1 if self.dense else 2
        self.digest = epoch_digest(bundle)
        self.committee: tuple[int, ...] = ()
        self.quorum = 0
        if not self.dense:
            c = committee_size(self.n, self.degree)
            self.committee = tuple(sorted(ring(self.n, graph_seed(bundle.adverts))[:c]))
            self.quorum = quorum_for(self.n, self.degree)
        self.committee_set = frozenset(self.committee)
        self.rb = record_bytes(self.n, bundle.degree)
        self.nbrs = neighbours(self.n, self.degree, graph_seed(bundle.adverts))
        self.pos = [{v: p for p, v in enumerate(lst)} for lst in self.nbrs]
        # share holders of meter i: its neighbours and itself, in roster order
        self.holders = [sorted([*lst, i]) for i, lst in enumerate(self.nbrs)]
        self.holder_sets = [frozenset(h) for h in self.holders]
        self.hpos = [{u: k for k, u in enumerate(h)} for h in self.holders]
        # for each holder w, its position in each of its peers' holder lists
        self.rpos = [[self.hpos[u][w] for u in h] for w, h in enumerate(self.holders)]
        # relay gather tables (the graph is regular): row w lists w's neighbours
        # u and w's position among u's neighbours, i.e. where u's record for w is
        self.k = len(self.nbrs[0]) if self.n else 0
        self.relay_u = np.array(self.nbrs, dtype=np.intp).reshape(self.n, self.k)
        self.relay_p = np.array(
            [[self.pos[u][w] for u in lst] for w, lst in enumerate(self.nbrs)], dtype=np.intp
        ).reshape(self.n, self.k)

    def isolated(self, survivors: frozenset[int], held: Iterable[int], m: int) -> int | None:
        """A survivor whose connected set of survivors has fewer than ``m`` meters,
        among those a holder of ``held`` would help unmask; None if there is none.

        Checked: each held survivor, and each surviving neighbour of each held
        dropped meter (revealing the dropped meter's recovery key strips its
        masks with those neighbours).  "Connected set" is the component in the
        neighbour graph restricted to ``survivors``; a breadth-first search from
        each checked meter stops as soon as it has found ``m`` meters, and every
        meter it reached is then known to be in a large enough set.
        """
        nbrs = self.nbrs
        ok: set[int] = set()
        todo = [u for u in held if u in survivors]
        todo += [v for u in held if u not in survivors for v in nbrs[u] if v in survivors]
        for start in todo:
            if start in ok:
                continue
            seen = {start}
            frontier = [start]
            while frontier and len(seen) < m:
                nxt = []
                for u in frontier:
                    for v in nbrs[u]:
                        if v in survivors and v not in seen:
                            seen.add(v)
                            nxt.append(v)
                frontier = nxt
            if len(seen) < m:
                return start
            ok |= seen
        return None


class EpochCache:
    """Epoch tables (graph, neighbours, relay indices) by key bundle.

    Each party owns its cache (a meter agent, a head-end core) and passes it
    as the ``epochs`` argument to every :class:`AggregationMeter` /
    :class:`AggregationHeadEnd` it builds; without one, the object builds a
    cache of its own.  There is no process-wide cache.  The tables are pure
    functions of the bundle, so a simulator running many meters in one
    process may hand them one cache (its choice, for speed).  Bounded:
    cleared when more than 64 bundles are held.
    """

    MAX_BUNDLES = 64

    def __init__(self) -> None:
        self._tables: dict[KeyBundle, _Epoch] = {}

    def get(self, bundle: KeyBundle) -> _Epoch:
        ep = self._tables.get(bundle)
        if ep is None:
            if len(self._tables) > self.MAX_BUNDLES:
                self._tables.clear()
            ep = self._tables[bundle] = _Epoch(bundle)
        return ep

    def __len__(self) -> int:
        return len(self._tables)


# ============================================================================
# meter
# ============================================================================


class AggregationMeter:
    """One meter's side of masked aggregation for one (group, epoch)."""

    def __init__(
        self,
        meter_id: str,
        signing_key: SigningKey,
        registry: Mapping[str, VerifyKey],
        headend_key: VerifyKey,
        *,
        group: str,
        epoch: int,
        min_survivors: int,
        dim: int = 1,
        rng: RandomSource = SYSTEM_RNG,
        verified: set[bytes] | None = None,
        membership: MembershipPolicy | None = None,
        epochs: EpochCache | None = None,
    ) -> None:
        """``epochs``: where the epoch tables of a bundle come from (:class:`EpochCache`,
        the owning party's); None: a cache of this object's own.

        ``verified``: optional set of advert digests already verified, shared
        by the meters of an in-memory simulation (each advert is then checked
        once per process instead of once per meter; keyed by exact bytes).

        ``membership``: the meter's roster policy (one object per meter,
        shared by all its groups and epochs), the defence against
        differencing: a bundle whose roster the policy refuses (too small,
        too many roster changes today, or starting at an interval already
        served) raises ``GroupTooSmall`` / ``MembershipChangeRefused``, and
        so does contributing a reading to a second group for the same
        interval.  Revealing shares is not serving (it adds no reading)."""
        if min_survivors < 2:
            raise InvalidArgument("min_survivors must be at least 2")
        self.meter_id = meter_id
        self.group = group
        self.epoch = epoch
        self.min_survivors = min_survivors
        self.dim = dim
        self._sk = signing_key
        self._registry = dict(registry)
        self._headend_key = headend_key
        self._rng = rng
        self._verified = verified if verified is not None else set()
        self._epochs = epochs if epochs is not None else EpochCache()
        self._cache_endorsements = verified is not None  # a shared (simulation) cache only
        self._membership = membership
        self._ak = AgreementKey.generate(rng)
        nonce = rng.getrandbits(128).to_bytes(16, "big")
        self._advert = KeyAdvert(
            group=group,
            epoch=epoch,
            party_id=meter_id,
            public=self._ak.public,
            nonce=nonce,
            signature=sign_advert(signing_key, group, epoch, meter_id, self._ak.public, nonce),
        )
        self.state = MeterState.ADVERTISED
        self._ep: _Epoch | None = None
        self._me = -1
        self._seeds: dict[int, bytes] = {}
        self._aead: dict[int, ChaCha20Poly1305] = {}
        self._mac_key = b""
        self._last = -1  # last interval answered
        self._held: dict[int, tuple[frozenset[int], dict[int, _Held]]] = {}
        self._own: dict[int, tuple[bytes, bytes, _Held]] = {}  # t -> (b, z, what we hold of ours)
        self._endorsed: dict[int, bytes] = {}  # t -> payload of the announcement we endorsed

    # -- setup -------------------------------------------------------------------
    def advertise(self) -> KeyAdvert:
        return self._advert

    def handle_bundle(self, bundle: KeyBundle | bytes) -> None:
        """Verify every advert and derive the epoch's secrets (raises, state unchanged)."""
        nxt = AGG_METER.next(self.state, MeterMessage.BUNDLE, meter_id=self.meter_id)
        if isinstance(bundle, bytes):
            bundle = decode(bundle, expect=KeyBundle)
        if not isinstance(bundle, KeyBundle):
            raise MalformedMessage(f"expected KeyBundle, got {type(bundle).__name__}")
        if (bundle.group, bundle.epoch) != (self.group, self.epoch) or bundle.dim != self.dim:
            raise MalformedMessage("bundle for another group, epoch or dimension")
        h = bundle.headend
        verify_advert(
            self._headend_key, h.group, h.epoch, HEADEND_ID, h.public, h.nonce, h.signature
        )
        if (h.group, h.epoch) != (self.group, self.epoch):
            raise MalformedMessage("head-end advert for another group or epoch")
        ids = [a.party_id for a in bundle.adverts]
        if ids != sorted(set(ids)):
            raise MalformedMessage("bundle roster must be sorted and without duplicates")
        for a in bundle.adverts:
            if a.party_id not in self._registry:
                raise UnknownParty(f"meter {a.party_id!r} is not registered")
            if (a.group, a.epoch) != (self.group, self.epoch):
                raise MalformedMessage("advert for another group or epoch", meter_id=a.party_id)
        if self._advert not in bundle.adverts:
            raise MalformedMessage("our own key advert is missing or was replaced")
        n = len(ids)
        if n < self.min_survivors:
            raise GroupTooSmall(f"group of {n} below the minimum {self.min_survivors}")
        # the meter's own floor, from the roster alone: the head-end may only ask for more
        if bundle.degree < default_degree(n) or (bundle.degree < n - 1 and bundle.degree % 2):
            raise MalformedMessage(
                f"neighbour degree {bundle.degree} below {default_degree(n)}, "
                f"the floor for {n} meters"
            )
        ep = self._epochs.get(bundle)
        me = ep.index[self.meter_id]
        # Verify every neighbour's advert (no MITM on what we use) and a random
        # sample of the others (the graph seed hashes all adverts: a head-end
        # forging one to grind the graph is caught by each meter w.p. >= sample/n).
        others = [i for i in range(n) if i != me and i not in ep.pos[me]]
        sample = (
            others
            if len(others) <= VERIFY_SAMPLE
            else [others[self._rng.getrandbits(32) % len(others)] for _ in range(VERIFY_SAMPLE)]
        )
        for i in [*ep.nbrs[me], *sample]:
            a = bundle.adverts[i]
            key = self._registry[a.party_id]
            digest = hashlib.sha256(key.raw + encode(a)).digest()
            if digest not in self._verified:
                verify_advert(key, a.group, a.epoch, a.party_id, a.public, a.nonce, a.signature)
                self._verified.add(digest)
        seeds, aeads = {}, {}
        for v in ep.nbrs[me]:
            ps = self._ak.agree(
                bundle.adverts[v].public,
                group=self.group,
                epoch=self.epoch,
                id_a=self.meter_id,
                id_b=ep.roster[v],
            )
            seeds[v] = ps.mask_seed
            aeads[v] = ChaCha20Poly1305(ps.aead_key)
        mac = self._ak.agree(
            h.public, group=self.group, epoch=self.epoch, id_a=self.meter_id, id_b=HEADEND_ID
        ).mac_key
        if self._membership is not None:  # last check: it records the roster when it passes
            self._membership.admit(self.group, frozenset(ids), from_interval=bundle.first_interval)
        # commit
        self._ep, self._me, self._seeds, self._aead, self._mac_key = ep, me, seeds, aeads, mac
        self.state = nxt

    # -- per interval ------------------------------------------------------------------
    def handle_start(
        self, start: IntervalStart | bytes, reading: Sequence[int] | int | None
    ) -> MaskedInput:
        """Answer one interval: masked ``reading`` (None: nothing to report) and shares."""
        AGG_METER.next(self.state, MeterMessage.START, meter_id=self.meter_id)
        if self._ep is None:
            raise LocalProtocolError("a running aggregation meter has no epoch")
        if isinstance(start, bytes):
            start = decode(start, expect=IntervalStart)
        if not isinstance(start, IntervalStart):
            raise MalformedMessage(f"expected IntervalStart, got {type(start).__name__}")
        ep, me = self._ep, self._me
        ann = start.announcement
        if (ann.group, ann.epoch, ann.roster_size) != (self.group, self.epoch, ep.n):
            raise MalformedMessage("announcement for another group, epoch or roster")
        t = ann.interval
        if t == self._last:
            raise ReplayedMessage("interval already answered", interval=t)
        if t < self._last or t < ep.bundle.first_interval:
            raise StaleMessage(f"interval {t} is older than {self._last}", interval=t)
        self._headend_key.verify(ANNOUNCE_CONTEXT, encode(ann), start.signature)
        try:
            enrolled = bitmap_to_set(ann.enrolled, ep.n)
            survivors = bitmap_to_set(ann.survivors, ep.n)
            dropped = bitmap_to_set(ann.dropped, ep.n)
        except ValueError as exc:
            raise MalformedMessage(str(exc)) from None

        # which announcement decides the reveals, and for which interval r:
        # complete graph, this one (r = t-1); sparse, the previous one as a
        # quorum certified it (r = t-2), or none without a certificate
        cert = start.certificate
        decision: Announcement | None = ann
        if ep.dense:
            if cert is not None:
                raise MalformedMessage("certificate in a complete graph", interval=t)
            r = t - 1
        else:
            r = t - 2
            decision = None
            if cert is not None:
                self._check_certificate(cert, t)
                decision = cert.announcement
                try:
                    survivors = bitmap_to_set(decision.survivors, ep.n)
                    dropped = bitmap_to_set(decision.dropped, ep.n)
                except ValueError as exc:
                    raise MalformedMessage(str(exc)) from None

        # 1. shares relayed to us for interval t
        held = self._open_records(start.shares, t, [u for u in ep.nbrs[me] if u in enrolled])

        # 2. reveals for r (each held peer: b-share if survived, z-share if dropped)
        reveals = b""
        reveal_interval = -1
        prev = self._held.get(r) if decision is not None else None
        if decision is not None and prev is None and start.late:
            # we missed r: its records, relayed again, still let us reveal
            prev_enrolled = survivors | dropped
            late = self._open_records(start.late, r, [u for u in ep.nbrs[me] if u in prev_enrolled])
            own_prev = self._own.get(r)
            if me in prev_enrolled and own_prev is not None:
                late[me] = own_prev[2]
            prev = (frozenset(prev_enrolled), late)
        if decision is not None and prev is not None and prev[1]:
            prev_enrolled, prev_held = prev
            if survivors & dropped or (survivors | dropped) != prev_enrolled:
                raise MalformedMessage(
                    "survivors and dropped must partition the enrolled set", interval=r
                )
            if len(survivors) < self.min_survivors:
                raise GroupTooSmall(
                    f"{len(survivors)} survivors, below the minimum {self.min_survivors}",
                    interval=r,
                )
            small = ep.isolated(survivors, prev_held, self.min_survivors)
            if small is not None:
                raise IsolationRefused(
                    f"survivor {ep.roster[small]!r} would be unmasked in a connected set of "
                    f"fewer than {self.min_survivors} survivors",
                    interval=r,
                )
            view = _view_digest(r, decision.survivors, decision.dropped) if ep.dense else b""
            enrol = _enrol_digest(r, bitmap_from(prev_enrolled, ep.n))
            xpow = (
                [pow(me + 1, j, shamir.PRIME) for j in range(1, ep.threshold)] if ep.dense else []
            )
            out = []
            for u in sorted(prev_held):
                b_share, z_share, key = prev_held[u]
                alive = u in survivors
                y = b_share if alive else z_share
                if ep.dense:  # bind the reveal to this announcement (see the module doc)
                    y += _view_pad(key, view, alive, xpow)
                if alive:  # bind the b-share to the enrolled set (every graph)
                    y += _enrol_pad(key, enrol)
                out.append(shamir.share_to_bytes(y % shamir.PRIME))
            reveals = b"".join(out)
            reveal_interval = r

        # 3. masked value for t
        masked: tuple[int, ...] = ()
        if me in enrolled:
            own = self._own.get(t)
            if own is None:
                raise MalformedMessage("enrolled for an interval we sent no shares for", interval=t)
            held[me] = own[2]
            if reading is not None:
                # the self-mask seed the head-end rebuilds only with our enrolled set
                b_self = (
                    (
                        int.from_bytes(own[0], "big")
                        + _enrol_pad(own[2][2], _enrol_digest(t, ann.enrolled))
                    )
                    % shamir.PRIME
                ).to_bytes(16, "big")
                masked = self._mask(t, reading, b_self, enrolled)
        # 4. fresh secrets for t+1, shared to every neighbour
        b_int = self._rng.getrandbits(shamir.SECRET_BITS)
        z_int = self._rng.getrandbits(shamir.SECRET_BITS)
        b_seed, z_seed = b_int.to_bytes(16, "big"), z_int.to_bytes(16, "big")
        nbrs = ep.nbrs[me]
        # per holder (neighbours, then us): its b-share || z-share, the record plaintext
        pts = shamir.share_bytes(
            [b_int, z_int], [v + 1 for v in nbrs] + [me + 1], ep.threshold, rng=self._rng
        )
        own_pt = pts.pop()
        own_b, own_z = shamir.share_from_bytes(own_pt[:_S]), shamir.share_from_bytes(own_pt[_S:])
        # one fresh view key for t+1, sent to every holder with its shares
        view_key = self._rng.getrandbits(8 * VIEW_KEY_BYTES).to_bytes(VIEW_KEY_BYTES, "big")
        pts = [pt + view_key for pt in pts]
        nonce = _share_nonce(t + 1, me)
        aead = self._aead
        recs = [
            aead[v].encrypt(nonce, pt, _share_ad(self.group, self.epoch, t + 1, me, v))
            for v, pt in zip(nbrs, pts, strict=True)
        ]
        # per neighbour v: PRG(s_uv, t+1) XOR PRG(z_{t+1}, v), all neighbours in one XOR
        nbytes = 8 * self.dim
        pads = masks.xor_bytes(
            masks.expand_each(
                [self._seeds[v] for v in nbrs], nbytes, domain=masks.DOMAIN_PAIR, interval=t + 1
            ),
            masks.expand_many(
                z_seed, [(v, nbytes) for v in nbrs], domain=masks.DOMAIN_RECOVERY, interval=t + 1
            ),
        )
        # sparse: endorse the announcement we were shown (our only one for t)
        payload = b"" if ep.dense else endorsement_payload(ep.digest, ann)
        msg = MaskedInput(
            group=self.group,
            epoch=self.epoch,
            interval=t,
            meter_id=self.meter_id,
            masked=masked,
            shares=b"".join(recs),
            recovery=pads,
            reveal_interval=reveal_interval,
            reveals=reveals,
            endorsement=self._sk.sign(ENDORSE_CONTEXT, payload) if payload else b"",
            tag=b"",
        )
        msg = dataclasses.replace(msg, tag=_mac(self._mac_key, msg))
        if masked and self._membership is not None:  # last check: it records the interval
            self._membership.serve(self.group, t)
        # commit (nothing above changed state)
        self._last = t
        keep = t - ep.lag  # the oldest interval a later answer may still reveal for is t-lag+1
        self._held = {k: v for k, v in self._held.items() if k > keep}
        self._held[t] = (enrolled, held)
        self._own.pop(t, None)
        self._own = {k: v for k, v in self._own.items() if k > keep}
        self._own[t + 1] = (b_seed, z_seed, (own_b, own_z, view_key))
        if payload:
            self._endorsed = {k: v for k, v in self._endorsed.items() if k >= t - 1}
            self._endorsed[t] = payload
        return msg

    def _check_certificate(self, cert: Certificate, t: int) -> None:
        """A sparse graph's certificate for the announcement of t-1: exactly a
        quorum of committee members, each signature valid, and the very
        announcement we were shown for t-1 if we were shown one (raises)."""
        ep = self._tables()
        try:
            signers = bitmap_to_set(cert.signers, ep.n)
        except ValueError as exc:
            raise MalformedMessage(str(exc), interval=t - 2) from None
        if not signers <= ep.committee_set:
            raise MalformedMessage("certificate signer outside the committee", interval=t - 2)
        if len(signers) < ep.quorum:
            raise EquivocationRefused(
                f"announcement of interval {t - 1} endorsed by {len(signers)} committee "
                f"members, the quorum is {ep.quorum}",
                interval=t - 2,
            )
        if len(signers) > ep.quorum:
            raise MalformedMessage(
                f"more than the quorum of {ep.quorum} endorsements", interval=t - 2
            )
        payload = endorsement_payload(ep.digest, cert.announcement)
        mine = self._endorsed.get(t - 1)
        if mine is not None and mine != payload:
            raise EquivocationRefused(
                f"a quorum endorsed another announcement of interval {t - 1} than the one we "
                "were shown",
                interval=t - 2,
            )
        sigs = cert.signatures
        for k, i in enumerate(sorted(signers)):
            sig = sigs[64 * k : 64 * k + 64]
            key = self._registry[ep.roster[i]]
            if self._cache_endorsements:
                tag = hashlib.sha256(b"endorse" + key.raw + payload + sig).digest()
                if tag in self._verified:
                    continue
            key.verify(ENDORSE_CONTEXT, payload, sig)
            if self._cache_endorsements:
                self._verified.add(tag)

    def _tables(self) -> _Epoch:
        """This epoch's tables, built when the key bundle was accepted."""
        if self._ep is None:
            raise LocalProtocolError("no key bundle accepted yet: the epoch tables are not built")
        return self._ep

    def _open_records(self, blob: bytes, t: int, senders: Sequence[int]) -> dict[int, _Held]:
        """Decrypt the (b-share, z-share[, view key]) records for interval ``t``
        that ``senders`` (in neighbour order) addressed to us; raises on any
        record that does not authenticate or whose count is wrong."""
        ep, me = self._tables(), self._me
        rb = ep.rb
        if len(blob) != rb * len(senders):
            raise MalformedMessage(
                f"expected {len(senders)} relayed shares, got {len(blob) // rb}", interval=t
            )
        held: dict[int, _Held] = {}
        for k, u in enumerate(senders):
            try:
                pt = self._aead[u].decrypt(
                    _share_nonce(t, u),
                    blob[k * rb : (k + 1) * rb],
                    _share_ad(self.group, self.epoch, t, u, me),
                )
                held[u] = (
                    shamir.share_from_bytes(pt[:_S]),
                    shamir.share_from_bytes(pt[_S : 2 * _S]),
                    pt[2 * _S :],
                )
            except (InvalidTag, ValueError):
                raise InvalidCiphertext(
                    "relayed share does not authenticate", interval=t, meter_id=ep.roster[u]
                ) from None
        return held

    def _mask(
        self, t: int, reading: Sequence[int] | int, b_seed: bytes, enrolled: frozenset[int]
    ) -> tuple[int, ...]:
        values = [reading] if isinstance(reading, int) else list(reading)
        if len(values) != self.dim:
            raise InvalidArgument(f"reading must have {self.dim} values")
        y = masks.from_signed(values).tolist()
        me = self._me
        live = [v for v in self._tables().nbrs[me] if v in enrolled]
        seeds, dim = self._seeds, self.dim
        own = masks.expand_sum_ints([b_seed], dim, domain=masks.DOMAIN_SELF, interval=t)
        plus = masks.expand_sum_ints(
            [seeds[v] for v in live if me < v], dim, domain=masks.DOMAIN_PAIR, interval=t
        )
        minus = masks.expand_sum_ints(
            [seeds[v] for v in live if v < me], dim, domain=masks.DOMAIN_PAIR, interval=t
        )
        return tuple(
            (a + b + c - d) % masks.MODULUS for a, b, c, d in zip(y, own, plus, minus, strict=True)
        )


# ============================================================================
# head-end
# ============================================================================


class AggregationHeadEnd:
    """The head-end's side for one (group, epoch): relay, collect, unmask.

    Drive it with :meth:`handle_advert` x n, :meth:`make_bundle`, then per
    interval :meth:`open_interval` (messages to send), :meth:`handle_input`
    for each answer, and :meth:`close_interval` when the runner's deadline
    passes (returns the result of the *previous* interval, or None).
    """

    def __init__(
        self,
        signing_key: SigningKey,
        registry: Mapping[str, VerifyKey],
        *,
        group: str,
        epoch: int,
        first_interval: int,
        min_survivors: int,
        dim: int = 1,
        degree: int | None = None,
        rng: RandomSource = SYSTEM_RNG,
        max_bytes: int = DEFAULT_MAX_BYTES,
        epochs: EpochCache | None = None,
    ) -> None:
        """``epochs``: where the epoch tables of a bundle come from (:class:`EpochCache`,
        the owning party's); None: a cache of this object's own."""
        self.group, self.epoch, self.dim = group, epoch, dim
        self._epochs = epochs if epochs is not None else EpochCache()
        self.first_interval = first_interval
        self.min_survivors = min_survivors
        self._sk = signing_key
        self._registry = dict(registry)
        self._degree = degree
        self._max_bytes = max_bytes
        self._ak = AgreementKey.generate(rng)
        nonce = rng.getrandbits(128).to_bytes(16, "big")
        self._advert = KeyAdvert(
            group=group,
            epoch=epoch,
            party_id=HEADEND_ID,
            public=self._ak.public,
            nonce=nonce,
            signature=sign_advert(signing_key, group, epoch, HEADEND_ID, self._ak.public, nonce),
        )
        self.state = HeadEndState.COLLECTING
        self._adverts: dict[str, KeyAdvert] = {}
        self._ep: _Epoch | None = None
        self._macs: list[bytes] = []
        self.current = -1  # interval open for inputs
        self._enrolled: dict[int, frozenset[int]] = {}
        self._inputs: dict[int, dict[int, MaskedInput]] = {}
        self._outcome: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._anns: dict[int, Announcement] = {}  # sparse: the announcement of t, to certify
        self._certified: dict[
            int, bool
        ] = {}  # sparse: t -> a certificate for t's announcement went out
        self._interp: list[shamir.SubsetInterpolator] | None = None

    # -- setup -------------------------------------------------------------------
    def handle_advert(self, advert: KeyAdvert | bytes) -> None:
        AGG_HEADEND.next(self.state, HeadEndStep.ADVERT)
        if isinstance(advert, bytes):
            advert = decode(advert, max_bytes=self._max_bytes, expect=KeyAdvert)
        if not isinstance(advert, KeyAdvert):
            raise MalformedMessage(f"expected KeyAdvert, got {type(advert).__name__}")
        key = self._registry.get(advert.party_id)
        if key is None:
            raise UnknownParty(f"meter {advert.party_id!r} is not registered")
        if (advert.group, advert.epoch) != (self.group, self.epoch):
            raise StaleMessage("advert for another group or epoch", meter_id=advert.party_id)
        if advert.party_id in self._adverts:
            raise ReplayedMessage("second advert", meter_id=advert.party_id)
        verify_advert(
            key,
            advert.group,
            advert.epoch,
            advert.party_id,
            advert.public,
            advert.nonce,
            advert.signature,
        )
        self._adverts[advert.party_id] = advert

    def make_bundle(self) -> KeyBundle:
        nxt = AGG_HEADEND.next(self.state, HeadEndStep.BUNDLE)
        n = len(self._adverts)
        if n < max(2, self.min_survivors):
            raise GroupTooSmall(f"{n} meters advertised, below the minimum {self.min_survivors}")
        degree = self._degree if self._degree is not None else default_degree(n)
        bundle = KeyBundle(
            group=self.group,
            epoch=self.epoch,
            first_interval=self.first_interval,
            dim=self.dim,
            degree=min(degree, n - 1),
            headend=self._advert,
            adverts=tuple(self._adverts[m] for m in sorted(self._adverts)),
        )
        ep = self._epochs.get(bundle)
        self._macs = [
            self._ak.agree(
                a.public, group=self.group, epoch=self.epoch, id_a=a.party_id, id_b=HEADEND_ID
            ).mac_key
            for a in bundle.adverts
        ]
        self._ep = ep
        self._interp = None
        self._interpolators()  # per-meter Lagrange tables: epoch set-up, not per interval
        self.state = nxt
        return bundle

    @property
    def roster(self) -> tuple[str, ...]:
        return self._ep.roster if self._ep is not None else ()

    @property
    def lag(self) -> int:
        """Intervals between an interval and the close that finalises it: 1 in a
        complete graph, 2 in a sparse one (its reveals wait for the certificate)."""
        return self._ep.lag if self._ep is not None else 1

    # -- per interval ------------------------------------------------------------------
    def open_interval(self) -> dict[str, IntervalStart]:
        """Start the next interval: one :class:`IntervalStart` per roster meter."""
        ann, sig, cert, shares, late = self._open()
        return {
            mid: IntervalStart(
                announcement=ann,
                signature=sig,
                certificate=cert,
                shares=sh,
                late=late.get(mid, b""),
            )
            for mid, sh in shares.items()
        }

    def open_interval_wire(self) -> dict[str, bytes]:
        """:meth:`open_interval`, already encoded: ``encode(open_interval()[m])``
        byte for byte, but the common prefix (announcement and signature) is
        encoded once, not once per meter."""
        ann, sig, cert, shares, late = self._open()
        per_meter = tail_encoder(
            IntervalStart(announcement=ann, signature=sig, certificate=cert, shares=b"", late=b""),
            ("shares", "late"),
        )
        return {mid: per_meter(sh, late.get(mid, b"")) for mid, sh in shares.items()}

    def _relay(
        self, inputs: Mapping[int, MaskedInput], receivers: Sequence[int]
    ) -> dict[str, bytes]:
        """For each receiver w, the share records addressed to it by the senders
        in ``inputs``, in w's neighbour order, relayed untouched (opaque AEAD
        ciphertexts): one numpy gather over the whole group."""
        ep = self._require_epoch()
        rb, k = ep.rb, ep.k
        buf = bytearray(ep.n * k * rb)
        for u, msg in inputs.items():
            buf[u * k * rb : (u + 1) * k * rb] = msg.shares
        recv = np.asarray(receivers, dtype=np.intp)
        recs = np.frombuffer(buf, dtype=np.uint8).reshape(ep.n, k, rb)[
            ep.relay_u[recv], ep.relay_p[recv]
        ]  # (receiver, its neighbour, record)
        if len(inputs) == ep.n:
            flat, ends = recs.tobytes(), np.arange(1, len(recv) + 1) * (k * rb)
        else:
            sent = np.zeros(ep.n, dtype=bool)
            sent[list(inputs)] = True
            keep = sent[ep.relay_u[recv]]  # (receiver, its neighbour): did that neighbour send?
            flat, ends = recs[keep].tobytes(), np.cumsum(keep.sum(axis=1)) * rb
        bounds = [0, *ends.tolist()]
        return {ep.roster[w]: flat[bounds[i] : bounds[i + 1]] for i, w in enumerate(recv.tolist())}

    def _open(
        self,
    ) -> tuple[Announcement, bytes, Certificate | None, dict[str, bytes], dict[str, bytes]]:
        AGG_HEADEND.next(self.state, HeadEndStep.OPEN)
        ep = self._require_epoch()
        t = self.first_interval if self.current < 0 else self.current + 1
        prev_inputs = self._inputs.get(t - 1, {})
        enrolled = frozenset(prev_inputs)
        surv, drop = self._outcome.get(t - 1, (frozenset(), frozenset()))
        ann = Announcement(
            group=self.group,
            epoch=self.epoch,
            interval=t,
            roster_size=ep.n,
            enrolled=bitmap_from(enrolled, ep.n),
            survivors=bitmap_from(surv, ep.n),
            dropped=bitmap_from(drop, ep.n),
        )
        sig = self._sk.sign(ANNOUNCE_CONTEXT, encode(ann))
        cert = None if ep.dense else self._certificate(t - 1)
        out = self._relay(prev_inputs, range(ep.n))
        # meters that did not answer the interval r they now reveal for get its
        # records again, so that they can still reveal for r now
        r = t - ep.lag
        late: dict[str, bytes] = {}
        older = self._inputs.get(r - 1)
        r_surv, r_drop = self._outcome.get(r, (frozenset(), frozenset()))
        if older and (r_surv or r_drop) and (ep.dense or cert is not None):
            answered = self._inputs.get(r, {})
            absent = [w for w in range(ep.n) if w not in answered]
            late = self._relay(older, absent)
        self.current = t
        self._enrolled[t] = enrolled
        self._inputs[t] = {}
        if not ep.dense:
            self._anns[t] = ann
        return ann, sig, cert, out, late

    def _certificate(self, t: int) -> Certificate | None:
        """The committee's endorsements of the announcement of ``t`` (the first
        quorum of valid ones in roster order), or None without a quorum."""
        ep = self._require_epoch()
        ann = self._anns.get(t)
        box = self._inputs.get(t, {})
        if ann is None:
            return None
        payload = endorsement_payload(ep.digest, ann)
        signers: list[int] = []
        sigs: list[bytes] = []
        for w in ep.committee:
            msg = box.get(w)
            if msg is None:
                continue
            try:  # a bad endorsement must not spoil the certificate for everyone
                self._registry[ep.roster[w]].verify(ENDORSE_CONTEXT, payload, msg.endorsement)
            except InvalidSignature:
                continue
            signers.append(w)
            sigs.append(msg.endorsement)
            if len(signers) == ep.quorum:
                self._certified[t] = True
                return Certificate(
                    announcement=ann, signers=bitmap_from(signers, ep.n), signatures=b"".join(sigs)
                )
        self._certified[t] = False
        return None

    def handle_input(self, msg: MaskedInput | bytes) -> None:
        """Validate and store one meter's answer (raises, state unchanged)."""
        AGG_HEADEND.next(self.state, HeadEndStep.INPUT)
        ep = self._require_epoch()
        wire: bytes | None = None
        if isinstance(msg, bytes):
            wire = msg
            msg = decode_input(msg, max_bytes=self._max_bytes)
        if not isinstance(msg, MaskedInput):
            raise MalformedMessage(f"expected MaskedInput, got {type(msg).__name__}")
        w = ep.index.get(msg.meter_id)
        if w is None:
            raise UnknownParty(
                f"meter {msg.meter_id!r} is not in this epoch", meter_id=msg.meter_id
            )
        if (msg.group, msg.epoch) != (self.group, self.epoch):
            raise StaleMessage("input for another group or epoch", meter_id=msg.meter_id)
        t = msg.interval
        if t < self.current:
            raise StaleMessage(f"input for closed interval {t}", meter_id=msg.meter_id, interval=t)
        if t != self.current:
            raise UnexpectedMessage(
                f"input for interval {t}, open is {self.current}", meter_id=msg.meter_id
            )
        if not hmac.compare_digest(msg.tag, _mac(self._macs[w], msg, wire)):
            raise InvalidSignature("input MAC does not verify", meter_id=msg.meter_id, interval=t)
        box = self._inputs[t]
        if w in box:
            raise ReplayedMessage("second input this interval", meter_id=msg.meter_id, interval=t)
        k = len(ep.nbrs[w])
        if len(msg.shares) != ep.rb * k or len(msg.recovery) != 8 * self.dim * k:
            raise MalformedMessage(
                "shares / recovery pads must cover every neighbour",
                meter_id=msg.meter_id,
                interval=t,
            )
        if msg.masked and (len(msg.masked) != self.dim or w not in self._enrolled[t]):
            raise MalformedMessage(
                "masked value of wrong size or from a meter not enrolled",
                meter_id=msg.meter_id,
                interval=t,
            )
        if len(msg.endorsement) != (0 if ep.dense else 64):
            raise MalformedMessage(
                "a sparse graph's input carries an endorsement, a complete graph's none",
                meter_id=msg.meter_id,
                interval=t,
            )
        if msg.reveal_interval >= 0:
            if msg.reveal_interval != t - ep.lag:
                raise MalformedMessage(
                    f"reveals for interval {msg.reveal_interval}, due are those for {t - ep.lag}",
                    meter_id=msg.meter_id,
                    interval=t,
                )
            prev = self._enrolled.get(t - ep.lag, frozenset())
            held = len(ep.holder_sets[w]) if len(prev) == ep.n else len(ep.holder_sets[w] & prev)
            if len(msg.reveals) != _S * held:
                raise MalformedMessage(
                    f"expected {held} revealed shares", meter_id=msg.meter_id, interval=t
                )
        box[w] = msg

    def close_interval(self) -> AggregateResult | None:
        """End the open interval; return the now-final result of the one
        :attr:`lag` intervals before it (the one before it in a complete graph)."""
        AGG_HEADEND.next(self.state, HeadEndStep.CLOSE)
        ep = self._require_epoch()
        t = self.current
        if t < 0:
            raise UnexpectedMessage("no interval is open")
        inputs = self._inputs[t]
        enrolled = self._enrolled[t]
        surv = frozenset(u for u in enrolled if u in inputs and inputs[u].masked)
        self._outcome[t] = (surv, enrolled - surv)
        result = None
        r = t - ep.lag
        if self._enrolled.get(r):
            result = self._finalize(r)
        for old in [k for k in self._inputs if k < r]:  # r's: pads of r+1, late relays at t+1
            del self._inputs[old]
            self._enrolled.pop(old, None)
            self._outcome.pop(old, None)
            self._anns.pop(old, None)
            self._certified.pop(old, None)
        return result

    # -- unmasking -------------------------------------------------------------------
    def _finalize(self, t: int) -> AggregateResult:
        ep = self._require_epoch()
        surv, drop = self._outcome[t]

        def res(total: tuple[int, ...] | None, err: str = "") -> AggregateResult:
            return AggregateResult(
                t,
                total,
                tuple(ep.roster[i] for i in sorted(surv)),
                tuple(ep.roster[i] for i in sorted(drop)),
                err,
            )

        if len(surv) < self.min_survivors:
            return res(None, f"{len(surv)} survivors below the minimum {self.min_survivors}")
        if not ep.dense and not self._certified.get(t + 1, False):
            return res(
                None,
                f"no quorum of {ep.quorum} committee endorsements for the "
                f"announcement of interval {t + 1}: nothing was revealed",
            )
        enrolled = surv | drop
        y_in = self._inputs[t]
        reveal_in = self._inputs[t + ep.lag]
        share_in = self._inputs[t - 1]
        thr = ep.threshold
        # Every revealed share, filed under the peer it belongs to (b-shares for
        # survivors, z-shares for the dropped; each holder sent one kind per
        # peer, as the signed announcement said) with the holder's position in
        # that peer's holder list.  A holder's reveals list its held peers (its
        # holders that were enrolled) in roster order.
        full = len(enrolled) == ep.n
        got_pos: list[list[int]] = [[] for _ in range(ep.n)]
        got_ys: list[list[int]] = [[] for _ in range(ep.n)]
        from_bytes = int.from_bytes
        for w in sorted(reveal_in):  # ascending holders: positions come in order
            msg = reveal_in[w]
            if msg.reveal_interval != t:
                continue
            data = msg.reveals
            ys_w = [from_bytes(data[i : i + _S], "big") for i in range(0, len(data), _S)]
            if ys_w and max(ys_w) >= shamir.PRIME:
                return res(None, f"holder {ep.roster[w]} revealed a share outside the field")
            if full:
                for u, p, y in zip(ep.holders[w], ep.rpos[w], ys_w, strict=True):
                    got_pos[u].append(p)
                    got_ys[u].append(y)
            else:  # w listed only its held peers: the enrolled ones
                it = iter(ys_w)
                for u, p in zip(ep.holders[w], ep.rpos[w], strict=True):
                    if u in enrolled:
                        got_pos[u].append(p)
                        got_ys[u].append(next(it))
        # one batch: survivors' self-mask seeds b, and the recovery keys z of
        # the dropped meters that have a surviving neighbour
        need_z = [u for u in sorted(drop) if any(v in surv for v in ep.nbrs[u])]
        order = sorted(surv) + need_z
        for u in order:
            if len(got_ys[u]) < thr:
                what = (
                    "b-shares to remove a survivor's self mask"
                    if u in surv
                    else "z-shares to recover a dropped meter's masks"
                )
                return res(None, f"too few {what}")
        # (positions distinct and in range by construction, shares checked above)
        interp = self._interpolators()
        seeds = {u: interp[u].at_zero(got_pos[u], got_ys[u]) for u in order}
        b_seeds = [seeds[u].to_bytes(16, "big") for u in sorted(surv)]
        total = np.array([y_in[u].masked for u in sorted(surv)], dtype=np.uint64).sum(
            axis=0, dtype=np.uint64
        )
        total -= masks.expand_sum(b_seeds, self.dim, domain=masks.DOMAIN_SELF, interval=t)
        dim = self.dim
        for u in sorted(drop):
            live = [v for v in ep.nbrs[u] if v in surv]
            if not live:
                continue
            z_seed = seeds[u].to_bytes(16, "big")
            # m_uv = pad_uv XOR PRG(z_u, v) for every live neighbour v, vectorised
            rec = np.frombuffer(share_in[u].recovery, dtype="<u8").reshape(-1, dim)
            pos = ep.pos[u]
            rows = rec[[pos[v] for v in live]]
            pads = np.frombuffer(
                masks.expand_many(
                    z_seed, [(v, 8 * dim) for v in live], domain=masks.DOMAIN_RECOVERY, interval=t
                ),
                dtype="<u8",
            ).reshape(len(live), dim)
            m = (rows ^ pads).astype(np.uint64)
            lower = np.array([v < u for v in live])
            total -= m[lower].sum(axis=0, dtype=np.uint64)
            total += m[~lower].sum(axis=0, dtype=np.uint64)
        return res(masks.to_signed(total))

    def _interpolators(self) -> list[shamir.SubsetInterpolator]:
        """Per meter, the interpolator of its full holder set (built once per epoch)."""
        if self._interp is None:
            ep = self._require_epoch()
            self._interp = shamir.subset_interpolators(
                [tuple(w + 1 for w in h) for h in ep.holders]
            )
        return self._interp

    def _require_epoch(self) -> _Epoch:
        if self._ep is None:  # the state table refused every step needing it before
            raise LocalProtocolError("a running aggregation head-end has no epoch")
        return self._ep
