// The sidecar checkout driven by the official Durable Task JavaScript SDK
// (@microsoft/durabletask-js, pinned in server/tests/js/package.json) as
// client and worker: the same workload, output and marks as
// benches/python/checkout_bench.py, so `basalt bench sidecar-checkout
// --sdk js` computes the same figures and the same check.
//
// A checkout reserves each of its 2 lines (a product from a pool,
// quantity 1-3) on a `stock` entity, all calls at once, keeps the lines
// the entity refused for lack of stock apart, runs a `receipt` activity
// and completes with the receipt. After the measured batch the driver
// reads every product's stock back through the client.
//
// The driver prints MEASURE-START, runs the measured batch, prints
// MEASURE-END and one JSON line of raw results (latencies measured here,
// receipts, stock read back, this process's CPU). Nothing here decides
// whether the run passed. `--fault double-reserve` registers a broken
// stock entity that takes every reservation twice.

"use strict";

const { parseArgs } = require("node:util");
const { randomUUID } = require("node:crypto");
const {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  EntityInstanceId,
  TaskEntity,
  OrchestrationStatus,
} = require("@microsoft/durabletask-js");

const { values: args } = parseArgs({
  options: {
    addr: { type: "string" },
    checkouts: { type: "string", default: "600" },
    warmup: { type: "string", default: "50" },
    products: { type: "string", default: "50" },
    stock: { type: "string", default: "40" },
    seed: { type: "string", default: "7" },
    fault: { type: "string" },
  },
});
if (!args.addr) {
  throw new Error("--addr is required");
}
const count = (name) => {
  const value = Number.parseInt(args[name], 10);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`--${name} must be a whole number, got ${args[name]}`);
  }
  return value;
};
const checkouts = count("checkouts");
const warmup = count("warmup");
const products = count("products");
const stockUnits = count("stock");
if (args.fault !== undefined && args.fault !== "double-reserve") {
  throw new Error(`unknown --fault ${args.fault}`);
}

// A small seeded generator (mulberry32), so every run asks for the same
// orders.
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rng = random(count("seed"));
const below = (n) => Math.floor(rng() * n);

/** A reservation refused for lack of stock. */
class OutOfStock extends Error {
  constructor(message) {
    super(message);
    this.name = "OutOfStock";
  }
}

class Stock extends TaskEntity {
  initializeState() {
    return 0;
  }
  set(quantity) {
    this.state = quantity;
    return quantity;
  }
  reserve(quantity) {
    if (quantity > this.state) {
      throw new OutOfStock(`${quantity} wanted, ${this.state} left`);
    }
    this.state -= quantity;
    return this.state;
  }
  get() {
    return this.state;
  }
}

/** A broken stock entity: takes every reservation twice. */
class StockDoubleReserve extends Stock {
  reserve(quantity) {
    if (quantity > this.state) {
      throw new OutOfStock(`${quantity} wanted, ${this.state} left`);
    }
    this.state -= 2 * quantity;
    return this.state;
  }
}

const receipt = async (_ctx, reserved) =>
  `${reserved.length} lines, ${reserved.reduce((sum, [, q]) => sum + q, 0)} units`;

const checkout = async function* (ctx, order) {
  const calls = order.items.map((line) => [
    line,
    ctx.entities.callEntity(new EntityInstanceId("stock", line[0]), "reserve", line[1]),
  ]);
  const reserved = [];
  const refused = [];
  for (const [line, call] of calls) {
    // durabletask-js 0.4.0 hands a task that already failed to the
    // generator as a success (undefined) when it is yielded right after
    // another task completed (the loop in RuntimeOrchestrationContext
    // .resume checks isComplete, not isFailed). The second line's refusal
    // can arrive before the first line's answer, so look before yielding.
    let failure;
    if (call.isFailed) {
      failure = call.getException();
    } else {
      try {
        yield call;
      } catch (error) {
        failure = error;
      }
    }
    if (failure === undefined) {
      reserved.push(line);
    } else if (failure?.failureDetails?.errorType === "OutOfStock") {
      refused.push(line);
    } else {
      throw failure;
    }
  }
  const text = yield ctx.callActivity(receipt, reserved);
  return { reserved, refused, text };
};

const quiet = { info() {}, warn() {}, error() {}, debug() {} };

function cpuMs() {
  const usage = process.cpuUsage();
  return { user: usage.user / 1000, sys: usage.system / 1000 };
}

async function startAndWait(client, order, instanceId) {
  const started = performance.now();
  await client.scheduleNewOrchestration(checkout, order, { instanceId });
  const state = await client.waitForOrchestrationCompletion(instanceId, true, 600);
  return [instanceId, state, performance.now() - started];
}

async function runCheckouts(client, howMany, tag) {
  const started = performance.now();
  const orders = new Map();
  const jobs = [];
  for (let n = 0; n < howMany; n++) {
    const order = {
      items: [0, 1].map(() => [`${tag}-p${below(products)}`, 1 + below(3)]),
    };
    orders.set(`${tag}-${n}`, order);
    jobs.push(startAndWait(client, order, `${tag}-${n}`));
  }
  const results = await Promise.all(jobs);
  return { results, orders, seconds: (performance.now() - started) / 1000 };
}

async function stockProducts(client, tag, units) {
  const ids = [];
  for (let k = 0; k < products; k++) {
    ids.push(new EntityInstanceId("stock", `${tag}-p${k}`));
  }
  for (const entity of ids) {
    await client.signalEntity(entity, "set", units);
  }
  for (const entity of ids) {
    let set = false;
    for (let attempt = 0; attempt < 10_000 && !set; attempt++) {
      const meta = await client.getEntity(entity, true);
      set = meta !== undefined && meta.state === units;
      if (!set) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
    if (!set) {
      throw new Error(`stock ${entity} was never set`);
    }
  }
}

async function main() {
  const client = new TaskHubGrpcClient({ hostAddress: args.addr, logger: quiet });
  const worker = new TaskHubGrpcWorker({ hostAddress: args.addr, logger: quiet });
  worker.addOrchestrator(checkout);
  worker.addActivity(receipt);
  worker.addNamedEntity("stock", () =>
    args.fault === "double-reserve" ? new StockDoubleReserve() : new Stock(),
  );
  await worker.start();

  const tag = randomUUID().replaceAll("-", "").slice(0, 6);
  await stockProducts(client, `warm${tag}`, 1_000_000);
  await runCheckouts(client, warmup, `warm${tag}`);
  const runTag = `run${tag}`;
  await stockProducts(client, runTag, stockUnits);

  console.log("MEASURE-START");
  const cpuStart = cpuMs();
  const { results, orders, seconds } = await runCheckouts(client, checkouts, runTag);
  const cpuEnd = cpuMs();
  console.log("MEASURE-END");

  const reserved = {};
  for (let k = 0; k < products; k++) {
    reserved[`${runTag}-p${k}`] = 0;
  }
  const smallestRefused = {};
  const latencies = [];
  const problems = [];
  let failed = 0;
  let wrong = 0;
  let refusedLines = 0;
  const sortedLines = (lines) => JSON.stringify(lines.map((l) => JSON.stringify(l)).sort());
  for (const [instanceId, state, latency] of results) {
    latencies.push(latency);
    if (!state || state.runtimeStatus !== OrchestrationStatus.COMPLETED) {
      failed += 1;
      problems.push(
        `${instanceId} did not complete: ${state?.failureDetails?.message ?? JSON.stringify(state)}`,
      );
      continue;
    }
    const out = JSON.parse(state.serializedOutput ?? "null");
    if (!out || !Array.isArray(out.reserved) || !Array.isArray(out.refused)) {
      wrong += 1;
      problems.push(`${instanceId}: not a receipt: ${state.serializedOutput}`);
      continue;
    }
    const lines = [...out.reserved, ...out.refused];
    if (sortedLines(lines) !== sortedLines(orders.get(instanceId).items)) {
      wrong += 1;
      problems.push(`${instanceId}: the receipt's lines are not the order's: ${state.serializedOutput}`);
      continue;
    }
    for (const [product, quantity] of out.reserved) {
      reserved[product] += quantity;
    }
    for (const [product, quantity] of out.refused) {
      smallestRefused[product] = Math.min(quantity, smallestRefused[product] ?? quantity);
    }
    refusedLines += out.refused.length;
  }
  const left = {};
  for (const product of Object.keys(reserved)) {
    const meta = await client.getEntity(new EntityInstanceId("stock", product), true);
    left[product] = meta === undefined || !Number.isInteger(meta.state) ? null : meta.state;
  }
  console.log(
    JSON.stringify({
      completed: results.length - failed,
      failed,
      seconds,
      latencies_ms: latencies,
      problems: problems.slice(0, 5),
      wrong,
      cpu_ms: { user: cpuEnd.user - cpuStart.user, sys: cpuEnd.sys - cpuStart.sys },
      stock_initial: stockUnits,
      reserved,
      smallest_refused: smallestRefused,
      left,
      refused_lines: refusedLines,
    }),
  );
  await worker.stop();
  await client.stop();
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
