"""Pools and quotas (platform admins)."""

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Sum

from apps.accounts.models import User, Workspace
from apps.accounts.services import platform_admin_require
from apps.audit.services import audit_record
from apps.scheduler.broadcast import jobs_changed
from apps.scheduler.lifecycle import TERMINAL_STATES
from apps.scheduler.models import Job, NodeSchedule, Pool, Quota
from apps.scheduler.passes import pass_request_on_commit
from apps.scheduler.selectors import workspace_usage_gpus
from apps.scheduler.services.common import pool_shape, whole_number
from apps.system.errors import ApplicationError, ConflictError

POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
    """Delete an empty pool: no nodes, no unfinished jobs. Its finished jobs go with it;
    the audit entry records how many."""
    platform_admin_require(actor, "delete pools")
    if pool.is_default:
        raise ConflictError("The default pool cannot be deleted; make another the default first.")
    if NodeSchedule.objects.filter(pool=pool, node__revoked_at__isnull=True).exists():
        raise ConflictError(f"Pool {pool.name} still has nodes; move them first.")
    if Job.objects.filter(pool=pool).exclude(state__in=TERMINAL_STATES).exists():
        raise ConflictError(f"Pool {pool.name} still has unfinished jobs.")
    finished = Job.objects.filter(pool=pool).count()
    audit_record(
        actor=actor, action="pool.delete", target=pool, changes={"finished_jobs_deleted": finished}
    )
    Job.objects.filter(pool=pool).delete()
    NodeSchedule.objects.filter(pool=pool).delete()
    pool.delete()


def _pool_gpus(pool: Pool) -> int:
    return sum(pool_shape(pool))


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
    guaranteed = whole_number(guaranteed, "guaranteed", low=0, high=1_000_000)
    maximum = whole_number(maximum, "maximum", low=0, high=1_000_000)
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
