"""The secure channel: sealed records inside frames, and end-to-end relay sealing.

What it is for: after the handshake (:mod:`privmeter.net.handshake`) both
ends hold two ChaCha20-Poly1305 keys, one per direction.  Every frame after
that is a *sealed record*; inside it is a *body* carrying one or more
:mod:`privmeter.protocol.codec` messages.  Frame payload layouts (first byte
says which)::

    PLAIN  = 0x00 | codec message                      (handshake and pre-channel errors only)
    SEALED = 0x01 | counter u64 BE | AEAD ciphertext+tag(16)

    AEAD = ChaCha20-Poly1305(key = this direction's key,
                             nonce = 0x00000000 | counter u64 BE,
                             aad = 0x01 | counter u64 BE)

    body (the plaintext) = kind u8 | ref u32 BE | (len u32 BE | codec message)*
        kind 0 = push (one-way), 1 = request (ref = request id), 2 = reply (ref = that id)

Security assumption: ChaCha20-Poly1305 is a secure AEAD (RFC 8439) and the
handshake produced fresh, secret, direction-separated keys.  Guarantees:
confidentiality and integrity of every record; each record is accepted only
at its exact position in the stream (the counter must be the next one
expected: an older counter is a replay, :class:`~privmeter.errors.ReplayedMessage`;
a newer one means records were dropped or reordered,
:class:`~privmeter.errors.UnexpectedMessage`; a bad tag is
:class:`~privmeter.errors.InvalidCiphertext`); a record cannot be reflected
back to its sender (the other direction has another key).  On any of these
the channel's state is unchanged and the transport closes the connection.

Relay (meter-to-meter payloads through the head-end): :class:`RelayCipher`
seals a payload end to end under a pairwise key both meters derive with
:class:`privmeter.crypto.keyagreement.AgreementKey` (X25519 + HKDF, public
keys signed by the meter keys, so the head-end cannot sit in the middle).
The relay key is a separate HKDF subkey of that pairwise key, so it never
shares nonces with other uses of the pair's AEAD key.  Associated data is
(sender, recipient, context): the head-end cannot redirect an envelope to
another meter, swap its sender or replay it under another protocol step; it
learns only who talks to whom, when, and how much.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privmeter.crypto.numtheory import SYSTEM_RNG, RandomSource
from privmeter.errors import (
    InvalidArgument,
    InvalidCiphertext,
    InvalidKey,
    LocalProtocolError,
    MalformedMessage,
    PrivmeterError,
    RemoteProtocolError,
    ReplayedMessage,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.protocol.codec import message

__all__ = [
    "KEY_BYTES",
    "KIND_PUSH",
    "KIND_REPLY",
    "KIND_REQUEST",
    "PLAIN",
    "SEALED",
    "TAG_BYTES",
    "Channel",
    "ErrorMessage",
    "RelayCipher",
    "RelayEnvelope",
    "error_for_code",
    "pack_body",
    "remote_error",
    "unpack_body",
]

PLAIN = 0x00
SEALED = 0x01
KEY_BYTES = 32
TAG_BYTES = 16
MAX_COUNTER = (1 << 64) - 1  # 2^64 records per direction: never reached; we refuse rather than wrap
KIND_PUSH = 0
KIND_REQUEST = 1
KIND_REPLY = 2
_KINDS = (KIND_PUSH, KIND_REQUEST, KIND_REPLY)
_RECORD_HEADER = struct.Struct(">BQ")  # type, counter
_BODY_HEADER = struct.Struct(">BI")  # kind, ref
_LEN = struct.Struct(">I")
_NONCE_PAD = b"\x00\x00\x00\x00"


class Channel:
    """One connection's record layer: seal outgoing bodies, open incoming ones."""

    __slots__ = ("_recv", "_recv_ctr", "_send", "_send_ctr")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        for k in (send_key, recv_key):
            if not isinstance(k, bytes) or len(k) != KEY_BYTES:
                raise InvalidKey(f"channel keys must be {KEY_BYTES} bytes")
        if send_key == recv_key:
            raise InvalidKey("channel keys must differ per direction")
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._send_ctr = 0
        self._recv_ctr = 0

    @property
    def sent(self) -> int:
        """Records sealed so far (= the next outgoing counter)."""
        return self._send_ctr

    @property
    def received(self) -> int:
        """Records accepted so far (= the next expected counter)."""
        return self._recv_ctr

    def seal(self, body: bytes) -> bytes:
        """A SEALED frame payload carrying ``body``; advances the send counter."""
        ctr = self._send_ctr
        if ctr >= MAX_COUNTER:
            raise LocalProtocolError("record counter exhausted; open a new connection")
        header = _RECORD_HEADER.pack(SEALED, ctr)
        ct = self._send.encrypt(_NONCE_PAD + header[1:], body, header)
        self._send_ctr = ctr + 1
        return header + ct

    def open(self, payload: bytes) -> bytes:
        """The body of a SEALED frame payload; advances the receive counter.

        Raises (state unchanged): :class:`~privmeter.errors.UnexpectedMessage`
        for a frame that is not SEALED or is ahead of the expected counter,
        :class:`~privmeter.errors.ReplayedMessage` for an old counter,
        :class:`~privmeter.errors.MalformedMessage` for a too-short record and
        :class:`~privmeter.errors.InvalidCiphertext` for a failed tag.
        """
        if len(payload) < _RECORD_HEADER.size + TAG_BYTES:
            if payload[:1] not in (b"", bytes([SEALED])):
                raise UnexpectedMessage(
                    f"expected a sealed record, got frame type {payload[0]:#04x}"
                )
            raise MalformedMessage(f"sealed record of {len(payload)} bytes is too short")
        kind, ctr = _RECORD_HEADER.unpack_from(payload)
        if kind != SEALED:
            raise UnexpectedMessage(f"expected a sealed record, got frame type {kind:#04x}")
        if ctr < self._recv_ctr:
            raise ReplayedMessage(f"record counter {ctr} already seen (expected {self._recv_ctr})")
        if ctr > self._recv_ctr:
            raise UnexpectedMessage(
                f"record counter {ctr} out of order (expected {self._recv_ctr})"
            )
        header = payload[: _RECORD_HEADER.size]
        try:
            body = self._recv.decrypt(
                _NONCE_PAD + header[1:], payload[_RECORD_HEADER.size :], header
            )
        except InvalidTag:
            raise InvalidCiphertext(f"record {ctr} failed authentication") from None
        self._recv_ctr = ctr + 1
        return body


def pack_body(kind: int, ref: int, messages: Sequence[bytes]) -> bytes:
    """Body bytes: ``kind | ref | (len | codec message)*``."""
    if kind not in _KINDS:
        raise InvalidArgument(f"unknown body kind {kind!r}")
    if not 0 <= ref <= 0xFFFFFFFF:
        raise InvalidArgument(f"request reference {ref!r} out of u32 range")
    parts = [_BODY_HEADER.pack(kind, ref)]
    for m in messages:
        parts.append(_LEN.pack(len(m)))
        parts.append(m)
    return b"".join(parts)


def unpack_body(body: bytes) -> tuple[int, int, list[bytes]]:
    """``(kind, ref, [codec message bytes, ...])``; MalformedMessage if inconsistent."""
    if len(body) < _BODY_HEADER.size:
        raise MalformedMessage(f"record body of {len(body)} bytes is too short")
    kind, ref = _BODY_HEADER.unpack_from(body)
    if kind not in _KINDS:
        raise MalformedMessage(f"unknown record kind {kind!r}")
    out: list[bytes] = []
    pos = _BODY_HEADER.size
    end = len(body)
    while pos < end:
        if end - pos < _LEN.size:
            raise MalformedMessage("record body truncated inside a message length")
        (n,) = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        if n > end - pos:
            raise MalformedMessage(f"record body announces {n} bytes, has {end - pos}")
        out.append(bytes(body[pos : pos + n]))
        pos += n
    if kind != KIND_REPLY and not out:
        raise MalformedMessage("push or request record without a message")
    return kind, ref, out


# -- control messages ---------------------------------------------------------------


@message("net.error")
@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """What a party tells a peer that broke the rules: the error's ``code`` only.

    The details (what was expected, what came) go to the sender's log, never
    to the untrusted peer.
    """

    code: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.code) <= 64:
            raise InvalidArgument("error code must be 1..64 characters")


def _error_classes() -> dict[str, type[PrivmeterError]]:
    out: dict[str, type[PrivmeterError]] = {}
    stack: list[type[PrivmeterError]] = [PrivmeterError]
    while stack:
        cls = stack.pop()
        out.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return out


def error_for_code(code: str) -> type[PrivmeterError]:
    """The error class whose ``code`` is ``code``; :class:`RemoteProtocolError` if unknown."""
    cls = _error_classes().get(code)
    return cls if cls is not None else RemoteProtocolError


def remote_error(code: str, what: str = "peer") -> PrivmeterError:
    """An exception instance for an error code received from ``what``."""
    return error_for_code(code)(f"{what} answered with error {code!r}", remote_code=code)


# -- end-to-end relay -------------------------------------------------------------

RELAY_NONCE_BYTES = 12
_RELAY_INFO = b"privmeter/net/relay/v1"


@message("net.relay")
@dataclass(frozen=True, slots=True, kw_only=True)
class RelayEnvelope:
    """A payload sealed end to end from ``sender`` to ``recipient``; the relay reads only the ids."""

    sender: str
    recipient: str
    context: str
    nonce: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        for name in ("sender", "recipient", "context"):
            v = getattr(self, name)
            if not 1 <= len(v) <= 256:
                raise InvalidArgument(f"{name} must be 1..256 characters")
        if len(self.nonce) != RELAY_NONCE_BYTES:
            raise InvalidArgument(f"nonce must be {RELAY_NONCE_BYTES} bytes")
        if len(self.ciphertext) < TAG_BYTES:
            raise InvalidArgument("ciphertext shorter than its tag")


def _relay_aad(sender: str, recipient: str, context: str) -> bytes:
    return _RELAY_INFO + b"".join(
        _LEN.pack(len(p)) + p for p in (sender.encode(), recipient.encode(), context.encode())
    )


class RelayCipher:
    """End-to-end sealing between two named parties over a relaying head-end.

    ``shared_key`` is a 32-byte pairwise secret (e.g. ``PairSecrets.aead_key``
    from :meth:`privmeter.crypto.keyagreement.AgreementKey.agree`); a relay
    subkey is derived from it with HKDF-SHA256.  Nonces are 96 random bits
    (fine for far fewer than 2^32 envelopes per key; keys change per epoch);
    :meth:`open` rejects a nonce it has already accepted (replay).
    """

    __slots__ = ("_aead", "_seen", "me", "peer")

    def __init__(self, shared_key: bytes, *, me: str, peer: str) -> None:
        if not isinstance(shared_key, bytes) or len(shared_key) < 16:
            raise InvalidKey("relay shared key must be at least 16 bytes")
        if me == peer:
            raise InvalidArgument("relay peers must differ")
        sub = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_RELAY_INFO).derive(
            shared_key
        )
        self._aead = ChaCha20Poly1305(sub)
        self._seen: set[bytes] = set()
        self.me = me
        self.peer = peer

    def seal(
        self, context: str, plaintext: bytes, *, rng: RandomSource = SYSTEM_RNG
    ) -> RelayEnvelope:
        """Seal ``plaintext`` for :attr:`peer`, bound to ``context``."""
        nonce = rng.getrandbits(8 * RELAY_NONCE_BYTES).to_bytes(RELAY_NONCE_BYTES, "big")
        ct = self._aead.encrypt(nonce, plaintext, _relay_aad(self.me, self.peer, context))
        return RelayEnvelope(
            sender=self.me, recipient=self.peer, context=context, nonce=nonce, ciphertext=ct
        )

    def open(self, env: RelayEnvelope, *, context: str | None = None) -> bytes:
        """The plaintext of an envelope from :attr:`peer` to us.

        Raises :class:`~privmeter.errors.UnknownParty` if the ids are not
        (peer -> me), :class:`~privmeter.errors.UnexpectedMessage` if
        ``context`` is given and differs, :class:`~privmeter.errors.ReplayedMessage`
        for a nonce already accepted and :class:`~privmeter.errors.InvalidCiphertext`
        if authentication fails (tampering, or ids/context rewritten).
        """
        if env.sender != self.peer or env.recipient != self.me:
            raise UnknownParty(
                f"envelope {env.sender!r}->{env.recipient!r}, expected {self.peer!r}->{self.me!r}"
            )
        if context is not None and env.context != context:
            raise UnexpectedMessage(f"envelope context {env.context!r}, expected {context!r}")
        if env.nonce in self._seen:
            raise ReplayedMessage("relay envelope already received", sender=env.sender)
        try:
            pt = self._aead.decrypt(
                env.nonce, env.ciphertext, _relay_aad(env.sender, env.recipient, env.context)
            )
        except InvalidTag:
            raise InvalidCiphertext(
                "relay envelope failed authentication", sender=env.sender
            ) from None
        self._seen.add(env.nonce)
        return pt
