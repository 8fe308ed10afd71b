"""The scheduling pass: reconcile faults and watchdogs, run the engine, apply its decisions.

One pass at a time across every process (a Redis lock that expires, in case its holder
dies). A pass runs on a timer (``SCHEDULER_INTERVAL``) and at once when something
changes (``pass_request``). Decisions are applied in one transaction; the start and
signal commands go to the agents after it commits.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.monitoring.models import Gpu, Health, Node
from apps.scheduler.broadcast import (
    LOCK_KEY,
    QUEUE_KEY,
    REQUESTED_KEY,
    Command,
    commands_send,
    jobs_changed,
)
from apps.scheduler.engine import Decisions, schedule
from apps.scheduler.lifecycle import (
    RUNNING_STATES,
    allocation_end,
    job_stop,
    signal_command,
    start_command,
)
from apps.scheduler.models import Allocation, Job, JobEvent, NodeSchedule
from apps.scheduler.snapshot import Loaded, schedules_ensure, snapshot_load
from apps.system.heartbeats import redis_client

logger = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000
REQUEST_TTL_S = 10

State = Job.State
Intent = Job.Intent


@dataclass
class PassResult:
    """What one pass did, for logs, tests and the benchmark."""

    placed: int = 0
    preempted: int = 0
    pending: int = 0
    stopped: int = 0  # attempts stopped by faults and watchdogs
    engine_seconds: float = 0.0
    seconds: float = 0.0
    commands: list[Command] = field(default_factory=list)


def pass_request() -> None:
    """Ask for a pass soon: at most one request waits at a time."""
    from apps.scheduler.tasks import run_pass

    try:
        if not redis_client().set(REQUESTED_KEY, "1", nx=True, ex=REQUEST_TTL_S):
            return
    except Exception:
        logger.warning("Redis unreachable: the next timed pass will schedule")
        return
    try:
        run_pass.delay()
    except Exception:
        logger.warning("could not queue a scheduling pass; the next timed pass will run")


def pass_request_on_commit() -> None:
    """``pass_request`` once the surrounding transaction commits."""
    transaction.on_commit(pass_request)


def scheduling_pass() -> PassResult | None:
    """Run one pass under the lock; None if another pass holds it."""
    client = redis_client()
    token = uuid.uuid4().hex
    if not client.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
        return None
    client.delete(REQUESTED_KEY)
    try:
        return pass_run()
    finally:
        if client.get(LOCK_KEY) == token.encode():
            client.delete(LOCK_KEY)


def pass_run(now: datetime | None = None) -> PassResult:
    """One pass without the lock (callers hold it, or tests own the database)."""
    started = time.perf_counter()
    now = now or timezone.now()
    result = PassResult()
    schedules_ensure()
    with transaction.atomic():
        commands = reconcile(now)
        result.stopped = len({c[1].get("alloc") for c in commands})
        commands_send(commands)
    loaded = snapshot_load(now)
    engine_started = time.perf_counter()
    decisions = schedule(loaded.snapshot)
    result.engine_seconds = time.perf_counter() - engine_started
    with transaction.atomic():
        placed, commands = decisions_apply(loaded, decisions, now)
        commands_send(commands)
    result.placed = len(placed)
    result.preempted = len(decisions.preemptions)
    result.pending = len(decisions.pending)
    result.commands = commands
    queue_store(decisions)
    result.seconds = time.perf_counter() - started
    return result


# Faults and watchdogs -----------------------------------------------------------------


def _node_fault(node: Node) -> str | None:
    if node.revoked_at is not None or node.state == Node.State.REVOKED:
        return f"node {node.name} was revoked"
    if node.state == Node.State.LOST:
        return f"node {node.name} was lost (no heartbeat)"
    return None


def reconcile(now: datetime) -> list[Command]:
    """Settle what faults and watchdogs decided since the last pass; return the commands."""
    commands: list[Command] = []
    active = list(
        Allocation.objects.filter(
            state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
        ).select_related("node", "job")
    )
    unhealthy = {
        (node_id, index)
        for node_id, index in Gpu.objects.filter(node_id__in={a.node_id for a in active})
        .filter(Q(health=Health.UNHEALTHY) | Q(present=False))
        .values_list("node_id", "index")
    }
    handled: set[int] = set()
    for allocation in active:
        node = allocation.node
        if allocation.attempt != allocation.job.attempt:
            allocation_end(allocation, lost=True, reason="left over from an earlier attempt")
            continue
        fault = _node_fault(node)
        if fault is not None:
            commands += allocation_end(allocation, lost=True, reason=fault, now=now)
            handled.add(allocation.job_id)
            continue
        if allocation.job_id in handled:
            continue
        bad = sorted(i for i in allocation.gpus if (node.pk, i) in unhealthy)
        if node.health == Health.UNHEALTHY:
            reason = f"node {node.name} became unhealthy"
        elif bad:
            which = ", ".join(str(i) for i in bad)
            reason = f"GPU {which} of node {node.name} became unhealthy"
        else:
            continue
        job = Job.objects.select_for_update().get(pk=allocation.job_id)
        handled.add(job.pk)
        if job.state in RUNNING_STATES:
            commands += job_stop(
                job, intent=Intent.REQUEUE, kind="fault", reason=reason, hard=True, now=now
            )
    commands += _watchdogs(now, handled)
    return commands


def _watchdogs(now: datetime, handled: set[int]) -> list[Command]:
    """Start timeouts, maximum durations, hangs, and stops that outlived their grace."""
    commands: list[Command] = []
    start_timeout = timedelta(seconds=settings.PODIUM["JOB_START_TIMEOUT"])
    margin = timedelta(seconds=settings.PODIUM["JOB_STOP_MARGIN"])
    jobs = (
        Job.objects.select_for_update()
        .filter(state__in=[*RUNNING_STATES, State.PREEMPTING, State.STOPPING])
        .exclude(pk__in=handled)
    )
    for job in jobs:
        if job.state in (State.PREEMPTING, State.STOPPING):
            if job.stop_deadline is not None and job.stop_deadline <= now:
                active = Allocation.objects.filter(
                    job=job,
                    attempt=job.attempt,
                    state__in=[Allocation.State.STARTING, Allocation.State.RUNNING],
                ).select_related("node")
                commands += [signal_command(a, hard=True, grace=0) for a in active]
                job.stop_deadline = now + margin
                job.save(update_fields=["stop_deadline"])
            continue
        if job.state in (State.SCHEDULED, State.STARTING):
            if job.scheduled_at is not None and now - job.scheduled_at > start_timeout:
                reason = f"did not start within {start_timeout.total_seconds():.0f} s"
                commands += job_stop(
                    job, intent=Intent.REQUEUE, kind="fault", reason=reason, hard=True, now=now
                )
            continue
        commands += _running_watchdogs(job, now)
    return commands


def _running_watchdogs(job: Job, now: datetime) -> list[Command]:
    started = job.started_at or job.scheduled_at or now
    if job.max_duration and (now - started).total_seconds() > job.max_duration:
        reason = f"ran past its maximum duration of {job.max_duration:g} s"
        return job_stop(job, intent=Intent.FAIL, kind="timeout", reason=reason, now=now)
    if job.hang_timeout:
        quiet_since = max(started, job.last_output_at or started)
        quiet = (now - quiet_since).total_seconds()
        if quiet > job.hang_timeout:
            if job.restarts < job.max_restarts:
                job.restarts += 1
                reason = (
                    f"no output for {quiet:.0f} s (hang watchdog); "
                    f"restart {job.restarts} of {job.max_restarts}"
                )
                intent = Intent.REQUEUE
            else:
                reason = f"no output for {quiet:.0f} s (hang watchdog); no restarts left"
                intent = Intent.FAIL
            return job_stop(job, intent=intent, kind="hang", reason=reason, hard=True, now=now)
    return []


# Decisions ----------------------------------------------------------------------------


def decisions_apply(
    loaded: Loaded, decisions: Decisions, now: datetime
) -> tuple[list[int], list[Command]]:
    """Write placements and preemptions; return the placed job ids and the commands."""
    commands: list[Command] = []
    wanted = {p.job_id: p for p in decisions.placements}
    still_pending = set(
        Job.objects.select_for_update()
        .filter(pk__in=list(wanted), state=State.PENDING)
        .values_list("pk", flat=True)
    )
    with_quota = {(q.workspace_id, q.pool_id) for q in loaded.snapshot.quotas}
    jobs, allocations, events = [], [], []
    for job_id in sorted(still_pending):
        placement, job = wanted[job_id], loaded.pending[job_id]
        job.attempt += 1
        where = ", ".join(
            f"{loaded.node_names.get(node_id, node_id)} [{','.join(map(str, gpus))}]"
            for node_id, gpus in placement.slots
        )
        borrowing = placement.borrowed and (job.workspace_id, job.pool_id) in with_quota
        reason = f"placed on {where}" + (" (borrowing idle GPUs)" if borrowing else "")
        events += [
            JobEvent(
                job=job,
                attempt=job.attempt,
                kind="scheduled",
                from_state=job.state,
                to_state=State.SCHEDULED,
                reason=reason[:500],
                data={"slots": [[n, list(g)] for n, g in placement.slots]},
            ),
            JobEvent(
                job=job,
                attempt=job.attempt,
                kind="starting",
                from_state=State.SCHEDULED,
                to_state=State.STARTING,
                reason="start commands sent to the agents",
            ),
        ]
        job.state, job.state_reason, job.scheduled_at = State.STARTING, reason[:300], now
        job.started_at = None
        job.last_output_at = None
        jobs.append(job)
        allocations += [
            Allocation(job=job, attempt=job.attempt, rank=rank, node_id=node_id, gpus=list(gpus))
            for rank, (node_id, gpus) in enumerate(placement.slots)
        ]
    Job.objects.bulk_update(
        jobs,
        ["attempt", "state", "state_reason", "scheduled_at", "started_at", "last_output_at"],
        batch_size=500,
    )
    JobEvent.objects.bulk_create(events, batch_size=500)
    Allocation.objects.bulk_create(allocations, batch_size=500)
    by_id = {j.pk: j for j in jobs}
    commands += [start_command(by_id[a.job_id], a) for a in allocations]
    for preemption in decisions.preemptions:
        victim = Job.objects.select_for_update().filter(pk=preemption.job_id).first()
        if victim is None or victim.state not in RUNNING_STATES:
            continue
        commands += job_stop(
            victim, intent=Intent.REQUEUE, kind="preempted", reason=preemption.reason, now=now
        )
    touched_pools = {j.pool_id for j in jobs}
    touched_pools |= {
        loaded.pending[p.for_job_id].pool_id
        for p in decisions.preemptions
        if p.for_job_id in loaded.pending
    }
    jobs_changed(
        [j.pk for j in jobs] + [p.job_id for p in decisions.preemptions], list(touched_pools)
    )
    return [j.pk for j in jobs], commands


def queue_store(decisions: Decisions) -> None:
    """Publish every pending job's position, reason and estimated start."""
    entries: dict[Any, Any] = {
        str(p.job_id): json.dumps(
            {
                "position": p.position,
                "reason": p.reason,
                "estimated_start": p.estimated_start,
                "reserved": p.reserved,
            }
        )
        for p in decisions.pending
    }
    try:
        pipe = redis_client().pipeline()
        pipe.delete(QUEUE_KEY)
        if entries:
            pipe.hset(QUEUE_KEY, mapping=entries)
        pipe.execute()
    except Exception:
        logger.warning("Redis unreachable: queue positions not published")


def node_failure_record(node_id: int, now: datetime) -> bool:
    """Count a node's failure; hold it out when it failed too often. True when held."""
    failures = settings.PODIUM["NODE_FLAP_FAILURES"]
    window = settings.PODIUM["NODE_FLAP_WINDOW"]
    hold = settings.PODIUM["NODE_FLAP_HOLD"]
    with transaction.atomic():
        schedule = NodeSchedule.objects.select_for_update().filter(node_id=node_id).first()
        if schedule is None:
            return False
        at = now.timestamp()
        recent = [t for t in schedule.failures if at - t < window] + [at]
        schedule.failures = recent
        held = failures > 0 and len(recent) >= failures
        if held:
            schedule.held_until = now + timedelta(seconds=hold)
            schedule.state_reason = (
                f"held out until {schedule.held_until:%H:%M}: lost {len(recent)} times "
                f"in {window / 60:g} min"
            )
        schedule.save(update_fields=["failures", "held_until", "state_reason", "updated_at"])
    return held
