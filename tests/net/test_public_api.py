"""Pin the public surface of privmeter.net (a curated ``__all__`` per module)."""

from __future__ import annotations

import importlib

import pytest

SURFACE = {
    "framing": {
        "DEFAULT_MAX_FRAME",
        "HEADER_BYTES",
        "MAX_FRAME_LIMIT",
        "FrameDecoder",
        "encode_frame",
        "read_frame",
    },
    "handshake": {
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
    },
    "channel": {
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
    },
    "transport": {
        "DEFAULT_SERVER_ID",
        "Connection",
        "Handler",
        "Ping",
        "Pong",
        "Server",
        "ServerStats",
        "Welcome",
        "connect",
    },
    "connection": {
        "RECORD_OVERHEAD",
        "Connection",
        "Handler",
        "Ping",
        "Pong",
        "ServerStats",
        "Welcome",
        "call_handler",
        "close_writer",
    },
    "emulation": {"DIRECTIONS", "Decision", "LinkProfile", "NetworkEmulator", "OutageSchedule"},
}


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_all_is_pinned(name):
    mod = importlib.import_module(f"privmeter.net.{name}")
    assert set(mod.__all__) == SURFACE[name]
    for attr in mod.__all__:
        assert hasattr(mod, attr)


def test_protocol_layers_do_not_import_asyncio():
    import ast
    from pathlib import Path

    import privmeter.net as net

    root = Path(net.__file__).parent
    for name in ("handshake", "channel", "emulation"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "asyncio" not in imported, name
