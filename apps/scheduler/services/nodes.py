"""Nodes and GPUs in scheduling: cordon, drain, uncordon, pool, GPUs taken out."""

from typing import Any

from django.db import transaction

from apps.accounts.models import User
from apps.accounts.services import platform_admin_require
from apps.audit.services import audit_record
from apps.monitoring.models import Gpu, Node
from apps.scheduler.broadcast import commands_send, jobs_changed
from apps.scheduler.lifecycle import RUNNING_STATES, job_stop
from apps.scheduler.models import Allocation, Job, NodeSchedule, Pool
from apps.scheduler.passes import pass_request_on_commit
from apps.scheduler.services.common import node_check
from apps.scheduler.snapshot import default_pool
from apps.system.errors import ApplicationError, ConflictError

Intent = Job.Intent


def _schedule(node: Node) -> NodeSchedule:
    schedule = NodeSchedule.objects.select_for_update().filter(node=node).first()
    if schedule is None:
        schedule = NodeSchedule.objects.create(node=node, pool=default_pool())
    return schedule


def _requeue_on(node: Node, *, reason: str, gpu: int | None = None) -> list[Any]:
    """Stop, with their grace, the running jobs on ``node`` (or on one of its GPUs)."""
    commands = []
    allocations = Allocation.objects.filter(
        node=node, state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
    ).select_related("job")
    job_ids = sorted({a.job_id for a in allocations if gpu is None or gpu in a.gpus})
    for job in Job.objects.select_for_update().filter(pk__in=job_ids, state__in=RUNNING_STATES):
        commands += job_stop(job, intent=Intent.REQUEUE, kind="requeued", reason=reason)
    commands_send(commands)
    jobs_changed(job_ids, [])
    return job_ids


@transaction.atomic
def node_cordon(*, actor: User, node: Node, reason: str = "", drain: bool = False) -> NodeSchedule:
    """Stop placing jobs on a node; with ``drain``, also requeue the jobs running there."""
    node_check(actor, node)
    schedule = _schedule(node)
    state = NodeSchedule.State.DRAINING if drain else NodeSchedule.State.CORDONED
    verb = "drained" if drain else "cordoned"
    schedule.state = state
    schedule.state_reason = (reason or "").strip()[:200] or f"{verb} by {actor.get_username()}"
    schedule.save()
    requeued: list[int] = []
    if drain:
        requeued = _requeue_on(node, reason=f"node {node.name} drained by {actor.get_username()}")
    audit_record(
        actor=actor,
        action="node.drain" if drain else "node.cordon",
        target=node,
        workspace=node.workspace,
        changes={"reason": schedule.state_reason, "requeued_jobs": requeued},
    )
    jobs_changed([], [schedule.pool_id])
    pass_request_on_commit()
    return schedule


@transaction.atomic
def node_uncordon(*, actor: User, node: Node) -> NodeSchedule:
    """Let a node take jobs again; also ends a hold for flapping."""
    node_check(actor, node)
    schedule = _schedule(node)
    schedule.state = NodeSchedule.State.ACTIVE
    schedule.state_reason = ""
    schedule.held_until = None
    schedule.failures = []
    schedule.save()
    audit_record(actor=actor, action="node.uncordon", target=node, workspace=node.workspace)
    jobs_changed([], [schedule.pool_id])
    pass_request_on_commit()
    return schedule


@transaction.atomic
def node_pool_set(*, actor: User, node: Node, pool: Pool) -> NodeSchedule:
    """Move a node to another pool (platform admins); refused while jobs run on it."""
    platform_admin_require(actor, "move nodes between pools")
    schedule = _schedule(node)
    if schedule.pool_id == pool.pk:
        return schedule
    if Allocation.objects.filter(
        node=node, state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
    ).exists():
        raise ConflictError(f"Jobs run on {node.name}; drain it before moving it.", field="pool")
    before = schedule.pool
    schedule.pool = pool
    schedule.save()
    audit_record(
        actor=actor,
        action="node.pool",
        target=node,
        workspace=node.workspace,
        changes={"pool": [before.name, pool.name]},
    )
    jobs_changed([], [before.pk, pool.pk])
    pass_request_on_commit()
    return schedule


@transaction.atomic
def gpu_take_out(*, actor: User, node: Node, index: int, reason: str = "") -> NodeSchedule:
    """Take one GPU out of scheduling; a job on it is requeued (SIGTERM, grace)."""
    node_check(actor, node)
    if not Gpu.objects.filter(node=node, index=index).exists():
        raise ApplicationError(f"{node.name} has no GPU {index}.", field="index")
    schedule = _schedule(node)
    if index in schedule.gpus_out:
        raise ConflictError(f"GPU {index} of {node.name} is already out.")
    schedule.gpus_out = sorted([*schedule.gpus_out, index])
    schedule.save()
    why = (reason or "").strip()[:200] or f"taken out by {actor.get_username()}"
    requeued = _requeue_on(node, reason=f"GPU {index} of {node.name} {why}", gpu=index)
    audit_record(
        actor=actor,
        action="gpu.take_out",
        target=node,
        workspace=node.workspace,
        changes={"gpu": index, "reason": why, "requeued_jobs": requeued},
    )
    jobs_changed([], [schedule.pool_id])
    pass_request_on_commit()
    return schedule


@transaction.atomic
def gpu_put_back(*, actor: User, node: Node, index: int) -> NodeSchedule:
    """Return a GPU an operator took out to scheduling."""
    node_check(actor, node)
    schedule = _schedule(node)
    if index not in schedule.gpus_out:
        raise ConflictError(f"GPU {index} of {node.name} is not out.", field="index")
    schedule.gpus_out = [i for i in schedule.gpus_out if i != index]
    schedule.save()
    audit_record(
        actor=actor,
        action="gpu.put_back",
        target=node,
        workspace=node.workspace,
        changes={"gpu": index},
    )
    jobs_changed([], [schedule.pool_id])
    pass_request_on_commit()
    return schedule
