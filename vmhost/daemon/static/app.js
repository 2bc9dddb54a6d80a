// The vmhost web page: plain JavaScript over the daemon's REST API and its two WebSockets
// (/ws/events for live updates, /ws/workspaces/{id}/shell for the terminal). No framework, no build.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "vmhost.token";
const FINISHED = new Set(["succeeded", "failed"]);
const RETRY_MAX_MS = 15000;
const POLL_MS = 5000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  workspaces: new Map(),      // id -> workspace
  progress: new Map(),        // workspace id -> {text, status}
  selected: null,             // workspace id shown in the detail view
  tab: "overview",
  lastEventId: null,
  events: null,               // the event WebSocket
  eventsUp: false,
  eventRetry: 0,
  loadRetry: 0,
  loadTimer: null,
  refreshTimer: null,
  confirmDelete: null,        // workspace id whose Delete button asks to be clicked again
  confirmTimer: null,
  started: false,
  shell: null,                // the open terminal: {socket, term, fit, exited}
};

// ---------- small helpers ----------

const $ = (id) => document.getElementById(id);

/** Build an element: h("td", {class: "x", onclick: f}, "text", child). Text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) el.append(child);
  }
  return el;
}

/** "3 d 4 h", "2 h 5 min", "4 min 09 s", "expired". */
function countdown(expiresAt) {
  if (!expiresAt) return "never";
  let s = Math.floor((new Date(expiresAt) - Date.now()) / 1000);
  if (s <= 0) return "expired";
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hrs = Math.floor(s / 3600); s -= hrs * 3600;
  const min = Math.floor(s / 60); s -= min * 60;
  if (d) return `${d} d ${hrs} h`;
  if (hrs) return `${hrs} h ${min} min`;
  return `${min} min ${String(s).padStart(2, "0")} s`;
}

function size(bytes) {
  if (!bytes) return "0 B";
  const unit = Math.min(3, Math.floor(Math.log10(bytes) / 3));
  return `${(bytes / 1000 ** unit).toFixed(unit ? 1 : 0)} ${["B", "kB", "MB", "GB"][unit]}`;
}

function when(text) { return text ? new Date(text).toLocaleString() : "—"; }

class ApiError extends Error {
  constructor(status, code, detail) { super(detail); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "daemon_unreachable", "The vmhost daemon does not answer.");
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const detail = (data && data.detail) || `${response.status} ${response.statusText}`;
    const error = new ApiError(response.status, (data && data.code) || "http_error", String(detail));
    if (response.status === 401) askForToken(error);
    throw error;
  }
  return data;
}

/** Every item of a collection: its pages of up to 1,000 items, following each one's next_cursor. */
async function listAll(path) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "1000" });
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", `${path}?${query}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

// ---------- identity ----------

function askForToken(error) {
  stopEvents();
  closeDetail();
  state.progress.clear();
  $("app").hidden = true;
  $("login").hidden = false;
  $("sign-out").hidden = true;
  $("identity").textContent = "";
  // a second refusal (the list refresh racing the event socket's 4401) finds no token: keep the first's reason
  if (state.token) $("login-error").textContent = `Your token was refused: ${error.message}`;
  if (state.token) { state.token = ""; sessionStorage.removeItem(TOKEN_KEY); }
  setLive("signed out", "");
  $("token").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("login-error").textContent = "";
  state.started = false;   // another token may be another user: ask who it is again
  load();
});

$("sign-out").addEventListener("click", () => {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  askForToken(new ApiError(401, "unauthenticated", ""));
});

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !state.token;
}

async function loadIdentity() {
  const door = state.token ? "signed in with a token" : "signed in through the proxy";
  $("identity").textContent = door;
  try {
    const me = await api("GET", `${API}/me`);
    const role = [me.role === "admin" ? "admin" : "", me.scope === "read" ? "read-only" : ""].filter(Boolean);
    $("identity").textContent = `${me.user}${role.length ? ` (${role.join(", ")})` : ""}, ${door}`;
  } catch (error) {
    if (error.status === 401) throw error;   // anything else: the generic words are enough
  }
}

// ---------- the daemon's reachability ----------

function setBanner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function setLive(text, kind) {
  const live = $("live");
  live.textContent = text;
  live.className = `live ${kind}`;
}

function backoff(attempt) { return Math.min(RETRY_MAX_MS, 1000 * 2 ** attempt); }

/** Load templates and workspaces; on failure say why and try again with backoff. */
async function load() {
  clearTimeout(state.loadTimer);
  try {
    await refreshList();
    if (!state.started) {
      await Promise.all([loadTemplates(), loadIdentity()]);
      state.started = true;
    }
    state.loadRetry = 0;
    state.loadTimer = null;
    setBanner("");
    showApp();
    if (!state.events) startEvents();
  } catch (error) {
    if (error.status === 401) return;
    const wait = backoff(state.loadRetry++);
    setBanner(error.status === 0
      ? `Cannot reach the vmhost daemon. Retrying in ${Math.round(wait / 1000)} s…`
      : `The daemon answered with an error: ${error.message}. Retrying in ${Math.round(wait / 1000)} s…`);
    setLive("offline", "off");
    state.loadTimer = setTimeout(load, wait);
  }
}

async function loadTemplates() {
  const templates = await listAll(`${API}/templates`);
  const select = $("create-template");
  select.replaceChildren(...templates.map((t) =>
    h("option", { value: t.name }, t.description ? `${t.name} — ${t.description}` : t.name)));
  if (templates.some((t) => t.name === "base")) select.value = "base";
}

async function refreshList() {
  const list = await listAll(`${API}/workspaces`);
  state.workspaces = new Map(list.map((w) => [w.id, w]));
  renderList();
  if (state.selected) renderDetail();
}

/** Refresh the list soon (several events in a burst cost one request); if the daemon went away, show it
and start the retry loop. */
function refreshSoon() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refreshList().catch((error) => { if (error.status !== 401) load(); });
  }, 100);
}

// ---------- live events ----------

function startEvents() {
  const params = new URLSearchParams();
  if (state.lastEventId !== null) params.set("since", state.lastEventId);
  if (state.token) params.set("token", state.token);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/events?${params}`);
  state.events = socket;
  socket.onopen = () => {
    state.eventsUp = true;
    state.eventRetry = 0;
    setLive("live", "on");
    refreshSoon();   // whatever happened while the socket was down
  };
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    onEvent(event);
  };
  socket.onclose = (event) => {
    if (state.events !== socket) return;
    state.events = null;
    state.eventsUp = false;
    // a refused socket closes with 4000 + the REST status and the error's detail as the reason
    if (event.code === 4401) { askForToken(new ApiError(401, "unauthenticated", event.reason)); return; }
    if (event.code === 4422) state.lastEventId = null;
    const wait = backoff(state.eventRetry++);
    setLive(`reconnecting in ${Math.round(wait / 1000)} s`, "off");
    setTimeout(() => { if (!state.events && !$("app").hidden) startEvents(); }, wait);
    refreshSoon();  // tells the user at once when the daemon itself is gone
  };
}

function stopEvents() {
  const socket = state.events;
  state.events = null;
  state.eventsUp = false;
  if (socket) socket.close();
}

function onEvent(event) {
  if (event.type === "heartbeat") {
    if (typeof event.last_id === "number") state.lastEventId = Math.max(state.lastEventId ?? 0, event.last_id);
    return;
  }
  if (event.type === "gap") { refreshSoon(); return; }
  if (typeof event.id === "number") state.lastEventId = event.id;
  const payload = event.payload || {};
  if (event.type === "operation.output") {
    const out = document.querySelector(`pre[data-operation="${CSS.escape(payload.operation_id || "")}"]`);
    if (out) out.textContent += payload.data || "";
    return;
  }
  if (event.type === "operation.status" && event.workspace_id) {
    showProgress(event.workspace_id, payload.type, payload.status, payload.error);
    if (state.selected === event.workspace_id && state.tab === "operations") loadOperations();
  }
  if (event.type === "workspace.deleted") {
    state.workspaces.delete(event.workspace_id);
    renderList();
    if (state.selected === event.workspace_id) closeDetail();
    return;
  }
  if (event.type.startsWith("workspace.") || event.type === "operation.status") refreshSoon();
}

// Without the event socket the page still goes live: it polls the list.
setInterval(() => {
  if (!$("app").hidden && !state.eventsUp && !state.loadTimer) refreshSoon();
}, POLL_MS);

// ---------- operations ----------

const VERB = { create: "creating", start: "starting", stop: "stopping", restart: "restarting", rebuild: "rebuilding",
  delete: "deleting", extend: "extending", snapshot: "taking a snapshot", restore: "restoring",
  idle_stop: "stopping (idle)" };

function progressText(type, status, error) {
  if (status === "failed") return `${type} failed: ${error || "no reason given"}`;
  if (status === "succeeded") return `${type} done`;
  return `${VERB[type] || type}… (${status})`;
}

function showProgress(workspaceId, type, status, error) {
  state.progress.set(workspaceId, { text: progressText(type, status, error), status });
  renderList();
}

function setStatusLine(element, text, status) {
  element.textContent = text;
  element.className = `${element.className.split(" ")[0]} ${status || ""}`;
}

/** Follow an operation until it ends; `report(text, status)` is told each step. Resolves with the operation. */
async function follow(operation, report) {
  let op = operation;
  report(progressText(op.type, op.status, op.error), op.status);
  while (!FINISHED.has(op.status)) {
    try {
      op = await api("GET", `${API}/operations/${encodeURIComponent(op.id)}/wait?timeout=20`);
    } catch (error) {
      if (error.status === 401) throw error;
      report(`${op.type}: lost touch with the daemon (${error.message}); still trying…`, op.status);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      continue;
    }
    report(progressText(op.type, op.status, op.error), op.status);
  }
  return op;
}

/** The operation in an answer: the answer itself, its `operation`, or none (e.g. extend answers a workspace). */
function operationIn(answer) {
  if (!answer || typeof answer !== "object") return null;
  if (answer.operation) return answer.operation;
  return answer.id && answer.type && answer.requested_by ? answer : null;
}

/** Run a request that answers with an operation, showing its progress in the workspace's row. */
async function runAction(workspaceId, type, method, path, body) {
  showProgress(workspaceId, type, "requested");
  try {
    const op = operationIn(await api(method, path, body));
    if (op) {
      await follow(op, (text, status) => { state.progress.set(workspaceId, { text, status }); renderList(); });
    } else {
      showProgress(workspaceId, type, "succeeded");
    }
  } catch (error) {
    state.progress.set(workspaceId, { text: `${type} failed: ${error.message}`, status: "failed" });
    renderList();
  }
  refreshSoon();
  if (state.selected === workspaceId && state.tab === "operations") loadOperations();
}

// ---------- the create form ----------

function parseLabels(text) {
  const labels = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [key, ...rest] = part.split("=");
    if (!key || !rest.length) throw new Error(`label "${part}" must look like key=value`);
    labels[key.trim()] = rest.join("=").trim();
  }
  return labels;
}

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const statusLine = $("create-status");
  const report = (text, status) => setStatusLine(statusLine, text, status);
  let body;
  try {
    body = { name: $("create-name").value.trim(), template: $("create-template").value,
      labels: parseLabels($("create-labels").value) };
  } catch (error) { report(error.message, "failed"); return; }
  if ($("create-ttl").value) body.ttl_seconds = Number($("create-ttl").value);
  $("create-submit").disabled = true;
  try {
    const accepted = await api("POST", `${API}/workspaces`, body);
    state.workspaces.set(accepted.workspace.id, accepted.workspace);
    renderList();
    $("create-name").value = "";
    $("create-submit").disabled = false;
    const op = await follow(accepted.operation, (text, status) => report(`${body.name}: ${text}`, status));
    refreshSoon();
    if (op.status === "succeeded") report(`${body.name} is ready`, "succeeded");
  } catch (error) {
    report(`Could not create ${body.name}: ${error.message}`, "failed");
  } finally {
    $("create-submit").disabled = false;
  }
});

// ---------- the workspace table ----------

// `when`: the statuses in which an action makes sense (the daemon has the last word either way)
const ACTIONS = [
  { type: "start", label: "Start", path: "/actions/start", when: ["stopped", "error"] },
  { type: "stop", label: "Stop", path: "/actions/stop", when: ["running", "provisioning", "error"] },
  { type: "restart", label: "Restart", path: "/actions/restart", when: ["running", "stopped", "error"] },
  { type: "rebuild", label: "Rebuild", path: "/actions/rebuild", when: ["running", "stopped", "error"] },
  { type: "extend", label: "+24 h", aria: "Extend by 24 hours", path: "/extend", body: { seconds: 86400 } },
];

function actionButton(ws, action, busy) {
  return h("button", {
    type: "button", dataset: { focusKey: `${ws.id}:${action.type}` },
    disabled: busy || (action.when && !action.when.includes(ws.status)),
    "aria-label": `${action.aria || action.label} ${ws.name}`,
    onclick: () => runAction(ws.id, action.type, "POST", `${API}/workspaces/${encodeURIComponent(ws.id)}${action.path}`,
      action.body),
  }, action.label);
}

function deleteButton(ws, busy) {
  const confirming = state.confirmDelete === ws.id;   // two steps, so one stray click deletes nothing
  return h("button", {
    type: "button", class: confirming ? "danger confirm" : "danger", disabled: busy,
    dataset: { focusKey: `${ws.id}:delete` }, "aria-label": `Delete ${ws.name}`,
    onclick: () => {
      clearTimeout(state.confirmTimer);
      if (confirming) {
        state.confirmDelete = null;
        runAction(ws.id, "delete", "DELETE", `${API}/workspaces/${encodeURIComponent(ws.id)}`);
        return;
      }
      state.confirmDelete = ws.id;
      state.confirmTimer = setTimeout(() => { state.confirmDelete = null; renderList(); }, 5000);
      renderList();
    },
  }, confirming ? "Really delete?" : "Delete");
}

function chips(entries) { return entries.map(([k, v]) => h("span", { class: "chip" }, v === undefined ? k : `${k}=${v}`)); }

function portLinks(ports) {
  return Object.entries(ports || {}).map(([inner, outer]) => h("span", { class: "chip mono" }, `${inner} → ${outer}`));
}

function renderList() {
  const focusKey = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.focusKey : undefined;
  const rows = [...state.workspaces.values()].sort((a, b) => a.name.localeCompare(b.name)).map((ws) => {
    const progress = state.progress.get(ws.id);
    const busy = Boolean(progress && !FINISHED.has(progress.status)) || ws.status === "deleting";
    return h("tr", { dataset: { workspace: ws.name } },
      h("td", { class: "name", "data-label": "Name" },
        h("button", { type: "button", dataset: { focusKey: `${ws.id}:open` }, onclick: () => openDetail(ws.id),
          "aria-label": `Details of ${ws.name}` }, ws.name)),
      h("td", { "data-label": "Template" }, ws.template),
      h("td", { "data-label": "Status" },
        h("div", null, h("span", { class: `status status-${ws.status}`, dataset: { status: ws.status } }, ws.status),
          ws.status_reason ? h("span", { class: "reason" }, ws.status_reason) : null)),
      h("td", { "data-label": "Expires in" },
        h("span", { class: "expiry", dataset: { expires: ws.expires_at || "" } }, countdown(ws.expires_at))),
      h("td", { "data-label": "Labels" }, h("div", null, chips(Object.entries(ws.labels || {})))),
      h("td", { "data-label": "Ports" }, h("div", null, portLinks(ws.connection && ws.connection.ports))),
      h("td", { "data-label": "Actions" },
        h("div", { class: "actions" }, ACTIONS.map((a) => actionButton(ws, a, busy)), deleteButton(ws, busy),
          h("p", { class: `row-status ${progress ? progress.status : ""}`, role: "status" },
            progress ? progress.text : ""))));
  });
  $("workspace-rows").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  $("workspaces").hidden = rows.length === 0;
  if (focusKey) {
    const again = document.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

setInterval(() => {
  for (const cell of document.querySelectorAll(".expiry")) cell.textContent = countdown(cell.dataset.expires);
}, 1000);

// ---------- the detail view ----------

function openDetail(id) {
  if (state.selected !== id) closeShell();
  state.selected = id;
  $("detail").hidden = false;
  renderDetail();
  selectTab(state.tab);
  $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
}

function closeDetail() {
  closeShell();
  state.selected = null;
  $("detail").hidden = true;
}

$("detail-close").addEventListener("click", closeDetail);

/** When the workspace is stopped for being idle: its idle timeout, and the time while it runs. */
function idleStop(ws) {
  if (!ws.idle_timeout_seconds) return "never";
  const s = ws.idle_timeout_seconds;
  const span = s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 360) / 10} h`;
  const text = `after ${span} without activity`;
  return ws.idle_stop_at ? `${text} (${when(ws.idle_stop_at)})` : text;
}

/** A workspace's autostart or autostop with the next time it is due, or "never". */
function scheduled(text, next) {
  if (!text) return "never";
  return next ? `${text} (next ${when(next)})` : text;
}

function renderDetail() {
  const ws = state.workspaces.get(state.selected);
  if (!ws) { closeDetail(); return; }
  $("detail-title").textContent = `${ws.name} (${ws.status})`;
  const conn = ws.connection || {};
  const facts = [
    ["Id", h("code", null, ws.id)], ["Owner", ws.owner], ["Template", `${ws.template} (${ws.image})`],
    ["Status", ws.status_reason ? `${ws.status}: ${ws.status_reason}` : ws.status],
    ["Node", ws.node || "none yet"],
    ["Shell", h("code", null, conn.shell || "")], ["Container", h("code", null, conn.container_name || "")],
    ["Ports", Object.keys(conn.ports || {}).length ? h("span", null, portLinks(conn.ports)) : "none published"],
    ["Repository", ws.repo_url ? `${ws.repo_url}${ws.branch ? ` (${ws.branch})` : ""}` : "none"],
    ["Created", when(ws.created_at)], ["Expires", ws.expires_at ? when(ws.expires_at) : "never"],
    ["Idle stop", idleStop(ws)], ["Last activity", when(ws.last_activity_at)],
    ["Autostart", scheduled(ws.autostart, ws.next_autostart_at)],
    ["Autostop", scheduled(ws.autostop, ws.next_autostop_at)],
  ];
  $("overview").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

/** The workspace's ports, each listening one with a link that opens its preview in a new tab. */
async function loadPorts() {
  const id = state.selected;
  let ports;
  try {
    ports = (await api("GET", `${wsPath()}/ports`)).items;
  } catch (err) {
    if (state.selected === id) $("previews").replaceChildren(`Ports: ${err.message}`);
    return;
  }
  if (state.selected !== id) return;
  const entries = ports.map((p) => p.listening
    ? h("a", { class: "chip mono", href: p.preview_url, target: "_blank", rel: "noopener",
      dataset: { previewPort: p.port }, onclick: (event) => openPreview(event, id, p.port) }, `${p.port} ↗`)
    : h("span", { class: "chip mono" }, `${p.port} (not listening)`));
  $("previews").replaceChildren("Ports: ", ...(entries.length ? entries : ["none listening"]));
}

/** Open a port's preview in a new tab: the tab first (a popup must open on the click), then the URL that
 * POST .../preview-session answers, which comes with the cookie the preview needs. */
async function openPreview(event, id, port) {
  event.preventDefault();
  const tab = window.open("about:blank", "_blank");
  if (tab) tab.opener = null;   // the previewed page gets no handle on this one
  try {
    const session = await api("POST", `${API}/workspaces/${encodeURIComponent(id)}/ports/${port}/preview-session`);
    if (tab) tab.location = session.url;
  } catch (err) {
    if (tab) tab.close();
    $("previews").append(h("span", { class: "reason" }, ` ${port}: ${err.message}`));
  }
}

function selectTab(name) {
  state.tab = name;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  if (name === "overview") loadPorts();
  if (name === "operations") loadOperations();
  if (name === "snapshots") loadSnapshots();
  if (name === "logs") loadLogs();
  if (name === "terminal" && state.shell && state.shell.fit) state.shell.fit.fit();
}

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  tab.addEventListener("keydown", (event) => {   // arrow keys move between tabs
    const tabs = [...document.querySelectorAll("[role=tab]")];
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    next.focus();
    selectTab(next.dataset.tab);
  });
}

const wsPath = () => `${API}/workspaces/${encodeURIComponent(state.selected)}`;

async function loadOperations() {
  const id = state.selected;
  try {
    const ops = (await api("GET", `${API}/operations?workspace_id=${encodeURIComponent(id)}&limit=20`)).items;
    if (id !== state.selected) return;
    $("operations-error").textContent = "";
    const open = new Set([...document.querySelectorAll("#operations details[open]")].map((d) => d.dataset.id));
    $("operations").replaceChildren(...ops.map((op, index) => h("li", null,
      h("details", { dataset: { id: op.id }, open: open.has(op.id) || (index === 0 && !open.size) },
        h("summary", null, `${op.type} — ${op.status} — ${when(op.created_at)} (by ${op.requested_by})`),
        op.error ? h("p", { class: "error" }, op.error) : null,
        h("pre", { class: "output", dataset: { operation: op.id } }, op.output || "")))));
  } catch (error) {
    $("operations-error").textContent = `Could not load the operations: ${error.message}`;
  }
}

$("operations-refresh").addEventListener("click", loadOperations);

async function loadSnapshots() {
  const id = state.selected;
  try {
    const snapshots = await listAll(`${wsPath()}/snapshots`);
    if (id !== state.selected) return;
    $("snapshots-empty").hidden = snapshots.length > 0;
    $("snapshots").replaceChildren(...snapshots.map((snap) => h("li", { dataset: { snapshot: snap.name } },
      h("span", { class: "grow" }, h("strong", null, snap.name), " ",
        h("span", { class: "muted" }, `${snap.status}, ${size(snap.size_bytes)}, taken ${when(snap.created_at)}`)),
      h("button", { type: "button", class: "quiet", "aria-label": `Restore snapshot ${snap.name}`,
        disabled: snap.status !== "ready",
        onclick: () => restoreSnapshot(snap) }, "Restore"))));
    if ($("snapshot-status").classList.contains("failed") && $("snapshot-status").dataset.kind === "load") {
      setStatusLine($("snapshot-status"), "", "");
    }
  } catch (error) {
    $("snapshots").replaceChildren();
    setStatusLine($("snapshot-status"), `Could not load the snapshots: ${error.message}`, "failed");
    $("snapshot-status").dataset.kind = "load";
  }
}

async function snapshotRequest(type, method, path, body) {
  const line = $("snapshot-status");
  line.dataset.kind = "";
  const report = (text, status) => setStatusLine(line, text, status);
  report(progressText(type, "requested"), "");
  try {
    const op = operationIn(await api(method, path, body));
    if (op) await follow(op, report);
    else report(`${type} done`, "succeeded");
  } catch (error) {
    report(`${type} failed: ${error.message}`, "failed");
  }
  loadSnapshots();
}

$("snapshot-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("snapshot-name").value.trim();
  $("snapshot-name").value = "";
  snapshotRequest("snapshot", "POST", `${wsPath()}/snapshots`, { name });
});

function restoreSnapshot(snap) {
  snapshotRequest("restore", "POST", `${wsPath()}/snapshots/${encodeURIComponent(snap.id)}/restore`);
}

async function loadLogs() {
  const id = state.selected;
  try {
    const data = await api("GET", `${wsPath()}/logs?tail=${$("logs-tail").value}`);
    if (id !== state.selected) return;
    $("logs-error").textContent = "";
    const text = typeof data === "string" ? data
      : data.logs ?? data.text ?? (Array.isArray(data.lines) ? data.lines.join("\n") : JSON.stringify(data, null, 2));
    $("logs").textContent = text || "(no output yet)";
  } catch (error) {
    $("logs").textContent = "";
    $("logs-error").textContent = `Could not load the logs: ${error.message}`;
  }
}

$("logs-refresh").addEventListener("click", loadLogs);
$("logs-tail").addEventListener("change", loadLogs);

$("extend-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = state.selected;
  const line = $("extend-status");
  try {
    const result = await api("POST", `${wsPath()}/extend`, { seconds: Number($("extend-by").value) });
    if (result && result.expires_at) state.workspaces.set(result.id || id, { ...state.workspaces.get(id), ...result });
    setStatusLine(line, `Extended: expires ${when((result && result.expires_at) || state.workspaces.get(id).expires_at)}`,
      "succeeded");
  } catch (error) {
    setStatusLine(line, `Could not extend: ${error.message}`, "failed");
  }
  refreshSoon();
});

// ---------- the terminal ----------

function setTerminalStatus(text) { $("terminal-status").textContent = text; }

function openShell() {
  const ws = state.workspaces.get(state.selected);
  if (!ws) return;
  closeShell();
  const term = new Terminal({ cursorBlink: true, fontSize: 14, convertEol: false, scrollback: 2000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  $("terminal").replaceChildren();
  term.open($("terminal"));
  fit.fit();
  const params = new URLSearchParams();
  if (state.token) params.set("token", state.token);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/workspaces/${encodeURIComponent(ws.id)}/shell?${params}`);
  socket.binaryType = "arraybuffer";
  const shell = { socket, term, fit, exited: false };
  state.shell = shell;
  const encoder = new TextEncoder();
  const sendSize = () => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  };
  setTerminalStatus(`connecting to ${ws.name}…`);
  $("terminal-connect").disabled = true;
  $("terminal-disconnect").disabled = false;
  socket.onopen = () => { setTerminalStatus(`connected to ${ws.name}`); sendSize(); term.focus(); };
  socket.onmessage = (message) => {
    if (typeof message.data === "string") {
      let frame;
      try { frame = JSON.parse(message.data); } catch { return; }
      if (frame.type === "exit") {
        shell.exited = true;
        term.write(`\r\n[the shell exited with code ${frame.exit_code}]\r\n`);
        setTerminalStatus(`the shell exited with code ${frame.exit_code}`);
      } else if (frame.type === "error" || frame.detail) {
        term.write(`\r\n[${frame.detail || frame.message}]\r\n`);
      }
      return;
    }
    term.write(new Uint8Array(message.data));
  };
  socket.onclose = (event) => {
    if (state.shell !== shell) return;
    if (!shell.exited) {
      setTerminalStatus(event.code === 1000 ? "the shell closed"
        : `the shell closed (${event.reason || `code ${event.code}`}); is the workspace running?`);
    }
    $("terminal-connect").disabled = false;
    $("terminal-disconnect").disabled = true;
  };
  term.onData((data) => { if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
  term.onResize(sendSize);
}

function closeShell() {
  const shell = state.shell;
  state.shell = null;
  if (!shell) return;
  shell.socket.close();
  shell.term.dispose();
  $("terminal").replaceChildren();
  setTerminalStatus("");
  $("terminal-connect").disabled = false;
  $("terminal-disconnect").disabled = true;
}

$("terminal-connect").addEventListener("click", openShell);
$("terminal-disconnect").addEventListener("click", closeShell);
window.addEventListener("resize", () => { if (state.shell && !$("panel-terminal").hidden) state.shell.fit.fit(); });

load();
