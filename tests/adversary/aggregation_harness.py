"""A malicious head-end for masked aggregation: it sends honest meters any
well-formed, correctly signed bundle and announcements, keeps everything they
send, and computes everything that can be computed from it.

What it is for: the adversary tests (``test_aggregation.py`` beside it).  It
plays the head-end with the real head-end signing key, against real
:class:`~privmeter.protocol.aggregation.AggregationMeter` objects, through the
public message types only (no meter internals are read or written).  Per
interval it may choose, for each meter separately, the enrolled set, the
survivors and the dropped meters it announces; at set-up, any degree.

What the head-end holds for interval t after the reveals for t came in
(:class:`Knowledge`): every masked value y_u it received; the self-mask seed
b_u of each meter for which at least ``threshold`` b-shares were revealed;
the recovery key z_u of each meter with ``threshold`` z-shares; the recovery
pads of interval t.  From these, :meth:`Knowledge.learnable_sums` computes
exactly the linear functions of the readings the head-end can evaluate:
masks are pseudorandom, so a combination of masked values reveals something
only when every unknown mask in it cancels.  A pairwise mask m_uv is known
once z_u or z_v is; a self mask once b_u is.  With only those, the
cancelling combinations are the sums over the "closed components": the
connected sets of meters (y and b known) joined by unknown pairwise masks
that both ends added, none of whose unknown masks leads outside the set.
The harness evaluates each such sum with the real masks, so a test compares
it with the plaintext truth.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from privmeter.crypto import masks, shamir
from privmeter.crypto.keyagreement import AgreementKey, sign_advert
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import PrivmeterError
from privmeter.protocol.aggregation import (
    ANNOUNCE_CONTEXT,
    AggregationMeter,
    EpochCache,
    epoch_digest,
)
from privmeter.protocol.aggregation_messages import (
    HEADEND_ID,
    Announcement,
    Certificate,
    IntervalStart,
    KeyAdvert,
    KeyBundle,
    MaskedInput,
    bitmap_from,
    bitmap_to_set,
    committee_size,
    default_degree,
    graph_seed,
    neighbours,
    quorum_for,
    record_bytes,
    ring,
    threshold_for,
)
from privmeter.protocol.codec import decode, encode

__all__ = ["Knowledge", "LyingHeadEnd", "View"]

View = tuple[frozenset[int], frozenset[int], frozenset[int]]  # (enrolled, survivors, dropped)
Reading = Callable[[str, int], int]
_S = shamir.SHARE_BYTES


@dataclass
class Knowledge:
    """What the head-end holds about one interval, and what follows from it."""

    interval: int
    n: int
    nbrs: list[list[int]]
    y: dict[int, np.ndarray]  # masked values received (uint64)
    b: dict[int, bytes]  # self-mask seeds reconstructed
    z: dict[int, bytes]  # recovery keys reconstructed
    pads: dict[int, bytes]  # per meter: its recovery pads for this interval, in neighbour order
    masked_with: dict[int, frozenset[int]]  # per meter: the enrolled set it was told (masked with)
    dim: int = 1
    shares_b: dict[int, int] = field(default_factory=dict)  # most b-shares that combine, per peer
    shares_z: dict[int, int] = field(default_factory=dict)  # most z-shares that combine, per peer

    def pair_mask(self, u: int, v: int) -> np.ndarray | None:
        """m_uv for this interval if the head-end can compute it (z_u or z_v known)."""
        for a, c in ((u, v), (v, u)):
            if a in self.z and a in self.pads:
                p = self.nbrs[a].index(c)
                nb = 8 * self.dim
                pad = masks.expand_many(
                    self.z[a], [(c, nb)], domain=masks.DOMAIN_RECOVERY, interval=self.interval
                )
                m = masks.xor_bytes(self.pads[a][p * nb : (p + 1) * nb], pad)
                return np.frombuffer(m, dtype="<u8").astype(np.uint64)
        return None

    def _peeled(self, u: int) -> tuple[np.ndarray, list[int]]:
        """y_u minus its self mask and every pairwise mask the head-end knows;
        also the neighbours whose mask with u is still in it."""
        val = self.y[u] - masks.expand_sum(
            [self.b[u]], self.dim, domain=masks.DOMAIN_SELF, interval=self.interval
        )
        unknown = []
        for v in self.nbrs[u]:
            if v not in self.masked_with[u]:
                continue
            m = self.pair_mask(u, v)
            if m is None:
                unknown.append(v)
            elif u < v:
                val = val - m
            else:
                val = val + m
        return val, unknown

    def learnable_sums(self) -> list[tuple[frozenset[int], tuple[int, ...]]]:
        """Every closed component and the value the head-end computes for it
        (the sum of its readings, if the meters were honest)."""
        nodes = sorted(u for u in self.y if u in self.b)
        peeled = {u: self._peeled(u) for u in nodes}
        parent = {u: u for u in nodes}

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        dangling: set[int] = set()
        for u in nodes:
            for v in peeled[u][1]:
                if v in peeled and u in peeled[v][1]:
                    parent[find(u)] = find(v)
                else:
                    dangling.add(u)  # an unknown mask no other known value cancels
        comps: dict[int, set[int]] = {}
        for u in nodes:
            comps.setdefault(find(u), set()).add(u)
        out = []
        for members in comps.values():
            if members & dangling:
                continue
            total = sum((peeled[u][0] for u in members), np.zeros(self.dim, dtype=np.uint64))
            out.append((frozenset(members), masks.to_signed(total)))
        return sorted(out, key=lambda item: sorted(item[0]))

    def unmask(self, u: int) -> tuple[int, ...] | None:
        """u's reading, if the head-end can strip every mask from y_u; else None."""
        if u not in self.y or u not in self.b:
            return None
        val, unknown = self._peeled(u)
        return None if unknown else masks.to_signed(val)


class LyingHeadEnd:
    """Honest meters, a head-end that says whatever it likes (see module doc)."""

    def __init__(
        self,
        n: int,
        *,
        min_survivors: int = 3,
        seed: int = 1,
        dim: int = 1,
        group: str = "feeder-x",
        epoch: int = 1,
        first_interval: int = 100,
    ) -> None:
        rng = random.Random(seed)
        self.group, self.epoch, self.dim, self.first_interval = group, epoch, dim, first_interval
        keys = {
            f"m{i:05d}": SigningKey.from_seed(rng.getrandbits(256).to_bytes(32, "big"))
            for i in range(n)
        }
        self.sk = SigningKey.from_seed(rng.getrandbits(256).to_bytes(32, "big"))
        registry: dict[str, VerifyKey] = {m: k.verify_key for m, k in keys.items()}
        self.roster = sorted(keys)
        self.n = n
        self.min_survivors = min_survivors
        epochs = EpochCache()  # the harness's meters share their epoch tables (speed)
        self.meters = {
            m: AggregationMeter(
                m,
                k,
                registry,
                self.sk.verify_key,
                group=group,
                epoch=epoch,
                min_survivors=min_survivors,
                dim=dim,
                rng=random.Random(rng.getrandbits(64)),
                epochs=epochs,
            )
            for m, k in keys.items()
        }
        self._ak = AgreementKey.generate(random.Random(rng.getrandbits(64)))
        self.nbrs: list[list[int]] = []
        self.degree = 0
        self.threshold = 0
        self.t = first_interval - 1
        self.inputs: dict[int, dict[int, MaskedInput]] = {}  # interval -> meter -> input
        self.told: dict[int, dict[int, View]] = {}  # interval -> meter -> view it was sent
        self.refused: dict[int, dict[int, PrivmeterError]] = {}  # interval -> meter -> error
        self.lag = 1  # a sparse graph's reveals wait one more interval, for the certificate
        self.committee: frozenset[int] = frozenset()
        self.quorum = 0
        self.digest = b""
        self.anns: dict[int, dict[int, Announcement]] = {}  # interval -> meter -> what it was shown
        # sparse: interval -> meter -> the (survivors, dropped) of the certificate it was sent
        self.decided: dict[int, dict[int, tuple[frozenset[int], frozenset[int]]]] = {}

    # -- set-up -------------------------------------------------------------------------
    def bundle(self, degree: int | None = None) -> KeyBundle:
        adverts = tuple(self.meters[m].advertise() for m in self.roster)
        nonce = bytes(16)
        head = KeyAdvert(
            group=self.group,
            epoch=self.epoch,
            party_id=HEADEND_ID,
            public=self._ak.public,
            nonce=nonce,
            signature=sign_advert(
                self.sk, self.group, self.epoch, HEADEND_ID, self._ak.public, nonce
            ),
        )
        return KeyBundle(
            group=self.group,
            epoch=self.epoch,
            first_interval=self.first_interval,
            dim=self.dim,
            degree=degree or default_degree(self.n),
            headend=head,
            adverts=adverts,
        )

    def setup(self, degree: int | None = None) -> dict[int, PrivmeterError]:
        """Send every meter a bundle with ``degree``; returns the meters that refused."""
        b = self.bundle(degree)
        self.degree = b.degree
        self.threshold = threshold_for(b.degree)
        wire = encode(b)
        refused: dict[int, PrivmeterError] = {}
        for i, m in enumerate(self.roster):
            try:
                self.meters[m].handle_bundle(wire)
            except PrivmeterError as exc:
                refused[i] = exc
        if len(refused) < self.n:  # someone accepted: the degree makes a graph
            self.nbrs = neighbours(self.n, b.degree, graph_seed(b.adverts))
            if b.degree < self.n - 1:
                self.lag = 2
                c = committee_size(self.n, b.degree)
                self.committee = frozenset(ring(self.n, graph_seed(b.adverts))[:c])
                self.quorum = quorum_for(self.n, b.degree)
                self.digest = epoch_digest(b)
        return refused

    def _certificates(self, t: int) -> dict[int, Certificate | None]:
        """Per meter, the certificate it is sent at ``t`` (sparse graphs): every
        announcement of t-1 that a quorum of the committee endorsed can be
        certified; a meter gets the one it was shown if that can, else (the
        adversary's best try) the most endorsed one that can, else none."""
        shown = self.anns.get(t - 1, {})
        inputs = self.inputs.get(t - 1, {})
        by_ann: dict[bytes, list[int]] = {}
        for w, msg in inputs.items():
            if w in self.committee and msg.endorsement:
                by_ann.setdefault(encode(shown[w]), []).append(w)
        certs: dict[bytes, Certificate] = {}
        for key, signers in by_ann.items():
            if len(signers) >= self.quorum:
                chosen = sorted(signers)[: self.quorum]
                ann = decode(key, expect=Announcement)
                assert all(inputs[w].endorsement for w in chosen)
                certs[key] = Certificate(
                    announcement=ann,
                    signers=bitmap_from(chosen, self.n),
                    signatures=b"".join(inputs[w].endorsement for w in chosen),
                )
        best = max(certs, key=lambda k: len(by_ann[k]), default=None)
        out: dict[int, Certificate | None] = {}
        for w in range(self.n):
            mine = encode(shown[w]) if w in shown else None
            pick = mine if mine in certs else best
            out[w] = certs[pick] if pick is not None else None
        return out

    # -- one interval ------------------------------------------------------------------
    def honest_view(self) -> View:
        """The announcement an honest head-end would send for the next interval."""
        prev = self.inputs.get(self.t, {})
        enrolled = frozenset(prev)
        before = self.told.get(self.t, {})
        prev_enrolled = (
            frozenset().union(*(v[0] for v in before.values())) if before else frozenset()
        )
        surv = frozenset(u for u in prev_enrolled if u in prev and prev[u].masked)
        return enrolled, surv, prev_enrolled - surv

    def _records_for(self, w: int, senders: Sequence[int], t: int) -> bytes:
        """The records for interval ``t`` that ``senders`` addressed to ``w`` (sent at t-1)."""
        rb = record_bytes(self.n, self.degree)
        src = self.inputs.get(t - 1, {})
        out = []
        for u in senders:
            p = self.nbrs[u].index(w)
            out.append(src[u].shares[p * rb : (p + 1) * rb])
        return b"".join(out)

    def interval(
        self,
        reading: Reading,
        *,
        view: View | None = None,
        per_meter: Mapping[int, View] | None = None,
        offline: Sequence[int] = (),
    ) -> int:
        """Run the next interval with the announcement ``view`` (default: the
        honest one), or ``per_meter[w]`` for meter w; returns the interval."""
        base = view if view is not None else self.honest_view()
        self.t += 1
        t = self.t
        self.inputs[t], self.told[t], self.refused[t] = {}, {}, {}
        self.anns[t], self.decided[t] = {}, {}
        certs = self._certificates(t) if self.lag == 2 else {}
        for w, mid in enumerate(self.roster):
            if w in offline:
                continue
            enrolled, surv, drop = (per_meter or {}).get(w, base)
            ann = Announcement(
                group=self.group,
                epoch=self.epoch,
                interval=t,
                roster_size=self.n,
                enrolled=bitmap_from(enrolled, self.n),
                survivors=bitmap_from(surv, self.n),
                dropped=bitmap_from(drop, self.n),
            )
            senders = [u for u in self.nbrs[w] if u in enrolled and u in self.inputs.get(t - 1, {})]
            cert = certs.get(w)
            start = IntervalStart(
                announcement=ann,
                signature=self.sk.sign(ANNOUNCE_CONTEXT, encode(ann)),
                certificate=cert,
                shares=self._records_for(w, senders, t),
            )
            self.told[t][w] = (enrolled, surv, drop)
            self.anns[t][w] = ann
            if cert is not None:
                ca = cert.announcement
                self.decided[t][w] = (
                    bitmap_to_set(ca.survivors, self.n),
                    bitmap_to_set(ca.dropped, self.n),
                )
            try:
                out = self.meters[mid].handle_start(encode(start), reading(mid, t))
            except PrivmeterError as exc:
                self.refused[t][w] = exc
                continue
            self.inputs[t][w] = decode(encode(out), expect=MaskedInput)
        return t

    # -- what it learnt ------------------------------------------------------------------
    def knowledge(self, t: int) -> Knowledge:
        """Everything the head-end holds about interval ``t`` once the reveals
        for it (sent in interval t+lag) are in."""
        ys = {
            u: np.array(msg.masked, dtype=np.uint64)
            for u, msg in self.inputs.get(t, {}).items()
            if msg.masked
        }
        pads = {u: msg.recovery for u, msg in self.inputs.get(t - 1, {}).items()}
        masked_with = {u: v[0] for u, v in self.told.get(t, {}).items()}
        # shares by (peer, announcement the holder saw): in a complete graph a
        # reveal is padded under its announcement and only combines with reveals
        # made under the same one; in a sparse graph b-shares are padded by the
        # holder's enrolled set of t (z-shares are not padded: all combine)
        dense = self.degree >= self.n - 1
        lag = self.lag
        pts_b: dict[tuple[int, View | None], list[tuple[int, int]]] = {}
        pts_z: dict[tuple[int, View | None], list[tuple[int, int]]] = {}
        for w, msg in self.inputs.get(t + lag, {}).items():
            if msg.reveal_interval != t:
                continue
            enrolled_w = self.told[t][w][0] if w in self.told.get(t, {}) else frozenset()
            sent_before = self.inputs.get(t - 1, {})
            held = sorted(
                {u for u in self.nbrs[w] if u in enrolled_w and u in sent_before}
                | ({w} if w in enrolled_w else set())
            )
            seen = self.told[t + 1][w] if dense else None
            surv_w = seen[1] if seen is not None else self.decided[t + lag][w][0]
            for k, u in enumerate(held):
                y = int.from_bytes(msg.reveals[k * _S : (k + 1) * _S], "big")
                if u in surv_w:
                    pts_b.setdefault(
                        (u, seen or (enrolled_w, frozenset(), frozenset())), []
                    ).append((w + 1, y))
                else:
                    pts_z.setdefault((u, seen), []).append((w + 1, y))
        thr = self.threshold
        b = {
            u: shamir.reconstruct(p, thr).to_bytes(16, "big")
            for (u, _), p in pts_b.items()
            if len(p) >= thr
        }
        z = {
            u: shamir.reconstruct(p, thr).to_bytes(16, "big")
            for (u, _), p in pts_z.items()
            if len(p) >= thr
        }
        return Knowledge(
            interval=t,
            n=self.n,
            nbrs=self.nbrs,
            y=ys,
            b=b,
            z=z,
            pads=pads,
            masked_with=masked_with,
            dim=self.dim,
            shares_b={u: max(len(p) for (v, _), p in pts_b.items() if v == u) for u, _ in pts_b},
            shares_z={u: max(len(p) for (v, _), p in pts_z.items() if v == u) for u, _ in pts_z},
        )
