"""What the training panels of a job's page show: its goodput, checkpoints and launch, and
where the browser fetches its logs, metrics and GPU readings. The job page renders them
through ``{% job_training job %}``; the panels' partial view refreshes the same block."""

from typing import Any

from django.urls import reverse

from apps.accounts.selectors import User
from apps.scheduler import selectors as scheduler_selectors
from apps.scheduler.lifecycle import TERMINAL_STATES
from apps.scheduler.models import Job
from apps.training import charts, selectors
from apps.training.checkpoints import checkpoint_keep_of
from apps.training.selectors.recent import LOG_TAIL_MAX

# Lines of output the page keeps; older ones are loaded on demand.
LOG_MAX_LINES = LOG_TAIL_MAX
# Seconds between two reads of the GPU readings while the job holds GPUs.
GPU_POLL_SECONDS = 5


def _launch_rows(job: Job) -> list[tuple[str, str]]:
    return sorted((str(k), str(v)) for k, v in (job.launch_env or {}).items())


def job_panels_context(*, user: User, job: Job) -> dict[str, Any]:
    """The refreshable block: goodput, checkpoints with pin rights, the attempt's launch."""
    goodput = selectors.goodput_of([job.pk])[job.pk]
    return {
        "job": job,
        "goodput": goodput,
        "checkpoints": selectors.job_checkpoints(job=job),
        "checkpoint_keep": checkpoint_keep_of(job),
        "can_pin": scheduler_selectors.job_can_act(user=user, job=job),
        "launch_env": _launch_rows(job),
        "active": job.state not in TERMINAL_STATES,
    }


def job_training_context(*, user: User, job: Job) -> dict[str, Any]:
    """Everything the training panels of the job page need, and the browser's config."""
    context = job_panels_context(user=user, job=job)
    context["training_config"] = {
        "jobId": job.pk,
        "ranks": job.nodes,
        "showRank": job.nodes > 1,
        "maxLines": LOG_MAX_LINES,
        "maxPoints": charts.METRIC_MAX_POINTS,
        "gpuMaxPoints": charts.GPU_MAX_POINTS,
        "gpuPollSeconds": GPU_POLL_SECONDS,
        "urls": {
            name: reverse(f"training:{name}", args=[job.pk])
            for name in ("job_logs", "job_metrics", "job_gpus", "job_panels")
        },
        "download": reverse("api:job_logs_download", kwargs={"job_id": job.pk}),
    }
    context["attempts"] = list(range(job.attempt, 0, -1))
    context["ranks"] = list(range(job.nodes))
    return context
