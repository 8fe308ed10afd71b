"""The web process's status loop: its heartbeat, the leader's pushes, the lifespan protocol."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from apps.system.heartbeats import (
    STOPPED,
    heartbeat_publish,
    heartbeats_read,
    instance_name,
    redis_client,
)
from apps.system.lifespan import LEADER_KEY, LifespanApp, status_loop, tasks_stop

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_beats(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "HEARTBEAT_INTERVAL": 0.2, "HEARTBEAT_STALE_AFTER": 1}


async def stop(task: asyncio.Task) -> None:
    await tasks_stop([task])


def my_web_beat() -> Any:
    return next(b for b in heartbeats_read()["web"] if b.instance == instance_name())


@pytest.mark.integration
async def test_the_loop_beats_and_pushes_the_status_partial(
    fast_beats: None, in_memory_channel_layer: None, capture_broadcasts: Callable[..., Any]
) -> None:
    started_at = time.time()
    async with capture_broadcasts() as captured:
        task = asyncio.create_task(status_loop(started_at))
        try:
            (message,) = await captured.collect(1)
            await asyncio.sleep(1)
            beat = my_web_beat()
        finally:
            await stop(task)

    assert message["type"] == "status.update"
    assert 'id="status-components"' in message["html"]
    assert 'id="component-web"' in message["html"]
    assert beat.state == "running"
    assert beat.started_at == pytest.approx(started_at)
    assert beat.age(time.time()) < 0.5
    assert my_web_beat().state == "stopped"


@pytest.mark.integration
async def test_a_steady_system_is_not_pushed_on_every_tick(
    fast_beats: None, in_memory_channel_layer: None, capture_broadcasts: Callable[..., Any]
) -> None:
    pushed = []
    async with capture_broadcasts() as captured:
        task = asyncio.create_task(status_loop(time.time()))
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    pushed.append(await captured.receive(timeout=0.1))
        finally:
            await stop(task)

    assert 1 <= len(pushed) <= 2, f"{len(pushed)} pushes in 10 ticks of an unchanged system"


@pytest.mark.integration
async def test_a_push_that_failed_is_sent_again_on_the_next_tick(
    fast_beats: None,
    in_memory_channel_layer: None,
    capture_broadcasts: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.system import lifespan

    real_broadcast = lifespan.status_broadcast
    calls = []

    async def flaky_broadcast(html: str) -> None:
        calls.append(html)
        if len(calls) == 1:
            raise ConnectionError("channel layer unreachable")
        await real_broadcast(html)

    monkeypatch.setattr(lifespan, "status_broadcast", flaky_broadcast)
    async with capture_broadcasts() as captured:
        task = asyncio.create_task(status_loop(time.time()))
        try:
            (message,) = await captured.collect(1)
        finally:
            await stop(task)

    assert len(calls) >= 2
    assert 'id="component-web"' in message["html"]


@pytest.mark.integration
async def test_a_process_that_is_not_leader_beats_but_does_not_push(
    fast_beats: None, in_memory_channel_layer: None, capture_broadcasts: Callable[..., Any]
) -> None:
    redis_client().set(LEADER_KEY, "another-host:1", px=10_000)
    async with capture_broadcasts() as captured:
        task = asyncio.create_task(status_loop(time.time()))
        try:
            await asyncio.sleep(0.8)
            with pytest.raises(TimeoutError):
                await captured.receive(timeout=0.1)
            beat = my_web_beat()
        finally:
            await stop(task)

    assert beat.state == "running"


@pytest.mark.integration
async def test_the_lifespan_protocol_starts_and_stops_the_loop(fast_beats: None) -> None:
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    app = asyncio.create_task(LifespanApp()({"type": "lifespan"}, inbox.get, outbox.put))

    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 3))["type"] == "lifespan.startup.complete"
    await asyncio.sleep(0.5)
    running = my_web_beat().state
    await inbox.put({"type": "lifespan.shutdown"})
    assert (await asyncio.wait_for(outbox.get(), 3))["type"] == "lifespan.shutdown.complete"
    await asyncio.wait_for(app, 3)

    assert running == "running"
    assert my_web_beat().state == "stopped"


async def test_the_loop_survives_an_unreachable_redis(
    fast_beats: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="apps.system.lifespan")
    task = asyncio.create_task(status_loop(time.time()))

    await asyncio.sleep(0.7)

    assert not task.done()
    await stop(task)
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1


@pytest.fixture
def test_session_pid() -> int:
    """The database session of the test itself, which must survive the simulated restart."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate_database_sessions(keep: int) -> None:
    """What a database restart does to the console's open connections."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                [keep],
            )
    finally:
        connection.close()


@pytest.mark.integration
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="cuts database connections: needs PostgreSQL"
)
async def test_the_status_recovers_when_the_database_drops_its_connection(
    fast_beats: None,
    in_memory_channel_layer: None,
    capture_broadcasts: Callable[..., Any],
    test_session_pid: int,
) -> None:
    def database_ok(message: dict) -> bool:
        return 'id="component-database" class="ok"' in message["html"]

    async with capture_broadcasts() as captured:
        task = asyncio.create_task(status_loop(time.time()))
        try:
            assert database_ok(await captured.receive(timeout=3))
            await asyncio.to_thread(_terminate_database_sessions, test_session_pid)
            # Something the page must show, so the loop renders and pushes again.
            await asyncio.to_thread(
                heartbeat_publish, component="beat", started_at=time.time(), state=STOPPED
            )
            seen = []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not (seen and database_ok(seen[-1])):
                with contextlib.suppress(TimeoutError):
                    seen.append(await captured.receive(timeout=0.2))
        finally:
            await stop(task)

    assert seen
    assert database_ok(seen[-1]), "the database stays reported down after a reconnect"


async def test_a_loop_that_absorbs_a_cancellation_is_cancelled_again() -> None:
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)

    await asyncio.wait_for(tasks_stop([task]), timeout=10)

    assert task.cancelled()
