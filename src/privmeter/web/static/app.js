// privmeter live dashboard: vanilla JS + plotly.js (served locally), live over server-sent events.
"use strict";

const S = {
  ov: null, tab: "operator", meter: null, group: null,
  counts: {}, totals: {}, seenAlert: 0, lastDetail: 0, busy: false,
};
const COLORS = ["#2b6cb0", "#2f8f4e", "#805ad5", "#b7791f", "#c53030", "#319795"];
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c]));

function fmtTime(unix, withDay) {
  const d = new Date(unix * 1000);
  const hm = d.toISOString().slice(11, 16);
  if (!withDay) return hm;
  const day = d.toLocaleDateString("en-GB", {weekday: "short", day: "2-digit", month: "short", year: "numeric", timeZone: "UTC"});
  return day + " " + hm + " UTC";
}
function money(micro) {  // micro-minor-units -> pounds (GBP: 100 pence, 1 p = 10^6 units)
  if (micro === null || micro === undefined) return "—";
  return "£" + (micro / 1e8).toFixed(4);
}
function watts(w) { return w === null || w === undefined ? "—" : (Math.abs(w) >= 1000 ? (w / 1000).toFixed(2) + " kW" : w + " W"); }
const dates = (arr) => arr.map((u) => new Date(u * 1000));

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok) { const t = await r.text(); throw new Error(r.status + " " + t); }
  return r.json();
}
function post(path, body) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})});
}
const LAYOUT = {margin: {l: 46, r: 8, t: 6, b: 26}, showlegend: false, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  xaxis: {type: "date", tickformat: "%H:%M", gridcolor: "#edf0f3"}, yaxis: {gridcolor: "#edf0f3", ticksuffix: " W", zeroline: true},
  font: {size: 10}};
const CONFIG = {displayModeBar: false, responsive: true, staticPlot: false};

// ---- operator: feeder charts ---------------------------------------------------------------
function buildFeeders(ov) {
  const box = $("#feeders");
  box.innerHTML = "";
  ov.groups.forEach((g) => {
    const div = document.createElement("div");
    div.className = "feeder";
    div.id = "feeder-" + g.id;
    div.innerHTML = `<div class="head"><span>${esc(g.id)} <span class="sub">${g.members.length} homes</span></span>` +
      `<span class="total" id="total-${esc(g.id)}">—</span></div>` +
      `<div class="sub" id="sub-${esc(g.id)}">Cmin ${watts(g.cmin_w)} · Cmax ${watts(g.cmax_w)} (utility's private limits)</div>` +
      `<div class="plot" id="plot-${esc(g.id)}"></div>`;
    box.appendChild(div);
    S.totals[g.id] = {rows: [], last: -1};
  });
}
async function refreshTotals(ov) {
  for (const g of ov.groups) {
    const st = S.totals[g.id];
    if (!st || !g.last || g.last.interval <= st.last) continue;
    const res = await api(`/api/groups/${encodeURIComponent(g.id)}/totals?since=${st.last}`);
    res.totals.forEach((r) => st.rows.push(r));
    if (st.rows.length > 2000) st.rows.splice(0, st.rows.length - 2000);
    if (st.rows.length) st.last = st.rows[st.rows.length - 1].interval;
    drawFeeder(g, st.rows);
  }
}
function drawFeeder(g, rows) {
  const x = dates(rows.map((r) => r.time));
  const y = rows.map((r) => r.total_w);
  const evs = (S.events || []).filter((e) => e.group === g.id);
  const traces = [
    {x, y, type: "scatter", mode: "lines", line: {color: "#2b6cb0", width: 2, shape: "hv"}, name: "total"},
    {x: [x[0], x[x.length - 1]], y: [g.cmax_w, g.cmax_w], mode: "lines", line: {color: "#c53030", dash: "dash", width: 1}, name: "Cmax"},
    {x: [x[0], x[x.length - 1]], y: [g.cmin_w, g.cmin_w], mode: "lines", line: {color: "#b7791f", dash: "dot", width: 1}, name: "Cmin"},
    {x: dates(evs.map((e) => e.time - S.ov.interval_seconds)), y: evs.map((e) => e.trigger_total_w), mode: "markers", marker: {color: "#805ad5", size: 9, symbol: "star"}, name: "event"},
  ];
  const dropped = rows.filter((r) => r.dropped && r.dropped.length);
  if (dropped.length) traces.push({x: dates(dropped.map((r) => r.time)), y: dropped.map((r) => r.total_w), mode: "markers", marker: {color: "#b7791f", size: 5}, name: "recovered dropout"});
  Plotly.react("plot-" + g.id, traces, LAYOUT, CONFIG);
  const last = rows[rows.length - 1];
  if (last) {
    $("#total-" + CSS.escape(g.id)).textContent = last.total_w === null ? "not unmasked" : watts(last.total_w);
    $("#total-" + CSS.escape(g.id)).dataset.interval = last.interval;
    $("#sub-" + CSS.escape(g.id)).textContent = `Cmin ${watts(g.cmin_w)} · Cmax ${watts(g.cmax_w)} (private) · ` +
      `${last.survivors}/${g.members.length} meters` + (last.dropped.length ? ` · recovered without ${last.dropped.join(", ")}` : "");
  }
}

// ---- operator: events, bills, utility view --------------------------------------------------
// An event in which no home is on the wrong side of T. The utility picks T from the feeder's total
// alone (it never sees a reading), and for a curtailment never below the cap the households' plan sets
// for demand response: a home drawing less than its plan's cap is never asked to cut down.
function nobody(e) {
  const where = e.side === "above" ? "at or above" : "below";
  const why = e.side === "above"
    ? "T is never below the demand-response cap of the households' plan (a home under its cap is never asked to cut down); when the excess is spread over many homes, none is at or above it."
    : "no home was below T.";
  return `<span class="none" title="The utility picks T from the feeder total alone. ${why} The utility learns ${e.answered.length} zero bit(s), nothing else.">` +
    `nobody: no home ${where} T</span>`;
}
async function refreshEvents() {
  const res = await api("/api/events");
  S.events = res.events;
  const rows = res.events.map((e) => {
    const f = e.followed ? `${watts(e.followed.mean_total_w)} avg over ${e.followed.intervals} int. (${e.followed.change_w >= 0 ? "+" : ""}${watts(e.followed.change_w)})` : "in progress";
    return `<tr data-event="${esc(e.event_id)}"><td>${fmtTime(e.time)}</td><td>${esc(e.group)}${e.forced ? " (operator)" : ""}</td>` +
      `<td>${watts(e.trigger_total_w)} ${e.side === "above" ? "&gt;&nbsp;Cmax" : "&lt;&nbsp;Cmin"}</td><td>${esc(e.action)}<br><small>${e.side} T=${watts(e.threshold_w)}</small></td>` +
      `<td>${e.answered.length}</td><td>${e.targets.length ? esc(e.targets.join(", ")) : nobody(e)}</td><td>${f}</td></tr>`;
  });
  const probes = res.probes.map((p) => `<tr class="${p.refused ? "flagged" : ""}"><td>${fmtTime(p.time)}</td><td>${esc(p.group)}</td>` +
    `<td colspan="3">utility probe of ${esc(p.meter)}: ${p.steps.map((s) => s.answered ? `T=${s.threshold_w} W → ${s.bit ? "≥" : "<"}` : "refused").join(", ")}</td>` +
    `<td colspan="2">${p.refused ? "caught: " + esc(p.refused.split(":")[0]) + " (" + p.bits_learned + " bit learned)" : p.bits_learned + " bit(s)"}</td></tr>`);
  $("#events-table tbody").innerHTML = probes.concat(rows).join("") || `<tr><td colspan="7">no event yet</td></tr>`;
}
async function refreshBills() {
  const res = await api("/api/bills");
  $("#bills-table tbody").innerHTML = res.bills.slice(0, 200).map((b) => {
    const ok = b.status === "paid";
    const flagged = !ok && b.status !== "issued";
    let status = ok ? "✓ paid, proof verified" : esc(b.status);
    if (b.status.startsWith("dispute")) status = "✗ DISPUTED (" + esc(b.status.slice(8)) + ")" + (b.cheat ? " — utility cheat caught" : "");
    if (b.status === "invalid-proof") status = "✗ INVALID PROOF — under-report caught";
    return `<tr class="${flagged ? "flagged" : "ok"}" data-meter="${esc(b.meter_id)}"><td>${fmtTime(b.start_time)}–${fmtTime(b.end_time)}</td>` +
      `<td>${esc(b.meter_id)}</td><td class="status">${status}</td><td>${money(b.bill)}</td><td class="audit">${esc(b.audit || "")}</td></tr>`;
  }).join("") || `<tr><td colspan="5">first bills after ${S.ov ? S.ov.bill_intervals : "?"} intervals</td></tr>`;
}
async function refreshUtilityView() {
  if (!S.meter) return;
  const u = await api(`/api/households/${encodeURIComponent(S.meter)}/utility-view`);
  const rc = u.reading_ciphertexts.slice(0, 4).map((r) => `<div>${fmtTime(r.interval * S.ov.interval_seconds)} ${esc(r.kind)}: ${esc(r.ciphertext)}</div>`).join("");
  const mk = u.masked_inputs.slice(0, 4).map((m) => `<div>${fmtTime(m.interval * S.ov.interval_seconds)} masked: ${esc(m.masked.join(", "))}</div>`).join("");
  const bits = u.comparison_bits.map((b) => `<div>event ${esc(b.event_id.slice(0, 8))}: [x ≥ T=${b.threshold_w} W] = ${b.bit_x_ge_T ? 1 : 0}${b.directive ? " → directive" : ""}</div>`).join("") || "<div>none</div>";
  const acc = u.encrypted_bill_accumulator ? Object.entries(u.encrypted_bill_accumulator.cells).slice(0, 2).map(([k, v]) => `<div>${esc(k)}: ${esc(v)}</div>`).join("") : "<div>—</div>";
  $("#utility-view").innerHTML =
    `<div class="k">reading ciphertexts (Paillier, household key ${esc(u.registration ? u.registration.household_key_id : "")})</div>${rc}` +
    `<div class="k">masked aggregation inputs (uniform mod 2^64)</div>${mk}` +
    `<div class="k">comparison bits (1 bit per event, within the plan's budget)</div>${bits}` +
    `<div class="k">encrypted bill accumulator, current period</div>${acc}` +
    `<div class="k">plaintext readings held: <b>${u.plaintext_readings_held}</b></div>`;
}

// ---- household ----------------------------------------------------------------------------------
async function refreshHousehold() {
  if (!S.meter) return;
  const h = await api(`/api/households/${encodeURIComponent(S.meter)}`);
  const t0 = h.load.start_time;
  const x = h.load.minute_w.map((_, i) => new Date((t0 + 60 * i) * 1000));
  const rx = dates(h.readings_wh.map((r) => r.time));
  const ry = h.readings_wh.map((r) => r.wh * 4);
  const traces = [
    {x, y: h.load.minute_w, type: "scatter", mode: "lines", line: {color: "#2b6cb0", width: 1}, name: "my load (minute)"},
    {x: rx, y: ry, type: "scatter", mode: "lines", line: {color: "#2f8f4e", width: 2, shape: "hv"}, name: "15-min reading (encrypted for billing)"},
  ];
  const shapes = h.directives.map((d) => ({type: "rect", xref: "x", yref: "paper", x0: new Date(d.start_time * 1000), x1: new Date((d.start_time + 60 * d.minutes) * 1000), y0: 0, y1: 1, fillcolor: "#805ad5", opacity: 0.12, line: {width: 0}}));
  Plotly.react("hh-load", traces, {...LAYOUT, showlegend: true, legend: {orientation: "h", y: 1.12, x: 0}, margin: {l: 50, r: 8, t: 24, b: 26}, shapes}, CONFIG);
  const b = h.budget;
  const dr = h.plan.demand_response;
  $("#hh-plan").innerHTML = `<div><b>${esc(h.plan.name)}</b> (${esc(h.plan.tariff)} tariff)</div>` +
    (dr ? `<div>demand response: cap ${watts(dr.cap_w)}, penalty ${dr.penalty_price / 1000} p/kWh, rebate ${dr.rebate_price / 1000} p/kWh</div>` : "") +
    `<div style="margin-top:6px">comparisons used today: <b id="hh-budget">${b.used_today} / ${b.comparisons_per_day}</b> (≤ ${b.comparisons_per_interval} per interval)</div>` +
    `<div class="gauge"><div style="width:${Math.min(100, 100 * b.used_today / Math.max(1, b.comparisons_per_day))}%"></div></div>` +
    `<div>directives received: ${h.directives.length ? h.directives.map((d) => esc(d.action) + " at " + fmtTime(d.start_time)).join(", ") : "none"}</div>` +
    (h.offline ? `<div class="badtxt">meter offline</div>` : "");
  $("#hh-bills").innerHTML = h.bills.map((x) => `<div><b>${fmtTime(x.start_time)}–${fmtTime(x.end_time)}</b>: ${x.status === "paid" ? `<span class="good">${money(x.proven_bill)} ✓</span>` : `<span class="badtxt">${esc(x.status)}</span>`}<br><small>${esc(x.proof_check)}</small></div>`).join("") || "no bill yet";
  $("#hh-saw").innerHTML = `<div class="k">masked inputs (meaningless alone; summed over ${h.utility_saw.feeder_members} homes)</div>` +
    h.utility_saw.masked_inputs.map((m) => `<div>${fmtTime(m.interval * S.ov.interval_seconds)}: ${esc(m.masked.join(", "))}</div>`).join("") +
    `<div class="k">encrypted readings</div>` + h.utility_saw.ciphertexts.map((c) => `<div>${esc(c)}</div>`).join("");
}

// ---- privacy ------------------------------------------------------------------------------------
async function refreshPrivacy() {
  if (!S.meter) return;
  const p = await api(`/api/privacy/${encodeURIComponent(S.meter)}`);
  const c = p.conventional;
  const x = c.minute_w.map((_, i) => new Date((c.start_time + 60 * i) * 1000));
  const shapes = [];
  let s = -1;
  c.active.forEach((a, i) => {
    if (a && s < 0) s = i;
    if ((!a || i === c.active.length - 1) && s >= 0) { shapes.push({type: "rect", xref: "x", yref: "paper", x0: x[s], x1: x[i], y0: 0, y1: 1, fillcolor: "#b7791f", opacity: 0.12, line: {width: 0}}); s = -1; }
  });
  const acts = c.activities;
  const traces = [
    {x, y: c.minute_w, mode: "lines", line: {color: "#c53030", width: 1}, name: "raw"},
    {x: acts.map((a) => x[a.minute]), y: acts.map((a) => c.minute_w[a.minute]), mode: "markers+text", text: acts.map((a) => a.label.split(" ")[0]), textposition: "top center", textfont: {size: 9}, marker: {color: "#17324d", size: 6}, name: "inferred"},
  ];
  Plotly.react("pv-raw", traces, {...LAYOUT, shapes}, CONFIG);
  $("#pv-raw-text").innerHTML = `Anyone holding this curve reads off <b>${acts.length}</b> appliance uses (kettle, shower, cooking…) and when someone is up and about (shaded).` +
    " " + occupancyText(c.occupancy);
  const q = p.privmeter;
  Plotly.react("pv-priv", [{x: dates(q.feeder_total.map((r) => r.time)), y: q.feeder_total.map((r) => r.total_w), mode: "lines", line: {color: "#2b6cb0", width: 2, shape: "hv"}, name: "feeder total"}], LAYOUT, CONFIG);
  $("#pv-priv-text").innerHTML = `The utility sees only <b>${esc(q.feeder)}</b>'s total of <b>${q.feeder_members}</b> homes per interval, <b>${q.comparison_bits}</b> comparison bit(s) about this home, and <b>${q.bills}</b> proven bill total(s). No curve, no activities.`;
}

function pct(x) { return (100 * x).toFixed(0) + "%"; }
function occupancyText(o) {
  if (!o) return "";
  const hours = (o.minutes / 60).toFixed(o.minutes % 60 ? 1 : 0);
  if (o.balanced_accuracy === null) {
    return `<span id="pv-score" data-score="">Against the simulator's true occupancy: not scored yet — the last ${hours} h hold ${o.active_minutes ? "no quiet" : "no active"} minute.</span>`;
  }
  return `<span id="pv-score" data-score="${o.balanced_accuracy}">Against the simulator's true occupancy over the last ${hours} h it finds ` +
    `<b>${pct(o.active_found / o.active_minutes)}</b> of the ${o.active_minutes} minutes someone was up and about and is right about ` +
    `<b>${pct(o.quiet_right / o.quiet_minutes)}</b> of the ${o.quiet_minutes} quiet ones: a balanced accuracy of <b>${pct(o.balanced_accuracy)}</b>, ` +
    `where any guess made without the curve scores ${pct(o.guess_accuracy)}.</span>`;
}

// ---- header, alerts, selectors -------------------------------------------------------------------
// the controls that act on the running simulation: off once its period has ended
const CONTROLS = ["#btn-pause", "#btn-step", "#sel-speed", "#btn-event", "#btn-offline", "#btn-cheat", "#btn-probe", "#btn-underreport"];
function renderOverview(ov) {
  S.ov = ov;
  const st = $("#status");
  st.textContent = ov.status;
  st.className = "pill " + ov.status;
  $("#sim-clock").textContent = fmtTime(ov.sim_time, true);
  $("#btn-pause").textContent = ov.paused ? "Resume" : "Pause";
  $("#counts").textContent = `${ov.counts.events} events · ${ov.counts.paid} bills verified · ${ov.counts.flagged} flagged`;
  const list = $("#alerts");
  const fresh = ov.alerts.filter((a) => a.seq > S.seenAlert);
  fresh.forEach((a) => {
    const li = document.createElement("li");
    li.className = a.level;
    li.dataset.kind = a.kind;
    li.innerHTML = `<span class="t">${fmtTime(a.time)}</span>${esc(a.text)}`;
    list.insertBefore(li, list.firstChild);
    S.seenAlert = Math.max(S.seenAlert, a.seq);
  });
  while (list.children.length > 150) list.removeChild(list.lastChild);
  const ended = ov.status === "finished";
  document.body.classList.toggle("finished", ended);
  CONTROLS.forEach((id) => { $(id).disabled = ended; });
  if (ended) {
    $("#ended").innerHTML = `<b>The simulated period has ended</b> (${fmtTime(ov.first_interval * ov.interval_seconds, true)} – ` +
      `${fmtTime(ov.end_time, true)}). The dashboard keeps the final state; ` +
      `the controls are off because no more intervals run. To go on, restart <code>privmeter demo</code> (add <code>--days N</code> for a longer run).`;
  }
  const btn = $("#btn-offline");
  const m = ov.meters.find((x) => x.id === S.meter);
  btn.textContent = m && m.offline ? "Bring meter back online" : "Take meter offline";
  const c = ov.crypto;
  $("#footer").textContent = `${ov.households} households on ${ov.groups.length} feeders · ${ov.transport} · household keys ${c.household_key_bits}-bit Paillier` +
    (c.household_key_bits < c.default_key_bits ? ` (the demo uses ${c.household_key_bits} to start fast; the library default is ${c.default_key_bits})` : "") +
    ` · DGK ${c.dgk_bits}-bit comparisons · ${c.aggregation} · plan ${ov.plan}, bills every ${ov.bill_intervals} intervals · step ${ov.step_ms ?? "—"} ms · all figures from the live protocol objects`;
}
function fillSelectors(ov) {
  $("#sel-group").innerHTML = ov.groups.map((g) => `<option>${esc(g.id)}</option>`).join("");
  $("#sel-meter").innerHTML = ov.meters.map((m) => `<option value="${esc(m.id)}">${esc(m.id)} (${esc(m.group)})</option>`).join("");
  S.meter = ov.meters.length ? ov.meters[0].id : null;
  S.group = ov.groups.length ? ov.groups[0].id : null;
  document.querySelectorAll(".meter-name").forEach((e) => { e.textContent = S.meter; });
}

async function refreshDetails(force) {
  if (S.busy) return;
  S.busy = true;
  try {
    const ov = S.ov;
    await refreshTotals(ov);
    const c = ov.counts;
    if (force || c.events !== S.counts.events || c.probes !== S.counts.probes) await refreshEvents();
    if (force || c.bills !== S.counts.bills || c.flagged !== S.counts.flagged || c.paid !== S.counts.paid) await refreshBills();
    S.counts = {...c};
    const now = Date.now();
    if (force || now - S.lastDetail > 1500) {
      S.lastDetail = now;
      if (S.tab === "operator") await refreshUtilityView();
      if (S.tab === "household") await refreshHousehold();
      if (S.tab === "privacy") await refreshPrivacy();
    }
  } catch (e) {
    console.warn("refresh failed", e);
  } finally {
    S.busy = false;
  }
}

function control(path, body, label) {
  return post("/api/control/" + path, body).then(() => refreshDetails(true)).catch((e) => {
    const li = document.createElement("li");
    li.className = "warn";
    li.textContent = label + " failed: " + e.message;
    $("#alerts").insertBefore(li, $("#alerts").firstChild);
  });
}

function wire() {
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    S.tab = b.dataset.tab;
    document.querySelectorAll(".tab").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === "view-" + S.tab));
    refreshDetails(true).then(() => window.dispatchEvent(new Event("resize")));
  }));
  $("#sel-meter").addEventListener("change", (e) => {
    S.meter = e.target.value;
    document.querySelectorAll(".meter-name").forEach((x) => { x.textContent = S.meter; });
    if (S.ov) renderOverview(S.ov);
    refreshDetails(true);
  });
  $("#sel-group").addEventListener("change", (e) => { S.group = e.target.value; });
  $("#btn-pause").addEventListener("click", () => control(S.ov && S.ov.paused ? "resume" : "pause", {}, "pause"));
  $("#btn-step").addEventListener("click", () => control("step", {}, "step"));
  $("#sel-speed").addEventListener("change", (e) => control("speed", {speed: Number(e.target.value)}, "speed"));
  $("#btn-event").addEventListener("click", () => control("event", {group: $("#sel-group").value}, "event"));
  $("#btn-offline").addEventListener("click", () => {
    const m = S.ov.meters.find((x) => x.id === S.meter);
    control("offline", {meter: S.meter, offline: !(m && m.offline)}, "offline");
  });
  $("#btn-cheat").addEventListener("click", () => control("cheat", {meter: S.meter}, "cheat"));
  $("#btn-probe").addEventListener("click", () => control("probe", {meter: S.meter}, "probe"));
  $("#btn-underreport").addEventListener("click", () => control("underreport", {meter: S.meter}, "under-report"));
}

async function main() {
  wire();
  const ov = await api("/api/overview");
  fillSelectors(ov);
  buildFeeders(ov);
  const sp = $("#sel-speed");
  if (![...sp.options].some((o) => o.value === String(ov.speed))) sp.add(new Option("×" + ov.speed, String(ov.speed)));
  sp.value = String(ov.speed);
  renderOverview(ov);
  await refreshDetails(true);
  const es = new EventSource("/api/stream");
  es.addEventListener("overview", (m) => {
    renderOverview(JSON.parse(m.data));
    refreshDetails(false);
  });
  document.body.dataset.ready = "1";
}
main();
