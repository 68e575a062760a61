// The Meshplay dashboard: one page over the REST API of the master that
// serves it. No build step and no library: the master embeds this file.
//
// The token lives in sessionStorage (this tab only, gone when it closes)
// and goes out as a bearer header, never in a URL. Every value that comes
// from the API is put on the page as text (textContent), never as HTML:
// tenants' data is not ours to trust.
"use strict";

const TOKEN_KEY = "meshplay.token";
const CONSOLE_MAX = 200;

const $ = (sel) => document.querySelector(sel);
const token = () => sessionStorage.getItem(TOKEN_KEY);
const timers = [];
let streamAbort = null;

class Refused extends Error {}

async function api(path, options = {}) {
  const headers = { authorization: `Bearer ${token()}`, ...(options.headers || {}) };
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) {
    signOut("The master refused the token (revoked, or from another data directory).");
    throw new Refused("unauthorized");
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const e = body && body.error ? body.error : { code: String(res.status), message: res.statusText };
    const err = new Error(`${e.code}: ${e.message}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs = {}) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs)) tr.dataset[k] = v;
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.append(c); tr.append(td); }
    else tr.append(el("td", c));
  }
  return tr;
}

function bytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)}G`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)}M`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)}K`;
  return `${n}B`;
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ---- signing in and out ---------------------------------------------------

async function signIn(candidate) {
  const res = await fetch("/api/v1/status", { headers: { authorization: `Bearer ${candidate}` } });
  if (res.status === 401) throw new Error("That token was refused.");
  if (!res.ok) throw new Error(`The master answered ${res.status}.`);
  sessionStorage.setItem(TOKEN_KEY, candidate);
  start();
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const t of timers.splice(0)) clearInterval(t);
  if (streamAbort) streamAbort.abort();
  $("#main").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = reason || "";
  $("#stream-state").textContent = "";
}

function every(ms, f) {
  f();
  timers.push(setInterval(f, ms));
}

function quietly(f) {
  return () => f().catch((e) => { if (!(e instanceof Refused)) console.warn(e); });
}

function start() {
  $("#sign-in").hidden = true;
  $("#main").hidden = false;
  $("#sign-out").hidden = false;
  every(1000, quietly(refreshWorkers));
  every(1000, quietly(refreshTraffic));
  every(2000, quietly(refreshStatus));
  every(3000, quietly(refreshTenants));
  every(10000, quietly(refreshCatalogue));
  openConsole();
}

// ---- workers, status, catalogue, tenants ----------------------------------

async function refreshWorkers() {
  const w = await api("/api/v1/workers");
  const body = $("#workers tbody");
  body.replaceChildren(...w.workers.map((x) => {
    const state = el("span", x.state, x.state === "running" ? "state-running" : "state-down");
    const beat = x.since_heartbeat_s == null ? "-" : `${x.since_heartbeat_s.toFixed(1)}s ago`;
    const host = x.host || (x.managed ? "(spawned)" : "(external)");
    return row([x.id, state, x.pid ?? "-", host, x.restarts, beat, x.in_flight, x.vms, bytes(x.rss_bytes)],
      { worker: x.id, state: x.state, pid: x.pid ?? "", restarts: x.restarts });
  }));
  const up = w.workers.filter((x) => x.state === "running").length;
  $("#workers-summary").textContent =
    `${up} of ${w.workers.length} running · bad frames ${w.bad_frames} · lost in flight ${w.lost_in_flight}`;
}

// With standby masters: which one leads, its epoch, and the others.
function leadershipLine(l) {
  if (!l) return "";
  const others = l.masters.filter((m) => !m.leads).map((m) => m.api_addr);
  const leader = l.leader_api_addr || "none";
  return ` · ${l.role} (epoch ${l.epoch}), leader ${leader}` +
    (others.length ? `, standing by: ${others.join(", ")}` : "");
}

async function refreshStatus() {
  const s = await api("/api/v1/status");
  $("#version").textContent = `v${s.version} · ${s.store}` + leadershipLine(s.leadership);
  const badge = $("#health");
  badge.textContent = s.running === s.workers ? "ready" : `degraded: ${s.running}/${s.workers}`;
  badge.className = "badge " + (s.running === s.workers ? "ok" : "err");
}

async function refreshCatalogue() {
  const [p, f] = await Promise.all([api("/api/v1/plugins"), api("/api/v1/filters")]);
  $("#revision").textContent = `revision ${p.revision}`;
  $("#plugins tbody").replaceChildren(...p.plugins.map((x) => {
    const ops = x.operations.map((o) => o.description ? `${o.name} (${o.description})` : o.name);
    return row([`${x.name} ${x.version}`, x.events.join(", "), ops.join(", ") || "-",
      x.filters.join(" → ") || "-", x.source], { plugin: x.name });
  }));
  $("#filters tbody").replaceChildren(...f.filters.map((x) =>
    row([x.name, bytes(x.size), x.sha256.slice(0, 16) + "…", x.source], { filter: x.name })));
  const names = [...new Set(p.plugins.flatMap((x) => x.events))].sort();
  $("#event-names").replaceChildren(...names.map((n) => { const o = el("option"); o.value = n; return o; }));
}

async function refreshTenants() {
  const t = await api("/api/v1/tenants?limit=50");
  const away = t.unavailable && t.unavailable.length ? ` · workers not asked: ${t.unavailable.join(", ")}` : "";
  $("#tenants-summary").textContent = `${t.total} live${away}`;
  $("#tenants tbody").replaceChildren(...t.tenants.map((x) => {
    const browse = el("button", "KV");
    browse.type = "button";
    browse.onclick = () => { $("#kv-type").value = x.tenant.type; $("#kv-id").value = x.tenant.id; findKv(false); };
    return row([`${x.tenant.type}:${x.tenant.id}`, x.worker, x.busy ? "yes" : "", x.queued, browse],
      { tenant: `${x.tenant.type}:${x.tenant.id}` });
  }));
}

// ---- charts ----------------------------------------------------------------

function chart(canvas, series, colours) {
  const g = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const pad = 28;
  g.clearRect(0, 0, w, h);
  const top = Math.max(1, ...series.flat());
  g.strokeStyle = "#d0d7de";
  g.fillStyle = "#57606a";
  g.font = "11px system-ui";
  g.beginPath(); g.moveTo(pad, 4); g.lineTo(pad, h - 14); g.lineTo(w - 4, h - 14); g.stroke();
  g.fillText(top >= 10 ? top.toFixed(0) : top.toFixed(2), 2, 12);
  g.fillText("0", 2, h - 14);
  g.fillText("-60 s", pad, h - 2);
  g.fillText("now", w - 26, h - 2);
  series.forEach((values, i) => {
    g.strokeStyle = colours[i];
    g.lineWidth = 1.5;
    g.beginPath();
    values.forEach((v, x) => {
      const px = pad + (x / Math.max(1, values.length - 1)) * (w - pad - 6);
      const py = h - 14 - (v / top) * (h - 22);
      x ? g.lineTo(px, py) : g.moveTo(px, py);
    });
    g.stroke();
  });
}

async function refreshTraffic() {
  const t = await api("/api/v1/traffic");
  // The second under way is still counting: leave it out of the lines.
  const done = t.seconds.slice(0, -1);
  chart($("#rate-chart"), [done.map((s) => s.events), done.map((s) => s.errors)], ["#1a7f37", "#cf222e"]);
  chart($("#latency-chart"), [done.map((s) => s.mean_ms), done.map((s) => s.max_ms)], ["#1a7f37", "#cf222e"]);
  const events = done.reduce((a, s) => a + s.events, 0);
  const errors = done.reduce((a, s) => a + s.errors, 0);
  $("#traffic-summary").textContent = `${events} events, ${errors} errors`;
}

// ---- the live console --------------------------------------------------------

function consoleEntry(kind, data) {
  if ($("#console-pause").checked) return;
  const list = $("#console");
  let li;
  if (kind === "dispatch") {
    const ok = data.result === "ok" || data.result === "accepted";
    const failed = (data.results || []).filter((r) => r.error).length;
    li = el("li", null, ok && !failed && !data.error ? "ok" : "error");
    const head = `${clock(data.at_ms)} ${data.tenant} ${data.event} → ${data.result} ` +
      `(${data.elapsed_ms.toFixed(2)} ms${data.worker != null ? `, worker ${data.worker}` : ""}` +
      `${data.request_id ? `, req ${data.request_id}` : ""})`;
    const lines = [head];
    for (const r of data.results || []) {
      lines.push(`  ${r.plugin}: ${r.error ? `${r.error.code}: ${r.error.message}` : JSON.stringify(r.value)}`);
    }
    if (data.truncated) lines.push("  (results too large for the console)");
    if (data.error) lines.push(`  ${data.error.code}: ${data.error.message}`);
    li.textContent = lines.join("\n");
    li.dataset.result = data.result;
    li.dataset.event = data.event;
    li.dataset.tenant = data.tenant;
  } else if (kind === "worker") {
    li = el("li", `${clock(Date.now())} worker ${data.worker} ${data.state}` +
      (data.reason ? ` (${data.reason})` : ""), "worker");
    li.dataset.worker = data.worker;
    li.dataset.state = data.state;
  } else if (kind === "lagged") {
    li = el("li", `${clock(Date.now())} ${data.skipped} entries skipped (the console fell behind)`, "worker");
  } else {
    return;
  }
  list.prepend(li);
  while (list.children.length > CONSOLE_MAX) list.lastChild.remove();
  $("#console-count").textContent = `${list.children.length} shown`;
}

function streamState(text, cls) {
  const s = $("#stream-state");
  s.textContent = text;
  s.className = "badge " + cls;
}

// Server-sent events read with fetch (EventSource cannot send the token).
async function readConsole(signal) {
  const res = await fetch("/api/v1/console", {
    headers: { authorization: `Bearer ${token()}`, accept: "text/event-stream" }, signal,
  });
  if (res.status === 401) { signOut("The master refused the token."); return; }
  if (!res.ok) throw new Error(`console: ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const parsed = JSON.parse(data.join("\n"));
      if (kind === "hello") streamState("live", "ok");
      else consoleEntry(kind, parsed);
      if (kind === "worker") quietly(refreshWorkers)();
    }
  }
}

async function openConsole() {
  const abort = new AbortController();
  streamAbort = abort;
  while (!abort.signal.aborted && token()) {
    try { await readConsole(abort.signal); } catch (e) { if (abort.signal.aborted) return; }
    if (abort.signal.aborted || !token()) return;
    streamState("reconnecting", "warn");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- dispatch form and KV browser ---------------------------------------------

async function dispatch(ev) {
  ev.preventDefault();
  const out = $("#dispatch-answer");
  let data;
  try { data = JSON.parse($("#d-data").value || "null"); } catch (e) {
    out.textContent = `The data is not JSON: ${e.message}`;
    out.className = "error";
    return;
  }
  const path = `/api/v1/tenants/${encodeURIComponent($("#d-type").value)}/${encodeURIComponent($("#d-id").value)}/events`;
  const body = JSON.stringify({ name: $("#d-event").value, data, wait: $("#d-wait").checked });
  try {
    const answer = await api(path, { method: "POST", body, headers: { "content-type": "application/json" } });
    out.textContent = JSON.stringify(answer, null, 2);
    out.className = "";
  } catch (e) {
    if (e instanceof Refused) return;
    out.textContent = e.message;
    out.className = "error";
  }
}

let kvNext = null;

async function findKv(more) {
  const kind = encodeURIComponent($("#kv-type").value);
  const id = encodeURIComponent($("#kv-id").value);
  const q = new URLSearchParams({ scope: $("#kv-scope").value || "default", pattern: $("#kv-pattern").value || "%", limit: "50" });
  if (more && kvNext) q.set("after", kvNext);
  $("#kv-error").textContent = "";
  try {
    const page = await api(`/api/v1/tenants/${kind}/${id}/kv?${q}`);
    const rows = page.records.map((r) =>
      row([r.key, JSON.stringify(r.value), new Date(r.updated_at).toLocaleString()], { key: r.key }));
    if (more) $("#kv tbody").append(...rows); else $("#kv tbody").replaceChildren(...rows);
    kvNext = page.next || null;
    $("#kv-more").hidden = !kvNext;
    if (!page.records.length && !more) $("#kv-error").textContent = "No keys match.";
  } catch (e) {
    if (!(e instanceof Refused)) $("#kv-error").textContent = e.message;
  }
}

// ---- a tenant's schedules and pending timers --------------------------------

async function showTimers() {
  const base = `/api/v1/tenants/${encodeURIComponent($("#t-type").value)}/${encodeURIComponent($("#t-id").value)}`;
  $("#timers-error").textContent = "";
  try {
    const [s, t] = await Promise.all([api(`${base}/schedules`), api(`${base}/timers`)]);
    const when = (ms) => new Date(ms).toLocaleString();
    $("#schedules tbody").replaceChildren(...s.schedules.map((x) =>
      row([x.name, x.cron, x.timezone, x.event, when(x.next_due)], { schedule: x.name })));
    $("#timers tbody").replaceChildren(...t.timers.map((x) =>
      row([String(x.id), x.event, when(x.due_at), String(x.attempt), x.schedule || ""],
        { timer: String(x.id), event: x.event })));
    if (!s.schedules.length && !t.timers.length) $("#timers-error").textContent = "No schedules or pending timers.";
  } catch (e) {
    if (!(e instanceof Refused)) $("#timers-error").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const candidate = $("#token").value.trim();
    $("#token").value = "";
    signIn(candidate).catch((e) => { $("#sign-in-error").textContent = e.message; });
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#dispatch-form").addEventListener("submit", dispatch);
  $("#kv-form").addEventListener("submit", (ev) => { ev.preventDefault(); findKv(false); });
  $("#kv-more").addEventListener("click", () => findKv(true));
  $("#timers-form").addEventListener("submit", (ev) => { ev.preventDefault(); showTimers(); });
  $("#console-clear").addEventListener("click", () => $("#console").replaceChildren());
  if (token()) start(); else signOut("");
});
