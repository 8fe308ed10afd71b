"""The newest of what jobs left behind, as the pages show it: the last output lines (and
older ones page by page), the last metrics points, each job's last report. Every read
takes a job (or job ids) the caller obtained through ``apps.scheduler.selectors``."""

from dataclasses import dataclass

from django.db.models import Max

from apps.scheduler.models import Job
from apps.training.models import LogLine, MetricPoint
from apps.training.selectors.runs import log_lines_filtered

LOG_TAIL_MAX = 5000


@dataclass(frozen=True)
class LogPage:
    """Output lines oldest first, and whether older ones match too."""

    lines: list[LogLine]
    more_before: bool


def job_log_tail(
    *,
    job: Job,
    rank: int | None = None,
    attempt: int | None = None,
    q: str = "",
    before: int | None = None,
    limit: int = 1000,
) -> LogPage:
    """The newest ``limit`` output lines of the job (before the row id ``before``, if
    given), of one rank or attempt, containing ``q``."""
    lines = log_lines_filtered(job=job, rank=rank, attempt=attempt, q=q)
    if before is not None:
        lines = lines.filter(pk__lt=before)
    limit = max(1, min(limit, LOG_TAIL_MAX))
    newest = list(lines.order_by("-pk")[: limit + 1])
    return LogPage(lines=newest[:limit][::-1], more_before=len(newest) > limit)


def job_log_line_id(*, job: Job, attempt: int, rank: int, seq: int) -> int | None:
    """The row id of a rank's first stored line from number ``seq`` on in an attempt (a
    line shown live carries no id, and the SDK's marker lines take numbers too)."""
    return (
        LogLine.objects.filter(job=job, attempt=attempt, rank=rank, seq__gte=seq)
        .order_by("seq")
        .values_list("pk", flat=True)
        .first()
    )


def job_metrics_recent(*, job: Job, limit: int = 20_000) -> list[MetricPoint]:
    """The job's newest ``limit`` metrics points, oldest first."""
    return list(MetricPoint.objects.filter(job=job).order_by("-pk")[:limit])[::-1]


def jobs_last_report(job_ids: list[int]) -> dict[int, MetricPoint]:
    """Each job's last metrics point, by job id (jobs that reported nothing are absent)."""
    last_ids = (
        MetricPoint.objects.filter(job_id__in=job_ids)
        .values("job_id")
        .annotate(last=Max("pk"))
        .values_list("last", flat=True)
    )
    return {p.job_id: p for p in MetricPoint.objects.filter(pk__in=list(last_ids))}
