"""Monitoring's Celery tasks: the heartbeat sweep, rollups, retention, webhook delivery."""

import logging

from celery import Task, shared_task

from apps.monitoring.alerts import alert_deliver, retry_countdown
from apps.monitoring.ingest import nodes_sweep
from apps.monitoring.models import AlertDelivery
from apps.monitoring.retention import live_prune, rollup_hours, rollup_minutes, telemetry_prune
from apps.system.heartbeats import redis_client

logger = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "podium:mon:sweep-lock"
SWEEP_LOCK_SECONDS = 30


@shared_task(name="monitoring.sweep_nodes", ignore_result=True, expires=5)
def sweep_nodes() -> int:
    """Move silent nodes to suspect, then lost, and heard ones back to ready.

    One sweep at a time cluster-wide (a Redis lock); a sweep that finds it taken does
    nothing, and so does one that cannot reach Redis.
    """
    try:
        lock = redis_client().lock(SWEEP_LOCK_KEY, timeout=SWEEP_LOCK_SECONDS)
        if not lock.acquire(blocking=False):
            return 0
    except Exception:
        logger.warning("Redis unreachable: node sweep skipped")
        return 0
    try:
        return nodes_sweep()
    finally:
        try:
            lock.release()
        except Exception:
            logger.warning("the node sweep lock was lost before release")


@shared_task(name="monitoring.rollup", ignore_result=True, expires=55)
def rollup() -> dict[str, int]:
    """Recompute the recent 1-minute and 1-hour rollups."""
    return {"minutes": rollup_minutes(), "hours": rollup_hours()}


@shared_task(name="monitoring.prune", ignore_result=True, expires=590)
def prune() -> dict[str, int]:
    """Delete telemetry past its retention, and live entries of nodes that are gone."""
    counts = telemetry_prune()
    try:
        counts["live"] = live_prune()
    except Exception:
        logger.warning("Redis unreachable: live summaries not pruned")
    return counts


@shared_task(
    bind=True, name="monitoring.deliver_alert", ignore_result=True, max_retries=None, acks_late=True
)
def deliver_alert(self: Task, delivery_id: int) -> str | None:
    """Send one alert delivery; retried with doubling delays until ALERT_ATTEMPTS."""
    delivery = alert_deliver(delivery_id=delivery_id)
    if delivery is None:
        return None
    if delivery.status == AlertDelivery.Status.PENDING:
        raise self.retry(countdown=retry_countdown(delivery.attempts))
    return delivery.status
