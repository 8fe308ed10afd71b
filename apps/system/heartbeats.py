"""Component heartbeats in Redis: each web, worker and beat process says it is alive.

One hash per component (``podium:heartbeat:<component>``), one field per process
instance holding a small JSON record. A process that stops cleanly marks itself
stopped at once; one that dies simply stops beating and goes stale.
"""

import json
import os
import socket
import time
from dataclasses import dataclass
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

COMPONENTS = ("web", "worker", "beat")
KEY_PREFIX = "podium:heartbeat:"
FORGET_AFTER = 24 * 3600
RUNNING = "running"
STOPPED = "stopped"
DIED = "died"


@dataclass(frozen=True)
class Heartbeat:
    """The last word of one process."""

    component: str
    instance: str
    host: str
    pid: int
    state: str
    at: float
    started_at: float
    detail: str = ""

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def alive(self, now: float) -> bool:
        return self.state == RUNNING and self.age(now) <= settings.PODIUM["HEARTBEAT_STALE_AFTER"]


def instance_name() -> str:
    """This process's instance name: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@cache
def redis_client() -> redis.Redis:
    """A client with short timeouts, so a dead Redis never hangs a page."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)


async def leadership_hold(client: aioredis.Redis, key: str, me: str, ttl_ms: int) -> bool:
    """Take or keep the role named ``key`` among processes; True while ``me`` holds it.

    The role expires ``ttl_ms`` after its holder last renewed it, so another process
    takes over when the holder dies.
    """
    if await client.set(key, me, nx=True, px=ttl_ms):
        return True
    if await client.get(key) == me:
        await client.pexpire(key, ttl_ms)
        return True
    return False


def async_redis_client() -> aioredis.Redis:
    """An asyncio client with the same timeouts, for the web process's own loop."""
    return aioredis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5, decode_responses=True
    )


def _record(component: str, state: str, started_at: float) -> tuple[str, str, str]:
    instance = instance_name()
    payload = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "state": state,
        "at": time.time(),
        "started_at": started_at,
    }
    return KEY_PREFIX + component, instance, json.dumps(payload)


def heartbeat_publish(*, component: str, started_at: float, state: str = RUNNING) -> None:
    """Record that this process of ``component`` is alive (or has stopped)."""
    key, field, value = _record(component, state, started_at)
    redis_client().hset(key, field, value)


def heartbeat_record_death(component: str, pid: int, detail: str) -> None:
    """Record at once that the process ``pid`` of ``component`` on this host died.

    Its supervisor calls this when it reaps the process, so the status turns red without
    waiting for the heartbeat to go stale, even when a replacement starts quickly.
    """
    client = redis_client()
    key, field = KEY_PREFIX + component, f"{socket.gethostname()}:{pid}"
    previous = client.hget(key, field)
    started_at = json.loads(previous)["started_at"] if previous else time.time()
    payload = {
        "host": socket.gethostname(),
        "pid": pid,
        "state": DIED,
        "at": time.time(),
        "started_at": started_at,
        "detail": detail,
    }
    client.hset(key, field, json.dumps(payload))


async def heartbeat_publish_async(
    client: aioredis.Redis, *, component: str, started_at: float, state: str = RUNNING
) -> None:
    """The same as ``heartbeat_publish`` from an event loop."""
    key, field, value = _record(component, state, started_at)
    await client.hset(key, field, value)


def heartbeats_read(client: redis.Redis | None = None) -> dict[str, list[Heartbeat]]:
    """Every known instance of every component, newest first; forgets long-gone ones."""
    client = client or redis_client()
    now = time.time()
    pipe = client.pipeline()
    for component in COMPONENTS:
        pipe.hgetall(KEY_PREFIX + component)
    result: dict[str, list[Heartbeat]] = {}
    for component, raw in zip(COMPONENTS, pipe.execute(), strict=True):
        beats = []
        for field, value in raw.items():
            data = json.loads(value)
            beat = Heartbeat(component=component, instance=field.decode(), **data)
            if beat.age(now) > FORGET_AFTER:
                client.hdel(KEY_PREFIX + component, field)
                continue
            beats.append(beat)
        result[component] = sorted(beats, key=lambda b: b.at, reverse=True)
    return result
