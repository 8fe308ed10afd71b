"""What the scheduler does with its agents' messages (registered in
``settings.AGENT_MESSAGE_HANDLERS``; see ``apps.monitoring.agent_consumer``).

Each handler takes the sending node's id and the message, changes what it must in one
transaction and returns the commands to send back to that agent. A message about an
allocation of another node is ignored: an agent only speaks for its own node.
"""

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.scheduler.broadcast import commands_send, jobs_changed
from apps.scheduler.lifecycle import allocation_end, start_command, transition
from apps.scheduler.models import Allocation, Job
from apps.scheduler.passes import pass_request_on_commit
from podium.agent import protocol

logger = logging.getLogger(__name__)

MAX_TAIL = 8192

Message = dict[str, Any]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _allocation(node_id: int, message: Message) -> Allocation | None:
    alloc_id = _int(message.get("alloc"))
    if alloc_id is None:
        return None
    return (
        Allocation.objects.select_for_update()
        .select_related("node")
        .filter(pk=alloc_id, node_id=node_id)
        .first()
    )


def _ack(alloc_id: int) -> Message:
    return {"type": protocol.JOB_ACK, "alloc": alloc_id}


def _kill(alloc_id: int) -> Message:
    return {"type": protocol.JOB_SIGNAL, "alloc": alloc_id, "signal": protocol.SIGNAL_KILL}


def _to_self(node_id: int, commands: list[tuple[int, Message]]) -> list[Message]:
    """Commands for this node go back on its connection; the others through the layer."""
    commands_send([c for c in commands if c[0] != node_id])
    return [message for target, message in commands if target == node_id]


@transaction.atomic
def on_hello(node_id: int, message: Message) -> list[Message]:
    """Reconcile what the agent runs with what the console expects it to run.

    Ranks still waiting to start get their start command again (it is idempotent);
    ranks the console thinks run but the agent does not are asked to stop, which the
    agent answers with their exit; processes the console no longer wants are killed.
    """
    reported = [_int(j.get("alloc")) for j in message.get("jobs") or [] if isinstance(j, dict)]
    running = {alloc_id for alloc_id in reported if alloc_id is not None}
    expected = {
        a.pk: a
        for a in Allocation.objects.filter(
            node_id=node_id, state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
        ).select_related("job")
    }
    replies: list[Message] = []
    for alloc_id, allocation in expected.items():
        if alloc_id in running:
            continue
        if allocation.state == Allocation.State.STARTING and allocation.pid is None:
            replies.append(start_command(allocation.job, allocation)[1])
        else:
            replies.append(_kill(alloc_id))
    replies += [_kill(alloc_id) for alloc_id in sorted(a for a in running if a not in expected)]
    return replies


@transaction.atomic
def on_job_started(node_id: int, message: Message) -> list[Message]:
    """A rank's process started; the job runs once every rank has."""
    allocation = _allocation(node_id, message)
    if allocation is None:
        alloc_id = _int(message.get("alloc"))
        return [_kill(alloc_id)] if alloc_id is not None else []
    if not allocation.active:
        return [_kill(allocation.pk)]
    now = timezone.now()
    if allocation.state == Allocation.State.STARTING:
        allocation.state = Allocation.State.RUNNING
        allocation.pid = _int(message.get("pid"))
        allocation.started_at = now
        allocation.save(update_fields=["state", "pid", "started_at"])
    job = Job.objects.select_for_update().get(pk=allocation.job_id)
    if job.attempt != allocation.attempt:
        return [_kill(allocation.pk)]
    waiting = Allocation.objects.filter(
        job=job, attempt=job.attempt, state=Allocation.State.STARTING
    ).exists()
    if job.state in (Job.State.SCHEDULED, Job.State.STARTING) and not waiting:
        ranks = "every rank" if job.nodes > 1 else "the process"
        transition(job, Job.State.RUNNING, kind="running", reason=f"{ranks} started")
        job.started_at = now
        job.save()
        jobs_changed([job.pk], [job.pool_id])
    return []


@transaction.atomic
def on_job_exited(node_id: int, message: Message) -> list[Message]:
    """A rank's process ended: settle the job, stop the other ranks if it failed."""
    alloc_id = _int(message.get("alloc"))
    if alloc_id is None:
        return []
    allocation = _allocation(node_id, message)
    if allocation is None:
        return [_ack(alloc_id)]
    if allocation.active:
        commands = allocation_end(
            allocation,
            exit_code=_int(message.get("exit_code")),
            signal_number=_int(message.get("signal")),
            reason=str(message.get("reason") or "")[:300],
            tail=str(message.get("tail") or "")[-MAX_TAIL:],
        )
        job = Job.objects.only("pk", "pool_id").get(pk=allocation.job_id)
        jobs_changed([job.pk], [job.pool_id])
        pass_request_on_commit()
        return [*_to_self(node_id, commands), _ack(alloc_id)]
    return [_ack(alloc_id)]
