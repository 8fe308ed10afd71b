"""Template context shared by every page."""

from django.http import HttpRequest

from apps.audit.selectors import audit_user_can_read
from apps.system.navigation import layer_entries


def navigation(request: HttpRequest) -> dict:
    """The layer entries of the top navigation, and whether the audit entry shows."""
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    return {
        "nav_layers": layer_entries() if signed_in else [],
        "nav_audit": signed_in and audit_user_can_read(user=user),  # type: ignore[arg-type]
    }
