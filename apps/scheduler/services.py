"""Writes users and operators make: submit and act on jobs, pools, quotas, nodes, GPUs.

Every function is atomic, checks the actor's rights, writes an audit entry and asks for a
scheduling pass once it commits. Commands to agents go out after commit.

Rights: members and workspace admins submit and act on their workspace's jobs (viewers
never); only workspace admins and platform admins use the urgent priority; platform
admins move jobs in the queue and manage pools and quotas; whoever manages a node
(see monitoring) cordons, drains and uncordons it and takes its GPUs out or back.
"""

import re
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Sum
from django.utils import timezone

from apps.accounts.models import Role, User, Workspace
from apps.accounts.selectors import membership_role
from apps.accounts.services import platform_admin_require
from apps.audit.services import audit_record
from apps.monitoring.models import Gpu, Node
from apps.monitoring.selectors import node_can_manage
from apps.scheduler.broadcast import commands_send, jobs_changed
from apps.scheduler.lifecycle import RUNNING_STATES, TERMINAL_STATES, job_stop, note, transition
from apps.scheduler.models import Allocation, Job, NodeSchedule, Pool, Priority, Quota
from apps.scheduler.passes import pass_request_on_commit
from apps.scheduler.selectors import workspace_usage_gpus
from apps.scheduler.snapshot import default_pool
from apps.system.errors import ApplicationError, ConflictError, PermissionDeniedError
from apps.system.validation import text_required

State = Job.State
Intent = Job.Intent

MAX_NODES = 1024
MAX_COMMAND_CHARS = 65_536
MAX_ENV_VARS = 200
MAX_ENV_VALUE_CHARS = 8192
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables the agent and the console set for every job.
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES",)
RESERVED_ENV_PREFIX = "PODIUM_"
POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class JobSpec:
    """What a user asks to run; ``job_submit`` checks every field."""

    name: str
    command: str
    pool: str = ""  # pool name; empty: the default pool
    nodes: int = 1
    gpus_per_node: int = 1
    cpus: float | None = None
    memory_mb: int | None = None
    priority: str = Priority.NORMAL
    max_restarts: int | None = None
    env: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""
    grace_seconds: float | None = None
    max_duration: float | None = None
    hang_timeout: float | None = None


# Rights ------------------------------------------------------------------------------


def _role(actor: User, workspace: Workspace) -> Role | None:
    if actor.is_platform_admin:
        return Role.ADMIN
    return membership_role(user=actor, workspace=workspace)


def _act_check(actor: User, workspace: Workspace, what: str) -> Role:
    role = _role(actor, workspace)
    if role not in (Role.ADMIN, Role.MEMBER):
        raise PermissionDeniedError(f"Viewers cannot {what}.")
    return role


def _node_check(actor: User, node: Node) -> None:
    if not node_can_manage(user=actor, node=node):
        raise PermissionDeniedError("Only an admin who manages this node can change it.")


# Validation --------------------------------------------------------------------------


def _whole(value: Any, name: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApplicationError(f"{name} must be a whole number.", field=name)
    if not low <= value <= high:
        raise ApplicationError(f"{name} must be between {low} and {high}.", field=name)
    return value


def _seconds(value: Any, name: str, *, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApplicationError(f"{name} must be a number of seconds.", field=name)
    if not low <= value <= high:
        raise ApplicationError(f"{name} must be between {low:g} and {high:g} seconds.", field=name)
    return float(value)


def _env(env: Any) -> dict[str, str]:
    if not isinstance(env, dict):
        raise ApplicationError("env must be an object of NAME: value.", field="env")
    if len(env) > MAX_ENV_VARS:
        raise ApplicationError(f"env may hold at most {MAX_ENV_VARS} variables.", field="env")
    clean = {}
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ApplicationError(f"env: {name!r} is not a valid variable name.", field="env")
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIX):
            raise ApplicationError(f"env: {name} is set by Podium itself.", field="env")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ApplicationError(f"env: the value of {name} must be text.", field="env")
        text = str(value)
        if len(text) > MAX_ENV_VALUE_CHARS or "\x00" in text:
            raise ApplicationError(f"env: the value of {name} is too long.", field="env")
        clean[name] = text
    return clean


def _pool_for(name: str) -> Pool:
    if not name:
        return default_pool()
    pool = Pool.objects.filter(name=name).first()
    if pool is None:
        raise ApplicationError(f"There is no pool named {name!r}.", field="pool")
    return pool


def _pool_shape(pool: Pool) -> list[int]:
    """GPU counts of the pool's live nodes, largest first."""
    counts = (
        Gpu.objects.filter(node__schedule__pool=pool, node__revoked_at__isnull=True, present=True)
        .values("node_id")
        .annotate(n=Count("pk"))
        .values_list("n", flat=True)
    )
    return sorted(counts, reverse=True)


def _fits_pool(pool: Pool, nodes: int, gpus_per_node: int) -> None:
    shape = _pool_shape(pool)
    if not shape:
        raise ApplicationError(
            f"Pool {pool.name} has no nodes with GPUs yet; add nodes before submitting.",
            field="pool",
        )
    if gpus_per_node > shape[0]:
        raise ApplicationError(
            f"No node in pool {pool.name} has {gpus_per_node} GPUs (the largest has {shape[0]}).",
            field="gpus_per_node",
        )
    big_enough = sum(1 for n in shape if n >= gpus_per_node)
    if nodes > big_enough:
        raise ApplicationError(
            f"Pool {pool.name} has {big_enough} node(s) with {gpus_per_node} GPUs; "
            f"the job asks for {nodes}.",
            field="nodes",
        )


def _fits_quota(workspace: Workspace, pool: Pool, gpus: int) -> None:
    quota = Quota.objects.filter(workspace=workspace, pool=pool).first()
    if quota is not None and gpus > quota.maximum:
        raise ApplicationError(
            f"The job needs {gpus} GPUs but workspace {workspace.name} may use at most "
            f"{quota.maximum} in pool {pool.name}.",
            field="gpus_per_node",
        )


def _priority(value: Any, role: Role) -> str:
    if value not in Priority.values:
        allowed = ", ".join(Priority.values)
        raise ApplicationError(f"priority must be one of {allowed}.", field="priority")
    if value == Priority.URGENT and role != Role.ADMIN:
        raise PermissionDeniedError("Only workspace admins may submit urgent jobs.")
    return str(value)


# Jobs --------------------------------------------------------------------------------


@transaction.atomic
def job_submit(*, actor: User, workspace: Workspace, spec: JobSpec) -> Job:
    """Queue a job in ``workspace``; it runs when the scheduler places it."""
    role = _act_check(actor, workspace, "submit jobs")
    name = text_required(spec.name, field="name", max_length=128)
    command = text_required(spec.command, field="command", max_length=MAX_COMMAND_CHARS)
    nodes = _whole(spec.nodes, "nodes", low=1, high=MAX_NODES)
    gpus_per_node = _whole(spec.gpus_per_node, "gpus_per_node", low=1, high=64)
    pool = _pool_for(spec.pool)
    _fits_pool(pool, nodes, gpus_per_node)
    _fits_quota(workspace, pool, nodes * gpus_per_node)
    max_restarts = settings.PODIUM["JOB_MAX_RESTARTS"]
    if spec.max_restarts is not None:
        max_restarts = _whole(spec.max_restarts, "max_restarts", low=0, high=100)
    grace = _seconds(spec.grace_seconds, "grace_seconds", low=0, high=3600)
    workdir = (spec.workdir or "").strip()
    if workdir and (not workdir.startswith("/") or "\x00" in workdir or len(workdir) > 1024):
        raise ApplicationError("workdir must be an absolute path on the node.", field="workdir")
    if spec.cpus is not None and (
        isinstance(spec.cpus, bool) or not isinstance(spec.cpus, int | float) or spec.cpus <= 0
    ):
        raise ApplicationError("cpus must be a positive number.", field="cpus")
    if spec.memory_mb is not None:
        _whole(spec.memory_mb, "memory_mb", low=1, high=64 * 1024 * 1024)
    job = Job.objects.create(
        workspace=workspace,
        pool=pool,
        name=name,
        command=command,
        env=_env(spec.env),
        workdir=workdir,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        cpus=spec.cpus,
        memory_mb=spec.memory_mb,
        priority=_priority(spec.priority, role),
        queue_order=time.time(),
        max_restarts=max_restarts,
        grace_seconds=grace if grace is not None else settings.PODIUM["JOB_GRACE_SECONDS"],
        max_duration=_seconds(spec.max_duration, "max_duration", low=1, high=365 * 86400),
        hang_timeout=_seconds(spec.hang_timeout, "hang_timeout", low=10, high=30 * 86400),
        submitted_by=actor,
    )
    note(
        job, kind="submitted", reason=f"{nodes} x {gpus_per_node} GPUs in {pool.name}", actor=actor
    )
    audit_record(
        actor=actor,
        action="job.submit",
        target=job,
        workspace=workspace,
        changes={"pool": pool.name, "nodes": nodes, "gpus_per_node": gpus_per_node},
    )
    jobs_changed([job.pk], [pool.pk])
    pass_request_on_commit()
    return job


def _locked(job: Job) -> Job:
    return Job.objects.select_for_update().select_related("workspace", "pool").get(pk=job.pk)


def _after(actor: User, job: Job, action: str, **changes: Any) -> Job:
    audit_record(actor=actor, action=action, target=job, workspace=job.workspace, changes=changes)
    jobs_changed([job.pk], [job.pool_id])
    pass_request_on_commit()
    return job


@transaction.atomic
def job_cancel(*, actor: User, job: Job) -> Job:
    """Cancel a job: at once if it waits, after its processes exit (SIGTERM, grace) if it runs."""
    job = _locked(job)
    _act_check(actor, job.workspace, "cancel jobs")
    reason = f"cancelled by {actor.get_username()}"
    if job.state in TERMINAL_STATES:
        raise ConflictError(f"The job already {job.state}.")
    if job.state == State.STOPPING and job.intent == Intent.CANCEL:
        raise ConflictError("The job is already being cancelled.")
    if job.state in (State.PENDING, State.HELD):
        transition(job, State.CANCELLED, kind="cancelled", reason=reason, actor=actor)
        job.finished_at = timezone.now()
        job.save()
    elif job.state == State.PREEMPTING:
        job.intent = Intent.CANCEL
        transition(job, State.STOPPING, kind="cancelling", reason=reason, actor=actor)
        job.save()
    else:
        commands_send(
            job_stop(job, intent=Intent.CANCEL, kind="cancelling", reason=reason, actor=actor)
        )
    return _after(actor, job, "job.cancel")


@transaction.atomic
def job_requeue(*, actor: User, job: Job) -> Job:
    """Put a job back in the queue: a running one stops first (SIGTERM, grace); a finished
    one runs again with its restarts reset."""
    job = _locked(job)
    _act_check(actor, job.workspace, "requeue jobs")
    reason = f"requeued by {actor.get_username()}"
    if job.state in RUNNING_STATES:
        commands_send(
            job_stop(job, intent=Intent.REQUEUE, kind="requeued", reason=reason, actor=actor)
        )
    elif job.state in TERMINAL_STATES or job.state == State.HELD:
        job.restarts = 0
        job.finished_at = None
        job.exit_code = None
        transition(job, State.PENDING, kind="requeued", reason=reason, actor=actor)
        job.save()
    else:
        raise ConflictError(f"A {job.state} job cannot be requeued.")
    return _after(actor, job, "job.requeue")


@transaction.atomic
def job_hold(*, actor: User, job: Job) -> Job:
    """Keep a job out of scheduling; a running one stops first and is then held."""
    job = _locked(job)
    _act_check(actor, job.workspace, "hold jobs")
    reason = f"held by {actor.get_username()}"
    if job.state == State.PENDING:
        transition(job, State.HELD, kind="held", reason=reason, actor=actor)
        job.save()
    elif job.state in RUNNING_STATES:
        commands_send(job_stop(job, intent=Intent.HOLD, kind="holding", reason=reason, actor=actor))
    else:
        raise ConflictError(f"A {job.state} job cannot be held.")
    return _after(actor, job, "job.hold")


@transaction.atomic
def job_release(*, actor: User, job: Job) -> Job:
    """Let a held job be scheduled again."""
    job = _locked(job)
    _act_check(actor, job.workspace, "release jobs")
    if job.state != State.HELD:
        raise ConflictError("Only a held job can be released.")
    transition(
        job,
        State.PENDING,
        kind="released",
        reason=f"released by {actor.get_username()}",
        actor=actor,
    )
    job.save()
    return _after(actor, job, "job.release")


@transaction.atomic
def job_priority_set(*, actor: User, job: Job, priority: str) -> Job:
    """Change the priority class of a job that has not finished."""
    job = _locked(job)
    role = _act_check(actor, job.workspace, "change priorities")
    priority = _priority(priority, role)
    if job.state in TERMINAL_STATES:
        raise ConflictError(f"The job already {job.state}.")
    before, job.priority = job.priority, priority
    job.save(update_fields=["priority"])
    note(job, kind="priority", reason=f"priority {before} → {priority}", actor=actor)
    return _after(actor, job, "job.priority", priority=[before, priority])


@transaction.atomic
def job_move(*, actor: User, job: Job, before: Job | None = None, position: str = "") -> Job:
    """Move a waiting job in its pool's queue: to the ``top``, the ``bottom``, or just
    before another waiting job (platform admins)."""
    platform_admin_require(actor, "move jobs in the queue")
    job = _locked(job)
    if job.state not in (State.PENDING, State.HELD):
        raise ConflictError("Only waiting jobs can be moved in the queue.")
    waiting = Job.objects.filter(pool=job.pool, state__in=[State.PENDING, State.HELD]).exclude(
        pk=job.pk
    )
    if before is not None:
        if before.pool_id != job.pool_id or before.state not in (State.PENDING, State.HELD):
            raise ApplicationError("before must be a waiting job of the same pool.", field="before")
        previous = waiting.filter(queue_order__lt=before.queue_order).aggregate(
            m=Max("queue_order")
        )["m"]
        low = previous if previous is not None else before.queue_order - 2.0
        order = (low + before.queue_order) / 2
        where = f"before job {before.pk}"
    elif position == "top":
        first = waiting.aggregate(m=Min("queue_order"))["m"]
        order, where = (first - 1.0 if first is not None else job.queue_order), "to the top"
    elif position == "bottom":
        last = waiting.aggregate(m=Max("queue_order"))["m"]
        order, where = (last + 1.0 if last is not None else job.queue_order), "to the bottom"
    else:
        raise ApplicationError(
            "Say where: position top or bottom, or before a job.", field="position"
        )
    job.queue_order = order
    job.save(update_fields=["queue_order"])
    note(job, kind="moved", reason=f"moved {where} of the queue", actor=actor)
    return _after(actor, job, "job.move", where=where)


# Pools and quotas --------------------------------------------------------------------


def _pool_name(name: str) -> str:
    name = (name or "").strip()
    if not POOL_NAME.match(name):
        raise ApplicationError(
            "name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            field="name",
        )
    return name


@transaction.atomic
def pool_create(*, actor: User, name: str, description: str = "") -> Pool:
    """Create a pool (platform admins)."""
    platform_admin_require(actor, "create pools")
    name = _pool_name(name)
    if Pool.objects.filter(name=name).exists():
        raise ConflictError(f"A pool named {name} already exists.", field="name")
    pool = Pool.objects.create(name=name, description=(description or "").strip()[:200])
    audit_record(actor=actor, action="pool.create", target=pool)
    return pool


@transaction.atomic
def pool_update(
    *,
    actor: User,
    pool: Pool,
    name: str | None = None,
    description: str | None = None,
    is_default: bool | None = None,
) -> Pool:
    """Rename a pool, change its description, or make it the pool new nodes join."""
    platform_admin_require(actor, "change pools")
    pool = Pool.objects.select_for_update().get(pk=pool.pk)
    changes: dict[str, Any] = {}
    if name is not None and name != pool.name:
        name = _pool_name(name)
        if Pool.objects.filter(name=name).exclude(pk=pool.pk).exists():
            raise ConflictError(f"A pool named {name} already exists.", field="name")
        changes["name"] = [pool.name, name]
        pool.name = name
    if description is not None:
        pool.description = description.strip()[:200]
    if is_default and not pool.is_default:
        Pool.objects.filter(is_default=True).update(is_default=False)
        pool.is_default = True
        changes["is_default"] = True
    pool.save()
    audit_record(actor=actor, action="pool.update", target=pool, changes=changes)
    return pool


@transaction.atomic
def pool_delete(*, actor: User, pool: Pool) -> None:
    """Delete an empty pool: no nodes, no unfinished jobs."""
    platform_admin_require(actor, "delete pools")
    if pool.is_default:
        raise ConflictError("The default pool cannot be deleted; make another the default first.")
    if NodeSchedule.objects.filter(pool=pool, node__revoked_at__isnull=True).exists():
        raise ConflictError(f"Pool {pool.name} still has nodes; move them first.")
    if Job.objects.filter(pool=pool).exclude(state__in=TERMINAL_STATES).exists():
        raise ConflictError(f"Pool {pool.name} still has unfinished jobs.")
    audit_record(actor=actor, action="pool.delete", target=pool)
    Job.objects.filter(pool=pool).delete()
    NodeSchedule.objects.filter(pool=pool).delete()
    pool.delete()


def _pool_gpus(pool: Pool) -> int:
    return sum(_pool_shape(pool))


@transaction.atomic
def quota_set(
    *,
    actor: User,
    workspace: Workspace,
    pool: Pool,
    guaranteed: int,
    maximum: int,
    weight: float = 1.0,
) -> Quota:
    """Set what ``workspace`` may use of ``pool`` (platform admins)."""
    platform_admin_require(actor, "set quotas")
    guaranteed = _whole(guaranteed, "guaranteed", low=0, high=1_000_000)
    maximum = _whole(maximum, "maximum", low=0, high=1_000_000)
    if maximum < guaranteed:
        raise ApplicationError("maximum cannot be below guaranteed.", field="maximum")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1000:
        raise ApplicationError("weight must be a number above 0 (at most 1000).", field="weight")
    used = workspace_usage_gpus(workspace_id=workspace.pk, pool_id=pool.pk)
    if maximum < used:
        raise ApplicationError(
            f"Workspace {workspace.name} uses {used} GPUs in pool {pool.name} right now; the "
            "maximum cannot be below that. Stop or wait for jobs first.",
            field="maximum",
        )
    others = (
        Quota.objects.filter(pool=pool)
        .exclude(workspace=workspace)
        .aggregate(s=Sum("guaranteed"))["s"]
        or 0
    )
    capacity = _pool_gpus(pool)
    if guaranteed and others + guaranteed > capacity:
        raise ApplicationError(
            f"Guarantees in pool {pool.name} would total {others + guaranteed} GPUs, more than "
            f"its {capacity}.",
            field="guaranteed",
        )
    quota = Quota.objects.select_for_update().filter(workspace=workspace, pool=pool).first()
    before = None if quota is None else [quota.guaranteed, quota.maximum, quota.weight]
    if quota is None:
        quota = Quota(workspace=workspace, pool=pool)
    quota.guaranteed, quota.maximum, quota.weight = guaranteed, maximum, float(weight)
    try:
        with transaction.atomic():
            quota.save()
    except IntegrityError:
        raise ConflictError("The quota changed meanwhile; try again.") from None
    audit_record(
        actor=actor,
        action="quota.set",
        target=quota,
        workspace=workspace,
        changes={"pool": pool.name, "before": before, "after": [guaranteed, maximum, weight]},
    )
    jobs_changed([], [pool.pk])
    pass_request_on_commit()
    return quota


@transaction.atomic
def quota_delete(*, actor: User, quota: Quota) -> None:
    """Remove a quota: the workspace only borrows idle GPUs in that pool from now on."""
    platform_admin_require(actor, "delete quotas")
    audit_record(
        actor=actor,
        action="quota.delete",
        target=quota,
        workspace=quota.workspace,
        changes={"pool": quota.pool.name},
    )
    pool_id = quota.pool_id
    quota.delete()
    jobs_changed([], [pool_id])
    pass_request_on_commit()


# Nodes and GPUs ----------------------------------------------------------------------


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
    _node_check(actor, node)
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
    _node_check(actor, node)
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
    _node_check(actor, node)
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
    _node_check(actor, node)
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
