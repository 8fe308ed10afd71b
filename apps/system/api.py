"""Health endpoint: no authentication, for load balancers and monitors."""

from django.http import HttpRequest
from ninja import Router, Schema, Status

from apps.system.health import system_status

router = Router(tags=["system"])


class ComponentOut(Schema):
    ok: bool
    detail: str
    last_seen_seconds: float | None
    latency_ms: float | None


class HealthOut(Schema):
    status: str
    components: dict[str, ComponentOut]
    queue_round_trip_ms: float | None


@router.get("/health", auth=None, response={200: HealthOut, 503: HealthOut})
def health(request: HttpRequest) -> Status[dict]:
    """Database, Redis, web, worker and beat as ok/down with last-seen ages; 503 if any is down."""
    status = system_status()
    body = {
        "status": "ok" if status.ok else "degraded",
        "components": {
            c.name: {
                "ok": c.ok,
                "detail": c.detail,
                "last_seen_seconds": None if c.last_seen_age is None else round(c.last_seen_age, 1),
                "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 2),
            }
            for c in status.components
        },
        "queue_round_trip_ms": status.queue_probe and round(status.queue_probe.latency_ms, 1),
    }
    return Status(200 if status.ok else 503, body)
