"""The head-end's enrolment state machine (ENROLMENT), table-driven, on a real registry file.

A meter id is driven into each state (new, invited, active, reinvited, revoked) and given each
input (invite, invite --replace, enrol, revoke): a refused pair raises the table's error and
leaves the registry's rows and version as they were; an allowed one moves the state as the
table says.  The states are derived from the rows, whose format is unchanged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from privmeter.app.state import generate
from privmeter.crypto.signing import SigningKey
from privmeter.parties.enrolment import (
    ENROLMENT,
    EnrolmentInput,
    EnrolmentState,
    EnrolRequest,
    MemberStatus,
    Ticket,
    enrol_mac,
)
from privmeter.parties.registry import Registry

HE = SigningKey.from_seed(b"e" * 32)
KW = {"plans": {"economy7"}, "min_bits": 2048, "group_size": 3}
MID = "m-1"


@pytest.fixture(scope="module")
def household_pub(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("hh")
    generate("household", d, key_bits=2048)
    return (d / "household.pub.json").read_text()


class Reg:
    def __init__(self, path: Path, pub: str) -> None:
        self.path, self.pub = path, pub
        self.reg = Registry(path)
        self.ticket: Ticket | None = None
        self.meter = SigningKey.generate()

    def invite(self, replace: bool = False) -> None:
        self.ticket = self.reg.invite(MID, HE.verify_key, replace=replace)
        self.meter = SigningKey.generate()  # new keys with every ticket

    def enrol(self) -> None:
        t = self.ticket or Ticket.new(MID, HE.verify_key)  # no ticket: any code is refused
        mac = enrol_mac(
            t.mac_key(),
            meter_id=MID,
            meter_key=self.meter.verify_key,
            headend_key=HE.verify_key,
            household_key_json=self.pub,
            plan_id="economy7",
        )
        req = EnrolRequest(meter_id=MID, household_key_json=self.pub, plan_id="economy7", mac=mac)
        self.reg.enrol(req, self.meter.verify_key, HE.verify_key, **KW)  # type: ignore[arg-type]

    def revoke(self) -> None:
        self.reg.revoke(MID)

    def rows(self) -> tuple[object, ...]:
        db = sqlite3.connect(self.path)
        try:
            return (
                self.reg.version(),
                db.execute("SELECT * FROM invites ORDER BY meter_id").fetchall(),
                db.execute("SELECT * FROM members ORDER BY meter_id").fetchall(),
                db.execute("SELECT * FROM retired ORDER BY meter_key").fetchall(),
            )
        finally:
            db.close()


REACH = {
    EnrolmentState.NEW: [],
    EnrolmentState.INVITED: ["invite"],
    EnrolmentState.ACTIVE: ["invite", "enrol"],
    EnrolmentState.REINVITED: ["invite", "enrol", "replace"],
    EnrolmentState.REVOKED: ["invite", "enrol", "revoke"],
}
ACT = {
    EnrolmentInput.INVITE: lambda r: r.invite(),
    EnrolmentInput.REPLACE: lambda r: r.invite(replace=True),
    EnrolmentInput.ENROL: lambda r: r.enrol(),
    EnrolmentInput.REVOKE: lambda r: r.revoke(),
}
STEP = {
    "invite": EnrolmentInput.INVITE,
    "replace": EnrolmentInput.REPLACE,
    "enrol": EnrolmentInput.ENROL,
    "revoke": EnrolmentInput.REVOKE,
}


@pytest.mark.parametrize("state", list(EnrolmentState), ids=lambda s: s.value)
@pytest.mark.parametrize("inp", list(EnrolmentInput), ids=lambda i: i.value)
def test_enrolment_table(
    tmp_path: Path, household_pub: str, state: EnrolmentState, inp: EnrolmentInput
) -> None:
    r = Reg(tmp_path / "registry.db", household_pub)
    for step in REACH[state]:
        ACT[STEP[step]](r)
    assert r.reg.state(MID) is state
    before = r.rows()
    if ENROLMENT.allowed(state, inp):
        ACT[inp](r)
        assert r.reg.state(MID) is ENROLMENT.next(state, inp)
        return
    refusal = ENROLMENT.refusal(state, inp)
    with pytest.raises(refusal.error) as ei:
        ACT[inp](r)
    assert type(ei.value) is refusal.error
    assert ei.value.context == {"state": state.value, "event": inp.value, "meter_id": MID}
    assert r.reg.state(MID) is state and r.rows() == before


def test_an_expired_ticket_is_no_ticket(tmp_path: Path, household_pub: str) -> None:
    r = Reg(tmp_path / "registry.db", household_pub)
    r.ticket = r.reg.invite(MID, HE.verify_key, now=1_000, ttl_s=10)
    assert r.reg.state(MID, now=1_010) is EnrolmentState.INVITED
    assert r.reg.state(MID, now=1_011) is EnrolmentState.NEW
    assert r.reg.state(MID) is EnrolmentState.NEW
    with pytest.raises(ENROLMENT.refusal(EnrolmentState.NEW, EnrolmentInput.ENROL).error):
        r.enrol()


def test_member_status_keeps_its_stored_strings(tmp_path: Path, household_pub: str) -> None:
    r = Reg(tmp_path / "registry.db", household_pub)
    r.invite()
    r.enrol()
    assert r.rows()[2][0][5] == "active"  # type: ignore[index]
    m = r.reg.member(MID)
    assert m is not None and m.status is MemberStatus.ACTIVE and m.status == "active"
    r.revoke()
    assert r.rows()[2][0][5] == "revoked"  # type: ignore[index]
    assert r.reg.summary()["members"][0]["status"] == "revoked"
