"""Reads: every query starts from the nodes the user may see."""

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.monitoring import selectors
from apps.monitoring.broadcast import (
    FLEET_ALL_GROUP,
    FLEET_SHARED_GROUP,
    LATEST_KEY,
    REJECTED_KEY,
    SEEN_KEY,
    fleet_workspace_group,
)
from apps.monitoring.models import (
    AlertChannel,
    AlertDelivery,
    Gpu,
    GpuRollup,
    GpuSample,
    JoinToken,
    Node,
)
from apps.system.errors import ApplicationError, NotFoundError, PermissionDeniedError
from apps.system.heartbeats import redis_client
from tests.conftest import Cast
from tests.monitoring.factories import event_create, node_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene(cast: Cast) -> dict[str, Node]:
    return {
        "shared": node_create("shared-1"),
        "mine": node_create("vision-1", workspace=cast.workspace),
        "theirs": node_create("speech-1", workspace=cast.other_workspace),
    }


# Visibility ---------------------------------------------------------------------------------


def test_a_member_sees_shared_nodes_and_their_workspaces_not_others(
    cast: Cast, scene: dict[str, Node]
) -> None:
    names = {n.name for n in selectors.node_list(user=cast.member)}

    assert names == {"shared-1", "vision-1"}
    assert set(selectors.node_ids_visible(user=cast.viewer)) == {
        scene["shared"].pk,
        scene["mine"].pk,
    }


def test_a_platform_admin_sees_every_node(cast: Cast, scene: dict[str, Node]) -> None:
    names = {n.name for n in selectors.node_list(user=cast.platform_admin)}

    assert names == {"shared-1", "vision-1", "speech-1"}


def test_a_user_of_no_workspace_sees_only_shared_nodes(
    cast: Cast, scene: dict[str, Node], make_user: Any
) -> None:
    assert [n.name for n in selectors.node_list(user=make_user("loner"))] == ["shared-1"]


def test_another_workspaces_node_and_gpus_are_not_found(cast: Cast, scene: dict[str, Node]) -> None:
    theirs = scene["theirs"]

    with pytest.raises(NotFoundError):
        selectors.node_get(user=cast.member, node_id=theirs.pk)
    with pytest.raises(NotFoundError):
        selectors.gpu_get(user=cast.member, node_id=theirs.pk, index=0)
    assert selectors.node_get(user=cast.outsider, node_id=theirs.pk) == theirs


def test_a_gpu_index_that_does_not_exist_is_not_found(cast: Cast, scene: dict[str, Node]) -> None:
    with pytest.raises(NotFoundError) as caught:
        selectors.gpu_get(user=cast.member, node_id=scene["mine"].pk, index=8)

    assert caught.value.field == "index"


def test_fleet_groups_follow_the_users_scope(cast: Cast) -> None:
    assert selectors.fleet_groups_for_user(user=cast.platform_admin) == [FLEET_ALL_GROUP]
    assert selectors.fleet_groups_for_user(user=cast.member) == [
        FLEET_SHARED_GROUP,
        fleet_workspace_group(cast.workspace.pk),
    ]


def test_a_summary_of_another_workspace_is_not_visible(cast: Cast) -> None:
    mine = {cast.workspace.pk}

    assert selectors.summary_visible(summary={"ws": None}, is_admin=False, workspace_ids=mine)
    assert selectors.summary_visible(
        summary={"ws": cast.workspace.pk}, is_admin=False, workspace_ids=mine
    )
    assert not selectors.summary_visible(
        summary={"ws": cast.other_workspace.pk}, is_admin=False, workspace_ids=mine
    )
    assert selectors.summary_visible(summary={"ws": 99}, is_admin=True, workspace_ids=set())


# Node list ---------------------------------------------------------------------------------


def test_the_node_list_counts_gpus_and_unhealthy_gpus(cast: Cast, scene: dict[str, Node]) -> None:
    Gpu.objects.filter(node=scene["mine"], index__in=[1, 2]).update(health="unhealthy")

    node = selectors.node_list(user=cast.member).get(pk=scene["mine"].pk)

    assert (node.gpu_count, node.unhealthy_gpu_count) == (8, 2)


def test_the_node_list_filters(cast: Cast, scene: dict[str, Node]) -> None:
    Node.objects.filter(pk=scene["mine"].pk).update(state="lost", health="degraded")
    user = cast.platform_admin

    def names(**filters: Any) -> set[str]:
        nodes = selectors.node_list(user=user, filters=selectors.NodeFilter(**filters))
        return {n.name for n in nodes}

    assert names(state="lost") == {"vision-1"}
    assert names(health="degraded") == {"vision-1"}
    assert names(shared=True) == {"shared-1"}
    assert names(workspace_id=cast.other_workspace.pk) == {"speech-1"}
    assert names(search="SPEECH") == {"speech-1"}


def test_revoked_nodes_are_listed_only_when_asked_for(cast: Cast, scene: dict[str, Node]) -> None:
    Node.objects.filter(pk=scene["shared"].pk).update(state="revoked", revoked_at=timezone.now())

    assert "shared-1" not in {n.name for n in selectors.node_list(user=cast.member)}
    revoked = selectors.node_list(user=cast.member, filters=selectors.NodeFilter(state="revoked"))
    assert [n.name for n in revoked] == ["shared-1"]
    assert scene["shared"].pk not in selectors.node_ids_visible(user=cast.member)
    assert selectors.node_get(user=cast.member, node_id=scene["shared"].pk)


def test_roles_on_nodes(cast: Cast, scene: dict[str, Node]) -> None:
    mine, shared = scene["mine"], scene["shared"]

    assert selectors.node_can_manage(user=cast.ws_admin, node=mine)
    assert not selectors.node_can_manage(user=cast.ws_admin, node=shared)
    assert selectors.node_can_manage(user=cast.platform_admin, node=shared)
    assert selectors.node_can_acknowledge(user=cast.member, node=mine)
    assert not selectors.node_can_acknowledge(user=cast.member, node=shared)
    assert not selectors.node_can_acknowledge(user=cast.viewer, node=mine)


def test_the_fleet_overview_merges_live_summaries_and_totals(
    cast: Cast, scene: dict[str, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = scene["mine"]
    summary = {
        "id": mine.pk,
        "name": mine.name,
        "ws": cast.workspace.pk,
        "state": "suspect",
        "health": "degraded",
        "gpus": [[50.0, 25.0, 60.0, 300.0, 0], [100.0, 50.0, 70.0, 400.0, 2]],
        "host": {"cpu": 12.0, "mem_pct": 40.0},
    }
    asked: list[list[int]] = []

    def snapshot(node_ids: list[int]) -> list[dict[str, Any]]:
        asked.append(node_ids)
        return [summary]

    monkeypatch.setattr(selectors.fleet, "fleet_snapshot_sync", snapshot)

    fleet = selectors.fleet_overview(user=cast.member)

    assert asked == [[scene["shared"].pk, mine.pk]]
    rows = {r.node.name: r for r in fleet.rows}
    assert set(rows) == {"shared-1", "vision-1"}
    row = rows["vision-1"]
    assert (row.state, row.health, row.cpu) == ("suspect", "degraded", 12.0)
    assert (row.cells[1].util, row.cells[1].health) == (100.0, "unhealthy")
    assert row.cells[2].util is None
    totals = fleet.totals
    assert (totals.nodes, totals.ready, totals.suspect, totals.gpus) == (2, 1, 1, 16)
    assert (totals.unhealthy, totals.util_avg, totals.power_w) == (1, 75.0, 700.0)
    assert totals.mem_total_mib == 16 * 81559
    assert totals.mem_used_mib == pytest.approx(81559 * 0.75)
    assert fleet.max_gpus == 8


def test_a_lost_nodes_stale_readings_stay_out_of_the_totals(
    cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = node_create("live-1", gpus=1)
    gone = node_create("gone-1", gpus=1, state=Node.State.LOST)
    summaries = [
        {
            "id": live.pk,
            "state": "ready",
            "health": "healthy",
            "gpus": [[40.0, 10.0, 50.0, 200.0, 0]],
        },
        {
            "id": gone.pk,
            "state": "lost",
            "health": "healthy",
            "gpus": [[100.0, 90.0, 80.0, 700.0, 0]],
        },
    ]
    monkeypatch.setattr(selectors.fleet, "fleet_snapshot_sync", lambda node_ids: summaries)

    totals = selectors.fleet_overview(user=cast.platform_admin).totals

    assert (totals.nodes, totals.lost, totals.gpus) == (2, 1, 2)
    assert (totals.util_avg, totals.power_w, totals.mem_total_mib) == (40.0, 200.0, 81559)


# Events ------------------------------------------------------------------------------------


def test_events_of_invisible_nodes_are_left_out(cast: Cast, scene: dict[str, Node]) -> None:
    visible = event_create(scene["mine"])
    hidden = event_create(scene["theirs"])

    assert list(selectors.event_list(user=cast.viewer)) == [visible]
    with pytest.raises(NotFoundError):
        selectors.event_get(user=cast.viewer, event_id=hidden.pk)


def test_event_filters(cast: Cast, scene: dict[str, Node]) -> None:
    now = timezone.now()
    old = event_create(scene["shared"], last_at=now - timedelta(days=2), severity="info")
    acked = event_create(scene["mine"], gpu_index=3, acknowledged_at=now, source="thermal")
    resolved = event_create(scene["mine"], resolved_at=now)
    fresh = event_create(scene["mine"], gpu_index=1)
    user = cast.member

    def ids(**filters: Any) -> set[int]:
        events = selectors.event_list(user=user, filters=selectors.EventFilter(**filters))
        return {e.pk for e in events}

    assert ids(status="open") == {old.pk, acked.pk, fresh.pk}
    assert ids(status="unacknowledged") == {old.pk, fresh.pk}
    assert ids(status="acknowledged") == {acked.pk}
    assert ids(status="resolved") == {resolved.pk}
    assert ids(node_id=scene["shared"].pk) == {old.pk}
    assert ids(gpu_index=3) == {acked.pk}
    assert ids(severity="info") == {old.pk}
    assert ids(source="thermal") == {acked.pk}
    assert ids(since=now - timedelta(hours=1)) == {acked.pk, resolved.pk, fresh.pk}
    with pytest.raises(ApplicationError) as caught:
        ids(status="sleeping")
    assert caught.value.field == "status"


# History -----------------------------------------------------------------------------------

NOW = 1_750_000_000.0


def _rollup(node: Node, resolution: int, bucket: float, value: float) -> GpuRollup:
    return GpuRollup.objects.create(
        node=node,
        gpu_index=0,
        resolution=resolution,
        bucket=bucket,
        samples=60,
        util_min=value - 1,
        util_avg=value,
        util_max=value + 1,
    )


@pytest.fixture
def history_node(cast: Cast) -> Node:
    node = node_create("hist-1", workspace=cast.workspace, gpus=1)
    GpuSample.objects.bulk_create(
        GpuSample(node=node, gpu_index=0, ts=NOW - s, util=1.0, mem_used_mib=10, temp_c=40)
        for s in range(0, 600, 5)
    )
    for m in range(1, 30):
        _rollup(node, GpuRollup.MINUTE, NOW - 60 * m, 2.0)
    for m in range(60 * 2, 60 * 20, 60):
        _rollup(node, GpuRollup.MINUTE, NOW - 60 * m, 2.0)
    for h in range(1, 100):
        _rollup(node, GpuRollup.HOUR, NOW - 3600 * h, 3.0)
    return node


@pytest.mark.parametrize(
    ("range_", "resolution", "values"),
    [
        ("15m", selectors.RAW, {1.0}),
        ("1h", selectors.RAW, {1.0}),
        ("24h", GpuRollup.MINUTE, {2.0}),
        ("7d", GpuRollup.HOUR, {3.0}),
    ],
)
def test_each_history_range_reads_its_table(
    cast: Cast, history_node: Node, range_: str, resolution: int, values: set[float]
) -> None:
    history = selectors.gpu_history(
        user=cast.viewer, node_id=history_node.pk, index=0, range=range_, now=NOW
    )

    assert history.resolution == resolution
    key = "util" if resolution == selectors.RAW else "util_avg"
    assert {p[key] for p in history.points} == values
    assert all(history.since - resolution <= p["ts"] <= NOW for p in history.points)
    assert [p["ts"] for p in history.points] == sorted(p["ts"] for p in history.points)


def test_the_raw_window_is_bounded(cast: Cast, history_node: Node) -> None:
    history = selectors.gpu_history(
        user=cast.viewer, node_id=history_node.pk, index=0, range="15m", now=NOW
    )

    assert len(history.points) == 120
    assert history.points[-1]["ts"] == NOW


def test_one_hour_falls_back_to_minute_rollups_when_raw_samples_are_thinner(
    cast: Cast, history_node: Node
) -> None:
    GpuSample.objects.filter(node=history_node, ts__lt=NOW - 100).delete()

    history = selectors.gpu_history(
        user=cast.viewer, node_id=history_node.pk, index=0, range="1h", now=NOW
    )

    assert history.resolution == GpuRollup.MINUTE
    assert history.is_rollup
    assert {p["util_avg"] for p in history.points} == {2.0}


def test_an_unknown_range_names_the_field(cast: Cast, history_node: Node) -> None:
    with pytest.raises(ApplicationError) as caught:
        selectors.gpu_history(user=cast.viewer, node_id=history_node.pk, index=0, range="2y")

    assert caught.value.field == "range"


def test_history_of_another_workspaces_gpu_is_not_found(cast: Cast, history_node: Node) -> None:
    with pytest.raises(NotFoundError):
        selectors.gpu_history(user=cast.outsider, node_id=history_node.pk, index=0, range="1h")


# Join tokens and alerts --------------------------------------------------------------------


def test_join_tokens_are_listed_to_the_admins_of_their_scope(cast: Cast) -> None:
    shared = JoinToken.objects.create(name="shared", prefix="a" * 12, digest="x")
    mine = JoinToken.objects.create(
        name="mine", workspace=cast.workspace, prefix="b" * 12, digest="x"
    )
    JoinToken.objects.create(
        name="theirs", workspace=cast.other_workspace, prefix="c" * 12, digest="x"
    )

    assert selectors.join_token_list(user=cast.platform_admin).count() == 3
    assert list(selectors.join_token_list(user=cast.ws_admin)) == [mine]
    assert list(selectors.join_token_list(user=cast.member)) == []
    assert selectors.join_token_can_manage(user=cast.ws_admin)
    assert not selectors.join_token_can_manage(user=cast.member)
    with pytest.raises(NotFoundError):
        selectors.join_token_get(user=cast.ws_admin, token_id=shared.pk)


def test_alert_channels_are_for_platform_admins_and_deliveries_are_scoped(
    cast: Cast, scene: dict[str, Node]
) -> None:
    channel = AlertChannel.objects.create(name="ops", url="https://hooks.example/ops")
    mine = AlertDelivery.objects.create(event=event_create(scene["mine"]), channel=channel)
    AlertDelivery.objects.create(event=event_create(scene["theirs"]), channel=channel)

    assert list(selectors.alert_channel_list(user=cast.platform_admin)) == [channel]
    with pytest.raises(PermissionDeniedError):
        selectors.alert_channel_list(user=cast.ws_admin)
    assert list(selectors.delivery_list(user=cast.member)) == [mine]
    assert selectors.delivery_list(user=cast.platform_admin).count() == 2


def test_the_join_command_names_the_server_and_token() -> None:
    command = selectors.join_command(server="https://podium.lab/", token="pdj_x_y")

    assert command == "podium agent --server https://podium.lab --token pdj_x_y"


# Live state in Redis -----------------------------------------------------------------------


def test_live_state_is_empty_when_redis_is_unreachable(cast: Cast, scene: dict[str, Node]) -> None:
    live = selectors.node_live(node_id=scene["mine"].pk)

    assert (live.available, live.summary, live.rejected) == (False, None, 0)
    assert live.heartbeat_age() is None


@pytest.mark.integration
def test_live_state_reads_the_summary_heartbeat_and_rejections(
    cast: Cast, scene: dict[str, Node]
) -> None:
    node_id = scene["mine"].pk
    summary = {"id": node_id, "gpus": [[10.0, 20.0, 30.0, 40.0, 1]], "host": {"cpu": 5.0}}
    client = redis_client()
    client.hset(LATEST_KEY, str(node_id), json.dumps(summary))
    client.hset(SEEN_KEY, str(node_id), time.time() - 3)
    client.hset(REJECTED_KEY, str(node_id), 7)

    live = selectors.node_live(node_id=node_id)

    assert live.summary == summary
    assert live.rejected == 7
    assert 2.5 < live.heartbeat_age() < 10
    assert live.gpu_reading(0) == {
        "util": 10.0,
        "mem_used_pct": 20.0,
        "temp_c": 30.0,
        "power_w": 40.0,
        "health": "degraded",
    }
    assert live.gpu_reading(1) is None


def test_the_overview_orders_nodes_by_their_numbers(cast: Cast) -> None:
    for name in ("gpu-10", "gpu-2", "gpu-1", "cpu-box"):
        node_create(name, gpus=1)

    rows = selectors.fleet_overview(user=cast.platform_admin).rows

    assert [r.node.name for r in rows] == ["cpu-box", "gpu-1", "gpu-2", "gpu-10"]


def test_event_sources_lists_each_source_once_from_visible_nodes(
    cast: Cast, scene: dict[str, Node], django_assert_num_queries: Any
) -> None:
    for _ in range(3):
        event_create(scene["mine"], source="thermal")
    event_create(scene["shared"], source="xid")
    event_create(scene["theirs"], source="pcie")

    with django_assert_num_queries(1):
        sources = selectors.event_sources(user=cast.member)

    assert sources == ["thermal", "xid"]
