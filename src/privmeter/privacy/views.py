"""The two views of the same households: a conventional meter's, and privmeter's head-end's.

What it is for: the privacy evaluation runs the same attacks against

(a) **the conventional view**: what a utility receives from a conventional
    smart meter, each household's own readings at 1, 15 or 30 minutes
    (:meth:`Population.energy`, exact Wh per interval, the meters' carry rule);
(b) **privmeter's view**: what privmeter's head-end holds about a household
    (:func:`privmeter_view`): the total of the household's aggregation group
    per 15-minute interval, the comparison bits ``[power >= T]`` the meter
    answered within its plan's budget, and the bill for the period.

How view (b) is computed, and why that is faithful: the masked aggregation
(:mod:`privmeter.protocol.aggregation`) outputs, per interval, exactly the
sum of the group members' readings and the participant list (its tests
check exactness against plaintext, including dropouts); so the group total
here is the plaintext sum of the members' 15-minute readings, and
:func:`cross_check_aggregation` runs a few intervals of one group through
the real protocol objects to show the two agree.  Comparison bits are what
the secure comparison reveals (``[x >= T]``, its correctness is tested in
``tests/protocol/test_comparison.py``); the budget is the real meter-side
:class:`privmeter.protocol.demand_budget.ComparisonBudget`, which raises
:class:`~privmeter.errors.BudgetExceeded` beyond the plan, and refused
comparisons yield no bit.  The bill is the plaintext of the settled
statement (the household reveals it with its proof).

Groups: a household's group of size ``g`` is itself plus ``g - 1`` other
households drawn at random.  When the population is smaller than ``g``
(group 200 with 70 simulated households) the other members are drawn from
*other days* of other households (a household's trace rotated by whole
days: another plausible household on the same calendar), and only if that
pool is exhausted with replacement; :attr:`GroupView.reused` says so.

Labels (ground truth, per 30-minute evaluation interval): ``home`` if at
least half its minutes the household is at home (asleep or active);
``awake`` if at least half its minutes someone is at home and active
(scored only on intervals where the household is home: asleep vs awake);
``start[a]`` if appliance ``a`` switched on (off -> on) within the interval.

Units: Wh per interval, W, intervals ``floor(unix / interval_seconds)``.
Security assumption: none (evaluation harness).  Guarantee: deterministic
given the profiles and the ``rng`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privmeter.errors import BudgetExceeded, InvalidArgument
from privmeter.grid.devices.resample import interval_energy_wh
from privmeter.grid.synthetic.profiles import MINUTES_PER_DAY, HouseholdProfile
from privmeter.grid.tariff.plans import Plan
from privmeter.protocol.demand_budget import ComparisonBudget

__all__ = [
    "AGG_INTERVAL_S",
    "CONVENTIONAL_RESOLUTIONS",
    "EVAL_APPLIANCES",
    "EVAL_INTERVAL_S",
    "GROUP_SIZES",
    "ComparisonProbe",
    "ComparisonRecord",
    "GroupView",
    "Population",
    "answer_comparisons",
    "bills_micro",
    "cross_check_aggregation",
    "group_members",
    "privmeter_view",
]

EVAL_INTERVAL_S = 1800  # every attack is scored on the same 30-minute grid (the coarsest view)
AGG_INTERVAL_S = 900  # privmeter's aggregation interval (the project default)
CONVENTIONAL_RESOLUTIONS = (60, 900, 1800)  # what conventional meters report: 1, 15, 30 min
GROUP_SIZES = (1, 5, 10, 50, 200)
EVAL_APPLIANCES = (
    "kettle", "electric_shower", "washing_machine", "dish_washer", "tumble_dryer",
    "oven", "hob", "microwave", "iron", "vacuum",
)  # fmt: skip

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _block_any(a: BoolArray, k: int) -> BoolArray:
    return np.asarray(a.reshape(a.shape[0], -1, k).any(axis=2), dtype=bool)


def _block_frac(a: BoolArray, k: int) -> npt.NDArray[np.float64]:
    return np.asarray(a.reshape(a.shape[0], -1, k).mean(axis=2), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Population:
    """N households' 1-minute loads and ground truth as (N, minutes) arrays."""

    ids: tuple[str, ...]
    start_unix: int
    days: int
    minute_w: IntArray  # (N, minutes) net W
    occupancy: npt.NDArray[np.int8]  # (N, minutes) 0 away / 1 asleep / 2 active
    appliance_on: Mapping[str, BoolArray]  # name -> (N, minutes)

    @classmethod
    def from_profiles(
        cls, profiles: Sequence[HouseholdProfile], appliances: Sequence[str] = EVAL_APPLIANCES
    ) -> Population:
        if not profiles:
            raise InvalidArgument("need at least one household")
        starts = {p.start_unix for p in profiles}
        lengths = {p.minutes for p in profiles}
        if len(starts) != 1 or len(lengths) != 1:
            raise InvalidArgument("households must share start and length")
        minutes = lengths.pop()
        if minutes % MINUTES_PER_DAY:
            raise InvalidArgument(f"profiles must hold whole days, got {minutes} minutes")
        on = {
            a: np.stack([p.appliance_on[a] for p in profiles]).astype(bool)
            for a in appliances
            if all(a in p.appliance_on for p in profiles)
        }
        return cls(
            ids=tuple(p.household_id for p in profiles),
            start_unix=starts.pop(),
            days=minutes // MINUTES_PER_DAY,
            minute_w=np.stack([p.minute_w for p in profiles]).astype(np.int64),
            occupancy=np.stack([p.occupancy for p in profiles]).astype(np.int8),
            appliance_on=on,
        )

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def minutes(self) -> int:
        return int(self.minute_w.shape[1])

    def energy(self, interval_seconds: int) -> IntArray:
        """(N, intervals) exact Wh per interval: what each household's meter reports."""
        return np.stack([interval_energy_wh(row, interval_seconds) for row in self.minute_w])

    def power_at_end(self, interval_seconds: int) -> IntArray:
        """(N, intervals) the last minute's W of each interval (what a comparison reads)."""
        k = interval_seconds // 60
        return self.minute_w[:, k - 1 :: k]

    # -- ground truth on the evaluation grid ---------------------------------------------

    def labels_home(self) -> BoolArray:
        return _block_frac(self.occupancy > 0, EVAL_INTERVAL_S // 60) >= 0.5

    def labels_awake(self) -> BoolArray:
        return _block_frac(self.occupancy == 2, EVAL_INTERVAL_S // 60) >= 0.5

    def edges(self, appliance: str) -> tuple[BoolArray, BoolArray]:
        """(N, minutes) minutes where ``appliance`` switches on, and where it switches off."""
        on = self.appliance_on[appliance]
        rising = np.zeros_like(on)
        falling = np.zeros_like(on)
        rising[:, 1:] = on[:, 1:] & ~on[:, :-1]
        rising[:, 0] = on[:, 0]
        falling[:, 1:] = ~on[:, 1:] & on[:, :-1]
        return rising, falling

    def labels_start(self, appliance: str) -> BoolArray:
        return _block_any(self.edges(appliance)[0], EVAL_INTERVAL_S // 60)

    def eval_slots(self) -> int:
        return self.minutes * 60 // EVAL_INTERVAL_S


# -- groups ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupView:
    """What privmeter's head-end holds about every household for one group size."""

    group_size: int
    totals: IntArray  # (N, agg intervals) Wh: the total of household i's group
    members: tuple[tuple[tuple[int, int], ...], ...]  # per household: (household, day shift)
    reused: bool  # some member traces had to be reused (population too small)
    bits: npt.NDArray[np.int8]  # (N, agg intervals): -1 not asked/refused, else [power >= T]
    answered: IntArray  # (N, days) comparisons answered
    refused: IntArray  # (N, days) comparisons refused by the budget
    bill_micro: IntArray  # (N,) the settled bill for the period (micro-minor-units)


def group_members(
    victim: int, g: int, n: int, days: int, rng: random.Random
) -> tuple[list[tuple[int, int]], bool]:
    """``victim`` plus ``g - 1`` members as (household, day shift); True if any was reused."""
    if g < 1:
        raise InvalidArgument(f"group size must be >= 1, got {g!r}")
    others = [h for h in range(n) if h != victim]
    same_day = [(h, 0) for h in others]
    rng.shuffle(same_day)
    shifted = [(h, s) for s in range(1, days) for h in others]
    rng.shuffle(shifted)
    pool = same_day + shifted
    need = g - 1
    if need <= len(pool):
        return [(victim, 0), *pool[:need]], False
    if not pool:
        raise InvalidArgument(f"cannot build a group of {g} from one household")
    extra = [pool[rng.randrange(len(pool))] for _ in range(need - len(pool))]
    return [(victim, 0), *pool, *extra], True


def _group_total(energy: IntArray, members: Sequence[tuple[int, int]], per_day: int) -> IntArray:
    total = np.zeros(energy.shape[1], dtype=np.int64)
    for h, shift in members:
        total += np.roll(energy[h], shift * per_day) if shift else energy[h]
    return total


# -- comparisons -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComparisonProbe:
    """The utility's comparison plan: at these intervals of the day, ask ``[power >= T]``.

    ``slots`` are indices of 15-minute intervals within a day; the utility
    may list more than the budget allows (the meter refuses the rest).
    """

    slots: tuple[int, ...]
    threshold_w: int


@dataclass(frozen=True, slots=True)
class ComparisonRecord:
    bits: npt.NDArray[np.int8]
    answered: IntArray
    refused: IntArray


def answer_comparisons(
    pop: Population, plan: Plan, probe: ComparisonProbe, *, enforce: bool = True
) -> ComparisonRecord:
    """Every household's meter answers ``probe`` under its plan's budget (real budget class).

    With ``enforce=False`` the budget is unlimited (protections off).
    """
    per_day = MINUTES_PER_DAY * 60 // AGG_INTERVAL_S
    power = pop.power_at_end(AGG_INTERVAL_S)
    bits = np.full(power.shape, -1, dtype=np.int8)
    answered = np.zeros((pop.n, pop.days), dtype=np.int64)
    refused = np.zeros((pop.n, pop.days), dtype=np.int64)
    pb = plan.privacy
    for i in range(pop.n):
        budget = ComparisonBudget(
            comparisons_per_interval=pb.comparisons_per_interval if enforce else 1 << 30,
            comparisons_per_day=pb.comparisons_per_day if enforce else 1 << 30,
            same_threshold_for_group=pb.same_threshold_for_group,
            min_group_size=pb.min_group_size,
            interval_seconds=AGG_INTERVAL_S,
        )
        for d in range(pop.days):
            for s in probe.slots:
                t = d * per_day + s
                try:  # the budget is keyed on the compared reading's interval
                    budget.charge(pop.start_unix // AGG_INTERVAL_S + t)
                except BudgetExceeded:
                    refused[i, d] += 1
                    continue
                answered[i, d] += 1
                bits[i, t] = int(power[i, t] >= probe.threshold_w)
    return ComparisonRecord(bits=bits, answered=answered, refused=refused)


def bills_micro(pop: Population, plan: Plan) -> IntArray:
    """(N,) each household's bill for the whole period under ``plan`` (micro-minor-units).

    Energy at the plan's interval times the plan's price per interval; the
    standing charge is public and carries no information, so it is left out.
    """
    energy = pop.energy(plan.interval_seconds)
    first = pop.start_unix // plan.interval_seconds
    intervals = range(first, first + energy.shape[1])
    prices = plan.prices_for(intervals)
    p = np.array([prices[t] for t in intervals], dtype=np.int64)
    return np.asarray((energy * p).sum(axis=1), dtype=np.int64)


def privmeter_view(
    pop: Population,
    g: int,
    plan: Plan,
    probe: ComparisonProbe | None,
    *,
    rng: random.Random,
    energy: IntArray | None = None,
    comparisons: ComparisonRecord | None = None,
) -> GroupView:
    """View (b) for group size ``g``: group totals, budgeted comparison bits, bills."""
    per_day = MINUTES_PER_DAY * 60 // AGG_INTERVAL_S
    e = pop.energy(AGG_INTERVAL_S) if energy is None else energy
    totals = np.empty_like(e)
    members = []
    reused = False
    for v in range(pop.n):
        m, r = group_members(v, g, pop.n, pop.days, rng)
        reused |= r
        members.append(tuple(m))
        totals[v] = _group_total(e, m, per_day)
    if comparisons is None:
        if probe is None:
            shape = e.shape
            comparisons = ComparisonRecord(
                bits=np.full(shape, -1, dtype=np.int8),
                answered=np.zeros((pop.n, pop.days), dtype=np.int64),
                refused=np.zeros((pop.n, pop.days), dtype=np.int64),
            )
        else:
            comparisons = answer_comparisons(pop, plan, probe)
    return GroupView(
        group_size=g,
        totals=totals,
        members=tuple(members),
        reused=reused,
        bits=comparisons.bits,
        answered=comparisons.answered,
        refused=comparisons.refused,
        bill_micro=bills_micro(pop, plan),
    )


def cross_check_aggregation(
    pop: Population, members: Sequence[int], intervals: int = 3, *, seed: int = 1
) -> list[tuple[int, int]]:
    """Run ``intervals`` intervals of one group through the real masked aggregation.

    Returns ``[(protocol total, plaintext total), ...]`` for the intervals
    that became final; they must be equal (the evaluation relies on it).
    """
    from privmeter.sim.aggregation_group import make_group

    if len(members) < 3:
        raise InvalidArgument("the masked aggregation needs at least 3 members")
    energy = pop.energy(AGG_INTERVAL_S)
    sim = make_group(len(members), min_survivors=3, seed=seed, first_interval=0)
    ids = sorted(sim.meters)
    row = {mid: members[k] for k, mid in enumerate(ids)}
    sim.setup()
    out: list[tuple[int, int]] = []
    for _ in range(intervals + 1):
        res = sim.step(lambda mid, t: int(energy[row[mid], t]))
        if res is not None and res.total is not None:
            plain = int(sum(int(energy[h, res.interval]) for h in members))
            out.append((int(res.total[0]), plain))
    return out
