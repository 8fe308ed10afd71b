"""Fleet frames: the changed nodes' live summaries, pushed to the overview a few times a second.

Agent connections write each node's summary to ``LATEST_KEY`` and add its id to
``DIRTY_KEY``. One web process at a time (the fleet leader, elected in Redis) pops the
dirty set every FLEET_PUSH_INTERVAL and sends one ``fleet.frame`` per fleet group with
the nodes of that group that changed. A frame carries the summary without the fields
only ``/metrics`` reads.
"""

import asyncio
import json
import logging
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from apps.monitoring.broadcast import (
    DIRTY_KEY,
    FLEET_LEADER_KEY,
    LATEST_KEY,
    fleet_groups_for,
    group_send,
)
from apps.monitoring.ingest.live import METRICS_ONLY_KEYS
from apps.system.heartbeats import (
    async_redis_client,
    instance_name,
    leadership_hold,
    redis_client,
)

logger = logging.getLogger(__name__)

FRAME = "fleet.frame"


def fleet_view(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as fleet frames carry it."""
    return {k: v for k, v in summary.items() if k not in METRICS_ONLY_KEYS}


def _decode(values: list[Any]) -> list[dict[str, Any]]:
    return [fleet_view(json.loads(v)) for v in values if v]


async def fleet_push(client: aioredis.Redis) -> int:
    """Pop the dirty nodes and send their summaries to the fleet groups; returns how many."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.smembers(DIRTY_KEY)
        pipe.delete(DIRTY_KEY)
        dirty, _ = await pipe.execute()
    if not dirty:
        return 0
    ids = sorted(int(i) for i in dirty)
    summaries = _decode(await client.hmget(LATEST_KEY, ids))
    frames: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        for group in fleet_groups_for(summary.get("ws")):
            frames[group].append(summary)
    for group, nodes in frames.items():
        await group_send(group, {"type": FRAME, "nodes": nodes})
    return len(summaries)


async def fleet_loop() -> None:
    """Push fleet frames while this process leads, until cancelled; rides out Redis outages."""
    interval = settings.PODIUM["FLEET_PUSH_INTERVAL"]
    ttl_ms = int(max(2.0, interval * 8) * 1000)
    me = instance_name()
    client = async_redis_client()
    failing = False
    try:
        while True:
            try:
                if await leadership_hold(client, FLEET_LEADER_KEY, me, ttl_ms):
                    await fleet_push(client)
                failing = False
            except Exception:
                if not failing:
                    logger.warning("Redis unreachable: fleet frames paused", exc_info=True)
                failing = True
            await asyncio.sleep(interval)
    finally:
        await client.aclose()


async def fleet_snapshot(node_ids: list[int]) -> list[dict[str, Any]]:
    """The current summaries of these nodes (those that have one), as frames carry them.

    Empty when Redis cannot be reached: the page then fills in from the next frames.
    """
    if not node_ids:
        return []
    client = async_redis_client()
    try:
        return _decode(await client.hmget(LATEST_KEY, sorted(node_ids)))
    except Exception:
        logger.warning("Redis unreachable: no fleet snapshot")
        return []
    finally:
        await client.aclose()


def fleet_snapshot_sync(node_ids: list[int]) -> list[dict[str, Any]]:
    """``fleet_snapshot`` for synchronous code (views, the API)."""
    if not node_ids:
        return []
    try:
        return _decode(redis_client().hmget(LATEST_KEY, sorted(node_ids)))
    except Exception:
        logger.warning("Redis unreachable: no fleet snapshot")
        return []
