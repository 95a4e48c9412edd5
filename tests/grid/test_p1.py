"""DSMR P1 source: the real example telegrams, replayed through a pty and a loopback socket.

Truth comes from two independent places: the values printed in the shared
example telegrams (decoded by dsmr-parser, checked against the text by
hand), and the integer register accumulation of
:func:`~privmeter.grid.synthetic.p1_synth.synthesize_telegrams`.  The CRC is
cross-checked against dsmr-parser's own CRC routine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import tty
from pathlib import Path

import pytest
from dsmr_parser.parsers import TelegramParser
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.errors import ConfigError, DataFormatError, TransportError
from privmeter.grid.devices.p1 import (
    P1Decoder,
    P1Reconciler,
    P1Sample,
    P1Source,
    format_p1_timestamp,
    p1_crc16,
    parse_p1_timestamp,
)
from privmeter.grid.devices.source import IntervalReading, LoadSource
from privmeter.grid.synthetic.p1_synth import rewrite_telegram, synthesize_telegrams

IV = 900
NOW = 1_700_000_000.0

# file -> (spec detected, import Wh, export Wh, net power W, unix or None = receiver clock)
EXAMPLES = {
    "v2_2": ("v3", 2002, 2002, 1010, None),
    "v3": ("v3", 24_691_356, 24_691_356, 1190, None),
    "v4_2": ("v4", 3_016_829, 0, 2027, 1479067077),  # 161113205757W = 19:57:57 UTC
    "v5": ("v5", 6825, 2444, 244, 1483381202),  # 170102192002W
    "v5_two_mbus": ("v5", 2_375_582, 0, 111, 1587933205),  # 200426223325S (CEST)
    "v5_eon_hu": ("eon-hu", 173_640, 627_177, -2601, 1690204050),
    "fluvius_v171": ("fluvius", 15792, 11, 0, 1589284449),
    "fluvius_v171_alt": ("fluvius", 571_562, 5, 338, 1698923748),
    "sagemcom_t210_d_r": ("sagemcom", 6_545_766, 58, 286, 1665064214),
    "iskra_ie": ("iskra-ie", 20363, 20563, -100, 1675340867),
    "esy5q3da1004_v304": ("q3d", 32_549_506, 0, 1688, None),  # 32549.5061662 kWh floored
    "esy5q3db1024_v304": ("q3d", 52_185_782, 19_949_322, 2125, None),
}


def _raw(test_data: Path, name: str) -> bytes:
    return (test_data / "dsmr" / f"{name}.txt").read_bytes()


def _text(test_data: Path, name: str) -> str:
    with open(test_data / "dsmr" / f"{name}.txt", newline="", encoding="latin-1") as f:
        return f.read()


# ------------------------------------------------------------------ decoding the examples


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_telegrams_decode_exactly(test_data, name):
    spec, imp, exp, power, unix = EXAMPLES[name]
    d = P1Decoder(clock=lambda: NOW)
    [s] = d.feed(_raw(test_data, name))
    assert (s.spec, s.import_wh, s.export_wh, s.power_w) == (spec, imp, exp, power)
    assert s.unix == (int(NOW) if unix is None else unix)


def test_telegram_without_electricity_register_is_rejected(test_data, caplog):
    d = P1Decoder()
    with caplog.at_level(logging.WARNING):
        assert d.feed(_raw(test_data, "unpadded_crc")) == []  # a heat meter (GJ)
    assert d.stats["no-register"] == 1 and "no active-energy register" in caplog.text


def test_irish_meter_in_its_own_time_zone(test_data):
    [s] = P1Decoder(tz="Europe/Dublin").feed(_raw(test_data, "iskra_ie"))
    assert s.unix == 1675340867 + 3600  # 13:27:47 GMT, not CET


@pytest.mark.parametrize("name", sorted(n for n in EXAMPLES if EXAMPLES[n][0] not in ("v3", "q3d")))
def test_crc_matches_sent_and_dsmr_parser(test_data, name):
    text = _text(test_data, name)
    body = text[text.index("/") : text.index("!") + 1]
    sent = int(text[text.index("!") + 1 : text.index("!") + 5], 16)
    assert p1_crc16(body.encode("latin-1")) == sent == TelegramParser.crc16(body)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_crc_agrees_with_dsmr_parser(data):
    assert p1_crc16(data) == TelegramParser.crc16(data.decode("latin-1"))


# ------------------------------------------------------------------ bad input


def test_bad_crc_truncated_garbage_and_missing_crc_are_rejected(test_data, caplog):
    good = _raw(test_data, "v5")
    bad_crc = good.replace(b"000004.426", b"000004.427")
    truncated = good[:300]
    no_crc = good.replace(b"!6EEE", b"!")
    stream = b"\xff\x00noise" + truncated + good + b"junk\r\n" + bad_crc + no_crc + good
    d = P1Decoder()
    with caplog.at_level(logging.WARNING):
        out = d.feed(stream)
    assert len(out) == 2
    assert d.stats == {"garbage": 2, "truncated": 1, "crc": 1, "no-crc": 1, "accepted": 2}
    for word in ("CRC 6EEE sent", "new telegram began", "between telegrams", "must carry a CRC"):
        assert word in caplog.text


def test_oversized_and_malformed_trailer(test_data):
    d = P1Decoder()
    assert d.feed(b"/" + b"A" * 20_000) == []
    assert d.stats["oversized"] == 1
    good = _raw(test_data, "v5")
    assert d.feed(good.replace(b"!6EEE\r\n", b"!6EXX\r\n") + good) != []
    assert d.stats["malformed"] == 1


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_same_samples(test_data, cuts):
    stream = b"".join(_raw(test_data, n) for n in ("v5", "fluvius_v171", "v4_2", "iskra_ie"))
    whole = P1Decoder(clock=lambda: NOW).feed(stream)
    d = P1Decoder(clock=lambda: NOW)
    pieces, prev = [], 0
    for c in sorted({min(c, len(stream)) for c in cuts}):
        pieces.append(stream[prev:c])
        prev = c
    pieces.append(stream[prev:])
    assert [s for p in pieces for s in d.feed(p)] == whole
    assert len(whole) == 4


def test_unknown_spec_and_zone_are_config_errors():
    with pytest.raises(ConfigError, match="unknown P1 spec"):
        P1Decoder(spec="v9")
    with pytest.raises(ConfigError, match="time zone"):
        P1Decoder(tz="Mars/Olympus")


# ------------------------------------------------------------------ time


@settings(max_examples=200, deadline=None)
@given(
    unix=st.integers(946_800_000, 4_070_908_799),
    zone=st.sampled_from(  # YY: 2000-2098
        ["Europe/Amsterdam", "Europe/Brussels", "Europe/Dublin", "Europe/Budapest"]
    ),
)
def test_timestamp_roundtrip_including_dst_changes(unix, zone):
    assert parse_p1_timestamp(format_p1_timestamp(unix, zone), zone) == unix


def test_autumn_repeated_hour_is_resolved_by_the_flag():
    # 2023-10-29 02:30 local happens twice in Amsterdam: CEST (S) then CET (W)
    assert parse_p1_timestamp("231029023000S") == 1698539400
    assert parse_p1_timestamp("231029023000W") == 1698539400 + 3600
    assert format_p1_timestamp(1698539400) == "231029023000S"
    assert format_p1_timestamp(1698539400 + 3600) == "231029023000W"
    with pytest.raises(ValueError):
        parse_p1_timestamp("231329023000W")


# ------------------------------------------------------------------ rewriting


def test_rewrite_is_exact_and_crc_valid(test_data):
    tpl = _text(test_data, "v5")
    out = rewrite_telegram(
        tpl,
        timestamp=1_700_000_000,
        registers_wh={"1.8.1": 123_456_789},
        power_w={"1.7.0": 1234, "2.7.0": 0},
    )
    TelegramParser.validate_checksum(out)  # dsmr-parser agrees with our CRC
    [s] = P1Decoder().feed(out.encode("latin-1"))
    assert (s.unix, s.import_wh, s.power_w) == (1_700_000_000, 123_456_789 + 2399, 1234)
    with pytest.raises(DataFormatError, match=r"no 9\.9\.9 line"):
        rewrite_telegram(tpl, registers_wh={"9.9.9": 1})
    with pytest.raises(ValueError, match="unsigned"):
        rewrite_telegram(tpl, registers_wh={"1.8.1": -1})


# ------------------------------------------------------------------ reconciliation


def _sample(unix: int, imp: int, exp: int = 0, power: int | None = None, eq: str = "A") -> P1Sample:
    return P1Sample(
        unix=unix,
        import_wh=imp,
        export_wh=exp,
        power_w=power,
        received=float(unix),
        equipment_id=eq,
    )


def _run(rec: P1Reconciler, samples: list[P1Sample]) -> list[IntervalReading]:
    return [r for s in samples for r in rec.push(s)]


B = 1_700_000_100 // IV * IV  # a boundary
K = B // IV


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 120), st.integers(-5000, 9000)), min_size=1, max_size=300
    ),
    offset=st.integers(0, 20),
)
def test_interval_energy_is_exact_register_difference(steps, offset):
    """Energy of every reported interval = register difference at its boundaries; sums telescope."""
    t, imp, exp, ws_i, ws_e = B + offset, 10_000, 500, 0, 0
    samples = [_sample(t, imp, exp)]
    for dt, p in steps:
        t += dt
        ws_i, ws_e = ws_i + max(p, 0) * dt, ws_e + max(-p, 0) * dt
        samples.append(_sample(t, 10_000 + ws_i // 3600, 500 + ws_e // 3600, p))
    rec = P1Reconciler(IV, max_boundary_lag_s=30)
    out = _run(rec, samples)
    assert [r.interval for r in out] == list(range(K, K + len(out)))  # in order, no holes
    first_after = {}
    for s in samples:
        first_after.setdefault(s.unix // IV, s)
    for r in out:
        a, b = first_after.get(r.interval), first_after.get(r.interval + 1)
        known = (
            a is not None
            and b is not None
            and a.unix - r.interval * IV <= 30
            and b.unix - (r.interval + 1) * IV <= 30
        )
        if known:
            assert r.energy_wh == (b.import_wh - a.import_wh) - (b.export_wh - a.export_wh)
        else:
            assert r.energy_wh is None  # never invented


def test_register_backwards_reset_and_meter_swap(caplog):
    rec = P1Reconciler(IV)
    with caplog.at_level(logging.WARNING):
        out = _run(
            rec,
            [
                _sample(B, 1000),
                _sample(B + 400, 1100),
                _sample(B + 500, 50),
                _sample(B + IV, 80),
                _sample(B + 2 * IV, 180),
                _sample(B + 2 * IV + 100, 200, eq="B"),
                _sample(B + 3 * IV, 260, eq="B"),
                _sample(B + 4 * IV, 300, eq="B"),
            ],
        )
    assert [(r.interval - K, r.energy_wh) for r in out] == [(0, None), (1, 100), (2, None), (3, 40)]
    assert "register went backwards" in caplog.text and "meter replaced" in caplog.text


def test_clock_backwards_is_ignored_then_recovers(caplog):
    rec = P1Reconciler(IV)
    with caplog.at_level(logging.WARNING):
        out = _run(
            rec,
            [
                _sample(B, 0),
                _sample(B + 300, 10),
                _sample(B - 3000, 20),
                _sample(B - 2990, 21),
                _sample(B + 310, 30),
                _sample(B + IV, 40),
                _sample(B + 2 * IV, 90),
            ],
        )
    assert [(r.interval - K, r.energy_wh) for r in out] == [(0, None), (1, 50)]
    assert rec.stats["clock-back"] == 1  # one episode, one warning
    assert "clock went backwards" in caplog.text and "recovered after 2 ignored" in caplog.text


def test_forward_jump_late_boundary_and_implausible_jump(caplog):
    rec = P1Reconciler(IV, max_boundary_lag_s=30, max_power_w=10_000)
    with caplog.at_level(logging.WARNING):
        out = _run(
            rec,
            [
                _sample(B, 0),
                _sample(B + IV, 100),  # interval 0: 100
                _sample(B + 4 * IV + 5, 400),  # jump: 1, 2, 3 missing
                _sample(B + 5 * IV + 100, 500),  # boundary 5 seen 100 s late: 4 missing
                _sample(B + 6 * IV, 600),  # 5 started late: missing
                _sample(B + 6 * IV + 10, 10_600),  # +10 kWh in 10 s: rejected
                _sample(B + 7 * IV, 700),  # 6: 100
            ],
        )
    assert [(r.interval - K, r.energy_wh) for r in out] == [
        (0, 100),
        (1, None),
        (2, None),
        (3, None),
        (4, None),
        (5, None),
        (6, 100),
    ]
    assert {"gap", "late-boundary", "implausible"} <= set(rec.stats)


def test_tick_reports_a_silent_meter_and_never_repeats():
    rec = P1Reconciler(IV, max_boundary_lag_s=30, stall_grace_s=60)
    assert _run(rec, [_sample(B, 0, power=5)]) == []
    assert rec.tick(B + IV + 89) == []
    assert rec.tick(B + 3 * IV + 85) == [
        IntervalReading(interval=K, energy_wh=None, power_w=5),
        IntervalReading(interval=K + 1, energy_wh=None),
    ]
    # data resumes in interval 3: intervals 0-1 are not reported again, 2 is missing
    out = _run(rec, [_sample(B + 3 * IV + 1, 50), _sample(B + 4 * IV, 60)])
    assert [(r.interval - K, r.energy_wh) for r in out] == [(2, None), (3, 10)]


def test_first_sample_mid_interval_is_missing():
    out = _run(
        P1Reconciler(IV), [_sample(B + 400, 0), _sample(B + IV, 10), _sample(B + 2 * IV, 30)]
    )
    assert [(r.interval - K, r.energy_wh) for r in out] == [(0, None), (1, 20)]


def test_reconciler_config_errors():
    with pytest.raises(ConfigError):
        P1Reconciler(0)
    with pytest.raises(ConfigError):
        P1Reconciler(IV, max_boundary_lag_s=IV)


# ------------------------------------------------------------------ live transports


def _stream(test_data: Path, name: str, n_intervals: int, seed: int = 7):
    rng = random.Random(seed)
    powers = [rng.randint(-2500, 6000) for _ in range(n_intervals * IV // 10)]
    tel = list(
        synthesize_telegrams(
            _text(test_data, name),
            start_unix=B,
            power_w=powers,
            import_wh=1_234_567,
            export_wh=89_000,
        )
    )
    by_t = {t.unix: t for t in tel}
    expected = [
        IntervalReading(
            interval=K + k,
            energy_wh=(by_t[B + (k + 1) * IV].import_wh - by_t[B + k * IV].import_wh)
            - (by_t[B + (k + 1) * IV].export_wh - by_t[B + k * IV].export_wh),
            power_w=by_t[B + (k + 1) * IV - 10].power_w,
        )
        for k in range(n_intervals)
    ]
    return tel, expected


def test_replay_through_a_pty_serial_port(test_data):
    tel, expected = _stream(test_data, "v5", 4)
    master, slave = os.openpty()
    tty.setraw(slave)  # a real serial line: no CR/LF translation, no echo
    src = P1Source.serial(os.ttyname(slave), interval_seconds=IV, read_timeout_s=0.2)
    assert isinstance(src, LoadSource)

    def feed():
        assert src.connected.wait(10)  # opening a serial port flushes its input
        rng = random.Random(1)
        texts = [t.text.encode("latin-1") for t in tel]
        data = b"".join(texts[:50]) + b"\x00\xffline noise" + b"".join(texts[50:])
        while data:  # irregular chunks, like a UART with a small FIFO
            n = rng.randint(1, 700)
            os.write(master, data[:n])
            data = data[n:]

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    it = src.readings()
    try:
        got = [next(it) for _ in range(4)]
    finally:
        src.close()
        writer.join(timeout=10)
        list(it)
        os.close(master)
        os.close(slave)
    assert got == expected
    assert sum(r.energy_wh for r in got) == (tel[-1].import_wh - tel[0].import_wh) - (
        tel[-1].export_wh - tel[0].export_wh
    )
    assert src.decoder.stats["garbage"] == 1 and src.decoder.stats["crc"] == 0


def _serve_once(payload: bytes) -> tuple[socket.socket, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = srv.accept()
        with conn:
            for i in range(0, len(payload), 1500):
                conn.sendall(payload[i : i + 1500])

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return srv, th


@pytest.mark.parametrize("name", ["fluvius_v171", "sagemcom_t210_d_r", "v5_eon_hu"])
def test_replay_through_a_loopback_socket(test_data, name):
    tel, expected = _stream(test_data, name, 3)
    srv, th = _serve_once(b"".join(t.text.encode("latin-1") for t in tel))
    try:
        src = P1Source.tcp("127.0.0.1", srv.getsockname()[1], interval_seconds=IV)
        got = list(src.readings())  # ends at end of stream (no reconnect)
    finally:
        th.join(timeout=10)
        srv.close()
    assert got == expected


def test_async_readings_over_tcp(test_data):
    tel, expected = _stream(test_data, "v4_2", 2)
    srv, th = _serve_once(b"".join(t.text.encode("latin-1") for t in tel))
    src = P1Source.tcp("127.0.0.1", srv.getsockname()[1], interval_seconds=IV)

    async def collect():
        return [r async for r in src.areadings()]

    try:
        assert asyncio.run(collect()) == expected
    finally:
        th.join(timeout=10)
        srv.close()


def test_timestampless_meter_uses_receiver_clock(test_data):
    tel, expected = _stream(test_data, "v2_2", 2)
    clock = [0.0]

    def chunks():
        for t in tel:
            clock[0] = float(t.unix)
            yield t.text.encode("latin-1")

    src = P1Source.replay(chunks(), interval_seconds=IV, clock=lambda: clock[0])
    assert list(src.readings()) == [
        IntervalReading(
            interval=r.interval,
            energy_wh=r.energy_wh,
            power_w=None if r.power_w is None else round(r.power_w, -1),
        )
        for r in expected
    ]  # v2.2 prints power in 10 W steps


def test_unreachable_bridge_is_a_transport_error():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(TransportError, match="cannot connect"):
        next(P1Source.tcp("127.0.0.1", port, interval_seconds=IV).readings())


def test_crc_valid_telegram_with_an_unparsable_line_is_kept(test_data):
    tpl = _text(test_data, "v5").replace("1-0:32.7.0(0230.0*V)", "1-0:32.7.0(0230.0*V)(1)")
    fixed = rewrite_telegram(tpl)  # recompute the CRC: the meter "really" sent this line
    d = P1Decoder()
    [s] = d.feed(fixed.encode("latin-1"))
    assert s.import_wh == 6825 and d.stats["lenient"] == 1


def test_crc_less_telegram_with_a_corrupt_register_is_rejected(test_data):
    d = P1Decoder(clock=lambda: NOW)
    bad = _raw(test_data, "v3").replace(b"1-0:1.8.1(12345.678", b"1-0:1.8.1(12345.6#8")
    assert d.feed(bad) == [] and d.stats["parse"] == 1


def test_garbage_only_stream_closes_intervals_as_missing(test_data):
    tel, _ = _stream(test_data, "v5", 1)
    clock = [NOW]

    def chunks():
        yield tel[0].text.encode("latin-1")
        for _ in range(40):  # the meter now sends only noise, for 40 minutes
            clock[0] += 60
            yield b"\x00\xfe noise"

    src = P1Source.replay(chunks(), interval_seconds=IV, clock=lambda: clock[0])
    got = list(src.readings())
    assert [(r.interval - K, r.energy_wh) for r in got] == [(0, None), (1, None)]
