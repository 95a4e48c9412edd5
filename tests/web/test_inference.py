"""The raw-curve activity inference shown in the Privacy view."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.web.inference import OccupancyScore, infer_activities, score_occupancy


def _curve() -> np.ndarray:
    x = np.full(600, 100, dtype=np.int64)  # standby
    x[100:103] += 2500  # kettle
    x[300:308] += 8000  # electric shower
    x[400:430] += 1500  # hob
    return x


def test_labels_and_activity() -> None:
    active, acts = infer_activities(_curve())
    assert [(a.minute, a.label) for a in acts] == [
        (100, "kettle"),
        (300, "electric shower"),
        (400, "cooking (hob / microwave)"),
    ]
    assert acts[1].minutes == 8 and acts[1].watts == 8000
    assert active[101] and active[304] and active[415]
    assert not active[0] and not active[200] and not active[599]


def test_score_against_truth() -> None:
    active, _ = infer_activities(_curve())
    truth = np.where(np.asarray(active), 2, 1)
    s = score_occupancy(active, truth)
    assert (
        s is not None
        and s.balanced_accuracy == 1.0
        and s.accuracy == 1.0
        and s.guess_accuracy == 0.5
    )
    assert score_occupancy([], []) is None


def test_any_constant_guess_scores_one_half() -> None:
    """The balanced measure gives a guess that ignores the curve 50 %, however lopsided the day."""
    truth = np.array([2] * 6 + [0] * 94)  # 6 % active: "never active" is 94 % accurate
    for guess in ([False] * 100, [True] * 100):
        s = score_occupancy(guess, truth)
        assert s is not None and s.balanced_accuracy == 0.5
    assert score_occupancy([False] * 100, truth).accuracy == 0.94  # type: ignore[union-attr]
    night = score_occupancy([False] * 10, [1] * 10)  # only one kind of minute: not defined
    assert night == OccupancyScore(10, 0, 0, 10, 10) and night.balanced_accuracy is None


def test_inference_beats_guessing_on_simulated_homes(sim_cache) -> None:  # type: ignore[no-untyped-def]
    """What docs/demo.md claims, measured: well above the 50 % of a guess on every simulated home."""
    from privmeter.grid.synthetic.profiles import generate_households

    homes = generate_households(6, days=1, seed=1, prosumer_share=0.25, cache_dir=sim_cache)
    scores = []
    for h in homes:
        active, _ = infer_activities(h.minute_w)
        s = score_occupancy(active, h.occupancy)
        assert s is not None and s.balanced_accuracy is not None
        scores.append(s.balanced_accuracy)
    assert min(scores) > 0.7 and sum(scores) / len(scores) > 0.8, scores


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
