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
from django.db import connection, transaction
from django.db.models import F, Model, Q
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
from apps.scheduler.launch import attempts_prepare
from apps.scheduler.lifecycle import (
    RUNNING_STATES,
    allocation_end,
    job_stop,
    signal_command,
    start_command,
)
from apps.scheduler.models import Allocation, Job, JobEvent, NodeSchedule
from apps.scheduler.snapshot import Loaded, json_value, raw_rows, schedules_ensure, snapshot_load
from apps.system.heartbeats import redis_client

logger = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000
REQUEST_TTL_S = 10
STARTING_REASON = "start commands sent to the agents"
INSERT_BATCH = 1000  # rows per INSERT statement at most
INSERT_MAX_PARAMS = 60_000  # parameters per statement where the database sets no limit

State = Job.State
Intent = Job.Intent


@dataclass
class PassResult:
    """What one pass did, for logs, tests and the benchmark."""

    placed: int = 0
    preempted: int = 0
    pending: int = 0
    stopped: int = 0  # attempts stopped by faults and watchdogs
    seconds: float = 0.0
    # Seconds per phase: reconcile, snapshot, engine, apply (the transaction), send (the
    # commands after commit), queue (positions published).
    phases: dict[str, float] = field(default_factory=dict)
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
    result = PassResult()
    clock = _Clock(result.phases)
    schedules_ensure()
    with transaction.atomic():
        commands = reconcile(now or timezone.now())
        result.stopped = len({c[1].get("alloc") for c in commands})
        commands_send(commands)
    clock.lap("reconcile")
    # Placements are stamped after the stops the reconcile recorded: a job's timeline
    # shows the fault before the attempt that follows it.
    now = now or timezone.now()
    loaded = snapshot_load(now)
    clock.lap("snapshot")
    decisions = schedule(loaded.snapshot)
    clock.lap("engine")
    with transaction.atomic():
        placed, commands = decisions_apply(loaded, decisions, now)
        commands_send(commands)
        clock.lap("apply")
    clock.lap("send")
    result.placed = len(placed)
    result.preempted = len(decisions.preemptions)
    result.pending = len(decisions.pending)
    result.commands = commands
    queue_store(decisions)
    clock.lap("queue")
    result.seconds = time.perf_counter() - started
    return result


class _Clock:
    """Seconds spent in each phase of a pass, written into ``phases``."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = time.perf_counter()

    def lap(self, phase: str) -> float:
        """Close ``phase`` now; its seconds."""
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.phases[phase] = round(elapsed, 4)
        return elapsed


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
    live = Allocation.objects.filter(
        state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
    )
    unhealthy = set(
        Gpu.objects.filter(node__allocations__in=live)
        .filter(Q(health=Health.UNHEALTHY) | Q(present=False))
        .values_list("node_id", "index")
    )
    # Only ranks that something is wrong with: their node, one of its GPUs, or a stale attempt.
    suspects = Q(node__state__in=[Node.State.LOST, Node.State.REVOKED])
    suspects |= Q(node__revoked_at__isnull=False) | Q(node__health=Health.UNHEALTHY)
    suspects |= Q(node_id__in={node_id for node_id, _ in unhealthy})
    suspects |= ~Q(attempt=F("job__attempt"))
    active = list(live.filter(suspects).select_related("node", "job").order_by("pk"))
    handled: set[int] = set()
    for allocation in active:
        node = allocation.node
        if allocation.attempt != allocation.job.attempt:
            commands.append(signal_command(allocation, hard=True, grace=0))
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
    due = Q(state__in=[State.PREEMPTING, State.STOPPING], stop_deadline__lte=now)
    due |= Q(state__in=[State.SCHEDULED, State.STARTING], scheduled_at__lt=now - start_timeout)
    due |= Q(state=State.RUNNING) & (Q(max_duration__isnull=False) | Q(hang_timeout__isnull=False))
    jobs = Job.objects.select_for_update().filter(due).exclude(pk__in=handled).order_by("pk")
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


def rows_insert(model: type[Model], fields: list[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert many rows of ``model`` with ``COPY`` (PostgreSQL) or multi-row ``INSERT``
    statements; values must already be in database form. Placing thousands of jobs in a
    pass would otherwise spend most of its time in the ORM preparing each value."""
    if not rows:
        return
    quote = connection.ops.quote_name
    concrete = {field.name: str(field.column) for field in model._meta.concrete_fields}
    columns = ", ".join(quote(concrete[name]) for name in fields)
    table = quote(model._meta.db_table)
    if connection.vendor == "postgresql":
        # COPY is PostgreSQL's bulk load: several times faster than INSERT for many rows.
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    limit = connection.features.max_query_params or INSERT_MAX_PARAMS
    batch = max(1, min(INSERT_BATCH, limit // len(fields)))
    row_marks = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            values = ", ".join([row_marks] * len(chunk))
            # Table and column names come from the model, never from input.
            sql = f"INSERT INTO {table} ({columns}) VALUES {values}"  # noqa: S608
            cursor.execute(sql, [value for row in chunk for value in row])


def decisions_apply(
    loaded: Loaded, decisions: Decisions, now: datetime
) -> tuple[list[int], list[Command]]:
    """Write placements and preemptions; return the placed job ids and the commands.

    Placements are written in bulk: one update of the jobs, one insert of their events,
    one of their allocations; a job that left the queue since the snapshot is skipped.
    """
    wanted = {p.job_id: p for p in decisions.placements}
    # The update is the guard: a job cancelled or held since the snapshot is no longer
    # pending and stays as it is. The placed ones are then read back by their mark.
    Job.objects.filter(pk__in=list(wanted), state=State.PENDING).update(
        attempt=F("attempt") + 1,
        state=State.STARTING,
        state_reason=STARTING_REASON,
        scheduled_at=now,
        started_at=None,
        last_output_at=None,
    )
    jobs = list(
        Job.objects.filter(pk__in=list(wanted), state=State.STARTING, scheduled_at=now).order_by(
            "pk"
        )
    )
    with_quota = {(q.workspace_id, q.pool_id) for q in loaded.snapshot.quotas}
    at = connection.ops.adapt_datetimefield_value(now)
    allocations: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for job in jobs:
        placement = wanted[job.pk]
        where = ", ".join(
            f"{loaded.node_names.get(node_id, node_id)} [{','.join(map(str, gpus))}]"
            for node_id, gpus in placement.slots
        )
        borrowing = placement.borrowed and (job.workspace_id, job.pool_id) in with_quota
        reason = f"placed on {where}" + (" (borrowing idle GPUs)" if borrowing else "")
        events.append(
            (
                job.pk,
                at,
                job.attempt,
                "scheduled",
                State.PENDING,
                State.SCHEDULED,
                reason[:500],
                "{}",
            )
        )
        events.append(
            (
                job.pk,
                at,
                job.attempt,
                "starting",
                State.SCHEDULED,
                State.STARTING,
                STARTING_REASON,
                "{}",
            )
        )
        allocations += [
            (
                job.pk,
                job.attempt,
                rank,
                node_id,
                json.dumps(list(gpus)),
                Allocation.State.STARTING,
                "",
                "",
                at,
            )
            for rank, (node_id, gpus) in enumerate(placement.slots)
        ]
    placed = [job.pk for job in jobs]
    ranks: dict[int, list[tuple[int, int]]] = {
        job.pk: [(rank, slot[0]) for rank, slot in enumerate(wanted[job.pk].slots)] for job in jobs
    }
    attempts = {job.pk: job.attempt for job in jobs}
    for job_id, lines in attempts_prepare(jobs, ranks).items():
        events += [
            (job_id, at, attempts[job_id], kind, "", "", reason[:500], json.dumps(data))
            for kind, reason, data in lines
        ]
    Job.objects.bulk_update(jobs, ["launch_env"], batch_size=500)
    rows_insert(
        JobEvent,
        ["job", "at", "attempt", "kind", "from_state", "to_state", "reason", "data"],
        events,
    )
    rows_insert(
        Allocation,
        ["job", "attempt", "rank", "node", "gpus", "state", "exit_reason", "tail", "created_at"],
        allocations,
    )
    by_id = {job.pk: job for job in jobs}
    started = raw_rows(
        Allocation.objects.filter(job_id__in=placed, state=Allocation.State.STARTING)
        .order_by("pk")
        .values_list("pk", "job_id", "attempt", "rank", "node_id", "gpus")
    )
    commands = [
        start_command(
            by_id[job_id],
            Allocation(
                pk=pk,
                job_id=job_id,
                attempt=attempt,
                rank=rank,
                node_id=node_id,
                gpus=json_value(gpus),
            ),
        )
        for pk, job_id, attempt, rank, node_id, gpus in started
        if attempt == by_id[job_id].attempt
    ]
    for preemption in decisions.preemptions:
        victim = Job.objects.select_for_update().filter(pk=preemption.job_id).first()
        if victim is None or victim.state not in RUNNING_STATES:
            continue
        commands += job_stop(
            victim, intent=Intent.REQUEUE, kind="preempted", reason=preemption.reason, now=now
        )
    pools = {job.pool_id for job in jobs} | {
        loaded.pending[p.for_job_id][1]
        for p in decisions.preemptions
        if p.for_job_id in loaded.pending
    }
    jobs_changed(placed + [p.job_id for p in decisions.preemptions], list(pools))
    return placed, commands


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
