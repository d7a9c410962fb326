// The sendtime dashboard: draws what /status says, every two seconds. Text goes in through
// textContent only: ids, messages and contacts come from outside.
"use strict";

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const REFRESH_MS = 2000;
const $ = (selector) => document.querySelector(selector);

// A token in the address (#token=...) is taken once, kept for this tab, and removed from it.
let token = sessionStorage.getItem("sendtime-token") || "";
if (location.hash.startsWith("#token=")) {
  const given = location.hash.slice("#token=".length);
  // A bad escape (a stray %) is taken as written: the page still loads, and a wrong token is
  // answered 401 with what to do.
  try { token = decodeURIComponent(given); } catch { token = given; }
  sessionStorage.setItem("sendtime-token", token);
  history.replaceState(null, "", location.pathname);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("#auth").hidden = false;
    throw new Error(body.message || "this admin surface needs its token");
  }
  if (!response.ok) throw new Error(body.message || response.status + " " + response.statusText);
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function num(value) {
  return el("td", Number(value || 0).toLocaleString("en-US"), "num");
}

function time(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function slotName(slot) {
  return DAYS[Math.floor(slot / 24)] + " " + String(slot % 24).padStart(2, "0") + ":00 UTC";
}

/// A 7×24 table of slot scores into `table`, each cell carrying its value.
function drawHeat(table, scores) {
  table.replaceChildren();
  const head = document.createElement("tr");
  head.append(el("th", "UTC"));
  for (let h = 0; h < 24; h++) head.append(el("th", h % 3 === 0 ? h : ""));
  table.append(head);
  const max = Math.max(...scores, 1e-12);
  for (let d = 0; d < 7; d++) {
    const tr = document.createElement("tr");
    tr.append(el("th", DAYS[d]));
    for (let h = 0; h < 24; h++) {
      const slot = d * 24 + h;
      const value = scores[slot];
      const td = el("td");
      td.dataset.slot = slot;
      td.dataset.value = String(value);
      td.title = slotName(slot) + ": " + (value * 100).toFixed(2) + "%";
      td.style.background = "hsl(212, 75%, " + (96 - 58 * (value / max)).toFixed(1) + "%)";
      tr.append(td);
    }
    table.append(tr);
  }
  // Without engagement every hour scores the same: there is no best hour to name.
  if (Math.max(...scores) - Math.min(...scores) < 1e-12) return null;
  let best = 0;
  scores.forEach((v, s) => { if (v > scores[best]) best = s; });
  return best;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/// One chart per connector: planned calls per hour against its capacity.
function drawForecast(capacity) {
  const box = $("#forecast");
  box.replaceChildren();
  let total = 0;
  const from = capacity.from_ms;
  for (const c of capacity.connectors || []) {
    const planned = c.planned_per_hour;
    const sum = planned.reduce((a, b) => a + b, 0);
    total += sum;
    const wrap = el("div", null, "forecast");
    wrap.dataset.connector = c.connector;
    const busiest = Math.max(...planned, 0);
    // Drawn to the busiest hour: a capacity far above it would flatten every bar.
    const scale = Math.max(busiest, 1) * 1.15;
    const capShown = c.capacity_per_hour <= scale;
    const caption = el("p", null, "note");
    caption.append(el("strong", c.connector), ": ");
    const sumNode = el("span", sum.toLocaleString("en-US"), "planned-total");
    sumNode.dataset.value = String(sum);
    caption.append(sumNode, " calls planned; busiest hour " + busiest.toLocaleString("en-US") +
      " against a capacity of " + c.capacity_per_hour.toLocaleString("en-US") + " per hour" +
      (capShown ? "" : " (far above: not drawn)") +
      (c.daily_budget ? "; daily budget " + c.daily_budget.toLocaleString("en-US") : ""));
    wrap.append(caption);
    const width = 6 * planned.length, height = 140, top = 12, bottom = 18;
    const y = (v) => top + (height - top - bottom) * (1 - v / scale);
    const chart = svg("svg", { width, height, viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "planned calls per hour for " + c.connector });
    // The bars start at the current hour: days begin at UTC midnights, wherever they fall.
    const midnight = (24 - Math.floor(from / 3600e3) % 24) % 24;
    planned.forEach((v, i) => {
      if (i % 24 === midnight) {
        chart.append(svg("line", { x1: i * 6, x2: i * 6, y1: top, y2: height - bottom, class: "day" }));
        const label = svg("text", { x: i * 6 + 2, y: height - 4 });
        label.textContent = time(from + i * 3600e3).slice(0, 10);
        chart.append(label);
      }
      if (v > 0) {
        const bar = svg("rect", { x: i * 6, y: y(v), width: 5, height: y(0) - y(v),
          class: v > c.capacity_per_hour ? "bar over" : "bar" });
        const tip = svg("title", {});
        tip.textContent = time(from + i * 3600e3) + ": " + v + " calls";
        bar.append(tip);
        chart.append(bar);
      }
    });
    if (capShown) {
      const cap = y(c.capacity_per_hour);
      chart.append(svg("line", { x1: 0, x2: width, y1: cap, y2: cap, class: "cap" }));
    }
    wrap.append(chart);
    box.append(wrap);
  }
  if (!box.childElementCount) box.append(el("p", "Nothing planned yet: the first tick draws it.", "note"));
  $("#queue-total").textContent = total.toLocaleString("en-US");
  $("#queue-total").dataset.value = String(total);
}

function pauseButton(id, paused, connector) {
  const button = el("button", paused ? "Resume" : "Pause", paused ? "resume" : "pause");
  button.dataset.id = id;
  button.dataset.action = paused ? "resume" : "pause";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(button.dataset.action, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ id, connector }),
      });
      actionError = null;
      await refresh();
    } catch (e) {
      actionError = new Error(button.dataset.action + " " + id + " failed: " + e.message);
      showError(actionError);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function drawConnectors(connectors) {
  const body = $("#connectors tbody");
  body.replaceChildren();
  for (const c of connectors) {
    // A pause holds contacts in dry run too: it shows first.
    const state = c.paused ? el("td", "paused: " + c.paused.replaceAll("_", " ") +
          (c.paused_until_ms ? " until " + time(c.paused_until_ms) : "") +
          (c.dry_run ? " (dry run)" : ""), "state-paused")
      : c.dry_run ? el("td", "dry run", "state-dry")
      : el("td", "sending", "state-sending");
    // Kinds of call held for a scope the token lacks, while the others go on.
    const scopes = Object.entries(c.missing_scopes || {});
    if (!c.paused && scopes.length) {
      state.append(document.createElement("br"), "missing scope, holding: " +
        scopes.map(([kind, until]) => kind.replaceAll("_", " ") + " until " + time(until)).join(", "));
    }
    // As of the account's last call: stale after its midnight until the next one.
    const daily = c.daily_limit != null && c.daily_remaining != null
      ? (c.daily_limit - c.daily_remaining).toLocaleString("en-US") +
        " of " + c.daily_limit.toLocaleString("en-US") + " as of " + time(c.daily_as_of_ms) : "–";
    const err = c.last_error ? time(c.last_error.at_ms) + " " + (c.last_error.http_status || "") +
      " " + c.last_error.message : "–";
    const imp = c.last_import ? (c.last_import.paused ? time(c.last_import.last_run_at_ms) + " " + c.last_import.paused
      : c.last_import.last_error ? "failed: " + c.last_import.last_error
      : time(c.last_import.last_success_at_ms) + ", " + c.last_import.last_new_events + " new events") : "–";
    const tr = row([el("td", c.id), state,
      el("td", c.calls_last_10s + " / " + c.paced_per_10s + " (limit " + c.limit_per_10s + ")", "num"),
      el("td", daily), el("td", err, "msg"), el("td", imp, "msg"),
      el("td")]);
    tr.lastChild.append(pauseButton(c.id, c.paused === "operator", true));
    tr.dataset.connector = c.id;
    body.append(tr);
  }
}

function drawEndpoints(status) {
  const body = $("#endpoints tbody");
  body.replaceChildren();
  const all = status.webhooks.map((w) => [w, "webhook"]).concat(status.actions.map((a) => [a, "action"]));
  for (const [e, kind] of all) {
    const c = e.counts;
    const refusedTotal = Object.values(c.refused).reduce((a, b) => a + b, 0);
    const refused = Object.entries(c.refused).map(([k, v]) => k.replaceAll("_", " ") + " " + v).join(", ");
    const cells = {
      received: num(c.accepted + c.duplicates + refusedTotal),
      refused: el("td", refused || "–", "msg"),
      pending: num(e.pending),
      held: num(e.held),
      sent: num(c.sent),
      dry_run: num(c.dry_run),
      failed: num(c.failed),
    };
    for (const [name, td] of Object.entries(cells)) td.classList.add(name);
    const state = e.paused ? el("td", "paused", "state-paused")
      : e.connector_paused ? el("td", "held: connector paused", "state-paused")
      : e.scope_held_until_ms ? el("td", "held: missing scope until " + time(e.scope_held_until_ms), "state-paused")
      : e.target_held_until_ms ? el("td", "held: " + e.target_held_why + "; read again " + time(e.target_held_until_ms), "state-paused")
      : e.connector_dry_run ? el("td", "dry run", "state-dry")
      : el("td", "sending", "state-sending");
    const idCell = el("td", e.id);
    idCell.title = kind + " at " + e.url;
    const tr = row([idCell, el("td", kind === "action" ? "action, " + e.type : e.type), el("td", e.connector),
      cells.received, cells.refused, cells.pending, cells.held, cells.sent, cells.dry_run, cells.failed,
      state, el("td")]);
    tr.lastChild.append(pauseButton(e.id, e.paused, false));
    tr.dataset.endpoint = e.id;
    body.append(tr);
  }
  // Every id's since the start, those a reload removed too: a total that does not fall.
  $("#sent-total").textContent = status.totals.sent.toLocaleString("en-US");
  $("#failed-total").textContent = status.totals.failed.toLocaleString("en-US");
  const unknown = Object.values(status.unknown || {}).reduce((a, b) => a + b, 0);
  $("#unknown").textContent = unknown ? unknown + " posts to ids that are not configured were refused." : "";
  $("#held-for-removed").textContent = Object.entries(status.held_for_removed || {})
    .map(([id, n]) => n + " contacts held for " + id + ", which the config no longer has as it received them (removed, made the other kind, or moved to another account's connector): put it back, or `sendtime discard " + id + "` (with serve stopped) gives them up.")
    .join(" ");
  // A pause of what the config no longer names holds nothing: renamed, its contacts go out.
  $("#paused-unknown").textContent = (status.paused_unknown || [])
    .map(p => {
      const flag = p.kind === "connector" ? " --connector" : "";
      return "The pause of " + p.kind + " " + p.id + " holds nothing: the config has no " + p.kind +
        " of that id. If it was renamed, pause the new id; `sendtime resume " + p.id + flag + "` drops this one.";
    })
    .join(" ");
}

function drawOutcomes(outcomes) {
  const body = $("#outcomes tbody");
  body.replaceChildren();
  for (const o of outcomes.slice(0, 20)) {
    body.append(row([time(o.at_ms), o.webhook, o.connector, o.action.replace("_", " "), o.target,
      el("td", o.status, "status-" + o.status), o.http_status || "", el("td", o.message || "", "msg")]));
  }
  if (!outcomes.length) body.append(row([el("td", "No calls yet.", "note")]));
}

// A failed pause or resume, shown until the next one succeeds: a refresh must not hide it.
let actionError = null;

function showError(e) {
  $("#error").textContent = e.message;
  $("#error").hidden = false;
}

// A refresh's answer older than one already shown is dropped: on a slow disk, answers came
// out of order and an old "paused" was painted over the one a Resume click had fetched.
let refreshes = 0;
let shown = 0;

async function refresh() {
  const mine = ++refreshes;
  try {
    // Bounded: an answer that never comes (a connection lost across a laptop's sleep) would
    // stop the polling that waits for it.
    const status = await api("status", { signal: AbortSignal.timeout(5 * REFRESH_MS) });
    if (mine < shown) return;
    shown = mine;
    if (actionError) showError(actionError);
    else $("#error").hidden = true;
    $("#config").textContent = status.config;
    $("#now").textContent = time(status.now_ms);
    $("#pending").textContent = Number(status.pending).toLocaleString("en-US");
    $("#pending").dataset.value = String(status.pending);
    if (status.population) {
      const best = drawHeat($("#heatmap"), status.population);
      $("#heat-best").textContent = best == null ? "No engagement imported yet: every hour is alike."
        : "Best hour: " + slotName(best);
    }
    drawForecast(status.capacity);
    drawConnectors(status.connectors);
    $("#pauses-error").textContent = status.pauses_error
      ? "Every contact is held: " + status.pauses_error : "";
    $("#planning-error").textContent = status.planning_error
      ? "New contacts wait unplanned (the planned ones are still sent, and an action's contact in its hold's last hour): " + status.planning_error
      : "";
    $("#config-rejected").textContent = status.config_rejected
      ? "The config file was not loaded, the one in force is kept: " + status.config_rejected
      : "";
    const writes = Object.entries(status.write_errors || {});
    $("#write-errors").textContent = writes.length
      ? "Cannot write to the data folder (received contacts are safe; contacts wait until it can): "
        + writes.map(([dataset, e]) => dataset + ": " + e).join("; ")
      : "";
    drawEndpoints(status);
    drawOutcomes(status.outcomes);
    $("#live").textContent = "updated " + new Date().toLocaleTimeString();
    $("#live").className = "live ok";
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    if (mine < shown) return;
    $("#live").className = "live stale";
    showError(e);
  }
}

// The latest lookup asked: a slower earlier answer must not replace its result.
let lookups = 0;

async function lookup(event) {
  event.preventDefault();
  const mine = ++lookups;
  const out = $("#lookup-result");
  out.replaceChildren(el("p", "Looking up…", "note"));
  try {
    const x = await api("contact?q=" + encodeURIComponent($("#lookup").value));
    if (mine !== lookups) return;
    out.replaceChildren();
    // As `sendtime explain` says it: another key's history is named as such.
    const elsewhere = x.learned_elsewhere ? " (the events of " + x.learned_elsewhere + ", which its receipts carry)" : "";
    const summary = x.known
      ? x.contact + ": class " + x.class + ", " + x.engagements + " opens/clicks" + elsewhere + ", last " +
        (x.last_engaged || "never") + (x.machine ? "; machine-like: not learned from" : "")
      : x.contact + ": no events for this contact; planned as a new contact (class evaluating)";
    const p = el("p", summary);
    p.id = "lookup-summary";
    out.append(p);
    const heat = el("table", null, "heat");
    heat.id = "lookup-heat";
    drawHeat(heat, x.scores);
    out.append(heat, el("p", x.best_slot ? "Best hour: " + x.best_slot : "No best hour: every hour scores the same", "note"));
    const plans = el("table", null, "grid");
    plans.append(row([el("th", "webhook type"), el("th", "would go at"), el("th", "why")]));
    for (const plan of x.plans) plans.append(row([plan.webhook_type, time(plan.due_at_ms), el("td", plan.reason, "msg")]));
    out.append(plans);
    out.append(el("h3", "If posted now to each webhook (its window, quiet hours and the contact's zone; alone on its connector)"));
    const hooks = el("table", null, "grid");
    hooks.id = "lookup-webhooks";
    hooks.append(row([el("th", "webhook"), el("th", "type"), el("th", "would go at"), el("th", "why")]));
    for (const w of x.webhooks) {
      const hubspot = w.connector_paused;
      const why = w.reason + (w.paused ? "; PAUSED: held, not sent, until resumed" : "") +
        (hubspot ? "; its connector is paused by HubSpot's answer (" + hubspot.why.replaceAll("_", " ") +
          ") until " + time(hubspot.until_ms) + ": nothing sent until then" : "") +
        (w.dry_run ? "; its connector is in dry run: recorded, not sent" : "") +
        (w.holdout > 0 ? "; " + Math.round(w.holdout * 100) + "% held out go at receipt" : "");
      hooks.append(row([(w.action ? "action " : "") + w.webhook, w.webhook_type, time(w.due_at_ms), el("td", why, "msg")]));
    }
    out.append(hooks);
    out.append(el("h3", "Planned receipts: " + x.receipts_total));
    const receipts = el("table", null, "grid");
    receipts.id = "lookup-receipts";
    for (const r of x.receipts) {
      receipts.append(row([r.webhook, r.webhook_type, "received " + time(r.received_at_ms),
        "due " + time(r.due_at_ms) + (r.hold_ends_ms != null ? " (held until " + time(r.hold_ends_ms) + ")" : ""),
        el("td", r.reason, "msg"),
        el("td", r.outcome || r.waiting, "msg")]));
    }
    out.append(receipts);
  } catch (e) {
    if (mine === lookups) out.replaceChildren(el("p", e.message, "error"));
  }
}

$("#auth").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("sendtime-token", token);
  $("#auth").hidden = true;
  refresh();
});
async function measureLift() {
  const out = $("#lift-result");
  const button = $("#lift-button");
  // One report at a time: a second click was refused as busy, and the later answer won.
  button.disabled = true;
  out.replaceChildren(el("p", "Measuring…", "note"));
  try {
    const lift = await api("lift", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    out.replaceChildren(el("p", "As of " + time(lift.as_of_ms) + ": " +
      lift.optimized_sends + " optimized sends (of " + lift.optimized_receipts + " receipts), " +
      lift.holdout_sends + " held out (of " + lift.holdout_receipts + ").", "note"));
    for (const note of lift.notes) out.append(el("p", note, "note lift-note"));
    const table = el("table", null, "grid");
    table.id = "lift-table";
    table.append(row([el("th", ""), el("th", "optimized"), el("th", "held out"),
      el("th", "difference (95% interval)"), el("th", "verdict")]));
    const pct = (s) => (s.rate * 100).toFixed(1) + "% of " + s.sends;
    const pts = (x) => { const p = Math.round(x * 1000) / 10 + 0; return (p >= 0 ? "+" : "") + p.toFixed(1); };
    for (const m of lift.metrics) {
      const why = m.no_verdict_text || "";
      const diff = m.interval
        ? pts(m.difference) + " pts [" + pts(m.interval[0]) + ", " + pts(m.interval[1]) + "]"
        : m.first_window_end_ms ? "the first window ends " + time(m.first_window_end_ms) : why;
      const verdict = m.verdict === "optimized_better" ? "optimized better"
        : m.verdict === "holdout_better" ? "held out better" : "no verdict: " + why;
      table.append(row([m.metric + " within " + m.window_hours + " h", pct(m.optimized), pct(m.holdout), diff, verdict]));
    }
    out.append(table);
  } catch (e) {
    out.replaceChildren(el("p", e.message, "error"));
  } finally {
    button.disabled = false;
  }
}

$("#lift-button").addEventListener("click", measureLift);
$("#lookup-form").addEventListener("submit", lookup);
// The next refresh once this one is answered, so slow answers do not pile up.
async function poll() {
  await refresh();
  setTimeout(poll, REFRESH_MS);
}
poll();
