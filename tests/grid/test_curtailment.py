from __future__ import annotations

import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.grid.synthetic.curtailment import (
    apply_directive,
    apply_directive_to_profile,
    directive_window,
)
from privmeter.grid.synthetic.profiles import HouseholdProfile, generate_households


@st.composite
def load_and_window(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    n = draw(st.integers(4, 120))
    base = np.array(draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n)), dtype=np.int64)
    dfr = np.array(draw(st.lists(st.integers(0, 2500), min_size=n, max_size=n)), dtype=np.int64)
    pv = np.array(draw(st.lists(st.integers(0, 4000), min_size=n, max_size=n)), dtype=np.int64)
    start = draw(st.integers(0, n - 1))
    dur = draw(st.integers(1, n - start))
    return base + dfr - pv, dfr, pv, start, dur  # net = non-deferrable + deferrable - pv


@settings(max_examples=60, deadline=None)
@given(case=load_and_window(), limit=st.one_of(st.none(), st.integers(-2000, 5000)))
def test_shift_conserves_energy(case: tuple, limit: int | None) -> None:
    net, dfr, _pv, s, d = case
    before_net, before_dfr = net.copy(), dfr.copy()
    r = apply_directive(
        net, deferrable_w=dfr, start_minute=s, duration_minutes=d, action="shift", limit_w=limit
    )
    assert (net == before_net).all() and (dfr == before_dfr).all()  # inputs untouched
    assert int(r.minute_w.sum()) + r.carried_wmin == int(net.sum())
    assert int(r.deferrable_w.sum()) + r.carried_wmin == int(dfr.sum())
    assert r.net_change_wmin == -r.carried_wmin
    if s + 2 * d <= len(net):
        assert r.carried_wmin == 0 and int(r.minute_w.sum()) == int(net.sum())
    assert (r.deferrable_w >= 0).all()
    assert (r.minute_w[:s] == net[:s]).all()  # nothing before the window changes
    window = slice(s, s + d)
    assert (r.minute_w[window] <= net[window]).all()
    if limit is not None:  # removed no more than needed to reach the limit
        assert (r.minute_w[window] >= np.minimum(net[window], limit)).all()
    else:  # all deferrable load left the window
        assert (r.deferrable_w[window] == 0).all()


@settings(max_examples=50, deadline=None)
@given(case=load_and_window(), limit=st.one_of(st.none(), st.integers(-2000, 5000)))
def test_curtail_removes_only_deferrable_in_window(case: tuple, limit: int | None) -> None:
    net, dfr, _pv, s, d = case
    r = apply_directive(
        net, deferrable_w=dfr, start_minute=s, duration_minutes=d, action="curtail", limit_w=limit
    )
    assert int(net.sum()) - int(r.minute_w.sum()) == r.removed_wmin >= 0
    outside = np.ones(len(net), dtype=bool)
    outside[s : s + d] = False
    assert (r.minute_w[outside] == net[outside]).all()
    assert (net - r.minute_w <= dfr).all()  # never below the non-deferrable load
    assert r.added_wmin == 0 and r.carried_wmin == 0


@settings(max_examples=50, deadline=None)
@given(
    case=load_and_window(),
    extra=st.integers(0, 3000),
    limit=st.one_of(st.none(), st.integers(0, 8000)),
)
def test_take_more_pulls_load_forward(case: tuple, extra: int, limit: int | None) -> None:
    net, dfr, _pv, s, d = case
    r = apply_directive(
        net, deferrable_w=dfr, start_minute=s, duration_minutes=d, action="take_more",
        extra_w=extra, limit_w=limit,
    )  # fmt: skip
    assert int(r.minute_w.sum()) == int(net.sum()) + extra * d
    assert r.net_change_wmin == extra * d
    assert (r.minute_w[s : s + d] >= net[s : s + d]).all()
    assert (r.deferrable_w >= 0).all()
    assert (r.minute_w[:s] == net[:s]).all()


def test_known_shift() -> None:
    net = np.array([100, 2100, 2100, 100, 100, 100], dtype=np.int64)
    dfr = np.array([0, 2000, 2000, 0, 0, 0], dtype=np.int64)
    r = apply_directive(net, deferrable_w=dfr, start_minute=1, duration_minutes=2, action="shift")
    assert r.minute_w.tolist() == [100, 100, 100, 2100, 2100, 100]
    assert r.removed_wmin == r.added_wmin == 4000 and r.removed_wh == pytest.approx(66.67, abs=0.01)
    capped = apply_directive(
        net, deferrable_w=dfr, start_minute=1, duration_minutes=2, action="curtail", limit_w=1000
    )
    assert capped.minute_w.tolist() == [100, 1000, 1000, 100, 100, 100]
    late = apply_directive(
        net, deferrable_w=dfr, start_minute=1, duration_minutes=4, action="shift"
    )
    # minute 1 moves to 5, minute 2 would move to 6: past the end, carried to the next period
    assert late.carried_wmin == 2000 and late.minute_w.tolist() == [100, 100, 100, 100, 100, 2100]
    more = apply_directive(
        net[::-1].copy(),
        deferrable_w=dfr[::-1].copy(),
        start_minute=1,
        duration_minutes=2,
        action="take_more",
    )
    assert more.minute_w.tolist() == [100, 2100, 2100, 100, 100, 100]


def test_validation() -> None:
    net = np.zeros(10, dtype=np.int64)
    for kwargs in (
        {"start_minute": 8, "duration_minutes": 5, "action": "shift"},
        {"start_minute": -1, "duration_minutes": 2, "action": "shift"},
        {"start_minute": 0, "duration_minutes": 0, "action": "shift"},
        {"start_minute": 0, "duration_minutes": 2, "action": "explode"},
        {"start_minute": 0, "duration_minutes": 2, "action": "curtail", "extra_w": 5},
    ):
        with pytest.raises(ValueError):
            apply_directive(net, deferrable_w=net, **kwargs)
    with pytest.raises(ValueError, match="deferrable_w is required"):
        apply_directive(net, start_minute=0, duration_minutes=1, action="shift")
    with pytest.raises(ValueError, match="non-negative"):
        apply_directive(
            net, deferrable_w=net - 1, start_minute=0, duration_minutes=1, action="shift"
        )
    with pytest.raises(ValueError, match="integer"):
        apply_directive(
            net.astype(float), deferrable_w=net, start_minute=0, duration_minutes=1, action="shift"
        )


def test_directive_window() -> None:
    start = 1357000200 - 1800  # 2013-01-01T00:00Z
    assert directive_window(start, (start + 3600) // 900, 900) == (60, 15)
    assert directive_window(start, start // 1800 + 2, 1800, n_intervals=3) == (60, 90)
    with pytest.raises(ValueError):
        directive_window(start, start // 900 - 1, 900)


def test_real_household_shift(tmp_path_factory: pytest.TempPathFactory) -> None:
    (p,) = generate_households(
        1, days=1, seed=5, start=datetime.date(2013, 1, 7),
        cache_dir=tmp_path_factory.mktemp("c"), workers=1,
    )  # fmt: skip
    assert isinstance(p, HouseholdProfile)
    # shift the whole evening peak 17:00-20:00 by three hours
    q, r = apply_directive_to_profile(p, start_minute=17 * 60, duration_minutes=180, action="shift")
    assert int(q.minute_w.sum()) == int(p.minute_w.sum()) and r.carried_wmin == 0
    assert int(q.deferrable_w[17 * 60 : 20 * 60].sum()) == 0
    assert q.occupancy is p.occupancy and q.household_id == p.household_id
    assert not q.minute_w.flags.writeable
