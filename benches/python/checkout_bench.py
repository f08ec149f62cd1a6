"""Out-of-process checkout through a Durable Task sidecar, with the
official Python SDK (`durabletask`) as client and worker.

A checkout is an orchestration that reserves every item of the order on a
`stock` entity (one entity call per item, all at once) and then runs a
`receipt` activity. The driver warms up, prints MEASURE-START, schedules
the checkouts all at once, waits for every one, prints MEASURE-END and one
JSON line with the figures (throughput from the first start to the last
completion; latency per checkout from the sidecar's created and
last-updated times).

Driven by `basalt bench sidecar-checkout`, which runs it against Basalt and
against the SDK's own in-memory sidecar (`--in-memory-sidecar PORT` starts
that one, in its own process, and blocks).
"""

import argparse
import json
import sys
import time
import uuid

from durabletask import client, task, worker
from durabletask.entities import EntityInstanceId


def stock(ctx, quantity):
    left = ctx.get_state(int, 1_000_000_000)
    if ctx.operation == "reserve":
        if quantity > left:
            raise ValueError(f"{quantity} wanted, {left} left")
        left -= quantity
        ctx.set_state(left)
        return left
    if ctx.operation == "get":
        return left
    raise ValueError(f"unknown operation {ctx.operation}")


def receipt(ctx: task.ActivityContext, order) -> str:
    return f"receipt for {len(order['items'])} items"


def checkout(ctx: task.OrchestrationContext, order):
    reservations = [ctx.call_entity(EntityInstanceId("stock", product), "reserve", quantity)
                    for product, quantity in order["items"]]
    yield task.when_all(reservations)
    return (yield ctx.call_activity(receipt, input=order))


def percentile(sorted_values, fraction):
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_batch(c, count, products, tag):
    ids = []
    for n in range(count):
        order = {"items": [[f"p{(n * 7 + k) % products}", 1] for k in range(2)]}
        ids.append(c.schedule_new_orchestration(checkout, input=order,
                                                instance_id=f"{tag}-{n}"))
    states = [c.wait_for_orchestration_completion(i, timeout=600) for i in ids]
    for i, state in zip(ids, states):
        if state is None or state.runtime_status != client.OrchestrationStatus.COMPLETED:
            raise SystemExit(f"checkout {i} did not complete: {state}")
    return states


def drive(addr, count, warmup, products):
    with worker.TaskHubGrpcWorker(host_address=addr) as w:
        w.add_orchestrator(checkout)
        w.add_activity(receipt)
        w.add_entity(stock)
        w.start()
        c = client.TaskHubGrpcClient(host_address=addr)
        tag = uuid.uuid4().hex[:6]
        run_batch(c, warmup, products, f"warm-{tag}")
        print("MEASURE-START", flush=True)
        began = time.time()
        states = run_batch(c, count, products, f"run-{tag}")
        elapsed = time.time() - began
        print("MEASURE-END", flush=True)
        latencies = sorted((s.last_updated_at - s.created_at).total_seconds() * 1000
                           for s in states)
        print(json.dumps({
            "checkouts": count,
            "seconds": elapsed,
            "checkouts_per_second": count / elapsed,
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
        }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr")
    parser.add_argument("--checkouts", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--in-memory-sidecar", type=int, metavar="PORT")
    args = parser.parse_args()
    if args.in_memory_sidecar:
        import logging
        logging.disable(logging.INFO)
        from durabletask.testing import InMemoryOrchestrationBackend
        backend = InMemoryOrchestrationBackend(port=args.in_memory_sidecar)
        print(f"SIDECAR {backend.start()}", flush=True)
        while True:
            time.sleep(3600)
    if not args.addr:
        parser.error("--addr is required")
    import logging
    logging.disable(logging.WARNING)
    drive(args.addr, args.checkouts, args.warmup, args.products)
    return 0


if __name__ == "__main__":
    sys.exit(main())
