"""Scenarios run with the official Durable Task Python SDK (`durabletask`,
pinned in requirements.txt) against a running `basalt serve`.

Usage: python scenarios.py --addr HOST:PORT [--only NAME ...]
       python scenarios.py --addr HOST:PORT --kill-phase

Each scenario asserts what the SDK sees; the process exits 1 if any fails,
naming it. `--kill-phase` is driven by `server/tests/python_sdk.rs`: it
starts a batch of orchestrations, prints KILL-NOW once some have
finished, then keeps waiting (through the server's SIGKILL and restart)
until every one has completed with the right result.
"""

import argparse
import json
import sys
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone

import grpc
from durabletask import client, task, worker
from durabletask.entities import EntityInstanceId

# ---------------------------------------------------------------- activities


def hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}!"


def double(ctx: task.ActivityContext, n: int) -> int:
    return n * 2


FLAKY_CALLS: dict = {}


def flaky(ctx: task.ActivityContext, key: str) -> str:
    """Fails the first two times it runs for a key, then succeeds."""
    FLAKY_CALLS[key] = FLAKY_CALLS.get(key, 0) + 1
    if FLAKY_CALLS[key] < 3:
        raise ValueError(f"attempt {FLAKY_CALLS[key]} fails on purpose")
    return f"ok after {FLAKY_CALLS[key]}"


def always_fails(ctx: task.ActivityContext, _) -> None:
    raise RuntimeError("this activity always fails")


REWIND_FIXED: set = set()


def fails_until_fixed(ctx: task.ActivityContext, key: str) -> str:
    if key not in REWIND_FIXED:
        raise ValueError(f"{key} is not fixed yet")
    return f"fixed {key}"


def fails_slowly_until_fixed(ctx: task.ActivityContext, key: str) -> str:
    time.sleep(0.5)
    return fails_until_fixed(ctx, key)


def slow_hello(ctx: task.ActivityContext, name: str) -> str:
    time.sleep(0.1)
    return f"Hello {name}!"


# ------------------------------------------------------------- orchestrations


def sequence(ctx: task.OrchestrationContext, _):
    result = []
    for city in ["Tokyo", "Seattle", "London"]:
        result.append((yield ctx.call_activity(hello, input=city)))
    return result


def fan_out_fan_in(ctx: task.OrchestrationContext, count: int):
    tasks = [ctx.call_activity(double, input=i) for i in range(count)]
    results = yield task.when_all(tasks)
    return sum(results)


def timer_then_done(ctx: task.OrchestrationContext, seconds: float):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - start).total_seconds()


def wait_for_approval(ctx: task.OrchestrationContext, _):
    approval = yield ctx.wait_for_external_event("approval")
    return {"approved": approval}


def parent(ctx: task.OrchestrationContext, count: int):
    children = [ctx.call_sub_orchestrator(fan_out_fan_in, input=n) for n in range(1, count + 1)]
    return (yield task.when_all(children))


def failing_child(ctx: task.OrchestrationContext, _):
    yield ctx.call_activity(always_fails)


def parent_catches(ctx: task.OrchestrationContext, _):
    try:
        yield ctx.call_sub_orchestrator(failing_child)
    except task.TaskFailedError as error:
        return f"caught: {error.details.message}"
    return "no failure?"


def counter_loop(ctx: task.OrchestrationContext, n: int):
    if n >= 5:
        return n
    yield ctx.create_timer(timedelta(milliseconds=10))
    ctx.continue_as_new(n + 1)


def with_custom_status(ctx: task.OrchestrationContext, _):
    ctx.set_custom_status({"stage": "waiting"})
    yield ctx.wait_for_external_event("go")
    ctx.set_custom_status({"stage": "done"})
    return "finished"


def long_waiter(ctx: task.OrchestrationContext, _):
    yield ctx.wait_for_external_event("never")
    return "unreachable"


def retrying(ctx: task.OrchestrationContext, key: str):
    policy = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=50),
                              max_number_of_attempts=5)
    return (yield ctx.call_activity(flaky, input=key, retry_policy=policy))


def retry_exhausted(ctx: task.OrchestrationContext, _):
    policy = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=20),
                              max_number_of_attempts=2)
    yield ctx.call_activity(always_fails, retry_policy=policy)


def entity_caller(ctx: task.OrchestrationContext, key: str):
    counter = EntityInstanceId("counter", key)
    ctx.signal_entity(counter, "add", 5)
    value = yield ctx.call_entity(counter, "add", 10)
    current = yield ctx.call_entity(counter, "get")
    return [value, current]


def transfer(ctx: task.OrchestrationContext, args):
    source = EntityInstanceId("account", args["from"])
    target = EntityInstanceId("account", args["to"])
    amount = args["amount"]
    with (yield ctx.lock_entities([source, target])):
        balance = yield ctx.call_entity(source, "get")
        if balance < amount:
            return "insufficient"
        yield ctx.call_entity(source, "add", -amount)
        yield ctx.call_entity(target, "add", amount)
    return "moved"


def entity_failure(ctx: task.OrchestrationContext, key: str):
    counter = EntityInstanceId("counter", key)
    try:
        yield ctx.call_entity(counter, "boom")
    except task.TaskFailedError as error:
        return "caught entity failure"
    return "no failure?"


def rewindable(ctx: task.OrchestrationContext, key: str):
    before = yield ctx.call_activity(hello, input="before")
    after = yield ctx.call_activity(fails_until_fixed, input=key)
    return [before, after]


def long_rewindable(ctx: task.OrchestrationContext, key: str):
    """40 activities in sequence, then one that fails until fixed: a
    history long enough that the server sends it from its encoded cache,
    rewritten by the rewind."""
    total = 0
    for n in range(40):
        total += yield ctx.call_activity(double, input=n)
    after = yield ctx.call_activity(fails_until_fixed, input=key)
    for n in range(5):
        total += yield ctx.call_activity(double, input=n)
    return [total, after]


def rewindable_parent(ctx: task.OrchestrationContext, key: str):
    return (yield ctx.call_sub_orchestrator(rewindable, input=key))


def rewindable_parent_named(ctx: task.OrchestrationContext, key: str):
    """Its child has a known id, so a test can purge it."""
    return (yield ctx.call_sub_orchestrator(rewindable, input=key,
                                            instance_id=f"{ctx.instance_id}-child"))


def rewindable_slow_child(ctx: task.OrchestrationContext, key: str):
    return (yield ctx.call_activity(fails_slowly_until_fixed, input=key))


def rewindable_with_late_answers(ctx: task.OrchestrationContext, key: str):
    """Fails on its fast activity while a slow child and a slow entity call
    are still out; both answer after the failure."""
    child = ctx.call_sub_orchestrator(rewindable_slow_child, input=key,
                                      instance_id=f"{key}-child")
    call = ctx.call_entity(EntityInstanceId("counter", key), "slow_add", 5)
    fast = yield ctx.call_activity(fails_until_fixed, input=key)
    rest = yield task.when_all([child, call])
    return [fast] + rest


def fails_beside_a_waiting_child(ctx: task.OrchestrationContext, child_id: str):
    child = ctx.call_sub_orchestrator(long_waiter, instance_id=child_id)
    yield ctx.call_activity(always_fails)
    yield child


def scheduled_signal(ctx: task.OrchestrationContext, key: str):
    counter = EntityInstanceId("counter", key)
    ctx.signal_entity(counter, "add", 7,
                      signal_time=ctx.current_utc_datetime + timedelta(seconds=1))
    return "scheduled"


def started_by_an_entity(ctx: task.OrchestrationContext, key: str):
    return f"started by {key}"


def parent_of_waiter(ctx: task.OrchestrationContext, child_id: str):
    yield ctx.call_sub_orchestrator(long_waiter, instance_id=child_id)


def checkout_like(ctx: task.OrchestrationContext, n: int):
    result = []
    for i in range(5):
        result.append((yield ctx.call_activity(slow_hello, input=f"{n}-{i}")))
    return result


# ------------------------------------------------------------------ entities


def counter(ctx, value):
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += value
        ctx.set_state(state)
        return state
    if ctx.operation == "get":
        return state
    if ctx.operation == "slow_add":
        time.sleep(0.5)
        state += value
        ctx.set_state(state)
        return state
    if ctx.operation == "boom":
        ctx.set_state(-999)  # rolled back by the failure
        raise ValueError("boom on purpose")
    raise ValueError(f"unknown operation {ctx.operation}")


def account(ctx, value):
    state = ctx.get_state(int, 100)
    if ctx.operation == "add":
        ctx.set_state(state + value)
        return state + value
    if ctx.operation == "get":
        ctx.set_state(state)
        return state
    raise ValueError(f"unknown operation {ctx.operation}")


def alarm(ctx, value):
    """`arm` starts an orchestration and signals `ring` to itself a second
    later; the state counts the rings."""
    rings = ctx.get_state(int, 0)
    if ctx.operation == "arm":
        ctx.schedule_new_orchestration("started_by_an_entity", input=ctx.entity_id.key,
                                       instance_id=value)
        ctx.signal_entity(ctx.entity_id, "ring",
                          signal_time=datetime.now(timezone.utc) + timedelta(seconds=1))
        ctx.set_state(rings)
        return None
    if ctx.operation == "ring":
        ctx.set_state(rings + 1)
        return rings + 1
    raise ValueError(f"unknown operation {ctx.operation}")


ORCHESTRATIONS = [sequence, fan_out_fan_in, timer_then_done, wait_for_approval, parent,
                  failing_child, parent_catches, counter_loop, with_custom_status,
                  long_waiter, retrying, retry_exhausted, entity_caller, transfer,
                  entity_failure, checkout_like, scheduled_signal, parent_of_waiter, rewindable,
                  rewindable_parent, rewindable_parent_named, long_rewindable, started_by_an_entity, rewindable_slow_child,
                  rewindable_with_late_answers, fails_beside_a_waiting_child]
ACTIVITIES = [hello, double, flaky, always_fails, slow_hello, fails_until_fixed,
              fails_slowly_until_fixed]
ENTITIES = [counter, account, alarm]

TIMEOUT = 60


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def finish(c: client.TaskHubGrpcClient, instance_id: str) -> client.OrchestrationState:
    state = c.wait_for_orchestration_completion(instance_id, timeout=TIMEOUT)
    assert state is not None, f"{instance_id}: no state"
    return state


def output(state: client.OrchestrationState):
    return json.loads(state.serialized_output) if state.serialized_output else None


def expect(actual, wanted, what: str):
    assert actual == wanted, f"{what}: expected {wanted!r}, got {actual!r}"


S = client.OrchestrationStatus

# ----------------------------------------------------------------- scenarios


def scenario_activity_sequence(c):
    state = finish(c, c.schedule_new_orchestration(sequence))
    expect(state.runtime_status, S.COMPLETED, "status")
    expect(output(state), ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], "output")


def scenario_fan_out_fan_in(c):
    state = finish(c, c.schedule_new_orchestration(fan_out_fan_in, input=100))
    expect(state.runtime_status, S.COMPLETED, "status")
    expect(output(state), sum(i * 2 for i in range(100)), "sum")


def scenario_timer(c):
    began = time.time()
    state = finish(c, c.schedule_new_orchestration(timer_then_done, input=1.0))
    expect(state.runtime_status, S.COMPLETED, "status")
    assert output(state) >= 1.0, f"the orchestration saw {output(state)} s pass, wanted >= 1"
    assert time.time() - began >= 1.0, "the timer fired early"


def scenario_external_event_after_wait(c):
    instance_id = c.schedule_new_orchestration(wait_for_approval)
    c.wait_for_orchestration_start(instance_id, timeout=TIMEOUT)
    time.sleep(0.3)
    c.raise_orchestration_event(instance_id, "approval", data=True)
    expect(output(finish(c, instance_id)), {"approved": True}, "output")


def scenario_external_event_before_wait(c):
    instance_id = unique("early")
    # Started in the future, so the event surely arrives before the wait.
    from datetime import datetime, timezone
    c.schedule_new_orchestration(wait_for_approval, instance_id=instance_id,
                                 start_at=datetime.now(timezone.utc) + timedelta(seconds=1))
    c.raise_orchestration_event(instance_id, "approval", data="early bird")
    expect(output(finish(c, instance_id)), {"approved": "early bird"}, "output")


def scenario_sub_orchestrations(c):
    state = finish(c, c.schedule_new_orchestration(parent, input=4))
    expect(state.runtime_status, S.COMPLETED, "status")
    expect(output(state), [sum(2 * i for i in range(n)) for n in range(1, 5)], "children")
    state = finish(c, c.schedule_new_orchestration(parent_catches))
    expect(state.runtime_status, S.COMPLETED, "status")
    assert "always fails" in output(state), output(state)


def scenario_continue_as_new(c):
    state = finish(c, c.schedule_new_orchestration(counter_loop, input=0))
    expect(state.runtime_status, S.COMPLETED, "status")
    expect(output(state), 5, "final generation input")


def scenario_custom_status(c):
    instance_id = c.schedule_new_orchestration(with_custom_status)
    deadline = time.time() + TIMEOUT
    while True:
        state = c.get_orchestration_state(instance_id)
        if state and state.serialized_custom_status:
            break
        assert time.time() < deadline, "custom status never appeared"
        time.sleep(0.05)
    expect(json.loads(state.serialized_custom_status), {"stage": "waiting"}, "custom status")
    c.raise_orchestration_event(instance_id, "go")
    state = finish(c, instance_id)
    expect(json.loads(state.serialized_custom_status), {"stage": "done"}, "final custom status")


def scenario_terminate_suspend_resume(c):
    instance_id = c.schedule_new_orchestration(with_custom_status)
    c.wait_for_orchestration_start(instance_id, timeout=TIMEOUT)
    c.suspend_orchestration(instance_id, reason="pause")
    deadline = time.time() + TIMEOUT
    while c.get_orchestration_state(instance_id).runtime_status != S.SUSPENDED:
        assert time.time() < deadline, "never suspended"
        time.sleep(0.05)
    c.raise_orchestration_event(instance_id, "go")  # queued while suspended
    time.sleep(0.3)
    expect(c.get_orchestration_state(instance_id).runtime_status, S.SUSPENDED, "still suspended")
    c.resume_orchestration(instance_id, reason="carry on")
    expect(finish(c, instance_id).runtime_status, S.COMPLETED, "after resume")
    # Resuming a running instance must not fail it.
    other = c.schedule_new_orchestration(long_waiter)
    c.wait_for_orchestration_start(other, timeout=TIMEOUT)
    c.resume_orchestration(other)
    time.sleep(0.3)
    expect(c.get_orchestration_state(other).runtime_status, S.RUNNING, "resume of running")
    c.terminate_orchestration(other, output="stopped by test")
    state = finish(c, other)
    expect(state.runtime_status, S.TERMINATED, "terminated")
    expect(output(state), "stopped by test", "terminate output")


def scenario_purge(c):
    instance_id = c.schedule_new_orchestration(sequence, instance_id=unique("purge"))
    finish(c, instance_id)
    result = c.purge_orchestration(instance_id)
    expect(result.deleted_instance_count, 1, "purged by id")
    expect(c.get_orchestration_state(instance_id), None, "state after purge")
    # Purging a running instance is refused; by filter only finished ones go.
    running = c.schedule_new_orchestration(long_waiter, instance_id=unique("purge-running"))
    c.wait_for_orchestration_start(running, timeout=TIMEOUT)
    try:
        c.purge_orchestration(running)
        raise AssertionError("purging a running instance succeeded")
    except grpc.RpcError as error:
        expect(error.code(), grpc.StatusCode.FAILED_PRECONDITION, "purge running code")
    done_ids = [c.schedule_new_orchestration(sequence, instance_id=unique("purge-filter"))
                for _ in range(3)]
    for i in done_ids:
        finish(c, i)
    result = c.purge_orchestrations_by(runtime_status=[S.COMPLETED])
    assert result.deleted_instance_count >= 3, result.deleted_instance_count
    for i in done_ids:
        expect(c.get_orchestration_state(i), None, "purged by filter")
    assert c.get_orchestration_state(running) is not None, "a running instance was purged"
    c.terminate_orchestration(running)


def scenario_query(c):
    prefix = unique("query")
    ids = [c.schedule_new_orchestration(sequence, instance_id=f"{prefix}-{i:02}") for i in range(12)]
    for i in ids:
        finish(c, i)
    from durabletask.client import OrchestrationQuery
    states = c.get_all_orchestration_states(
        OrchestrationQuery(runtime_status=[S.COMPLETED], max_instance_count=5))
    found = sorted(s.instance_id for s in states if s.instance_id.startswith(prefix))
    expect(found, sorted(ids), "all pages of the query")


def scenario_activity_failure_with_retry(c):
    key = unique("flaky")
    state = finish(c, c.schedule_new_orchestration(retrying, input=key))
    expect(state.runtime_status, S.COMPLETED, "status")
    expect(output(state), "ok after 3", "output")
    state = finish(c, c.schedule_new_orchestration(retry_exhausted))
    expect(state.runtime_status, S.FAILED, "exhausted retries fail")
    assert state.failure_details is not None
    assert "always fails" in state.failure_details.message, state.failure_details.message


def scenario_entities(c):
    key = unique("k")
    entity = EntityInstanceId("counter", key)
    c.signal_entity(entity, "add", 1)
    c.signal_entity(entity, "add", 2)
    state = finish(c, c.schedule_new_orchestration(entity_caller, input=key))
    expect(state.runtime_status, S.COMPLETED, "caller status")
    # signal(5) and call(10) go out in order after the client's 1 + 2.
    expect(output(state), [18, 18], "call results")
    metadata = c.get_entity(entity)
    assert metadata is not None, "entity missing"
    expect(metadata.get_state(int), 18, "entity state")
    state = finish(c, c.schedule_new_orchestration(entity_failure, input=key))
    expect(output(state), "caught entity failure", "failed call")
    expect(c.get_entity(entity).get_state(int), 18, "state after a failed operation")
    expect(c.get_entity(EntityInstanceId("counter", unique("none"))), None, "missing entity")


def scenario_entity_scheduled_signal_from_an_orchestration(c):
    key = unique("later")
    began = time.time()
    state = finish(c, c.schedule_new_orchestration(scheduled_signal, input=key))
    expect(output(state), "scheduled", "output")
    entity = EntityInstanceId("counter", key)
    metadata = c.get_entity(entity)
    assert metadata is None or metadata.get_state(int) != 7 or time.time() - began >= 1.0, \
        "the signal arrived before its time"
    deadline = time.time() + TIMEOUT
    while True:
        metadata = c.get_entity(entity)
        if metadata is not None and metadata.get_state(int) == 7:
            break
        assert time.time() < deadline, "the scheduled signal never arrived"
        time.sleep(0.1)
    assert time.time() - began >= 1.0, "the scheduled signal arrived early"


def scenario_entity_starts_an_orchestration_and_signals_itself_later(c):
    key = unique("alarm")
    instance = unique("woken")
    entity = EntityInstanceId("alarm", key)
    began = time.time()
    c.signal_entity(entity, "arm", instance)
    deadline = time.time() + TIMEOUT
    while True:
        state = c.get_orchestration_state(instance)
        if state is not None and state.runtime_status == S.COMPLETED:
            break
        assert time.time() < deadline, "the entity's orchestration never completed"
        time.sleep(0.05)
    expect(output(state), f"started by {key}", "the started orchestration's output")
    while True:
        metadata = c.get_entity(entity)
        if metadata is not None and metadata.get_state(int) == 1:
            break
        assert time.time() < deadline, "the entity's delayed signal never arrived"
        time.sleep(0.1)
    # The SDK stamps the signal time from the worker's clock, the same
    # machine's as ours.
    assert time.time() - began >= 0.9, "the delayed signal arrived early"


def scenario_recursive_terminate_and_purge(c):
    parent_id = unique("parent")
    child_id = f"{parent_id}-child"
    c.schedule_new_orchestration(parent_of_waiter, input=child_id, instance_id=parent_id)
    deadline = time.time() + TIMEOUT
    while c.get_orchestration_state(child_id) is None:
        assert time.time() < deadline, "the child never started"
        time.sleep(0.05)
    c.terminate_orchestration(parent_id, output="stop all", recursive=True)
    expect(finish(c, parent_id).runtime_status, S.TERMINATED, "parent")
    expect(finish(c, child_id).runtime_status, S.TERMINATED, "child")
    result = c.purge_orchestration(parent_id, recursive=True)
    expect(result.deleted_instance_count, 2, "purged parent and child")
    expect(c.get_orchestration_state(child_id), None, "child after recursive purge")


def scenario_rewind(c):
    key = unique("rw")
    instance_id = c.schedule_new_orchestration(rewindable, input=key)
    expect(finish(c, instance_id).runtime_status, S.FAILED, "before the fix")
    REWIND_FIXED.add(key)
    c.rewind_orchestration(instance_id, reason="fixed")
    state = finish(c, instance_id)
    expect(state.runtime_status, S.COMPLETED, "after the rewind")
    expect(output(state), ["Hello before!", f"fixed {key}"], "output")
    # A long history (sent from the server's encoded cache), rewound.
    key = unique("rwl")
    instance_id = c.schedule_new_orchestration(long_rewindable, input=key)
    expect(finish(c, instance_id).runtime_status, S.FAILED, "long one before the fix")
    REWIND_FIXED.add(key)
    c.rewind_orchestration(instance_id, reason="fixed")
    state = finish(c, instance_id)
    expect(state.runtime_status, S.COMPLETED, "long one after the rewind")
    expect(output(state), [2 * sum(range(40)) + 2 * sum(range(5)), f"fixed {key}"], "long output")
    # A parent whose child failed: rewinding the parent rewinds the child.
    key = unique("rwp")
    parent_id = c.schedule_new_orchestration(rewindable_parent, input=key)
    expect(finish(c, parent_id).runtime_status, S.FAILED, "parent before the fix")
    REWIND_FIXED.add(key)
    c.rewind_orchestration(parent_id)
    state = finish(c, parent_id)
    expect(state.runtime_status, S.COMPLETED, "parent after the rewind")
    expect(output(state), ["Hello before!", f"fixed {key}"], "parent output")
    try:
        c.rewind_orchestration(parent_id)
        raise AssertionError("rewinding a completed instance succeeded")
    except grpc.RpcError as error:
        expect(error.code(), grpc.StatusCode.FAILED_PRECONDITION, "rewind of a completed one")


def scenario_rewind_with_answers_that_came_after_the_failure(c):
    key = unique("rwl")
    parent_id = c.schedule_new_orchestration(rewindable_with_late_answers, input=key)
    expect(finish(c, parent_id).runtime_status, S.FAILED, "parent before the fix")
    # The entity call and the child answer after the parent failed.
    child = finish(c, f"{key}-child")
    expect(child.runtime_status, S.FAILED, "child before the fix")
    deadline = time.time() + TIMEOUT
    while True:
        metadata = c.get_entity(EntityInstanceId("counter", key))
        if metadata is not None and metadata.get_state(int) == 5:
            break
        assert time.time() < deadline, "the slow entity call never ran"
        time.sleep(0.05)
    REWIND_FIXED.add(key)
    c.rewind_orchestration(parent_id, reason="fixed")
    state = finish(c, parent_id)
    expect(state.runtime_status, S.COMPLETED, "parent after the rewind")
    # The entity's answer is the one that came while the parent was
    # failed: the operation did not run a second time.
    expect(output(state), [f"fixed {key}", f"fixed {key}", 5], "parent output")
    expect(c.get_entity(EntityInstanceId("counter", key)).get_state(int), 5, "entity state")


def scenario_rewind_runs_a_purged_child_again_from_scratch(c):
    key = unique("rwpurged")
    parent_id = c.schedule_new_orchestration(rewindable_parent_named, input=key)
    child_id = f"{parent_id}-child"
    expect(finish(c, parent_id).runtime_status, S.FAILED, "parent before the fix")
    expect(finish(c, child_id).runtime_status, S.FAILED, "child before the fix")
    result = c.purge_orchestration(child_id)
    expect(result.deleted_instance_count, 1, "child purged")
    expect(c.get_orchestration_state(child_id), None, "child gone")
    REWIND_FIXED.add(key)
    c.rewind_orchestration(parent_id, reason="fixed")
    state = finish(c, parent_id)
    expect(state.runtime_status, S.COMPLETED, "parent after the rewind")
    expect(output(state), ["Hello before!", f"fixed {key}"], "parent output")
    child = finish(c, child_id)
    expect(child.runtime_status, S.COMPLETED, "the child ran again")
    expect(output(child), ["Hello before!", f"fixed {key}"], "child output")


def scenario_rewind_refused_when_a_child_cannot_answer_again(c):
    parent_id = unique("rwt")
    child_id = f"{parent_id}-child"
    c.schedule_new_orchestration(fails_beside_a_waiting_child, input=child_id,
                                 instance_id=parent_id)
    expect(finish(c, parent_id).runtime_status, S.FAILED, "parent")
    c.terminate_orchestration(child_id)
    expect(finish(c, child_id).runtime_status, S.TERMINATED, "child")
    try:
        c.rewind_orchestration(parent_id)
        raise AssertionError("a parent whose child was terminated was rewound")
    except grpc.RpcError as error:
        expect(error.code(), grpc.StatusCode.FAILED_PRECONDITION, "refusal")
        assert child_id in (error.details() or ""), error.details()
    expect(c.get_orchestration_state(parent_id).runtime_status, S.FAILED, "parent untouched")


def scenario_entity_locks(c):
    a, b = unique("a"), unique("b")
    transfers = [c.schedule_new_orchestration(transfer, input={"from": a, "to": b, "amount": 10})
                 for _ in range(5)]
    transfers += [c.schedule_new_orchestration(transfer, input={"from": b, "to": a, "amount": 5})
                  for _ in range(5)]
    results = [output(finish(c, i)) for i in transfers]
    expect(results.count("moved"), 10, "transfers")
    balance_a = c.get_entity(EntityInstanceId("account", a)).get_state(int)
    balance_b = c.get_entity(EntityInstanceId("account", b)).get_state(int)
    expect(balance_a + balance_b, 200, "total conserved")
    expect(balance_a, 100 - 50 + 25, "balance of a")


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in sorted(globals().items())
             if name.startswith("scenario_")}


# gRPC metadata every call carries: the server's bearer token, if any.
METADATA: list[tuple[str, str]] = []


# TLS to the server (its CA comes from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
SECURE = False


def make_client(addr: str) -> client.TaskHubGrpcClient:
    return client.TaskHubGrpcClient(host_address=addr, metadata=METADATA or None,
                                    secure_channel=SECURE)


def make_worker(addr: str) -> worker.TaskHubGrpcWorker:
    w = worker.TaskHubGrpcWorker(host_address=addr, metadata=METADATA or None,
                                 secure_channel=SECURE)
    for o in ORCHESTRATIONS:
        w.add_orchestrator(o)
    for a in ACTIVITIES:
        w.add_activity(a)
    for e in ENTITIES:
        w.add_entity(e)
    return w


def retrying_call(fn, what: str, deadline: float):
    """Calls fn until it succeeds: the server may be down and restarting."""
    while True:
        try:
            return fn()
        except (grpc.RpcError, TimeoutError) as error:
            if time.time() > deadline:
                raise AssertionError(f"{what}: still failing at the deadline: {error}")
            time.sleep(0.2)


def kill_phase(addr: str) -> int:
    c = make_client(addr)
    count = 60
    ids = [c.schedule_new_orchestration(checkout_like, input=n, instance_id=f"kill-{n}")
           for n in range(count)]
    deadline = time.time() + 180
    # Wait until some are done and others are mid-run, then ask for the kill
    # (one query per check, so the count is fresh when the kill comes).
    from durabletask.client import OrchestrationQuery
    while True:
        finished = c.get_all_orchestration_states(
            OrchestrationQuery(runtime_status=[S.COMPLETED], max_instance_count=1000))
        done = sum(1 for s in finished if s.instance_id.startswith("kill-"))
        if done >= 3:
            break
        assert time.time() < deadline, "no progress before the kill"
        time.sleep(0.02)
    # Completions answered by reads of single instances before the kill:
    # each must still be there, as is, the moment the restarted server
    # answers (a read is answered only once its instance is durable).
    seen_completed = [i for i in ids
                      if (st := c.get_orchestration_state(i)) is not None
                      and st.runtime_status == S.COMPLETED]
    print(f"KILL-NOW completed={done}", flush=True)
    for i in seen_completed:
        state = retrying_call(lambda: c.get_orchestration_state(i), f"reading {i}", deadline)
        expect(state.runtime_status if state else None, S.COMPLETED,
               f"{i}, answered completed before the kill, after the restart")
    for n, i in enumerate(ids):
        state = retrying_call(
            lambda: c.wait_for_orchestration_completion(i, timeout=10), f"waiting for {i}", deadline)
        while state is None or state.runtime_status not in (S.COMPLETED, S.FAILED, S.TERMINATED):
            state = retrying_call(
                lambda: c.wait_for_orchestration_completion(i, timeout=10), f"waiting for {i}",
                deadline)
        expect(state.runtime_status, S.COMPLETED, f"{i} status")
        expect(output(state), [f"Hello {n}-{k}!" for k in range(5)], f"{i} output")
    print(f"all {count} orchestrations completed with the right results", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--kill-phase", action="store_true")
    parser.add_argument("--token-file", help="send the bearer token in this file with every call")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    args = parser.parse_args()
    global SECURE
    SECURE = args.tls
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            METADATA.append(("authorization", f"Bearer {f.read().strip()}"))
    unknown = sorted(set(args.only or []) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenarios: {unknown}", flush=True)
        return 2
    with make_worker(args.addr) as w:
        w.start()
        if args.kill_phase:
            return kill_phase(args.addr)
        c = make_client(args.addr)
        failed = []
        for name, fn in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            began = time.time()
            try:
                fn(c)
                print(f"ok      {name} ({time.time() - began:.2f} s)", flush=True)
            except Exception:  # noqa: BLE001 - report every failure, then exit 1
                failed.append(name)
                print(f"FAILED  {name}\n{traceback.format_exc()}", flush=True)
        print(f"{len(SCENARIOS) - len(failed) if not args.only else len(args.only) - len(failed)} "
              f"passed, {len(failed)} failed: {failed}", flush=True)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
