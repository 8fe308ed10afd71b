"""The monitoring API through the generic workspace-scoped tests, and what they do not cover."""

import itertools
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from django.test import Client

from apps.accounts.models import User, Workspace
from apps.audit.models import AuditEntry
from apps.monitoring import services
from apps.monitoring.broadcast import LATEST_KEY, REJECTED_KEY, SEEN_KEY
from apps.monitoring.models import (
    AlertChannel,
    GpuSample,
    HealthEvent,
    HostSample,
    JoinToken,
    Node,
)
from apps.system.heartbeats import redis_client
from tests.api_base import BadInput, Operation, PaginatedListTests, WorkspaceScopedAPITests
from tests.conftest import Cast
from tests.monitoring.factories import event_create, node_create

pytestmark = pytest.mark.django_db

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_live_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "node_live_update", lambda node_id: None)


def _node(workspace: Workspace | None, **kwargs: Any) -> Node:
    return node_create(f"node-{next(_names)}", workspace=workspace, **kwargs)


class TestNodeAPI(WorkspaceScopedAPITests):
    operations: ClassVar = [
        Operation("detail", "get", lambda ws, node: f"/api/nodes/{node.pk}"),
        Operation(
            "history", "get", lambda ws, node: f"/api/nodes/{node.pk}/gpus/0/history?range=15m"
        ),
        Operation(
            "revoke",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/revoke",
            audit_action="node.revoke",
        ),
        Operation(
            "return",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/return-to-service",
            audit_action="node.return_to_service",
        ),
        Operation(
            "gpu return",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/gpus/1/return-to-service",
            audit_action="gpu.return_to_service",
        ),
        Operation(
            "fault",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/gpus/2/faults",
            payload=lambda ws, node: {"fault": "xid", "code": 48},
            audit_action="gpu.fault_inject",
            status=202,
        ),
    ]
    bad_inputs: ClassVar = [
        BadInput("fault", lambda ws, node: {"fault": "melt"}, "fault"),
        BadInput("fault", lambda ws, node: {"fault": "xid"}, "code"),
        BadInput("fault", lambda ws, node: {"fault": "xid", "code": 1000}, "code"),
        BadInput("fault", lambda ws, node: {"fault": "xid", "code": "many"}, "code"),
        BadInput("fault", lambda ws, node: {"code": 48}, "fault"),
    ]

    def make_object(self, workspace: Workspace) -> Node:
        node = _node(workspace)
        event_create(node, gpu_index=1)
        return node

    def snapshot(self, workspace: Workspace) -> Any:
        nodes = Node.objects.filter(workspace=workspace)
        events = HealthEvent.objects.filter(node__workspace=workspace, resolved_at__isnull=True)
        return sorted(nodes.values_list("name", "state", "health")), events.count()


class TestEventAPI(WorkspaceScopedAPITests, PaginatedListTests):
    operations: ClassVar = [
        Operation("detail", "get", lambda ws, event: f"/api/events/{event.pk}"),
        Operation(
            "acknowledge",
            "post",
            lambda ws, event: f"/api/events/{event.pk}/acknowledge",
            audit_action="event.acknowledge",
        ),
    ]
    list_url = staticmethod(lambda ws: "/api/events")

    def make_object(self, workspace: Workspace) -> HealthEvent:
        node = _node(workspace)
        event_create(node, gpu_index=0)
        return event_create(
            node, gpu_index=1, source="thermal", rule_class="watch", severity="warning"
        )

    def snapshot(self, workspace: Workspace) -> Any:
        events = HealthEvent.objects.filter(node__workspace=workspace)
        return sorted(events.values_list("pk", "acknowledged_at", "resolved_at"))


# Nodes beyond the generic tests -------------------------------------------------------------


def test_the_node_list_is_scoped_filtered_and_paginated(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    _node(None)
    mine = _node(cast.workspace)
    _node(cast.other_workspace)
    client = api_client(cast.member)

    whole = client.get("/api/nodes").json()
    assert whole["count"] == 2
    assert {n["workspace_id"] for n in whole["items"]} == {None, cast.workspace.pk}
    assert whole["items"][0]["gpu_count"] == 8
    only_mine = client.get("/api/nodes", {"workspace_id": cast.workspace.pk}).json()
    assert [n["id"] for n in only_mine["items"]] == [mine.pk]
    shared = client.get("/api/nodes", {"shared": "true"}).json()
    assert [n["workspace_id"] for n in shared["items"]] == [None]
    bad = client.get("/api/nodes", {"state": "sleeping"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "state"
    assert Client().get("/api/nodes").status_code == 401


def test_node_detail_has_gpus_facts_and_no_live_data_without_redis(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    node = _node(cast.workspace)
    Node.objects.filter(pk=node.pk).update(clock_skew_ms=-2500.0)

    body = api_client(cast.viewer).get(f"/api/nodes/{node.pk}").json()

    assert (body["name"], body["state"], body["simulated"], body["clock_skew_ms"]) == (
        node.name,
        "ready",
        True,
        -2500.0,
    )
    assert [g["index"] for g in body["gpus"]] == list(range(8))
    assert body["gpus"][0]["health"] == "healthy"
    assert body["gpus"][0]["latest"] is None
    assert (body["live"], body["rejected_messages"], body["heartbeat_age_seconds"]) == (
        False,
        0,
        None,
    )
    assert body["facts"]["hostname"] == node.name
    assert body["host_sample"] is None


def test_node_detail_carries_the_latest_stored_host_sample(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    node = _node(cast.workspace)
    HostSample.objects.create(node=node, ts=100.0, cpu_percent=10.0, load1=0.5)
    HostSample.objects.create(node=node, ts=101.0, cpu_percent=12.5, load1=0.75, net_rx_bps=9e6)

    body = api_client(cast.viewer).get(f"/api/nodes/{node.pk}").json()

    assert body["host_sample"]["ts"] == 101.0
    assert body["host_sample"]["load1"] == 0.75
    assert body["host_sample"]["net_rx_bps"] == 9e6
    assert body["host_sample"]["disk_used_bytes"] is None


@pytest.mark.integration
def test_node_detail_reads_the_live_summary(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    node = _node(cast.workspace, gpus=2)
    summary = {
        "id": node.pk,
        "ws": cast.workspace.pk,
        "state": "ready",
        "health": "healthy",
        "gpus": [[55.0, 40.0, 61.0, 310.0, 0], [None, None, None, None, 2]],
        "host": {"cpu": 20.0, "mem_pct": 30.0},
        "power_w": 310.0,
    }
    client = redis_client()
    client.hset(LATEST_KEY, str(node.pk), json.dumps(summary))
    client.hset(SEEN_KEY, str(node.pk), time.time() - 1)
    client.hset(REJECTED_KEY, str(node.pk), 3)

    body = api_client(cast.member).get(f"/api/nodes/{node.pk}").json()

    assert body["live"] is True
    assert body["gpus"][0]["latest"] == {
        "util": 55.0,
        "mem_used_pct": 40.0,
        "temp_c": 61.0,
        "power_w": 310.0,
    }
    assert body["host"] == {"cpu": 20.0, "mem_pct": 30.0}
    assert body["rejected_messages"] == 3
    assert 0.5 < body["heartbeat_age_seconds"] < 10


def test_gpu_history_names_its_resolution_and_refuses_an_unknown_range(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    node = _node(cast.workspace, gpus=1)
    now = time.time()
    GpuSample.objects.create(node=node, gpu_index=0, ts=now - 30, util=42.0)
    client = api_client(cast.member)

    body = client.get(f"/api/nodes/{node.pk}/gpus/0/history", {"range": "15m"}).json()
    assert body["resolution"] == "raw"
    assert [p["util"] for p in body["points"]] == [42.0]
    assert (
        client.get(f"/api/nodes/{node.pk}/gpus/0/history", {"range": "7d"}).json()["resolution"]
        == "1h"
    )
    bad = client.get(f"/api/nodes/{node.pk}/gpus/0/history", {"range": "1y"})
    assert bad.status_code == 400
    assert bad.json()["field"] == "range"
    assert client.get(f"/api/nodes/{node.pk}/gpus/5/history").status_code == 404


def test_only_platform_admins_patch_nodes(cast: Cast, api_client: Callable[[User], Client]) -> None:
    node = _node(None)
    url = f"/api/nodes/{node.pk}"

    refused = api_client(cast.ws_admin).patch(
        url, {"name": "renamed"}, content_type="application/json"
    )
    assert refused.status_code == 403
    admin = api_client(cast.platform_admin)
    moved = admin.patch(
        url, {"name": "renamed", "workspace_id": cast.workspace.pk}, content_type="application/json"
    )
    assert moved.status_code == 200, moved.content
    assert (moved.json()["name"], moved.json()["workspace_id"]) == ("renamed", cast.workspace.pk)
    back = admin.patch(url, {"workspace_id": None}, content_type="application/json")
    assert back.json()["workspace_id"] is None
    assert back.json()["name"] == "renamed"
    assert AuditEntry.objects.filter(action="node.update").count() == 2


def test_faults_are_refused_for_real_gpus(cast: Cast, api_client: Callable[[User], Client]) -> None:
    node = _node(cast.workspace, simulated=False)

    response = api_client(cast.ws_admin).post(
        f"/api/nodes/{node.pk}/gpus/0/faults", {"fault": "ecc_dbe"}, content_type="application/json"
    )

    assert response.status_code == 409
    assert response.json()["field"] == "gpu"
    assert "simulated" in response.json()["detail"]


def test_the_event_list_filters_and_names_a_bad_status(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    node = _node(cast.workspace)
    open_event = event_create(node)
    event_create(node, resolved_at=open_event.last_at)
    client = api_client(cast.viewer)

    body = client.get("/api/events", {"status": "open"}).json()
    assert [e["id"] for e in body["items"]] == [open_event.pk]
    assert body["items"][0]["node_name"] == node.name
    bad = client.get("/api/events", {"status": "sleeping"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "status"


# Join tokens -------------------------------------------------------------------------------


def test_a_workspace_admin_creates_a_join_token_and_gets_the_command_once(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    client = api_client(cast.ws_admin)

    response = client.post(
        "/api/join-tokens",
        {"name": "rack 1", "workspace_id": cast.workspace.pk, "max_uses": 4},
        content_type="application/json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token"].startswith("pdj_")
    assert body["command"] == f"podium agent --server http://testserver --token {body['token']}"
    listed = client.get("/api/join-tokens").json()
    assert [t["id"] for t in listed["items"]] == [body["id"]]
    assert "token" not in listed["items"][0]
    assert AuditEntry.objects.get(action="join_token.create").workspace == cast.workspace


def test_join_token_rights(cast: Cast, api_client: Callable[[User], Client]) -> None:
    shared, _ = services.join_token_create(actor=cast.platform_admin, name="shared")
    theirs, _ = services.join_token_create(
        actor=cast.outsider, name="theirs", workspace=cast.other_workspace
    )
    ws_admin = api_client(cast.ws_admin)

    assert (
        ws_admin.post(
            "/api/join-tokens", {"name": "x"}, content_type="application/json"
        ).status_code
        == 403
    )
    other = ws_admin.post(
        "/api/join-tokens",
        {"name": "x", "workspace_id": cast.other_workspace.pk},
        content_type="application/json",
    )
    assert other.status_code == 404
    assert ws_admin.delete(f"/api/join-tokens/{theirs.pk}").status_code == 404
    assert ws_admin.delete(f"/api/join-tokens/{shared.pk}").status_code == 404
    assert api_client(cast.member).get("/api/join-tokens").json()["count"] == 0
    assert (
        api_client(cast.platform_admin).delete(f"/api/join-tokens/{shared.pk}").status_code == 204
    )
    shared.refresh_from_db()
    assert shared.revoked_at is not None
    bad = api_client(cast.platform_admin).post(
        "/api/join-tokens", {"name": "x", "expires_in_hours": 0}, content_type="application/json"
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "expires_in_hours"
    assert JoinToken.objects.count() == 2


# Alert channels ----------------------------------------------------------------------------


def test_alert_channels_crud_for_platform_admins(
    cast: Cast,
    api_client: Callable[[User], Client],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(services.deliver_alert, "delay", sent.append)
    admin = api_client(cast.platform_admin)

    created = admin.post(
        "/api/alert-channels",
        {"name": "ops", "url": "https://hooks.example/ops", "secret": "s3cret"},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["signed"] is True
    assert "s3cret" not in created.content.decode()
    channel_id = body["id"]
    patched = admin.patch(
        f"/api/alert-channels/{channel_id}", {"enabled": False}, content_type="application/json"
    )
    assert patched.json()["enabled"] is False
    assert admin.get("/api/alert-channels").json()["count"] == 1
    event_create(_node(cast.workspace))
    with django_capture_on_commit_callbacks(execute=True):
        tested = admin.post(f"/api/alert-channels/{channel_id}/test")
    assert tested.status_code == 202
    assert sent == [tested.json()["id"]]
    deliveries = api_client(cast.member).get("/api/alert-channels/deliveries").json()
    assert [d["status"] for d in deliveries["items"]] == ["pending"]
    assert admin.delete(f"/api/alert-channels/{channel_id}").status_code == 204
    assert AlertChannel.objects.count() == 0


def test_alert_channels_refuse_others_and_bad_urls(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    channel = AlertChannel.objects.create(name="ops", url="https://hooks.example/ops")

    assert api_client(cast.ws_admin).get("/api/alert-channels").status_code == 403
    assert api_client(cast.ws_admin).get(f"/api/alert-channels/{channel.pk}").status_code == 403
    bad = api_client(cast.platform_admin).post(
        "/api/alert-channels",
        {"name": "x", "url": "file:///etc/passwd"},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert bad.json()["field"] == "url"
    assert Client().get("/api/alert-channels/deliveries").status_code == 401
