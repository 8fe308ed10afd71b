"""Template context shared by every page."""

from functools import partial

from django.http import HttpRequest

from apps.audit.selectors import audit_user_can_read
from apps.system.navigation import layer_entries


def navigation(request: HttpRequest) -> dict:
    """The layer entries of the top navigation, and whether the audit entry shows."""
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    return {
        "nav_layers": layer_entries() if signed_in else [],
        # Called only by templates that draw the navigation (not by htmx partials).
        "nav_audit": partial(audit_user_can_read, user=user) if signed_in else False,  # type: ignore[arg-type]
    }
