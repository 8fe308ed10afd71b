"""Reads of the audit log, scoped: platform admins see all, workspace admins their workspaces."""

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from apps.accounts.selectors import workspace_ids_administered
from apps.audit.models import AuditEntry

if TYPE_CHECKING:
    from apps.accounts.models import User


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    workspace_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def audit_visible(*, user: "User") -> QuerySet[AuditEntry]:
    """Every entry ``user`` may read."""
    entries = AuditEntry.objects.all()
    if user.is_platform_admin:
        return entries
    return entries.filter(workspace_id__in=workspace_ids_administered(user=user))


def audit_list(*, user: "User", filters: AuditFilter) -> QuerySet[AuditEntry]:
    """Entries ``user`` may read that match ``filters``, newest first."""
    entries = audit_visible(user=user)
    if filters.actor:
        entries = entries.filter(actor_name__iexact=filters.actor)
    if filters.action:
        if filters.action.endswith("."):
            entries = entries.filter(action__startswith=filters.action)
        else:
            entries = entries.filter(action=filters.action)
    if filters.workspace_id is not None:
        entries = entries.filter(workspace_id=filters.workspace_id)
    if filters.since is not None:
        entries = entries.filter(at__gte=filters.since)
    if filters.until is not None:
        entries = entries.filter(at__lt=filters.until)
    return entries.select_related("actor", "workspace")


def audit_actions(*, user: "User") -> list[str]:
    """The distinct action names ``user`` can filter on."""
    return sorted(set(audit_visible(user=user).values_list("action", flat=True).distinct()))


def audit_user_can_read(*, user: "User") -> bool:
    """Whether the audit page has anything for ``user``."""
    return user.is_platform_admin or workspace_ids_administered(user=user).exists()
