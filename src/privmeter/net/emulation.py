"""Network emulation inside the transport: latency, jitter, loss, bandwidth, outages.

What it is for: the protocols' dropout handling has to be exercised for
real, over real sockets, on one machine.  A :class:`NetworkEmulator` given to
:class:`privmeter.net.transport.Server` (or to ``connect``) decides, for
every record a connection sends or receives on a link, whether it is lost
and when it is delivered, and it says when a peer is in an outage.

Model (per peer, per direction -- ``"up"`` peer -> head-end, ``"down"``
head-end -> peer -- each with its own seeded random stream):

* bandwidth: a record of ``n`` bytes occupies the link for ``8 n / bandwidth_bps``
  seconds after the link is free (``None`` = unlimited);
* latency and jitter: it then takes ``max(0, latency + N(0, jitter))``
  milliseconds to arrive;
* ordering: TCP delivers in order, so a record is never delivered before
  the one sent ahead of it (delays queue up behind a slow record);
* loss: with probability ``loss`` the record is dropped.  TCP itself never
  loses data, so loss is emulated at the message level: a lost request is
  never answered, a lost push never arrives.  Protocols must cope (timeouts,
  retries, dropout recovery) exactly as they would with a meter that went
  quiet;
* outages: scheduled windows ``[start, end)`` per peer and random outages
  (exponential time between failures and exponential repair time, seeded
  per peer).  While a peer is down the server refuses its connections
  (closed right after the handshake) and closes the one it has when the
  outage begins.

Times are seconds since the transport started (the caller passes ``now``;
nothing here reads a clock).  Guarantee: every decision is a deterministic
function of (seed, peer, direction, index of the record on that link) and
``now``; the random draws for record *i* do not depend on other links or
on wall-clock timing, so runs with the same seed lose the same messages.
Security assumption: none -- this is a test and simulation instrument,
never enabled in a deployment by default.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from privmeter.errors import InvalidArgument

__all__ = [
    "DIRECTIONS",
    "Decision",
    "LinkProfile",
    "NetworkEmulator",
    "OutageSchedule",
]

DIRECTIONS = ("up", "down")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    """One link's behaviour (applied independently to each direction)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_bps: float | None = None

    def __post_init__(self) -> None:
        if not all(math.isfinite(x) and x >= 0 for x in (self.latency_ms, self.jitter_ms)):
            raise InvalidArgument("latency and jitter must be finite and >= 0 ms")
        if not 0.0 <= self.loss <= 1.0:
            raise InvalidArgument(f"loss must be a probability, got {self.loss!r}")
        if self.bandwidth_bps is not None and not self.bandwidth_bps > 0:
            raise InvalidArgument("bandwidth must be > 0 bit/s (or None for unlimited)")

    @property
    def is_ideal(self) -> bool:
        return (
            self.latency_ms == 0
            and self.jitter_ms == 0
            and self.loss == 0
            and self.bandwidth_bps is None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutageSchedule:
    """When peers are unreachable.

    ``windows`` maps a peer id to scheduled ``(start_s, end_s)`` windows.
    ``mtbf_s`` (mean time between failures) enables random outages with mean
    duration ``mttr_s``, for every peer or only those in ``random_peers``.
    """

    windows: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    mtbf_s: float | None = None
    mttr_s: float = 60.0
    random_peers: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for peer, ws in self.windows.items():
            for start, end in ws:
                if not 0 <= start < end:
                    raise InvalidArgument(
                        f"outage window {(start, end)!r} of {peer!r} is empty or negative"
                    )
        if self.mtbf_s is not None and not self.mtbf_s > 0:
            raise InvalidArgument("mtbf_s must be > 0")
        if not self.mttr_s > 0:
            raise InvalidArgument("mttr_s must be > 0")


@dataclass(frozen=True, slots=True)
class Decision:
    """The fate of one record: dropped, or delivered at ``deliver_at`` (seconds)."""

    index: int
    drop: bool
    deliver_at: float


def _rng(seed: int, *parts: str) -> random.Random:
    h = hashlib.sha256(str(seed).encode() + b"".join(b"\x00" + p.encode() for p in parts)).digest()
    return random.Random(int.from_bytes(h[:16], "big"))


class _LinkState:
    __slots__ = ("busy_until", "index", "last_delivery", "rng")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.index = 0
        self.busy_until = 0.0
        self.last_delivery = 0.0


class _Outages:
    """Random outage windows for one peer, generated lazily and deterministically."""

    __slots__ = ("mtbf", "mttr", "rng", "t", "windows")

    def __init__(self, rng: random.Random, mtbf: float, mttr: float) -> None:
        self.rng = rng
        self.mtbf = mtbf
        self.mttr = mttr
        self.t = 0.0
        self.windows: list[tuple[float, float]] = []

    def until(self, horizon: float) -> list[tuple[float, float]]:
        while self.t <= horizon:
            start = self.t + self.rng.expovariate(1.0 / self.mtbf)
            end = start + self.rng.expovariate(1.0 / self.mttr)
            self.windows.append((start, end))
            self.t = end
        return self.windows


class NetworkEmulator:
    """Seeded per-link decisions for the transport (see the module docstring)."""

    __slots__ = ("_links", "_random_outages", "default", "outages", "profiles", "seed")

    def __init__(
        self,
        default: LinkProfile | None = None,
        *,
        links: Mapping[str, LinkProfile] | None = None,
        outages: OutageSchedule | None = None,
        seed: int = 0,
    ) -> None:
        self.default = default if default is not None else LinkProfile()
        self.profiles: dict[str, LinkProfile] = dict(links or {})
        self.outages = outages if outages is not None else OutageSchedule()
        self.seed = seed
        self._links: dict[tuple[str, str], _LinkState] = {}
        self._random_outages: dict[str, _Outages] = {}

    def profile(self, peer: str) -> LinkProfile:
        return self.profiles.get(peer, self.default)

    def decide(self, peer: str, direction: str, nbytes: int, now: float) -> Decision:
        """The fate of the next record of ``nbytes`` on ``peer``'s ``direction`` link."""
        if direction not in DIRECTIONS:
            raise InvalidArgument(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        key = (peer, direction)
        st = self._links.get(key)
        if st is None:
            st = self._links[key] = _LinkState(_rng(self.seed, "link", peer, direction))
        p = self.profile(peer)
        # Always two draws per record, so record i's fate depends only on i.
        u_loss = st.rng.random()
        z = st.rng.gauss(0.0, 1.0)
        index = st.index
        st.index += 1
        if u_loss < p.loss:
            return Decision(index, True, now)
        start = max(now, st.busy_until)
        if p.bandwidth_bps is not None:
            start += 8.0 * nbytes / p.bandwidth_bps
        st.busy_until = start
        delay = max(0.0, p.latency_ms + p.jitter_ms * z) / 1000.0
        at = max(start + delay, st.last_delivery)
        st.last_delivery = at
        return Decision(index, False, at)

    # -- outages ------------------------------------------------------------------

    def _random_for(self, peer: str) -> _Outages | None:
        o = self.outages
        if o.mtbf_s is None or (o.random_peers is not None and peer not in o.random_peers):
            return None
        r = self._random_outages.get(peer)
        if r is None:
            r = self._random_outages[peer] = _Outages(
                _rng(self.seed, "outage", peer), o.mtbf_s, o.mttr_s
            )
        return r

    def windows(self, peer: str, until: float) -> list[tuple[float, float]]:
        """Every outage window of ``peer`` starting before ``until``, sorted."""
        ws = [w for w in self.outages.windows.get(peer, ()) if w[0] < until]
        r = self._random_for(peer)
        if r is not None:
            ws.extend(w for w in r.until(until) if w[0] < until)
        return sorted(ws)

    def is_down(self, peer: str, now: float) -> bool:
        """Whether ``peer`` is in an outage at ``now``."""
        return any(start <= now < end for start, end in self.windows(peer, now + 1e-9))

    def next_outage(self, peer: str, now: float, horizon: float = 86400.0) -> float | None:
        """Start of the next outage of ``peer`` after ``now`` (within ``horizon`` s), or None."""
        for start, _end in self.windows(peer, now + horizon):
            if start > now:
                return start
        return None

    def stats(self) -> dict[str, int]:
        """Records decided per link, for reports (``"peer/direction" -> count``)."""
        return {f"{p}/{d}": st.index for (p, d), st in sorted(self._links.items())}
