"""Out-of-process workloads through a Durable Task sidecar, with the
official Python SDK (`durabletask`) as client and worker.

`checkout` (the default): a checkout reserves each of its 2 lines (a
product from a pool, quantity 1-3) on a `stock` entity, all calls at once,
keeps the lines the entity refused for lack of stock apart, runs a
`receipt` activity and completes with the receipt. Stock is finite, so
some lines are refused. After the measured batch the driver reads every
product's stock back through the client.

`latency` (`--rate R --seconds S`): `hello3` orchestrations (3 activities
in sequence) started at a fixed rate, an open loop.

The driver sets up and warms up, prints MEASURE-START, runs the measured
batch, prints MEASURE-END and one JSON line with the raw results: each
instance's latency measured here, in the client (from just before its
start request, or its scheduled arrival, to the moment the client sees it
complete), every receipt's reserved units per product, the stock read
back, and this process's CPU time. `basalt bench` computes the figures and
the consistency check from these raw results; nothing here decides
whether the run passed.

`--fault double-reserve` registers a broken `stock` entity that takes
every reservation twice: the check must catch it (a test does).

Driven by `basalt bench sidecar-checkout` and `basalt bench latency
--sidecar`; `--in-memory-sidecar PORT` starts the SDK's own in-memory
sidecar in this process and blocks (the comparison baseline), with enough
gRPC server threads (`--sidecar-threads`) for a client that waits on every
instance at once (it serves 10 calls at once by default, and 10 waiting
clients would starve its worker).
"""

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import uuid

from durabletask import client, task, worker
from durabletask.entities import EntityInstanceId


class OutOfStock(Exception):
    """A reservation refused for lack of stock: the only failure that
    refuses a line rather than failing the checkout."""


def stock(ctx, quantity):
    left = ctx.get_state(int, 0)
    if ctx.operation == "set":
        ctx.set_state(int(quantity))
        return quantity
    if ctx.operation == "reserve":
        if quantity > left:
            raise OutOfStock(f"{quantity} wanted, {left} left")
        ctx.set_state(left - quantity)
        return left - quantity
    if ctx.operation == "get":
        return left
    raise ValueError(f"unknown operation {ctx.operation}")


def stock_double_reserve(ctx, quantity):
    """A broken stock entity: takes every reservation twice."""
    left = ctx.get_state(int, 0)
    if ctx.operation == "reserve":
        if quantity > left:
            raise OutOfStock(f"{quantity} wanted, {left} left")
        ctx.set_state(left - 2 * quantity)
        return left - 2 * quantity
    return stock(ctx, quantity)


def receipt(ctx: task.ActivityContext, reserved) -> str:
    return f"{len(reserved)} lines, {sum(q for _, q in reserved)} units"


def checkout(ctx: task.OrchestrationContext, order):
    calls = [(line, ctx.call_entity(EntityInstanceId("stock", line[0]), "reserve", line[1]))
             for line in order["items"]]
    reserved, refused = [], []
    for line, call in calls:
        try:
            yield call
            reserved.append(line)
        except task.TaskFailedError as failure:
            # The SDK wraps an entity's failure; the entity's own is inside.
            cause = failure.details.inner_failure
            if cause is None or not cause.is_caused_by("OutOfStock"):
                raise
            refused.append(line)
    text = yield ctx.call_activity(receipt, input=reserved)
    return {"reserved": reserved, "refused": refused, "text": text}


def hello(ctx: task.ActivityContext, who: str) -> str:
    return f"hello {who}"


def hello3(ctx: task.OrchestrationContext, name: str):
    out = []
    for i in range(3):
        out.append((yield ctx.call_activity(hello, input=f"{name}{i}")))
    return out


def read_int(meta):
    """An entity's integer state, or None while it has none."""
    try:
        return int(meta.get_state())
    except (TypeError, ValueError):
        return None


def cpu_ms():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": usage.ru_utime * 1000.0, "sys": usage.ru_stime * 1000.0}


def cpu_spent(start, end):
    """The CPU time between two `cpu_ms()` readings."""
    return {"user": end["user"] - start["user"], "sys": end["sys"] - start["sys"]}


async def wait_done(c, instance_id, started):
    state = await c.wait_for_orchestration_completion(instance_id, timeout=600)
    latency_ms = (time.perf_counter() - started) * 1000.0
    return instance_id, state, latency_ms


async def start_and_wait(c, name, order, instance_id, started):
    await c.schedule_new_orchestration(name, input=order, instance_id=instance_id)
    return await wait_done(c, instance_id, started)


def outcome(results, check_output):
    """Latencies, failures and the first problem of a batch."""
    latencies, failed, problems = [], 0, []
    for instance_id, state, latency_ms in results:
        latencies.append(latency_ms)
        if state is None or state.runtime_status != client.OrchestrationStatus.COMPLETED:
            failed += 1
            detail = state.failure_details.message if state and state.failure_details else state
            problems.append(f"{instance_id} did not complete: {detail}")
            continue
        problem = check_output(instance_id, json.loads(state.serialized_output or "null"))
        if problem:
            problems.append(f"{instance_id}: {problem}")
    return latencies, failed, problems


def batch_report(results, check_output, elapsed, cpu_start, cpu_end):
    """The raw figures every workload reports for its measured batch."""
    latencies, failed, problems = outcome(results, check_output)
    return {
        "completed": len(results) - failed,
        "failed": failed,
        "seconds": elapsed,
        "latencies_ms": latencies,
        "problems": problems[:5],
        "wrong": len(problems) - failed,
        "cpu_ms": cpu_spent(cpu_start, cpu_end),
    }


async def run_checkouts(c, count, products, tag, rng):
    started = time.perf_counter()
    jobs, orders = [], {}
    for n in range(count):
        order = {"items": [[f"{tag}-p{rng.randrange(products)}", rng.randint(1, 3)]
                           for _ in range(2)]}
        orders[f"{tag}-{n}"] = order
        jobs.append(start_and_wait(c, "checkout", order, f"{tag}-{n}", time.perf_counter()))
    results = await asyncio.gather(*jobs)
    return results, orders, time.perf_counter() - started


async def stock_products(c, tag, products, stock_units):
    ids = [EntityInstanceId("stock", f"{tag}-p{k}") for k in range(products)]
    for entity in ids:
        await c.signal_entity(entity, "set", stock_units)
    for entity in ids:
        for _ in range(10_000):
            meta = await c.get_entity(entity, include_state=True)
            if meta is not None and read_int(meta) == stock_units:
                break
            await asyncio.sleep(0.005)
        else:
            raise SystemExit(f"stock {entity} was never set")


async def drive_checkout(c, args, rng):
    tag = uuid.uuid4().hex[:6]
    await stock_products(c, f"warm{tag}", args.products, 1_000_000)
    await run_checkouts(c, args.warmup, args.products, f"warm{tag}", rng)
    run_tag = f"run{tag}"
    await stock_products(c, run_tag, args.products, args.stock)
    print("MEASURE-START", flush=True)
    cpu_start = cpu_ms()
    results, orders, elapsed = await run_checkouts(c, args.checkouts, args.products, run_tag, rng)
    cpu_end = cpu_ms()
    print("MEASURE-END", flush=True)
    reserved = {f"{run_tag}-p{k}": 0 for k in range(args.products)}
    # Per product, the smallest quantity refused: the check wants the final
    # stock below it (stock only goes down).
    smallest_refused = {}
    refused_lines = 0

    def check_receipt(instance_id, receipt):
        nonlocal refused_lines
        if not isinstance(receipt, dict) or "reserved" not in receipt or "refused" not in receipt:
            return f"not a receipt: {receipt!r}"
        lines = sorted(map(tuple, receipt["reserved"] + receipt["refused"]))
        if lines != sorted(map(tuple, orders[instance_id]["items"])):
            return f"the receipt's lines are not the order's: {receipt!r}"
        for product, quantity in receipt["reserved"]:
            reserved[product] += quantity
        for product, quantity in receipt["refused"]:
            smallest_refused[product] = min(quantity, smallest_refused.get(product, quantity))
        refused_lines += len(receipt["refused"])
        return None

    report = batch_report(results, check_receipt, elapsed, cpu_start, cpu_end)
    left = {}
    for product in reserved:
        meta = await c.get_entity(EntityInstanceId("stock", product), include_state=True)
        left[product] = None if meta is None else read_int(meta)
    return {
        **report,
        "stock_initial": args.stock,
        "reserved": reserved,
        "smallest_refused": smallest_refused,
        "left": left,
        "refused_lines": refused_lines,
    }


async def drive_latency(c, args):
    tag = uuid.uuid4().hex[:6]
    warm = [start_and_wait(c, "hello3", f"w{n}", f"warm{tag}-{n}", time.perf_counter())
            for n in range(args.warmup)]
    await asyncio.gather(*warm)
    count = max(1, round(args.rate * args.seconds))
    period = 1.0 / args.rate
    print("MEASURE-START", flush=True)
    cpu_start = cpu_ms()
    origin = time.perf_counter()
    jobs = []
    for n in range(count):
        arrival = origin + n * period
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.append(asyncio.ensure_future(
            start_and_wait(c, "hello3", f"l{n}", f"lat{tag}-{n}", arrival)))
    results = await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - origin
    cpu_end = cpu_ms()
    print("MEASURE-END", flush=True)

    def check_hello(instance_id, output):
        n = instance_id.rsplit("-", 1)[1]
        want = [f"hello l{n}{i}" for i in range(3)]
        return None if output == want else f"output {output!r}, expected {want!r}"

    return batch_report(results, check_hello, elapsed, cpu_start, cpu_end)


def drive(args):
    with worker.TaskHubGrpcWorker(host_address=args.addr) as w:
        w.add_orchestrator(checkout)
        w.add_orchestrator(hello3)
        w.add_activity(receipt)
        w.add_activity(hello)
        if args.fault == "double-reserve":
            w.add_entity(stock_double_reserve, name="stock")
        else:
            w.add_entity(stock)
        w.start()

        async def main():
            async with client.AsyncTaskHubGrpcClient(host_address=args.addr) as c:
                if args.workload == "latency":
                    return await drive_latency(c, args)
                return await drive_checkout(c, args, random.Random(args.seed))

        result = asyncio.run(main())
        print(json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr")
    parser.add_argument("--workload", choices=["checkout", "latency"], default="checkout")
    parser.add_argument("--checkouts", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--stock", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fault", choices=["double-reserve"])
    parser.add_argument("--in-memory-sidecar", type=int, metavar="PORT")
    parser.add_argument("--sidecar-threads", type=int, default=2048)
    args = parser.parse_args()
    if args.in_memory_sidecar:
        import logging
        logging.disable(logging.INFO)
        import concurrent.futures
        import types
        from durabletask.testing import InMemoryOrchestrationBackend, in_memory_backend
        # Its gRPC server serves 10 calls at once; the client here waits on
        # every checkout at once, so 10 waits would take every thread and
        # starve the worker. Same sidecar, more threads.
        in_memory_backend.futures = types.SimpleNamespace(
            ThreadPoolExecutor=lambda max_workers: concurrent.futures.ThreadPoolExecutor(
                max_workers=max(max_workers, args.sidecar_threads)))
        backend = InMemoryOrchestrationBackend(port=args.in_memory_sidecar)
        print(f"SIDECAR {backend.start()}", flush=True)
        while True:
            time.sleep(3600)
    if not args.addr:
        parser.error("--addr is required")
    import logging
    logging.disable(logging.WARNING)
    drive(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
