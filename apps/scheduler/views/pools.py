"""The queue per pool, pools with their usage and quotas (pages)."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.selectors import User, workspace_get, workspace_list
from apps.monitoring import selectors as monitoring_selectors
from apps.scheduler import selectors, services
from apps.scheduler.forms import (
    NodePoolForm,
    PoolForm,
    QuotaForm,
)
from apps.scheduler.lifecycle import HOLDING_STATES
from apps.scheduler.models import Job, Pool
from apps.system.errors import ApplicationError, PermissionDeniedError
from apps.system.pages import (
    form_error,
    request_user,
)

# Running jobs listed per pool on the queue page.
RUNNING_SHOWN = 100


def _running(user: User, pool: Pool) -> list[tuple[Job, list[Any]]]:
    """The pool's jobs holding GPUs that ``user`` may see, each with its ranks."""
    jobs = list(
        selectors.job_list(
            user=user, filters=selectors.JobFilter(pool_id=pool.pk, states=HOLDING_STATES)
        )[:RUNNING_SHOWN]
    )
    allocations = selectors.allocations_current(jobs)
    return [(j, allocations.get(j.pk, [])) for j in jobs]


def _pool_live(user: User, pool: Pool) -> dict[str, Any]:
    """What a pool's live partial shows: capacity, usage bars, the queue, running jobs."""
    usage = selectors.pool_usage(user=user, pool=pool)
    jobs, info, waiting = selectors.pool_queue(user=user, pool=pool)
    # The bars span the schedulable GPUs (or what jobs hold, when GPUs left under them).
    scale = max(usage.gpus, usage.used, 1)
    bars = [
        {
            "row": row,
            "within_pct": 100 * row.within / scale,
            "borrowed_pct": 100 * row.borrowed / scale,
            "guaranteed_pct": min(100.0, 100 * row.guaranteed / scale),
            "maximum_pct": None if row.maximum is None else min(100.0, 100 * row.maximum / scale),
        }
        for row in usage.workspaces
    ]
    return {
        "pool": pool,
        "usage": usage,
        "bars": bars,
        "queue": [(j, info.get(j.pk)) for j in jobs],
        "waiting": waiting,
        "running": _running(user, pool),
        "now": timezone.now(),
    }


@login_required
def queue(request: HttpRequest) -> HttpResponse:
    """Per pool: the waiting jobs in order with why they wait, then the running ones."""
    user = request_user(request)
    pools = list(selectors.pool_list())
    chosen = next((p for p in pools if str(p.pk) == request.GET.get("pool")), None)
    context = {
        "pools": pools,
        "chosen": chosen,
        "sections": [_pool_live(user, pool) for pool in ([chosen] if chosen else pools)],
    }
    return render(request, "scheduler/queue.html", context)


@login_required
def queue_pool(request: HttpRequest, pool_id: int) -> HttpResponse:
    """One pool's section of the queue page, which it refreshes when the pool changes."""
    pool = selectors.pool_get(pool_id=pool_id)
    return render(request, "scheduler/_queue_pool.html", _pool_live(request_user(request), pool))


@login_required
@require_http_methods(["GET", "POST"])
def pool_list(request: HttpRequest) -> HttpResponse:
    """Every pool with its capacity; platform admins also create pools here."""
    user = request_user(request)
    form = PoolForm(request.POST or None) if user.is_platform_admin else None
    status = 200
    if request.method == "POST":
        if form is None:
            raise PermissionDeniedError("Only a platform admin can create pools.")
        if form.is_valid():
            try:
                pool = services.pool_create(actor=user, **form.cleaned_data)
            except ApplicationError as exc:
                form_error(form, exc)
                status = 400
            else:
                messages.success(request, f"Pool {pool.name} created.")
                return redirect("scheduler:pool_detail", pool_id=pool.pk)
        else:
            status = 400
    pools = [(p, selectors.pool_usage(user=user, pool=p)) for p in selectors.pool_list()]
    return render(
        request, "scheduler/pool_list.html", {"pools": pools, "form": form}, status=status
    )


def _pool_forms(user: User, pool: Pool, data: Any = None, which: str = "") -> dict[str, Any]:
    """The admin forms of a pool page; only ``which`` is bound to ``data``."""
    if not user.is_platform_admin:
        return {"quota_form": None, "node_form": None}
    workspaces = list(workspace_list(user=user).values_list("pk", "name"))
    visible = monitoring_selectors.node_list(user=user)
    nodes = [
        (node.pk, f"{node.name} (in {pool_name})" if pool_name else node.name)
        for node, pool_name in selectors.node_pools(visible=visible)
        if pool_name != pool.name
    ]
    return {
        "quota_form": QuotaForm(data if which == "quota" else None, workspaces=workspaces),
        "node_form": NodePoolForm(data if which == "node" else None, nodes=nodes),
    }


def _pool_post(user: User, pool: Pool, form: Form, which: str) -> str:
    """Apply a valid admin form of a pool page; the message to show."""
    data = form.cleaned_data
    if which == "quota":
        workspace = workspace_get(user=user, workspace_id=data["workspace"])
        services.quota_set(
            actor=user,
            workspace=workspace,
            pool=pool,
            guaranteed=data["guaranteed"],
            maximum=data["maximum"],
            weight=data["weight"],
        )
        return f"Quota of {workspace.name} in {pool.name} set."
    node = monitoring_selectors.node_get(user=user, node_id=data["node"])
    services.node_pool_set(actor=user, node=node, pool=pool)
    return f"Node {node.name} moved to {pool.name}."


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def pool_detail(request: HttpRequest, pool_id: int) -> HttpResponse:
    """A pool's capacity and per-workspace usage (live), its queue, its nodes; platform
    admins set quotas and move nodes into it here."""
    user = request_user(request)
    pool = selectors.pool_get(pool_id=pool_id)
    which = request.POST.get("form", "") if request.method == "POST" else ""
    forms = _pool_forms(user, pool, request.POST, which)
    status = 200
    if request.method == "POST":
        form = forms.get(f"{which}_form")
        if form is None:
            raise PermissionDeniedError("Only a platform admin can change pools.")
        if form.is_valid():
            try:
                done = _pool_post(user, pool, form, which)
            except ApplicationError as exc:
                form_error(form, exc)
                status = 400
            else:
                messages.success(request, done)
                return redirect("scheduler:pool_detail", pool_id=pool.pk)
        else:
            status = 400
    visible = monitoring_selectors.node_list(user=user)
    context = {
        **_pool_live(user, pool),
        **forms,
        "nodes": selectors.pool_nodes(visible=visible, pool=pool),
        "quotas": list(selectors.quota_visible(user=user, pool=pool)),
    }
    return render(request, "scheduler/pool_detail.html", context, status=status)


@login_required
def pool_usage(request: HttpRequest, pool_id: int) -> HttpResponse:
    """The pool's capacity, usage bars, queue and running jobs: the live partial."""
    pool = selectors.pool_get(pool_id=pool_id)
    return render(request, "scheduler/_pool_usage.html", _pool_live(request_user(request), pool))


@login_required
@require_POST
def quota_delete(request: HttpRequest, quota_id: int) -> HttpResponse:
    """Remove a quota (platform admins)."""
    user = request_user(request)
    quota = selectors.quota_get_visible(user=user, quota_id=quota_id)
    services.quota_delete(actor=user, quota=quota)
    messages.success(request, f"Quota of {quota.workspace.name} in {quota.pool.name} removed.")
    return redirect("scheduler:pool_detail", pool_id=quota.pool_id)
