"""Celery tasks of the scheduler: the pass, on a timer and on request."""

import logging

from celery import shared_task

from apps.scheduler.passes import scheduling_pass

logger = logging.getLogger(__name__)


@shared_task(name="scheduler.pass", ignore_result=True)
def run_pass() -> dict[str, float] | None:
    """Run one scheduling pass unless another is running; report what it did."""
    result = scheduling_pass()
    if result is None:
        return None
    if result.placed or result.preempted or result.stopped:
        logger.info(
            "scheduling pass: %d placed, %d preempted, %d stopped, %d pending in %.3f s",
            result.placed,
            result.preempted,
            result.stopped,
            result.pending,
            result.seconds,
        )
    return {"placed": result.placed, "pending": result.pending, "seconds": result.seconds}
