from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.privacy.metrics import LogisticModel, best_f1_threshold, bootstrap_gain, score


def test_score_exact() -> None:
    s = score([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert (s.accuracy, s.precision, s.recall) == (0.6, 2 / 3, 2 / 3)
    assert abs(s.f1 - 2 / 3) < 1e-12 and s.positives == 3 and s.n == 5


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_score_matches_definition(pairs: list[tuple[bool, bool]]) -> None:
    y = np.array([p[0] for p in pairs])
    g = np.array([p[1] for p in pairs])
    s = score(y, g)
    tp = int((y & g).sum())
    fp = int((~y & g).sum())
    fn = int((y & ~g).sum())
    assert s.accuracy == (y == g).mean()
    assert s.f1 == (0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))


def test_logistic_learns_separable_signal_and_threshold() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2))
    y = x[:, 0] + 0.1 * rng.normal(size=400) > 0.5
    m = LogisticModel().fit(x, y)
    acc = ((m.predict_proba(x) >= 0.5) == y).mean()
    assert acc > 0.95
    t = best_f1_threshold(m.predict_proba(x), y)
    assert score(y, m.predict_proba(x) >= t).f1 >= score(y, m.predict_proba(x) >= 0.5).f1


def test_bootstrap_gain_zero_for_identical_guesses() -> None:
    rng = random.Random(2)
    unit = np.repeat(np.arange(10), 20)
    y = np.array([rng.random() < 0.3 for _ in unit])
    g = np.array([rng.random() < 0.5 for _ in unit])
    est = bootstrap_gain(unit, y, g, g, metric="accuracy", rng=rng, n_boot=50)
    assert est.gain == 0.0 and est.low == 0.0 and est.at_baseline
