"""Sans-IO authenticated key exchange (SIGMA-I style) for privmeter connections.

What it is for: before any application message, the two ends of a TCP
connection agree fresh channel keys and prove their long-term Ed25519
identities (:mod:`privmeter.crypto.signing`) to each other.  The server (the
head-end) accepts only identities its trust store maps to a party id (the
registered meters, households, concentrators); a client accepts only the
head-end key it was configured with.

Flow (each arrow one PLAIN frame: ``0x00 | codec message``)::

    C -> S  net.hello        {versions, ephemeral e_C}
    S -> C  net.server_hello {version, ephemeral e_S,
                              sealed = AEAD(k_hs_S, net.auth{id_S, sig_S})}
    C -> S  net.client_auth  {sealed = AEAD(k_hs_C, net.auth{id_C, sig_C})}
    (then sealed records, :mod:`privmeter.net.channel`)

    dh    = X25519(e, E)
    th0   = SHA256("privmeter/net/handshake/v1" || hello frame)
    th_a  = SHA256(th0 || version u16 || e_S)
    k_hs_S, k_hs_C   = HKDF-SHA256(dh, salt=th_a, info="privmeter/net/hs/v1")
    sig_S = Ed25519_S("privmeter/net/hs/server/v1", th_a || id_S)
    th_b  = SHA256(th_a || sealed_S)
    sig_C = Ed25519_C("privmeter/net/hs/client/v1", th_b || id_S || id_C)
    th_c  = SHA256(th_b || sealed_C)              (the session id)
    k_C2S, k_S2C     = HKDF-SHA256(dh, salt=th_c, info="privmeter/net/app/v1")

Every AEAD here is ChaCha20-Poly1305 with a zero nonce (each handshake key
is used exactly once) and the current transcript hash as associated data.

Security assumptions: CDH in Curve25519, Ed25519 unforgeability, HKDF-SHA256
as a KDF, ChaCha20-Poly1305 as an AEAD, and an honest random source for the
ephemeral keys.  Guarantees: mutual authentication (each signature covers
both ephemerals and the signer's own identity, the client's also the
server's, so no identity misbinding); forward secrecy (only ephemeral keys
enter the channel keys); the client's identity is hidden even from an active
attacker (it is sent only after the server proved its identity, encrypted),
the server's from passive observers; every handshake failure raises a
specific error from :mod:`privmeter.errors` and leaves no usable keys.
Protocol version: the client lists the versions it speaks; the server picks
the highest it also speaks or fails with
:class:`~privmeter.errors.UnsupportedVersion`.

States (transitions as data, after h11)::

    client: START --start()--> SENT_HELLO --receive(server_hello)--> DONE
    server: WAIT_HELLO --receive(hello)--> WAIT_AUTH --receive(client_auth)--> DONE
    any error -> ERROR (terminal)
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privmeter.crypto.numtheory import SYSTEM_RNG, RandomSource
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    InvalidArgument,
    InvalidCiphertext,
    InvalidKey,
    LocalProtocolError,
    PrivmeterError,
    UnexpectedMessage,
    UnknownParty,
    UnsupportedVersion,
)
from privmeter.net.channel import PLAIN, Channel, ErrorMessage, remote_error
from privmeter.protocol.codec import decode, encode, message

__all__ = [
    "HANDSHAKE_MAX_FRAME",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "ClientAuth",
    "ClientHandshake",
    "ClientHello",
    "HandshakeResult",
    "ServerHandshake",
    "ServerHello",
    "Trust",
    "TrustStore",
    "plain_frame",
    "read_plain",
    "trust_key",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
HANDSHAKE_MAX_FRAME = 4096  # a handshake frame is < 300 bytes; unauthenticated peers get no more
EPHEMERAL_BYTES = 32
_LABEL = b"privmeter/net/handshake/v1"
_HS_INFO = b"privmeter/net/hs/v1"
_APP_INFO = b"privmeter/net/app/v1"
_SIG_SERVER = b"privmeter/net/hs/server/v1"
_SIG_CLIENT = b"privmeter/net/hs/client/v1"
_ZERO_NONCE = bytes(12)

Trust = Callable[[VerifyKey], "str | None"]
"""Maps a proven Ed25519 identity to a party id, or ``None`` if not trusted."""


# -- messages ---------------------------------------------------------------------


def _check_eph(value: bytes) -> None:
    if len(value) != EPHEMERAL_BYTES:
        raise InvalidArgument(f"ephemeral key must be {EPHEMERAL_BYTES} bytes")


@message("net.hello")
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    versions: tuple[int, ...]
    ephemeral: bytes

    def __post_init__(self) -> None:
        if not 1 <= len(self.versions) <= 16 or not all(0 < v < 1 << 16 for v in self.versions):
            raise InvalidArgument("versions must be 1..16 integers in [1, 65535]")
        _check_eph(self.ephemeral)


@message("net.server_hello")
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHello:
    version: int
    ephemeral: bytes
    sealed: bytes

    def __post_init__(self) -> None:
        if not 0 < self.version < 1 << 16:
            raise InvalidArgument("version out of range")
        _check_eph(self.ephemeral)
        if not 16 < len(self.sealed) <= 512:
            raise InvalidArgument("sealed identity block has a wrong size")


@message("net.client_auth")
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuth:
    sealed: bytes

    def __post_init__(self) -> None:
        if not 16 < len(self.sealed) <= 512:
            raise InvalidArgument("sealed identity block has a wrong size")


@message("net.auth")
@dataclass(frozen=True, slots=True, kw_only=True)
class _Auth:
    """Inside a sealed block: an Ed25519 identity and its transcript signature."""

    identity: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.identity) != 32 or len(self.signature) != 64:
            raise InvalidArgument("identity must be 32 bytes and signature 64")


# -- helpers ----------------------------------------------------------------------


def plain_frame(msg: Any) -> bytes:
    """A PLAIN frame payload: ``0x00 | codec message``."""
    return bytes([PLAIN]) + encode(msg)


def read_plain(payload: bytes, expect: type[Any], what: str) -> Any:
    """Decode a PLAIN frame payload; a ``net.error`` from the peer is raised as its error."""
    if not payload or payload[0] != PLAIN:
        raise UnexpectedMessage(f"expected a plain handshake frame from the {what}")
    msg = decode(payload[1:], max_bytes=HANDSHAKE_MAX_FRAME)
    if isinstance(msg, ErrorMessage):
        raise remote_error(msg.code, what)
    if type(msg) is not expect:
        raise UnexpectedMessage(
            f"expected {expect.__name__} from the {what}, got {type(msg).__name__}"
        )
    return msg


def trust_key(key: VerifyKey, party_id: str) -> Trust:
    """A trust function that accepts exactly ``key`` (as ``party_id``)."""

    def trust(candidate: VerifyKey) -> str | None:
        return party_id if candidate.raw == key.raw else None

    return trust


class TrustStore:
    """A mutable Ed25519 key -> party id map, usable as a :data:`Trust` callable."""

    __slots__ = ("_by_key",)

    def __init__(self, entries: Iterable[tuple[VerifyKey, str]] = ()) -> None:
        self._by_key: dict[bytes, str] = {}
        for key, pid in entries:
            self.add(key, pid)

    def add(self, key: VerifyKey, party_id: str) -> None:
        self._by_key[key.raw] = party_id

    def remove(self, key: VerifyKey) -> None:
        self._by_key.pop(key.raw, None)

    def __call__(self, key: VerifyKey) -> str | None:
        return self._by_key.get(key.raw)

    def __len__(self) -> int:
        return len(self._by_key)


def _ephemeral(rng: RandomSource) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(rng.getrandbits(256).to_bytes(32, "little"))


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dh(key: X25519PrivateKey, peer: bytes) -> bytes:
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:  # low-order point: all-zero shared secret
        raise InvalidKey("peer ephemeral key is a low-order X25519 point") from None


def _kdf(secret: bytes, salt: bytes, info: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=info).derive(secret)
    return okm[:32], okm[32:]


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _open_auth(key: bytes, sealed: bytes, aad: bytes, what: str) -> _Auth:
    try:
        inner = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, sealed, aad)
    except InvalidTag:
        raise InvalidCiphertext(f"{what} identity block failed authentication") from None
    auth: _Auth = decode(inner, max_bytes=HANDSHAKE_MAX_FRAME, expect=_Auth)
    return auth


def _seal_auth(key: bytes, auth: _Auth, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, encode(auth), aad)


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What a completed handshake yields."""

    peer_id: str
    peer_key: VerifyKey
    version: int
    session_id: bytes  # th_c: unique per connection, both ends agree on it
    send_key: bytes
    recv_key: bytes

    def channel(self) -> Channel:
        return Channel(self.send_key, self.recv_key)


class _State(enum.Enum):
    START = "start"
    SENT_HELLO = "sent-hello"
    WAIT_HELLO = "wait-hello"
    WAIT_AUTH = "wait-auth"
    DONE = "done"
    ERROR = "error"


class _Base:
    __slots__ = ("_dh", "_eph", "_identity", "_rng", "_state", "_th", "_trust", "result")

    def __init__(
        self, identity: SigningKey, trust: Trust, rng: RandomSource, state: _State
    ) -> None:
        self._identity = identity
        self._trust = trust
        self._rng = rng
        self._state = state
        self._eph: X25519PrivateKey | None = None
        self._dh = b""
        self._th = b""
        self.result: HandshakeResult | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def failed(self) -> bool:
        return self._state is _State.ERROR

    def _expect(self, state: _State, action: str) -> None:
        if self._state is not state:
            raise LocalProtocolError(f"cannot {action} in handshake state {self._state.value!r}")

    def _trusted(self, key: VerifyKey, what: str) -> str:
        pid = self._trust(key)
        if pid is None:
            raise UnknownParty(f"{what} identity {key.hex()[:16]}... is not trusted")
        return pid


class ClientHandshake(_Base):
    """The connecting side (meter, household, concentrator)."""

    __slots__ = ("_hello", "_versions")

    def __init__(
        self,
        identity: SigningKey,
        trust: Trust,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        rng: RandomSource = SYSTEM_RNG,
    ) -> None:
        super().__init__(identity, trust, rng, _State.START)
        self._versions = versions
        self._hello = b""

    def start(self) -> bytes:
        """The first frame payload to send (``net.hello``)."""
        self._expect(_State.START, "start")
        self._eph = _ephemeral(self._rng)
        self._hello = plain_frame(
            ClientHello(versions=self._versions, ephemeral=_public(self._eph))
        )
        self._th = _h(_LABEL, self._hello)
        self._state = _State.SENT_HELLO
        return self._hello

    def receive(self, payload: bytes) -> bytes:
        """Process ``net.server_hello``; return the ``net.client_auth`` frame payload.

        On success :attr:`result` holds the peer and the channel keys.
        """
        self._expect(_State.SENT_HELLO, "receive")
        try:
            out = self._receive(payload)
        except PrivmeterError:
            self._state = _State.ERROR
            raise
        self._state = _State.DONE
        return out

    def _receive(self, payload: bytes) -> bytes:
        sh: ServerHello = read_plain(payload, ServerHello, "server")
        if sh.version not in self._versions:
            raise UnsupportedVersion(
                f"server chose version {sh.version}, we offered {self._versions}"
            )
        if self._eph is None:
            raise LocalProtocolError("a server hello before our client hello")
        dh = _dh(self._eph, sh.ephemeral)
        th_a = _h(self._th, struct.pack(">H", sh.version), sh.ephemeral)
        k_hs_s, k_hs_c = _kdf(dh, th_a, _HS_INFO)
        auth = _open_auth(k_hs_s, sh.sealed, th_a, "server")
        server_key = VerifyKey(auth.identity)
        peer_id = self._trusted(server_key, "server")
        server_key.verify(_SIG_SERVER, th_a + auth.identity, auth.signature)
        th_b = _h(th_a, sh.sealed)
        me = self._identity.verify_key.raw
        sig = self._identity.sign(_SIG_CLIENT, th_b + auth.identity + me)
        sealed = _seal_auth(k_hs_c, _Auth(identity=me, signature=sig), th_b)
        th_c = _h(th_b, sealed)
        k_c2s, k_s2c = _kdf(dh, th_c, _APP_INFO)
        self.result = HandshakeResult(
            peer_id=peer_id,
            peer_key=server_key,
            version=sh.version,
            session_id=th_c,
            send_key=k_c2s,
            recv_key=k_s2c,
        )
        self._eph = None
        return plain_frame(ClientAuth(sealed=sealed))


class ServerHandshake(_Base):
    """The accepting side (the head-end)."""

    __slots__ = ("_k_hs_c", "_server_versions", "_version")

    def __init__(
        self,
        identity: SigningKey,
        trust: Trust,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        rng: RandomSource = SYSTEM_RNG,
    ) -> None:
        super().__init__(identity, trust, rng, _State.WAIT_HELLO)
        self._version = 0
        self._k_hs_c = b""
        self._server_versions = versions

    def receive(self, payload: bytes) -> bytes | None:
        """``net.hello`` -> the ``net.server_hello`` payload; ``net.client_auth`` -> ``None``.

        After the second call :attr:`result` names the client (its party id
        from the trust store) and holds the channel keys.
        """
        step: Callable[[bytes], bytes | None]
        if self._state is _State.WAIT_HELLO:
            step = self._hello
        elif self._state is _State.WAIT_AUTH:
            step = self._auth
        else:
            raise LocalProtocolError(f"cannot receive in handshake state {self._state.value!r}")
        try:
            return step(payload)
        except PrivmeterError:
            self._state = _State.ERROR
            raise

    def _hello(self, payload: bytes) -> bytes:
        hello: ClientHello = read_plain(payload, ClientHello, "client")
        common = set(hello.versions) & set(self._server_versions)
        if not common:
            raise UnsupportedVersion(
                f"client speaks versions {hello.versions}, we speak {self._server_versions}"
            )
        self._version = max(common)
        self._eph = _ephemeral(self._rng)
        eph_pub = _public(self._eph)
        self._dh = _dh(self._eph, hello.ephemeral)
        self._eph = None
        th_a = _h(_h(_LABEL, payload), struct.pack(">H", self._version), eph_pub)
        k_hs_s, self._k_hs_c = _kdf(self._dh, th_a, _HS_INFO)
        me = self._identity.verify_key.raw
        sig = self._identity.sign(_SIG_SERVER, th_a + me)
        sealed = _seal_auth(k_hs_s, _Auth(identity=me, signature=sig), th_a)
        self._th = _h(th_a, sealed)
        self._state = _State.WAIT_AUTH
        return plain_frame(ServerHello(version=self._version, ephemeral=eph_pub, sealed=sealed))

    def _auth(self, payload: bytes) -> None:
        ca: ClientAuth = read_plain(payload, ClientAuth, "client")
        th_b = self._th
        auth = _open_auth(self._k_hs_c, ca.sealed, th_b, "client")
        client_key = VerifyKey(auth.identity)
        peer_id = self._trusted(client_key, "client")
        client_key.verify(
            _SIG_CLIENT, th_b + self._identity.verify_key.raw + auth.identity, auth.signature
        )
        th_c = _h(th_b, ca.sealed)
        k_c2s, k_s2c = _kdf(self._dh, th_c, _APP_INFO)
        self.result = HandshakeResult(
            peer_id=peer_id,
            peer_key=client_key,
            version=self._version,
            session_id=th_c,
            send_key=k_s2c,
            recv_key=k_c2s,
        )
        self._dh = b""
        self._state = _State.DONE
        return None
