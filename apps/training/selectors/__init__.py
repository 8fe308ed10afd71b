"""Training reads, every one scoped to what the user may see."""

from apps.training.selectors.runs import (
    LogQuery,
    goodput_of,
    job_checkpoint_get,
    job_checkpoints,
    job_log_all,
    job_log_lines,
    job_markers,
    job_metrics,
    workspace_goodput,
    workspaces_goodput,
)

__all__ = [
    "LogQuery",
    "goodput_of",
    "job_checkpoint_get",
    "job_checkpoints",
    "job_log_all",
    "job_log_lines",
    "job_markers",
    "job_metrics",
    "workspace_goodput",
    "workspaces_goodput",
]
