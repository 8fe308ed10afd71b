"""The web process's background loop, run under the ASGI lifespan protocol.

Every web process beats its own heartbeat. One of them at a time (elected with a
Redis lock that expires) also watches the components and pushes the status
partial to browsers whenever what they show changes.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from apps.system.broadcast import status_broadcast, status_html
from apps.system.health import system_status
from apps.system.heartbeats import (
    STOPPED,
    async_redis_client,
    heartbeat_publish_async,
    instance_name,
)

logger = logging.getLogger(__name__)

LEADER_KEY = "podium:status-leader"


async def _leader(client: aioredis.Redis, me: str, ttl_ms: int) -> bool:
    """Take or keep the status-watcher role; True while this process holds it."""
    if await client.set(LEADER_KEY, me, nx=True, px=ttl_ms):
        return True
    if await client.get(LEADER_KEY) == me:
        await client.pexpire(LEADER_KEY, ttl_ms)
        return True
    return False


async def status_loop(started_at: float) -> None:
    """Beat, and while leader push status changes, until cancelled."""
    interval = settings.PODIUM["HEARTBEAT_INTERVAL"]
    me = instance_name()
    client = async_redis_client()
    last_fingerprint = None
    failing = False
    try:
        while True:
            try:
                await heartbeat_publish_async(client, component="web", started_at=started_at)
                leader = await _leader(client, me, ttl_ms=int(interval * 4000))
                failing = False
            except Exception:
                if not failing:
                    logger.warning("Redis unreachable: heartbeats and live status paused")
                failing = True
                leader = False
            if leader:
                status = await database_sync_to_async(system_status)()
                fingerprint = status.fingerprint()
                if fingerprint != last_fingerprint:
                    last_fingerprint = fingerprint
                    html = await sync_to_async(status_html)(status)
                    with contextlib.suppress(Exception):
                        await status_broadcast(html)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            await heartbeat_publish_async(
                client, component="web", started_at=started_at, state=STOPPED
            )
        await client.aclose()


class LifespanApp:
    """Starts the status loop when the server starts and stops it when the server stops."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        task: asyncio.Task | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                task = asyncio.create_task(status_loop(time.time()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await send({"type": "lifespan.shutdown.complete"})
                return
