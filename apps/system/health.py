"""The state of every component the console depends on, for the status page and /api/health."""

import json
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from apps.system.heartbeats import DIED, RUNNING, Heartbeat, heartbeats_read, redis_client

QUEUE_PROBE_KEY = "podium:queue-probe"

LABELS = {
    "web": "Web",
    "database": "Database",
    "redis": "Redis",
    "worker": "Worker",
    "beat": "Beat",
}


@dataclass(frozen=True)
class ComponentState:
    """One line of the status page."""

    name: str
    ok: bool
    detail: str
    last_seen_age: float | None = None
    latency_ms: float | None = None
    instances: list[Heartbeat] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.name]


@dataclass(frozen=True)
class QueueProbe:
    """The last task beat sent through the broker to a worker."""

    latency_ms: float
    age: float


@dataclass(frozen=True)
class SystemStatus:
    components: list[ComponentState]
    queue_probe: QueueProbe | None
    checked_at: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.components)

    def fingerprint(self) -> str:
        """What the page shows, to tell whether anything changed since the last push.

        Check latencies are left out: they wobble on every tick and would push a
        steady page twice a second."""
        parts = [
            (c.name, c.ok, c.detail, None if c.last_seen_age is None else round(c.last_seen_age))
            for c in self.components
        ]
        probe = self.queue_probe and (
            round(self.queue_probe.latency_ms),
            round(self.queue_probe.age),
        )
        return json.dumps([parts, probe])


def _database_state() -> ComponentState:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return ComponentState("database", ok=False, detail=f"unreachable: {exc}"[:200])
    elapsed = (time.perf_counter() - started) * 1000
    return ComponentState("database", ok=True, detail=connection.vendor, latency_ms=elapsed)


def _component_state(name: str, beats: list[Heartbeat], now: float) -> ComponentState:
    if not beats:
        return ComponentState(name, ok=False, detail="never seen")
    alive = [b for b in beats if b.alive(now)]
    newest = beats[0]
    if alive:
        count = len(alive)
        detail = f"{count} process{'es' if count > 1 else ''} running"
        return ComponentState(
            name, ok=True, detail=detail, last_seen_age=alive[0].age(now), instances=beats
        )
    reasons = {
        RUNNING: "no heartbeat",
        DIED: f"died ({newest.detail})" if newest.detail else "died",
    }
    reason = reasons.get(newest.state, "stopped")
    return ComponentState(
        name, ok=False, detail=reason, last_seen_age=newest.age(now), instances=beats
    )


def system_status() -> SystemStatus:
    """Check the database and Redis, and read every component's heartbeats."""
    now = time.time()
    components = [_database_state()]
    probe = None
    try:
        client = redis_client()
        started = time.perf_counter()
        client.ping()
        elapsed = (time.perf_counter() - started) * 1000
        beats = heartbeats_read(client)
        raw_probe = client.get(QUEUE_PROBE_KEY)
    except Exception as exc:
        components.append(ComponentState("redis", ok=False, detail=f"unreachable: {exc}"[:200]))
        components.extend(
            ComponentState(name, ok=False, detail="unknown while Redis is down")
            for name in ("web", "worker", "beat")
        )
        return SystemStatus(components=_ordered(components), queue_probe=None, checked_at=now)
    where = "embedded" if settings.REDIS_IS_EMBEDDED else "external"
    components.append(ComponentState("redis", ok=True, detail=where, latency_ms=elapsed))
    components.extend(
        _component_state(name, beats[name], now) for name in ("web", "worker", "beat")
    )
    if raw_probe:
        data = json.loads(raw_probe)
        probe = QueueProbe(latency_ms=data["latency_ms"], age=max(0.0, now - data["done_at"]))
    return SystemStatus(components=_ordered(components), queue_probe=probe, checked_at=now)


def _ordered(components: list[ComponentState]) -> list[ComponentState]:
    order = list(LABELS)
    return sorted(components, key=lambda c: order.index(c.name))
