"""Jobs: the list, the submit form, a job's page with its timeline, output and actions."""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.models import Role
from apps.accounts.selectors import (
    User,
    membership_role,
    workspace_get,
    workspace_list,
    workspaces_acting,
)
from apps.scheduler import selectors, services
from apps.scheduler.forms import (
    JobFilterForm,
    JobForm,
)
from apps.scheduler.lifecycle import RUNNING_STATES, TERMINAL_STATES
from apps.scheduler.models import Job, Priority
from apps.system.errors import ApplicationError
from apps.system.pages import (
    access_error_reraise,
    form_error,
    is_htmx,
    page_of,
    query_without_page,
    request_user,
)

JOB_ACTIONS: dict[str, Callable[..., Job]] = {
    "cancel": services.job_cancel,
    "requeue": services.job_requeue,
    "hold": services.job_hold,
    "release": services.job_release,
}


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
        (w.pk, w.name) for w in workspaces_acting(user=user, workspaces=workspace_list(user=user))
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
                kind=data["kind"],
                procs_per_node=data["procs_per_node"],
                resume=data["resume"],
                checkpoint_keep=data["checkpoint_keep"],
                datasets=data["datasets"],
                pool=data["pool"] or "",
                nodes=data["nodes"],
                gpus_per_node=data["gpus_per_node"],
                cpus=data["cpus"],
                memory_mb=data["memory_mb"],
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
    """A job's state, ranks and timeline, its actions, and what the layers above show of
    it (training: metrics, logs, checkpoints), live."""
    context = _job_context(request, job_id)
    context["live_config"] = {"jobId": context["job"].pk}
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
