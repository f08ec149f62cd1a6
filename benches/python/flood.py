"""A flood of starts with no worker connected, against `basalt serve`.

Measures issue 12's admission target: N starts arrive while nobody takes
work, so every accepted instance waits in the server. The server must
either hold them within its memory budget (+100 MiB) or refuse starts
cleanly (gRPC RESOURCE_EXHAUSTED); once a worker connects, every accepted
instance must complete.

The driver starts `basalt serve` on a fresh data directory, sends the
starts from CONCURRENCY tasks through the official Python SDK's async
client (a refused start is counted, not retried), samples the server's
RSS from /proc while it does, then connects a worker and waits until the
server's Completed count reaches the number of accepted starts. It prints
one JSON object; the exit status is non-zero if the check fails.

    python benches/python/flood.py --basalt target/release/basalt \
        --dir /tmp/flood-hub --starts 100000 --memory-budget 128MiB
"""

import argparse
import asyncio
import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
from durabletask import client, task, worker


def noop(ctx: task.OrchestrationContext, _):
    return "done"


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def completed(http):
    """The server's count of Completed instances, from /metrics."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0
    for match in re.finditer(r'^basalt_instances\{[^}]*status="Completed"[^}]*\} (\d+)', text, re.M):
        total += int(match.group(1))
    return total


class Sampler:
    """Samples a process's RSS every 100 ms on a thread."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            time.sleep(0.1)


async def flood(addr, starts, concurrency):
    accepted, refused, other = 0, 0, {}
    next_id = iter(range(starts))
    async with client.AsyncTaskHubGrpcClient(host_address=addr) as c:
        async def sender():
            nonlocal accepted, refused
            for i in next_id:
                try:
                    await c.schedule_new_orchestration(noop, input=i, instance_id=f"flood-{i}")
                    accepted += 1
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        refused += 1
                    else:
                        other[str(error.code())] = other.get(str(error.code()), 0) + 1
        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return accepted, refused, other


def main():
    # The worker logs every completion at INFO.
    logging.disable(logging.INFO)
    parser = argparse.ArgumentParser()
    parser.add_argument("--basalt", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--starts", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--memory-budget", default="128MiB")
    parser.add_argument("--grpc", default="127.0.0.1:4711")
    parser.add_argument("--http", default="127.0.0.1:8711")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    server = subprocess.Popen(
        [args.basalt, "serve", "--data-dir", args.dir, "--grpc-addr", args.grpc,
         "--http-addr", args.http, "--memory-budget", args.memory_budget],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                completed(args.http)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("basalt serve did not come up")
                time.sleep(0.2)
        idle_rss = rss_bytes(server.pid)
        sampler = Sampler(server.pid)
        began = time.perf_counter()
        accepted, refused, other = asyncio.run(flood(args.grpc, args.starts, args.concurrency))
        flood_s = time.perf_counter() - began
        time.sleep(2)
        after_flood_rss = rss_bytes(server.pid)
        flood_peak = sampler.peak

        began = time.perf_counter()
        with worker.TaskHubGrpcWorker(host_address=args.grpc) as w:
            w.add_orchestrator(noop)
            w.start()
            done = 0
            while time.perf_counter() - began < args.timeout:
                done = completed(args.http)
                if done >= accepted:
                    break
                time.sleep(1)
            drain_s = time.perf_counter() - began
        sampler.stop = True
        budget = parse_bytes(args.memory_budget)
        report = {
            "starts": args.starts,
            "accepted": accepted,
            "refused_resource_exhausted": refused,
            "other_errors": other,
            "flood_s": round(flood_s, 2),
            "idle_rss_bytes": idle_rss,
            "flood_peak_rss_bytes": flood_peak,
            "after_flood_rss_bytes": after_flood_rss,
            "peak_rss_bytes": sampler.peak,
            "limit_rss_bytes": budget + (100 << 20),
            "completed": done,
            "drain_s": round(drain_s, 2),
        }
        report["ok"] = (not other and done == accepted
                        and accepted + refused == args.starts
                        and sampler.peak <= report["limit_rss_bytes"])
        print(json.dumps(report, indent=2))
        sys.exit(0 if report["ok"] else 1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def parse_bytes(text):
    match = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB)?", text.strip())
    if not match:
        sys.exit(f"bad size {text!r}")
    return int(match.group(1)) << {None: 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30}[match.group(2)]


if __name__ == "__main__":
    main()
