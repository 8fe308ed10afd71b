"""Fleet frames: the changed nodes' summaries, to the right groups, from one leader."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from apps.monitoring.broadcast import (
    DIRTY_KEY,
    FLEET_ALL_GROUP,
    FLEET_LEADER_KEY,
    FLEET_SHARED_GROUP,
    LATEST_KEY,
    fleet_workspace_group,
)
from apps.monitoring.fleet import fleet_loop, fleet_push, fleet_snapshot, fleet_snapshot_sync
from apps.system.heartbeats import async_redis_client, redis_client
from apps.system.lifespan import tasks_stop


def summary(node_id: int, ws: int | None) -> dict[str, Any]:
    return {
        "id": node_id, "name": f"n{node_id}", "ws": ws, "state": "ready", "health": "healthy",
        "simulated": True, "ts": 1.0, "seq": 1, "gpus": [[1.0, 2.0, 3.0, 4.0, 0]],
        "host": {"cpu": 1.0, "mem_pct": 2.0}, "power_w": 4.0,
        "fb": [[1.0, 2.0]], "ecc": [[0, 0]],
    }  # fmt: skip


def publish(*summaries: dict[str, Any], dirty: bool = True) -> None:
    client = redis_client()
    for s in summaries:
        client.hset(LATEST_KEY, s["id"], json.dumps(s))
        if dirty:
            client.sadd(DIRTY_KEY, s["id"])


async def stop(task: asyncio.Task) -> None:
    await tasks_stop([task])


@pytest.mark.integration
async def test_a_frame_per_group_carries_only_the_changed_nodes(
    in_memory_channel_layer: None, capture_broadcasts: Callable[..., Any]
) -> None:
    publish(summary(1, None), summary(2, 7), summary(3, 8))
    publish(summary(4, None), dirty=False)
    client = async_redis_client()
    try:
        async with (
            capture_broadcasts(expected=1, group=FLEET_ALL_GROUP) as everyone,
            capture_broadcasts(expected=1, group=FLEET_SHARED_GROUP) as shared,
            capture_broadcasts(expected=1, group=fleet_workspace_group(7)) as ws7,
        ):
            assert await fleet_push(client) == 3
        assert await fleet_push(client) == 0
    finally:
        await client.aclose()

    (frame,) = everyone.messages
    assert frame["type"] == "fleet.frame"
    assert [n["id"] for n in frame["nodes"]] == [1, 2, 3]
    assert "fb" not in frame["nodes"][0]
    assert "ecc" not in frame["nodes"][0]
    assert frame["nodes"][0]["gpus"] == [[1.0, 2.0, 3.0, 4.0, 0]]
    assert [n["id"] for n in shared.messages[0]["nodes"]] == [1]
    assert [n["id"] for n in ws7.messages[0]["nodes"]] == [2]
    assert not redis_client().exists(DIRTY_KEY)


@pytest.mark.integration
async def test_the_loop_leads_and_pushes_changes(
    in_memory_channel_layer: None, capture_broadcasts: Callable[..., Any], settings: Any
) -> None:
    settings.PODIUM = {**settings.PODIUM, "FLEET_PUSH_INTERVAL": 0.05}
    async with capture_broadcasts(group=FLEET_ALL_GROUP) as captured:
        task = asyncio.create_task(fleet_loop())
        try:
            await asyncio.sleep(0.1)
            publish(summary(5, None))
            frame = await captured.receive(timeout=2)
        finally:
            await stop(task)

    assert [n["id"] for n in frame["nodes"]] == [5]
    assert redis_client().get(FLEET_LEADER_KEY)


@pytest.mark.integration
async def test_a_follower_leaves_the_dirty_set_to_the_leader(
    in_memory_channel_layer: None, settings: Any
) -> None:
    settings.PODIUM = {**settings.PODIUM, "FLEET_PUSH_INTERVAL": 0.05}
    redis_client().set(FLEET_LEADER_KEY, "another-process", px=5000)
    publish(summary(6, None))
    task = asyncio.create_task(fleet_loop())
    await asyncio.sleep(0.3)
    await stop(task)

    assert redis_client().sismember(DIRTY_KEY, 6)


async def test_the_loop_rides_out_a_missing_redis(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "FLEET_PUSH_INTERVAL": 0.02}
    task = asyncio.create_task(fleet_loop())
    await asyncio.sleep(0.2)

    assert not task.done()
    await stop(task)


@pytest.mark.integration
async def test_a_snapshot_reads_the_nodes_asked_for() -> None:
    publish(summary(1, None), summary(2, 7), dirty=False)

    nodes = await fleet_snapshot([2, 1, 99])

    assert [n["id"] for n in nodes] == [1, 2]
    assert "fb" not in nodes[0]
    assert [n["id"] for n in fleet_snapshot_sync([2])] == [2]
    assert await fleet_snapshot([]) == []


async def test_a_snapshot_without_redis_is_empty() -> None:
    assert await fleet_snapshot([1]) == []
    assert fleet_snapshot_sync([1]) == []
