"""Pages: fleet overview, nodes, GPU history, events, alerts and join tokens.

Views parse a form, call a selector or service, and render the page or, for htmx, the
named partial of the same template. A service's ApplicationError becomes a form error
or a message; refusals reach the 403/404 pages.
"""

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.models import Role
from apps.accounts.selectors import User, workspace_get, workspace_ids_administered, workspace_list
from apps.monitoring import charts, selectors, services
from apps.monitoring.forms import (
    SHARED,
    AlertChannelForm,
    EventFilterForm,
    FaultForm,
    JoinTokenForm,
    NodeFilterForm,
)
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

HEATMAP_METRICS = [
    ("util", "Utilization"),
    ("mem", "Memory"),
    ("temp", "Temperature"),
    ("power", "Power"),
    ("health", "Health"),
]
CLOCK_SKEW_WARN_MS = 2000


# Overview ----------------------------------------------------------------------------------


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """Every GPU of the visible fleet as a heatmap with the fleet's totals, then live."""
    fleet = selectors.fleet_overview(user=request_user(request))
    return render(
        request,
        "monitoring/overview.html",
        {"fleet": fleet, "totals": fleet.totals, "metrics": HEATMAP_METRICS},
    )


# Nodes -------------------------------------------------------------------------------------


@login_required
def node_list(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    workspaces = list(workspace_list(user=user).values_list("pk", "name"))
    form = NodeFilterForm(request.GET or None, workspaces=workspaces)
    filters = selectors.NodeFilter()
    if form.is_valid():
        data = form.cleaned_data
        workspace = data["workspace"]
        filters = selectors.NodeFilter(
            state=data["state"] or None,
            health=data["health"] or None,
            shared=workspace == SHARED,
            workspace_id=int(workspace) if workspace and workspace != SHARED else None,
            search=data["search"] or None,
        )
    context = {
        "form": form,
        "page": page_of(request, selectors.node_list(user=user, filters=filters)),
        "query": query_without_page(request),
    }
    template = "monitoring/_nodes.html" if is_htmx(request) else "monitoring/node_list.html"
    return render(request, template, context)


def _node_context(request: HttpRequest, node_id: int) -> dict[str, Any]:
    user = request_user(request)
    node = selectors.node_get(user=user, node_id=node_id)
    role = selectors.node_role(user=user, node=node)
    can_acknowledge = role in {Role.ADMIN, Role.MEMBER}
    events = list(
        selectors.event_list(
            user=user, filters=selectors.EventFilter(node_id=node.pk, status="open")
        )[:100]
    )
    for event in events:
        event.can_ack = can_acknowledge  # type: ignore[attr-defined]
    return {
        "node": node,
        "events": events,
        "can_manage": role == Role.ADMIN,
        "can_acknowledge": can_acknowledge,
    }


@never_cache
@login_required
def node_detail(request: HttpRequest, node_id: int) -> HttpResponse:
    """Facts, GPUs, live charts, processes and open events of one node."""
    context = _node_context(request, node_id)
    node = context["node"]
    gpus = selectors.node_gpus(node=node)
    live = selectors.node_live(node_id=node.pk)
    gpu_samples, host_samples = selectors.node_recent(node=node, seconds=charts.LIVE_MAX_POINTS)
    skew = node.clock_skew_ms
    figures = charts.live_figures(
        gpu_indexes=[g.index for g in gpus], gpu_samples=gpu_samples, host_samples=host_samples
    )
    context.update(
        {
            "gpus": [(g, live.gpu_reading(g.index)) for g in gpus],
            "live": live,
            "heartbeat_age": live.heartbeat_age(),
            "skew_s": None if skew is None else skew / 1000,
            "skew_warning": skew is not None and abs(skew) > CLOCK_SKEW_WARN_MS,
            "fault_form": FaultForm(),
            "live_config": {
                "nodeId": node.pk,
                "gpuIndexes": [g.index for g in gpus],
                "maxPoints": charts.LIVE_MAX_POINTS,
                "figures": figures,
                "eventsUrl": reverse("monitoring:node_events", args=[node.pk]),
            },
        }
    )
    return render(request, "monitoring/node_detail.html", context)


@login_required
def node_events(request: HttpRequest, node_id: int) -> HttpResponse:
    """The node's open events, the partial the node page refreshes on a new event."""
    return render(request, "monitoring/_node_events.html", _node_context(request, node_id))


@login_required
@require_POST
def node_revoke(request: HttpRequest, node_id: int) -> HttpResponse:
    user = request_user(request)
    node = services.node_revoke(actor=user, node=selectors.node_get(user=user, node_id=node_id))
    messages.success(request, f"Node {node.name} revoked; its agent was disconnected.")
    return redirect("monitoring:node_detail", node_id=node_id)


@login_required
@require_POST
def node_return(request: HttpRequest, node_id: int) -> HttpResponse:
    user = request_user(request)
    node = selectors.node_get(user=user, node_id=node_id)
    services.node_return_to_service(actor=user, node=node)
    messages.success(request, f"Node {node.name} marked back in service.")
    return redirect("monitoring:node_detail", node_id=node_id)


@login_required
@require_POST
def gpu_return(request: HttpRequest, node_id: int, index: int) -> HttpResponse:
    user = request_user(request)
    gpu = selectors.gpu_get(user=user, node_id=node_id, index=index)
    services.gpu_return_to_service(actor=user, gpu=gpu)
    messages.success(request, f"GPU {index} of {gpu.node.name} marked back in service.")
    return redirect("monitoring:node_detail", node_id=node_id)


@login_required
@require_POST
def fault_inject(request: HttpRequest, node_id: int, index: int) -> HttpResponse:
    """Inject a fault into a simulated GPU; htmx gets the result line, others a redirect."""
    user = request_user(request)
    gpu = selectors.gpu_get(user=user, node_id=node_id, index=index)
    form = FaultForm(request.POST)
    status, text = 200, ""
    try:
        if not form.is_valid():
            field, errors = next(iter(form.errors.items()))
            raise ApplicationError(f"{field}: {' '.join(map(str, errors))}", field=field)
        services.fault_inject(
            actor=user, gpu=gpu, fault=form.cleaned_data["fault"], code=form.cleaned_data["code"]
        )
        text = f"Fault {form.cleaned_data['fault']} sent to GPU {index}."
    except ApplicationError as exc:
        access_error_reraise(exc)
        status, text = exc.status, exc.message
    if is_htmx(request):
        return render(
            request,
            "monitoring/_fault_result.html",
            {"index": index, "ok": status == 200, "text": text},
            status=status,
        )
    (messages.success if status == 200 else messages.error)(request, text)
    return redirect("monitoring:node_detail", node_id=node_id)


# GPU history -------------------------------------------------------------------------------


@login_required
def gpu_history(request: HttpRequest, node_id: int, index: int) -> HttpResponse:
    """One GPU over 15 minutes, an hour (raw), a day (minute rollups) or a week (hour rollups)."""
    user = request_user(request)
    gpu = selectors.gpu_get(user=user, node_id=node_id, index=index)
    chosen = request.GET.get("range") or "1h"
    status, error = 200, None
    try:
        history = selectors.gpu_history(user=user, node_id=node_id, index=index, range=chosen)
    except ApplicationError as exc:
        access_error_reraise(exc)
        status, error, chosen = 400, exc.message, "1h"
        history = selectors.gpu_history(user=user, node_id=node_id, index=index, range=chosen)
    step = history.resolution if history.is_rollup else settings.PODIUM["AGENT_INTERVAL"]
    figures = charts.history_figures(history.points, rollup=history.is_rollup, step=step)
    context = {
        "gpu": gpu,
        "node": gpu.node,
        "history": history,
        "ranges": list(selectors.HISTORY_RANGES),
        "range": chosen,
        "error": error,
        "figures": figures,
        "metrics": list(figures),
    }
    return render(request, "monitoring/gpu_history.html", context, status=status)


# Events ------------------------------------------------------------------------------------


@login_required
def event_list(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    nodes = list(selectors.node_list(user=user).values_list("pk", "name"))
    form = EventFilterForm(
        request.GET or None, nodes=nodes, sources=selectors.event_sources(user=user)
    )
    filters = selectors.EventFilter()
    if form.is_valid():
        data = form.cleaned_data
        filters = selectors.EventFilter(
            node_id=data["node"],
            gpu_index=data["gpu"],
            severity=data["severity"] or None,
            status=data["status"] or None,
            source=data["source"] or None,
            since=data["since"],
        )
    page = page_of(request, selectors.event_list(user=user, filters=filters))
    _mark_acknowledgeable(user, page)
    context = {"form": form, "page": page, "query": query_without_page(request)}
    template = "monitoring/_events.html" if is_htmx(request) else "monitoring/event_list.html"
    return render(request, template, context)


def _mark_acknowledgeable(user: User, events: Any) -> None:
    """Set ``can_ack`` on each event, so buttons show only where acknowledging would work."""
    everywhere, workspace_ids = selectors.event_acknowledge_scope(user=user)
    for event in events:
        event.can_ack = event.resolved_at is None and (
            everywhere or event.node.workspace_id in workspace_ids
        )


@login_required
@require_POST
def event_acknowledge(request: HttpRequest, event_id: int) -> HttpResponse:
    """Acknowledge an event; htmx gets the event's row back, others a redirect."""
    user = request_user(request)
    event = selectors.event_get(user=user, event_id=event_id)
    error = None
    try:
        services.event_acknowledge(actor=user, event=event)
    except ApplicationError as exc:
        access_error_reraise(exc)
        error = exc.message
    if is_htmx(request):
        event = selectors.event_get(user=user, event_id=event_id)
        _mark_acknowledgeable(user, [event])
        return render(
            request,
            "monitoring/_event_row.html",
            {"e": event, "error": error, "show_node": request.POST.get("show_node") != "0"},
            status=409 if error else 200,
        )
    if error:
        messages.error(request, error)
    return redirect_back(request, reverse("monitoring:event_list"))


# Alerts ------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def alert_list(request: HttpRequest) -> HttpResponse:
    """Deliveries of events on visible nodes; for platform admins also the webhooks."""
    user = request_user(request)
    form = AlertChannelForm(request.POST or None) if user.is_platform_admin else None
    status = 200
    if request.method == "POST":
        if form is None:
            raise PermissionDeniedError("Only a platform admin can manage alert channels.")
        if form.is_valid():
            try:
                channel = services.alert_channel_create(actor=user, **form.cleaned_data)
            except ApplicationError as exc:
                form_error(form, exc)
                status = 400
            else:
                messages.success(request, f"Alert channel {channel.name} added.")
                return redirect("monitoring:alert_list")
        else:
            status = 400
    active = selectors.alert_active_list(user=user)
    _mark_acknowledgeable(user, active)
    context = {
        "form": form,
        "active": active,
        "channels": selectors.alert_channel_list(user=user) if user.is_platform_admin else None,
        "page": page_of(request, selectors.delivery_list(user=user)),
        "query": "",
    }
    return render(request, "monitoring/alert_list.html", context, status=status)


@login_required
@require_POST
def alert_channel_action(request: HttpRequest, channel_id: int) -> HttpResponse:
    """Enable, disable, test or delete a webhook (platform admins)."""
    user = request_user(request)
    channel = selectors.alert_channel_get(user=user, channel_id=channel_id)
    action = request.POST.get("action")
    try:
        if action in {"enable", "disable"}:
            services.alert_channel_update(actor=user, channel=channel, enabled=action == "enable")
            messages.success(request, f"{channel.name} {action}d.")
        elif action == "test":
            delivery = services.alert_channel_test(actor=user, channel=channel)
            messages.success(
                request, f"Test delivery of event {delivery.event_id} queued to {channel.name}."
            )
        elif action == "delete":
            services.alert_channel_delete(actor=user, channel=channel)
            messages.success(request, f"{channel.name} deleted.")
        else:
            raise ApplicationError("Unknown action.", field="action")
    except ApplicationError as exc:
        access_error_reraise(exc)
        messages.error(request, exc.message)
    return redirect("monitoring:alert_list")


# Join tokens -------------------------------------------------------------------------------


def _join_token_form(user: User, data: Any = None) -> JoinTokenForm:
    administered = workspace_list(user=user)
    if not user.is_platform_admin:
        administered = administered.filter(pk__in=workspace_ids_administered(user=user))
    return JoinTokenForm(
        data,
        workspaces=list(administered.values_list("pk", "name")),
        shared=user.is_platform_admin,
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def join_tokens(request: HttpRequest) -> HttpResponse:
    """Join tokens and the form to make one; the new secret is shown once, with the command
    to run on a node. The form posts with htmx, so a reload shows it no more."""
    user = request_user(request)
    if not selectors.join_token_can_manage(user=user):
        raise PermissionDeniedError("Only platform admins and workspace admins manage join tokens.")
    form = _join_token_form(user, request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                workspace = None
                if data["workspace"] != SHARED:
                    workspace = workspace_get(user=user, workspace_id=int(data["workspace"]))
                token, plaintext = services.join_token_create(
                    actor=user,
                    name=data["name"],
                    workspace=workspace,
                    expires_in_hours=data["expires_in_hours"],
                    max_uses=data["max_uses"],
                )
            except ApplicationError as exc:
                form_error(form, exc)
                status = 400
            else:
                command = selectors.join_command(
                    server=request.build_absolute_uri("/"), token=plaintext
                )
                created = {"token": token, "plaintext": plaintext, "command": command}
                form = _join_token_form(user)
        else:
            status = 400
    context = {
        "form": form,
        "created": created,
        "page": page_of(request, selectors.join_token_list(user=user)),
        "query": "",
        "now": timezone.now(),
    }
    template = "monitoring/_join_tokens.html" if is_htmx(request) else "monitoring/join_tokens.html"
    return render(request, template, context, status=status)


@login_required
@require_POST
def join_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    user = request_user(request)
    token = selectors.join_token_get(user=user, token_id=token_id)
    services.join_token_revoke(actor=user, token=token)
    messages.success(request, f"Join token {token.name} revoked.")
    return redirect("monitoring:join_tokens")
