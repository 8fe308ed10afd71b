"""Home and the live status page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.system.health import system_status


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("accounts:workspace_list")


@login_required
def status_page(request: HttpRequest) -> HttpResponse:
    """The components' states; the page then follows them over the websocket."""
    status = system_status()
    template = "system/_status_components.html" if request.htmx else "system/status.html"  # type: ignore[attr-defined]
    return render(request, template, {"status": status})
