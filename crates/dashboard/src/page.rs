//! `GET /`, `/items` and `/items/{id}`: the dashboard page, one document with three views
//! chosen by the path: the overview, the items view (filters in the query string: `status`,
//! `kind`, `group`, `id`, `after`) and an item page. It holds no data: its script fetches
//! the API every refresh interval (`/api/status` and `/api/workers`; `/api/items`;
//! `/api/items/{id}`) and fills the page with `textContent` (never HTML, so an item's error
//! text cannot inject markup). Every view also reads `/api/status` for the health indicator
//! and the dead-node banner in its header. The action buttons (retry, cancel, delete, decide on the
//! item page; pause and resume on the overview) each carry `data-action` and the item or kind
//! they act on, and send the same `POST` the API documents, with the token. Everything is
//! inline — no CDN, no fonts — so it works on a machine without internet. Stable element ids
//! (`count-pending`, `workers-dead`, `recovery-recovered`, `health`, …) let tests and scrapers
//! read it.

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
  header nav a { color: #cde; margin-right: 12px; }
  main[hidden] { display: none; }
  form.filters { display: flex; gap: 8px; flex-wrap: wrap; align-items: end; margin-bottom: 8px; }
  form.filters label { font-size: 12px; color: #556; display: flex; flex-direction: column; }
  pre.json { font: 12px ui-monospace, monospace; background: #f5f6f8; padding: 6px; margin: 0; white-space: pre-wrap; word-break: break-word; max-height: 240px; overflow: auto; }
  dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; font-size: 13px; }
  dl.facts dt { color: #667; }
  dl.facts dd { margin: 0; }
  .todo { color: #888; font-style: italic; }
  #health { padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #667; }
  #health[data-health="ok"] { background: #1b7f3b; } #health[data-health="degraded"] { background: #b07800; }
  #health[data-health="down"] { background: #b3261e; }
  #health-reasons { color: #cde; font-size: 12px; }
  #dead-banner { background: #fdecea; color: #8c1d18; border-bottom: 1px solid #f3b8b3; padding: 8px 20px; font-weight: 600; }
  #notice { padding: 6px 20px; background: #e7f4ea; color: #1b5e20; }
  #notice.refused { background: #fdecea; color: #8c1d18; }
  .actions { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin-top: 10px; }
  .actions button, td button { cursor: pointer; }
  form.decide { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin-top: 8px; padding: 8px; background: #fff8e1; border-radius: 4px; }
</style>
</head>
<body data-loaded="0">
<header><h1>leasehold</h1><nav><a id="nav-overview" href="/">overview</a><a id="nav-items" href="/items">items</a></nav><span class="meta">updated <span id="updated">never</span> · refreshes every <span id="refresh">__REFRESH_MS__</span> ms</span><span id="health" data-health="" title="ok: some node alive, none dead, nothing dead-lettered in the last 5 minutes; degraded: a node is dead or items were dead-lettered lately; down: no node is alive">–</span><span id="health-reasons"></span></header>
<div id="error"></div>
<div id="dead-banner" hidden></div>
<div id="notice" hidden></div>
<main id="overview" hidden>
<section>
  <h2>Queue</h2>
  <div class="tiles">
    <div class="tile"><span class="n pending" id="count-pending">–</span><span class="l">pending</span></div>
    <div class="tile"><span class="n in_progress" id="count-in_progress">–</span><span class="l">in progress</span></div>
    <div class="tile"><span class="n completed" id="count-completed">–</span><span class="l">completed</span></div>
    <div class="tile"><span class="n failed" id="count-failed">–</span><span class="l">failed</span></div>
    <div class="tile"><span class="n cancelled" id="count-cancelled">–</span><span class="l">cancelled</span></div>
    <div class="tile"><span class="n" id="count-awaiting">–</span><span class="l">awaiting</span></div>
    <div class="tile"><span class="n" id="count-blocked">–</span><span class="l">blocked</span></div>
    <div class="tile"><span class="n" id="count-total">–</span><span class="l">total</span></div>
  </div>
  <h2 style="margin-top:12px">Open work by kind</h2>
  <table><thead><tr><th>kind</th><th>pending</th><th>in progress</th><th>paused</th><th></th></tr></thead><tbody id="kinds"></tbody></table>
</section>
<section>
  <h2>Paused kinds</h2>
  <p class="todo" id="paused-none">No kind is paused.</p>
  <table><thead><tr><th>kind</th><th>paused since</th><th></th></tr></thead><tbody id="paused"></tbody></table>
  <form class="filters" id="pause-form" style="margin-top:8px">
    <label>pause a kind<input id="pause-kind" name="kind" size="14"></label>
    <button id="pause-submit" type="submit">pause</button>
  </form>
</section>
<section>
  <h2>Awaiting a decision (<span id="awaiting-count">0</span>)</h2>
  <table><thead><tr><th>item</th><th>kind</th><th>question</th><th>answers</th><th>asked</th></tr></thead><tbody id="awaiting"></tbody></table>
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
  <h2 style="margin-top:12px">What each worker is doing</h2>
  <table><thead><tr><th>worker</th><th>node</th><th>state</th><th>item</th><th>since</th><th>task</th></tr></thead><tbody id="worker-tasks"></tbody></table>
</section>
<section style="grid-column: 1 / -1">
  <h2>Recent failures</h2>
  <table><thead><tr><th>item</th><th>kind</th><th>attempts</th><th>finished</th><th>error</th></tr></thead><tbody id="failures"></tbody></table>
</section>
</main>
<main id="items-view" hidden>
<section style="grid-column: 1 / -1">
  <h2>Items</h2>
  <form class="filters" id="filters">
    <label>status<select id="f-status" name="status"><option value="">any</option><option>pending</option><option>in_progress</option><option>completed</option><option>failed</option><option>cancelled</option><option>awaiting</option><option>blocked</option></select></label>
    <label>kind<input id="f-kind" name="kind" size="12"></label>
    <label>group<input id="f-group" name="group" size="12"></label>
    <label>id<input id="f-id" name="id" size="8"></label>
    <button id="f-apply" type="submit">filter</button>
  </form>
  <table><thead><tr><th>id</th><th>kind</th><th>status</th><th>attempts</th><th>group</th><th>owner</th><th>epoch</th><th>updated</th><th>error</th></tr></thead><tbody id="items"></tbody></table>
  <p><a id="page-first" href="/items">first page</a> · <a id="page-next" href="/items">next page</a> <span id="items-shown">0</span> shown</p>
</section>
</main>
<main id="item-page" hidden>
<section>
  <h2>Item <span id="item-id">–</span></h2>
  <dl class="facts">
    <dt>kind</dt><dd id="item-kind">–</dd>
    <dt>status</dt><dd id="item-status">–</dd>
    <dt>attempts</dt><dd id="item-attempts">–</dd>
    <dt>priority</dt><dd id="item-priority">–</dd>
    <dt>group</dt><dd id="item-group">–</dd>
    <dt>owner</dt><dd id="item-owner">–</dd>
    <dt>epoch</dt><dd id="item-epoch">–</dd>
    <dt>lease expires</dt><dd id="item-lease">–</dd>
    <dt>last heartbeat</dt><dd id="item-heartbeat">–</dd>
    <dt>created</dt><dd id="item-created">–</dd>
    <dt>run at</dt><dd id="item-run-at">–</dd>
    <dt>updated</dt><dd id="item-updated">–</dd>
    <dt>finished</dt><dd id="item-finished">–</dd>
  </dl>
  <!-- Filled by the script for the item's status: Retry (failed, cancelled), Cancel
       (pending, blocked, awaiting, in progress), Delete (completed, failed, cancelled; asks
       first), a decision form (awaiting). -->
  <div id="item-actions" class="actions"></div>
</section>
<section>
  <h2>Error</h2><pre class="json" id="item-error"></pre>
  <h2 style="margin-top:12px">Input</h2><pre class="json" id="item-input"></pre>
  <h2 style="margin-top:12px">Output</h2><pre class="json" id="item-output"></pre>
  <h2 style="margin-top:12px">Progress</h2><pre class="json" id="item-progress"></pre>
</section>
<section style="grid-column: 1 / -1" id="item-history">
  <h2>Attempt history</h2>
  <table><thead><tr><th>attempt</th><th>epoch</th><th>started</th><th>ended</th><th>owner</th><th>node</th><th>outcome</th><th>error</th></tr></thead><tbody id="item-history-rows"></tbody></table>
  <p class="todo" id="item-history-none">No attempt has ended yet.</p>
</section>
<section style="grid-column: 1 / -1">
  <h2>Checkpoints with evidence</h2>
  <table><thead><tr><th>id</th><th>epoch</th><th>step</th><th>name</th><th>type</th><th>state</th><th>evidence</th><th>verification</th><th>committed</th></tr></thead><tbody id="item-checkpoints"></tbody></table>
  <p class="todo" id="item-durable-off" hidden>The dashboard was started without the durable store: checkpoints with evidence, the tool ledger and the LLM cache are not shown.</p>
  <h2 style="margin-top:12px">Saved checkpoints</h2>
  <table><thead><tr><th>id</th><th>epoch</th><th>name</th><th>payload</th><th>saved</th></tr></thead><tbody id="item-saved"></tbody></table>
</section>
<section style="grid-column: 1 / -1">
  <h2>Tool ledger</h2>
  <table><thead><tr><th>id</th><th>tool</th><th>command</th><th>call</th><th>epoch</th><th>result</th><th>replays</th><th>executed</th></tr></thead><tbody id="item-ledger"></tbody></table>
  <h2 style="margin-top:12px">LLM cache keys</h2>
  <table><thead><tr><th>key</th><th>state</th><th>operation</th><th>model</th><th>hits</th><th>created</th><th>expires</th></tr></thead><tbody id="item-cache"></tbody></table>
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

// The operators' writes: a JSON body, the token as for reads.
async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", cache: "no-store", body: JSON.stringify(body || {}),
    headers: Object.assign({ "Content-Type": "application/json" }, headers),
  });
  let data = null;
  try { data = await r.json(); } catch (e) {}
  if (!r.ok) throw new Error(r.status + " " + ((data && data.error) || r.statusText));
  return data;
}

function notice(text, failed) {
  const n = $("notice");
  n.textContent = text; n.className = failed ? "refused" : ""; n.hidden = false;
}

// A button that sends an action: data-action, and data-item or data-kind.
function actionButton(label, action, target, id) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label; b.dataset.action = action;
  if (action === "pause" || action === "resume") b.dataset.kind = target; else b.dataset.item = target;
  if (id) b.id = id;
  return b;
}

async function act(b) {
  const a = b.dataset.action;
  const path = (a === "pause" || a === "resume")
    ? "/api/kinds/" + encodeURIComponent(b.dataset.kind) + "/" + a
    : "/api/items/" + encodeURIComponent(b.dataset.item) + "/" + a;
  const body = a === "decide" ? { answer: $("decide-answer").value } : {};
  const what = a + " " + (b.dataset.kind ? "kind " + b.dataset.kind : "item " + b.dataset.item);
  // A delete cannot be undone: asked first, and the page goes back to the list after it.
  if (a === "delete" && !confirm("Delete item " + b.dataset.item + " with its checkpoints and attempt history?")) return;
  b.disabled = true;
  try {
    await post(path, body);
    if (a === "delete") { location.href = withToken("/items"); return; }
    notice(what + ": done");
  } catch (e) {
    notice(what + " refused: " + e.message, true);
  } finally {
    b.disabled = false;
  }
  itemActionsKey = null;
  await refresh();
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-action]");
  if (b) { ev.preventDefault(); act(b); }
});

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

// A row whose last cell holds `node` (a button).
function rowWith(cells, node, attrs) {
  const tr = row([...cells, ""], attrs);
  tr.lastChild.appendChild(node);
  return tr;
}

// Which view the path asks for; links keep the token fragment.
const itemMatch = location.pathname.match(/^\/items\/([^/]+)$/);
const view = itemMatch ? "item-page" : location.pathname === "/items" ? "items-view" : "overview";
$(view).hidden = false;
const withToken = (path) => path + location.hash;
$("nav-overview").href = withToken("/");
$("nav-items").href = withToken("/items");
const when = (ms) => ms == null ? "–" : new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
const json = (v) => v == null ? "" : JSON.stringify(v, null, 2);
const query = new URLSearchParams(location.search);

function link(text, href) {
  const a = document.createElement("a");
  a.textContent = String(text); a.href = href;
  return a;
}

// A row whose first cell is a link.
function linkedRow(first, href, cells, attrs) {
  const tr = row(["", ...cells], attrs);
  tr.firstChild.appendChild(link(first, href));
  return tr;
}

async function refreshItems() {
  for (const k of ["status", "kind", "group", "id"]) $("f-" + k).value = query.get(k) || "";
  const q = new URLSearchParams();
  for (const k of ["status", "kind", "group", "id", "after"]) if (query.get(k)) q.set(k, query.get(k));
  q.set("limit", "50");
  const items = await get("/api/items?" + q.toString());
  fill("items", items.map(i => linkedRow(i.id, withToken("/items/" + i.id), [
    i.kind, { text: i.status, cls: i.status }, i.attempts + "/" + i.max_attempts, i.group_id || "",
    i.owner || "", i.epoch, when(i.updated_at), { text: i.error || "", cls: "err" }
  ], { "data-item": i.id })));
  set("items-shown", items.length);
  const first = new URLSearchParams(q); first.delete("after"); first.delete("limit");
  $("page-first").href = withToken("/items?" + first.toString());
  const next = new URLSearchParams(first);
  if (items.length > 0) next.set("after", items[items.length - 1].id);
  $("page-next").href = withToken("/items?" + next.toString());
  $("page-next").hidden = items.length < 50;
}

async function refreshItem() {
  const p = await get("/api/items/" + encodeURIComponent(decodeURIComponent(itemMatch[1])));
  const i = p.item;
  set("item-id", i.id); set("item-kind", i.kind); set("item-status", i.status);
  $("item-status").className = i.status;
  set("item-attempts", i.attempts + " of " + i.max_attempts + (i.releases ? " (" + i.releases + " releases)" : ""));
  set("item-priority", i.priority); set("item-group", i.group_id || "–");
  set("item-owner", i.owner ? i.owner + " (node " + i.owner_node + ", incarnation " + i.owner_incarnation + ")" : "–");
  set("item-epoch", i.epoch); set("item-lease", when(i.lease_expires_at)); set("item-heartbeat", when(i.last_heartbeat_at));
  set("item-created", when(i.created_at)); set("item-run-at", when(i.run_at));
  set("item-updated", when(i.updated_at)); set("item-finished", when(i.finished_at));
  set("item-error", i.error || ""); set("item-input", json(i.input));
  set("item-output", json(i.output)); set("item-progress", json(i.progress));
  fill("item-saved", p.checkpoints.map(c => row([c.id, c.epoch, c.name, { text: json(c.payload), cls: "err" }, when(c.created_at)], { "data-saved": c.id })));
  const d = p.durable;
  $("item-durable-off").hidden = d != null;
  fill("item-checkpoints", (d ? d.checkpoints : []).map(c => row([
    c.id, c.epoch, c.step == null ? "–" : c.step, c.name, c.checkpoint_type, c.state,
    { text: json(c.evidence), cls: "err" }, { text: json(c.verification), cls: "err" }, when(c.committed_at)
  ], { "data-checkpoint": c.id })));
  fill("item-ledger", (d ? d.ledger : []).map(l => row([
    l.id, l.tool, l.command, l.call, l.epoch, { text: json(l.result), cls: "err" }, l.replays, when(l.executed_at)
  ], { "data-ledger": l.id })));
  fill("item-cache", (d ? d.cache : []).map(c => row([
    { text: c.key, cls: "err" }, c.state, c.operation || "", c.model || "", c.hits, when(c.created_at), when(c.expires_at)
  ], { "data-cache": c.key })));
  fill("item-history-rows", p.history.map(a => row([
    a.attempt, a.epoch, when(a.started_at), when(a.ended_at), a.owner,
    a.owner_node ? a.owner_node + " (incarnation " + a.owner_incarnation + ")" : "–",
    { text: a.outcome, cls: a.outcome }, { text: a.error || "", cls: "err" }
  ], { "data-attempt": a.epoch, "data-outcome": a.outcome })));
  $("item-history-none").hidden = p.history.length > 0;
  itemActions(i);
}

// The item page's buttons, rebuilt only when what they depend on changes (so a refresh does
// not reset an answer being chosen).
let itemActionsKey = null;
function itemActions(i) {
  const key = JSON.stringify([i.status, i.cancel_requested_at, i.decision]);
  if (key === itemActionsKey) return;
  itemActionsKey = key;
  const nodes = [];
  if (i.status === "failed" || i.status === "cancelled") nodes.push(actionButton("Retry", "retry", i.id, "action-retry"));
  if (["pending", "blocked", "awaiting", "in_progress"].includes(i.status) && i.cancel_requested_at == null) nodes.push(actionButton("Cancel", "cancel", i.id, "action-cancel"));
  if (["completed", "failed", "cancelled"].includes(i.status)) nodes.push(actionButton("Delete", "delete", i.id, "action-delete"));
  if (i.cancel_requested_at != null && i.status === "in_progress") {
    const s = document.createElement("span");
    s.id = "item-cancel-requested"; s.textContent = "cancel requested " + when(i.cancel_requested_at) + ": its worker stops at its next renewal";
    nodes.push(s);
  }
  if (i.status === "awaiting" && i.decision) {
    const f = document.createElement("form");
    f.className = "decide"; f.id = "decide-form"; f.dataset.item = i.id;
    const q = document.createElement("span"); q.id = "decide-question"; q.textContent = i.decision.question;
    const sel = document.createElement("select"); sel.id = "decide-answer";
    for (const a of i.decision.answers) { const o = document.createElement("option"); o.value = a; o.textContent = a; sel.appendChild(o); }
    f.append(q, sel, actionButton("Decide", "decide", i.id, "action-decide"));
    nodes.push(f);
  }
  $("item-actions").replaceChildren(...nodes);
}

// The header's health indicator and the dead-node banner, on every view.
function health(s) {
  const h = s.health;
  set("health", h.state); $("health").dataset.health = h.state;
  set("health-reasons", h.reasons.join("; "));
  const banner = $("dead-banner");
  banner.hidden = h.dead_nodes.length === 0;
  banner.textContent = h.dead_nodes.length === 0 ? "" : h.dead_nodes.length + " node(s) dead: " + h.dead_nodes.join(", ") + ". Their items are taken back by a monitor or the reaper (leasehold reap --dead-nodes does it at once).";
}

function ago(ms, now) {
  if (ms == null) return "–";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 60 ? s + "s ago" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s ago";
}

function until(ms, now) {
  const s = Math.round((ms - now) / 1000);
  if (s < 0) return "due";
  return s < 60 ? "in " + s + "s" : "in " + Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
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
    if (view === "items-view") await Promise.all([refreshItems(), get("/api/status").then(health)]);
    else if (view === "item-page") await Promise.all([refreshItem(), get("/api/status").then(health)]);
    else await refreshOverview();
    if (view !== "overview") set("updated", new Date().toLocaleTimeString());
    $("error").style.display = "none";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded) + 1);
  } catch (e) {
    $("error").textContent = "cannot refresh: " + e.message;
    $("error").style.display = "block";
  }
}

async function refreshOverview() {
  {
    const [s, workers] = await Promise.all([get("/api/status"), get("/api/workers")]);
    health(s);
    for (const k of ["pending", "in_progress", "completed", "failed", "cancelled", "awaiting", "blocked"]) set("count-" + k, s.items[k]);
    set("count-total", s.total);
    const paused = new Set(s.paused_kinds.map(p => p.kind));
    fill("kinds", s.by_kind.map(k => rowWith([k.kind, { text: k.pending, cls: "pending" }, { text: k.in_progress, cls: "in_progress" }, paused.has(k.kind) ? "paused" : "no"],
      paused.has(k.kind) ? actionButton("Resume", "resume", k.kind) : actionButton("Pause", "pause", k.kind), { "data-kind": k.kind })));
    fill("paused", s.paused_kinds.map(p => rowWith([p.kind, when(p.paused_at)], actionButton("Resume", "resume", p.kind), { "data-paused": p.kind })));
    $("paused-none").hidden = s.paused_kinds.length > 0;
    set("awaiting-count", s.items.awaiting);
    fill("awaiting", s.awaiting.map(a => linkedRow(a.id, withToken("/items/" + a.id), [
      a.kind, a.question || "", a.answers.join(" / "), ago(a.asked_at, s.now)
    ], { "data-awaiting": a.id })));
    for (const k of ["alive", "dead", "stopped"]) set("workers-" + k, s.workers[k]);
    fill("worker-types", s.workers_by_type.map(t => row([t.worker_type, t.alive, t.dead, t.stopped], { "data-type": t.worker_type })));
    fill("workers", workers.map(w => row([
      w.node_id, w.state, w.status, w.current_item == null ? "–" : w.current_item,
      w.lease_expires_at == null ? "–" : Math.round((w.lease_expires_at - s.now) / 1000) + " s",
      { text: w.seconds_since_heartbeat.toFixed(1) + " s", cls: "silent" }, w.task_text || ""
    ], { "data-node": w.node_id, "data-state": w.state })));
    // Per worker, from what each node reports in its row (metadata.worker_tasks).
    fill("worker-tasks", workers.filter(w => w.state !== "stopped").flatMap(w => (w.metadata.worker_tasks || []).map(t => {
      const cells = [w.node_id, w.state, "", t.item == null ? "–" : ago(t.since, s.now), t.task || ""];
      const tr = row([t.owner, ...cells], { "data-worker": t.owner, "data-state": w.state });
      if (t.item == null) tr.children[3].textContent = "idle";
      else tr.children[3].appendChild(link(t.item, withToken("/items/" + t.item)));
      return tr;
    })));
    chart(s.throughput.buckets);
    const r = s.recovery;
    set("recovery-recovered", r.recovered_total); set("recovery-on-start", r.recovered_on_start);
    set("recovery-reaper", r.reaper_recovered); set("recovery-monitor", r.monitor_recovered);
    set("recovery-expired", r.expired_leases); set("recovery-held", r.held_by_dead_nodes);
    fill("failures", s.recent_failures.map(f => row([
      f.id, f.kind, f.attempts + "/" + f.max_attempts, ago(f.finished_at, s.now), { text: f.error || "", cls: "err" }
    ], { "data-id": f.id })));
    set("updated", new Date(s.now).toLocaleTimeString());
  }
}

$("pause-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const kind = $("pause-kind").value.trim();
  if (!kind) { notice("pause: name a kind", true); return; }
  const b = actionButton("", "pause", kind);
  act(b);
});

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = new URLSearchParams();
  for (const k of ["status", "kind", "group", "id"]) { const v = $("f-" + k).value.trim(); if (v) q.set(k, v); }
  location.href = withToken("/items?" + q.toString());
});

refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"##;
