import json
import stat

import pytest

from privmeter.cli import main
from privmeter.errors import InvalidKey, UnsupportedVersion
from privmeter.parties.keys import (
    HouseholdKeys,
    load_keyfile,
    public_household_key,
    signing_key_from,
    verify_key_from,
)


def test_household_keyfile_roundtrip_and_proof(tmp_path, paillier_2048):
    _, sk = paillier_2048
    keys = HouseholdKeys(sk)
    d = keys.public_dict()
    pk = public_household_key(json.loads(json.dumps(d)))
    assert pk == keys.public_key
    # a proof for another key does not verify
    d2 = dict(d, wellformed_proof=d["wellformed_proof"][::-1])
    with pytest.raises(InvalidKey):
        public_household_key(d2)


def test_keygen_cli_meter_and_utility(tmp_path):
    assert main(["keygen", "meter", "--out", str(tmp_path), "--name", "m1"]) == 0
    assert main(["keygen", "utility", "--out", str(tmp_path)]) == 0
    priv = load_keyfile(tmp_path / "m1.json")
    pub = load_keyfile(tmp_path / "m1.pub.json")
    assert "signing_seed" not in pub
    assert stat.S_IMODE((tmp_path / "m1.json").stat().st_mode) == 0o600
    sk = signing_key_from(priv)
    assert sk.verify_key == verify_key_from(pub)
    sig = sk.sign(b"test", b"payload")
    verify_key_from(pub).verify(b"test", b"payload", sig)
    util = load_keyfile(tmp_path / "utility.json")
    assert signing_key_from(util, "feed_signing_seed").verify_key.hex() == util["feed_verify_key"]


def test_keyfile_wrong_format(tmp_path):
    p = tmp_path / "k.json"
    p.write_text(json.dumps({"format": "other/9", "role": "meter"}))
    with pytest.raises(UnsupportedVersion):
        load_keyfile(p)
