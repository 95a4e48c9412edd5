from __future__ import annotations

import calendar
import datetime

import numpy as np
import pytest

from privmeter.grid.synthetic.pv import LONDON, PvSystem, Site, clear_sky_ghi_w_m2, pv_minute_w


def _midnight(d: datetime.date) -> int:
    return calendar.timegm(d.timetuple())


JUNE = _midnight(datetime.date(2013, 6, 21))
DECEMBER = _midnight(datetime.date(2013, 12, 21))


@pytest.fixture(scope="module")
def june() -> np.ndarray:
    return pv_minute_w(JUNE, 1440, system=PvSystem(kwp=4.0))


def test_zero_at_night_positive_at_noon_in_june(june: np.ndarray) -> None:
    assert june.dtype == np.int64 and len(june) == 1440
    assert (june >= 0).all()
    assert (june[:120] == 0).all()  # 00:00-02:00 UTC
    assert (june[22 * 60 :] == 0).all()  # after 22:00 UTC
    noon = june[12 * 60]
    assert 2500 < noon <= 4000  # a 4 kWp array near solar noon at midsummer, clear sky
    kwh_per_kwp = june.sum() / 60 / 1000 / 4.0
    assert 4.0 < kwh_per_kwp < 8.0  # clear midsummer day in London


def test_winter_is_shorter_and_weaker(june: np.ndarray) -> None:
    dec = pv_minute_w(DECEMBER, 1440, system=PvSystem(kwp=4.0))
    assert 0 < dec[12 * 60] < june[12 * 60]
    assert np.count_nonzero(dec) < np.count_nonzero(june)
    assert dec[: 7 * 60].sum() == 0  # before sunrise (~08:04 GMT)


def test_deterministic_and_scales_with_kwp(june: np.ndarray) -> None:
    again = pv_minute_w(JUNE, 1440, system=PvSystem(kwp=4.0))
    assert (again == june).all()
    half = pv_minute_w(JUNE, 1440, system=PvSystem(kwp=2.0))
    assert abs(int(half.sum()) * 2 - int(june.sum())) <= 1440  # linear up to per-minute rounding
    assert (pv_minute_w(JUNE, 60, system=PvSystem(kwp=0.0)) == 0).all()
    cloudy = pv_minute_w(JUNE, 1440, system=PvSystem(kwp=4.0, cloud_factor=0.3))
    assert cloudy.sum() < june.sum()


def test_clear_sky_ghi_and_location() -> None:
    ghi = clear_sky_ghi_w_m2(JUNE, 1440)
    assert ghi[0] == 0.0 and 700 < ghi[12 * 60] < 1000
    # the southern hemisphere is in winter in June
    sydney = Site(latitude=-33.87, longitude=151.21)
    assert clear_sky_ghi_w_m2(JUNE + 2 * 3600, 1, site=sydney)[0] < ghi[12 * 60]
    assert LONDON.latitude == 51.5


def test_validation() -> None:
    with pytest.raises(ValueError, match="whole minute"):
        pv_minute_w(JUNE + 1, 10)
    with pytest.raises(ValueError, match="kwp"):
        PvSystem(kwp=-1)
    with pytest.raises(ValueError, match="latitude"):
        Site(latitude=95)
    with pytest.raises(ValueError, match="cloud_factor"):
        PvSystem(cloud_factor=1.5)
