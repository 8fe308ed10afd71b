"""What a running job's processes tell the scheduler through the layers above: that they
print (the hang watchdog), that they wrote a checkpoint (what preemption weighs), and what
the job's watchers should see now."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apps.scheduler.broadcast import job_metrics_push, job_output_push, jobs_changed
from apps.scheduler.models import Allocation, Job

# How often the last-output time of a job with a hang watchdog is written while it prints.
OUTPUT_MARK_EVERY = timedelta(seconds=5)


@dataclass(frozen=True)
class OutputSource:
    """The allocation an agent's output message belongs to."""

    alloc_id: int
    job_id: int
    attempt: int
    rank: int
    hang_timeout: float | None
    last_output_at: datetime | None


def output_source(*, node_id: int, alloc_id: int) -> OutputSource | None:
    """The allocation ``alloc_id`` if it runs on ``node_id`` (an agent speaks only for its
    own node), in one read."""
    row = (
        Allocation.objects.filter(pk=alloc_id, node_id=node_id)
        .values_list("job_id", "attempt", "rank", "job__hang_timeout", "job__last_output_at")
        .first()
    )
    if row is None:
        return None
    job_id, attempt, rank, hang_timeout, last_output_at = row
    return OutputSource(alloc_id, job_id, attempt, rank, hang_timeout, last_output_at)


def job_output_mark(source: OutputSource, *, now: datetime) -> None:
    """Note that the job printed, at most every few seconds and only for a job with a hang
    watchdog: output arrives often, and a write takes the database's write lock."""
    last = source.last_output_at
    if source.hang_timeout and (last is None or now - last >= OUTPUT_MARK_EVERY):
        Job.objects.filter(pk=source.job_id).update(last_output_at=now)


def job_checkpoint_mark(*, job_id: int, at: datetime) -> None:
    """The job wrote a checkpoint at ``at``: preemption weighs the work lost since."""
    Job.objects.filter(pk=job_id).update(last_checkpoint_at=at)


def job_output_show(source: OutputSource, *, seq: int | None, lines: list[str]) -> None:
    """Show a rank's new output lines to the job's watchers now."""
    job_output_push(source.job_id, attempt=source.attempt, rank=source.rank, seq=seq, lines=lines)


def job_metrics_show(job_id: int, points: list[dict[str, Any]]) -> None:
    """Show the job's watchers the metrics points its processes just reported."""
    job_metrics_push(job_id, points)


def job_changed_show(job_id: int) -> None:
    """Tell the job's watchers, once the transaction commits, that it changed (a new
    checkpoint, say)."""
    jobs_changed([job_id], [])
