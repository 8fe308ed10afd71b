"""Periodic system tasks."""

import json
import time

from celery import Task, shared_task

from apps.system.health import QUEUE_PROBE_KEY
from apps.system.heartbeats import redis_client

SENT_AT_HEADER = "podium_sent_at"


@shared_task(bind=True, name="system.queue_probe", ignore_result=True, expires=30)
def queue_probe(self: Task) -> None:
    """Record how long this task took from its sender, through the broker, to a worker."""
    done_at = time.time()
    sent_at = float(getattr(self.request, SENT_AT_HEADER, None) or done_at)
    record = {"sent_at": sent_at, "done_at": done_at, "latency_ms": (done_at - sent_at) * 1000}
    redis_client().set(QUEUE_PROBE_KEY, json.dumps(record), ex=24 * 3600)
