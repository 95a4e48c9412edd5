"""Inference attacks on a view of the households: occupancy and appliance activation.

What it is for: measuring what a curious utility can infer from what it
holds.  The attackers are the standard non-intrusive load monitoring
(NILM) detectors, trained on *other* households (cross-validation with
folds by household: a test household is never seen in training), applied
unchanged to every view:

* **occupancy** (home/away; asleep/awake among home intervals): per
  30-minute evaluation interval, the mean power, its excess over the day's
  base load (10th percentile of the day), the variability within the
  interval and over a rolling +-1 h window -- an occupied, awake home draws
  above its base load and switches things on and off; an empty or sleeping
  one sits at the fridge's cycle.  Combined by logistic regression;
* **appliance activation**: edge detection -- the largest upward step of
  the series inside the interval, matched to the appliance's signature (the
  median step seen at that appliance's switch-on in the training
  households, at the view's own resolution).

A view is a per-household power series at some resolution: the household's
own readings (conventional meter) or its group's total divided by the group
size (privmeter: that average is the best per-household estimate a total
gives, and scaling does not matter to a logistic model), plus, for
privmeter, the household's bill (as mean power over the period) and its
budgeted comparison bits.

No-information baseline: the utility knows the clock, so the baseline is
the same logistic model given only the time-of-day prior (the training
households' frequency of the label in each half-hour of the day).  This
beats a plain majority-class guess (people sleep at night whatever the
meter says), so "gain over the baseline" is what the *readings* add.

Security assumption: none; this is the adversary.  Guarantee:
deterministic given the inputs and the ``rng`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privmeter.errors import LocalProtocolError
from privmeter.privacy.metrics import (
    GainEstimate,
    LogisticModel,
    Scores,
    bootstrap_gain,
    score,
)
from privmeter.privacy.views import EVAL_INTERVAL_S

__all__ = [
    "ApplianceSignature",
    "AttackResult",
    "SeriesView",
    "appliance_features",
    "evaluate",
    "learn_signature",
    "occupancy_features",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ROLL_MINUTES = 60  # half-width of the rolling window for variability
BASE_PERCENTILE = 10  # the day's base load: fridge cycles, standby
MATCH_TOLERANCE = 0.2  # a step within ~20 % of the signature matches
MIN_POSITIVES = 5  # an appliance seen switching on fewer times is not scored


@dataclass(frozen=True, eq=False)
class SeriesView:
    """A view as the attacker holds it: (N, samples) average W per sample, plus extras.

    ``extra``: (N, E, k) additional features per evaluation interval (bill,
    comparison bits); may have k = 0.
    """

    name: str
    resolution_s: int
    power_w: FloatArray
    days: int
    extra: FloatArray = field(default_factory=lambda: np.zeros((0, 0, 0)))

    @property
    def per_eval(self) -> int:
        return EVAL_INTERVAL_S // self.resolution_s

    def windows(self) -> FloatArray:
        """(N, E, per_eval) samples inside each evaluation interval."""
        n, s = self.power_w.shape
        return self.power_w.reshape(n, s // self.per_eval, self.per_eval)

    def extras(self, n: int, e: int) -> FloatArray:
        return self.extra if self.extra.size else np.zeros((n, e, 0))


def _rolling_std(x: FloatArray, half: int) -> FloatArray:
    """Std over a centred window of 2*half+1 samples (edges: the available part)."""
    if half <= 0:
        return np.zeros_like(x)
    c1 = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    c2 = np.cumsum(np.pad(x * x, ((0, 0), (1, 0))), axis=1)
    s = x.shape[1]
    idx = np.arange(s)
    lo = np.clip(idx - half, 0, s)
    hi = np.clip(idx + half + 1, 0, s)
    cnt = (hi - lo).astype(np.float64)
    m = (c1[:, hi] - c1[:, lo]) / cnt
    v = (c2[:, hi] - c2[:, lo]) / cnt - m * m
    return np.sqrt(np.maximum(v, 0.0))


def _steps_up(view: SeriesView) -> FloatArray:
    """(N, E) the largest upward step between consecutive samples ending in each interval."""
    p = view.power_w
    d = np.diff(p, axis=1, prepend=p[:, :1])
    n = p.shape[0]
    return np.asarray(
        np.maximum(d, 0.0).reshape(n, -1, view.per_eval).max(axis=2), dtype=np.float64
    )


def occupancy_features(view: SeriesView) -> FloatArray:
    """(N, E, k) the occupancy detector's inputs for every evaluation interval."""
    w = view.windows()
    n, e, _ = w.shape
    mean = w.mean(axis=2)
    within = w.std(axis=2)
    per_day_samples = view.power_w.shape[1] // view.days
    days = view.power_w.reshape(n, view.days, per_day_samples)
    base = np.percentile(days, BASE_PERCENTILE, axis=2)  # (N, days)
    base_e = np.repeat(base, e // view.days, axis=1)
    excess = mean - base_e
    half = max(ROLL_MINUTES * 60 // view.resolution_s, 1)
    roll = _rolling_std(view.power_w, half).reshape(n, e, -1).mean(axis=2)
    feats = [
        np.log1p(np.maximum(excess, 0.0)),
        np.log1p(np.maximum(mean, 0.0)),
        np.log1p(within),
        np.log1p(roll),
        np.log1p(_steps_up(view)),
    ]
    return np.concatenate([np.stack(feats, axis=2), view.extras(n, e)], axis=2)


@dataclass(frozen=True, slots=True)
class ApplianceSignature:
    """An appliance as seen at one view's resolution: its step up (W) and on-time (samples)."""

    step_w: float
    lag_samples: int


def _match(x: FloatArray, target: float) -> FloatArray:
    t = max(target, 1.0)
    return np.exp(-(((x - t) / (MATCH_TOLERANCE * t)) ** 2))


def learn_signature(
    view: SeriesView, rising: BoolArray, falling: BoolArray, rows: Sequence[int]
) -> ApplianceSignature:
    """From training households: the median step at switch-on and the median on-time.

    ``rising`` / ``falling``: (N, minutes) ground-truth switch-on / switch-off
    minutes.  Steps are read from the view itself (its resolution, and for
    privmeter the group average), so the signature is what this view shows.
    """
    k = view.resolution_s // 60
    p = view.power_w
    d = np.diff(p, axis=1, prepend=p[:, :1])
    steps: list[float] = []
    lags: list[int] = []
    for h in rows:
        ons = np.flatnonzero(rising[h])
        offs = np.flatnonzero(falling[h])
        for m in ons:
            steps.append(float(d[h, m // k]))
            later = offs[offs > m]
            if len(later):
                lags.append(int(later[0] // k - m // k))
    if not steps:
        return ApplianceSignature(step_w=0.0, lag_samples=1)
    lag = int(np.median(lags)) if lags else 1
    return ApplianceSignature(step_w=float(np.median(steps)), lag_samples=max(lag, 1))


def appliance_features(view: SeriesView, sig: ApplianceSignature) -> FloatArray:
    """(N, E, k) edge-detector inputs per evaluation interval.

    Per sample i: ``up_i`` = step up, matched to the signature's step; a
    *pair* score = that match times the best match of a step *down* of the
    same size ``lag/2 .. 2*lag+1`` samples later (the appliance switching
    off after its usual on-time).  Per interval: the largest step up, the
    best step match and the best pair score among its samples.
    """
    p = view.power_w
    n, s = p.shape
    d = np.diff(p, axis=1, prepend=p[:, :1])
    up = np.maximum(d, 0.0)
    down = np.maximum(-d, 0.0)
    m_up = _match(up, sig.step_w)
    m_down = _match(down, sig.step_w)
    lo = max(1, sig.lag_samples // 2)
    hi = min(2 * sig.lag_samples + 1, s - 1)
    best_down = np.zeros_like(p)
    for lag in range(lo, max(hi, lo) + 1):
        if lag >= s:
            break
        best_down[:, : s - lag] = np.maximum(best_down[:, : s - lag], m_down[:, lag:])
    pair = m_up * best_down
    per = view.per_eval

    def agg(a: FloatArray) -> FloatArray:
        return np.asarray(a.reshape(n, -1, per).max(axis=2), dtype=np.float64)

    feats = np.stack([np.log1p(agg(up)), agg(m_up), agg(pair)], axis=2)
    return np.concatenate([feats, view.extras(n, feats.shape[1])], axis=2)


def _slot_logit(y: BoolArray, mask: BoolArray, slots_per_day: int) -> FloatArray:
    """Per half-hour of day, the smoothed log-odds of the label among training rows."""
    n, e = y.shape
    slot = np.tile(np.arange(e) % slots_per_day, (n, 1))
    pos = np.bincount(slot[mask], weights=y[mask].astype(np.float64), minlength=slots_per_day)
    cnt = np.bincount(slot[mask], minlength=slots_per_day).astype(np.float64)
    p = (pos + 1.0) / (cnt + 2.0)
    return np.log(p / (1 - p))


@dataclass(frozen=True, slots=True)
class AttackResult:
    """One attacker against one view for one task, pooled over held-out households."""

    task: str
    view: str
    attacker: Scores
    baseline: Scores
    gain_accuracy: GainEstimate
    gain_f1: GainEstimate

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "view": self.view,
            "attacker": self.attacker.as_dict(),
            "baseline": self.baseline.as_dict(),
            "gain_accuracy": self.gain_accuracy.as_dict(),
            "gain_f1": self.gain_f1.as_dict(),
        }


def _folds(n: int, k: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    k = max(2, min(k, n))
    return [order[i::k] for i in range(k)]


def evaluate(
    task: str,
    view_name: str,
    features: FloatArray | None,
    y: BoolArray,
    *,
    rng: random.Random,
    mask: BoolArray | None = None,
    folds: int = 4,
    slots_per_day: int = 86400 // EVAL_INTERVAL_S,
    fold_features: Any = None,
) -> AttackResult | None:
    """Cross-validate the attacker (features + time of day) against the baseline (time of day).

    ``features``: (N, E, k).  ``y``: (N, E) labels.  ``mask``: (N, E) rows
    that count (e.g. only home intervals for asleep/awake).
    ``fold_features(train_idx) -> (N, E, k)`` replaces ``features`` when
    the features depend on training data (appliance signatures).
    Returns None when there are too few positives to score.
    """
    n, e = y.shape
    m = np.ones_like(y, dtype=bool) if mask is None else mask
    if int(y[m].sum()) < MIN_POSITIVES or int((~y[m]).sum()) < MIN_POSITIVES:
        return None
    fold_list = _folds(n, folds, random.Random(rng.getrandbits(64)))
    guess_a = np.zeros_like(y)
    guess_b = np.zeros_like(y)
    f1_a = np.zeros_like(y)
    f1_b = np.zeros_like(y)
    slot = np.tile(np.arange(e) % slots_per_day, (n, 1))
    for test in fold_list:
        train = [h for h in range(n) if h not in set(test)]
        tr = np.zeros(n, dtype=bool)
        tr[train] = True
        tr_mask = m & tr[:, None]
        if not y[tr_mask].any() or y[tr_mask].all():
            # a fold without both classes in training: fall back to the prior guess
            prior = bool(y[tr_mask].mean() >= 0.5) if tr_mask.any() else False
            guess_a[test] = prior
            guess_b[test] = prior
            f1_a[test] = prior
            f1_b[test] = prior
            continue
        logit = _slot_logit(y, tr_mask, slots_per_day)[slot][:, :, None]
        feats = fold_features(train) if fold_features is not None else features
        if not isinstance(feats, np.ndarray):
            raise LocalProtocolError(f"features must be an array, got {type(feats).__name__}")
        xa = np.concatenate([logit, feats], axis=2)
        xb = logit
        te_mask = np.zeros_like(m)
        te_mask[test] = m[test]
        for x, g, g1 in ((xa, guess_a, f1_a), (xb, guess_b, f1_b)):
            model = LogisticModel().fit(x[tr_mask], y[tr_mask])
            p = model.predict_proba(x[te_mask])
            g[te_mask] = p >= 0.5
            g1[te_mask] = p >= model.f1_threshold
    unit = np.tile(np.arange(n)[:, None], (1, e))[m]
    yt = y[m]
    r1 = random.Random(rng.getrandbits(64))
    return AttackResult(
        task=task,
        view=view_name,
        attacker=_combine(score(yt, guess_a[m]), score(yt, f1_a[m])),
        baseline=_combine(score(yt, guess_b[m]), score(yt, f1_b[m])),
        gain_accuracy=bootstrap_gain(unit, yt, guess_a[m], guess_b[m], metric="accuracy", rng=r1),
        gain_f1=bootstrap_gain(unit, yt, f1_a[m], f1_b[m], metric="f1", rng=r1),
    )


def _combine(acc: Scores, f1: Scores) -> Scores:
    """Accuracy from the 0.5 threshold, F1 (and its precision/recall) from the F1 threshold."""
    return Scores(
        accuracy=acc.accuracy,
        f1=f1.f1,
        precision=f1.precision,
        recall=f1.recall,
        n=acc.n,
        positives=acc.positives,
    )
