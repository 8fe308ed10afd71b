"""Periodic tasks: the heartbeat sweep, rollups and retention."""

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.monitoring import tasks
from apps.monitoring.broadcast import LATEST_KEY, SEEN_KEY, node_group
from apps.monitoring.models import GpuRollup, GpuSample, HealthEvent, HostSample, Node
from apps.monitoring.retention import rollup_hours, rollup_minutes, telemetry_prune
from apps.system.heartbeats import redis_client
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db


# Sweep -------------------------------------------------------------------------------------


def heard(node: Node, seconds_ago: float) -> None:
    redis_client().hset(SEEN_KEY, node.pk, time.time() - seconds_ago)


def heartbeat_events(node: Node) -> list[tuple[str, str, bool]]:
    return [
        (e.code, e.severity, e.resolved_at is not None)
        for e in HealthEvent.objects.filter(node=node, source="heartbeat").order_by("id")
    ]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_silent_node_turns_suspect_then_lost_then_ready_when_heard_again() -> None:
    node = node_create()
    layer = get_channel_layer()
    watcher = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(node_group(node.pk), watcher)

    heard(node, 2)
    assert tasks.sweep_nodes() == 0
    heard(node, 7)
    assert tasks.sweep_nodes() == 1
    assert Node.objects.get(pk=node.pk).state == "suspect"
    assert heartbeat_events(node) == [("suspect", "warning", False)]
    heard(node, 11)
    tasks.sweep_nodes()
    lost = Node.objects.get(pk=node.pk)
    assert lost.state == "lost"
    assert lost.last_seen_at.timestamp() == pytest.approx(time.time() - 11, abs=1)
    assert heartbeat_events(node) == [("suspect", "warning", True), ("lost", "critical", False)]
    heard(node, 0)
    tasks.sweep_nodes()

    assert Node.objects.get(pk=node.pk).state == "ready"
    assert heartbeat_events(node) == [
        ("suspect", "warning", True),
        ("lost", "critical", True),
        ("recovered", "info", True),
    ]
    states = []
    while len(states) < 3:
        message = async_to_sync(asyncio.wait_for)(layer.receive(watcher), 3)
        if message["type"] == "node.state":
            states.append(message["state"])
            assert message["gpus"] == {str(i): "healthy" for i in range(8)}
    assert states == ["suspect", "lost", "ready"]
    assert json.loads(redis_client().hget(LATEST_KEY, node.pk))["state"] == "ready"


@pytest.mark.integration
def test_a_node_silent_past_the_lost_time_goes_straight_to_lost() -> None:
    node = node_create()
    heard(node, 60)

    tasks.sweep_nodes()

    assert Node.objects.get(pk=node.pk).state == "lost"
    assert heartbeat_events(node) == [("lost", "critical", False)]


@pytest.mark.integration
def test_revoked_and_pending_nodes_are_left_alone() -> None:
    revoked = node_create("gone", state=Node.State.REVOKED)
    Node.objects.filter(pk=revoked.pk).update(revoked_at=revoked.joined_at)
    pending = node_create("new", state=Node.State.PENDING)
    heard(revoked, 60)
    heard(pending, 60)

    assert tasks.sweep_nodes() == 0


@pytest.mark.integration
def test_two_sweeps_never_overlap() -> None:
    node = node_create()
    heard(node, 60)
    lock = redis_client().lock(tasks.SWEEP_LOCK_KEY, timeout=5)
    assert lock.acquire(blocking=False)
    try:
        assert tasks.sweep_nodes() == 0
        assert Node.objects.get(pk=node.pk).state == "ready"
    finally:
        lock.release()

    assert tasks.sweep_nodes() == 1


def test_without_redis_the_sweep_declares_nobody_lost() -> None:
    node = node_create()
    Node.objects.filter(pk=node.pk).update(last_seen_at=node.last_seen_at.replace(year=2000))

    assert tasks.sweep_nodes() == 0
    assert Node.objects.get(pk=node.pk).state == "ready"


# Rollups -----------------------------------------------------------------------------------

T0 = 1_700_000_040.0  # a minute boundary
assert T0 % 60 == 0


def sample(node: Node, ts: float, gpu: int = 0, **values: Any) -> GpuSample:
    return GpuSample.objects.create(node=node, gpu_index=gpu, ts=ts, **values)


def minute(node: Node, bucket: float, gpu: int = 0) -> GpuRollup:
    return GpuRollup.objects.get(
        node=node, gpu_index=gpu, resolution=GpuRollup.MINUTE, bucket=bucket
    )


def test_minute_rollups_hold_min_avg_max_per_gpu_and_closed_minute() -> None:
    node = node_create(gpus=2)
    for second, util in ((0, 10), (20, 20), (59.5, 60)):
        sample(node, T0 + second, util=util, temp_c=50 + util, power_w=None)
    sample(node, T0 + 60, util=99)  # the next minute
    sample(node, T0 + 30, gpu=1, util=5)
    sample(node, T0 + 130, util=1)  # the current, open minute: not yet

    written = rollup_minutes(now=T0 + 125)

    assert written == 3
    first = minute(node, T0)
    assert (first.samples, first.util_min, first.util_avg, first.util_max) == (3, 10, 30, 60)
    assert (first.temp_min, first.temp_max) == (60, 110)
    assert (first.power_min, first.power_avg, first.power_max) == (None, None, None)
    assert minute(node, T0 + 60).util_avg == 99
    assert minute(node, T0, gpu=1).util_max == 5
    assert not GpuRollup.objects.filter(bucket=T0 + 120).exists()


def test_rollups_are_idempotent_and_fold_in_late_samples() -> None:
    node = node_create(gpus=1)
    sample(node, T0 + 1, util=10)
    rollup_minutes(now=T0 + 90)
    rollup_minutes(now=T0 + 90)
    assert GpuRollup.objects.count() == 1

    sample(node, T0 + 2, util=30)  # replayed late
    rollup_minutes(now=T0 + 150)

    rollup = minute(node, T0)
    assert (GpuRollup.objects.count(), rollup.samples, rollup.util_avg) == (1, 2, 20)


def test_hour_rollups_weigh_minutes_by_their_samples() -> None:
    node = node_create(gpus=1)
    hour = 1_699_999_200.0  # an hour boundary
    assert hour % 3600 == 0
    for second, util in ((0, 10), (1, 10), (2, 10), (60, 50)):
        sample(node, hour + second, util=util, temp_c=40 + second)
    rollup_minutes(now=hour + 600)

    rollup_hours(now=hour + 600)
    rollup_hours(now=hour + 600)

    rollup = GpuRollup.objects.get(resolution=GpuRollup.HOUR)
    assert (rollup.bucket, rollup.samples) == (hour, 4)
    assert (rollup.util_min, rollup.util_avg, rollup.util_max) == (10, 20, 50)
    assert (rollup.temp_min, rollup.temp_max) == (40, 100)
    assert rollup.power_avg is None


def test_the_rollup_task_runs_both() -> None:
    node = node_create(gpus=1)
    now = time.time()
    sample(node, (now // 60 - 2) * 60 + 1, util=42)

    result = tasks.rollup()

    assert result["minutes"] == 1
    assert result["hours"] == 1


# Retention ---------------------------------------------------------------------------------


def test_prune_deletes_past_retention_and_keeps_the_rest(settings: Any) -> None:
    settings.PODIUM = {
        **settings.PODIUM,
        "RAW_RETENTION_HOURS": 1,
        "MINUTE_RETENTION_DAYS": 1,
        "HOUR_RETENTION_DAYS": 10,
    }
    node = node_create(gpus=1)
    now = time.time()
    sample(node, now - 7200, util=1)
    sample(node, now - 60, util=2)
    HostSample.objects.create(node=node, ts=now - 7200)
    HostSample.objects.create(node=node, ts=now - 60)
    for resolution, age in (
        (GpuRollup.MINUTE, 2 * 86400),
        (GpuRollup.MINUTE, 3600),
        (GpuRollup.HOUR, 11 * 86400),
        (GpuRollup.HOUR, 2 * 86400),
    ):
        GpuRollup.objects.create(node=node, gpu_index=0, resolution=resolution, bucket=now - age)

    counts = telemetry_prune(now=now)

    assert counts == {"gpu_samples": 1, "host_samples": 1, "minute_rollups": 1, "hour_rollups": 1}
    assert list(GpuSample.objects.values_list("util", flat=True)) == [2]
    assert GpuRollup.objects.count() == 2


@pytest.mark.integration
def test_the_prune_task_forgets_live_entries_of_revoked_nodes() -> None:
    kept = node_create("kept")
    gone = node_create("gone")
    Node.objects.filter(pk=gone.pk).update(revoked_at=gone.joined_at)
    client = redis_client()
    for node in (kept, gone):
        client.hset(LATEST_KEY, node.pk, "{}")
        client.hset(SEEN_KEY, node.pk, time.time())

    assert tasks.prune()["live"] == 1

    assert [int(k) for k in client.hkeys(LATEST_KEY)] == [kept.pk]
    assert [int(k) for k in client.hkeys(SEEN_KEY)] == [kept.pk]
