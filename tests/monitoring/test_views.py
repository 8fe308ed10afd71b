"""Pages: they render for the roles that may see them, within a query budget, and act."""

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.monitoring import services
from apps.monitoring.models import AlertChannel, AlertDelivery, GpuRollup, GpuSample, Node
from apps.monitoring.templatetags.monitoring_units import mib, watts
from tests.conftest import Cast
from tests.monitoring.factories import event_create, node_create
from tests.pages import html

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_live_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "node_live_update", lambda node_id: None)


@pytest.fixture
def mine(cast: Cast) -> Node:
    return node_create("vision-1", workspace=cast.workspace)


@pytest.fixture
def theirs(cast: Cast) -> Node:
    return node_create("speech-1", workspace=cast.other_workspace)


# Overview ----------------------------------------------------------------------------------


def test_the_overview_draws_every_visible_gpu_with_ids_for_tests(
    cast: Cast, mine: Node, theirs: Node, session_client: Callable[..., Client]
) -> None:
    node_create("shared-1", gpus=2, simulated=False)

    page = html(session_client(cast.member).get("/monitoring/"))

    assert 'id="node-vision-1-state"' in page
    assert 'data-state="ready"' in page
    assert page.count('class="cell sim"') == 8
    assert page.count('class="cell"') == 2
    assert 'data-node="vision-1" data-gpu="7"' in page
    assert f'href="/monitoring/nodes/{mine.pk}/gpus/3/"' in page
    assert f'href="/monitoring/nodes/{mine.pk}/"' in page
    assert "speech-1" not in page
    assert 'id="total-gpus">10<' in page
    assert 'id="total-ready" class="good">2<' in page
    assert "simulated" in page
    assert "podium/monitoring/overview.js" in page
    assert "podium/monitoring.css" in page


def test_the_overview_costs_the_same_queries_for_many_nodes(
    cast: Cast, session_client: Callable[..., Client], django_assert_max_num_queries: Any
) -> None:
    client = session_client(cast.platform_admin)
    for i in range(3):
        node_create(f"n-{i}")
    with django_assert_max_num_queries(8) as few:
        client.get("/monitoring/")
    for i in range(3, 40):
        node_create(f"n-{i}")

    with django_assert_max_num_queries(len(few.captured_queries)):
        page = html(client.get("/monitoring/"))

    assert page.count("data-gpu=") == 40 * 8


# Nodes -------------------------------------------------------------------------------------


def test_the_node_list_filters_and_stays_within_budget(
    cast: Cast,
    mine: Node,
    theirs: Node,
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Any,
) -> None:
    node_create("shared-1")
    client = session_client(cast.member)

    with django_assert_max_num_queries(8):
        page = html(client.get("/monitoring/nodes/"))
    assert "vision-1" in page
    assert "shared-1" in page
    assert "speech-1" not in page

    partial = html(client.get("/monitoring/nodes/?workspace=shared", HTTP_HX_REQUEST="true"))
    assert partial.lstrip().startswith('<div id="nodes">')
    assert "shared-1" in partial
    assert "vision-1" not in partial


def test_node_detail_shows_facts_gpus_and_admin_actions(
    cast: Cast,
    mine: Node,
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Any,
) -> None:
    Node.objects.filter(pk=mine.pk).update(
        clock_skew_ms=3200.0, gpu_status="no NVIDIA driver found", health="degraded"
    )
    mine.gpus.filter(index=2).update(health="unhealthy")
    event_create(mine, gpu_index=2)
    GpuSample.objects.create(node=mine, gpu_index=0, ts=9e9, util=33.0)

    client = session_client(cast.ws_admin)

    with django_assert_max_num_queries(12):
        response = client.get(f"/monitoring/nodes/{mine.pk}/")

    page = html(response)
    assert response.status_code == 200
    assert 'id="node-state" class="badge state-ready" data-state="ready"' in page
    assert 'id="node-health" class="badge health-degraded" data-health="degraded"' in page
    assert "no NVIDIA driver found" in page
    assert "3.200 s" in page
    assert "check NTP" in page
    assert 'id="gpu-2-health" class="badge health-unhealthy"' in page
    assert page.count("Return to service") == 1
    assert page.count('name="fault"') == 8
    assert "Acknowledge" in page
    assert 'id="node-revoke"' in page
    assert 'id="node-live-config"' in page
    assert "/static/vendor/plotly.min.js" in page
    assert "podium/monitoring/node.js" in page


def test_readers_see_no_admin_controls(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    event_create(mine, gpu_index=2)

    page = html(session_client(cast.viewer).get(f"/monitoring/nodes/{mine.pk}/"))

    assert 'name="fault"' not in page
    assert 'id="node-revoke"' not in page
    assert "Acknowledge</button>" not in page
    member_page = html(session_client(cast.member).get(f"/monitoring/nodes/{mine.pk}/"))
    assert "Acknowledge</button>" in member_page
    assert 'name="fault"' not in member_page


def test_real_gpus_get_no_fault_form(cast: Cast, session_client: Callable[..., Client]) -> None:
    real = node_create("dgx-1", simulated=False)

    page = html(session_client(cast.platform_admin).get(f"/monitoring/nodes/{real.pk}/"))

    assert 'name="fault"' not in page
    assert "simulated</span>" not in page


def test_another_workspaces_node_pages_are_not_found(
    cast: Cast, theirs: Node, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.member)

    for url in (
        f"/monitoring/nodes/{theirs.pk}/",
        f"/monitoring/nodes/{theirs.pk}/gpus/0/",
        f"/monitoring/nodes/{theirs.pk}/events/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/monitoring/nodes/{theirs.pk}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_an_admin_revokes_a_node_and_returns_a_gpu_to_service(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    event = event_create(mine, gpu_index=1)
    client = session_client(cast.ws_admin)

    returned = client.post(f"/monitoring/nodes/{mine.pk}/gpus/1/return/")
    revoked = client.post(f"/monitoring/nodes/{mine.pk}/revoke/")

    assert returned.status_code == revoked.status_code == 302
    event.refresh_from_db()
    mine.refresh_from_db()
    assert event.resolved_by == cast.ws_admin
    assert mine.state == "revoked"
    assert (
        session_client(cast.viewer).post(f"/monitoring/nodes/{mine.pk}/return/").status_code == 403
    )


def test_fault_injection_answers_htmx_with_its_result(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.ws_admin)
    url = f"/monitoring/nodes/{mine.pk}/gpus/0/fault/"

    sent = client.post(url, {"fault": "xid", "code": "79"}, HTTP_HX_REQUEST="true")
    missing = client.post(url, {"fault": "xid"}, HTTP_HX_REQUEST="true")

    assert sent.status_code == 200
    assert "Fault xid sent to GPU 0" in html(sent)
    assert missing.status_code == 400
    assert "XID" in html(missing)
    assert AuditEntry.objects.filter(action="gpu.fault_inject").count() == 1
    viewer = session_client(cast.viewer).post(url, {"fault": "overheat"}, HTTP_HX_REQUEST="true")
    assert viewer.status_code == 403


def test_posts_need_the_csrf_token(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin, csrf=True).post(f"/monitoring/nodes/{mine.pk}/revoke/")

    assert response.status_code == 403
    mine.refresh_from_db()
    assert mine.revoked_at is None


# History -----------------------------------------------------------------------------------


def test_gpu_history_draws_rollups_with_a_band(
    cast: Cast,
    mine: Node,
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Any,
) -> None:
    GpuRollup.objects.create(
        node=mine, gpu_index=0, resolution=60, bucket=time.time() - 600, util_avg=5.0
    )
    client = session_client(cast.viewer)

    with django_assert_max_num_queries(10):
        day = client.get(f"/monitoring/nodes/{mine.pk}/gpus/0/?range=24h")
    page = html(day)
    assert 'aria-current="page" data-range="24h"' in page
    assert 'data-resolution="60"' in page
    assert "tonexty" in page
    assert 'id="chart-util"' in page
    assert "podium/monitoring/history.js" in page

    raw = html(client.get(f"/monitoring/nodes/{mine.pk}/gpus/0/?range=15m"))
    assert 'data-resolution="0"' in raw
    assert "No reading stored" in raw
    bad = client.get(f"/monitoring/nodes/{mine.pk}/gpus/0/?range=forever")
    assert bad.status_code == 400
    assert "Range must be one of" in html(bad)


# Events ------------------------------------------------------------------------------------


def test_the_event_page_filters_and_acknowledges_with_htmx(
    cast: Cast,
    mine: Node,
    theirs: Node,
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Any,
) -> None:
    watch = event_create(mine, source="thermal", rule_class="watch", severity="warning")
    event_create(theirs, reason="not for you")
    client = session_client(cast.member)

    with django_assert_max_num_queries(10):
        page = html(client.get("/monitoring/events/"))
    assert f'id="event-{watch.pk}"' in page
    assert "not for you" not in page

    partial = client.get("/monitoring/events/?severity=critical", HTTP_HX_REQUEST="true")
    assert html(partial).lstrip().startswith('<div id="events">')
    assert f'id="event-{watch.pk}"' not in html(partial)

    row = client.post(f"/monitoring/events/{watch.pk}/acknowledge/", HTTP_HX_REQUEST="true")
    assert row.status_code == 200
    assert html(row).lstrip().startswith(f'<tr id="event-{watch.pk}"')
    assert 'data-status="resolved"' in html(row)
    again = client.post(f"/monitoring/events/{watch.pk}/acknowledge/", HTTP_HX_REQUEST="true")
    assert again.status_code == 409
    assert "already resolved" in html(again)


def test_a_viewer_cannot_acknowledge(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    event = event_create(mine)

    response = session_client(cast.viewer).post(f"/monitoring/events/{event.pk}/acknowledge/")

    assert response.status_code == 403
    event.refresh_from_db()
    assert event.acknowledged_at is None


def test_the_node_events_partial(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    event = event_create(mine, gpu_index=4)

    partial = html(session_client(cast.member).get(f"/monitoring/nodes/{mine.pk}/events/"))

    assert partial.lstrip().startswith('<div id="node-events">')
    assert f'id="event-{event.pk}"' in partial


# Alerts ------------------------------------------------------------------------------------


def test_platform_admins_manage_webhooks_on_the_alert_page(
    cast: Cast, mine: Node, session_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.deliver_alert, "delay", lambda delivery_id: None)
    client = session_client(cast.platform_admin)

    created = client.post(
        "/monitoring/alerts/",
        {
            "name": "ops",
            "url": "https://hooks.example/ops",
            "min_severity": "warning",
            "enabled": "on",
        },
    )
    assert created.status_code == 302
    channel = AlertChannel.objects.get()
    AlertDelivery.objects.create(
        event=event_create(mine),
        channel=channel,
        status="failed",
        attempts=5,
        last_error="HTTP 500",
    )
    page = html(client.get("/monitoring/alerts/"))
    assert 'id="alert-channels"' in page
    assert "https://hooks.example/ops" in page
    assert "HTTP 500" in page
    client.post(f"/monitoring/alerts/{channel.pk}/", {"action": "disable"})
    channel.refresh_from_db()
    assert channel.enabled is False
    bad = client.post(
        "/monitoring/alerts/", {"name": "x", "url": "ftp://x", "min_severity": "info"}
    )
    assert bad.status_code == 400
    assert "http:// or https://" in html(bad)


def test_the_alert_page_lists_open_warnings_and_criticals_of_visible_nodes_critical_first(
    cast: Cast, mine: Node, theirs: Node, session_client: Callable[..., Client]
) -> None:
    warning = event_create(mine, source="thermal", rule_class="watch", severity="warning")
    critical = event_create(mine, gpu_index=2)
    event_create(mine, source="xid", code="13", rule_class="application", severity="info")
    event_create(mine, code="63", severity="warning", resolved_at=critical.last_at)
    event_create(theirs, reason="not for you")

    page = html(session_client(cast.member).get("/monitoring/alerts/"))

    active = page.split('id="active-alerts"')[1].split("</section>")[0]
    assert re.findall(r'id="event-(\d+)"', active) == [str(critical.pk), str(warning.pk)]
    assert "not for you" not in page


def test_others_see_only_deliveries_of_their_nodes(
    cast: Cast, mine: Node, theirs: Node, session_client: Callable[..., Client]
) -> None:
    channel = AlertChannel.objects.create(name="ops", url="https://hooks.example/secret-path")
    AlertDelivery.objects.create(event=event_create(mine, reason="mine"), channel=channel)
    AlertDelivery.objects.create(event=event_create(theirs, reason="theirs"), channel=channel)
    client = session_client(cast.member)

    page = html(client.get("/monitoring/alerts/"))

    assert 'id="alert-channels"' not in page
    assert "secret-path" not in page
    assert "mine" in page
    assert "theirs" not in page
    assert client.post("/monitoring/alerts/", {"name": "x"}).status_code == 403
    assert client.post(f"/monitoring/alerts/{channel.pk}/", {"action": "delete"}).status_code == 403


# Join tokens -------------------------------------------------------------------------------


def test_a_workspace_admin_creates_a_join_token_shown_once(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.ws_admin)

    form = html(client.get("/monitoring/join-tokens/"))
    assert "Shared (whole cluster)" not in form
    created = client.post(
        "/monitoring/join-tokens/",
        {"name": "rack 2", "workspace": str(cast.workspace.pk), "expires_in_hours": "4"},
        HTTP_HX_REQUEST="true",
    )

    page = html(created)
    assert created.status_code == 200
    assert page.lstrip().startswith('<div id="join-tokens">')
    assert 'id="join-command"' in page
    assert "podium agent --server http://testserver --token pdj_" in page
    again = html(client.get("/monitoring/join-tokens/"))
    assert "rack 2" in again
    assert "--token pdj_" not in again
    shared = client.post("/monitoring/join-tokens/", {"name": "x", "workspace": "shared"})
    assert shared.status_code == 400


def test_join_tokens_are_refused_to_members(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    assert session_client(cast.member).get("/monitoring/join-tokens/").status_code == 403


def test_revoking_a_join_token_from_the_page(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    token, _ = services.join_token_create(
        actor=cast.ws_admin, name="rack", workspace=cast.workspace
    )

    response = session_client(cast.ws_admin).post(f"/monitoring/join-tokens/{token.pk}/revoke/")

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    outsider = session_client(cast.outsider).post(f"/monitoring/join-tokens/{token.pk}/revoke/")
    assert outsider.status_code == 404


def test_the_monitoring_pages_name_no_external_url(
    cast: Cast, mine: Node, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.platform_admin)
    urls = [
        "/monitoring/",
        "/monitoring/nodes/",
        f"/monitoring/nodes/{mine.pk}/",
        f"/monitoring/nodes/{mine.pk}/gpus/0/?range=7d",
        "/monitoring/events/",
        "/monitoring/alerts/",
        "/monitoring/join-tokens/",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert re.findall(r"https?://[^\s\"'<>)\\]+", html(response)) == [], url


@pytest.mark.parametrize(
    ("value", "as_mib", "as_watts"),
    [
        (None, "\u2013", "\u2013"),
        (512.0, "512 MiB", "512 W"),
        (81559.0, "80 GiB", "81.6 kW"),
        (19574160.0, "18.7 TiB", "19.57 MW"),
    ],
)
def test_fleet_totals_read_in_sensible_units(
    value: float | None, as_mib: str, as_watts: str
) -> None:
    assert (mib(value), watts(value)) == (as_mib, as_watts)
