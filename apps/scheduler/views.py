"""Pages: the queue of every pool, jobs (list, submit, detail with live output), pools with
their usage, quotas and nodes, and the scheduling block of a node's page.

Views parse a form, call a selector or service, and render the page or, for htmx, the
named partial of the same template. A service's ApplicationError becomes a form error
or a message; refusals reach the 403/404 pages.
"""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.models import Role
from apps.accounts.selectors import User, membership_role, workspace_get, workspace_list
from apps.monitoring import selectors as monitoring_selectors
from apps.monitoring.models import Node
from apps.scheduler import selectors, services
from apps.scheduler.forms import (
    JobFilterForm,
    JobForm,
    NodePoolForm,
    PoolForm,
    QuotaForm,
    ReasonForm,
)
from apps.scheduler.lifecycle import HOLDING_STATES, RUNNING_STATES, TERMINAL_STATES
from apps.scheduler.models import Job, Pool, Priority
from apps.system.errors import ApplicationError, PermissionDeniedError
from apps.system.pages import (
    access_error_reraise,
    form_error,
    is_htmx,
    page_of,
    query_without_page,
    redirect_back,
    request_user,
)

# Running jobs listed per pool on the queue page.
RUNNING_SHOWN = 100
# Lines of output the job page keeps; older ones scroll away.
OUTPUT_LINES = 500

JOB_ACTIONS: dict[str, Callable[..., Job]] = {
    "cancel": services.job_cancel,
    "requeue": services.job_requeue,
    "hold": services.job_hold,
    "release": services.job_release,
}


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
    jobs, info = selectors.pool_queue(user=user, pool=pool)
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
        "running": _running(user, pool),
        "now": timezone.now(),
    }


# Queue -------------------------------------------------------------------------------------


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


# Jobs --------------------------------------------------------------------------------------


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """The jobs of the user's workspaces, newest first, filtered."""
    user = request_user(request)
    form = JobFilterForm(
        request.GET or None,
        workspaces=list(workspace_list(user=user).values_list("pk", "name")),
        pools=list(selectors.pool_list().values_list("pk", "name")),
    )
    filters = selectors.JobFilter()
    if form.is_valid():
        data = form.cleaned_data
        filters = selectors.JobFilter(
            workspace_id=data["workspace"],
            pool_id=data["pool"],
            states=(data["state"],) if data["state"] else (),
            q=data["q"].strip(),
        )
    page = page_of(request, selectors.job_list(user=user, filters=filters))
    jobs = list(page)
    allocations = selectors.allocations_current(jobs)
    info = selectors.queue_info([j.pk for j in jobs if j.state == Job.State.PENDING])
    context = {
        "form": form,
        "page": page,
        "rows": [(j, allocations.get(j.pk, []), info.get(j.pk)) for j in jobs],
        "query": query_without_page(request),
    }
    template = "scheduler/_jobs.html" if is_htmx(request) else "scheduler/job_list.html"
    return render(request, template, context)


def _submit_workspaces(user: User) -> list[tuple[int, str]]:
    """Workspaces where ``user`` may submit jobs."""
    return [
        (w.pk, w.name)
        for w in workspace_list(user=user)
        if user.is_platform_admin or w.my_role in selectors.ACTING_ROLES  # type: ignore[attr-defined]
    ]


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest) -> HttpResponse:
    """Submit a job; errors are shown on the fields they concern."""
    user = request_user(request)
    workspaces = _submit_workspaces(user)
    pools = list(selectors.pool_list().values_list("name", flat=True))
    initial = {"workspace": request.GET.get("workspace"), "pool": request.GET.get("pool")}
    form = JobForm(request.POST or None, initial=initial, workspaces=workspaces, pools=pools)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            spec = services.JobSpec(
                name=data["name"],
                command=data["command"],
                pool=data["pool"] or "",
                nodes=data["nodes"],
                gpus_per_node=data["gpus_per_node"],
                priority=data["priority"],
                max_restarts=data["max_restarts"],
                env=data["env"],
                workdir=data["workdir"] or "",
                grace_seconds=data["grace_seconds"],
                max_duration=data["max_duration"],
                hang_timeout=data["hang_timeout"],
            )
            try:
                workspace = workspace_get(user=user, workspace_id=data["workspace"])
                job = services.job_submit(actor=user, workspace=workspace, spec=spec)
            except ApplicationError as exc:
                form_error(form, exc)
                status = 400
            else:
                messages.success(request, f"Job {job.pk} {job.name} queued in {job.pool.name}.")
                return redirect("scheduler:job_detail", job_id=job.pk)
        else:
            status = 400
    context = {"form": form, "can_submit": bool(workspaces)}
    return render(request, "scheduler/job_form.html", context, status=status)


def _job_actions(job: Job, *, can_act: bool, can_move: bool) -> list[tuple[str, str]]:
    """The buttons the job page offers: what the user may do in the job's state."""
    actions = []
    if can_act:
        terminal, running = job.state in TERMINAL_STATES, job.state in RUNNING_STATES
        if job.state == Job.State.HELD:
            actions.append(("release", "Release"))
        if job.state == Job.State.PENDING or running:
            actions.append(("hold", "Hold"))
        if running or terminal or job.state == Job.State.HELD:
            actions.append(("requeue", "Requeue"))
        if not terminal and not (
            job.state == Job.State.STOPPING and job.intent == Job.Intent.CANCEL
        ):
            actions.append(("cancel", "Cancel"))
    if can_move:
        actions += [("top", "Move to top"), ("bottom", "Move to bottom")]
    return actions


def _job_context(request: HttpRequest, job_id: int, error: str | None = None) -> dict[str, Any]:
    user = request_user(request)
    job = selectors.job_get(user=user, job_id=job_id)
    can_act = selectors.job_can_act(user=user, job=job)
    can_move = user.is_platform_admin and job.state in (Job.State.PENDING, Job.State.HELD)
    priorities = []
    if can_act and job.state not in TERMINAL_STATES:
        role = membership_role(user=user, workspace=job.workspace)
        priorities = [
            (value, label)
            for value, label in Priority.choices
            if value != Priority.URGENT or role == Role.ADMIN or value == job.priority
        ]
    queue_place = None
    if job.state == Job.State.PENDING:
        queue_place = selectors.queue_info([job.pk]).get(job.pk)
    return {
        "job": job,
        "allocations": selectors.job_allocations(job=job),
        "events": selectors.job_events(job=job),
        "queue_place": queue_place,
        "actions": _job_actions(job, can_act=can_act, can_move=can_move),
        "priorities": priorities,
        "error": error,
    }


@never_cache
@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """A job's state, ranks and timeline, its actions, and its output live."""
    context = _job_context(request, job_id)
    output = [
        (a.rank, line)
        for a in context["allocations"]
        for line in (a.tail or "").splitlines()[-OUTPUT_LINES:]
    ]
    context.update(
        {
            "output": output[-OUTPUT_LINES:],
            "live_config": {
                "jobId": context["job"].pk,
                "maxLines": OUTPUT_LINES,
                "showRank": context["job"].nodes > 1,
            },
        }
    )
    return render(request, "scheduler/job_detail.html", context)


@never_cache
@login_required
def job_state(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job's state, ranks, actions and timeline: the partial the page refreshes."""
    return render(request, "scheduler/_job_state.html", _job_context(request, job_id))


@login_required
@require_POST
def job_action(request: HttpRequest, job_id: int) -> HttpResponse:
    """Cancel, requeue, hold, release, reprioritise or move a job; htmx gets the state
    partial back, others a redirect to the job."""
    user = request_user(request)
    job = selectors.job_get(user=user, job_id=job_id)
    action = request.POST.get("action") or ""
    error, done = None, ""
    try:
        if action in JOB_ACTIONS:
            JOB_ACTIONS[action](actor=user, job=job)
            done = {"cancel": "cancelled", "requeue": "requeued", "hold": "held"}.get(
                action, "released"
            )
        elif action == "priority":
            priority = request.POST.get("priority") or ""
            services.job_priority_set(actor=user, job=job, priority=priority)
            done = f"set to {priority} priority"
        elif action in ("top", "bottom"):
            services.job_move(actor=user, job=job, position=action)
            done = f"moved to the {action} of the queue"
        else:
            raise ApplicationError("Unknown action.", field="action")
    except ApplicationError as exc:
        access_error_reraise(exc)
        error = exc.message
    if is_htmx(request):
        context = _job_context(request, job_id, error=error)
        return render(request, "scheduler/_job_state.html", context, status=409 if error else 200)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Job {job.pk} {done}.")
    return redirect("scheduler:job_detail", job_id=job_id)


# Pools -------------------------------------------------------------------------------------


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


# Nodes -------------------------------------------------------------------------------------


def _node_context(request: HttpRequest, node: Node, error: str | None = None) -> dict[str, Any]:
    user = request_user(request)
    schedule = selectors.node_schedule(node=node)
    now = timezone.now()
    gpus_out = set(schedule.gpus_out or []) if schedule else set()
    return {
        "node": node,
        "schedule": schedule,
        "held": bool(schedule and schedule.held_until and schedule.held_until > now),
        "allocations": selectors.node_allocations(user=user, node=node),
        "gpus": [(g, g.index in gpus_out) for g in monitoring_selectors.node_gpus(node=node)],
        "can_manage": monitoring_selectors.node_can_manage(user=user, node=node),
        "reason_form": ReasonForm(),
        "error": error,
    }


@never_cache
@login_required
def node_scheduling(request: HttpRequest, node_id: int) -> HttpResponse:
    """A node's pool, scheduling state, jobs running there and GPUs out: the block the
    monitoring node page loads, with the operator's actions."""
    node = monitoring_selectors.node_get(user=request_user(request), node_id=node_id)
    return render(request, "scheduler/_node_scheduling.html", _node_context(request, node))


def _node_answer(request: HttpRequest, node: Node, error: str | None, done: str) -> HttpResponse:
    if is_htmx(request):
        context = _node_context(request, node, error=error)
        return render(
            request, "scheduler/_node_scheduling.html", context, status=409 if error else 200
        )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    return redirect_back(request, reverse("monitoring:node_detail", args=[node.pk]))


@login_required
@require_POST
def node_action(request: HttpRequest, node_id: int) -> HttpResponse:
    """Cordon, drain or uncordon a node (admins of the node)."""
    user = request_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    action = request.POST.get("action") or ""
    form = ReasonForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    error = None
    try:
        if action in ("cordon", "drain"):
            services.node_cordon(actor=user, node=node, reason=reason, drain=action == "drain")
        elif action == "uncordon":
            services.node_uncordon(actor=user, node=node)
        else:
            raise ApplicationError("Unknown action.", field="action")
    except ApplicationError as exc:
        access_error_reraise(exc)
        error = exc.message
    past = {"cordon": "cordoned", "drain": "drained", "uncordon": "uncordoned"}.get(action, "")
    return _node_answer(request, node, error, f"Node {node.name} {past}.")


@login_required
@require_POST
def gpu_action(request: HttpRequest, node_id: int, index: int) -> HttpResponse:
    """Take a GPU out of scheduling or put it back (admins of the node)."""
    user = request_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    action = request.POST.get("action") or ""
    error = None
    try:
        if action == "take_out":
            services.gpu_take_out(
                actor=user, node=node, index=index, reason=request.POST.get("reason") or ""
            )
        elif action == "put_back":
            services.gpu_put_back(actor=user, node=node, index=index)
        else:
            raise ApplicationError("Unknown action.", field="action")
    except ApplicationError as exc:
        access_error_reraise(exc)
        error = exc.message
    done = "taken out of scheduling" if action == "take_out" else "back in scheduling"
    return _node_answer(request, node, error, f"GPU {index} of {node.name} {done}.")
