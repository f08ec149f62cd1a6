// Basalt dashboard: plain JavaScript, no build step, no dependencies.
//
// Pages (hash routes): #/instances, #/instance/<id>, #/entities,
// #/partitions. Data comes from the management API
// (/runtime/webhooks/durabletask/...) and the dashboard's additions
// (/api/v1/...), both documented in docs/server.md. Everything from the
// server is written into the page with textContent, never as markup:
// instance ids, names and payloads are other people's text.
"use strict";

const API = "/runtime/webhooks/durabletask";
const PAGE_SIZE = 25;
const ROW = 24; // px, as --row in style.css
const REFRESH_MS = 2000;
const STATUSES = ["Pending", "Running", "Suspended", "Completed", "Failed", "Terminated", "ContinuedAsNew"];
const TOKEN_KEY = "basalt.token";

// ---------------------------------------------------------------------------
// Small helpers.

/** An element: `el("td", {class: "num"}, "text", child, ...)`. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "onclick") node.addEventListener("click", value);
    else if (name === "text") node.textContent = String(value);
    // Through CSSOM: the Content-Security-Policy refuses style attributes.
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const enc = encodeURIComponent;

/** UTC, to the second (the API's times are UTC too). */
function fmtTime(value) {
  if (value === undefined || value === null || value === "") return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  if (ms < 3600000) {
    const s = Math.round(ms / 1000);
    return `${Math.floor(s / 60)} m ${s % 60} s`;
  }
  const m = Math.round(ms / 60000);
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

/** A JSON value as text for a <pre>: strings as they are, the rest indented. */
function show(value) {
  if (value === undefined || value === null) return "null";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

function badge(status) {
  return el("span", { class: `badge ${status}`, "data-status": status }, status);
}

function main() {
  return document.getElementById("main");
}

function setStatusLine(text) {
  document.getElementById("status-line").textContent = text;
}

// ---------------------------------------------------------------------------
// Requests, with the bearer token when the server asks for one.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let loginWaiters = null;

/** Asks for the token once, however many requests are waiting for it. */
function askForToken(message) {
  if (!loginWaiters) {
    loginWaiters = [];
    const dialog = document.getElementById("login");
    const error = document.getElementById("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    document.getElementById("login-token").value = "";
    dialog.showModal();
  }
  return new Promise((resolve) => loginWaiters.push(resolve));
}

function setupLogin() {
  const dialog = document.getElementById("login");
  const input = document.getElementById("login-token");
  const submit = () => {
    const token = input.value.trim();
    // What the server accepts (visible ASCII, 16 or more): anything else
    // could not even travel in a header.
    if (!/^[\x21-\x7e]{16,}$/.test(token)) {
      const error = document.getElementById("login-error");
      error.textContent = "A token is 16 or more visible ASCII characters.";
      error.hidden = false;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    dialog.close();
    const waiters = loginWaiters || [];
    loginWaiters = null;
    waiters.forEach((resolve) => resolve());
    document.getElementById("sign-out").hidden = false;
  };
  document.getElementById("login-ok").addEventListener("click", submit);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") submit();
  });
  dialog.addEventListener("cancel", (e) => e.preventDefault());
  const signOut = document.getElementById("sign-out");
  signOut.hidden = !sessionStorage.getItem(TOKEN_KEY);
  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    signOut.hidden = true;
    route();
  });
}

/**
 * A request to the server. Returns `{status, body, headers}`; throws an
 * ApiError with the server's message for any status >= 400 but 401, which
 * asks for the token and tries again.
 */
async function request(path, { method = "GET", body } = {}) {
  for (let tries = 0; ; tries++) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (method === "POST") headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body, cache: "no-store" });
    if (response.status === 401) {
      await askForToken(token ? "That token was refused." : "");
      continue;
    }
    const text = await response.text();
    let json = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
    }
    if (response.status >= 400) {
      const message = json && json.error ? json.error : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return { status: response.status, body: json, headers: response.headers };
  }
}

// ---------------------------------------------------------------------------
// Routing: every page renders into <main> and returns what stops it
// (timers), called when the route changes.

let stopPage = null;
let routeSerial = 0;

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/instances";
  const [path, query] = hash.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

async function route() {
  if (stopPage) stopPage();
  stopPage = null;
  const serial = ++routeSerial;
  const { path, params } = parseHash();
  const page = path.split("/")[1] || "instances";
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.nav === (page === "instance" ? "instances" : page));
  }
  // Each page draws into its own view: one left behind by a quick
  // navigation draws into a detached view, never over its successor.
  const view = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  main().replaceChildren(view);
  const pages = {
    instances: () => instancesPage(view, params),
    instance: () => instancePage(view, decodeURIComponent(path.slice("/instance/".length))),
    entities: () => entitiesPage(view, params),
    partitions: () => partitionsPage(view),
  };
  const render = pages[page] || pages.instances;
  try {
    const stop = await render();
    if (serial !== routeSerial) {
      if (stop) stop();
    } else {
      stopPage = stop || null;
    }
  } catch (error) {
    showError(view, error);
  }
}

function showError(view, error) {
  view.replaceChildren(
    el("div", { class: "panel" }, el("h2", {}, "Something went wrong"), el("p", { class: "error", "data-testid": "page-error" }, error.message)),
  );
}

function go(path, params) {
  const query = params && [...params.keys()].length ? `?${params}` : "";
  const hash = `#${path}${query}`;
  // The same hash fires no hashchange: draw again (Apply, Clear, Refresh).
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** A paged list: keeps the continuation of each page seen, for Previous. */
class Pager {
  constructor(slot, load) {
    this.slot = slot;
    this.load = load;
    this.tokens = [null];
    this.index = 0;
    this.next = null;
    this.busy = false;
    this.error = null;
    this.loadedOnce = false;
  }
  async show(index) {
    if (this.busy) return;
    this.busy = true;
    this.error = null;
    this.slot.replaceChildren(this.controls());
    try {
      const next = await this.load(this.tokens[index]);
      this.index = index;
      this.next = next;
      this.tokens.length = index + 1;
      if (next) this.tokens.push(next);
    } catch (error) {
      if (index === 0 && this.tokens.length === 1 && !this.loadedOnce) throw error;
      this.error = error.message;
    } finally {
      this.busy = false;
    }
    this.loadedOnce = true;
    this.slot.replaceChildren(this.controls());
  }
  controls() {
    return el(
      "div",
      { class: "pager" },
      el("button", { type: "button", "data-testid": "prev", disabled: this.busy || this.index === 0, onclick: () => this.show(this.index - 1) }, "‹ Previous"),
      el("span", { class: "muted", "data-testid": "page-number" }, `Page ${this.index + 1}`),
      el("button", { type: "button", "data-testid": "next", disabled: this.busy || !this.next, onclick: () => this.show(this.index + 1) }, "Next ›"),
      this.error ? el("span", { class: "error" }, this.error) : null,
    );
  }
}

/** The continuation of a list response (hex, as the API hands it out). */
function continuationOf(response) {
  return response.headers.get("x-ms-continuation-token");
}

// ---------------------------------------------------------------------------
// Instances.

async function instancesPage(view, params) {
  const filter = {
    status: params.get("status") || "",
    name: params.get("name") || "",
    prefix: params.get("prefix") || "",
    from: params.get("from") || "",
    to: params.get("to") || "",
  };
  const overview = (await request("/api/v1/overview")).body;
  setStatusLine(`${overview.partitionsServing}/${overview.partitionCount} partitions serving · ${fmtNumber(overview.instances)} instances · ${fmtNumber(overview.entities)} entities`);

  const apply = (changes) => {
    const next = { ...filter, ...changes };
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(next)) if (value) query.set(key, value);
    go("/instances", query);
  };

  const chips = el("div", { class: "chips", "data-testid": "status-counts" });
  chips.append(
    el("span", { class: `chip${filter.status ? "" : " selected"}`, "data-status": "", onclick: () => apply({ status: "" }) }, "All", el("b", {}, fmtNumber(overview.instances))),
  );
  for (const status of STATUSES) {
    const count = overview.instancesByStatus[status] || 0;
    if (!count && status === "ContinuedAsNew") continue;
    chips.append(
      el("span", { class: `chip${filter.status === status ? " selected" : ""}`, "data-status": status, onclick: () => apply({ status }) }, status, el("b", {}, fmtNumber(count))),
    );
  }

  const inputs = {
    status: el("select", { "aria-label": "Status", name: "status" }, el("option", { value: "" }, "Any status"), ...STATUSES.map((s) => el("option", { value: s, selected: s === filter.status }, s))),
    name: el("input", { name: "name", placeholder: "orchestration name", value: filter.name }),
    prefix: el("input", { name: "prefix", placeholder: "instance id prefix", value: filter.prefix }),
    from: el("input", { name: "from", type: "datetime-local", step: 1, value: filter.from }),
    to: el("input", { name: "to", type: "datetime-local", step: 1, value: filter.to }),
  };
  const submit = () => apply(Object.fromEntries(Object.entries(inputs).map(([k, input]) => [k, input.value.trim()])));
  for (const input of Object.values(inputs)) {
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") submit();
    });
  }
  const toolbar = el(
    "div",
    { class: "toolbar" },
    el("label", {}, "Status", inputs.status),
    el("label", {}, "Name", inputs.name),
    el("label", {}, "Id prefix", inputs.prefix),
    el("label", {}, "Created from (UTC)", inputs.from),
    el("label", {}, "Created before (UTC)", inputs.to),
    el("button", { type: "button", class: "primary", "data-testid": "apply", onclick: submit }, "Apply"),
    el("button", { type: "button", onclick: () => go("/instances") }, "Clear"),
    el("button", { type: "button", onclick: () => route() }, "Refresh"),
  );

  const body = el("tbody");
  const table = el(
    "table",
    { "data-testid": "instances" },
    el("thead", {}, el("tr", {}, ...["Instance id", "Name", "Status", "Created", "Last updated"].map((h) => el("th", {}, h)))),
    body,
  );
  const pagerSlot = el("div");
  const query = new URLSearchParams({ top: String(PAGE_SIZE), showInput: "false" });
  if (filter.status) query.set("runtimeStatus", filter.status);
  if (filter.name) query.set("name", filter.name);
  if (filter.prefix) query.set("instanceIdPrefix", filter.prefix);
  // The inputs are UTC wall-clock times (as every time on these pages).
  for (const [name, param] of [["from", "createdTimeFrom"], ["to", "createdTimeTo"]]) {
    if (!filter[name]) continue;
    const date = new Date(`${filter[name]}Z`);
    if (Number.isNaN(date.getTime())) throw new Error(`"${filter[name]}" is not a date and time (YYYY-MM-DDTHH:MM[:SS])`);
    query.set(param, date.toISOString());
  }

  const pager = new Pager(pagerSlot, async (token) => {
    const q = new URLSearchParams(query);
    if (token) q.set("continuationToken", token);
    const response = await request(`${API}/instances?${q}`);
    const rows = response.body.map((i) =>
      el(
        "tr",
        { "data-instance-id": i.instanceId },
        el("td", { class: "id mono" }, el("a", { href: `#/instance/${enc(i.instanceId)}` }, i.instanceId)),
        el("td", {}, i.name),
        el("td", {}, badge(i.runtimeStatus)),
        el("td", {}, fmtTime(i.createdTime)),
        el("td", {}, fmtTime(i.lastUpdatedTime)),
      ),
    );
    body.replaceChildren(...rows);
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No instances match.")));
    return continuationOf(response);
  });
  await pager.show(0);
  view.replaceChildren(el("h1", {}, "Instances"), chips, toolbar, table, pagerSlot);
  return null;
}

// ---------------------------------------------------------------------------
// One instance: details, actions, timeline, history.

const KIND_LABEL = { activity: "activity", subOrchestration: "sub-orch", timer: "timer", entityCall: "entity", entityLock: "lock" };

async function instancePage(view, id) {
  const began = performance.now();
  const path = () => `/api/v1/instances/${enc(id)}/timeline?eventsFrom=${eventsFrom}`;
  // Which window of a history longer than one answer carries.
  let eventsFrom = 0;
  const head = el("div");
  const actions = el("div", { class: "actions", "data-testid": "actions" });
  const failure = el("div");
  const details = el("div", { class: "panel" });
  const timelinePanel = el("div", { class: "panel", "data-testid": "timeline" });
  const detailPanel = el("div", { class: "tl-detail", "data-testid": "bar-detail" });
  const eventsPanel = el("div", { class: "panel", "data-testid": "history" });
  const warning = el("p", { class: "error", "data-testid": "refresh-warning", hidden: true });
  view.replaceChildren(head, warning, actions, failure, details, el("h2", {}, "Timeline"), timelinePanel, el("h2", {}, "History"), eventsPanel);

  let timer = null;
  let stopped = false;
  let drawnEvents = -1;
  let selected = null;
  let loads = 0;
  let failures = 0;

  // One refresh chain at a time: a load cancels the pending one, and only
  // the answer to the latest request is drawn.
  const load = async () => {
    if (timer) clearTimeout(timer);
    timer = null;
    const serial = ++loads;
    let data;
    try {
      data = (await request(path())).body;
    } catch (error) {
      if (stopped || serial !== loads) return;
      if (error.status === 404 && drawnEvents !== -1) {
        head.replaceChildren(el("h1", {}, id), el("p", { class: "error" }, "This instance no longer exists (purged)."));
        return;
      }
      if (drawnEvents === -1) throw error;
      // Drawn before: keep what is shown, say why it is not fresh, and
      // try again, backing off.
      failures += 1;
      warning.textContent = `Could not refresh (${error.message}); trying again.`;
      warning.hidden = false;
      timer = setTimeout(() => load().catch((e) => showError(view, e)), Math.min(30000, REFRESH_MS * 2 ** failures));
      return;
    }
    if (stopped || serial !== loads) return;
    failures = 0;
    warning.hidden = true;
    renderHead(data);
    const tl = data.timeline;
    const endMs = data.terminal ? tl.endMs : Math.max(tl.endMs, data.serverTimeMs);
    if (tl.eventCount !== drawnEvents || !data.terminal) {
      drawTimeline(timelinePanel, tl, endMs, (bar) => {
        selected = bar;
        showBar(bar);
      });
      drawEvents(eventsPanel, tl, (from) => {
        eventsFrom = from;
        drawnEvents = -2;
        load().catch((e) => showError(view, e));
      });
      if (drawnEvents === -1) {
        const ms = Math.round(performance.now() - began);
        document.body.dataset.timelineMs = String(ms);
        document.body.dataset.timelineEvents = String(tl.eventCount);
        console.info(`timeline of ${tl.eventCount} events drawn in ${ms} ms`);
      }
      drawnEvents = tl.eventCount;
    }
    if (selected) {
      // The same call after a refresh: the last bar of its kind and id (a
      // rewind takes the failed one out and schedules it again).
      const again = tl.bars.findLast((b) => b.kind === selected.kind && b.eventId === selected.eventId);
      selected = again || null;
      if (again) showBar(again);
      else detailPanel.replaceChildren();
    }
    if (!data.terminal && !stopped) timer = setTimeout(() => load().catch((e) => showError(view, e)), REFRESH_MS);
  };

  const showBar = (bar) => {
    const end = bar.endMs ?? null;
    detailPanel.replaceChildren(
      el(
        "div",
        { class: "grid" },
        el("div", {}, "Call"),
        el("div", { "data-testid": "bar-name" }, `${KIND_LABEL[bar.kind]} ${bar.name}${bar.attempt > 1 ? ` (attempt ${bar.attempt})` : ""}`),
        el("div", {}, "Event id"),
        el("div", {}, bar.eventId),
        el("div", {}, "Started"),
        el("div", {}, fmtTime(bar.startMs)),
        el("div", {}, "Ended"),
        el("div", {}, end ? `${fmtTime(end)} (after ${fmtDuration(end - bar.startMs)})` : "not yet"),
        el("div", {}, "Outcome"),
        el("div", { "data-testid": "bar-outcome" }, bar.outcome),
        bar.dueMs ? el("div", {}, "Due") : null,
        bar.dueMs ? el("div", {}, fmtTime(bar.dueMs)) : null,
        bar.child ? el("div", {}, "Instance") : null,
        bar.child ? el("div", {}, el("a", { href: `#/instance/${enc(bar.child)}` }, bar.child)) : null,
        bar.detail ? el("div", {}, bar.outcome === "failed" ? "Failure" : "Result") : null,
        bar.detail ? el("div", {}, el("pre", { "data-testid": "bar-text" }, bar.detail)) : null,
      ),
    );
  };

  const renderHead = (data) => {
    const i = data.instance;
    head.replaceChildren(
      el("div", { class: "summary-line" }, el("a", { href: "#/instances" }, "‹ Instances")),
      el("h1", { "data-testid": "instance-id" }, i.instanceId),
      el(
        "div",
        { class: "summary-line" },
        el("span", { "data-testid": "instance-status" }, badge(i.runtimeStatus)),
        el("span", {}, i.name),
        data.terminal ? null : el("span", { class: "muted" }, el("span", { class: "live" }), `refreshing every ${REFRESH_MS / 1000} s`),
      ),
    );
    renderActions(actions, data, () => load().catch((e) => showError(view, e)));
    if (i.failureDetails) {
      const f = i.failureDetails;
      failure.replaceChildren(
        el(
          "div",
          { class: "failure", "data-testid": "failure" },
          el("b", {}, f.errorType || "Failure"),
          ": ",
          el("span", { "data-testid": "failure-message" }, f.errorMessage || ""),
          f.stackTrace ? el("pre", {}, f.stackTrace) : null,
        ),
      );
    } else {
      failure.replaceChildren();
    }
    const fields = [
      ["Created", fmtTime(i.createdTime)],
      ["Last updated", fmtTime(i.lastUpdatedTime)],
      i.parentInstanceId ? ["Parent", el("a", { href: `#/instance/${enc(i.parentInstanceId)}` }, i.parentInstanceId)] : null,
      ["Input", el("pre", { "data-testid": "input" }, show(i.input))],
      ["Output", el("pre", { "data-testid": "output" }, show(i.output))],
      ["Custom status", el("pre", { "data-testid": "custom-status" }, show(i.customStatus))],
      ["History", `${fmtNumber(data.timeline.eventCount)} events`],
    ].filter(Boolean);
    details.replaceChildren(el("div", { class: "grid" }, ...fields.flatMap(([k, v]) => [el("div", {}, k), el("div", {}, v)])));
  };

  await load();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };

  // (drawTimeline and drawEvents are below, shared by nothing else but
  // kept apart for reading.)
  function drawTimeline(panel, tl, endMs, onSelect) {
    const scrollTop = panel.querySelector(".vlist")?.scrollTop || 0;
    const t0 = tl.startMs;
    const span = Math.max(1, endMs - t0);
    const x = (ms) => ((ms - t0) / span) * 100;
    const legend = el(
      "div",
      { class: "tl-legend" },
      el("span", {}, el("i", { class: "swatch bar-completed" }), "completed"),
      el("span", {}, el("i", { class: "swatch bar-failed" }), "failed"),
      el("span", {}, el("i", { class: "swatch bar-pending" }), "pending"),
      el("span", {}, el("i", { class: "swatch kind-timer bar-completed" }), "timer fired"),
      el("span", {}, `${fmtNumber(tl.bars.length)} calls over ${fmtDuration(span)}`),
      tl.barsLeftOut ? el("span", { class: "error" }, `(${fmtNumber(tl.barsLeftOut)} later calls not drawn)`) : null,
    );
    const canvas = el("canvas", { class: "tl-overview", "aria-label": "All calls at a glance" });
    const axis = el("div", { class: "tl-axis" });
    for (let k = 0; k <= 4; k++) {
      axis.append(el("span", { style: { left: `${k * 25}%` } }, `+${fmtDuration((span * k) / 4)}`));
    }
    for (const mark of tl.marks) {
      const failed = mark.eventType === "ExecutionCompleted" && /^Failed/.test(mark.label);
      axis.append(el("i", { class: failed ? "fail" : "", style: { left: `${x(mark.atMs)}%` }, title: `${mark.eventType} ${fmtTime(mark.atMs)} ${mark.label}` }));
    }
    const list = el("div", { "data-testid": "bars" });
    panel.replaceChildren(legend, canvas, axis, list, detailPanel);
    if (!tl.bars.length) {
      list.replaceChildren(el("p", { class: "muted" }, "No activities, timers, sub-orchestrations or entity calls yet."));
    } else {
      virtualList(list, tl.bars.length, 480, (i) => {
        const bar = tl.bars[i];
        const end = bar.endMs ?? endMs;
        const row = el(
          "div",
          { class: selected && selected.startIndex === bar.startIndex ? "tl-row selected" : "tl-row", "data-index": i, "data-kind": bar.kind, "data-outcome": bar.outcome, "data-attempt": bar.attempt, title: bar.detail || "" },
          el(
            "div",
            { class: "tl-label" },
            el("span", { class: "kind" }, KIND_LABEL[bar.kind]),
            bar.name,
            bar.attempt > 1 ? el("span", { class: "attempt" }, `attempt ${bar.attempt}`) : null,
          ),
          el(
            "div",
            { class: "tl-track" },
            el("div", { class: `tl-bar kind-${bar.kind} bar-${bar.outcome}`, style: { left: `${x(bar.startMs)}%`, width: `${Math.max(0, x(end) - x(bar.startMs))}%` } }),
          ),
        );
        row.addEventListener("click", () => {
          for (const r of list.querySelectorAll(".tl-row.selected")) r.classList.remove("selected");
          row.classList.add("selected");
          onSelect(bar);
        });
        return row;
      }, scrollTop);
    }
    drawOverview(canvas, tl.bars, t0, span, endMs);
  }
}

function drawOverview(canvas, bars, t0, span, endMs) {
  const width = canvas.clientWidth || 800;
  const height = canvas.clientHeight || 64;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const colors = { completed: "#2e8b57", failed: "#c0392b", pending: "#2f7ed8" };
  const n = Math.max(1, bars.length);
  const rowHeight = Math.max(1, (height - 4) / n);
  bars.forEach((bar, i) => {
    const start = ((bar.startMs - t0) / span) * width;
    const end = (((bar.endMs ?? endMs) - t0) / span) * width;
    ctx.fillStyle = bar.kind === "timer" && bar.outcome === "completed" ? "#8a939d" : colors[bar.outcome];
    ctx.fillRect(start, 2 + (i * (height - 4)) / n, Math.max(1, end - start), rowHeight);
  });
}

/**
 * Draws only the rows in view of a list of `count` rows: a 10,000-row
 * list costs what 40 rows cost.
 */
function virtualList(container, count, maxHeight, renderRow, scrollTop = 0) {
  container.classList.add("vlist");
  container.style.height = `${Math.min(count * ROW, maxHeight) + 2}px`;
  const spacer = el("div", { class: "spacer" });
  spacer.style.height = `${count * ROW}px`;
  container.replaceChildren(spacer);
  let drawn = "";
  let pending = false;
  const draw = () => {
    pending = false;
    const top = container.scrollTop;
    const view = container.clientHeight || maxHeight;
    const first = Math.max(0, Math.floor(top / ROW) - 10);
    const last = Math.min(count, Math.ceil((top + view) / ROW) + 10);
    const key = `${first}:${last}`;
    if (key === drawn) return;
    drawn = key;
    const rows = [];
    for (let i = first; i < last; i++) {
      const row = renderRow(i);
      row.style.top = `${i * ROW}px`;
      rows.push(row);
    }
    spacer.replaceChildren(...rows);
  };
  container.addEventListener("scroll", () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  });
  container.scrollTop = scrollTop;
  draw();
}

function drawEvents(panel, tl, showWindow) {
  const events = tl.events;
  const from = tl.eventsFrom;
  const scrollTop = panel.querySelector(".vlist")?.scrollTop || 0;
  const header = el("div", { class: "ev-row ev-head" }, el("span", {}, "#"), el("span", {}, "Time (UTC)"), el("span", {}, "Event"), el("span", {}, "Id"), el("span", {}, "Details"));
  const list = el("div", { "data-testid": "events" });
  const windowed = events.length < tl.eventCount;
  const note = windowed
    ? el(
        "p",
        { class: "muted" },
        `Events ${fmtNumber(from)} to ${fmtNumber(from + events.length - 1)} of ${fmtNumber(tl.eventCount)}. `,
        el("button", { type: "button", disabled: from === 0, onclick: () => showWindow(Math.max(0, from - events.length)) }, "Earlier"),
        " ",
        el("button", { type: "button", disabled: from + events.length >= tl.eventCount, onclick: () => showWindow(from + events.length) }, "Later"),
      )
    : el("p", { class: "muted" }, `${fmtNumber(events.length)} events; payloads cut to 200 characters (the management API's ?showHistory=true has them whole).`);
  panel.replaceChildren(note, header, list);
  virtualList(list, events.length, 420, (i) => {
    const e = events[i];
    const failed = /Failed$/.test(e.eventType) || (e.eventType === "ExecutionCompleted" && /^Failed/.test(e.summary));
    return el(
      "div",
      { class: `ev-row${failed ? " fail" : ""}`, "data-index": from + i, "data-type": e.eventType },
      el("span", { class: "muted" }, from + i),
      el("span", {}, new Date(e.timestampMs).toISOString().replace("T", " ")),
      el("span", {}, e.eventType),
      el("span", {}, e.eventId >= 0 ? e.eventId : ""),
      el("span", { title: e.summary }, e.summary),
    );
  }, scrollTop);
}

function renderActions(container, data, reload) {
  const i = data.instance;
  const id = i.instanceId;
  const base = `${API}/instances/${enc(id)}`;
  const status = i.runtimeStatus;
  const terminal = data.terminal;
  const reason = { name: "reason", label: "Reason (optional)" };
  const control = (action) => async (values) => {
    const q = values.reason ? `?reason=${enc(values.reason)}` : "";
    await request(`${base}/${action}${q}`, { method: "POST" });
  };
  const specs = [
    {
      label: "Raise event",
      enabled: !terminal,
      text: `Send an external event to ${id}.`,
      fields: [
        { name: "event", label: "Event name", required: true },
        { name: "data", label: "Data (JSON; empty for null)", textarea: true },
      ],
      run: async (values) => {
        const data = values.data.trim() || "null";
        try {
          JSON.parse(data);
        } catch (error) {
          throw new Error(`The data is not JSON: ${error.message}`);
        }
        await request(`${base}/raiseEvent/${enc(values.event)}`, { method: "POST", body: data });
      },
    },
    { label: "Suspend", enabled: status === "Running" || status === "Pending", text: `Suspend ${id}? It stops taking steps until resumed.`, fields: [reason], run: control("suspend") },
    { label: "Resume", enabled: status === "Suspended", text: `Resume ${id}?`, fields: [reason], run: control("resume") },
    { label: "Terminate", enabled: !terminal, danger: true, text: `Terminate ${id}? It ends now; what it was waiting for is abandoned.`, fields: [reason], run: control("terminate") },
    { label: "Rewind", enabled: status === "Failed", text: `Rewind ${id}? Its failed calls are taken out of the history and run again.`, fields: [reason], run: control("rewind") },
    {
      label: "Purge",
      enabled: terminal,
      danger: true,
      text: `Purge ${id}? Its state and history are deleted for good.`,
      fields: [],
      run: async () => {
        await request(base, { method: "DELETE" });
      },
      after: () => go("/instances"),
    },
  ];
  container.replaceChildren(
    ...specs.map((spec) =>
      el(
        "button",
        {
          type: "button",
          class: spec.danger ? "danger" : "",
          "data-action": spec.label.toLowerCase().replace(" ", "-"),
          disabled: !spec.enabled,
          onclick: () =>
            confirmAction(spec).then((done) => {
              if (!done) return;
              if (spec.after) spec.after();
              else reload();
            }),
        },
        spec.label,
      ),
    ),
  );
}

/** Opens the confirmation dialog; resolves true once the action ran. */
function confirmAction(spec) {
  const dialog = document.getElementById("confirm");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  const error = document.getElementById("confirm-error");
  document.getElementById("confirm-title").textContent = `${spec.label}?`;
  document.getElementById("confirm-text").textContent = spec.text;
  const inputs = {};
  document.getElementById("confirm-fields").replaceChildren(
    ...spec.fields.map((f) => {
      const input = f.textarea ? el("textarea", { name: f.name, rows: 4 }) : el("input", { name: f.name });
      inputs[f.name] = input;
      return el("label", {}, f.label, input);
    }),
  );
  ok.textContent = spec.label;
  ok.className = spec.danger ? "danger" : "primary";
  error.hidden = true;
  dialog.showModal();
  return new Promise((resolve) => {
    const finish = (result) => {
      ok.onclick = null;
      cancel.onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(result);
    };
    cancel.onclick = () => finish(false);
    dialog.onclose = () => finish(false);
    ok.onclick = async () => {
      const values = Object.fromEntries(Object.entries(inputs).map(([k, input]) => [k, input.value]));
      const missing = spec.fields.find((f) => f.required && !values[f.name].trim());
      if (missing) {
        error.textContent = `${missing.label} is required.`;
        error.hidden = false;
        return;
      }
      ok.disabled = true;
      try {
        await spec.run(values);
        finish(true);
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
      } finally {
        ok.disabled = false;
      }
    };
  });
}

// ---------------------------------------------------------------------------
// Entities.

async function entitiesPage(view, params) {
  const filter = { name: params.get("name") || "", prefix: params.get("prefix") || "" };
  const inputs = {
    name: el("input", { name: "name", placeholder: "entity name", value: filter.name }),
    prefix: el("input", { name: "prefix", placeholder: "key prefix (with a name)", value: filter.prefix }),
  };
  const submit = () => {
    const query = new URLSearchParams();
    if (inputs.name.value.trim()) query.set("name", inputs.name.value.trim());
    if (inputs.prefix.value.trim()) query.set("prefix", inputs.prefix.value.trim());
    go("/entities", query);
  };
  for (const input of Object.values(inputs)) {
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") submit();
    });
  }
  const body = el("tbody");
  const pagerSlot = el("div");
  const base = filter.name ? `${API}/entities/${enc(filter.name)}` : `${API}/entities`;
  const query = new URLSearchParams({ top: String(PAGE_SIZE) });
  if (filter.name && filter.prefix) query.set("keyPrefix", filter.prefix);
  const pager = new Pager(pagerSlot, async (token) => {
    const q = new URLSearchParams(query);
    if (token) q.set("continuationToken", token);
    const response = await request(`${base}?${q}`);
    const rows = response.body.map((e) => {
      const text = show(e.state);
      const cut = text.length > 120 ? `${text.slice(0, 120)}…` : text;
      const state = el("pre", { "data-testid": "entity-state", title: "Click to show all" }, cut);
      state.addEventListener("click", () => {
        state.textContent = state.textContent === cut ? text : cut;
      });
      return el(
        "tr",
        { "data-entity": `@${e.entityId.name}@${e.entityId.key}` },
        el("td", {}, e.entityId.name),
        el("td", { class: "id mono" }, e.entityId.key),
        el("td", {}, state),
        el("td", { class: "num", "data-testid": "backlog" }, e.backlog),
        el("td", { class: "id" }, e.lockedBy ? el("a", { href: `#/instance/${enc(e.lockedBy)}` }, e.lockedBy) : el("span", { class: "muted" }, "—")),
        el("td", {}, fmtTime(e.lastModifiedTime)),
      );
    });
    body.replaceChildren(...rows);
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No entities match.")));
    return continuationOf(response);
  });
  await pager.show(0);
  view.replaceChildren(
    el("h1", {}, "Entities"),
    el(
      "div",
      { class: "toolbar" },
      el("label", {}, "Name", inputs.name),
      el("label", {}, "Key prefix", inputs.prefix),
      el("button", { type: "button", class: "primary", onclick: submit }, "Apply"),
      el("button", { type: "button", onclick: () => go("/entities") }, "Clear"),
      el("button", { type: "button", onclick: () => route() }, "Refresh"),
    ),
    el(
      "table",
      { "data-testid": "entities" },
      el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Key"), el("th", {}, "State"), el("th", { class: "num" }, "Queue"), el("th", {}, "Locked by"), el("th", {}, "Last modified"))),
      body,
    ),
    pagerSlot,
  );
  return null;
}

// ---------------------------------------------------------------------------
// Partitions, refreshed live.

async function partitionsPage(view) {
  let previous = null;
  let timer = null;
  let stopped = false;
  const summary = el("div", { class: "panel", "data-testid": "queues" });
  const body = el("tbody");
  const foot = el("tfoot");
  const updated = el("span", { class: "muted", "data-testid": "updated" });
  const headers = [
    ["Partition", ""], ["Owner", ""], ["State", ""], ["Instances", "num"], ["Entities", "num"], ["In memory", "num"],
    ["Queued steps", "num"], ["Queued activities", "num"], ["Outbox", "num"], ["Commits/s", "num"], ["Events/commit", "num"],
    ["Log since checkpoint", "num"], ["Durable LSN", "num"], ["Last checkpoint", ""],
  ];
  view.replaceChildren(
    el("h1", {}, "Partitions"),
    el("p", {}, el("span", { class: "live" }), updated),
    summary,
    el("table", { "data-testid": "partitions" }, el("thead", {}, el("tr", {}, ...headers.map(([h, c]) => el("th", { class: c }, h)))), body, foot),
    el("p", { class: "muted" }, "Commits/s and events/commit are over the last refresh (since the server started on the first reading). Log since checkpoint is what a restart would replay."),
  );
  const tick = async () => {
    timer = null;
    const data = (await request("/api/v1/partitions")).body;
    if (stopped) return;
    const dt = previous ? (data.serverTimeMs - previous.serverTimeMs) / 1000 : null;
    const before = new Map((previous?.partitions || []).map((p) => [p.partition, p]));
    let totals = { instances: 0, entities: 0, steps: 0, activities: 0, outbox: 0, commits: 0, events: 0, rate: 0 };
    const rows = data.partitions.map((p) => {
      const old = before.get(p.partition);
      const commits = old ? p.log.commits - old.log.commits : p.log.commits;
      const events = old ? p.log.events - old.log.events : p.log.events;
      const rate = dt ? commits / dt : null;
      totals.instances += p.instances;
      totals.entities += p.entities;
      totals.steps += p.queued.orchestration;
      totals.activities += p.queued.activity;
      totals.outbox += p.queued.outbox;
      totals.commits += commits;
      totals.events += events;
      totals.rate += rate || 0;
      const checkpoint = p.checkpoint.writtenTimeMs
        ? `LSN ${fmtNumber(p.checkpoint.writtenLsn)}, ${fmtDuration(Math.max(0, data.serverTimeMs - p.checkpoint.writtenTimeMs))} ago`
        : `LSN ${fmtNumber(p.checkpoint.lsn)} (at open)`;
      return el(
        "tr",
        { "data-partition": p.partition },
        el("td", { class: "num" }, p.partition),
        el("td", {}, p.owner),
        el("td", {}, p.serving ? "serving" : el("span", { class: "error", title: p.lastStorageError || "" }, "stopped")),
        el("td", { class: "num", "data-testid": "instances" }, fmtNumber(p.instances)),
        el("td", { class: "num" }, fmtNumber(p.entities)),
        el("td", { class: "num" }, `${fmtNumber(p.recordsResident)} · ${fmtBytes(p.recordsResidentBytes)}`),
        el("td", { class: "num" }, fmtNumber(p.queued.orchestration)),
        el("td", { class: "num" }, fmtNumber(p.queued.activity)),
        el("td", { class: "num" }, fmtNumber(p.queued.outbox)),
        el("td", { class: "num" }, rate === null ? "–" : fmtNumber(rate, 1)),
        el("td", { class: "num" }, commits ? fmtNumber(events / commits, 1) : "–"),
        el("td", { class: "num" }, `${fmtNumber(p.log.eventsSinceCheckpoint)} · ${fmtBytes(p.log.bytesSinceCheckpoint)}`),
        el("td", { class: "num" }, fmtNumber(p.log.durableLsn)),
        el("td", {}, checkpoint),
      );
    });
    body.replaceChildren(...rows);
    foot.replaceChildren(
      el(
        "tr",
        {},
        el("th", {}, "All"), el("th"), el("th"),
        el("th", { class: "num", "data-testid": "total-instances" }, fmtNumber(totals.instances)),
        el("th", { class: "num" }, fmtNumber(totals.entities)),
        el("th"),
        el("th", { class: "num" }, fmtNumber(totals.steps)),
        el("th", { class: "num" }, fmtNumber(totals.activities)),
        el("th", { class: "num" }, fmtNumber(totals.outbox)),
        el("th", { class: "num" }, dt ? fmtNumber(totals.rate, 1) : "–"),
        el("th", { class: "num" }, totals.commits ? fmtNumber(totals.events / totals.commits, 1) : "–"),
        el("th"), el("th"), el("th"),
      ),
    );
    const q = data.queues;
    summary.replaceChildren(
      el(
        "div",
        { class: "grid" },
        el("div", {}, "Worker streams"),
        el("div", { "data-testid": "worker-streams" }, q.workerStreams),
        el("div", {}, "Waiting in the engine"),
        el("div", {}, `${q.engine.orchestration} steps, ${q.engine.activity} activities`),
        el("div", {}, "Held for a worker"),
        el("div", {}, `${q.held.orchestration} steps, ${q.held.activity} activities, ${q.held.entity} entity batches`),
        el("div", {}, "Out at workers"),
        el("div", {}, `${q.inFlight.orchestration} steps, ${q.inFlight.activity} activities, ${q.inFlight.entity} entity batches`),
      ),
    );
    updated.textContent = `Updated ${fmtTime(data.serverTimeMs)}, every ${REFRESH_MS / 1000} s`;
    document.body.dataset.partitionsRefreshes = String(Number(document.body.dataset.partitionsRefreshes || 0) + 1);
    previous = data;
    if (!stopped) timer = setTimeout(() => tick().catch((e) => showError(view, e)), REFRESH_MS);
  };
  await tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

// ---------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  setupLogin();
  route();
});
