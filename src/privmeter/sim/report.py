"""``report.json`` and ``report.html`` of a simulation run.

What it is for: :func:`write_report` writes the checked results of
:mod:`privmeter.sim.runner` as versioned JSON (``privmeter.sim.report/1``)
and as one self-contained HTML page with plotly charts: private totals
against the true totals, demand-management events and directives, bills
and their verification, per-step head-end costs and bytes per meter.  The
page inlines plotly's bundled JavaScript (no CDN, works offline).

``report.json`` keys (stable): ``aggregation.max_abs_error`` (0 when the
protocol is right), ``aggregation.intervals``, ``billing.households``,
``billing.verified``, ``billing.max_abs_error``, ``demand_response.events``,
``performance.headend_cpu_s``; the rest is documented in ``docs/simulate.md``.

Security: none (reporting).  The truth columns are the simulator's, shown
only to check the protocols.
"""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path
from typing import Any

__all__ = ["summary_lines", "write_report"]


def _fig_html(fig: Any) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))


def _times(res: dict[str, Any], intervals: list[int]) -> list[datetime.datetime]:
    """Interval numbers -> the UTC time each interval starts (what the report's x axes show)."""
    step = int(res.get("scenario", {}).get("interval_seconds", 900))
    return [datetime.datetime.fromtimestamp(t * step, datetime.UTC) for t in intervals]


def _figures(res: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    figs: list[tuple[str, Any]] = []
    when = {"xaxis_title": "time (UTC, start of the interval)"}
    series = res["aggregation"]["series"]
    groups = sorted({r["group"] for r in series})
    fig = go.Figure()
    for g in groups:
        rows = [r for r in series if r["group"] == g]
        xs = _times(res, [r["interval"] for r in rows])
        fig.add_scatter(
            x=xs, y=[r["total_wh"] for r in rows], name=f"{g} private total", mode="lines"
        )
        fig.add_scatter(
            x=xs,
            y=[r["truth_survivors_wh"] for r in rows],
            name=f"{g} true total",
            mode="markers",
            marker={"size": 4},
        )
    for e in res["demand_response"]["list"]:
        fig.add_vline(x=_times(res, [e["interval"]])[0], line_dash="dot", line_color="red")
    fig.update_layout(
        title="Private totals (masked aggregation) vs true totals; red: DR events",
        yaxis_title="Wh per interval",
        height=420,
        **when,
    )
    figs.append(("Totals", fig))
    tree = res["aggregation"].get("tree")
    if tree:
        fig = go.Figure()
        rs = tree["root_series"]
        xs = _times(res, [r["interval"] for r in rs])
        fig.add_scatter(x=xs, y=[r["total_wh"] for r in rs], name="substation (sum of feeders)")
        fig.add_scatter(
            x=xs, y=[r["truth_wh"] for r in rs], name="true", mode="markers", marker={"size": 4}
        )
        fig.update_layout(
            title="Tree: hierarchical substation total from the concentrators' feeder totals",
            yaxis_title="Wh per interval",
            height=360,
            **when,
        )
        figs.append(("Substation total", fig))
    fig = go.Figure()
    fig.add_bar(
        x=_times(res, [r["interval"] for r in series]),
        y=[r["error"] if r["error"] is not None else 0 for r in series],
        name="error (Wh)",
    )
    fig.update_layout(
        title="Aggregation error per interval (0 = exact)", yaxis_title="Wh", height=260, **when
    )
    figs.append(("Aggregation error", fig))
    ev = res["demand_response"]["list"]
    if ev:
        fig = go.Figure()
        xs = _times(res, [e["interval"] for e in ev])
        fig.add_bar(x=xs, y=[e.get("answers", 0) for e in ev], name="comparisons")
        fig.add_bar(x=xs, y=[e.get("targets", 0) for e in ev], name="directives")
        fig.update_layout(
            title="Demand-management events: comparisons answered and directives sent",
            barmode="group",
            yaxis_title="households",
            height=320,
            **when,
        )
        figs.append(("Demand response", fig))
    bills = res["billing"]["bills"]
    fig = go.Figure()
    ids = [b["meter_id"] for b in bills]
    fig.add_bar(x=ids, y=[b["truth"] / 1e6 for b in bills], name="plaintext bill (minor units)")
    fig.add_bar(
        x=ids, y=[(b["proven"] or 0) / 1e6 for b in bills], name="proven bill (minor units)"
    )
    fig.update_layout(
        title="Bills: plaintext truth vs the bill proven from E(bill)", barmode="group", height=360
    )
    figs.append(("Bills", fig))
    perf = res["performance"]
    steps = perf.get("headend_cpu_by_step_s", {})
    fig = go.Figure()
    fig.add_bar(x=list(steps), y=list(steps.values()), name="head-end CPU s")
    fig.update_layout(title="Head-end CPU per step (s)", height=300)
    figs.append(("Costs", fig))
    if perf.get("interval_wall_s"):
        fig = go.Figure()
        fig.add_scatter(y=perf["interval_wall_s"], mode="lines", name="wall s per interval")
        fig.update_layout(
            title="Wall time per interval round (s)",
            xaxis_title="interval round (1, 2, ...)",
            yaxis_title="s",
            height=260,
        )
        figs.append(("Rounds", fig))
    bpm = res.get("bytes_per_meter", {})
    if bpm:
        fig = go.Figure()
        fig.add_bar(x=list(bpm), y=[v["up"] for v in bpm.values()], name="up (meter -> head-end)")
        fig.add_bar(x=list(bpm), y=[v["down"] for v in bpm.values()], name="down")
        fig.update_layout(
            title="Bytes per meter over the run (codec messages)", barmode="stack", height=320
        )
        figs.append(("Bytes", fig))
    return figs


def summary_lines(res: dict[str, Any]) -> list[str]:
    a, b, d, p = res["aggregation"], res["billing"], res["demand_response"], res["performance"]
    tree = a.get("tree")
    extra = (
        []
        if not tree
        else [
            f"tree: {tree['concentrators']} concentrators, substation total max |error| = "
            f"{tree['root_max_abs_error']} Wh over {tree['root_intervals']} intervals"
        ]
    )
    return [
        f"aggregation ({a.get('topology', 'star')}): {a['intervals']} group-intervals unmasked "
        f"({a['failed_intervals']} failed), max |error| = {a['max_abs_error']} Wh",
        *extra,
        f"billing: {b['verified']}/{b['households']} bills verified (proof + audit), "
        f"max |error| = {b['max_abs_error']}",
        f"demand response: {d['events']} events, {d['directives']} directives",
        f"head-end CPU {p['headend_cpu_s']} s; wall {p.get('wall_s')} s",
    ]


def write_report(res: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.html``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    jp = out / "report.json"
    jp.write_text(json.dumps(res, indent=1, sort_keys=False, default=str))
    hp = out / "report.html"
    try:
        import plotly.offline

        js = plotly.offline.get_plotlyjs()
        body = "".join(f"<h2>{html.escape(t)}</h2>{_fig_html(f)}" for t, f in _figures(res))
    except ImportError:  # plotly is a dependency; keep the JSON even if it is missing
        js, body = "", "<p>plotly is not installed: see report.json</p>"
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in summary_lines(res))
    scen = html.escape(json.dumps(res.get("scenario", {}), indent=1))
    hp.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>privmeter simulation report</title>"
        f"<script>{js}</script><style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}</style>"
        f"</head><body><h1>privmeter simulation report</h1><ul>{summary}</ul>{body}"
        f"<h2>Scenario</h2><pre>{scen}</pre></body></html>"
    )
    return jp, hp
