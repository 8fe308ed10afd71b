"""Training pages: the overview (recent jobs, goodput per workspace, the examples to run),
and what the training panels of a job's page fetch: output lines, metrics figures, GPU
readings, and the block of goodput, checkpoints and launch they refresh (where
checkpoints are pinned and read again from storage)."""

import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.selectors import User, workspace_get, workspace_list, workspaces_acting
from apps.monitoring import selectors as monitoring_selectors
from apps.scheduler import selectors as scheduler_selectors
from apps.scheduler import services as scheduler_services
from apps.scheduler.models import Allocation, Job, JobEvent
from apps.system.errors import ApplicationError, NotFoundError
from apps.system.pages import access_error_reraise, is_htmx, request_user
from apps.training import charts, selectors, services
from apps.training.checkpoints import checkpoints_sync
from apps.training.forms import ExampleRunForm, LogFilterForm
from apps.training.goodput import Goodput
from apps.training.models import MetricPoint
from apps.training.panels import job_panels_context
from apps.training.selectors import recent

RECENT_JOBS = 25
GOODPUT_DAYS = 30
# Workspaces whose goodput the overview sums (a platform admin sees them all).
GOODPUT_WORKSPACES = 50
LOG_PAGE = 1000
METRICS_LOADED = 20_000
# The GPU chart covers this many seconds; a poll reads again a little before its cursor,
# since readings are stored in batches a few seconds after they were taken.
GPU_WINDOW_SECONDS = 600
GPU_OVERLAP_SECONDS = 15
# Readings shown from this long before the attempt started (what the GPU did before it).
GPU_LEAD_SECONDS = 30


@dataclass(frozen=True)
class Example:
    """A training script of the repository the overview runs in one click."""

    label: str
    name: str
    script: str  # relative to the repository
    args: str

    def command(self) -> str:
        """The job's command: the script by its absolute path, with short-run options."""
        path = Path(settings.BASE_DIR) / self.script
        return f"python {shlex.quote(str(path))} {self.args}"


EXAMPLES = {
    "tiny_gpt": Example(
        "tiny GPT (PyTorch)",
        "example-tiny-gpt",
        "examples/tiny_gpt/train.py",
        "--steps 600 --checkpoint-every 100",
    ),
    "plain": Example(
        "plain Python",
        "example-plain",
        "examples/plain/train.py",
        "--steps 1000 --checkpoint-every 50",
    ),
}


def _job(request: HttpRequest, job_id: int) -> Job:
    return scheduler_selectors.job_get(user=request_user(request), job_id=job_id)


# Overview --------------------------------------------------------------------------------


def _gpus_connected(user: User) -> bool:
    """Whether the default pool, where the examples run, has a GPU on a ready node."""
    pool = scheduler_selectors.pool_list().filter(is_default=True).first()
    return pool is not None and scheduler_selectors.pool_usage(user=user, pool=pool).gpus > 0


def _job_row(
    job: Job, report: MetricPoint | None, goodput: Goodput
) -> tuple[Job, int | None, float | None, Goodput]:
    """A recent job with its last reported step and loss, and its goodput."""
    if report is None:
        return job, None, None, goodput
    return job, report.step, report.values.get("loss"), goodput


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """Recent jobs with their progress and goodput, goodput per workspace, the examples."""
    user = request_user(request)
    workspaces = list(workspace_list(user=user)[:GOODPUT_WORKSPACES])
    jobs = list(scheduler_selectors.job_list(user=user)[:RECENT_JOBS])
    ids = [job.pk for job in jobs]
    reports = recent.jobs_last_report(ids)
    goodputs = selectors.goodput_of(ids)
    totals = selectors.workspaces_goodput(workspaces=workspaces, days=GOODPUT_DAYS)
    per_workspace = [
        (workspace, *totals[workspace.pk]) for workspace in workspaces if totals[workspace.pk][1]
    ]
    context = {
        "rows": [_job_row(job, reports.get(job.pk), goodputs[job.pk]) for job in jobs],
        "per_workspace": per_workspace,
        "goodput_days": GOODPUT_DAYS,
        "submit_workspaces": workspaces_acting(user=user, workspaces=workspaces),
        "any_workspace": bool(workspaces),
        "examples": EXAMPLES,
        "gpus_connected": _gpus_connected(user),
    }
    return render(request, "training/overview.html", context)


@login_required
@require_POST
def example_run(request: HttpRequest) -> HttpResponse:
    """Submit one of the examples on one GPU and open its job page."""
    user = request_user(request)
    form = ExampleRunForm(request.POST, examples=[(k, e.label) for k, e in EXAMPLES.items()])
    if not form.is_valid():
        messages.error(request, "Choose an example and a workspace.")
        return redirect("training:job_list")
    example = EXAMPLES[form.cleaned_data["example"]]
    workspace = workspace_get(user=user, workspace_id=form.cleaned_data["workspace"])
    spec = scheduler_services.JobSpec(
        name=example.name,
        command=example.command(),
        kind=Job.Kind.COMMAND,
        nodes=1,
        gpus_per_node=1,
    )
    try:
        job = scheduler_services.job_submit(actor=user, workspace=workspace, spec=spec)
    except ApplicationError as exc:
        access_error_reraise(exc)
        messages.error(request, exc.message)
        return redirect("training:job_list")
    messages.success(request, f"Job {job.pk} {job.name} queued in {job.pool.name}.")
    return redirect("scheduler:job_detail", job_id=job.pk)


# Job page: logs and metrics ----------------------------------------------------------------


def _invalid(form: LogFilterForm) -> JsonResponse:
    field, errors = next(iter(form.errors.items()))
    return JsonResponse({"detail": f"{field}: {errors[0]}", "field": field}, status=400)


@never_cache
@login_required
def job_logs(request: HttpRequest, job_id: int) -> JsonResponse:
    """The newest output lines (before a row id or a live line's key, when given) as
    ``[id, attempt, rank, seq, text]``, oldest first, and whether older ones match."""
    job = _job(request, job_id)
    form = LogFilterForm(request.GET)
    if not form.is_valid():
        return _invalid(form)
    data = form.cleaned_data
    before = data["before"]
    key = form.line_key()
    if key is not None:
        attempt, rank, seq = key
        before = recent.job_log_line_id(job=job, attempt=attempt, rank=rank, seq=seq)
        if before is None:
            return JsonResponse({"lines": [], "more_before": False})
    page = recent.job_log_tail(
        job=job,
        rank=data["rank"],
        attempt=data["attempt"],
        q=data["q"] or "",
        before=before,
        limit=data["limit"] or LOG_PAGE,
    )
    lines = [[row.pk, row.attempt, row.rank, row.seq, row.line] for row in page.lines]
    return JsonResponse({"lines": lines, "more_before": page.more_before})


def _reports(points: list[MetricPoint]) -> list[charts.Report]:
    return [charts.Report(p.attempt, p.step, p.at, p.values) for p in points]


def _markers(events: list[JobEvent]) -> list[charts.Marker]:
    markers = []
    for event in events:
        step = event.data.get("step") if event.kind == "resume" else None
        known = isinstance(step, int) and not isinstance(step, bool)
        markers.append(
            charts.Marker(
                event.at, event.attempt, event.kind, event.reason, step if known else None
            )
        )
    return markers


@never_cache
@login_required
def job_metrics(request: HttpRequest, job_id: int) -> JsonResponse:
    """Figures of every metric the job reported, with its timeline's markers; with
    ``part=markers``, the markers' layout alone (after the job changed)."""
    job = _job(request, job_id)
    reports = _reports(recent.job_metrics_recent(job=job, limit=METRICS_LOADED))
    markers = _markers(selectors.job_markers(job=job))
    if request.GET.get("part") == "markers":
        return JsonResponse(charts.marker_layout(reports, markers))
    figures = charts.metric_figures(reports, markers)
    return JsonResponse(
        {
            "names": list(figures),
            "figures": figures,
            "template": charts.metric_template(reports, markers),
            "colours": charts.ATTEMPT_COLOURS,
        }
    )


# Job page: GPU utilisation -----------------------------------------------------------------


def _since(request: HttpRequest) -> float | None:
    try:
        since = float(request.GET.get("since") or "")
    except ValueError:
        return None
    return since if math.isfinite(since) else None


def _window_start(allocations: list[Allocation], since: float | None, until: float) -> float:
    """Where the readings start: after the previous answer (less the overlap), else a
    little before the attempt started, within the window before ``until``."""
    start = until - GPU_WINDOW_SECONDS
    if since is not None:
        return max(start, since - GPU_OVERLAP_SECONDS)
    began = [a.started_at or a.created_at for a in allocations]
    if began:
        start = max(start, min(began).timestamp() - GPU_LEAD_SECONDS)
    return start


def _readings(
    user: User, allocations: list[Allocation], *, since: float, until: float | None = None
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Raw readings of the GPUs of the attempt's nodes taken from ``since`` (up to ``until``
    once the attempt ended), per (node id, GPU index): one read per node."""
    end = time.time() if until is None else until
    readings: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for node_id in sorted({a.node_id for a in allocations}):
        try:
            node = monitoring_selectors.node_get(user=user, node_id=node_id)
        except NotFoundError:
            continue
        rows, _ = monitoring_selectors.node_recent(
            node=node, seconds=max(1.0, end - since), now=end
        )
        for row in rows:
            if until is None or row["ts"] <= until:
                readings.setdefault((node_id, row["gpu_index"]), []).append(row)
    return readings


@never_cache
@login_required
def job_gpus(request: HttpRequest, job_id: int) -> JsonResponse:
    """Utilisation of the current attempt's GPUs: the figure, or with ``since`` (the
    previous answer's ``until``) the readings since then, by GPU key."""
    user = request_user(request)
    job = _job(request, job_id)
    allocations = scheduler_selectors.job_allocations(job=job)
    gpus = [(a.node_id, a.node.name, index) for a in allocations for index in a.gpus]
    now = time.time()
    live = any(a.ended_at is None for a in allocations)
    since = _since(request)
    ended = None
    if allocations and not live:
        ended = max(a.ended_at.timestamp() for a in allocations if a.ended_at is not None)
    start = _window_start(allocations, since, now if ended is None else ended)
    readings = _readings(user, allocations, since=start, until=ended)
    series = charts.gpu_series(gpus, readings, since=start)
    if since is None:
        return JsonResponse({"figure": charts.gpu_figure(series), "until": now, "live": live})
    return JsonResponse({"traces": charts.gpu_points(series), "until": now, "live": live})


# Job page: goodput, checkpoints, launch --------------------------------------------------


def _panels(request: HttpRequest, job: Job, *, error: str | None = None) -> HttpResponse:
    context = job_panels_context(user=request_user(request), job=job)
    context["error"] = error
    return render(request, "training/_job_panels.html", context, status=409 if error else 200)


@never_cache
@login_required
def job_panels(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job's goodput, checkpoints and launch: the block the page refreshes."""
    return _panels(request, _job(request, job_id))


@login_required
@require_POST
def checkpoints_refresh(request: HttpRequest, job_id: int) -> HttpResponse:
    """Read the job's checkpoint directory again (complete or not, and why)."""
    job = _job(request, job_id)
    checkpoints_sync(job.pk)
    if is_htmx(request):
        return _panels(request, job)
    return redirect("scheduler:job_detail", job_id=job.pk)


@login_required
@require_POST
def checkpoint_pin(request: HttpRequest, job_id: int, step: int) -> HttpResponse:
    """Pin a checkpoint (``pinned=1``: kept whatever the retention) or unpin it."""
    user = request_user(request)
    job = _job(request, job_id)
    checkpoint = selectors.job_checkpoint_get(job=job, step=step)
    pinned = request.POST.get("pinned") == "1"
    error = None
    try:
        services.checkpoint_pin(actor=user, job=job, checkpoint=checkpoint, pinned=pinned)
    except ApplicationError as exc:
        access_error_reraise(exc)
        error = exc.message
    if is_htmx(request):
        return _panels(request, job, error=error)
    if error:
        messages.error(request, error)
    return redirect("scheduler:job_detail", job_id=job.pk)
