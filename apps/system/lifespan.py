"""The web process's background loops, run under the ASGI lifespan protocol.

Every web process beats its own heartbeat. One of them at a time (elected with a
Redis lock that expires) also watches the components and pushes the status
partial to browsers whenever what they show changes. Other apps add their own
loops by dotted path in ``settings.LIFESPAN_LOOPS``; each is an async callable
that runs until cancelled.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from apps.system.broadcast import status_broadcast, status_html
from apps.system.health import system_status
from apps.system.heartbeats import (
    STOPPED,
    async_redis_client,
    heartbeat_publish_async,
    instance_name,
    leadership_hold,
)

logger = logging.getLogger(__name__)

LEADER_KEY = "podium:status-leader"
CANCEL_RETRY = 1.0  # seconds between two cancellations of a loop that did not end


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
                leader = await leadership_hold(client, LEADER_KEY, me, ttl_ms=int(interval * 4000))
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
                    html = await sync_to_async(status_html)(status)
                    try:
                        await status_broadcast(html)
                    except Exception:
                        logger.warning("could not push the status change; retrying", exc_info=True)
                    else:
                        last_fingerprint = fingerprint
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            await heartbeat_publish_async(
                client, component="web", started_at=started_at, state=STOPPED
            )
        await client.aclose()


async def tasks_stop(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the loops and wait until each has ended.

    A cancellation that arrives while a loop waits for a thread (``sync_to_async``) can be
    absorbed by asgiref, and the loop would go on: such a task is cancelled again until
    it ends.
    """
    for task in tasks:
        task.cancel()
    for task in tasks:
        while not task.done():
            await asyncio.wait({task}, timeout=CANCEL_RETRY)
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()


class LifespanApp:
    """Starts the background loops when the server starts and stops them when it stops."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        tasks: list[asyncio.Task] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                tasks.append(asyncio.create_task(status_loop(time.time())))
                tasks.extend(
                    asyncio.create_task(import_string(path)())
                    for path in getattr(settings, "LIFESPAN_LOOPS", [])
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await tasks_stop(tasks)
                await send({"type": "lifespan.shutdown.complete"})
                return
