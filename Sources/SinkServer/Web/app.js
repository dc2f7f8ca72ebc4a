// Swallow's web inbox: plain JavaScript over the public HTTP API, no build step, no network
// beyond the sink itself. The list pages through the API 50 messages at a time (it never
// holds more than one page) and refreshes from the server-sent event stream.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const state = {
  start: 0,
  query: "",
  total: 0,
  rows: [],
  known: new Set(),
  selected: -1,
  openID: null,
  message: null,
  capture: null,
  view: "html",
  panel: "inbox",
  refreshTimer: null,
  lastRefresh: 0,
  faults: null,
  relay: null,
};

// MARK: API

// `/?mailbox=NAME` shows one mailbox: every list, search, event stream and fault panel request
// is narrowed to it (the sink narrows them anyway for a mailbox token).
const MAILBOX = new URLSearchParams(location.search).get("mailbox");

if (MAILBOX) {
  document.title = `Swallow inbox · ${MAILBOX}`;
  window.addEventListener("DOMContentLoaded", () => { document.querySelector(".brand").textContent = `Swallow · ${MAILBOX}`; });
}

function scoped(path) {
  if (!MAILBOX || !path.startsWith("/api/") || path.startsWith("/api/v1/stats")) return path;
  return `${path}${path.includes("?") ? "&" : "?"}mailbox=${encodeURIComponent(MAILBOX)}`;
}

async function api(method, path, body) {
  path = scoped(path);
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.body = typeof body === "string" ? body : JSON.stringify(body);
    options.headers["Content-Type"] = typeof body === "string" ? "application/yaml" : "application/json";
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* text */ }
  if (!response.ok) {
    const message = data && data.error ? (data.error.message || JSON.stringify(data.error)) : (typeof data === "string" && data) || `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}

function status(text) { $("status").textContent = text; }

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function address(entry) {
  if (!entry) return "";
  return entry.Name ? `${entry.Name} <${entry.Address}>` : entry.Address;
}

function shortTime(iso) {
  const date = new Date(iso);
  if (isNaN(date)) return "";
  const now = new Date();
  return date.toDateString() === now.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

// MARK: The list

async function loadList() {
  const query = state.query.trim();
  const path = query
    ? `/api/v1/search?query=${encodeURIComponent(query)}&start=${state.start}&limit=${PAGE}`
    : `/api/v1/messages?start=${state.start}&limit=${PAGE}`;
  let data;
  try {
    data = await api("GET", path);
  } catch (error) {
    status(`List: ${error.message}`);
    return;
  }
  state.lastRefresh = performance.now();
  state.total = data.messages_count;
  renderRows(data.messages || []);
  if (window.swallowFirstRender === undefined) window.swallowFirstRender = performance.now();
}

function renderRows(messages) {
  const selectedID = state.rows[state.selected] ? state.rows[state.selected].ID : state.openID;
  const firstLoad = state.known.size === 0 && state.rows.length === 0;
  state.rows = messages;
  const body = $("rows");
  const rows = messages.map((message, index) => {
    const tags = (message.Tags || []).map(tagButton);
    const row = element("tr", {
      "data-id": message.ID,
      tabindex: "-1",
      "aria-selected": "false",
      class: message.Read ? "" : "unread",
    },
    element("td", { title: address(message.From), text: message.From ? (message.From.Name || message.From.Address) : "" }),
    element("td", { class: "subject-cell", title: message.Subject || "" }, message.Subject || "(no subject)", ...tags),
    element("td", { class: "narrow-hide", text: (message.To || []).map((to) => to.Address).join(", ") }),
    element("td", { title: new Date(message.Created).toLocaleString(), text: shortTime(message.Created) }));
    if (!firstLoad && !state.known.has(message.ID)) row.classList.add("fresh");
    row.addEventListener("click", () => { select(index, false); open(message.ID); });
    return row;
  });
  body.replaceChildren(...rows);
  for (const message of messages) state.known.add(message.ID);
  if (state.known.size > 5000) state.known = new Set(messages.map((m) => m.ID));
  state.selected = messages.findIndex((m) => m.ID === selectedID);
  if (state.selected >= 0) markSelected(false);
  $("empty").hidden = messages.length > 0;
  const last = Math.min(state.start + messages.length, state.total);
  $("range").textContent = state.total === 0 ? "0 messages"
    : `${(state.start + 1).toLocaleString()}–${last.toLocaleString()} of ${state.total.toLocaleString()}${state.query ? " matching" : ""}`;
  $("prev").disabled = state.start === 0;
  $("next").disabled = state.start + PAGE >= state.total;
  $("delete-all").textContent = state.query ? "Delete matching" : "Delete all";
}

/** A tag as a button that shows every message with that tag. */
function tagButton(tag) {
  const button = element("button", { type: "button", class: "tag", title: `Show messages tagged ${tag}`, text: tag });
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    const query = /[\s"]/.test(tag) ? `tag:"${tag.replace(/"/g, "")}"` : `tag:${tag}`;
    $("search").value = query;
    state.query = query;
    state.start = 0;
    loadList();
  });
  return button;
}

function markSelected(focus) {
  for (const row of $("rows").children) {
    row.setAttribute("aria-selected", "false");
    row.tabIndex = -1;
  }
  const row = $("rows").children[state.selected];
  if (!row) return;
  row.setAttribute("aria-selected", "true");
  row.tabIndex = 0;
  if (focus) row.focus();
}

function select(index, focus = true) {
  if (!state.rows.length) return;
  state.selected = Math.max(0, Math.min(state.rows.length - 1, index));
  markSelected(focus);
}

/// At most one list request per half second, however fast mail arrives.
function scheduleRefresh() {
  if (state.refreshTimer) return;
  const wait = Math.max(0, 500 - (performance.now() - state.lastRefresh));
  state.refreshTimer = setTimeout(() => { state.refreshTimer = null; loadList(); }, wait);
}

// MARK: One message

async function open(id) {
  state.openID = id;
  let message, capture, webhooks;
  try {
    [message, capture, webhooks] = await Promise.all([api("GET", `/api/v1/message/${id}`), api("GET", `/api/v1/message/${id}/capture`),
      api("GET", `/api/v1/message/${id}/webhooks`).catch(() => ({ deliveries: [] }))]);
  } catch (error) {
    status(`Message: ${error.message}`);
    return;
  }
  if (state.openID !== id) return;
  state.message = message;
  state.capture = capture;
  const row = $("rows").querySelector(`tr[data-id="${CSS.escape(id)}"]`);
  if (row) row.classList.remove("unread");
  $("subject").textContent = message.Subject || "(no subject)";
  const meta = $("meta");
  meta.replaceChildren();
  const fields = [["From", address(message.From)], ["To", (message.To || []).map(address).join(", ")],
    ["Cc", (message.Cc || []).map(address).join(", ")], ["Date", new Date(message.Date).toLocaleString()],
    ["Size", bytes(message.Size)]];
  for (const [name, value] of fields) {
    if (!value) continue;
    meta.append(element("dt", { text: name }), element("dd", { text: value }));
  }
  if (message.Tags && message.Tags.length) {
    meta.append(element("dt", { text: "Tags" }), element("dd", {}, ...message.Tags.map(tagButton)));
  }
  const deliveries = (webhooks && webhooks.deliveries) || [];
  if (deliveries.length) {
    const lines = deliveries.map((d) => element("div", { class: "webhook", text:
      `${d.URL} · attempt ${d.Attempt}: ${d.Status ? `HTTP ${d.Status}` : (d.Error || "no answer")} · ${Math.round(d.DurationMs)} ms` }));
    meta.append(element("dt", { text: "Webhooks" }), element("dd", {}, ...lines));
  }
  if (capture.faults && capture.faults.length) {
    meta.append(element("dt", { text: "Faults" }), element("dd", {}, ...capture.faults.map((f) => element("span", { class: "tag fault", text: f }))));
  }
  if (capture.relay && capture.relay.length) {
    meta.append(element("dt", { text: "Relay" }), element("dd", { id: "relay-hops" }, ...capture.relay.map(hopLine)));
  }
  const list = $("attachments");
  list.replaceChildren(...(message.Attachments || []).map((part) => element("li", {},
    element("a", {
      href: `/api/v1/message/${message.ID}/part/${part.PartID}`,
      download: part.FileName || `part-${part.PartID}`,
      "aria-label": `Download ${part.FileName || "attachment"} (${bytes(part.Size)})`,
    }, `⤓ ${part.FileName || "attachment"} · ${bytes(part.Size)}`))));
  $("view").hidden = false;
  $("inbox").classList.add("reading");
  $("headers").dataset.loaded = "";
  $("raw").dataset.loaded = "";
  showView(message.HTML ? state.view : (state.view === "html" ? "text" : state.view));
}

/** One hand-over to the upstream, on one line. */
function hopLine(hop) {
  return element("div", { class: `relay-hop ${hop.outcome}`, text:
    `${hop.kind} → ${hop.to.join(", ")} via ${hop.upstream}: ${hop.reply} · ${Math.round(hop.latencyMs)} ms` });
}

/** Asks for recipients (the envelope's by default) and releases the open message to them. */
async function releaseMessage() {
  const capture = state.capture;
  if (!state.openID || !capture) return;
  const suggested = capture.envelope.recipients.map((r) => r.address).join(", ");
  const answer = window.prompt(`Release through ${state.relay.SMTPServer} to (comma-separated):`, suggested);
  if (answer === null) return;
  const to = answer.split(",").map((a) => a.trim()).filter(Boolean);
  const id = state.openID;
  try {
    await api("POST", `/api/v1/message/${id}/release`, { To: to });
    status(`Released to ${to.join(", ")}`);
  } catch (error) {
    status(`Release: ${error.message}`);
  }
  if (state.openID === id) open(id);
}

function renderHTML() {
  const message = state.message;
  const frame = $("html-frame");
  frame.classList.toggle("mobile", $("mobile").checked);
  if (!message) return;
  if (!message.HTML) {
    frame.srcdoc = "<p style=\"font-family:sans-serif;color:#666\">This message has no HTML part.</p>";
    return;
  }
  const origin = location.origin;
  let html = message.HTML;
  // Inline images (cid:) come from the API; remote ones only when asked for.
  for (const part of (message.Inline || []).concat(message.Attachments || [])) {
    if (part.ContentID) html = html.split(`cid:${part.ContentID}`).join(`${origin}/api/v1/message/${message.ID}/part/${part.PartID}`);
  }
  const images = $("remote-images").checked ? "data: http: https:" : `data: ${origin}`;
  const head = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src ${images}; font-src data:"><base target="_blank">`;
  frame.srcdoc = head + html;
}

async function showView(view) {
  state.view = view;
  for (const tab of document.querySelectorAll(".view-tabs [role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  $("html-frame").hidden = view !== "html";
  for (const name of ["text", "headers", "raw", "details"]) $(name).hidden = name !== view;
  const message = state.message;
  if (!message) return;
  try {
    if (view === "html") renderHTML();
    if (view === "text") $("text").textContent = message.Text || "(no text part)";
    if (view === "headers" && $("headers").dataset.loaded !== message.ID) {
      const headers = await api("GET", `/api/v1/message/${message.ID}/headers`);
      const rows = Object.keys(headers).sort().flatMap((name) => headers[name].map((value) => element("tr", {}, element("th", { scope: "row", text: name }), element("td", { text: value }))));
      $("headers").replaceChildren(element("table", {}, element("tbody", {}, ...rows)));
      $("headers").dataset.loaded = message.ID;
    }
    if (view === "raw" && $("raw").dataset.loaded !== message.ID) {
      const raw = await (await fetch(`/api/v1/message/${message.ID}/raw`)).text();
      $("raw").textContent = raw.length > 2_000_000 ? raw.slice(0, 2_000_000) + "\n… (cut at 2 MB: download the raw message for the rest)" : raw;
      $("raw").dataset.loaded = message.ID;
    }
    if (view === "details") renderDetails();
  } catch (error) {
    status(`${view}: ${error.message}`);
  }
}

function renderDetails() {
  const capture = state.capture;
  if (!capture) return;
  const table = (pairs) => element("table", {}, element("tbody", {}, ...pairs.filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => element("tr", {}, element("th", { scope: "row", text: k }), element("td", { text: String(v) })))));
  const session = capture.session;
  const t = capture.timestamps;
  const after = (nanos) => (nanos ? `+${((nanos - t.connectedNanos) / 1e6).toFixed(3)} ms` : "");
  const params = (p) => Object.entries(p || {}).map(([k, v]) => (v ? `${k}=${v}` : k)).join(" ");
  $("details").replaceChildren(
    element("h3", { text: "Envelope" }),
    table([["MAIL FROM", `<${capture.envelope.mailFrom}> ${params(capture.envelope.mailParameters)}`],
      ...capture.envelope.recipients.map((r) => ["RCPT TO", `<${r.address}> ${params(r.parameters)}`])]),
    element("h3", { text: "Session" }),
    table([["Session", session.id], ["Client", session.remoteAddress], ["Server", session.localAddress],
      ["HELO", `${session.helo}${session.esmtp ? " (EHLO)" : " (HELO)"}`],
      ["TLS", session.tls ? `${session.tls.version}${session.tls.implicit ? " (implicit)" : " (STARTTLS)"}` : "none"],
      ["AUTH user", session.authUser || "none"], ["Trace id", capture.traceID || ""]]),
    element("h3", { text: "Timings" }),
    table([["Connected", new Date(t.connectedNanos / 1e6).toISOString()], ["MAIL", after(t.mailNanos)],
      ["DATA", after(t.dataStartNanos)], ["End of data", after(t.dataEndNanos)], ["Reply sent", after(t.replySentNanos)]]),
    element("h3", { text: "Faults and anomalies" }),
    table([["Faults fired", capture.faults.length ? capture.faults.join(", ") : "none"],
      ["Anomalies", capture.anomalies.length ? capture.anomalies.join(", ") : "none"]]),
    element("h3", { text: "Relay" }),
    (capture.relay || []).length
      ? table(capture.relay.map((hop) => [`${hop.at} ${hop.kind}`,
        `→ ${hop.to.join(", ")} via ${hop.upstream}: ${hop.outcome}, ${hop.reply} (${hop.latencyMs.toFixed(1)} ms)`]))
      : element("p", { text: "Not relayed." }),
  );
}

function closeView() {
  state.openID = null;
  state.message = null;
  $("view").hidden = true;
  $("inbox").classList.remove("reading");
  const row = $("rows").children[state.selected];
  if (row) row.focus();
}

async function deleteMessage(id) {
  try {
    await api("DELETE", "/api/v1/messages", { IDs: [id] });
  } catch (error) {
    status(`Delete: ${error.message}`);
    return;
  }
  if (state.openID === id) closeView();
  await loadList();
}

let confirmAll = null;
async function deleteAll() {
  const button = $("delete-all");
  if (!confirmAll) {
    button.textContent = state.query ? "Really delete matching?" : "Really delete all?";
    confirmAll = setTimeout(() => { confirmAll = null; renderRows(state.rows); }, 4000);
    return;
  }
  clearTimeout(confirmAll);
  confirmAll = null;
  try {
    if (state.query) await api("DELETE", `/api/v1/search?query=${encodeURIComponent(state.query)}`);
    else await api("DELETE", "/api/v1/messages");
  } catch (error) {
    status(`Delete: ${error.message}`);
  }
  closeView();
  state.start = 0;
  await loadList();
}

// MARK: Faults

const PROFILES = [
  {
    key: "flaky", title: "Flaky", text: "451 to one recipient in five; every 20th message cut off after its final dot.",
    rules: [
      { name: "profile-flaky-defer", match: { phase: "rcpt" }, probability: 0.2, action: { reply: { code: 451, enhanced: "4.3.0", text: "Temporary failure (profile flaky)" } } },
      { name: "profile-flaky-cut", match: { phase: "data-end" }, every: 20, action: { disconnect: true } },
    ],
  },
  {
    key: "slow", title: "Slow", text: "The banner after 1 s; every message accepted after a log-normal delay (median 500 ms, p99 3 s).",
    rules: [
      { name: "profile-slow-banner", match: { phase: "greeting" }, action: { delay: "1s" } },
      { name: "profile-slow-accept", match: { phase: "data-end" }, action: { delay: { distribution: "lognormal", median: "500ms", p99: "3s" } } },
    ],
  },
  {
    key: "greylisting", title: "Greylisting", text: "451 to the first attempt of every client/sender/recipient; a retry after 60 s passes.",
    rules: [{ name: "profile-greylisting", match: { phase: "rcpt" }, action: { greylist: { retry_after: "60s" } } }],
  },
  {
    key: "down", title: "Down", text: "Every new connection gets 421 instead of a banner and is closed.",
    rules: [{ name: "profile-down", match: { phase: "greeting" }, action: { reply: "421 4.3.2 Service not available (profile down)" } }],
  },
];

const RULE_KEYS = ["name", "match", "probability", "every", "after", "until", "times", "action"];

/// Rules as a rule file has them: without the counters, keys in the documented order.
function plainRules(rules) {
  return rules.map((rule) => Object.fromEntries(Object.entries(rule)
    .filter(([key]) => key !== "fired" && key !== "remaining")
    .sort(([a], [b]) => RULE_KEYS.indexOf(a) - RULE_KEYS.indexOf(b))));
}

async function loadFaults() {
  try {
    state.faults = await api("GET", "/api/v1/faults");
  } catch (error) {
    status(`Faults: ${error.message}`);
    return;
  }
  renderFaults();
}

function renderFaults() {
  const faults = state.faults;
  const names = new Set(faults.rules.map((rule) => rule.name));
  $("profiles").replaceChildren(...PROFILES.map((profile) => {
    const on = profile.rules.every((rule) => names.has(rule.name));
    const button = element("button", { type: "button", "aria-pressed": String(on), "data-profile": profile.key,
      "aria-label": `${profile.title} profile: ${on ? "on, switch off" : "off, switch on"}` }, on ? "On — switch off" : "Switch on");
    button.addEventListener("click", () => toggleProfile(profile, !on));
    return element("div", { class: "profile", "data-on": String(on) }, element("strong", { text: profile.title }), element("p", { text: profile.text }), button);
  }));
  if (document.activeElement !== $("rules-yaml")) $("rules-yaml").value = rulesYAML(faults);
  const fired = Object.entries(faults.fired || {});
  $("fired").replaceChildren(...(fired.length ? fired.map(([name, count]) => element("tr", {}, element("td", { text: name }), element("td", { text: count.toLocaleString() })))
    : [element("tr", {}, element("td", { text: "none yet", colspan: "2" }))]));
}

async function toggleProfile(profile, on) {
  const current = await api("GET", "/api/v1/faults");
  const prefix = `profile-${profile.key}`;
  const rules = plainRules(current.rules).filter((rule) => !String(rule.name || "").startsWith(prefix));
  if (on) rules.unshift(...profile.rules);
  try {
    state.faults = await api("PUT", "/api/v1/faults", { rules });
    $("rules-error").hidden = true;
    status(`${profile.title} profile ${on ? "on" : "off"}`);
  } catch (error) {
    showRuleError(error.message);
  }
  renderFaults();
}

function showRuleError(message) {
  $("rules-error").textContent = message;
  $("rules-error").hidden = false;
}

/// A value in YAML's flow style (JSON is valid YAML; plain words stay unquoted).
function flow(value) {
  if (Array.isArray(value)) return `[${value.map(flow).join(", ")}]`;
  if (value && typeof value === "object") return `{${Object.entries(value).map(([k, v]) => `${k}: ${flow(v)}`).join(", ")}}`;
  if (typeof value === "string") {
    const plain = /^[A-Za-z][A-Za-z0-9_.\-\/]*$/.test(value) && !/^(true|false|null|yes|no|on|off|y|n)$/i.test(value);
    return plain ? value : JSON.stringify(value);
  }
  return String(value);
}

function rulesYAML(faults) {
  const rules = plainRules(faults.rules);
  if (!rules.length) return `seed: ${faults.seed}\nrules: []\n`;
  let text = `seed: ${faults.seed}\nrules:\n`;
  for (const rule of rules) {
    Object.entries(rule).forEach(([key, value], index) => { text += `${index ? "    " : "  - "}${key}: ${flow(value)}\n`; });
  }
  return text;
}

async function applyRules() {
  try {
    state.faults = await api("PUT", "/api/v1/faults", $("rules-yaml").value);
    $("rules-error").hidden = true;
    status("Rules applied");
    $("rules-yaml").blur();
    renderFaults();
  } catch (error) {
    showRuleError(error.message);
  }
}

// MARK: Live rates

const live = { timer: null, previous: null, samples: [] };

async function pollStats() {
  let stats;
  try {
    stats = await api("GET", "/api/v1/stats");
  } catch (error) {
    status(`Stats: ${error.message}`);
    return;
  }
  // A mailbox token gets its mailbox's counts only: the sink-wide panel has nothing to show.
  if (!stats.smtp) return;
  const now = performance.now();
  const accepted = stats.smtp.accepted;
  if (live.previous) {
    const rate = Math.max(0, (accepted - live.previous.accepted) / ((now - live.previous.at) / 1000));
    live.samples.push(rate);
    if (live.samples.length > 120) live.samples.shift();
    $("rate").textContent = rate >= 100 ? Math.round(rate).toLocaleString() : rate.toFixed(1);
  }
  live.previous = { accepted, at: now };
  $("total").textContent = accepted.toLocaleString();
  $("connections").textContent = stats.openConnections.toLocaleString();
  $("faults-fired").textContent = (stats.smtp.faults || 0).toLocaleString();
  const codes = [["250 (messages accepted)", accepted], ...Object.entries(stats.smtp.rejectedByCode || {}).sort()];
  $("codes").replaceChildren(...codes.map(([code, count]) => element("tr", {}, element("td", { text: code }), element("td", { text: count.toLocaleString() }))));
  const max = Math.max(1, ...live.samples);
  const points = live.samples.map((v, i) => `${(i * 300) / 119},${58 - (v / max) * 54}`).join(" ");
  $("spark").replaceChildren(document.createElementNS("http://www.w3.org/2000/svg", "polyline"));
  $("spark").firstChild.setAttribute("points", points);
}

// MARK: Panels, events, keys

function showPanel(panel) {
  state.panel = panel;
  for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-pressed", String(tab.dataset.panel === panel));
  for (const name of ["inbox", "faults", "live", "deliveries", "stats"]) $(name).hidden = name !== panel;
  if (panel === "faults") loadFaults();
  if (typeof showAuditPanel === "function") showAuditPanel(panel);
  clearInterval(live.timer);
  live.timer = null;
  if (panel === "live") {
    pollStats();
    live.timer = setInterval(pollStats, 1000);
  }
  if (location.hash !== `#${panel}`) history.replaceState(null, "", panel === "inbox" ? location.pathname : `#${panel}`);
}

function connectEvents() {
  const events = new EventSource(scoped("/api/v1/events"));
  // On every (re)connection the list is fetched again: mail captured before the stream was
  // subscribed, or while it was down, appears too.
  events.onopen = () => { status("Live"); scheduleRefresh(); };
  events.onerror = () => status("Reconnecting to the event stream…");
  events.addEventListener("message", scheduleRefresh);
  events.addEventListener("fault", () => { if (state.panel === "faults") scheduleFaults(); });
  events.addEventListener("relay", (event) => {
    let hop = {};
    try { hop = JSON.parse(event.data); } catch (_) { return; }
    if (hop.ID && hop.ID === state.openID) open(hop.ID);
  });
}

/** The release button shows when the sink has a relay (Mailpit's `/api/v1/webui`). */
async function loadRelay() {
  try {
    const webui = await api("GET", "/api/v1/webui");
    state.relay = webui.MessageRelay && webui.MessageRelay.Enabled ? webui.MessageRelay : null;
  } catch (_) {
    state.relay = null;
  }
  $("release").hidden = !state.relay;
}

let faultsTimer = null;
function scheduleFaults() {
  if (faultsTimer) return;
  faultsTimer = setTimeout(() => { faultsTimer = null; loadFaults(); }, 1000);
}

function onKey(event) {
  const target = event.target;
  if (target.matches("input, textarea, select")) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (event.metaKey || event.ctrlKey || event.altKey || state.panel !== "inbox") return;
  if (event.key === "Enter" && target.matches("button, a")) return;
  switch (event.key) {
    case "j": select(state.selected + 1); break;
    case "k": select(state.selected - 1); break;
    case "Enter": if (state.rows[state.selected]) open(state.rows[state.selected].ID); break;
    case "Delete": case "#": {
      const id = state.openID || (state.rows[state.selected] && state.rows[state.selected].ID);
      if (id) deleteMessage(id);
      break;
    }
    case "Escape": if (state.openID) closeView(); break;
    case "/": $("search").focus(); break;
    default: return;
  }
  event.preventDefault();
}

function start() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  for (const tab of document.querySelectorAll(".view-tabs [role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.query = $("search").value;
    state.start = 0;
    loadList();
  });
  $("clear-search").addEventListener("click", () => { $("search").value = ""; state.query = ""; state.start = 0; loadList(); });
  $("prev").addEventListener("click", () => { state.start = Math.max(0, state.start - PAGE); loadList(); });
  $("next").addEventListener("click", () => { state.start += PAGE; loadList(); });
  $("delete-all").addEventListener("click", deleteAll);
  $("delete-one").addEventListener("click", () => { if (state.openID) deleteMessage(state.openID); });
  $("release").addEventListener("click", releaseMessage);
  $("back").addEventListener("click", closeView);
  $("remote-images").addEventListener("change", renderHTML);
  $("mobile").addEventListener("change", renderHTML);
  $("apply-rules").addEventListener("click", applyRules);
  $("reload-rules").addEventListener("click", () => { $("rules-error").hidden = true; $("rules-yaml").blur(); loadFaults(); });
  $("clear-rules").addEventListener("click", async () => {
    try { state.faults = await api("DELETE", "/api/v1/faults"); renderFaults(); status("Rules cleared"); } catch (error) { showRuleError(error.message); }
  });
  document.addEventListener("keydown", onKey);
  const initial = location.hash.slice(1);
  showPanel(["faults", "live", "deliveries", "stats"].includes(initial) ? initial : "inbox");
  loadList();
  loadRelay();
  connectEvents();
}

start();
