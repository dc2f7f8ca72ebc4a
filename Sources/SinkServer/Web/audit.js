// The web inbox's Deliveries and Stats panels: what the application did when mail failed
// (`/api/v1/deliveries`) and the volume over time (`/api/v1/stats/timeline`, `/stats/top`).
// Plain JavaScript beside app.js (whose `$`, `api`, `element`, `status` and `MAILBOX` it uses);
// the charts are SVG drawn here, nothing is fetched from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const audit = { panel: null, version: null, abort: null, deliveries: [], openKey: null, statsTimer: null };

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function showAuditPanel(panel) {
  audit.panel = panel;
  if (audit.abort && panel !== "deliveries") { audit.abort.abort(); audit.abort = null; }
  clearInterval(audit.statsTimer);
  audit.statsTimer = null;
  if (panel === "deliveries" && !audit.abort) watchDeliveries();
  if (panel === "stats") {
    loadStats();
    audit.statsTimer = setInterval(loadStats, 2000);
  }
}

// MARK: Deliveries

function deliveryKey(delivery) {
  return `${delivery.Sender}|${delivery.Recipient}|${delivery.FirstAt}`;
}

/** Loads the deliveries, then waits on the sink (wait=, after=) for the next change: live without polling. */
async function watchDeliveries() {
  const controller = new AbortController();
  audit.abort = controller;
  audit.version = null;
  while (!controller.signal.aborted) {
    const query = $("delivery-query").value.trim();
    let path = `/api/v1/deliveries?limit=200${query ? `&query=${encodeURIComponent(query)}` : ""}`;
    if (audit.version !== null) path += `&wait=25s&after=${audit.version}`;
    try {
      const response = await fetch(scoped(path), { signal: controller.signal });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
      audit.version = answer.version;
      renderDeliveries(answer);
    } catch (error) {
      if (controller.signal.aborted) return;
      status(`Deliveries: ${error.message}`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function restartDeliveries() {
  if (audit.abort) audit.abort.abort();
  audit.abort = null;
  if (audit.panel === "deliveries") watchDeliveries();
}

function renderDeliveries(answer) {
  audit.deliveries = answer.deliveries;
  const flagged = answer.deliveries.filter((d) => d.Flags.length > 0).length;
  $("delivery-summary").textContent = answer.total === 0
    ? "No attempts yet. Every transaction to the SMTP port is recorded here, accepted or refused."
    : `${answer.total} deliveries${answer.total > answer.deliveries.length ? ` (newest ${answer.deliveries.length} shown)` : ""}, ${flagged} flagged`;
  $("delivery-rows").replaceChildren(...answer.deliveries.map((delivery) => {
    const row = element("tr", { tabindex: "0", "data-key": deliveryKey(delivery), "aria-selected": String(deliveryKey(delivery) === audit.openKey) },
      element("td", { text: delivery.Recipient, title: delivery.Recipient }),
      element("td", { text: delivery.Sender || "<>", title: delivery.Sender }),
      element("td", { class: `outcome ${delivery.Outcome}`, text: delivery.Outcome }),
      element("td", { text: String(delivery.Attempts.length) }),
      element("td", {}, ...delivery.Flags.map((flag) => element("span", { class: "flag", text: flag }))),
      element("td", { text: shortTime(delivery.LastAt) }));
    row.addEventListener("click", () => openDelivery(deliveryKey(delivery)));
    row.addEventListener("keydown", (event) => { if (event.key === "Enter") openDelivery(deliveryKey(delivery)); });
    return row;
  }));
  if (audit.openKey) renderDelivery(audit.deliveries.find((d) => deliveryKey(d) === audit.openKey));
}

function openDelivery(key) {
  audit.openKey = key;
  for (const row of document.querySelectorAll("#delivery-rows tr")) row.setAttribute("aria-selected", String(row.dataset.key === key));
  renderDelivery(audit.deliveries.find((d) => deliveryKey(d) === key));
}

function replyText(reply) {
  if (!reply) return "(no reply)";
  return [reply.Code, reply.EnhancedCode, reply.Text].filter((part) => part).join(" ");
}

function replyClass(attempt) {
  return attempt.Reply ? `c${Math.floor(attempt.Reply.Code / 100)}xx` : "none";
}

function seconds(value) {
  return value >= 100 ? `${Math.round(value)} s` : `${value.toFixed(value >= 10 ? 1 : 2)} s`;
}

/** One delivery: its flags, its attempts on a time line, and the attempts as a table. */
function renderDelivery(delivery) {
  const box = $("delivery");
  if (!delivery) { box.hidden = true; return; }
  box.hidden = false;
  const first = Date.parse(delivery.FirstAt);
  const span = Math.max(1, Date.parse(delivery.LastAt) - first);
  const line = svg("svg", { class: "attempt-line", viewBox: "0 0 600 44", role: "img", "aria-label": "The attempts over time" });
  line.append(svg("line", { x1: 10, y1: 16, x2: 590, y2: 16 }));
  delivery.Attempts.forEach((attempt, index) => {
    const x = 10 + ((Date.parse(attempt.At) - first) / span) * 580;
    const dot = svg("circle", { cx: x.toFixed(1), cy: 16, r: 6, class: replyClass(attempt) });
    dot.append(svg("title", {}, `${index + 1}: ${replyText(attempt.Reply)}`));
    line.append(dot);
    line.append(svg("text", { x: x.toFixed(1), y: 38, "text-anchor": "middle" }, index === 0 ? "0" : `+${seconds((Date.parse(attempt.At) - first) / 1000)}`));
  });
  const rows = delivery.Attempts.map((attempt, index) => element("tr", {},
    element("td", { text: String(index + 1) }),
    element("td", { text: shortTime(attempt.At) }),
    element("td", { text: index === 0 ? "–" : seconds(delivery.Intervals[index - 1]) }),
    element("td", { text: attempt.Phase }),
    element("td", { class: `reply ${replyClass(attempt)}`, text: replyText(attempt.Reply) + (attempt.Dropped ? " (dropped)" : "") }),
    element("td", { text: attempt.Rule || "" }),
    element("td", { text: attempt.Client })));
  box.replaceChildren(
    element("h3", { text: `${delivery.Sender || "<>"} → ${delivery.Recipient}` }),
    element("p", { class: "hint" },
      element("span", { class: `outcome ${delivery.Outcome}`, text: delivery.Outcome }),
      ` after ${delivery.Attempts.length} attempt${delivery.Attempts.length === 1 ? "" : "s"}`,
      delivery.MessageID ? ` · ${delivery.MessageID}` : ""),
    element("p", { class: "flags" }, ...(delivery.Flags.length ? delivery.Flags.map((flag) => element("span", { class: "flag", text: flag })) : ["No audit flags."])),
    line,
    element("table", {},
      element("thead", {}, element("tr", {}, ...["#", "At", "After", "Phase", "Reply", "Rule", "Client"].map((name) => element("th", { scope: "col", text: name })))),
      element("tbody", { id: "attempt-rows" }, ...rows)));
}

// MARK: Stats

async function loadStats() {
  const [range, step] = $("stats-range").value.split("|");
  const now = Math.floor(Date.now() / 1000);
  let timeline, top;
  try {
    const narrowed = MAILBOX ? `&mailbox=${encodeURIComponent(MAILBOX)}` : "";
    timeline = await api("GET", `/api/v1/stats/timeline?from=${now - Number(range)}&to=${now + 1}&step=${step}${narrowed}`);
    top = await api("GET", `/api/v1/stats/top?window=10m${narrowed}`);
  } catch (error) {
    status(`Stats: ${error.message}`);
    return;
  }
  drawVolume(timeline.buckets);
  drawLatency(timeline.buckets);
  $("burst").hidden = !top.burst;
  const tables = [["Senders", top.senders], ["Recipients", top.recipients], ["Clients", top.clients], ["Subjects", top.subjects]];
  $("tops").replaceChildren(...tables.map(([name, entries]) => element("table", { "data-top": name.toLowerCase() },
    element("caption", { text: name }),
    element("tbody", {}, ...(entries.length ? entries : [{ Value: "–", Count: "" }]).map((entry) =>
      element("tr", {}, element("td", { text: entry.Value, title: entry.Value }), element("td", { text: String(entry.Count) })))))));
}

function axis(chart, max, unit) {
  chart.append(svg("text", { x: 4, y: 10 }, `${max}${unit}`));
  chart.append(svg("text", { x: 4, y: 132 }, `0`));
}

/** Stacked bars per bucket: accepted, refused 4xx, refused 5xx, dropped. */
function drawVolume(buckets) {
  const chart = $("chart-volume");
  const keys = ["Accepted", "Refused4xx", "Refused5xx", "Dropped"];
  const max = Math.max(1, ...buckets.map((b) => keys.reduce((sum, key) => sum + b[key], 0)));
  const width = 560 / Math.max(1, buckets.length);
  const nodes = [];
  buckets.forEach((bucket, index) => {
    let y = 134;
    for (const key of keys) {
      if (!bucket[key]) continue;
      const height = (bucket[key] / max) * 120;
      y -= height;
      const bar = svg("rect", { x: (34 + index * width).toFixed(2), y: y.toFixed(2), width: Math.max(0.5, width - 0.5).toFixed(2), height: height.toFixed(2), class: key.toLowerCase(), "data-at": bucket.At });
      bar.append(svg("title", {}, `${bucket.At}: ${bucket[key]} ${key}`));
      nodes.push(bar);
    }
  });
  chart.replaceChildren(...nodes);
  axis(chart, max, "");
}

/** p50 and p99 of the transaction time per bucket, as two lines (buckets without mail skipped). */
function drawLatency(buckets) {
  const chart = $("chart-latency");
  const values = buckets.flatMap((b) => [b.TransactionMs.p50, b.TransactionMs.p99]).filter((v) => v !== null);
  const max = Math.max(1, ...values);
  const width = 560 / Math.max(1, buckets.length);
  chart.replaceChildren();
  for (const key of ["p50", "p99"]) {
    const points = buckets.map((b, i) => b.TransactionMs[key] === null ? null : [34 + (i + 0.5) * width, 134 - (b.TransactionMs[key] / max) * 120]).filter((p) => p);
    chart.append(svg("polyline", { class: key, points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ") }));
    // A point per bucket too: one bucket alone draws no line.
    for (const [x, y] of points) chart.append(svg("circle", { class: key, cx: x.toFixed(1), cy: y.toFixed(1), r: 2 }));
  }
  axis(chart, Math.round(max * 10) / 10, " ms");
  $("latency-max").textContent = values.length ? `(highest ${Math.round(max * 10) / 10} ms)` : "(no mail accepted in this range)";
}

window.addEventListener("DOMContentLoaded", () => {
  $("delivery-form").addEventListener("submit", (event) => { event.preventDefault(); restartDeliveries(); });
  $("stats-range").addEventListener("change", loadStats);
  // Opened at #deliveries or #stats: app.js chose the panel before this file ran.
  if (audit.panel === null && ["deliveries", "stats"].includes(state.panel)) showAuditPanel(state.panel);
});
