"""Writes to the audit log. Every mutating service of every app calls ``audit_record``."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.audit.context import origin_get
from apps.audit.models import AuditEntry

SYSTEM_ACTOR = "system"


def audit_record(
    *,
    actor: Any,
    action: str,
    target: models.Model | None = None,
    workspace: Any = None,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one entry: ``actor`` is a user or None for the system itself.

    ``action`` reads ``<entity>.<verb>`` (``workspace.create``). The client address
    comes from the request being served, if any.
    """
    origin = origin_get()
    return AuditEntry.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else SYSTEM_ACTOR,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        workspace=workspace,
        workspace_name=workspace.name if workspace is not None else "",
        ip=origin.ip,
        user_agent=origin.user_agent,
        changes=changes or {},
    )


def audit_prune(*, now: Any = None) -> int:
    """Delete entries older than the retention period; returns how many went."""
    days = settings.PODIUM["AUDIT_RETENTION_DAYS"]
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = AuditEntry.objects.filter(at__lt=cutoff).delete()
    return deleted
