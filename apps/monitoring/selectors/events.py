"""Health events of the nodes a user may see."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from apps.accounts.models import Role
from apps.accounts.selectors import User
from apps.monitoring.models import (
    HealthEvent,
)
from apps.monitoring.selectors.nodes import _visible_nodes
from apps.system.errors import ApplicationError, NotFoundError

EVENT_STATUSES = ("open", "unacknowledged", "acknowledged", "resolved")


@dataclass(frozen=True)
class EventFilter:
    """What the event list is narrowed to; empty fields do not filter."""

    node_id: int | None = None
    gpu_index: int | None = None
    severity: str | None = None
    status: str | None = None
    source: str | None = None
    since: datetime | None = None


def event_list(*, user: User, filters: EventFilter | None = None) -> QuerySet[HealthEvent]:
    """Health events of the nodes ``user`` may see, newest first.

    ``status``: "open" (not resolved), "unacknowledged" (open, not acknowledged),
    "acknowledged" (open, acknowledged) or "resolved".
    """
    filters = filters or EventFilter()
    events = HealthEvent.objects.filter(node__in=_visible_nodes(user).values("pk")).select_related(
        "node", "node__workspace", "acknowledged_by", "resolved_by"
    )
    if filters.node_id is not None:
        events = events.filter(node_id=filters.node_id)
    if filters.gpu_index is not None:
        events = events.filter(gpu_index=filters.gpu_index)
    if filters.severity:
        events = events.filter(severity=filters.severity)
    if filters.source:
        events = events.filter(source=filters.source)
    if filters.since is not None:
        events = events.filter(last_at__gte=filters.since)
    if filters.status:
        if filters.status not in EVENT_STATUSES:
            raise ApplicationError(
                f"Status must be one of: {', '.join(EVENT_STATUSES)}.", field="status"
            )
        events = {
            "open": events.filter(resolved_at__isnull=True),
            "unacknowledged": events.filter(resolved_at__isnull=True, acknowledged_at__isnull=True),
            "acknowledged": events.filter(resolved_at__isnull=True, acknowledged_at__isnull=False),
            "resolved": events.filter(resolved_at__isnull=False),
        }[filters.status]
    return events.order_by("-last_at", "-id")


def event_get(*, user: User, event_id: int) -> HealthEvent:
    """One event on a node ``user`` may see, else NotFoundError."""
    try:
        return event_list(user=user).get(pk=event_id)
    except HealthEvent.DoesNotExist:
        raise NotFoundError("Event not found.", field="event_id") from None


def event_acknowledge_scope(*, user: User) -> tuple[bool, set[int]]:
    """Where ``user`` may acknowledge events: everywhere (platform admins), or on the nodes
    of these workspaces (where they are admin or member)."""
    if user.is_platform_admin:
        return True, set()
    roles = [Role.ADMIN, Role.MEMBER]
    memberships = user.memberships.filter(role__in=roles)
    return False, set(memberships.values_list("workspace_id", flat=True))


def event_sources(*, user: User) -> list[str]:
    """The sources events of visible nodes came from, for the filter."""
    events = HealthEvent.objects.filter(node__in=_visible_nodes(user).values("pk"))
    # Without clearing the model's ordering, DISTINCT would also span last_at and id.
    return list(events.order_by("source").values_list("source", flat=True).distinct())
