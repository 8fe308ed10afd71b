"""Reads of what jobs left behind: output, metrics, checkpoints, goodput. Every read
starts from a job the user may see (``apps.scheduler.selectors.job_get``)."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Min, Q, QuerySet
from django.utils import timezone

from apps.accounts.models import Workspace
from apps.scheduler.models import Job, JobEvent
from apps.system.errors import NotFoundError
from apps.training.goodput import AttemptSpan, CheckpointMark, Goodput, goodput_compute
from apps.training.models import Checkpoint, LogLine, MetricPoint

# States into which an attempt stops running.
_ENDS = (
    Job.State.PREEMPTING,
    Job.State.STOPPING,
    Job.State.SUCCEEDED,
    Job.State.FAILED,
    Job.State.CANCELLED,
)
LOG_PAGE_MAX = 10_000


@dataclass(frozen=True)
class LogQuery:
    """Which output lines: after a cursor (row id), of one rank or attempt, with text."""

    after: int = 0
    rank: int | None = None
    attempt: int | None = None
    q: str = ""
    limit: int = 1000


def log_lines_filtered(
    *, job: Job, rank: int | None = None, attempt: int | None = None, q: str = ""
) -> QuerySet[LogLine]:
    """The job's output lines of one rank or attempt (when given) that contain ``q``."""
    lines = LogLine.objects.filter(job=job)
    if rank is not None:
        lines = lines.filter(rank=rank)
    if attempt is not None:
        lines = lines.filter(attempt=attempt)
    if q:
        lines = lines.filter(line__icontains=q)
    return lines


def job_log_lines(*, job: Job, query: LogQuery) -> list[LogLine]:
    """Output lines of the job in the order they were stored, after ``query.after``."""
    lines = log_lines_filtered(job=job, rank=query.rank, attempt=query.attempt, q=query.q).filter(
        pk__gt=query.after
    )
    limit = max(1, min(query.limit, LOG_PAGE_MAX))
    return list(lines.order_by("pk")[:limit])


def job_log_all(*, job: Job, rank: int | None = None) -> QuerySet[LogLine]:
    """Every output line of the job (for a download), oldest first, read in chunks."""
    lines = LogLine.objects.filter(job=job)
    if rank is not None:
        lines = lines.filter(rank=rank)
    return lines.order_by("pk").only("attempt", "rank", "line")


def job_metrics(*, job: Job, after: int = 0, limit: int = 20_000) -> list[MetricPoint]:
    """Metrics points the job reported, oldest first, after the row id ``after``."""
    return list(MetricPoint.objects.filter(job=job, pk__gt=after).order_by("pk")[:limit])


# Timeline kinds drawn as markers on the metrics charts.
MARKER_KINDS = ("fault", "failed", "preempted", "requeued", "resume", "restart", "drained")


def job_markers(*, job: Job) -> list[JobEvent]:
    """The timeline lines drawn on the job's metrics charts: faults, requeues, resumes."""
    return list(JobEvent.objects.filter(job=job, kind__in=MARKER_KINDS).order_by("at", "pk"))


def job_checkpoints(*, job: Job, include_deleted: bool = False) -> list[Checkpoint]:
    """The job's checkpoints, newest step first."""
    rows = Checkpoint.objects.filter(job=job)
    if not include_deleted:
        rows = rows.filter(deleted=False)
    return list(rows.order_by("-step"))


def job_checkpoint_get(*, job: Job, step: int) -> Checkpoint:
    """One checkpoint of the job, else NotFoundError."""
    row = Checkpoint.objects.filter(job=job, step=step).first()
    if row is None:
        raise NotFoundError("Checkpoint not found.", field="step")
    return row


def _spans(events: list[JobEvent], first_reports: dict[int, datetime]) -> list[AttemptSpan]:
    spans: list[AttemptSpan] = []
    current: tuple[int, datetime] | None = None  # the running attempt and its start
    resumed: dict[int, int] = {}
    restarted: set[int] = set()
    for event in events:
        if event.kind == "resume" and isinstance(event.data.get("step"), int):
            resumed[event.attempt] = event.data["step"]
        elif event.kind == "restart":
            restarted.add(event.attempt)
        elif event.kind == "running" and event.to_state == Job.State.RUNNING:
            current = (event.attempt, event.at)
        elif current is not None and event.to_state in _ENDS:
            spans.append(_span(current, event.at, first_reports, resumed, restarted))
            current = None
    if current is not None:
        spans.append(_span(current, None, first_reports, resumed, restarted))
    return spans


def _span(
    current: tuple[int, datetime],
    ended: datetime | None,
    first_reports: dict[int, datetime],
    resumed: dict[int, int],
    restarted: set[int],
) -> AttemptSpan:
    attempt, started = current
    report = first_reports.get(attempt)
    progress = report if report is not None and report >= started else started
    if ended is not None and progress > ended:
        progress = ended
    return AttemptSpan(
        attempt=attempt,
        started=started,
        ended=ended,
        progress_from=progress,
        resumed_step=resumed.get(attempt),
        restarted=attempt in restarted,
    )


def goodput_of(job_ids: list[int], now: datetime | None = None) -> dict[int, Goodput]:
    """Each job's goodput, in three queries whatever the number of jobs."""
    now = now or timezone.now()
    events: dict[int, list[JobEvent]] = defaultdict(list)
    timeline = (
        JobEvent.objects.filter(job_id__in=job_ids)
        .filter(Q(kind__in=("running", "resume", "restart")) | Q(to_state__in=_ENDS))
        .only("job_id", "at", "attempt", "kind", "to_state", "data")
        .order_by("at", "pk")
    )
    for event in timeline:
        events[event.job_id].append(event)
    reports: dict[int, dict[int, datetime]] = defaultdict(dict)
    for job_id, attempt, first in (
        MetricPoint.objects.filter(job_id__in=job_ids)
        .values("job_id", "attempt")
        .annotate(first=Min("at"))
        .values_list("job_id", "attempt", "first")
    ):
        reports[job_id][attempt] = first
    marks: dict[int, list[CheckpointMark]] = defaultdict(list)
    for checkpoint in Checkpoint.objects.filter(job_id__in=job_ids).only(
        "job_id", "step", "attempt", "written_at"
    ):
        marks[checkpoint.job_id].append(
            CheckpointMark(
                step=checkpoint.step,
                attempt=checkpoint.attempt,
                written_at=checkpoint.written_at,
            )
        )
    return {
        job_id: goodput_compute(_spans(events[job_id], reports[job_id]), marks[job_id], now)
        for job_id in job_ids
    }


# Jobs a goodput total reads at most (the newest).
GOODPUT_JOBS_MAX = 5000


def workspaces_goodput(
    *, workspaces: list[Workspace], days: float = 30
) -> dict[int, tuple[Goodput, int]]:
    """For each workspace, the summed goodput of its jobs that ran in the last ``days``
    and how many jobs that is; a few queries whatever the number of workspaces."""
    since = timezone.now() - timedelta(days=days)
    rows = list(
        Job.objects.filter(workspace__in=workspaces, attempt__gt=0)
        .exclude(finished_at__lt=since)
        .order_by("-pk")
        .values_list("pk", "workspace_id")[:GOODPUT_JOBS_MAX]
    )
    goodputs = goodput_of([pk for pk, _ in rows])
    totals: dict[int, tuple[Goodput, int]] = {w.pk: (Goodput(), 0) for w in workspaces}
    for pk, workspace_id in rows:
        total, count = totals[workspace_id]
        total.add(goodputs[pk])
        totals[workspace_id] = (total, count + 1)
    return totals


def workspace_goodput(*, workspace: Workspace, days: float = 30) -> tuple[Goodput, int]:
    """The summed goodput of the workspace's jobs that ran in the last ``days``, and how
    many jobs that is."""
    return workspaces_goodput(workspaces=[workspace], days=days)[workspace.pk]
