"""Enrolment over the real transport against a running head-end (in process): a ticket enrols once,
an unknown key may only enrol, a revoked meter is refused at the handshake, SIGTERM-style stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import cast

import pytest
from tests.procs import headend_config, write_config

from privmeter.app import headend as headend_app
from privmeter.app.config import HeadendConfig, HouseholdConfig, load_config
from privmeter.app.household import enrol
from privmeter.app.state import load_headend, load_household
from privmeter.cli import main
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ConfigError, PrivmeterError, UnknownParty
from privmeter.net.transport import connect
from privmeter.parties.messages import Hello
from privmeter.parties.registry import Registry

PLAN = Path(__file__).with_name("plan-3s.toml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _configs(tmp: Path, port: int) -> tuple[HeadendConfig, HouseholdConfig]:
    he, hh = tmp / "he", tmp / "hh"
    assert main(["init", "headend", "--dir", str(he)]) == 0
    assert (
        main(["init", "household", "--dir", str(hh), "--meter-id", "m-1", "--key-bits", "2048"])
        == 0
    )
    headend_config(
        he,
        listen={"port": port},
        billing={"plans": [str(PLAN)]},
        operations={"http_port": 0},
    )
    write_config(hh, "household", plan="pilot-3s", headend={"port": port})
    return (
        cast(HeadendConfig, load_config(he / "headend.toml", "headend")),
        cast(HouseholdConfig, load_config(hh / "household.toml", "household")),
    )


async def _listening(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        await asyncio.sleep(0.05)
    raise AssertionError("head-end did not listen")


def test_enrol_then_revoke_over_the_transport(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    he_cfg, hh_cfg = _configs(tmp_path, port)
    he_key = load_headend(he_cfg.state_dir).signing_key.verify_key
    st = load_household(hh_cfg.state_dir)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(headend_app.serve(he_cfg, stop=stop))
        await _listening(port)
        reg = Registry(he_cfg.state_dir / "registry.db")
        try:
            from privmeter.parties.enrolment import Ticket

            # a ticket for another head-end key: the household refuses to talk to this one
            wrong = Ticket(
                meter_id="m-1", headend_key=SigningKey.generate().verify_key, secret=b"x" * 16
            )
            with pytest.raises(UnknownParty):
                await enrol(hh_cfg, st, wrong)
            ticket = reg.invite("m-1", he_key)
            doc = await enrol(hh_cfg, st, ticket)
            assert (doc["meter_id"], doc["group"], doc["plan_id"]) == (
                "m-1",
                "feeder-1",
                "pilot-3s",
            )
            assert doc["headend_key"] == he_key.hex() and doc["interval_seconds"] == 3
            assert st.enrolment() is not None
            with pytest.raises(ConfigError, match="already enrolled"):
                await enrol(hh_cfg, st, ticket)
            with pytest.raises(PrivmeterError):  # the ticket is used up
                await enrol(hh_cfg, st, ticket, force=True)
            # the enrolled meter is known by its key
            conn = await connect("127.0.0.1", port, st.meter_key, he_key)
            await conn.close()
            # a stranger gets a provisional identity that may only enrol
            stranger = await connect("127.0.0.1", port, SigningKey.generate(), he_key)
            with pytest.raises(PrivmeterError):
                await stranger.request(Hello(meter_id="m-1", group="feeder-1", last_interval=-1))
            await stranger.close()
            # revoked: refused at the handshake
            reg.revoke("m-1")
            with pytest.raises(UnknownParty):
                await connect("127.0.0.1", port, st.meter_key, he_key)
        finally:
            reg.close()
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(run())
    assert "head-end listening" in capsys.readouterr().out
