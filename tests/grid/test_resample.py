from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.grid.devices.resample import (
    coarsen_energy,
    interval_energy_wh,
    minutes_per_interval,
    refine_energy,
    resample_energy,
)

MINUTES = st.sampled_from([1, 5, 15, 30, 60])


@settings(max_examples=80, deadline=None)
@given(m=MINUTES, n=st.integers(1, 12), data=st.data())
def test_interval_energy_conserves_and_carries(m: int, n: int, data: st.DataObject) -> None:
    w = np.array(
        data.draw(st.lists(st.integers(-12_000, 15_000), min_size=m * n, max_size=m * n)),
        dtype=np.int64,
    )
    e = interval_energy_wh(w, m * 60)
    assert e.dtype == np.int64 and len(e) == n
    total_wmin = int(w.sum())
    assert int(e.sum()) == total_wmin // 60  # exact total, no drift
    # every prefix is within one Wh of the exact energy (carry rule)
    for k in range(1, n + 1):
        exact = int(w[: k * m].sum())
        got = int(e[:k].sum())
        assert 0 <= exact - 60 * got < 60


def test_interval_energy_known_values() -> None:
    # 15 minutes at 1000 W = 250 Wh; 15 minutes at 10 W = 2.5 Wh -> 2 then carry -> 3
    w = np.array([1000] * 15 + [10] * 15 + [10] * 15, dtype=np.int64)
    assert interval_energy_wh(w, 900).tolist() == [250, 2, 3]
    # export is negative, with the same floor rule
    assert interval_energy_wh(np.full(30, -10, dtype=np.int64), 900).tolist() == [-3, -2]


def test_interval_energy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of 60"):
        interval_energy_wh(np.zeros(10, dtype=np.int64), 90)
    with pytest.raises(ValueError, match="whole number"):
        interval_energy_wh(np.zeros(10, dtype=np.int64), 900)
    with pytest.raises(TypeError, match="integers"):
        interval_energy_wh(np.zeros(15), 900)
    with pytest.raises(ValueError, match="one-dimensional"):
        interval_energy_wh(np.zeros((15, 2), dtype=np.int64), 900)
    assert minutes_per_interval(1800) == 30


VALUES = st.lists(st.one_of(st.none(), st.integers(-5000, 5000)), max_size=30)


@settings(max_examples=80, deadline=None)
@given(values=VALUES, factor=st.integers(1, 6))
def test_refine_then_coarsen_is_identity(values: list[int | None], factor: int) -> None:
    fine = refine_energy(values, factor)
    assert len(fine) == len(values) * factor
    assert coarsen_energy(fine, factor) == values
    for i, v in enumerate(values):
        parts = fine[i * factor : (i + 1) * factor]
        if v is None:
            assert parts == [None] * factor
        else:
            assert sum(p for p in parts if p is not None) == v
            assert max(parts) - min(parts) <= 1  # type: ignore[type-var,operator]


def test_coarsen_missing_and_partial() -> None:
    assert coarsen_energy([1, 2, None, 4, 5, 6, 7], 2) == [3, None, 11]  # trailing 7 dropped
    assert resample_energy([1, 2, 3, 4], 900, 1800) == [3, 7]
    assert resample_energy([7], 1800, 900) == [3, 4]
    assert resample_energy([1, None], 900, 900) == [1, None]
    with pytest.raises(ValueError, match="neither divides"):
        resample_energy([1], 900, 1200)
    with pytest.raises(ValueError):
        coarsen_energy([1], 0)
