"""A node's scheduling on its monitoring page: pool, state, jobs, cordon and GPUs."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.monitoring import selectors as monitoring_selectors
from apps.monitoring.models import Node
from apps.scheduler import selectors, services
from apps.scheduler.forms import (
    ReasonForm,
)
from apps.system.errors import ApplicationError
from apps.system.pages import (
    access_error_reraise,
    is_htmx,
    redirect_back,
    request_user,
)


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
