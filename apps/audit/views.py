"""The audit page: filters and pagination; the table is a partial htmx swaps."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.accounts.selectors import workspace_ids_administered, workspace_list
from apps.audit.forms import AuditFilterForm
from apps.audit.selectors import AuditFilter, audit_actions, audit_list, audit_user_can_read


@login_required
def audit_page(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not audit_user_can_read(user=user):  # type: ignore[arg-type]
        return render(request, "403.html", status=403)
    readable = workspace_list(user=user)  # type: ignore[arg-type]
    if not user.is_platform_admin:  # type: ignore[union-attr]
        readable = readable.filter(pk__in=workspace_ids_administered(user=user))  # type: ignore[arg-type]
    form = AuditFilterForm(request.GET or None, workspaces=list(readable.values_list("pk", "name")))
    filters = AuditFilter()
    if form.is_valid():
        data = form.cleaned_data
        filters = AuditFilter(
            actor=data["actor"] or None,
            action=data["action"] or None,
            workspace_id=data["workspace"],
            since=data["since"],
            until=data["until"],
        )
    entries = audit_list(user=user, filters=filters)  # type: ignore[arg-type]
    page = Paginator(entries, int(settings.PODIUM["PAGE_SIZE"])).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "actions": audit_actions(user=user),  # type: ignore[arg-type]
    }
    template = "audit/_entries.html" if request.htmx else "audit/audit_list.html"  # type: ignore[attr-defined]
    return render(request, template, context)
