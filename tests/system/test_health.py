"""Health and heartbeats: /api/health, system_status, and the components' heartbeats."""

import os
import time
from typing import Any

import pytest
from django.test import Client

from apps.system.health import system_status
from apps.system.heartbeats import (
    COMPONENTS,
    STOPPED,
    heartbeat_publish,
    heartbeat_record_death,
    heartbeats_read,
    instance_name,
    redis_client,
)

pytestmark = pytest.mark.django_db


def beat_all(started_at: float | None = None) -> None:
    for component in COMPONENTS:
        heartbeat_publish(component=component, started_at=started_at or time.time())


def states(body: dict) -> dict[str, bool]:
    return {name: c["ok"] for name, c in body["components"].items()}


# Without Redis -----------------------------------------------------------------------------


def test_health_is_503_naming_redis_when_it_is_unreachable(db: None) -> None:
    response = Client().get("/api/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert states(body) == {
        "database": True,
        "redis": False,
        "web": False,
        "worker": False,
        "beat": False,
    }
    assert body["components"]["redis"]["detail"].startswith("unreachable")
    assert body["components"]["worker"]["detail"] == "unknown while Redis is down"
    assert body["queue_round_trip_ms"] is None


def test_health_needs_no_authentication_and_answers_fast(db: None) -> None:
    started = time.monotonic()

    response = Client().get("/api/health")

    assert response.status_code in {200, 503}
    assert time.monotonic() - started < 2


# With Redis --------------------------------------------------------------------------------


@pytest.mark.integration
def test_heartbeats_round_trip() -> None:
    started_at = time.time() - 5

    heartbeat_publish(component="worker", started_at=started_at)

    beats = heartbeats_read()
    assert set(beats) == set(COMPONENTS)
    assert beats["web"] == beats["beat"] == []
    (beat,) = beats["worker"]
    assert beat.instance == instance_name()
    assert beat.state == "running"
    assert beat.started_at == pytest.approx(started_at)
    assert beat.alive(time.time())


@pytest.mark.integration
def test_health_is_200_when_every_component_beats() -> None:
    beat_all()

    response = Client().get("/api/health")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert all(states(body).values())
    assert body["components"]["worker"]["detail"] == "1 process running"
    assert body["components"]["worker"]["last_seen_seconds"] < 1.5


@pytest.mark.integration
def test_a_stopped_worker_makes_health_503_naming_it() -> None:
    beat_all()
    heartbeat_publish(component="worker", started_at=time.time(), state=STOPPED)

    response = Client().get("/api/health")

    assert response.status_code == 503
    body = response.json()
    assert [name for name, ok in states(body).items() if not ok] == ["worker"]
    assert body["components"]["worker"]["detail"] == "stopped"


@pytest.mark.integration
def test_a_worker_reported_dead_is_down_at_once_with_how_it_died() -> None:
    beat_all()
    heartbeat_record_death("worker", os.getpid(), "killed by SIGKILL")

    status = {c.name: c for c in system_status().components}

    assert status["worker"].ok is False
    assert status["worker"].detail == "died (killed by SIGKILL)"
    assert status["web"].ok


@pytest.mark.integration
def test_a_heartbeat_older_than_the_stale_age_is_down(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "HEARTBEAT_STALE_AFTER": 0.2}
    beat_all()
    time.sleep(0.3)
    heartbeat_publish(component="web", started_at=time.time())
    heartbeat_publish(component="beat", started_at=time.time())

    status = {c.name: c for c in system_status().components}

    assert status["worker"].ok is False
    assert status["worker"].detail == "no heartbeat"
    assert status["worker"].last_seen_age >= 0.3
    assert status["web"].ok
    assert status["beat"].ok


@pytest.mark.integration
def test_a_component_never_seen_is_down() -> None:
    heartbeat_publish(component="web", started_at=time.time())

    status = {c.name: c for c in system_status().components}

    assert [c.name for c in system_status().components] == [
        "web",
        "database",
        "redis",
        "worker",
        "beat",
    ]
    assert status["database"].ok
    assert status["redis"].ok
    assert status["web"].ok
    assert (status["worker"].ok, status["worker"].detail) == (False, "never seen")
    assert (status["beat"].ok, status["beat"].detail) == (False, "never seen")


@pytest.mark.integration
def test_one_live_process_of_several_keeps_a_component_up() -> None:
    heartbeat_publish(component="worker", started_at=time.time())
    stale = '{"host": "gone", "pid": 1, "state": "running", "at": 0, "started_at": 0}'
    redis_client().hset("podium:heartbeat:worker", "gone:1", stale)
    redis_client().hset(
        "podium:heartbeat:worker",
        "old:2",
        stale.replace('"at": 0', f'"at": {time.time() - 60}'),
    )

    worker = next(c for c in system_status().components if c.name == "worker")

    assert worker.ok
    assert worker.detail == "1 process running"
    assert [b.instance for b in worker.instances] == [instance_name(), "old:2"]
    assert not redis_client().hexists("podium:heartbeat:worker", "gone:1")


@pytest.mark.integration
def test_the_status_reports_the_last_queue_probe() -> None:
    from apps.system.tasks import queue_probe

    beat_all()
    queue_probe.apply()

    body = Client().get("/api/health").json()

    assert body["queue_round_trip_ms"] is not None
    assert body["queue_round_trip_ms"] >= 0
