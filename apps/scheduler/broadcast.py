"""The only place that names the scheduler's channel groups and Redis keys.

Groups
- ``scheduler.job.<id>``: browsers watching one job (state changes, output lines).
- ``scheduler.pool.<id>``: browsers watching one pool's queue and usage.

Redis
- ``QUEUE_KEY`` hash: job id → JSON ``{"position", "reason", "estimated_start",
  "reserved"}`` for every pending job, rewritten by each pass.
- ``LOCK_KEY``: held by the pass that runs (one at a time across every process).
- ``REQUESTED_KEY``: set while a pass is requested and not yet started.
"""

import contextlib
import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from apps.monitoring.broadcast import agent_group

QUEUE_KEY = "podium:sched:queue"
LOCK_KEY = "podium:sched:lock"
REQUESTED_KEY = "podium:sched:requested"

Command = tuple[int, dict[str, Any]]  # (node id, message for its agent)


def job_group(job_id: int) -> str:
    """Browsers watching one job."""
    return f"scheduler.job.{job_id}"


def pool_group(pool_id: int) -> str:
    """Browsers watching one pool."""
    return f"scheduler.pool.{pool_id}"


def group_push(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to ``group`` now, when a channel layer is configured."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, message)


def commands_send(commands: list[Command]) -> None:
    """Send each command to its node's agent connection, once the transaction commits.

    An agent that is not connected misses it; the pass and the agent's next hello
    reconcile what runs.
    """
    if not commands:
        return
    pending = list(commands)

    def send() -> None:
        for node_id, message in pending:
            try:
                group_push(agent_group(node_id), {"type": "agent.command", "command": message})
            except Exception:  # noqa: S112  (reconciled later; never fail the caller)
                continue

    transaction.on_commit(send)


def jobs_changed(job_ids: list[int], pool_ids: list[int]) -> None:
    """Tell watching browsers, after commit, that these jobs and pools changed."""
    jobs, pools = sorted(set(job_ids)), sorted(set(pool_ids))

    def send() -> None:
        for job_id in jobs:
            try:
                group_push(job_group(job_id), {"type": "job.changed", "job_id": job_id})
            except Exception:  # noqa: S112  (a browser refresh shows it anyway)
                continue
        for pool_id in pools:
            try:
                group_push(pool_group(pool_id), {"type": "pool.changed", "pool_id": pool_id})
            except Exception:  # noqa: S112
                continue

    transaction.on_commit(send)


def job_output_push(job_id: int, *, rank: int, seq: int | None, lines: list[str]) -> None:
    """Show a rank's new output lines to the job's watchers now (output is not stored)."""
    with contextlib.suppress(Exception):  # live output is best effort
        group_push(
            job_group(job_id), {"type": "job.output", "rank": rank, "seq": seq, "lines": lines}
        )


def queue_entry(raw: bytes | str | None) -> dict[str, Any] | None:
    """A pending job's queue entry as stored in ``QUEUE_KEY``."""
    return json.loads(raw) if raw else None
