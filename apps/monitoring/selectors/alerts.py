"""What needs attention now, the webhooks and their deliveries."""

from django.db.models import Case, Count, Q, QuerySet, When

from apps.accounts.selectors import User
from apps.monitoring.models import (
    AlertChannel,
    AlertDelivery,
    HealthEvent,
)
from apps.monitoring.selectors.events import EventFilter, event_list
from apps.monitoring.selectors.nodes import _visible_nodes
from apps.system.errors import NotFoundError, PermissionDeniedError


def alert_active_list(*, user: User, limit: int = 100) -> list[HealthEvent]:
    """Open warning and critical events of the nodes ``user`` may see: critical first."""
    events = event_list(user=user, filters=EventFilter(status="open")).filter(
        severity__in=[HealthEvent.Severity.WARNING, HealthEvent.Severity.CRITICAL]
    )
    critical_first = Case(When(severity=HealthEvent.Severity.CRITICAL, then=0), default=1)
    return list(events.order_by(critical_first, "-last_at", "-id")[:limit])


def alert_channel_list(*, user: User) -> QuerySet[AlertChannel]:
    """Every alert channel, for platform admins."""
    if not user.is_platform_admin:
        raise PermissionDeniedError("Only a platform admin can manage alert channels.")
    return AlertChannel.objects.annotate(
        delivered=Count("deliveries", filter=Q(deliveries__status=AlertDelivery.Status.DELIVERED)),
        failed=Count("deliveries", filter=Q(deliveries__status=AlertDelivery.Status.FAILED)),
    ).order_by("name", "pk")


def alert_channel_get(*, user: User, channel_id: int) -> AlertChannel:
    """One alert channel, for platform admins."""
    try:
        return alert_channel_list(user=user).get(pk=channel_id)
    except AlertChannel.DoesNotExist:
        raise NotFoundError("Alert channel not found.", field="channel_id") from None


def delivery_list(*, user: User, status: str | None = None) -> QuerySet[AlertDelivery]:
    """Alert deliveries of events on nodes ``user`` may see, newest first."""
    deliveries = AlertDelivery.objects.filter(
        event__node__in=_visible_nodes(user).values("pk")
    ).select_related("event", "event__node", "channel")
    if status:
        deliveries = deliveries.filter(status=status)
    return deliveries.order_by("-created_at", "-id")
