"""REST endpoints of a job's output, metrics, checkpoints and goodput (under
``/api/jobs/{id}/``, beside the scheduler's job routes), and goodput per workspace."""

from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Query, Router

from apps.accounts.selectors import workspace_get
from apps.scheduler import selectors as scheduler_selectors
from apps.scheduler.models import Job
from apps.system.pages import api_user
from apps.training import selectors, services
from apps.training.checkpoints import checkpoints_sync
from apps.training.goodput import Goodput
from apps.training.models import LogLine
from apps.training.schemas import (
    CheckpointOut,
    GoodputOut,
    LogFilterIn,
    MetricsOut,
    WorkspaceGoodputOut,
)

runs_router = Router(tags=["training"])
goodput_router = Router(tags=["training"])

CURSOR_HEADER = "X-Podium-Cursor"
STATE_HEADER = "X-Podium-Job-State"


def _job(request: HttpRequest, job_id: int) -> Job:
    return scheduler_selectors.job_get(user=api_user(request), job_id=job_id)


def log_line_text(line: LogLine, *, ranked: bool) -> str:
    """One stored line as the logs read it: prefixed by its rank unless one rank is read."""
    return f"[rank {line.rank}] {line.line}" if ranked else line.line


@runs_router.get("/{int:job_id}/logs", response={200: None})
def job_logs(request: HttpRequest, job_id: int, filters: Query[LogFilterIn]) -> HttpResponse:
    """Output lines as plain text, every rank (prefixed ``[rank N]``) or one, after the
    cursor ``since``. The ``X-Podium-Cursor`` header is the cursor to pass next time;
    ``X-Podium-Job-State`` tells when following may stop."""
    job = _job(request, job_id)
    lines = selectors.job_log_lines(
        job=job,
        query=selectors.LogQuery(
            after=filters.since,
            rank=filters.rank,
            attempt=filters.attempt,
            q=filters.q,
            limit=filters.limit,
        ),
    )
    ranked = filters.rank is None
    body = "".join(log_line_text(line, ranked=ranked) + "\n" for line in lines)
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    response[CURSOR_HEADER] = str(lines[-1].pk if lines else filters.since)
    response[STATE_HEADER] = job.state
    return response


@runs_router.get("/{int:job_id}/logs/download", response={200: None})
def job_logs_download(
    request: HttpRequest, job_id: int, rank: int | None = None
) -> StreamingHttpResponse:
    """Every stored output line of the job as a text file, each prefixed by its attempt
    and rank."""
    job = _job(request, job_id)
    rows = selectors.job_log_all(job=job, rank=rank).iterator(chunk_size=5000)
    body = (f"[attempt {row.attempt} rank {row.rank}] {row.line}\n" for row in rows)
    response = StreamingHttpResponse(body, content_type="text/plain; charset=utf-8")
    suffix = f"-rank{rank}" if rank is not None else ""
    response["Content-Disposition"] = f'attachment; filename="job-{job.pk}{suffix}.log"'
    return response


@runs_router.get("/{int:job_id}/metrics", response=MetricsOut)
def job_metrics(request: HttpRequest, job_id: int, after: int = 0) -> dict[str, Any]:
    """Metrics the job reported through the SDK, across attempts, after the cursor
    ``after``, with the faults, requeues and resumes of its timeline."""
    job = _job(request, job_id)
    points = selectors.job_metrics(job=job, after=max(0, after))
    return {
        "points": points,
        "cursor": points[-1].pk if points else max(0, after),
        "markers": selectors.job_markers(job=job),
    }


@runs_router.get("/{int:job_id}/checkpoints", response=list[CheckpointOut])
def job_checkpoints(request: HttpRequest, job_id: int, refresh: bool = False) -> Any:
    """The job's checkpoints, newest first, complete or not; ``refresh`` reads storage
    again first."""
    job = _job(request, job_id)
    if refresh:
        checkpoints_sync(job.pk)
    return selectors.job_checkpoints(job=job)


def _pin(request: HttpRequest, job_id: int, step: int, pinned: bool) -> Any:
    job = _job(request, job_id)
    checkpoint = selectors.job_checkpoint_get(job=job, step=step)
    return services.checkpoint_pin(
        actor=api_user(request), job=job, checkpoint=checkpoint, pinned=pinned
    )


@runs_router.post("/{int:job_id}/checkpoints/{int:step}/pin", response=CheckpointOut)
def checkpoint_pin(request: HttpRequest, job_id: int, step: int) -> Any:
    """Keep this checkpoint whatever the job's retention."""
    return _pin(request, job_id, step, True)


@runs_router.delete("/{int:job_id}/checkpoints/{int:step}/pin", response=CheckpointOut)
def checkpoint_unpin(request: HttpRequest, job_id: int, step: int) -> Any:
    """Let retention prune this checkpoint again."""
    return _pin(request, job_id, step, False)


def goodput_out(goodput: Goodput) -> dict[str, Any]:
    """A goodput as the API and pages show it."""
    return {
        "wall_seconds": round(goodput.wall, 3),
        "productive_seconds": round(goodput.productive, 3),
        "redone_seconds": round(goodput.redone, 3),
        "overhead_seconds": round(goodput.overhead, 3),
        "interruptions": goodput.interruptions,
        "ratio": round(goodput.ratio, 4) if goodput.ratio is not None else None,
    }


@runs_router.get("/{int:job_id}/goodput", response=GoodputOut)
def job_goodput(request: HttpRequest, job_id: int) -> dict[str, Any]:
    """Time the job spent training vs. lost to faults and restarts."""
    job = _job(request, job_id)
    return goodput_out(selectors.goodput_of([job.pk])[job.pk])


@goodput_router.get("/goodput", response=WorkspaceGoodputOut)
def workspace_goodput(request: HttpRequest, workspace_id: int, days: float = 30) -> Any:
    """The summed goodput of a workspace's jobs that ran in the last ``days``."""
    workspace = workspace_get(user=api_user(request), workspace_id=workspace_id)
    days = min(max(days, 1.0), 365.0)
    total, jobs = selectors.workspace_goodput(workspace=workspace, days=days)
    return {**goodput_out(total), "workspace_id": workspace.pk, "jobs": jobs, "days": days}
