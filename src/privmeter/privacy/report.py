"""The privacy evaluation end to end: simulate, attack both views, ledger, tables and plots.

What it is for: ``privmeter privacy`` and its tests.  :func:`run_evaluation`
simulates households (richardsonpy, cached), builds the conventional view at
1, 15 and 30 minutes and privmeter's view for each group size, runs the
occupancy and appliance attackers against all of them (folds by household),
the differencing and probing attacks with protections off and on, the
distributed-noise setting, and the leakage ledger; it returns one
JSON-ready dict (format :data:`REPORT_FORMAT`).  :func:`write_html` renders
it with plotly's bundled JavaScript inlined (no CDN, no network).

privmeter's view is scored in three variants per group size: the group
totals alone, plus the household's bill, plus its comparison bits.

The comparison probe the utility runs in privmeter's view asks ``[power >=
300 W]`` at eight times of day; the meters' budget (4 a day, 1 per
interval in the builtin plans) answers the first four and refuses the rest.

Security assumption: none (evaluation).  Guarantee: deterministic for a
given configuration (seeded), whatever the cache state.
"""

from __future__ import annotations

import html
import json
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privmeter.grid.synthetic.profiles import generate_households
from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.grid.tariff.plans import Plan
from privmeter.privacy.attacks import (
    AttackResult,
    SeriesView,
    appliance_features,
    evaluate,
    learn_signature,
    occupancy_features,
)
from privmeter.privacy.differencing import differencing_attack, probing_attack
from privmeter.privacy.ledger import (
    bill_bits_per_day,
    build_ledger,
    readings_bits_per_day,
)
from privmeter.privacy.noise import NoiseConfig, epsilon
from privmeter.privacy.views import (
    AGG_INTERVAL_S,
    CONVENTIONAL_RESOLUTIONS,
    EVAL_APPLIANCES,
    EVAL_INTERVAL_S,
    GROUP_SIZES,
    ComparisonProbe,
    GroupView,
    Population,
    answer_comparisons,
    cross_check_aggregation,
    group_members,
    privmeter_view,
)

__all__ = ["REPORT_FORMAT", "EvalConfig", "run_evaluation", "summary_rows", "write_html"]

REPORT_FORMAT = 1
PROBE = ComparisonProbe(
    slots=(30, 36, 48, 56, 68, 76, 84, 92),  # 07:30 09:00 12:00 14:00 17:00 19:00 21:00 23:00 UTC
    threshold_w=300,
)


@dataclass(frozen=True, slots=True)
class EvalConfig:
    households: int = 70  # 69 others x 3 days >= 199: a group of 200 without reusing a trace
    days: int = 3
    seed: int = 1
    plan: str = "lcl-flat"
    group_sizes: tuple[int, ...] = GROUP_SIZES
    resolutions: tuple[int, ...] = CONVENTIONAL_RESOLUTIONS
    appliances: tuple[str, ...] = EVAL_APPLIANCES
    epsilons: tuple[float, ...] = (1.0, 4.0, 16.0)
    sensitivity_wh: int = 1000  # DP clipping bound per 15-min reading (4 kW average)
    noise_group_sizes: tuple[int, ...] = (10, 50, 200)  # beyond the population: day-shifted traces
    differencing_group: int = 10
    folds: int = 4
    victims: int = 10  # households attacked by differencing / probing
    cache_dir: str | None = None
    workers: int | None = None
    cross_check: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _conventional(pop: Population, r: int) -> SeriesView:
    e = pop.energy(r).astype(np.float64) * 3600 / r
    return SeriesView(f"conventional {r // 60} min", r, e, pop.days)


VARIANTS = ("totals", "totals+bill", "totals+bill+bits")


def _privmeter_series(
    pop: Population, gv: GroupView, *, variant: str, mean_price: float
) -> SeriesView:
    n = pop.n
    e_slots = pop.eval_slots()
    hours = pop.days * 24
    bill_w = gv.bill_micro.astype(np.float64) / mean_price / hours  # Wh / h = mean W
    extras = [np.zeros((n, e_slots))]
    if "bill" in variant:
        extras = [np.repeat(np.log1p(np.maximum(bill_w, 0))[:, None], e_slots, axis=1)]
    if "bits" in variant:
        b = gv.bits.reshape(n, e_slots, EVAL_INTERVAL_S // AGG_INTERVAL_S).astype(np.float64)
        val = np.where(b < 0, 0.0, 2 * b - 1)  # +1 above T, -1 below, 0 not answered
        extras.append(val.sum(axis=2))
    name = f"privmeter g={gv.group_size} {variant}"
    power = gv.totals.astype(np.float64) * 3600 / AGG_INTERVAL_S / gv.group_size
    return SeriesView(name, AGG_INTERVAL_S, power, pop.days, extra=np.stack(extras, axis=2))


def _mean_price(plan: Plan, pop: Population) -> float:
    first = pop.start_unix // plan.interval_seconds
    n = pop.minutes * 60 // plan.interval_seconds
    prices = plan.prices_for(range(first, first + n))
    return float(statistics.fmean(prices.values()))


def _row(res: AttackResult | None, **meta: Any) -> dict[str, Any] | None:
    if res is None:
        return None
    return {**meta, **res.as_dict()}


def run_evaluation(
    cfg: EvalConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run everything; returns the report (a JSON-ready dict)."""
    say = progress or (lambda _msg: None)
    rng = random.Random(cfg.seed)
    plan = builtin_plan(cfg.plan)
    pb = plan.privacy
    say("households")
    profiles = generate_households(
        cfg.households,
        days=cfg.days,
        seed=cfg.seed,
        cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
        workers=cfg.workers,
    )
    pop = Population.from_profiles(profiles, cfg.appliances)
    y_home = pop.labels_home()
    y_awake = pop.labels_awake()
    e15 = pop.energy(AGG_INTERVAL_S)
    mean_price = _mean_price(plan, pop)
    comparisons = answer_comparisons(pop, plan, PROBE)

    views: list[tuple[SeriesView, dict[str, Any]]] = []
    for r in cfg.resolutions:
        views.append((_conventional(pop, r), {"kind": "conventional", "resolution_s": r}))
    group_views: dict[int, GroupView] = {}
    reused: dict[int, bool] = {}
    for g in cfg.group_sizes:
        gv = privmeter_view(
            pop,
            g,
            plan,
            PROBE,
            rng=random.Random(rng.getrandbits(64)),
            energy=e15,
            comparisons=comparisons,
        )
        group_views[g] = gv
        reused[g] = gv.reused
        meta = {
            "kind": "privmeter",
            "group_size": g,
            "reused_traces": gv.reused,
            "allowed_by_plan": g >= pb.min_group_size,
        }
        for variant in VARIANTS:
            views.append(
                (
                    _privmeter_series(pop, gv, variant=variant, mean_price=mean_price),
                    {**meta, "variant": variant},
                )
            )

    occupancy: list[dict[str, Any]] = []
    appliances: list[dict[str, Any]] = []
    edges = {a: pop.edges(a) for a in pop.appliance_on}
    starts = {a: pop.labels_start(a) for a in pop.appliance_on}
    for view, meta in views:
        say(f"attacks: {view.name}")
        f = occupancy_features(view)
        for task, y, mask in (("home/away", y_home, None), ("asleep/awake", y_awake, y_home)):
            row = _row(
                evaluate(
                    task,
                    view.name,
                    f,
                    y,
                    mask=mask,
                    folds=cfg.folds,
                    rng=random.Random(rng.getrandbits(64)),
                ),
                **meta,
            )
            if row:
                occupancy.append(row)
        if meta.get("kind") == "privmeter" and meta.get("variant") == "totals+bill+bits":
            continue  # the bits target occupancy; appliances: totals, and totals + bill
        for a in pop.appliance_on:
            rising, falling = edges[a]

            def feats(
                train: list[int], v: SeriesView = view, ri: Any = rising, fa: Any = falling
            ) -> Any:
                return appliance_features(v, learn_signature(v, ri, fa, train))

            row = _row(
                evaluate(
                    a,
                    view.name,
                    None,
                    starts[a],
                    folds=cfg.folds,
                    fold_features=feats,
                    rng=random.Random(rng.getrandbits(64)),
                ),
                appliance=a,
                **meta,
            )
            if row:
                appliances.append(row)

    say("differencing, probing, noise")
    victims = list(range(min(cfg.victims, pop.n)))
    per_day = 86400 // AGG_INTERVAL_S

    def group_rows(v: int, size: int) -> Any:
        """Row 0: the victim; then its group's other members (day-shifted traces if needed)."""
        members, _ = group_members(v, size, pop.n, pop.days, random.Random(rng.getrandbits(64)))
        return np.stack([np.roll(e15[h], s * per_day) if s else e15[h] for h, s in members])

    diff_rows: list[dict[str, Any]] = []
    g = cfg.differencing_group
    for prot in (False, True):
        results = []
        for v in victims:
            rows = group_rows(v, g)
            results.append(
                differencing_attack(
                    rows,
                    0,
                    list(range(len(rows))),
                    pb,
                    protections=prot,
                    rng=random.Random(rng.getrandbits(64)),
                )
            )
        diff_rows.append(_merge_diff(results))
    noise_rows: list[dict[str, Any]] = []
    for eps in cfg.epsilons:
        nc = NoiseConfig.for_target(
            eps, sensitivity_wh=cfg.sensitivity_wh, compositions=1, n_min=pb.min_survivors
        )
        for ng in cfg.noise_group_sizes:
            gsize = ng
            res = []
            for v in victims:
                rows = group_rows(v, ng)
                res.append(
                    differencing_attack(
                        rows,
                        0,
                        list(range(len(rows))),
                        pb,
                        protections=False,
                        noise=nc,
                        rng=random.Random(rng.getrandbits(64)),
                    )
                )
            row = _merge_diff(res)
            row.update(
                {
                    "epsilon_per_interval": eps,
                    "epsilon_per_day": round(
                        epsilon(nc.mu, cfg.sensitivity_wh, compositions=per_day, delta=nc.delta), 2
                    ),
                    "delta": nc.delta,
                    "mu": round(nc.mu, 1),
                    "noise_std_total_wh": round(nc.total_std(gsize), 1),
                    "sensitivity_wh": cfg.sensitivity_wh,
                    "requested_group_size": ng,
                }
            )
            noise_rows.append(row)
    power = pop.power_at_end(AGG_INTERVAL_S)
    median_w = int(np.median(power))
    probe_rows = []
    for prot in (False, True):
        pr = [
            probing_attack(
                power[v], pb, protections=prot, start_unix=pop.start_unix, prior_median_w=median_w
            )
            for v in victims
        ]
        probe_rows.append(
            {
                "protections": prot,
                "households": len(pr),
                "answered": sum(p.answered for p in pr),
                "refused": sum(p.refused for p in pr),
                "bits_per_day": round(statistics.fmean(p.bits_per_day for p in pr), 2),
                "mae_w": round(statistics.fmean(p.mae_w for p in pr), 1),
                "baseline_mae_w": round(statistics.fmean(p.baseline_mae_w for p in pr), 1),
            }
        )

    say("ledger")
    main_g = min((s for s in cfg.group_sizes if s >= pb.min_group_size), default=pb.min_group_size)
    ledger = build_ledger(pop.ids, comparisons.answered, plan, group_size=main_g, protections=True)
    ledger_off = build_ledger(pop.ids, comparisons.answered, plan, group_size=1, protections=False)
    cross = []
    if cfg.cross_check and pop.n >= 3:
        say("cross-check through the masked aggregation")
        members = list(range(min(5, pop.n)))
        cross = [
            {"protocol_total_wh": a, "plaintext_total_wh": b}
            for a, b in cross_check_aggregation(pop, members, 3, seed=cfg.seed)
        ]

    return {
        "format": REPORT_FORMAT,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("cache_dir", "workers")},
        "population": {
            "households": pop.n,
            "days": pop.days,
            "eval_interval_s": EVAL_INTERVAL_S,
            "home_rate": round(float(y_home.mean()), 4),
            "awake_rate_when_home": round(float(y_awake[y_home].mean()), 4),
            "appliance_starts": {a: int(s.sum()) for a, s in starts.items()},
            "reused_traces": reused,
        },
        "plan": {"id": plan.plan_id, "privacy": asdict(pb)},
        "probe": {
            "slots": list(PROBE.slots),
            "threshold_w": PROBE.threshold_w,
            "answered_per_day": float(comparisons.answered.mean()),
            "refused_per_day": float(comparisons.refused.mean()),
        },
        "cross_check": cross,
        "occupancy": occupancy,
        "appliances": appliances,
        "appliance_summary": _appliance_summary(appliances),
        "differencing": diff_rows,
        "noise": noise_rows,
        "probing": probe_rows,
        "ledger": {
            "accounting": "upper bounds in bits; see privmeter.privacy.ledger",
            "group_size": main_g,
            "bill_bits_per_day": round(bill_bits_per_day(plan), 3),
            "conventional_bits_per_day": {
                str(r): round(readings_bits_per_day(r), 1) for r in cfg.resolutions
            },
            "privmeter_mean_bits_per_day": round(statistics.fmean(e.total_bits for e in ledger), 3),
            "unprotected_mean_bits_per_day": round(
                statistics.fmean(e.total_bits for e in ledger_off), 1
            ),
            "entries": [e.as_dict() for e in ledger],
        },
        "verdict": _verdict(occupancy, appliances, pb.min_group_size),
    }


def _merge_diff(results: list[Any]) -> dict[str, Any]:
    est = sum(r.estimates for r in results)
    sq = sum((r.rmse_wh**2) * r.estimates for r in results if r.estimates)
    tot_sq = sum(r.total_rmse_wh**2 for r in results) / len(results)
    tot_mean = statistics.fmean(r.total_mean_wh for r in results)
    return {
        "protections": results[0].protections,
        "group_size": results[0].group_size,
        "victims": len(results),
        "intervals": sum(r.intervals for r in results),
        "estimates": est,
        "exact": sum(r.exact for r in results),
        "refused": sum(r.refused for r in results),
        "rmse_wh": round((sq / est) ** 0.5, 2) if est else None,
        "victim_std_wh": round(statistics.fmean(r.victim_std_wh for r in results), 2),
        "total_rmse_wh": round(tot_sq**0.5, 2),
        "total_relative_error": round(tot_sq**0.5 / max(tot_mean, 1e-9), 5),
    }


def _appliance_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault(
            r["view"],
            {
                "view": r["view"],
                "kind": r["kind"],
                "group_size": r.get("group_size"),
                "resolution_s": r.get("resolution_s"),
                "gains": [],
                "leaking": [],
            },
        )
        s["gains"].append(r["gain_f1"]["gain"])
        if not r["gain_f1"]["at_baseline"]:
            s["leaking"].append(r["appliance"])
    return [
        {k: v for k, v in s.items() if k != "gains"}
        | {"mean_f1_gain": round(statistics.fmean(s["gains"]), 4), "scored": len(s["gains"])}
        for s in out.values()
    ]


def _verdict(occ: list[dict[str, Any]], app: list[dict[str, Any]], min_g: int) -> dict[str, Any]:
    conv_leaks = [
        r for r in occ if r["kind"] == "conventional" and not r["gain_accuracy"]["at_baseline"]
    ]
    pm_rows = [r for r in occ if r["kind"] == "privmeter" and r["group_size"] >= min_g]
    pm_above = [
        f"{r['view']} {r['task']} (+{r['gain_accuracy']['gain']:.3f})"
        for r in pm_rows
        if not r["gain_accuracy"]["at_baseline"]
    ]
    app_pm = [
        f"{r['view']} {r['appliance']} (F1 +{r['gain_f1']['gain']:.3f})"
        for r in app
        if r["kind"] == "privmeter" and r["group_size"] >= min_g and not r["gain_f1"]["at_baseline"]
    ]
    return {
        "conventional_occupancy_leaks": len(conv_leaks),
        "privmeter_rows_at_baseline": len(pm_rows) - len(pm_above),
        "privmeter_rows": len(pm_rows),
        "privmeter_above_baseline": pm_above,
        "privmeter_appliance_above_baseline": app_pm,
    }


# -- output --------------------------------------------------------------------------


def summary_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The occupancy table (columns, rows) for the terminal."""
    cols = [
        "view",
        "task",
        "acc",
        "baseline acc",
        "acc gain [95% CI]",
        "F1",
        "baseline F1",
        "F1 gain [95% CI]",
    ]
    rows = []
    for r in report["occupancy"]:
        ga, gf = r["gain_accuracy"], r["gain_f1"]
        rows.append(
            [
                r["view"],
                r["task"],
                f"{r['attacker']['accuracy']:.3f}",
                f"{r['baseline']['accuracy']:.3f}",
                f"{ga['gain']:+.3f} [{ga['ci95'][0]:+.3f}, {ga['ci95'][1]:+.3f}]",
                f"{r['attacker']['f1']:.3f}",
                f"{r['baseline']['f1']:.3f}",
                f"{gf['gain']:+.3f} [{gf['ci95'][0]:+.3f}, {gf['ci95'][1]:+.3f}]",
            ]
        )
    return cols, rows


def _bar(
    title: str, rows: list[dict[str, Any]], key: str, label: Callable[[dict[str, Any]], str]
) -> Any:
    import plotly.graph_objects as go

    x = [label(r) for r in rows]
    y = [r[key]["gain"] for r in rows]
    lo = [r[key]["gain"] - r[key]["ci95"][0] for r in rows]
    hi = [r[key]["ci95"][1] - r[key]["gain"] for r in rows]
    colors = ["#c0392b" if r["kind"] == "conventional" else "#2471a3" for r in rows]
    fig = go.Figure(
        go.Bar(
            x=x, y=y, marker_color=colors, error_y={"type": "data", "array": hi, "arrayminus": lo}
        )
    )
    fig.update_layout(
        title=title, yaxis_title="gain over the time-of-day baseline", height=420, margin={"b": 140}
    )
    return fig


def write_html(report: dict[str, Any], path: Path) -> None:
    """Tables and plotly charts in one self-contained file (plotly.js inlined, no CDN)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    figs = []
    for task in ("home/away", "asleep/awake"):
        rows = [r for r in report["occupancy"] if r["task"] == task]
        figs.append(
            _bar(
                f"Occupancy {task}: accuracy gain (95 % CI by household)",
                rows,
                "gain_accuracy",
                lambda r: r["view"],
            )
        )
    summ = report["appliance_summary"]
    figs.append(
        go.Figure(
            go.Bar(
                x=[s["view"] for s in summ],
                y=[s["mean_f1_gain"] for s in summ],
                marker_color=[
                    "#c0392b" if s["kind"] == "conventional" else "#2471a3" for s in summ
                ],
            ),
            layout={
                "title": "Appliance switch-on detection: mean F1 gain over appliances",
                "height": 420,
            },
        )
    )
    nz = report["noise"]
    if nz:
        fig = go.Figure()
        for ng in sorted({r["requested_group_size"] for r in nz}):
            rs = [r for r in nz if r["requested_group_size"] == ng]
            fig.add_trace(
                go.Scatter(
                    x=[r["total_relative_error"] for r in rs],
                    y=[r["rmse_wh"] for r in rs],
                    text=[f"eps={r['epsilon_per_interval']}" for r in rs],
                    mode="lines+markers+text",
                    name=f"group {ng}",
                )
            )
        fig.update_layout(
            title="Distributed noise: differencing error vs cost on totals",
            xaxis_title="relative RMS error of the group total",
            yaxis_title="RMS error of the victim's reading by differencing (Wh)",
            height=420,
        )
        figs.append(fig)
    led = report["ledger"]
    per_hh: dict[str, list[float]] = {}
    for e in led["entries"]:
        per_hh.setdefault(e["household_id"], []).append(e["total_bits"])
    figs.append(
        go.Figure(
            go.Bar(x=list(per_hh), y=[statistics.fmean(v) for v in per_hh.values()]),
            layout={
                "title": f"Leakage ledger: bits per day per household (privmeter, group "
                f"{led['group_size']}, protections on)",
                "height": 380,
            },
        )
    )

    cols, rows = summary_rows(report)
    table = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
    for r in rows:
        table += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
    table += "</table>"
    body = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    verdict = html.escape(json.dumps(report["verdict"], indent=1))
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>privmeter privacy evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        "<h1>privmeter privacy evaluation</h1>"
        f"<p>{report['population']['households']} households x {report['population']['days']} days, "
        f"plan {html.escape(report['plan']['id'])}. Red: conventional meter; blue: privmeter.</p>"
        f"<h2>Occupancy</h2>{table}<h2>Charts</h2>{body}"
        f"<h2>Verdict</h2><pre>{verdict}</pre></body></html>"
    )
    path.write_text(doc, encoding="utf-8")
