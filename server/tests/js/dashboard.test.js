// The dashboard (`/ui`) in a real browser: Debian's chromium, driven by
// playwright-core (pinned in package.json), against a running
// `basalt serve` with a bearer token. The official JavaScript SDK's worker
// makes real instances first: completed, failed, retried, waiting on a
// timer, calling entities, with a child, and one with a 10,000-event
// history; then each page is opened and what it shows is checked against
// the HTTP API, and the actions are clicked through.
//
// Run by server/tests/dashboard.rs with BASALT_GRPC, BASALT_HTTP (base
// URL), BASALT_TOKEN, CHROMIUM (the browser) and BASALT_UI_SCREENSHOTS
// (where each page's screenshot goes).

"use strict";

const { describe, test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const { chromium } = require("playwright-core");
const {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  EntityInstanceId,
  TaskEntity,
  RetryPolicy,
  whenAll,
} = require("@microsoft/durabletask-js");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const address = env("BASALT_GRPC");
const base = env("BASALT_HTTP");
const token = env("BASALT_TOKEN");
const browserPath = env("CHROMIUM");
const shots = env("BASALT_UI_SCREENSHOTS");
const API = `${base}/runtime/webhooks/durabletask`;
const BIG_FANOUT = 5000;
const MANY = 60;

const quiet = { info() {}, warn() {}, error() {}, debug() {} };
const metadata = async () => {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
};

// ---------------------------------------------------------------------------
// The worker's code.

const hello = async (_ctx, name) => `Hello ${name}`;
const double = async (_ctx, n) => n * 2;
const failedOnce = new Set();
const failsOnce = async (_ctx, key) => {
  if (!failedOnce.has(key)) {
    failedOnce.add(key);
    throw new Error(`the payment service is down for ${key}`);
  }
  return `paid ${key}`;
};
const attempts = new Map();
const thirdTimeLucky = async (_ctx, key) => {
  const attempt = (attempts.get(key) ?? 0) + 1;
  attempts.set(key, attempt);
  if (attempt < 3) throw new Error(`attempt ${attempt} fails`);
  return attempt;
};

const greet = async function* (ctx, name) {
  const a = yield ctx.callActivity(hello, name);
  return yield ctx.callActivity(hello, a);
};
const checkout = async function* (ctx, key) {
  ctx.setCustomStatus({ stage: "paying" });
  const paid = yield ctx.callActivity(failsOnce, key);
  ctx.setCustomStatus({ stage: "done" });
  return paid;
};
const retried = async function* (ctx, key) {
  const retry = new RetryPolicy({ maxNumberOfAttempts: 3, firstRetryIntervalInMilliseconds: 200 });
  return yield ctx.callActivity(thirdTimeLucky, key, { retry });
};
const waiter = async function* (ctx) {
  const now = ctx.currentUtcDateTime.getTime();
  yield ctx.createTimer(new Date(now + 3600 * 1000));
  return "woke";
};
const child = async function* (ctx, n) {
  return yield ctx.callActivity(double, n);
};
const withChild = async function* (ctx, n) {
  const doubled = yield ctx.callSubOrchestrator(child, n);
  return doubled + 1;
};
const fanOut = async function* (ctx, count) {
  const tasks = [];
  for (let i = 1; i <= count; i++) tasks.push(ctx.callActivity(double, i));
  const results = yield whenAll(tasks);
  return results.reduce((a, b) => a + b, 0);
};
class Counter extends TaskEntity {
  add(amount) {
    this.state.count += amount;
    return this.state.count;
  }
  get() {
    return this.state.count;
  }
  initializeState() {
    return { count: 0 };
  }
}
// Holds a counter's lock until told to let go.
const holder = async function* (ctx, key) {
  const lock = yield ctx.entities.lockEntities(new EntityInstanceId("counter", key));
  const word = yield ctx.waitForExternalEvent("release");
  lock.release();
  return word;
};
const callCounter = async function* (ctx, key) {
  const counter = new EntityInstanceId("counter", key);
  yield ctx.entities.callEntity(counter, "add", 5);
  return yield ctx.entities.callEntity(counter, "get");
};

// ---------------------------------------------------------------------------
// The HTTP API, from here, with the token.

async function api(pathAndQuery, init = {}) {
  const response = await fetch(pathAndQuery.startsWith("http") ? pathAndQuery : `${base}${pathAndQuery}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, ...(init.headers || {}) },
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

/** A raw request with any headers (fetch will not send a foreign Host). */
function raw(pathname, headers) {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: pathname, headers }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

let client;
let worker;
let browser;
let page;
// Unique per run, so a rerun against the same server never meets old ids.
const run = `ui${Date.now().toString(36)}`;
const ids = {
  done: `${run}-done`,
  failed: `${run}-checkout`,
  retry: `${run}-retry`,
  waiting: `${run}-waiting`,
  entity: `${run}-entity`,
  holder: `${run}-holder`,
  parent: `${run}-parent`,
  big: `${run}-big`,
};
const many = `${run}-many-`;
// An id and an input a browser would take for markup or URL syntax.
const hostile = `${run}-a/b?c#d%25<b>x</b>.`;
const hostileInput = "<img src=x onerror=alert(1)>";

async function until(what, check, seconds = 120) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function statusOf(id) {
  const { status, body } = await api(`/runtime/webhooks/durabletask/instances/${encodeURIComponent(id)}`);
  return status === 404 ? "missing" : body.runtimeStatus;
}

/** Opens an instance's page and waits until it is that instance's. */
async function openInstance(id) {
  await page.goto(`${base}/ui#/instance/${encodeURIComponent(id)}`);
  await page.waitForFunction((want) => document.querySelector("[data-testid=instance-id]")?.textContent === want, id);
}

/** The ids in the instances table, in order. */
function rowIds() {
  return page.$$eval("[data-testid=instances] tbody tr[data-instance-id]", (rows) => rows.map((r) => r.dataset.instanceId));
}

// What the page must never do: throw, or break its own Content-Security-Policy.
const pageProblems = [];
// Every request the page sends, to check that a cancelled action sent none.
const sent = [];

async function screenshot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

before(async () => {
  client = new TaskHubGrpcClient({ hostAddress: address, metadataGenerator: metadata, logger: quiet });
  worker = new TaskHubGrpcWorker({ hostAddress: address, metadataGenerator: metadata, logger: quiet });
  for (const o of [greet, checkout, retried, waiter, child, withChild, fanOut, callCounter, holder]) worker.addOrchestrator(o);
  for (const a of [hello, double, failsOnce, thirdTimeLucky]) worker.addActivity(a);
  worker.addNamedEntity("counter", () => new Counter());
  await worker.start();

  await client.scheduleNewOrchestration(greet, "Ada", ids.done);
  await client.scheduleNewOrchestration(checkout, "order-17", ids.failed);
  await client.scheduleNewOrchestration(retried, "r1", ids.retry);
  await client.scheduleNewOrchestration(waiter, undefined, ids.waiting);
  await client.scheduleNewOrchestration(callCounter, run, ids.entity);
  await client.scheduleNewOrchestration(withChild, 20, ids.parent);
  await client.scheduleNewOrchestration(fanOut, BIG_FANOUT, ids.big);
  await client.scheduleNewOrchestration(greet, hostileInput, hostile);
  for (let i = 0; i < MANY; i++) {
    await client.scheduleNewOrchestration(greet, `n${i}`, `${many}${String(i).padStart(3, "0")}`);
  }
  for (const id of [ids.done, ids.failed, ids.retry, ids.entity, ids.parent, ids.big, hostile]) {
    await until(`${id} to finish`, async () => ["Completed", "Failed"].includes(await statusOf(id)), 300);
  }
  await until("the many to finish", async () => {
    const { body } = await api(`/runtime/webhooks/durabletask/instances?instanceIdPrefix=${many}&runtimeStatus=Completed&top=1000`);
    return body.length === MANY;
  });
  await until(`${ids.waiting} to wait on its timer`, async () => (await statusOf(ids.waiting)) === "Running");

  browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  // A timezone far from UTC: the pages' times and filters are UTC whatever
  // the browser's zone.
  page = await browser.newPage({ viewport: { width: 1400, height: 900 }, timezoneId: "Asia/Kolkata" });
  page.on("pageerror", (error) => pageProblems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) pageProblems.push(`console: ${message.text()}`);
  });
  page.on("request", (request) => sent.push(`${request.method()} ${request.url()}`));
});

after(async () => {
  if (browser) await browser.close();
  if (worker) await worker.stop();
  if (client) await client.stop();
});

describe("dashboard", { concurrency: false }, () => {
  test("the page is served with its guards, and data needs the token", async () => {
    const shell = await fetch(`${base}/ui`);
    assert.equal(shell.status, 200);
    assert.match(shell.headers.get("content-security-policy"), /script-src 'self'/);
    assert.equal(shell.headers.get("x-frame-options"), "DENY");
    const noToken = await fetch(`${base}/api/v1/overview`);
    assert.equal(noToken.status, 401);
    const rebound = await raw("/ui", { Host: "attacker.example" });
    assert.equal(rebound.status, 403, "a foreign Host (DNS rebinding) is refused");
    const crossSite = await raw("/api/v1/overview", { Origin: "https://attacker.example", Authorization: `Bearer ${token}` });
    assert.equal(crossSite.status, 403, "a foreign Origin is refused");

    await page.goto(`${base}/ui`);
    await page.waitForSelector("#login[open]");
    await page.fill("#login-token", "wrong-token-0123456789");
    await page.click("#login-ok");
    await page.waitForSelector("#login[open] #login-error:not([hidden])");
    await page.fill("#login-token", token);
    await page.click("#login-ok");
    await page.waitForSelector("[data-testid=instances] tbody tr[data-instance-id]");
  });

  test("instances: counts by status, paging and filters match the API", async () => {
    const overview = (await api("/api/v1/overview")).body;
    for (const status of ["Running", "Completed", "Failed"]) {
      const shown = await page.textContent(`[data-testid=status-counts] [data-status=${status}] b`);
      assert.equal(shown.replace(/,/g, ""), String(overview.instancesByStatus[status]), `${status} count`);
      const listed = (await api(`/runtime/webhooks/durabletask/instances?runtimeStatus=${status}&top=1000`)).body;
      assert.equal(listed.length, overview.instancesByStatus[status], `${status} listed by the API`);
    }
    // Paging: the first two pages are the API's first two pages.
    const first = await api("/runtime/webhooks/durabletask/instances?top=25&showInput=false");
    const second = await api(`/runtime/webhooks/durabletask/instances?top=25&showInput=false&continuationToken=${first.headers.get("x-ms-continuation-token")}`);
    assert.deepEqual(await rowIds(), first.body.map((i) => i.instanceId));
    await screenshot("instances");
    await page.click("[data-testid=next]");
    await page.waitForSelector("[data-testid=page-number]:text('Page 2')");
    assert.deepEqual(await rowIds(), second.body.map((i) => i.instanceId));
    await page.click("[data-testid=prev]");
    await page.waitForSelector("[data-testid=page-number]:text('Page 1')");
    assert.deepEqual(await rowIds(), first.body.map((i) => i.instanceId));
    // Filters: an id prefix, then a name with a status.
    await page.fill("input[name=prefix]", `${many}01`);
    await page.click("[data-testid=apply]");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=instances] tbody tr[data-instance-id]").length === 10);
    assert.ok((await rowIds()).every((id) => id.startsWith(`${many}01`)));
    // Created-time bounds, in UTC (the browser runs in UTC+5:30): one
    // second past the last creation, nothing is created from then on and
    // everything before.
    const mine = (await api(`/runtime/webhooks/durabletask/instances?instanceIdPrefix=${run}&top=1000&showInput=false`)).body;
    const last = Math.max(...mine.map((i) => Date.parse(i.createdTime)));
    const bound = new Date(Math.floor(last / 1000) * 1000 + 1000).toISOString().slice(0, 19);
    await page.goto(`${base}/ui#/instances?prefix=${run}&from=${bound}`);
    await page.waitForSelector("[data-testid=instances] tbody td:text('No instances match.')");
    await page.goto(`${base}/ui#/instances?prefix=${run}&to=${bound}`);
    const before = (await api(`/runtime/webhooks/durabletask/instances?instanceIdPrefix=${run}&createdTimeTo=${bound}Z&top=25&showInput=false`)).body;
    assert.equal(before.length, 25);
    await page.waitForFunction((want) => [...document.querySelectorAll("[data-testid=instances] tbody tr[data-instance-id]")].map((r) => r.dataset.instanceId).join("|") === want, before.map((i) => i.instanceId).join("|"));
    await page.goto(`${base}/ui#/instances?from=yesterday`);
    await page.waitForSelector("[data-testid=page-error]:text('is not a date and time')");
    await page.goto(`${base}/ui#/instances?name=checkout&status=Failed&prefix=${run}`);
    await page.waitForFunction((id) => [...document.querySelectorAll("[data-testid=instances] tbody tr[data-instance-id]")].map((r) => r.dataset.instanceId).join() === id, ids.failed);
  });

  test("a failed instance: why it failed, on its timeline; rewound, it completes", async () => {
    await page.goto(`${base}/ui#/instances`);
    await page.click("[data-testid=status-counts] [data-status=Failed]");
    await page.waitForSelector(`tr[data-instance-id="${ids.failed}"] a`);
    await page.click(`tr[data-instance-id="${ids.failed}"] a`);
    await page.waitForSelector("[data-testid=instance-status] [data-status=Failed]");
    const apiState = (await api(`/runtime/webhooks/durabletask/instances/${ids.failed}`)).body;
    assert.equal(await page.textContent("[data-testid=failure-message]"), apiState.failureDetails.errorMessage);
    assert.match(apiState.failureDetails.errorMessage, /payment service is down/);
    assert.equal(await page.textContent("[data-testid=custom-status]"), JSON.stringify(apiState.customStatus, null, 2));
    const failedBar = "[data-testid=bars] .tl-row[data-kind=activity][data-outcome=failed]";
    await page.click(failedBar);
    assert.match(await page.textContent("[data-testid=bar-text]"), /the payment service is down for order-17/);
    assert.equal(await page.textContent("[data-testid=bar-outcome]"), "failed");
    await screenshot("instance-failed");

    await page.click("[data-action=rewind]");
    await page.waitForSelector("#confirm[open]");
    await page.fill("#confirm input[name=reason]", "the payment service is back");
    await page.click("#confirm-ok");
    // The page refreshes itself until the instance ends.
    await page.waitForSelector("[data-testid=instance-status] [data-status=Completed]", { timeout: 60000 });
    assert.equal(await statusOf(ids.failed), "Completed");
    const output = (await api(`/runtime/webhooks/durabletask/instances/${ids.failed}`)).body.output;
    assert.equal(await page.textContent("[data-testid=output]"), output);
    await page.waitForSelector("[data-testid=bars] .tl-row[data-kind=activity][data-outcome=completed]");
    await page.waitForSelector("[data-testid=events] [data-type=ExecutionRewound]");
    await screenshot("instance-rewound");
  });

  test("retries are numbered attempts on the timeline", async () => {
    await openInstance(ids.retry);
    await page.waitForSelector("[data-testid=instance-status] [data-status=Completed]");
    const bars = await page.$$eval("[data-testid=bars] .tl-row[data-kind=activity]", (rows) => rows.map((r) => [r.dataset.attempt, r.dataset.outcome]));
    assert.deepEqual(bars, [["1", "failed"], ["2", "failed"], ["3", "completed"]]);
    // The retry policy's waits are timers between the attempts.
    assert.ok((await page.$$("[data-testid=bars] .tl-row[data-kind=timer]")).length >= 2);
  });

  test("a running instance with a timer: suspend, resume, terminate, then purge", async () => {
    await openInstance(ids.waiting);
    await page.waitForSelector("[data-testid=instance-status] [data-status=Running]");
    await page.waitForSelector("[data-testid=bars] .tl-row[data-kind=timer][data-outcome=pending]");
    assert.ok(await page.isDisabled("[data-action=purge]"), "a running instance cannot be purged");
    await screenshot("instance-running");
    await page.click("[data-action=suspend]");
    await page.click("#confirm-ok");
    await page.waitForSelector("[data-testid=instance-status] [data-status=Suspended]", { timeout: 30000 });
    assert.equal(await statusOf(ids.waiting), "Suspended");
    assert.ok(await page.isDisabled("[data-action=suspend]"));
    await page.click("[data-action=resume]");
    await page.fill("#confirm input[name=reason]", "carry on");
    await page.click("#confirm-ok");
    await page.waitForSelector("[data-testid=instance-status] [data-status=Running]", { timeout: 30000 });
    assert.equal(await statusOf(ids.waiting), "Running");
    await page.click("[data-action=terminate]");
    await page.waitForSelector("#confirm[open]");
    const sentBefore = sent.length;
    await page.click("#confirm-cancel");
    await page.waitForTimeout(300);
    assert.ok(!sent.slice(sentBefore).some((r) => r.includes("/terminate")), "cancel sends nothing");
    assert.equal(await statusOf(ids.waiting), "Running", "cancel does nothing");
    await page.click("[data-action=terminate]");
    await page.fill("#confirm input[name=reason]", "no longer needed");
    await page.click("#confirm-ok");
    await page.waitForSelector("[data-testid=instance-status] [data-status=Terminated]", { timeout: 30000 });
    assert.equal(await statusOf(ids.waiting), "Terminated");
    await page.waitForSelector("[data-action=purge]:not([disabled])");
    await page.click("[data-action=purge]");
    await page.click("#confirm-ok");
    await page.waitForFunction(() => location.hash.startsWith("#/instances"));
    assert.equal(await statusOf(ids.waiting), "missing");
  });

  test("a sub-orchestration links to its child", async () => {
    await openInstance(ids.parent);
    await page.waitForSelector("[data-testid=instance-status] [data-status=Completed]");
    await page.click("[data-testid=bars] .tl-row[data-kind=subOrchestration]");
    const childLink = await page.waitForSelector("[data-testid=bar-detail] a");
    const childId = await childLink.textContent();
    await childLink.click();
    await page.waitForSelector(`[data-testid=instance-id]:text("${childId}")`);
    assert.equal(await statusOf(childId), "Completed");
  });

  test("entities: state and queue match the API", async () => {
    await page.goto(`${base}/ui#/entities?name=counter&prefix=${run}`);
    const row = await page.waitForSelector(`tr[data-entity="@counter@${run}"]`);
    const entity = (await api(`/runtime/webhooks/durabletask/entities/counter/${run}`)).body;
    assert.equal(await (await row.$("[data-testid=entity-state]")).textContent(), JSON.stringify(entity.state, null, 2));
    assert.equal(await (await row.$("[data-testid=backlog]")).textContent(), String(entity.backlog));
    assert.equal(entity.lockedBy, null);
    await screenshot("entities");
  });

  test("an entity's lock holder and queue; raising an event lets it go", async () => {
    const key = `${run}-locked`;
    const counter = new EntityInstanceId("counter", key);
    const entityPath = `/runtime/webhooks/durabletask/entities/counter/${key}`;
    await client.signalEntity(counter, "add", 1);
    await until("the counter to exist", async () => (await api(entityPath)).status === 200);
    await client.scheduleNewOrchestration(holder, key, ids.holder);
    await until("the lock to be held", async () => (await api(entityPath)).body.lockedBy === ids.holder);
    await client.signalEntity(counter, "add", 1);
    await until("the signal to queue", async () => (await api(entityPath)).body.backlog === 1);

    await page.goto(`${base}/ui#/entities?name=counter&prefix=${key}`);
    const row = await page.waitForSelector(`tr[data-entity="@counter@${key}"]`);
    assert.equal(await (await row.$("[data-testid=backlog]")).textContent(), "1");
    assert.equal(await (await row.$("a")).textContent(), ids.holder);
    await screenshot("entities-locked");
    await (await row.$("a")).click();
    await page.waitForSelector("[data-testid=bars] .tl-row[data-kind=entityLock][data-outcome=completed]");
    await page.click("[data-action=raise-event]");
    await page.fill("#confirm input[name=event]", "release");
    await page.fill("#confirm textarea[name=data]", "{not json");
    await page.click("#confirm-ok");
    await page.waitForSelector("#confirm-error:not([hidden])");
    assert.match(await page.textContent("#confirm-error"), /not JSON/);
    await page.fill("#confirm textarea[name=data]", '"done"');
    await page.click("#confirm-ok");
    await page.waitForSelector("[data-testid=instance-status] [data-status=Completed]", { timeout: 30000 });
    assert.equal((await api(`/runtime/webhooks/durabletask/instances/${ids.holder}`)).body.output, "done");
    await until("the queued signal to run", async () => {
      const entity = (await api(entityPath)).body;
      return entity.backlog === 0 && entity.lockedBy === null && entity.state.count === 2;
    });
  });

  test("partitions: one row each, totals match, refreshed live", async () => {
    await page.goto(`${base}/ui#/partitions`);
    await page.waitForSelector("[data-testid=partitions] tbody tr[data-partition]");
    const data = (await api("/api/v1/partitions")).body;
    assert.equal((await page.$$("[data-testid=partitions] tbody tr[data-partition]")).length, data.partitions.length);
    const overview = (await api("/api/v1/overview")).body;
    assert.equal((await page.textContent("[data-testid=total-instances]")).replace(/,/g, ""), String(overview.instances));
    assert.equal(await page.textContent("[data-testid=worker-streams]"), String(overview.queues.workerStreams));
    const refreshes = Number(await page.evaluate(() => document.body.dataset.partitionsRefreshes));
    await page.waitForFunction((n) => Number(document.body.dataset.partitionsRefreshes) > n, refreshes, { timeout: 10000 });
    await screenshot("partitions");
    // Leaving the page stops its refresh.
    await page.goto(`${base}/ui#/entities`);
    await page.waitForSelector("[data-testid=entities]");
    const left = Number(await page.evaluate(() => document.body.dataset.partitionsRefreshes));
    await page.waitForTimeout(2500);
    assert.equal(Number(await page.evaluate(() => document.body.dataset.partitionsRefreshes)), left);
  });

  test("ids and payloads that look like markup or URL syntax stay text", async () => {
    await page.goto(`${base}/ui#/instances?prefix=${encodeURIComponent(`${run}-a/`)}`);
    const link = await page.waitForSelector(`[data-testid=instances] tr[data-instance-id="${hostile.replace(/"/g, '\\"')}"] a`);
    assert.equal(await link.textContent(), hostile);
    await link.click();
    await page.waitForFunction((want) => document.querySelector("[data-testid=instance-id]")?.textContent === want, hostile);
    await page.waitForSelector("[data-testid=instance-status] [data-status=Completed]");
    assert.equal(await page.textContent("[data-testid=input]"), hostileInput);
    const injected = await page.evaluate(() => document.querySelectorAll("main img, main h1 *, [data-testid=events] b").length);
    assert.equal(injected, 0, "no element made from the id or the input");
    await page.click("[data-action=purge]");
    await page.click("#confirm-ok");
    await page.waitForFunction(() => location.hash.startsWith("#/instances"));
    assert.equal(await statusOf(hostile), "missing", "the purge reached the instance with that id");
  });

  test("a 10,000-event history draws as a timeline", async () => {
    await page.goto(`${base}/ui#/instances`);
    await page.waitForSelector("[data-testid=instances]");
    await page.evaluate(() => delete document.body.dataset.timelineMs);
    await page.goto(`${base}/ui#/instance/${ids.big}`);
    await page.waitForFunction(() => document.body.dataset.timelineMs, null, { timeout: 30000 });
    await page.waitForFunction((want) => document.querySelector("[data-testid=instance-id]")?.textContent === want, ids.big);
    const events = Number(await page.evaluate(() => document.body.dataset.timelineEvents));
    const ms = Number(await page.evaluate(() => document.body.dataset.timelineMs));
    const history = (await api(`/api/v1/instances/${ids.big}/timeline`)).body.timeline;
    assert.equal(events, history.events.length);
    assert.ok(events >= 10000, `the history has ${events} events`);
    assert.equal(history.bars.length, BIG_FANOUT);
    // Only the rows in view are in the page, whatever the history's size.
    const drawn = (await page.$$("[data-testid=bars] .tl-row")).length;
    assert.ok(drawn > 0 && drawn < 100, `${drawn} bar rows in the page`);
    await page.$eval("[data-testid=bars]", (list) => {
      list.scrollTop = list.scrollHeight;
    });
    await page.waitForSelector(`[data-testid=bars] .tl-row[data-index="${BIG_FANOUT - 1}"]`);
    console.log(`BASALT_TIMELINE ${events} events, ${history.bars.length} bars: drawn ${ms} ms after the route began (fetch included)`);
    await screenshot("instance-large");
  });

  test("no page error and no Content-Security-Policy violation on any page", () => {
    assert.deepEqual(pageProblems, []);
  });
});
