"""Distributed discrete noise: each meter adds a Skellam share so the group total is DP.

What it is for: the optional differential-privacy setting of the
aggregation.  Each meter adds to its (clipped) reading an integer noise
share ``Poisson(mu / n_min) - Poisson(mu / n_min)`` before masking; the
masked sum is unchanged by the protocol, so the head-end learns

    total + Sk(mu * n / n_min),   n >= n_min surviving meters,

a symmetric Skellam variable (a difference of two Poisson variables of
parameter ``mu * n / n_min``; Skellam is closed under sums, which is why we
use it rather than the discrete Gaussian, whose sums are not discrete
Gaussian).  Shares are sized for ``n_min`` = the plan's ``min_survivors``,
so even if only the minimum number of meters contribute the total carries
at least ``Sk(mu)`` (variance ``2 mu``); with more survivors there is more
noise, never less.  Integers only; nothing leaves the integer domain.

Accounting (event-level: neighbouring datasets differ in one household's
reading in one interval by at most ``sensitivity`` Wh; readings are
clipped by the meter to ``[-sensitivity, sensitivity]`` in this setting):
the Skellam mechanism ``Sk(mu)`` (each Poisson of parameter ``mu``) is
``(alpha, eps(alpha))``-RDP with (Agarwal, Kairouz, Liu, NeurIPS 2021,
Thm 3.5, scalar so L1 = L2 = D, with ``2 alpha`` for ``2 alpha - 1`` to be
conservative)::

    eps(alpha) = alpha D^2 / (4 mu) + min(((2 alpha) D^2 + 6 D) / (16 mu^2), 3 D / (4 mu))

RDP composes by addition over the ``k`` intervals one accounts for (a
household's whole day: ``k = 96``), and converts to ``(eps, delta)``-DP by
``eps = min_alpha  k eps(alpha) + log(1/delta) / (alpha - 1)`` (Mironov
2017).  :func:`calibrate` finds the smallest ``mu`` meeting a target.

Security assumption: the meters draw shares from a good RNG and the
head-end cannot see individual shares (masked aggregation); a coalition of
the head-end with ``c`` meters removes their shares: sizing for ``n_min``
leaves noise only if ``n - c >= n_min``, which is what ``min_survivors``
already requires of the unmasking.
Guarantee: :func:`epsilon` is an upper bound on the privacy loss above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privmeter.errors import InvalidArgument

__all__ = [
    "DEFAULT_DELTA",
    "NoiseConfig",
    "calibrate",
    "epsilon",
    "rdp_skellam",
    "skellam_shares",
]

DEFAULT_DELTA = 1e-6  # well below 1 / (households in a city)
_ALPHAS = tuple([1.25, 1.5, 1.75, *range(2, 64), 80, 128, 256, 512, 1024])


def rdp_skellam(alpha: float, mu: float, sensitivity: float) -> float:
    """RDP of order ``alpha`` of ``Sk(mu)`` (each Poisson ``mu``) for a scalar of sensitivity D."""
    d = float(sensitivity)
    first = alpha * d * d / (4 * mu)
    second = min((2 * alpha * d * d + 6 * d) / (16 * mu * mu), 3 * d / (4 * mu))
    return first + second


def epsilon(
    mu: float, sensitivity: float, *, compositions: int = 1, delta: float = DEFAULT_DELTA
) -> float:
    """(eps, delta)-DP of ``compositions`` releases, each with ``Sk(mu)`` noise."""
    if mu <= 0:
        return math.inf
    return float(
        min(
            compositions * rdp_skellam(a, mu, sensitivity) + math.log(1 / delta) / (a - 1)
            for a in _ALPHAS
        )
    )


def calibrate(
    target_epsilon: float,
    sensitivity: float,
    *,
    compositions: int = 1,
    delta: float = DEFAULT_DELTA,
) -> float:
    """The smallest ``mu`` (to 0.1 %) with ``epsilon(mu, ...) <= target_epsilon``."""
    if target_epsilon <= 0:
        raise InvalidArgument(f"target epsilon must be positive, got {target_epsilon!r}")
    lo, hi = 1e-6, 1.0
    while epsilon(hi, sensitivity, compositions=compositions, delta=delta) > target_epsilon:
        hi *= 2
        if hi > 1e30:
            raise InvalidArgument("target unreachable")
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if epsilon(mid, sensitivity, compositions=compositions, delta=delta) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    """The distributed-noise setting: total noise ``Sk(mu)``, shares for ``n_min`` meters."""

    target_epsilon: float
    delta: float
    sensitivity_wh: int
    compositions: int  # intervals per accounting unit (a day)
    mu: float
    n_min: int

    @classmethod
    def for_target(
        cls,
        target_epsilon: float,
        *,
        sensitivity_wh: int,
        compositions: int,
        n_min: int,
        delta: float = DEFAULT_DELTA,
    ) -> NoiseConfig:
        mu = calibrate(target_epsilon, sensitivity_wh, compositions=compositions, delta=delta)
        return cls(target_epsilon, delta, sensitivity_wh, compositions, mu, n_min)

    @property
    def share_mu(self) -> float:
        return self.mu / self.n_min

    def total_std(self, n: int) -> float:
        """Std (Wh) of the noise in a total of ``n`` meters' shares."""
        return math.sqrt(2 * self.share_mu * n)

    def clip(self, readings: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.clip(readings, -self.sensitivity_wh, self.sensitivity_wh)


def skellam_shares(
    share_mu: float, shape: tuple[int, ...], rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Integer noise shares ``Poisson(share_mu) - Poisson(share_mu)`` (one per meter/interval)."""
    if share_mu < 0:
        raise InvalidArgument(f"share_mu must be non-negative, got {share_mu!r}")
    a = rng.poisson(share_mu, size=shape).astype(np.int64)
    b = rng.poisson(share_mu, size=shape).astype(np.int64)
    return a - b
