from __future__ import annotations

import random

import pytest

from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    InvalidCiphertext,
    InvalidKey,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    UnexpectedMessage,
    UnknownParty,
    UnsupportedVersion,
)
from privmeter.net.channel import ErrorMessage
from privmeter.net.handshake import (
    ClientHandshake,
    ClientHello,
    ServerHandshake,
    ServerHello,
    TrustStore,
    plain_frame,
    trust_key,
)
from privmeter.protocol.codec import decode, encode

SERVER = SigningKey.from_seed(b"S" * 32)
METER = SigningKey.from_seed(b"M" * 32)
OTHER = SigningKey.from_seed(b"O" * 32)


class Impostor:
    """Claims ``claimed``'s identity but can only sign with ``real``."""

    def __init__(self, claimed: SigningKey, real: SigningKey) -> None:
        self.verify_key = claimed.verify_key
        self._real = real

    def sign(self, context: bytes, payload: bytes) -> bytes:
        return self._real.sign(context, payload)


def run_pair(client_id=METER, server_id=SERVER, client_trusts=None, server_trusts=None, seed=1):
    rng = random.Random(seed)
    c = ClientHandshake(
        client_id, client_trusts or trust_key(SERVER.verify_key, "head-end"), rng=rng
    )
    s = ServerHandshake(
        server_id, server_trusts or TrustStore([(METER.verify_key, "meter-1")]), rng=rng
    )
    m2 = s.receive(c.start())
    assert m2 is not None
    m3 = c.receive(m2)
    assert s.receive(m3) is None
    return c, s


def test_success_and_channel_keys():
    c, s = run_pair()
    assert c.done and s.done
    assert c.result.peer_id == "head-end" and s.result.peer_id == "meter-1"
    assert c.result.peer_key == SERVER.verify_key and s.result.peer_key == METER.verify_key
    assert c.result.session_id == s.result.session_id
    assert c.result.send_key == s.result.recv_key and c.result.recv_key == s.result.send_key
    cc, sc = c.result.channel(), s.result.channel()
    assert sc.open(cc.seal(b"reading")) == b"reading"
    assert cc.open(sc.seal(b"ack")) == b"ack"


def test_fresh_keys_per_connection():
    c1, _ = run_pair(seed=1)
    c2, _ = run_pair(seed=2)
    assert c1.result.send_key != c2.result.send_key
    assert c1.result.session_id != c2.result.session_id


def test_wrong_server_key():
    with pytest.raises(UnknownParty):
        run_pair(client_trusts=trust_key(OTHER.verify_key, "head-end"))


def test_untrusted_client():
    with pytest.raises(UnknownParty):
        run_pair(client_id=OTHER)


def test_server_bad_signature():
    with pytest.raises(InvalidSignature):
        run_pair(server_id=Impostor(SERVER, OTHER))


def test_client_bad_signature():
    with pytest.raises(InvalidSignature):
        run_pair(client_id=Impostor(METER, OTHER))


def test_client_identity_never_in_clear():
    rng = random.Random(3)
    c = ClientHandshake(METER, trust_key(SERVER.verify_key, "head-end"), rng=rng)
    s = ServerHandshake(SERVER, TrustStore([(METER.verify_key, "m")]), rng=rng)
    m1 = c.start()
    m2 = s.receive(m1)
    m3 = c.receive(m2)
    for frame in (m1, m2, m3):
        assert METER.verify_key.raw not in frame
        assert SERVER.verify_key.raw not in frame


def test_unsupported_version():
    s = ServerHandshake(SERVER, TrustStore())
    hello = plain_frame(ClientHello(versions=(7, 9), ephemeral=bytes(range(32))))
    with pytest.raises(UnsupportedVersion):
        s.receive(hello)
    assert s.failed
    with pytest.raises(LocalProtocolError):
        s.receive(hello)


def test_client_rejects_version_it_did_not_offer():
    c = ClientHandshake(METER, trust_key(SERVER.verify_key, "head-end"))
    c.start()
    sh = plain_frame(ServerHello(version=2, ephemeral=bytes(range(32)), sealed=bytes(48)))
    with pytest.raises(UnsupportedVersion):
        c.receive(sh)


def test_tampered_server_hello():
    rng = random.Random(4)
    c = ClientHandshake(METER, trust_key(SERVER.verify_key, "head-end"), rng=rng)
    s = ServerHandshake(SERVER, TrustStore([(METER.verify_key, "m")]), rng=rng)
    m2 = bytearray(s.receive(c.start()))
    m2[-5] ^= 1  # inside the sealed identity block
    with pytest.raises(InvalidCiphertext):
        c.receive(bytes(m2))


def test_tampered_client_auth():
    rng = random.Random(5)
    c = ClientHandshake(METER, trust_key(SERVER.verify_key, "head-end"), rng=rng)
    s = ServerHandshake(SERVER, TrustStore([(METER.verify_key, "m")]), rng=rng)
    m3 = bytearray(c.receive(s.receive(c.start())))
    m3[-1] ^= 0x80
    with pytest.raises(InvalidCiphertext):
        s.receive(bytes(m3))
    assert s.result is None


def test_hello_replayed_into_auth_step():
    c = ClientHandshake(METER, trust_key(SERVER.verify_key, "head-end"))
    s = ServerHandshake(SERVER, TrustStore([(METER.verify_key, "m")]))
    m1 = c.start()
    s.receive(m1)
    with pytest.raises(UnexpectedMessage):
        s.receive(m1)


def test_low_order_ephemeral():
    s = ServerHandshake(SERVER, TrustStore())
    with pytest.raises(InvalidKey):
        s.receive(plain_frame(ClientHello(versions=(1,), ephemeral=bytes(32))))


@pytest.mark.parametrize(
    "payload", [b"", b"\x01" + bytes(40), b"\x00garbage", b"\x00" + b"\xc1" * 10]
)
def test_garbage_first_frame(payload):
    s = ServerHandshake(SERVER, TrustStore())
    with pytest.raises((MalformedMessage, UnexpectedMessage)):
        s.receive(payload)


def test_server_error_frame_raised_at_client():
    c = ClientHandshake(METER, trust_key(SERVER.verify_key, "head-end"))
    c.start()
    with pytest.raises(UnsupportedVersion):
        c.receive(plain_frame(ErrorMessage(code="version")))


def test_trust_store():
    ts = TrustStore([(METER.verify_key, "m1")])
    assert ts(METER.verify_key) == "m1" and ts(OTHER.verify_key) is None
    ts.add(OTHER.verify_key, "m2")
    ts.remove(METER.verify_key)
    assert ts(METER.verify_key) is None and ts(OTHER.verify_key) == "m2" and len(ts) == 1
    assert isinstance(decode(encode(ClientHello(versions=(1,), ephemeral=bytes(32)))), ClientHello)
    assert VerifyKey(METER.verify_key.raw) == METER.verify_key
