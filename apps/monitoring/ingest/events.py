"""Findings become health events: deduplicated, escalated, resolved; health follows.

One open event per node, GPU, source and code: a finding that fires again bumps its
count and time, and raises its class if the new finding is graver. After any change the
node's health is recomputed, watchers are told after commit, and new or escalated
events go to the alert channels.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from apps.monitoring import rules
from apps.monitoring.alerts import alerts_enqueue
from apps.monitoring.health import health_refresh
from apps.monitoring.ingest.live import node_events_push, node_live_update
from apps.monitoring.models import Health, HealthEvent
from apps.monitoring.rules import Finding

# How long after a reset-class XID was cleared its return means the GPU needs replacing.
RECURRENCE_WINDOW = timedelta(days=30)
# A condition that clears by itself and returns within this window reopens its event
# (count + 1, no new alert) instead of adding another: throttling that comes and goes is
# one event, not one per episode.
FLAP_WINDOW = timedelta(minutes=10)
ConditionKey = tuple[int | None, str, str]


def _open_events(node_id: int, gpu_index: int | None, source: str, code: str) -> Any:
    return HealthEvent.objects.filter(
        node_id=node_id, gpu_index=gpu_index, source=source, code=code, resolved_at__isnull=True
    )


def event_raise(
    *, node_id: int, finding: Finding, now: datetime | None = None
) -> tuple[HealthEvent, bool]:
    """Record ``finding``; returns the event and whether it is new or escalated."""
    now = now or timezone.now()
    event = (
        _open_events(node_id, finding.gpu_index, finding.source, finding.code)
        .order_by("-id")
        .first()
    )
    if event is None and finding.condition:
        event = (
            HealthEvent.objects.filter(
                node_id=node_id,
                gpu_index=finding.gpu_index,
                source=finding.source,
                code=finding.code,
                rule_class=finding.rule_class,
                resolved_by__isnull=True,
                resolved_at__gte=now - FLAP_WINDOW,
            )
            .order_by("-id")
            .first()
        )
        if event is not None:
            event.resolved_at = None
            event.count += 1
            event.last_at = now
            event.save(update_fields=["resolved_at", "count", "last_at"])
            return event, False
    if event is None:
        event = HealthEvent.objects.create(
            node_id=node_id,
            gpu_index=finding.gpu_index,
            source=finding.source,
            code=finding.code,
            rule_class=finding.rule_class,
            severity=finding.severity,
            reason=finding.reason,
            action=finding.action,
            first_at=now,
            last_at=now,
        )
        return event, True
    event.count += 1
    event.last_at = now
    fields = ["count", "last_at"]
    graver = rules.CLASS_RANK.get(finding.rule_class, 1) > rules.CLASS_RANK.get(event.rule_class, 1)
    if graver:
        event.rule_class = finding.rule_class
        event.severity = finding.severity
        event.reason = finding.reason
        event.action = finding.action
        fields += ["rule_class", "severity", "reason", "action"]
    event.save(update_fields=fields)
    return event, graver


def _xid_history(node_id: int, gpu_index: int | None, code: str, now: datetime) -> tuple[int, bool]:
    """How often this XID was seen on this GPU in a day (counting this one), and whether a
    reset-class occurrence of it was already cleared recently."""
    same = HealthEvent.objects.filter(node_id=node_id, gpu_index=gpu_index, source="xid", code=code)
    seen = same.filter(last_at__gte=now - timedelta(days=1)).aggregate(n=Sum("count"))["n"]
    recurred = same.filter(
        rule_class__in=rules.DRAINING_CLASSES,
        resolved_at__isnull=False,
        resolved_at__gte=now - RECURRENCE_WINDOW,
    ).exists()
    return (seen or 0) + 1, recurred


def event_classify(*, node_id: int, event: dict[str, Any], now: datetime) -> Finding | None:
    """The finding for one agent EVENT, with the history the repetition rules need."""
    seen_in_day, recurred = 1, False
    if event["kind"] == "xid" and event.get("code") is not None:
        rule = rules.xid_rule(
            event["code"],
            detail=event.get("detail") or "",
            xid_109_policy=settings.PODIUM_XID_109_POLICY,
        )
        if rule.rule_class in rules.WARN_ONLY_CLASSES or rule.rule_class == rules.GPU_RESET:
            seen_in_day, recurred = _xid_history(node_id, event.get("gpu"), str(event["code"]), now)
    return rules.event_finding(
        event,
        xid_109_policy=settings.PODIUM_XID_109_POLICY,
        repeat_drain=int(settings.PODIUM["XID_REPEAT_DRAIN"]),
        seen_in_day=seen_in_day,
        recurred_after_reset=recurred,
    )


def conditions_resolve(
    *, node_id: int, keys: Iterable[ConditionKey], now: datetime
) -> list[HealthEvent]:
    """Close the open events of conditions that cleared, unless their class drains."""
    resolved = []
    for gpu_index, source, code in keys:
        for event in _open_events(node_id, gpu_index, source, code):
            if rules.condition_resolves(event.rule_class):
                event.resolved_at = now
                event.save(update_fields=["resolved_at"])
                resolved.append(event)
    return resolved


@transaction.atomic
def findings_apply(
    *,
    node_id: int,
    events: Iterable[dict[str, Any]] = (),
    raised: Iterable[Finding] = (),
    cleared: Iterable[ConditionKey] = (),
) -> tuple[Health, dict[int, Health]]:
    """Record what a batch showed: agent events, conditions that began and that cleared.

    Returns the node's and its GPUs' health afterwards. Watchers, the live summary and
    the alert channels hear of it after commit.
    """
    now = timezone.now()
    changed: list[HealthEvent] = []
    findings = [f for e in events if (f := event_classify(node_id=node_id, event=e, now=now))]
    for finding in [*findings, *raised]:
        event, alert = event_raise(node_id=node_id, finding=finding, now=now)
        changed.append(event)
        if alert:
            alerts_enqueue(event)
    changed += conditions_resolve(node_id=node_id, keys=cleared, now=now)
    health = health_refresh(node_id=node_id)
    if changed:
        transaction.on_commit(lambda: node_events_push(node_id, changed))
        transaction.on_commit(lambda: node_live_update(node_id))
    return health


def open_conditions(node_id: int) -> dict[ConditionKey, str]:
    """The node's open condition events: key → rule class."""
    return {
        (e.gpu_index, e.source, e.code): e.rule_class
        for e in HealthEvent.objects.filter(node_id=node_id, resolved_at__isnull=True).only(
            "gpu_index", "source", "code", "rule_class"
        )
        if rules.is_condition(e.source, e.code)
    }
