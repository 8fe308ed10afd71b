"""Job state transitions, each recorded on the job's timeline.

pending → scheduled → starting → running → succeeded / failed / cancelled; a running job
that is preempted, hit by a fault or failed with restarts left goes through ``preempting``
back to pending (or to held); one that is cancelled or fails for good goes through
``stopping``. A stopping attempt keeps its GPUs until every rank has exited; what comes
next is the job's ``intent``, applied by ``job_settle``.

Functions here change rows inside the caller's transaction and return the commands for
agents; callers send them with ``broadcast.commands_send``.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.accounts.models import User
from apps.scheduler.broadcast import Command
from apps.scheduler.failures import failure_classify
from apps.scheduler.launch import rank_command, rank_env
from apps.scheduler.models import Allocation, Job, JobEvent
from podium.agent import protocol

State = Job.State
Intent = Job.Intent

# States in which a job holds GPUs.
HOLDING_STATES = (State.SCHEDULED, State.STARTING, State.RUNNING, State.PREEMPTING, State.STOPPING)
# States in which a job's attempt runs (or is about to) and may be stopped.
RUNNING_STATES = (State.SCHEDULED, State.STARTING, State.RUNNING)
TERMINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)
# How the agent's exit reasons begin when the machine, not the job, ended the process.
AGENT_FAULTS = ("fenced", "lost", "unknown")
# Where a stopping attempt ends, by intent.
_SETTLED = {
    Intent.REQUEUE: (State.PENDING, "requeued"),
    Intent.HOLD: (State.HELD, "held"),
    Intent.CANCEL: (State.CANCELLED, "cancelled"),
    Intent.FAIL: (State.FAILED, "failed"),
}


def transition(
    job: Job,
    to_state: str,
    *,
    kind: str,
    reason: str = "",
    actor: User | None = None,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Move ``job`` to ``to_state`` (saved by the caller) and record the event."""
    event = JobEvent.objects.create(
        job=job,
        attempt=job.attempt,
        kind=kind,
        from_state=job.state,
        to_state=to_state,
        reason=reason[:500],
        actor=actor,
        data=data or {},
    )
    job.state = to_state
    job.state_reason = reason[:300]
    return event


def note(job: Job, *, kind: str, reason: str, actor: User | None = None, **data: Any) -> JobEvent:
    """Record an event that does not change the job's state."""
    return JobEvent.objects.create(
        job=job, attempt=job.attempt, kind=kind, reason=reason[:500], actor=actor, data=data
    )


def attempt_allocations(job: Job) -> list[Allocation]:
    """The ranks of the job's current attempt, with their nodes."""
    return list(
        Allocation.objects.filter(job=job, attempt=job.attempt)
        .select_related("node")
        .order_by("rank")
    )


def signal_command(allocation: Allocation, *, hard: bool, grace: float) -> Command:
    """The command that stops one rank: SIGTERM then SIGKILL after ``grace``, or SIGKILL."""
    message = {
        "type": protocol.JOB_SIGNAL,
        "alloc": allocation.pk,
        "signal": protocol.SIGNAL_KILL if hard else protocol.SIGNAL_TERM,
        "grace": 0 if hard else grace,
    }
    return allocation.node_id, message


def start_command(job: Job, allocation: Allocation) -> Command:
    """The command that starts one rank of the job's current attempt on its node."""
    message = {
        "type": protocol.JOB_START,
        "alloc": allocation.pk,
        "job": job.pk,
        "attempt": job.attempt,
        "rank": allocation.rank,
        "command": rank_command(job),
        "env": rank_env(job, allocation),
        "workdir": job.workdir or None,
        "gpus": list(allocation.gpus),
        "grace": job.grace_seconds,
    }
    return allocation.node_id, message


def job_stop(
    job: Job,
    *,
    intent: str,
    kind: str,
    reason: str,
    actor: User | None = None,
    hard: bool = False,
    now: datetime | None = None,
) -> list[Command]:
    """Stop the job's current attempt; ``intent`` says what follows once every rank exited.

    ``hard`` kills at once (a fault: the attempt is broken anyway); otherwise each rank
    gets SIGTERM and the job's grace period to checkpoint before SIGKILL.
    """
    now = now or timezone.now()
    active = [a for a in attempt_allocations(job) if a.active]
    job.intent = intent
    stopping = State.PREEMPTING if intent in (Intent.REQUEUE, Intent.HOLD) else State.STOPPING
    transition(job, stopping, kind=kind, reason=reason, actor=actor)
    if not active:
        job_settle(job, now=now)
        return []
    grace = 0.0 if hard else job.grace_seconds
    margin = settings.PODIUM["JOB_STOP_MARGIN"]
    job.stop_deadline = now + timedelta(seconds=grace + margin)
    job.save()
    return [signal_command(a, hard=hard, grace=grace) for a in active]


def job_settle(job: Job, *, now: datetime | None = None) -> None:
    """Every rank of the current attempt has ended: apply the intent, or judge the exits."""
    now = now or timezone.now()
    intent = job.intent
    if intent in _SETTLED:
        to_state, kind = _SETTLED[Intent(intent)]
        transition(job, to_state, kind=kind, reason=job.state_reason)
    else:
        transition(job, State.SUCCEEDED, kind="succeeded", reason="every rank exited with 0")
        job.exit_code = 0
    job.intent = Intent.NONE
    job.stop_deadline = None
    if job.state in TERMINAL_STATES:
        job.finished_at = now
    job.save()


def _rank_failed(job: Job, allocation: Allocation, *, now: datetime) -> list[Command]:
    """A rank of a running attempt failed: requeue the job or fail it, by the failure's kind."""
    failure = failure_classify(
        exit_code=allocation.exit_code, signal_number=allocation.signal, tail=allocation.tail
    )
    where = f"rank {allocation.rank} on {allocation.node.name}"
    job.exit_code = allocation.exit_code
    if failure.avoid_node and allocation.node_id not in job.avoid_nodes:
        job.avoid_nodes = [*job.avoid_nodes, allocation.node_id]
    if failure.retry and failure.counts and job.restarts < job.max_restarts:
        job.restarts += 1
        reason = f"{where}: {failure.reason}; restart {job.restarts} of {job.max_restarts}"
        return job_stop(
            job, intent=Intent.REQUEUE, kind="failed", reason=reason, hard=True, now=now
        )
    if failure.retry and not failure.counts:
        reason = f"{where}: {failure.reason}"
        return job_stop(
            job, intent=Intent.REQUEUE, kind="failed", reason=reason, hard=True, now=now
        )
    if failure.retry:
        reason = f"{where}: {failure.reason}; no restarts left ({job.max_restarts} used)"
    else:
        reason = f"{where}: {failure.reason}"
    return job_stop(job, intent=Intent.FAIL, kind="failed", reason=reason, hard=True, now=now)


def allocation_end(
    allocation: Allocation,
    *,
    lost: bool = False,
    exit_code: int | None = None,
    signal_number: int | None = None,
    reason: str = "",
    tail: str = "",
    now: datetime | None = None,
) -> list[Command]:
    """A rank's process ended (or its node was lost); move its job on. Idempotent."""
    now = now or timezone.now()
    if not allocation.active:
        return []
    allocation.state = Allocation.State.LOST if lost else Allocation.State.EXITED
    allocation.exit_code = exit_code
    allocation.signal = signal_number
    allocation.exit_reason = reason[:300]
    allocation.tail = tail[-8192:]
    allocation.ended_at = now
    allocation.save()
    job = Job.objects.select_for_update().get(pk=allocation.job_id)
    if allocation.attempt != job.attempt:
        return []
    remaining = Allocation.objects.filter(
        job=job,
        attempt=job.attempt,
        state__in=[Allocation.State.STARTING, Allocation.State.RUNNING],
    ).exists()
    if job.state in (State.PREEMPTING, State.STOPPING):
        if not remaining:
            job_settle(job, now=now)
        return []
    if job.state not in RUNNING_STATES:
        return []
    if lost:
        what = reason or f"{allocation.node.name} was lost"
        return job_stop(job, intent=Intent.REQUEUE, kind="fault", reason=what, hard=True, now=now)
    if exit_code == 0 and not signal_number:
        if not remaining:
            job_settle(job, now=now)
        return []
    where = f"rank {allocation.rank} on {allocation.node.name}"
    if reason.startswith("start failed"):
        what = f"{where}: {reason}"
        return job_stop(job, intent=Intent.FAIL, kind="failed", reason=what, hard=True, now=now)
    if reason.startswith(AGENT_FAULTS):
        # The agent fenced itself, restarted, or no longer knew the process.
        what = f"{where}: {reason}"
        return job_stop(job, intent=Intent.REQUEUE, kind="fault", reason=what, hard=True, now=now)
    return _rank_failed(job, allocation, now=now)
