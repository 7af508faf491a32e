//! `GET /`: the dashboard page. It holds no data: its script fetches `/api/status` and
//! `/api/workers` every refresh interval and fills the page with `textContent` (never HTML,
//! so an item's error text cannot inject markup). Everything is inline — no CDN, no fonts —
//! so it works on a machine without internet. Stable element ids (`count-pending`,
//! `workers-dead`, `recovery-recovered`, …) let tests and scrapers read it.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// `GET /`.
pub(crate) async fn page(State(app): State<AppState>) -> Response {
    let refresh = app.cfg.refresh.as_millis().to_string();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE.replace("__REFRESH_MS__", &refresh),
    )
        .into_response()
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>leasehold dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 20px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: #aab; font-size: 12px; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; padding: 16px 20px; }
  section { overflow-x: auto; background: #fff; border-radius: 6px; padding: 12px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  section h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em; color: #556; }
  .tiles { display: flex; gap: 10px; flex-wrap: wrap; }
  .tile { min-width: 80px; padding: 6px 10px; border-radius: 4px; background: #eef1f5; }
  .tile .n { font-size: 22px; font-weight: 600; display: block; }
  .tile .l { font-size: 11px; color: #667; }
  .pending { color: #8a6d00; } .in_progress { color: #1f5fbf; } .completed { color: #1b7f3b; }
  .failed { color: #b3261e; } .cancelled { color: #666; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eee; vertical-align: top; }
  th { color: #667; font-weight: 500; }
  tr[data-state="dead"] td { background: #fdecea; }
  tr[data-state="stopped"] td { color: #888; }
  td.err { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; word-break: break-word; }
  #error { display: none; background: #b3261e; color: #fff; padding: 8px 20px; }
  .legend span { margin-right: 12px; font-size: 12px; }
  .sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: middle; }
</style>
</head>
<body data-loaded="0">
<header><h1>leasehold</h1><span class="meta">updated <span id="updated">never</span> · refreshes every <span id="refresh">__REFRESH_MS__</span> ms</span></header>
<div id="error"></div>
<main>
<section>
  <h2>Queue</h2>
  <div class="tiles">
    <div class="tile"><span class="n pending" id="count-pending">–</span><span class="l">pending</span></div>
    <div class="tile"><span class="n in_progress" id="count-in_progress">–</span><span class="l">in progress</span></div>
    <div class="tile"><span class="n completed" id="count-completed">–</span><span class="l">completed</span></div>
    <div class="tile"><span class="n failed" id="count-failed">–</span><span class="l">failed</span></div>
    <div class="tile"><span class="n cancelled" id="count-cancelled">–</span><span class="l">cancelled</span></div>
    <div class="tile"><span class="n" id="count-total">–</span><span class="l">total</span></div>
  </div>
  <h2 style="margin-top:12px">Open work by kind</h2>
  <table><thead><tr><th>kind</th><th>pending</th><th>in progress</th></tr></thead><tbody id="kinds"></tbody></table>
</section>
<section>
  <h2>Finished per minute (last <span id="chart-minutes">15</span> min)</h2>
  <svg id="chart" width="100%" height="140" viewBox="0 0 450 140" preserveAspectRatio="none" role="img" aria-label="completions and failures per minute"></svg>
  <div class="legend"><span><i class="sw" style="background:#1b7f3b"></i>completed <b id="chart-completed">0</b></span><span><i class="sw" style="background:#b3261e"></i>failed <b id="chart-failed">0</b></span></div>
</section>
<section>
  <h2>Recovery</h2>
  <div class="tiles">
    <div class="tile"><span class="n" id="recovery-recovered">–</span><span class="l">recovered (all)</span></div>
    <div class="tile"><span class="n" id="recovery-on-start">–</span><span class="l">by recover_mine</span></div>
    <div class="tile"><span class="n" id="recovery-reaper">–</span><span class="l">by reapers</span></div>
    <div class="tile"><span class="n" id="recovery-monitor">–</span><span class="l">by monitors</span></div>
    <div class="tile"><span class="n failed" id="recovery-expired">–</span><span class="l">expired leases now</span></div>
    <div class="tile"><span class="n failed" id="recovery-held">–</span><span class="l">held by dead nodes</span></div>
  </div>
</section>
<section style="grid-column: 1 / -1">
  <h2>Workers</h2>
  <div class="tiles">
    <div class="tile"><span class="n completed" id="workers-alive">–</span><span class="l">alive</span></div>
    <div class="tile"><span class="n failed" id="workers-dead">–</span><span class="l">dead</span></div>
    <div class="tile"><span class="n cancelled" id="workers-stopped">–</span><span class="l">stopped</span></div>
  </div>
  <table><thead><tr><th>worker type</th><th>alive</th><th>dead</th><th>stopped</th></tr></thead><tbody id="worker-types"></tbody></table>
  <table style="margin-top:8px"><thead><tr><th>node</th><th>state</th><th>status</th><th>current item</th><th>lease left</th><th>since heartbeat</th><th>task</th></tr></thead><tbody id="workers"></tbody></table>
</section>
<section style="grid-column: 1 / -1">
  <h2>Recent failures</h2>
  <table><thead><tr><th>item</th><th>kind</th><th>attempts</th><th>finished</th><th>error</th></tr></thead><tbody id="failures"></tbody></table>
</section>
</main>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { "Authorization": "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
const set = (id, v) => { $(id).textContent = String(v); };

async function get(path) {
  const r = await fetch(path, { headers, cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg += ": " + (await r.json()).error; } catch (e) {}
    throw new Error(path + ": " + msg);
  }
  return r.json();
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  for (const c of cells) {
    const td = document.createElement("td");
    if (c && typeof c === "object") { td.textContent = c.text; td.className = c.cls; } else { td.textContent = c; }
    tr.appendChild(td);
  }
  return tr;
}

function fill(id, rows) { $(id).replaceChildren(...rows); }

function ago(ms, now) {
  if (ms == null) return "–";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 60 ? s + "s ago" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s ago";
}

function chart(buckets) {
  const svg = $("chart");
  const ns = "http://www.w3.org/2000/svg";
  const w = 450, h = 120, n = buckets.length, slot = w / n, bar = Math.max(2, slot / 2 - 2);
  const max = Math.max(1, ...buckets.map(b => Math.max(b.completed, b.failed)));
  const nodes = [];
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", 0); axis.setAttribute("x2", w); axis.setAttribute("y1", h); axis.setAttribute("y2", h);
  axis.setAttribute("stroke", "#ccc"); nodes.push(axis);
  buckets.forEach((b, i) => {
    for (const [j, key, color] of [[0, "completed", "#1b7f3b"], [1, "failed", "#b3261e"]]) {
      const v = b[key], bh = v / max * (h - 10);
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", i * slot + 2 + j * (bar + 1)); r.setAttribute("width", bar);
      r.setAttribute("y", h - bh); r.setAttribute("height", bh); r.setAttribute("fill", color);
      r.setAttribute("data-minute", b.start); r.setAttribute("data-" + key, v);
      const t = document.createElementNS(ns, "title");
      t.textContent = new Date(b.start).toLocaleTimeString() + ": " + v + " " + key;
      r.appendChild(t); nodes.push(r);
    }
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 2); label.setAttribute("y", 136); label.setAttribute("font-size", 10); label.setAttribute("fill", "#667");
  label.textContent = "max " + max + "/min"; nodes.push(label);
  svg.replaceChildren(...nodes);
  set("chart-minutes", n);
  set("chart-completed", buckets.reduce((a, b) => a + b.completed, 0));
  set("chart-failed", buckets.reduce((a, b) => a + b.failed, 0));
}

async function refresh() {
  try {
    const [s, workers] = await Promise.all([get("/api/status"), get("/api/workers")]);
    for (const k of ["pending", "in_progress", "completed", "failed", "cancelled"]) set("count-" + k, s.items[k]);
    set("count-total", s.total);
    fill("kinds", s.by_kind.map(k => row([k.kind, { text: k.pending, cls: "pending" }, { text: k.in_progress, cls: "in_progress" }], { "data-kind": k.kind })));
    for (const k of ["alive", "dead", "stopped"]) set("workers-" + k, s.workers[k]);
    fill("worker-types", s.workers_by_type.map(t => row([t.worker_type, t.alive, t.dead, t.stopped], { "data-type": t.worker_type })));
    fill("workers", workers.map(w => row([
      w.node_id, w.state, w.status, w.current_item == null ? "–" : w.current_item,
      w.lease_expires_at == null ? "–" : Math.round((w.lease_expires_at - s.now) / 1000) + " s",
      { text: w.seconds_since_heartbeat.toFixed(1) + " s", cls: "silent" }, w.task_text || ""
    ], { "data-node": w.node_id, "data-state": w.state })));
    chart(s.throughput.buckets);
    const r = s.recovery;
    set("recovery-recovered", r.recovered_total); set("recovery-on-start", r.recovered_on_start);
    set("recovery-reaper", r.reaper_recovered); set("recovery-monitor", r.monitor_recovered);
    set("recovery-expired", r.expired_leases); set("recovery-held", r.held_by_dead_nodes);
    fill("failures", s.recent_failures.map(f => row([
      f.id, f.kind, f.attempts + "/" + f.max_attempts, ago(f.finished_at, s.now), { text: f.error || "", cls: "err" }
    ], { "data-id": f.id })));
    set("updated", new Date(s.now).toLocaleTimeString());
    $("error").style.display = "none";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded) + 1);
  } catch (e) {
    $("error").textContent = "cannot refresh: " + e.message;
    $("error").style.display = "block";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"##;
