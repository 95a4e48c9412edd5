"""Scoring for the privacy evaluation: accuracy, F1, a small logistic model, bootstrap CIs.

What it is for: every attack in :mod:`privmeter.privacy.attacks` is a
*score* per (household, interval) turned into a yes/no guess; this module
fits that score on training households (logistic regression, Newton's
method, a little L2), picks the decision thresholds on the training
households only, scores the guesses on held-out households and puts an
error bar on the difference between two attackers by resampling *households*
(the unit that is independent), not intervals.

Metrics: accuracy, and F1 of the positive class (the event the attacker
looks for: "home", "awake", "appliance switched on").  The accuracy guess
uses the probability threshold 0.5 (Bayes-optimal for a calibrated model);
the F1 guess uses the threshold that maximises F1 on the training set.

Security assumption: none (plain statistics on simulated data).
Guarantee: deterministic given its inputs and the ``rng`` passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privmeter.errors import InvalidArgument, InvalidState, LocalProtocolError

__all__ = [
    "GainEstimate",
    "LogisticModel",
    "Scores",
    "best_f1_threshold",
    "bootstrap_gain",
    "score",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Scores:
    """Accuracy and F1 (positive class) of one set of guesses."""

    accuracy: float
    f1: float
    precision: float
    recall: float
    n: int
    positives: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": round(self.accuracy, 4),
            "f1": round(self.f1, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "n": self.n,
            "positives": self.positives,
        }


def _counts(y: BoolArray, guess: BoolArray) -> tuple[int, int, int, int]:
    tp = int(np.sum(y & guess))
    fp = int(np.sum(~y & guess))
    fn = int(np.sum(y & ~guess))
    tn = int(np.sum(~y & ~guess))
    return tp, fp, fn, tn


def _f1(tp: int, fp: int, fn: int) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def score(y_true: npt.ArrayLike, guess: npt.ArrayLike) -> Scores:
    """Accuracy, precision, recall and F1 of ``guess`` against ``y_true`` (bool arrays)."""
    y = np.asarray(y_true, dtype=bool)
    g = np.asarray(guess, dtype=bool)
    if y.shape != g.shape:
        raise InvalidArgument(f"shapes differ: {y.shape} vs {g.shape}")
    tp, fp, fn, tn = _counts(y, g)
    n = tp + fp + fn + tn
    return Scores(
        accuracy=(tp + tn) / n if n else 0.0,
        f1=_f1(tp, fp, fn),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        n=n,
        positives=tp + fn,
    )


def best_f1_threshold(p: FloatArray, y: BoolArray) -> float:
    """The probability threshold (guess positive iff ``p >= t``) maximising F1 on (p, y)."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return float("inf")  # nothing to find: never guess positive
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    fn = ys.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    # only cut between distinct probabilities
    last_of_run = np.r_[ps[1:] != ps[:-1], True]
    f1 = np.where(last_of_run, f1, -1.0)
    k = int(np.argmax(f1))
    return float(ps[k])


class LogisticModel:
    """L2-regularised logistic regression fitted by Newton's method (standardised inputs)."""

    def __init__(self, l2: float = 1.0, iterations: int = 30) -> None:
        self.l2 = l2
        self.iterations = iterations
        self.mean: FloatArray | None = None
        self.scale: FloatArray | None = None
        self.w: FloatArray | None = None
        self.f1_threshold = 0.5

    def _design(self, x: FloatArray) -> FloatArray:
        if self.mean is None or self.scale is None:
            raise LocalProtocolError("the model is used before fit()")
        z = (x - self.mean) / self.scale
        return np.hstack([np.ones((len(z), 1)), z])

    def fit(self, x: npt.ArrayLike, y: npt.ArrayLike) -> LogisticModel:
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=bool)
        if xa.ndim != 2 or len(xa) != len(ya) or len(ya) == 0:
            raise InvalidArgument(f"fit needs X (n, k) and y (n,), got {xa.shape} and {ya.shape}")
        self.mean = xa.mean(axis=0)
        sd = xa.std(axis=0)
        self.scale = np.where(sd > 1e-12, sd, 1.0)
        d = self._design(xa)
        t = ya.astype(np.float64)
        w = np.zeros(d.shape[1])
        prior = min(max(t.mean(), 1e-6), 1 - 1e-6)
        w[0] = np.log(prior / (1 - prior))
        reg = np.full(d.shape[1], self.l2)
        reg[0] = 1e-9

        def loss(w: FloatArray) -> float:
            z = d @ w
            return float(np.sum(np.logaddexp(0.0, z) - t * z) + 0.5 * np.sum(reg * w * w))

        cur = loss(w)
        for _ in range(self.iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(d @ w, -35, 35)))
            grad = d.T @ (p - t) + reg * w
            hess = (d * (p * (1 - p))[:, None]).T @ d + np.diag(reg)
            step = np.linalg.solve(hess, grad)
            lr = 1.0
            while lr > 1e-4:  # backtracking: Newton overshoots on nearly separable data
                cand = w - lr * step
                new = loss(cand)
                if new <= cur:
                    break
                lr /= 2
            else:
                break
            w, gain, cur = cand, cur - new, new
            if gain < 1e-9 * max(cur, 1.0):
                break
        self.w = w
        self.f1_threshold = best_f1_threshold(self.predict_proba(xa), ya)
        return self

    def predict_proba(self, x: npt.ArrayLike) -> FloatArray:
        if self.w is None:
            raise InvalidState("model is not fitted")
        d = self._design(np.asarray(x, dtype=np.float64))
        return 1.0 / (1.0 + np.exp(-np.clip(d @ self.w, -35, 35)))


@dataclass(frozen=True, slots=True)
class GainEstimate:
    """``attacker - baseline`` for one metric, with a household-bootstrap 95 % interval."""

    gain: float
    low: float
    high: float

    @property
    def at_baseline(self) -> bool:
        """The interval contains 0 (or lies below it): no measurable gain."""
        return self.low <= 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "gain": round(self.gain, 4),
            "ci95": [round(self.low, 4), round(self.high, 4)],
            "at_baseline": self.at_baseline,
        }


def bootstrap_gain(
    unit: npt.ArrayLike,
    y: npt.ArrayLike,
    guess: npt.ArrayLike,
    baseline: npt.ArrayLike,
    *,
    metric: str,
    rng: random.Random,
    n_boot: int = 300,
) -> GainEstimate:
    """Gain of ``guess`` over ``baseline`` in ``metric`` ("accuracy" or "f1").

    The interval resamples the units (households) with replacement and
    recomputes both metrics on the pooled counts: intervals of one household
    are correlated, households are not.
    """
    if metric not in ("accuracy", "f1"):
        raise InvalidArgument(f"metric must be 'accuracy' or 'f1', got {metric!r}")
    u = np.asarray(unit)
    ya = np.asarray(y, dtype=bool)
    ga = np.asarray(guess, dtype=bool)
    ba = np.asarray(baseline, dtype=bool)
    units, inv = np.unique(u, return_inverse=True)
    k = len(units)

    # per-unit confusion counts for both attackers: (k, 4)
    def per_unit(g: BoolArray) -> npt.NDArray[np.int64]:
        cells = np.stack([ya & g, ~ya & g, ya & ~g, ~ya & ~g], axis=1).astype(np.int64)
        out = np.zeros((k, 4), dtype=np.int64)
        np.add.at(out, inv, cells)
        return out

    ca, cb = per_unit(ga), per_unit(ba)

    def value(c: npt.NDArray[np.int64]) -> float:
        tp, fp, fn, tn = (int(v) for v in c)
        if metric == "accuracy":
            n = tp + fp + fn + tn
            return (tp + tn) / n if n else 0.0
        return _f1(tp, fp, fn)

    gain = value(ca.sum(axis=0)) - value(cb.sum(axis=0))
    np_rng = np.random.default_rng(rng.getrandbits(64))
    draws = np.empty(n_boot)
    for i in range(n_boot):
        idx = np_rng.integers(0, k, size=k)
        draws[i] = value(ca[idx].sum(axis=0)) - value(cb[idx].sum(axis=0))
    lo, hi = np.quantile(draws, [0.025, 0.975]) if k > 1 else (gain, gain)
    return GainEstimate(gain=gain, low=float(lo), high=float(hi))
