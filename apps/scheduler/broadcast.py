"""The only place that names the scheduler's channel groups and Redis keys.

Groups
- ``scheduler.job.<id>``: browsers watching one job (state changes, output lines).
- ``scheduler.pool.<id>``: browsers watching one pool's queue and usage.

Redis
- ``QUEUE_KEY`` hash: job id → JSON ``{"position", "reason", "estimated_start",
  "reserved"}`` for every pending job, rewritten by each pass.
- ``LOCK_KEY``: held by the pass that runs (one at a time across every process).
- ``REQUESTED_KEY``: set while a pass is requested and not yet started.
- ``WATCHED_KEY`` hash: job id → how many browsers watch the job now; changes and output
  of jobs nobody watches are not pushed (a pass may place thousands at once).
"""

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from apps.monitoring.broadcast import agent_group
from apps.system.heartbeats import redis_client

QUEUE_KEY = "podium:sched:queue"
LOCK_KEY = "podium:sched:lock"
REQUESTED_KEY = "podium:sched:requested"
WATCHED_KEY = "podium:sched:watched"

# Group sends in flight at once: well under the channel layer's Redis connection pool.
PUSH_CONCURRENCY = 8

Command = tuple[int, dict[str, Any]]  # (node id, message for its agent)


def job_group(job_id: int) -> str:
    """Browsers watching one job."""
    return f"scheduler.job.{job_id}"


def pool_group(pool_id: int) -> str:
    """Browsers watching one pool."""
    return f"scheduler.pool.{pool_id}"


def groups_push(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Send each ``(group, message)`` now, in one trip to the event loop; a message that
    cannot be sent is skipped (browsers refresh, agents reconcile)."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return

    async def send_all() -> None:
        for start in range(0, len(messages), PUSH_CONCURRENCY):
            chunk = messages[start : start + PUSH_CONCURRENCY]
            await asyncio.gather(
                *(layer.group_send(group, message) for group, message in chunk),
                return_exceptions=True,
            )

    async_to_sync(send_all)()


def commands_send(commands: list[Command]) -> None:
    """Send the commands to their nodes' agent connections, once the transaction commits:
    one message per node, carrying that node's commands in order.

    An agent that is not connected misses them; the pass and the agent's next hello
    reconcile what runs.
    """
    if not commands:
        return
    by_node: dict[int, list[dict[str, Any]]] = {}
    for node_id, message in commands:
        by_node.setdefault(node_id, []).append(message)
    messages = [
        (agent_group(node_id), {"type": "agent.commands", "commands": batch})
        for node_id, batch in sorted(by_node.items())
    ]
    transaction.on_commit(lambda: groups_push(messages))


def job_watch(job_id: int, delta: int) -> None:
    """Count a browser starting (``+1``) or stopping (``-1``) to watch a job."""
    client = redis_client()
    if client.hincrby(WATCHED_KEY, str(job_id), delta) <= 0:
        client.hdel(WATCHED_KEY, str(job_id))


def jobs_watched(job_ids: list[int]) -> list[int]:
    """The jobs among ``job_ids`` some browser watches; all of them when Redis cannot say."""
    if not job_ids:
        return []
    try:
        counts = redis_client().hmget(WATCHED_KEY, [str(job_id) for job_id in job_ids])
    except Exception:
        return job_ids
    return [job_id for job_id, count in zip(job_ids, counts, strict=True) if count]


def jobs_changed(job_ids: list[int], pool_ids: list[int]) -> None:
    """Tell watching browsers, after commit, that these jobs and pools changed."""
    jobs, pools = sorted(set(job_ids)), sorted(set(pool_ids))
    if not jobs and not pools:
        return

    def send() -> None:
        messages = [
            (job_group(job_id), {"type": "job.changed", "job_id": job_id})
            for job_id in jobs_watched(jobs)
        ] + [
            (pool_group(pool_id), {"type": "pool.changed", "pool_id": pool_id}) for pool_id in pools
        ]
        groups_push(messages)

    transaction.on_commit(send)


def job_push(job_id: int, message: dict[str, Any]) -> None:
    """Send ``message`` to the job's watchers now, if any browser watches it."""
    if jobs_watched([job_id]):
        groups_push([(job_group(job_id), message)])


def job_output_push(
    job_id: int, *, attempt: int, rank: int, seq: int | None, lines: list[str]
) -> None:
    """Show a rank's new output lines to the job's watchers now; ``seq`` is the line
    number of the first (numbers skip the SDK's records, which are not output)."""
    message = {"type": "job.output", "attempt": attempt, "rank": rank, "seq": seq, "lines": lines}
    job_push(job_id, message)


def job_metrics_push(job_id: int, points: list[dict[str, Any]]) -> None:
    """Show metrics points the job's processes just reported to its watchers now."""
    job_push(job_id, {"type": "job.metrics", "points": points})


def queue_entry(raw: bytes | str | None) -> dict[str, Any] | None:
    """A pending job's queue entry as stored in ``QUEUE_KEY``."""
    return json.loads(raw) if raw else None
