"""DLMS/COSEM source against a loopback meter double speaking the real protocol.

The double (:class:`CosemMeterDouble`) is a TCP server on 127.0.0.1 that
frames with the IEC 62056-47 wrapper and decodes/encodes every APDU with the
``dlms-cosem`` package's own classes: AARQ parsed by
``ApplicationAssociationRequest.from_bytes``, AARE built by
``ApplicationAssociationResponse`` + ``InitiateResponse``, GET requests parsed
by ``GetRequestNormal``/``GetRequestNext`` (with the range descriptor),
block-transfer answers built by ``GetResponseWithBlock``/``LastBlock``, data
by ``dlms_data`` classes, RLRE by ``ReleaseResponse``.  Two encoders are
written here because dlms-cosem 21.3.2's own are broken (``bytearray.append``
of bytes): ``GetResponseNormal`` (C4 01 <invoke-id> 00 <data>) and the
``array`` data type (01 <length> <items>).  What is simulated: the meter's
memory (registers and profile rows), not the protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from dlms_cosem import dlms_data
from dlms_cosem import enumerations as en
from dlms_cosem import time as dtime
from dlms_cosem.connection import XDlmsApduFactory
from dlms_cosem.cosem import Obis
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.wrappers import WrapperHeader, WrapperProtocolDataUnit
from dlms_cosem.protocol.xdlms.conformance import Conformance
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.errors import ConfigError, MalformedMessage, MessageTooLarge, TransportError
from privmeter.grid.devices.dlms import (
    UNIT_W,
    UNIT_WH,
    DlmsMeter,
    DlmsSettings,
    DlmsSource,
    cosem_datetime_to_unix,
)
from privmeter.grid.devices.source import IntervalReading, LoadSource

IV = 900
T0 = 1_700_000_100 // IV * IV  # an interval boundary (2023-11-14)


def _array(items: list[bytes]) -> bytes:
    return b"\x01" + dlms_data.encode_variable_integer(len(items)) + b"".join(items)


def _get_response_normal(invoke: xdlms.InvokeIdAndPriority, data: bytes) -> bytes:
    return bytes([196, 1]) + invoke.to_bytes() + b"\x00" + data


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


@dataclass
class CosemMeterDouble:
    """Registers + a 15-minute load profile, served over DLMS/COSEM on loopback."""

    rows: list[tuple[int, int, int]] = field(default_factory=list)  # (unix, import, export) raw
    energy_scaler: int = 0  # raw * 10**scaler Wh
    import_raw: int = 0
    export_raw: int = 0
    power_import_raw: int = 0  # scaler -1: tenths of W
    power_export_raw: int = 0
    password: bytes | None = None
    capture_period: int = IV
    deviation_minutes: int | None = 0  # None: unspecified (meter local time)
    null_compress: bool = False
    max_block: int = 200  # bytes per GET block: forces block transfer for the profile
    energy_unit: int = UNIT_WH
    tamper: str | None = None  # "garbage-apdu", "huge-length", "close"
    no_power: bool = False  # power registers undefined
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._srv.close()

    # -------------------------------------------------------------- server loop
    def _serve(self) -> None:
        self._srv.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                try:
                    self._session(conn)
                except (EOFError, OSError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        pending: list[bytes] = []
        while True:
            header = WrapperHeader.from_bytes(_recv(conn, 8))
            apdu = XDlmsApduFactory.apdu_from_bytes(_recv(conn, header.length))
            self.requests.append(type(apdu).__name__)
            if isinstance(apdu, acse.ApplicationAssociationRequest):
                out = self._aare(apdu)
            elif isinstance(apdu, xdlms.GetRequestNormal):
                out, pending = self._get(apdu)
            elif isinstance(apdu, xdlms.GetRequestNext):
                out = pending.pop(0)
            elif isinstance(apdu, acse.ReleaseRequest):
                out = acse.ReleaseResponse(reason=en.ReleaseResponseReason.NORMAL).to_bytes()
            else:
                raise AssertionError(f"unexpected {apdu!r}")
            wrapped = WrapperProtocolDataUnit(
                out,
                WrapperHeader(
                    source_wport=header.destination_wport,
                    destination_wport=header.source_wport,
                    length=len(out),
                ),
            ).to_bytes()
            if self.tamper == "huge-length" and isinstance(apdu, xdlms.GetRequestNormal):
                wrapped = wrapped[:6] + b"\xff\xff" + wrapped[8:]
            if self.tamper == "close" and isinstance(apdu, xdlms.GetRequestNormal):
                conn.sendall(wrapped[:5])
                return
            conn.sendall(wrapped)

    def _aare(self, aarq: acse.ApplicationAssociationRequest) -> bytes:
        ok = self.password is None or (
            aarq.authentication == en.AuthenticationMechanism.LLS
            and bytes(aarq.authentication_value or b"") == self.password
        )
        initiate = xdlms.InitiateResponse(
            negotiated_conformance=Conformance(
                get=True, selective_access=True, block_transfer_with_get_or_read=True
            ),
            server_max_receive_pdu_size=1024,
        )
        return acse.ApplicationAssociationResponse(
            result=en.AssociationResult.ACCEPTED if ok else en.AssociationResult.REJECTED_PERMANENT,
            result_source_diagnostics=(
                en.AcseServiceUserDiagnostics.NULL
                if ok
                else en.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED
            ),
            authentication=aarq.authentication if ok else None,
            user_information=acse.UserInformation(content=initiate),
        ).to_bytes()

    def _stamp(self, unix: int) -> bytes:
        if self.deviation_minutes is None:
            local = datetime.fromtimestamp(unix, timezone(timedelta(hours=1))).replace(tzinfo=None)
            raw = bytearray(dtime.datetime_to_bytes(local))  # naive: deviation 0x8000
            raw[11] = 0x00  # clock status: valid, no DST
            return bytes(raw)
        tz = timezone(timedelta(minutes=-self.deviation_minutes))
        return dtime.datetime_to_bytes(datetime.fromtimestamp(unix, tz))

    def _get(self, req: xdlms.GetRequestNormal) -> tuple[bytes, list[bytes]]:
        obis = req.cosem_attribute.instance.to_string(".")
        attr = req.cosem_attribute.attribute
        regs = {
            "1.0.1.8.0.255": (self.import_raw, self.energy_scaler, self.energy_unit),
            "1.0.2.8.0.255": (self.export_raw, self.energy_scaler, self.energy_unit),
            "1.0.1.7.0.255": (self.power_import_raw, -1, UNIT_W),
            "1.0.2.7.0.255": (self.power_export_raw, -1, UNIT_W),
        }
        inv = req.invoke_id_and_priority
        if self.tamper == "garbage-apdu":
            return b"\xc4\x01" + inv.to_bytes() + b"\x00\x99\x99", []
        if self.no_power and obis.startswith("1.0.1.7") and attr == 2:
            return xdlms.GetResponseNormalWithError(
                error=en.DataAccessResult.OBJECT_UNDEFINED, invoke_id_and_priority=inv
            ).to_bytes(), []
        if obis in regs and attr == 2:
            value = regs[obis][0]
            data = (
                dlms_data.DoubleLongData(value)
                if value < 0 or regs[obis][2] == UNIT_W
                else dlms_data.DoubleLongUnsignedData(value)
            ).to_bytes()
        elif obis in regs and attr == 3:
            data = dlms_data.DataStructure(
                [dlms_data.IntegerData(regs[obis][1]), dlms_data.EnumData(regs[obis][2])]
            ).to_bytes()
        elif obis == "1.0.99.1.0.255" and attr == 3:
            caps = [
                (8, "0.0.1.0.0.255"),
                (1, "0.0.96.10.1.255"),
                (3, "1.0.1.8.0.255"),
                (3, "1.0.2.8.0.255"),
            ]
            data = _array(
                [
                    dlms_data.DataStructure(
                        [
                            dlms_data.UnsignedLongData(c),
                            dlms_data.OctetStringData(Obis.from_string(o).to_bytes()),
                            dlms_data.IntegerData(2),
                            dlms_data.UnsignedLongData(0),
                        ]
                    ).to_bytes()
                    for c, o in caps
                ]
            )
        elif obis == "1.0.99.1.0.255" and attr == 4:
            data = dlms_data.DoubleLongUnsignedData(self.capture_period).to_bytes()
        elif obis == "1.0.99.1.0.255" and attr == 2:
            sel = req.access_selection
            lo = sel.from_value.replace(tzinfo=UTC).timestamp() if sel else float("-inf")
            hi = sel.to_value.replace(tzinfo=UTC).timestamp() if sel else float("inf")
            items, prev = [], None
            for t, imp, exp in self.rows:
                if not lo <= t <= hi:
                    continue
                stamp = (
                    b"\x00"
                    if self.null_compress
                    and prev is not None  # null-data
                    and t == prev + self.capture_period
                    else dlms_data.OctetStringData(self._stamp(t)).to_bytes()
                )
                prev = t
                items.append(
                    b"\x02\x04"
                    + stamp
                    + b"".join(
                        x.to_bytes()
                        for x in (
                            dlms_data.UnsignedIntegerData(0),
                            dlms_data.DoubleLongUnsignedData(imp),
                            dlms_data.DoubleLongUnsignedData(exp),
                        )
                    )
                )
            data = _array(items)
            if len(data) > self.max_block:
                blocks = [data[i : i + self.max_block] for i in range(0, len(data), self.max_block)]
                frames = [
                    xdlms.GetResponseWithBlock(
                        data=b, block_number=n + 1, invoke_id_and_priority=inv
                    ).to_bytes()
                    for n, b in enumerate(blocks[:-1])
                ]
                frames.append(
                    xdlms.GetResponseLastBlock(
                        data=blocks[-1], block_number=len(blocks), invoke_id_and_priority=inv
                    ).to_bytes()
                )
                return frames[0], frames[1:]
        else:
            return xdlms.GetResponseNormalWithError(
                error=en.DataAccessResult.OBJECT_UNDEFINED, invoke_id_and_priority=inv
            ).to_bytes(), []
        return _get_response_normal(inv, data), []


@pytest.fixture
def meter():
    doubles: list[CosemMeterDouble] = []

    def make(**kw):
        d = CosemMeterDouble(**kw)
        doubles.append(d)
        return d

    yield make
    for d in doubles:
        d.close()


def _settings(d: CosemMeterDouble, **kw) -> DlmsSettings:
    return DlmsSettings(host="127.0.0.1", port=d.port, timeout_s=5, **kw)


def _profile(n: int, step_wh: list[int] | None = None, start_imp: int = 5_000_000):
    """Rows at T0 + k*IV; import grows by step_wh[k], export by 7 Wh every third interval."""
    steps = step_wh or [100 + 37 * k % 250 for k in range(n)]
    rows, imp, exp = [], start_imp, 1000
    for k in range(n + 1):
        rows.append((T0 + k * IV, imp, exp))
        if k < n:
            imp += steps[k]
            exp += 7 if k % 3 == 0 else 0
    return rows


def _expected(rows: list[tuple[int, int, int]], scale: Decimal = Decimal(1)) -> list[int]:
    net = [
        int((Decimal(i) * scale).to_integral_value(rounding="ROUND_FLOOR"))
        - int((Decimal(e) * scale).to_integral_value(rounding="ROUND_FLOOR"))
        for _, i, e in rows
    ]
    return [b - a for a, b in itertools.pairwise(net)]


# ------------------------------------------------------------------ tests


def test_register_and_power_reads_are_exact(meter):
    d = meter(
        import_raw=123_456_789,
        export_raw=42,
        power_import_raw=12345,
        power_export_raw=0,
        energy_scaler=0,
    )
    with DlmsMeter(_settings(d)) as m:
        assert m.read_register("1.0.1.8.0.255") == Decimal(123_456_789)
        assert m.read_register("1.0.2.8.0.255") == Decimal(42)
        assert m.read_power_w() == 1234  # 1234.5 W rounds half-even
    assert d.requests[0] == "ApplicationAssociationRequest"
    assert d.requests[-1] == "ReleaseRequest"


def test_profile_mode_yields_exact_interval_energies(meter):
    rows = _profile(8)
    d = meter(rows=rows, power_import_raw=5000)
    src = DlmsSource(_settings(d), interval_seconds=IV, backfill_intervals=8)
    assert isinstance(src, LoadSource)
    got = src.poll(now=T0 + 8 * IV + 40)
    assert [r.interval for r in got] == [T0 // IV + k for k in range(8)]
    assert [r.energy_wh for r in got] == _expected(rows)
    assert got[-1].power_w == 500 and src.latest_power_w == 500
    assert "GetRequestNext" in d.requests  # the profile came by block transfer
    # next poll: one more row -> exactly one more interval, nothing repeated
    d.rows.append((T0 + 9 * IV, rows[-1][1] + 333, rows[-1][2] + 11))
    more = src.poll(now=T0 + 9 * IV + 40)
    assert [(r.interval, r.energy_wh) for r in more] == [(T0 // IV + 8, 322)]


@pytest.mark.parametrize("scaler", [-1, 0, 2])
def test_profile_scaler_floors_registers_before_differencing(meter, scaler):
    rows = _profile(5, step_wh=[13, 27, 5, 99, 1])
    d = meter(rows=rows, energy_scaler=scaler)
    src = DlmsSource(_settings(d), interval_seconds=IV, backfill_intervals=5)
    got = src.poll(now=T0 + 5 * IV + 40)
    exp = _expected(rows, Decimal(1).scaleb(scaler))
    assert [r.energy_wh for r in got] == exp
    assert sum(exp) == _expected([rows[0], rows[-1]], Decimal(1).scaleb(scaler))[0]


def test_null_compressed_clock_and_local_time_rows(meter):
    rows = _profile(4)
    d = meter(rows=rows, null_compress=True, deviation_minutes=None)
    s = _settings(d, tz="Europe/Amsterdam")  # T0 is in November: CET, UTC+1
    got = DlmsSource(s, interval_seconds=IV, backfill_intervals=4).poll(now=T0 + 4 * IV + 40)
    assert [r.energy_wh for r in got] == _expected(rows)


def test_missing_profile_rows_are_reported_missing_not_invented(meter):
    rows = _profile(6)
    del rows[3]  # no row at T0 + 3I: intervals 2 and 3 have an unknown boundary
    d = meter(rows=rows)
    got = DlmsSource(_settings(d), interval_seconds=IV, backfill_intervals=6).poll(
        now=T0 + 6 * IV + 40
    )
    full = _expected(_profile(6))
    assert [r.energy_wh for r in got] == [full[0], full[1], None, None, full[4], full[5]]


def test_register_going_backwards_is_rebaselined(meter, caplog):
    rows = _profile(4)
    rows[2] = (rows[2][0], 10, 0)  # meter reset: registers restart
    rows[3] = (rows[3][0], 60, 0)
    rows[4] = (rows[4][0], 100, 0)
    d = meter(rows=rows)
    with caplog.at_level(logging.WARNING, logger="privmeter.grid.devices.p1"):
        got = DlmsSource(_settings(d), interval_seconds=IV, backfill_intervals=4).poll(
            now=T0 + 4 * IV + 40
        )
    assert [r.energy_wh for r in got] == [_expected(rows[:2])[0], None, 50, 40]
    assert "went backwards" in caplog.text


def test_register_mode_polls_energy_registers(meter):
    d = meter(import_raw=1000, export_raw=10)
    src = DlmsSource(_settings(d, profile_obis=None), interval_seconds=IV)
    assert src.poll(now=T0 + 2) == []
    d.import_raw, d.export_raw = 1400, 30
    assert src.poll(now=T0 + IV + 3) == [
        IntervalReading(interval=T0 // IV, energy_wh=380, power_w=0)
    ]


def test_lls_password_accepted_and_rejected(meter):
    d = meter(import_raw=5, password=b"s3cret!!")
    with DlmsMeter(_settings(d, authentication="lls", password=b"s3cret!!")) as m:
        assert m.read_register("1.0.1.8.0.255") == 5
    with pytest.raises(TransportError, match="rejected the association"):
        DlmsMeter(_settings(d, authentication="lls", password=b"wrong")).__enter__()


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ("garbage-apdu", MalformedMessage),
        ("huge-length", MessageTooLarge),
        ("close", TransportError),
    ],
)
def test_malformed_answers_raise_specific_errors(meter, tamper, error):
    d = meter(import_raw=5, tamper=tamper)
    with pytest.raises(error), DlmsMeter(_settings(d, max_apdu_bytes=4096)) as m:
        m.read_register("1.0.1.8.0.255")


def test_wrong_unit_is_malformed(meter):
    d = meter(import_raw=5, energy_unit=UNIT_W)
    with pytest.raises(MalformedMessage, match="unit"), DlmsMeter(_settings(d)) as m:
        m.read_register("1.0.1.8.0.255")


def test_failed_poll_keeps_source_working_and_reports_missing(meter, caplog):
    rows = _profile(3)
    d = meter(rows=rows[:2])
    src = DlmsSource(_settings(d), interval_seconds=IV, backfill_intervals=1)
    assert [r.energy_wh for r in src.poll(now=T0 + IV + 40)] == [_expected(rows)[0]]
    d.tamper = "garbage-apdu"
    with caplog.at_level(logging.WARNING):
        late = src.poll(now=T0 + 3 * IV + 200)  # meter answers garbage for two intervals
    assert "poll failed" in caplog.text
    assert [(r.interval, r.energy_wh) for r in late] == [(T0 // IV + 1, None), (T0 // IV + 2, None)]
    d.tamper = None  # state unchanged: the meter recovers, later rows resume the stream
    d.rows.extend([(T0 + 3 * IV, 6000, 2000), (T0 + 4 * IV, 6100, 2000)])
    again = src.poll(now=T0 + 4 * IV + 40)
    assert [(r.interval, r.energy_wh) for r in again] == [(T0 // IV + 3, 100)]


def test_capture_period_must_divide_interval(meter):
    d = meter(rows=_profile(2), capture_period=700)
    with pytest.raises(ConfigError, match="capture period"):
        DlmsSource(_settings(d), interval_seconds=IV).poll(now=T0 + 2 * IV + 40)


def test_settings_validation_and_options(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("abcdefgh\n")
    s = DlmsSettings.from_options(
        "10.0.0.5",
        4059,
        {"auth": "lls", "password_file": str(pw), "client": "32", "profile": "none"},
    )
    assert s.password == b"abcdefgh" and s.client_address == 32 and s.profile_obis is None
    with pytest.raises(ConfigError, match="password"):
        DlmsSettings(host="h", authentication="lls")
    with pytest.raises(ConfigError, match="unknown DLMS option"):
        DlmsSettings.from_options("h", 1, {"pasword": "x"})
    with pytest.raises(ConfigError, match="OBIS"):
        DlmsSettings(host="h", import_obis="1.8.0")
    with pytest.raises(ConfigError, match="HLS-GMAC"):
        DlmsSettings(host="h", authentication="hls-gmac")


@settings(max_examples=60, deadline=None)
@given(unix=st.integers(946_684_800, 4_000_000_000), dev=st.sampled_from([-120, -60, 0, 60, 300]))
def test_cosem_datetime_roundtrip(unix, dev):
    tz = timezone(timedelta(minutes=-dev))
    raw = dtime.datetime_to_bytes(datetime.fromtimestamp(unix, tz))
    assert cosem_datetime_to_unix(raw) == unix


def test_cosem_datetime_rejects_garbage():
    with pytest.raises(MalformedMessage):
        cosem_datetime_to_unix(b"\x00" * 5)
    with pytest.raises(MalformedMessage):
        cosem_datetime_to_unix(b"\x07\xe7\x0d\x01\xff\x00\x00\x00\x00\x00\x00\x00")  # month 13


def test_readings_and_areadings_loop(meter):
    rows = _profile(3)
    d = meter(rows=rows)
    clock = [T0 + 3 * IV + 40.0]
    src = DlmsSource(
        _settings(d), interval_seconds=IV, backfill_intervals=3, clock=lambda: clock[0]
    )
    it = src.readings()
    assert [next(it).energy_wh for _ in range(3)] == _expected(rows)
    src.close()
    assert list(it) == []

    src2 = DlmsSource(
        _settings(d), interval_seconds=IV, backfill_intervals=3, clock=lambda: clock[0]
    )

    async def collect():
        out = []
        async for r in src2.areadings():
            out.append(r.energy_wh)
            if len(out) == 3:
                break
        return out

    assert asyncio.run(collect()) == _expected(rows)


def test_unreadable_power_does_not_lose_energy(meter, caplog):
    rows = _profile(2)
    d = meter(rows=rows, no_power=True)
    src = DlmsSource(_settings(d), interval_seconds=IV, backfill_intervals=2)
    with caplog.at_level(logging.WARNING):
        got = src.poll(now=T0 + 2 * IV + 40)
    assert [r.energy_wh for r in got] == _expected(rows)
    assert src.latest_power_w is None and "power registers unreadable" in caplog.text
