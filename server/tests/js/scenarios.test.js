// The official Durable Task JavaScript SDK (@microsoft/durabletask-js,
// pinned in package.json), unchanged, against a running `basalt serve`.
//
// Run by server/tests/js_sdk.rs, which starts the server, installs the
// pinned SDK with `npm ci` and runs `node --test` on this file with the
// server's gRPC address in BASALT_GRPC. Each test uses its own instance
// ids, so the tests share one server and one main worker.

"use strict";

const { describe, test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const grpc = require("@grpc/grpc-js");
const {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  EntityInstanceId,
  TaskEntity,
  OrchestrationStatus,
  PurgeInstanceCriteria,
  RetryPolicy,
  VersionMatchStrategy,
  VersionFailureStrategy,
  whenAll,
} = require("@microsoft/durabletask-js");

const address = process.env.BASALT_GRPC;
if (!address) {
  throw new Error("BASALT_GRPC (host:port of basalt serve) is not set");
}
// Unique per run, so a rerun against the same server never meets old ids.
const run = `js${Date.now().toString(36)}`;
const id = (name) => `${run}-${name}`;
const seconds = 30;

// The Scheduler's SDK integration sends the task hub as metadata; Basalt
// serves one hub per server and accepts (and ignores) it. With
// BASALT_TOKEN set, every call carries it as a bearer token.
const token = process.env.BASALT_TOKEN;
const withTaskHub = async () => {
  const metadata = new grpc.Metadata();
  metadata.set("taskhub", "default");
  if (token) {
    metadata.set("authorization", `Bearer ${token}`);
  }
  return metadata;
};
const quiet = { info() {}, warn() {}, error() {}, debug() {} };

// ---------------------------------------------------------------------------
// Activities, orchestrations and entities of the main worker.

const hello = async (_ctx, name) => `Hello ${name}`;
const double = async (_ctx, n) => n * 2;

// Fails the first time it sees a key (rewind runs it again).
const failedOnce = new Set();
const failsOnce = async (_ctx, key) => {
  if (!failedOnce.has(key)) {
    failedOnce.add(key);
    throw new Error(`first attempt for ${key} fails`);
  }
  return `ok ${key}`;
};

// Fails until its third attempt for a key (a retry policy gets there).
const attempts = new Map();
const thirdTimeLucky = async (_ctx, key) => {
  const attempt = (attempts.get(key) ?? 0) + 1;
  attempts.set(key, attempt);
  if (attempt < 3) {
    throw new Error(`attempt ${attempt} fails`);
  }
  return attempt;
};

const sequence = async function* (ctx, name) {
  ctx.setCustomStatus("");
  const first = yield ctx.callActivity(hello, name);
  const second = yield ctx.callActivity(hello, first);
  return second;
};

const fanOut = async function* (ctx, count) {
  const tasks = [];
  for (let i = 1; i <= count; i++) {
    tasks.push(ctx.callActivity(double, i));
  }
  const results = yield whenAll(tasks);
  return results.reduce((a, b) => a + b, 0);
};

const child = async function* (ctx, n) {
  const doubled = yield ctx.callActivity(double, n);
  return doubled;
};

// Two generations, each calling children with ids the SDK derives from the
// execution id: they must not collide across the continue-as-new.
const parent = async function* (ctx, generation) {
  const a = yield ctx.callSubOrchestrator(child, 1);
  const b = yield ctx.callSubOrchestrator(child, 2);
  if (generation === 0) {
    ctx.continueAsNew(1, false);
    return;
  }
  return [generation, a, b];
};

const sleeper = async function* (ctx, ms) {
  const before = ctx.currentUtcDateTime.getTime();
  yield ctx.createTimer(new Date(before + ms));
  return ctx.currentUtcDateTime.getTime() - before;
};

const approval = async function* (ctx) {
  const answer = yield ctx.waitForExternalEvent("approval");
  return { approved: answer };
};

const rewindable = async function* (ctx, key) {
  return yield ctx.callActivity(failsOnce, key);
};

// 40 activities, then one that fails once, then 5 more: a history long
// enough that the server sends it from its encoded cache, rewritten by
// the rewind.
const longRewindable = async function* (ctx, key) {
  let total = 0;
  for (let n = 0; n < 40; n++) {
    total += yield ctx.callActivity(double, n);
  }
  const after = yield ctx.callActivity(failsOnce, key);
  for (let n = 0; n < 5; n++) {
    total += yield ctx.callActivity(double, n);
  }
  return [total, after];
};

const retried = async function* (ctx, key) {
  const retry = new RetryPolicy({
    maxNumberOfAttempts: 3,
    firstRetryIntervalInMilliseconds: 100,
  });
  return yield ctx.callActivity(thirdTimeLucky, key, { retry });
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

const callCounter = async function* (ctx, key) {
  const counter = new EntityInstanceId("counter", key);
  yield ctx.entities.callEntity(counter, "add", 5);
  return yield ctx.entities.callEntity(counter, "get");
};

// Moves 1 from one counter to another inside a critical section.
const transfer = async function* (ctx, [from, to]) {
  const a = new EntityInstanceId("counter", from);
  const b = new EntityInstanceId("counter", to);
  const lock = yield ctx.entities.lockEntities(a, b);
  const inside = ctx.entities.isInCriticalSection().inSection;
  yield ctx.entities.callEntity(a, "add", -1);
  yield ctx.entities.callEntity(b, "add", 1);
  lock.release();
  return inside;
};

let client;
let worker;

before(async () => {
  client = new TaskHubGrpcClient({
    hostAddress: address,
    metadataGenerator: withTaskHub,
    logger: quiet,
  });
  // "auto": the worker asks only for what it has registered, so the
  // workers started by single tests get their own work.
  worker = new TaskHubGrpcWorker({
    hostAddress: address,
    metadataGenerator: withTaskHub,
    logger: quiet,
    workItemFilters: "auto",
  });
  for (const orchestrator of [
    sequence,
    fanOut,
    child,
    parent,
    sleeper,
    approval,
    rewindable,
    longRewindable,
    retried,
    callCounter,
    transfer,
  ]) {
    worker.addOrchestrator(orchestrator);
  }
  for (const activity of [hello, double, failsOnce, thirdTimeLucky]) {
    worker.addActivity(activity);
  }
  worker.addNamedEntity("counter", () => new Counter());
  await worker.start();
});

after(async () => {
  await worker.stop();
  await client.stop();
});

async function completed(instanceId) {
  const state = await client.waitForOrchestrationCompletion(instanceId, true, seconds);
  assert.ok(state, `${instanceId} has a state`);
  return state;
}

async function until(what, check) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// ---------------------------------------------------------------------------

describe("orchestrations", () => {
  test("activities in sequence, with tags, custom status and the history", async () => {
    const instanceId = await client.scheduleNewOrchestration(sequence, "Ada", {
      instanceId: id("sequence"),
      tags: { team: "blue" },
    });
    const state = await completed(instanceId);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(state.serializedOutput, JSON.stringify("Hello Hello Ada"));
    assert.equal(state.serializedInput, JSON.stringify("Ada"));
    assert.equal(state.serializedCustomStatus, JSON.stringify(""));
    assert.deepEqual(state.tags, { team: "blue" });

    const history = await client.getOrchestrationHistory(instanceId);
    assert.deepEqual(
      history.map((event) => event.type),
      [
        "OrchestratorStarted",
        "ExecutionStarted",
        "TaskScheduled",
        "OrchestratorStarted",
        "TaskCompleted",
        "TaskScheduled",
        "OrchestratorStarted",
        "TaskCompleted",
        "ExecutionCompleted",
      ],
    );
    // Numbered as the Scheduler numbers them: the start 0, each scheduled
    // task and the end by the action's id, everything else -1.
    assert.deepEqual(
      history.map((event) => event.eventId),
      [-1, 0, 1, -1, -1, 2, -1, -1, 3],
    );
  });

  test("fan-out and fan-in", async () => {
    const instanceId = await client.scheduleNewOrchestration(fanOut, 20, id("fan"));
    const state = await completed(instanceId);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.equal(state.serializedOutput, String(20 * 21));
  });

  test("sub-orchestrations keep distinct ids across a continue-as-new", async () => {
    const instanceId = await client.scheduleNewOrchestration(parent, 0, id("parent"));
    const state = await completed(instanceId);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, JSON.stringify(state));
    assert.deepEqual(JSON.parse(state.serializedOutput), [1, 2, 4]);
  });

  test("a durable timer fires no earlier than asked", async () => {
    const instanceId = await client.scheduleNewOrchestration(sleeper, 1000, id("timer"));
    const state = await completed(instanceId);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED);
    assert.ok(Number(state.serializedOutput) >= 1000, state.serializedOutput);
  });

  test("an external event", async () => {
    const instanceId = await client.scheduleNewOrchestration(approval, undefined, id("event"));
    await client.waitForOrchestrationStart(instanceId, false, seconds);
    await client.raiseOrchestrationEvent(instanceId, "approval", "yes");
    const state = await completed(instanceId);
    assert.deepEqual(JSON.parse(state.serializedOutput), { approved: "yes" });
  });

  test("suspend, resume and terminate", async () => {
    const suspended = await client.scheduleNewOrchestration(approval, undefined, id("suspend"));
    await client.waitForOrchestrationStart(suspended, false, seconds);
    await client.suspendOrchestration(suspended);
    await until("SUSPENDED", async () => {
      const state = await client.getOrchestrationState(suspended, false);
      return state?.runtimeStatus === OrchestrationStatus.SUSPENDED;
    });
    // An event raised while suspended waits for the resume.
    await client.raiseOrchestrationEvent(suspended, "approval", "later");
    await new Promise((resolve) => setTimeout(resolve, 300));
    const still = await client.getOrchestrationState(suspended, false);
    assert.equal(still.runtimeStatus, OrchestrationStatus.SUSPENDED);
    await client.resumeOrchestration(suspended);
    const resumed = await completed(suspended);
    assert.deepEqual(JSON.parse(resumed.serializedOutput), { approved: "later" });

    const terminated = await client.scheduleNewOrchestration(approval, undefined, id("terminate"));
    await client.waitForOrchestrationStart(terminated, false, seconds);
    await client.terminateOrchestration(terminated, "enough");
    const state = await completed(terminated);
    assert.equal(state.runtimeStatus, OrchestrationStatus.TERMINATED);
    assert.equal(state.serializedOutput, JSON.stringify("enough"));
  });

  test("a retry policy runs an activity again until it succeeds", async () => {
    const instanceId = await client.scheduleNewOrchestration(retried, "r1", id("retry"));
    const state = await completed(instanceId);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, JSON.stringify(state));
    assert.equal(state.serializedOutput, "3");
  });

  test("a failed instance is rewound and completes", async () => {
    const instanceId = await client.scheduleNewOrchestration(rewindable, "k1", id("rewind"));
    const failed = await completed(instanceId);
    assert.equal(failed.runtimeStatus, OrchestrationStatus.FAILED);
    assert.match(failed.failureDetails.message, /first attempt for k1 fails/);
    await client.rewindInstance(instanceId, "the activity is fixed");
    await until("the rewound run to finish", async () => {
      const state = await client.getOrchestrationState(instanceId, true);
      return state?.runtimeStatus === OrchestrationStatus.COMPLETED;
    });
    const state = await client.getOrchestrationState(instanceId, true);
    assert.equal(state.serializedOutput, JSON.stringify("ok k1"));
  });

  test("a long history is rewound and completes", async () => {
    const key = id("long-key");
    const instanceId = await client.scheduleNewOrchestration(longRewindable, key, id("rewind-long"));
    const failed = await completed(instanceId);
    assert.equal(failed.runtimeStatus, OrchestrationStatus.FAILED);
    await client.rewindInstance(instanceId, "the activity is fixed");
    await until("the rewound run to finish", async () => {
      const state = await client.getOrchestrationState(instanceId, true);
      return state?.runtimeStatus === OrchestrationStatus.COMPLETED;
    });
    const state = await client.getOrchestrationState(instanceId, true);
    assert.equal(state.serializedOutput, JSON.stringify([2 * 780 + 2 * 10, `ok ${key}`]));
  });

  test("rewinding a running instance is refused", async () => {
    const instanceId = await client.scheduleNewOrchestration(approval, undefined, id("rewind-running"));
    await client.waitForOrchestrationStart(instanceId, false, seconds);
    await assert.rejects(client.rewindInstance(instanceId, "no"), /FAILED_PRECONDITION|running/i);
    await client.terminateOrchestration(instanceId, "done");
  });

  test("restart under the same id and under a new one", async () => {
    const instanceId = await client.scheduleNewOrchestration(sequence, "Bo", {
      instanceId: id("restart"),
      tags: { kept: "yes" },
    });
    await completed(instanceId);
    const same = await client.restartOrchestration(instanceId, false);
    assert.equal(same, instanceId);
    const again = await completed(same);
    assert.equal(again.serializedOutput, JSON.stringify("Hello Hello Bo"));
    const fresh = await client.restartOrchestration(instanceId, true);
    assert.notEqual(fresh, instanceId);
    const copy = await completed(fresh);
    assert.equal(copy.serializedOutput, JSON.stringify("Hello Hello Bo"));
    assert.deepEqual(copy.tags, { kept: "yes" });
    await assert.rejects(client.restartOrchestration(id("never-started"), false), /NOT_FOUND|not found/i);
  });

  test("an instance id past 100 characters is refused", async () => {
    await assert.rejects(
      client.scheduleNewOrchestration(sequence, "x", `${run}-${"x".repeat(100)}`),
      /INVALID_ARGUMENT/,
    );
  });
});

describe("queries and purge", () => {
  test("query by prefix and status, then purge one and by filter", async () => {
    const prefix = id("q-");
    const ids = [];
    for (let i = 0; i < 5; i++) {
      ids.push(await client.scheduleNewOrchestration(fanOut, 2, `${prefix}${i}`));
    }
    for (const instanceId of ids) {
      await completed(instanceId);
    }
    const found = [];
    for await (const state of client.getAllInstances({
      instanceIdPrefix: prefix,
      statuses: [OrchestrationStatus.COMPLETED],
      pageSize: 2,
    })) {
      found.push(state.instanceId);
    }
    assert.deepEqual(found.sort(), [...ids].sort());

    const one = await client.purgeOrchestration(ids[0]);
    assert.equal(one.deletedInstanceCount, 1);
    assert.equal(await client.getOrchestrationState(ids[0]), undefined);

    const criteria = new PurgeInstanceCriteria();
    criteria.setCreatedTimeFrom(new Date(Date.now() - 60_000));
    criteria.setRuntimeStatusList([OrchestrationStatus.COMPLETED]);
    const many = await client.purgeOrchestration(criteria);
    assert.ok(many.deletedInstanceCount >= 4, `purged ${many.deletedInstanceCount}`);
    for (const instanceId of ids) {
      assert.equal(await client.getOrchestrationState(instanceId), undefined);
    }
  });
});

describe("entities", () => {
  test("signals from the client and calls from an orchestration", async () => {
    const key = id("c1");
    const counter = new EntityInstanceId("counter", key);
    for (const amount of [1, 2, 3]) {
      await client.signalEntity(counter, "add", amount);
    }
    const entity = await until("the signals to run", async () => {
      const found = await client.getEntity(counter, true);
      return found?.state?.count === 6 ? found : undefined;
    });
    assert.equal(entity.id.key, key);
    const instanceId = await client.scheduleNewOrchestration(callCounter, key, id("call"));
    const state = await completed(instanceId);
    assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, JSON.stringify(state));
    assert.equal(state.serializedOutput, "11");
  });

  test("transfers inside critical sections keep the total", async () => {
    const [from, to] = [id("from"), id("to")];
    await client.signalEntity(new EntityInstanceId("counter", from), "add", 10);
    const runs = [];
    for (let i = 0; i < 5; i++) {
      runs.push(await client.scheduleNewOrchestration(transfer, [from, to], id(`transfer-${i}`)));
    }
    for (const instanceId of runs) {
      const state = await completed(instanceId);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, JSON.stringify(state));
      assert.equal(state.serializedOutput, "true");
    }
    const a = await client.getEntity(new EntityInstanceId("counter", from), true);
    const b = await client.getEntity(new EntityInstanceId("counter", to), true);
    assert.equal(a.state.count, 5);
    assert.equal(b.state.count, 5);
    assert.equal(a.lockedBy, undefined);
  });

  test("an entity id past 100 characters is refused", async () => {
    const counter = new EntityInstanceId("counter", `${run}-${"k".repeat(100)}`);
    await assert.rejects(client.signalEntity(counter, "add", 1), /INVALID_ARGUMENT/);
  });
});

describe("workers with filters and versions", () => {
  test("work goes only to a worker that asked for it", async () => {
    const onlyHere = async function* (ctx) {
      return yield ctx.callActivity("shout", "hi");
    };
    const other = new TaskHubGrpcWorker({
      hostAddress: address,
      metadataGenerator: withTaskHub,
      logger: quiet,
      workItemFilters: "auto",
    });
    other.addNamedOrchestrator("onlyHere", onlyHere);
    other.addNamedActivity("shout", async (_ctx, text) => text.toUpperCase());
    await other.start();
    try {
      const instanceId = await client.scheduleNewOrchestration("onlyHere", undefined, id("filtered"));
      const state = await completed(instanceId);
      // The main worker, which does not know "onlyHere", would fail it.
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, JSON.stringify(state));
      assert.equal(state.serializedOutput, JSON.stringify("HI"));
    } finally {
      await other.stop();
    }
  });

  test("a strictly versioned worker takes its version and its unversioned activities", async () => {
    const versioned = async function* (ctx) {
      const step = yield ctx.callActivity("versionedStep", ctx.version);
      return step;
    };
    const v2 = new TaskHubGrpcWorker({
      hostAddress: address,
      metadataGenerator: withTaskHub,
      logger: quiet,
      workItemFilters: "auto",
      versioning: {
        version: "2.0",
        matchStrategy: VersionMatchStrategy.Strict,
        failureStrategy: VersionFailureStrategy.Fail,
      },
    });
    v2.addNamedOrchestrator("versioned", versioned);
    v2.addNamedActivity("versionedStep", async (_ctx, version) => `ran ${version}`);
    await v2.start();
    try {
      const current = await client.scheduleNewOrchestration("versioned", undefined, {
        instanceId: id("v2"),
        version: "2.0",
      });
      const state = await completed(current);
      assert.equal(state.runtimeStatus, OrchestrationStatus.COMPLETED, JSON.stringify(state));
      assert.equal(state.serializedOutput, JSON.stringify("ran 2.0"));

      // No worker asked for 1.0: it waits for one.
      const old = await client.scheduleNewOrchestration("versioned", undefined, {
        instanceId: id("v1"),
        version: "1.0",
      });
      await new Promise((resolve) => setTimeout(resolve, 500));
      const waiting = await client.getOrchestrationState(old, false);
      assert.ok(
        [OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING].includes(waiting.runtimeStatus),
        `status ${waiting.runtimeStatus}`,
      );
      await client.terminateOrchestration(old, "no worker for 1.0");
      await completed(old);
    } finally {
      await v2.stop();
    }
  });
});
