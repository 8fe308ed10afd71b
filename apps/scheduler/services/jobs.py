"""Submitting jobs and acting on them: cancel, requeue, hold, release, priority, queue place."""

import re
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from apps.accounts.models import Role, User, Workspace
from apps.accounts.services import platform_admin_require
from apps.audit.services import audit_record
from apps.monitoring.models import Node
from apps.scheduler.broadcast import commands_send, jobs_changed
from apps.scheduler.launch import LAUNCH_ENV, submit_hooks_run, torchrun_script_check
from apps.scheduler.lifecycle import RUNNING_STATES, TERMINAL_STATES, job_stop, note, transition
from apps.scheduler.models import Job, Pool, Priority, Quota
from apps.scheduler.passes import pass_request_on_commit
from apps.scheduler.services.common import act_check, pool_shape, seconds_value, whole_number
from apps.scheduler.snapshot import default_pool, node_capacity
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
RESERVED_ENV = (*LAUNCH_ENV, "RANK", "LOCAL_RANK")
RESERVED_ENV_PREFIX = "PODIUM_"


@dataclass
class JobSpec:
    """What a user asks to run; ``job_submit`` checks every field."""

    name: str
    command: str
    kind: str = Job.Kind.COMMAND
    procs_per_node: int | None = None
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
    resume: bool = True
    checkpoint_keep: int | None = None
    datasets: list[str] = field(default_factory=list)  # "name" or "name@version"


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


def _fits_pool(pool: Pool, nodes: int, gpus_per_node: int) -> None:
    shape = pool_shape(pool)
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


def _fits_nodes(pool: Pool, *, cpus: float | None, memory_mb: int | None) -> None:
    """Refuse CPU or memory requests that no node of the pool could ever meet."""
    if cpus is None and memory_mb is None:
        return
    facts = Node.objects.filter(schedule__pool=pool, revoked_at__isnull=True).values_list(
        "facts", flat=True
    )
    capacities = [node_capacity(f or {}) for f in facts]
    most_cpus = max((c for c, _ in capacities if c is not None), default=None)
    most_memory = max((m for _, m in capacities if m is not None), default=None)
    if cpus is not None and most_cpus is not None and cpus > most_cpus:
        raise ApplicationError(
            f"No node in pool {pool.name} has {cpus:g} CPU cores (the largest has {most_cpus:g}).",
            field="cpus",
        )
    if memory_mb is not None and most_memory is not None and memory_mb > most_memory:
        raise ApplicationError(
            f"No node in pool {pool.name} has {memory_mb} MB of memory "
            f"(the largest has {most_memory}).",
            field="memory_mb",
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


@transaction.atomic
def job_submit(*, actor: User, workspace: Workspace, spec: JobSpec) -> Job:
    """Queue a job in ``workspace``; it runs when the scheduler places it."""
    role = act_check(actor, workspace, "submit jobs")
    name = text_required(spec.name, field="name", max_length=128)
    command = text_required(spec.command, field="command", max_length=MAX_COMMAND_CHARS)
    if spec.kind not in Job.Kind.values:
        raise ApplicationError("kind must be command or torchrun.", field="kind")
    if spec.kind == Job.Kind.TORCHRUN and (problem := torchrun_script_check(command)):
        raise ApplicationError(problem, field="command")
    procs = None
    if spec.procs_per_node is not None:
        procs = whole_number(spec.procs_per_node, "procs_per_node", low=1, high=256)
    if not isinstance(spec.resume, bool):
        raise ApplicationError("resume must be true or false.", field="resume")
    keep = None
    if spec.checkpoint_keep is not None:
        keep = whole_number(spec.checkpoint_keep, "checkpoint_keep", low=1, high=1000)
    nodes = whole_number(spec.nodes, "nodes", low=1, high=MAX_NODES)
    gpus_per_node = whole_number(spec.gpus_per_node, "gpus_per_node", low=1, high=64)
    pool = _pool_for(spec.pool)
    _fits_pool(pool, nodes, gpus_per_node)
    _fits_quota(workspace, pool, nodes * gpus_per_node)
    max_restarts = settings.PODIUM["JOB_MAX_RESTARTS"]
    if spec.max_restarts is not None:
        max_restarts = whole_number(spec.max_restarts, "max_restarts", low=0, high=100)
    grace = seconds_value(spec.grace_seconds, "grace_seconds", low=0, high=3600)
    workdir = (spec.workdir or "").strip()
    if workdir and (not workdir.startswith("/") or "\x00" in workdir or len(workdir) > 1024):
        raise ApplicationError("workdir must be an absolute path on the node.", field="workdir")
    if spec.cpus is not None and (
        isinstance(spec.cpus, bool) or not isinstance(spec.cpus, int | float) or spec.cpus <= 0
    ):
        raise ApplicationError("cpus must be a positive number.", field="cpus")
    if spec.memory_mb is not None:
        whole_number(spec.memory_mb, "memory_mb", low=1, high=64 * 1024 * 1024)
    _fits_nodes(pool, cpus=spec.cpus, memory_mb=spec.memory_mb)
    job = Job.objects.create(
        workspace=workspace,
        pool=pool,
        name=name,
        kind=spec.kind,
        command=command,
        procs_per_node=procs,
        resume=spec.resume,
        checkpoint_keep=keep,
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
        max_duration=seconds_value(spec.max_duration, "max_duration", low=1, high=365 * 86400),
        hang_timeout=seconds_value(spec.hang_timeout, "hang_timeout", low=10, high=30 * 86400),
        submitted_by=actor,
    )
    submit_hooks_run(job, spec, actor)
    note(
        job, kind="submitted", reason=f"{nodes} x {gpus_per_node} GPUs in {pool.name}", actor=actor
    )
    audit_record(
        actor=actor,
        action="job.submit",
        target=job,
        workspace=workspace,
        changes={
            "pool": pool.name,
            "kind": job.kind,
            "nodes": nodes,
            "gpus_per_node": gpus_per_node,
        },
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
    act_check(actor, job.workspace, "cancel jobs")
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
    act_check(actor, job.workspace, "requeue jobs")
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
    act_check(actor, job.workspace, "hold jobs")
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
    act_check(actor, job.workspace, "release jobs")
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
    role = act_check(actor, job.workspace, "change priorities")
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
