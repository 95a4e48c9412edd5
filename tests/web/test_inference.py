"""The raw-curve activity inference shown in the Privacy view."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.web.inference import infer_activities, occupancy_accuracy


def _curve() -> np.ndarray:
    x = np.full(600, 100, dtype=np.int64)  # standby
    x[100:103] += 2500  # kettle
    x[300:308] += 8000  # electric shower
    x[400:430] += 1500  # hob
    return x


def test_labels_and_activity() -> None:
    active, acts = infer_activities(_curve())
    assert [(a.minute, a.label) for a in acts] == [
        (100, "kettle"), (300, "electric shower"), (400, "cooking (hob / microwave)")]
    assert acts[1].minutes == 8 and acts[1].watts == 8000
    assert active[101] and active[304] and active[415]
    assert not active[0] and not active[200] and not active[599]


def test_accuracy_against_truth() -> None:
    active, _ = infer_activities(_curve())
    truth = np.where(np.asarray(active), 2, 1)
    acc, guess = occupancy_accuracy(active, truth)  # type: ignore[misc]
    assert acc == 1.0 and 0.5 <= guess < 1.0
    assert occupancy_accuracy([], []) is None


def test_pv_export_is_not_activity() -> None:
    sun = np.clip(np.sin(np.linspace(0, np.pi, 720)) * 2600, 0, None).astype(np.int64)
    x = 150 - sun  # a clear day's PV export, nobody home
    active, acts = infer_activities(x)
    assert not any(active[60:660]) and acts == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-5000, 12000), min_size=1, max_size=400))
def test_any_series(values: list[int]) -> None:
    active, acts = infer_activities(values)
    assert len(active) == len(values)
    for a in acts:
        assert 0 < a.minute < len(values) and a.minutes >= 1 and a.watts > 0
