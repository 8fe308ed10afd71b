"""Celery tasks of training: thin entry points taking ids."""

import logging

from celery import Task, shared_task

from apps.training.checkpoints import checkpoints_prune
from apps.training.services.datasets import dataset_version_scan

logger = logging.getLogger(__name__)


@shared_task(name="training.checkpoints_prune", ignore_result=True, acks_late=True)
def checkpoints_prune_task(job_id: int, leftovers_before: float | None = None) -> list[int]:
    """Remove the job's checkpoints beyond what it keeps (and, given a unix time, writes
    cut short before then); return the steps removed."""
    removed = checkpoints_prune(job_id, leftovers_before=leftovers_before)
    if removed:
        logger.info("job %s: pruned the checkpoints of steps %s", job_id, removed)
    return removed


def checkpoints_prune_soon(job_id: int, *, leftovers_before: float | None = None) -> None:
    """Ask a worker to prune the job's checkpoints (a new one was just written, or a new
    attempt starts)."""
    try:
        checkpoints_prune_task.delay(job_id, leftovers_before)
    except Exception:
        logger.warning("Celery unreachable: checkpoints of job %s pruned later", job_id)


@shared_task(bind=True, name="training.dataset_scan", ignore_result=True, acks_late=True)
def dataset_scan(self: Task, version_id: int) -> str:
    """Scan a dataset version: its size, file count, checksum, format and first records."""
    outcome = dataset_version_scan(version_id=version_id, task_id=self.request.id or "")
    logger.info("dataset version %s: scan %s", version_id, outcome)
    return outcome
