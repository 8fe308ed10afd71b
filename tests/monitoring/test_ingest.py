"""Ingestion: agent tokens, joining and connecting, validation, events and samples."""

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import Workspace
from apps.audit.models import AuditEntry
from apps.monitoring import rules
from apps.monitoring.ingest import (
    AgentRefused,
    NodeView,
    ProtocolError,
    agent_authenticate,
    batch_rows,
    batch_validate,
    findings_apply,
    hello_validate,
    node_connect,
    node_join,
    samples_store,
    summary_build,
)
from apps.monitoring.models import Gpu, GpuSample, HealthEvent, HostSample, JoinToken, Node
from apps.monitoring.signals import node_changed
from podium.agent.protocol import CLOSE_BAD_TOKEN, CLOSE_NAME_TAKEN, CLOSE_REVOKED
from tests.monitoring.agent_frames import (
    batch,
    hello,
    join_token_make,
    node_token_give,
    reading,
    xid_event,
)
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db


# Tokens ------------------------------------------------------------------------------------


def test_a_valid_join_token_is_recognised() -> None:
    join, plaintext = join_token_make()

    assert agent_authenticate(plaintext).join_token_id == join.pk


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"revoked_at": timezone.now()}, CLOSE_REVOKED),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, CLOSE_BAD_TOKEN),
        ({"max_uses": 0}, CLOSE_BAD_TOKEN),
    ],
)
def test_a_join_token_revoked_expired_or_used_up_is_refused(options: dict, code: int) -> None:
    _, plaintext = join_token_make(**options)

    result = agent_authenticate(plaintext)

    assert not result.ok
    assert result.close_code == code


def test_a_node_token_names_its_node_until_the_node_is_revoked() -> None:
    node = node_create()
    plaintext = node_token_give(node)
    assert agent_authenticate(plaintext).node_id == node.pk

    Node.objects.filter(pk=node.pk).update(revoked_at=timezone.now(), state=Node.State.REVOKED)

    assert agent_authenticate(plaintext).close_code == CLOSE_REVOKED


@pytest.mark.parametrize("token", ["", "garbage", "pdm_0123456789ab_secret", "pdn_nope_x"])
def test_unknown_tokens_are_refused(token: str) -> None:
    assert agent_authenticate(token).close_code == CLOSE_BAD_TOKEN


def test_a_token_with_the_right_prefix_and_a_wrong_secret_is_refused() -> None:
    node = node_create()
    plaintext = node_token_give(node)
    forged = plaintext[:-4] + "AAAA"

    assert agent_authenticate(forged).close_code == CLOSE_BAD_TOKEN


# Joining and connecting --------------------------------------------------------------------


def test_joining_creates_the_node_in_the_tokens_workspace_with_its_gpus(
    workspace: Workspace,
) -> None:
    join, _ = join_token_make(workspace=workspace, max_uses=2)

    node, plaintext = node_join(
        join_token_id=join.pk, hello=hello_validate(hello(gpus=4)), address="10.0.0.7"
    )

    assert node.workspace == workspace
    assert node.facts["hostname"] == "gpu-node-1"
    assert node.simulated
    assert node.expected_gpus == 4
    assert list(Gpu.objects.filter(node=node).values_list("index", flat=True)) == [0, 1, 2, 3]
    assert agent_authenticate(plaintext).node_id == node.pk
    assert plaintext not in str(Node.objects.filter(pk=node.pk).values().get())
    join.refresh_from_db()
    assert join.uses == 1
    entry = AuditEntry.objects.get(action="node.join")
    assert (entry.actor, entry.target_id, entry.workspace) == (None, str(node.pk), workspace)


def test_the_same_machine_rejoining_gets_its_node_back_with_a_new_token() -> None:
    join, _ = join_token_make()
    first, old_token = node_join(join_token_id=join.pk, hello=hello_validate(hello()), address=None)

    again, new_token = node_join(join_token_id=join.pk, hello=hello_validate(hello()), address=None)

    assert again.pk == first.pk
    assert agent_authenticate(old_token).close_code == CLOSE_BAD_TOKEN
    assert agent_authenticate(new_token).node_id == first.pk


def test_another_machine_cannot_take_a_live_nodes_name() -> None:
    join, _ = join_token_make()
    node_join(join_token_id=join.pk, hello=hello_validate(hello()), address=None)

    with pytest.raises(AgentRefused) as refused:
        node_join(
            join_token_id=join.pk, hello=hello_validate(hello(machine_id="m-2")), address=None
        )

    assert refused.value.close_code == CLOSE_NAME_TAKEN


def test_a_join_token_cannot_be_used_more_than_allowed() -> None:
    join, _ = join_token_make(max_uses=1)
    node_join(join_token_id=join.pk, hello=hello_validate(hello("a")), address=None)

    with pytest.raises(AgentRefused) as refused:
        node_join(join_token_id=join.pk, hello=hello_validate(hello("b")), address=None)

    assert refused.value.close_code == CLOSE_BAD_TOKEN
    assert JoinToken.objects.get(pk=join.pk).uses == 1


def test_connecting_makes_the_node_ready_and_records_its_gpus() -> None:
    node = node_create("gpu-node-1", gpus=2, state=Node.State.PENDING)

    view = node_connect(node_id=node.pk, hello=hello_validate(hello(gpus=2)), address="10.0.0.9")

    node.refresh_from_db()
    assert (node.state, node.health, node.address) == ("ready", "healthy", "10.0.0.9")
    assert node.connected_at is not None
    assert (view.state, view.health, view.gpu_health) == (
        "ready",
        "healthy",
        {0: "healthy", 1: "healthy"},
    )
    assert view.gpu_memory_mib == {0: 81559, 1: 81559}


def test_a_gpu_missing_at_connect_takes_the_node_out() -> None:
    node = node_create("gpu-node-1", gpus=4)

    node_connect(node_id=node.pk, hello=hello_validate(hello(gpus=3)), address=None)

    node.refresh_from_db()
    assert node.expected_gpus == 4
    assert node.health == "unhealthy"
    assert not Gpu.objects.get(node=node, index=3).present
    event = HealthEvent.objects.get(node=node, code="gpus_missing")
    assert (event.rule_class, event.gpu_index, event.reason) == (
        "node_reboot",
        None,
        "3 of 4 GPUs visible",
    )


def test_a_lost_node_that_connects_is_ready_and_its_lost_event_resolved() -> None:
    node = node_create("gpu-node-1", gpus=2, state=Node.State.LOST)
    now = timezone.now()
    lost = HealthEvent.objects.create(
        node=node, source="heartbeat", code="lost", rule_class="state", severity="critical",
        reason="no heartbeat", first_at=now, last_at=now,
    )  # fmt: skip

    node_connect(node_id=node.pk, hello=hello_validate(hello(gpus=2)), address=None)

    lost.refresh_from_db()
    assert lost.resolved_at is not None
    assert HealthEvent.objects.get(node=node, code="recovered").severity == "info"
    assert Node.objects.get(pk=node.pk).state == "ready"


def test_a_revoked_node_cannot_connect() -> None:
    node = node_create("gpu-node-1")
    Node.objects.filter(pk=node.pk).update(revoked_at=timezone.now())

    with pytest.raises(AgentRefused) as refused:
        node_connect(node_id=node.pk, hello=hello_validate(hello()), address=None)

    assert refused.value.close_code == CLOSE_REVOKED


# Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"protocol": 9}, "protocol"),
        ({"name": ""}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "x" * 200}, "name"),
        ({"backend": "cuda"}, "backend"),
        ({"gpus": "many"}, "gpus"),
        ({"gpus": [{"index": 99}]}, "gpus[0].index"),
        ({"gpus": [{"index": 0}, {"index": 0}]}, "gpus[1].index"),
    ],
)
def test_a_malformed_hello_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(ProtocolError) as error:
        hello_validate({**hello(), **change})

    assert error.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq": "1"}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": -1}, "seq"),
        ({"ts": None}, "ts"),
        ({"ts": time.time() + 86400}, "ts"),
        ({"ts": 1.0}, "ts"),
        ({"replay": "yes"}, "replay"),
        ({"gpus": [reading(0)] * 2}, "gpus[1].i"),
        ({"gpus": [reading(64)]}, "gpus[0].i"),
        ({"gpus": [reading(i % 64) for i in range(65)]}, "gpus"),
        ({"gpus": [reading(0, util="high")]}, "gpus[0].util"),
        ({"gpus": [reading(0, util=float("inf"))]}, "gpus[0].util"),
        ({"gpus": [reading(0, remap_pending=1)]}, "gpus[0].remap_pending"),
        ({"gpus": ["x"]}, "gpus[0]"),
        ({"host": {"cpu_percent": "1"}}, "host.cpu_percent"),
        ({"events": [{"kind": "boom"}]}, "events[0].kind"),
        ({"events": [{"kind": "xid", "code": "79"}]}, "events[0].code"),
        (
            {"gpus": [reading(0, procs=[{"pid": 1, "mem_mib": 1, "job": "x"}])]},
            "gpus[0].procs[0].job",
        ),
    ],
)
def test_a_malformed_batch_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(ProtocolError) as error:
        batch_validate({**batch(1), **change})

    assert error.value.field == field


def test_a_process_may_name_its_job() -> None:
    procs = [{"pid": 41, "name": "python", "user": "ml", "mem_mib": 512.0, "job": 12}]

    checked = batch_validate(batch(1, readings=[reading(0, procs=procs)]))

    assert checked.gpus[0]["util"] == 50.0


def test_missing_readings_stay_missing() -> None:
    checked = batch_validate(batch(1, readings=[{"i": 0, "util": None, "temp_c": 40}]))

    assert checked.gpus == {0: {"util": None, "temp_c": 40}}
    (row, _host) = batch_rows(7, checked)
    assert (row.util, row.temp_c, row.power_w) == (None, 40, None)


# Samples and the live summary --------------------------------------------------------------


def test_replayed_samples_are_stored_once() -> None:
    node = node_create(gpus=2)
    checked = batch_validate(batch(1, gpus=2, ts=1_700_000_000.25), now=1_700_000_001)

    samples_store(batch_rows(node.pk, checked))
    samples_store(batch_rows(node.pk, checked))

    assert GpuSample.objects.filter(node=node).count() == 2
    assert HostSample.objects.filter(node=node).count() == 1


def test_the_live_summary_is_compact_and_follows_the_readings() -> None:
    view = NodeView(
        id=3, name="demo-1", workspace_id=None, state="ready", health="degraded",
        simulated=True, expected_gpus=3, gpu_health={0: "healthy", 1: "degraded", 2: "unhealthy"},
        gpu_memory_mib={0: 1000, 1: 1000, 2: 1000},
    )  # fmt: skip
    checked = batch_validate(
        batch(
            42,
            readings=[
                reading(0, util=12.345, mem_used_mib=250, mem_total_mib=None, power_w=100.04),
                reading(1, power_w=None, ecc_sbe=3, ecc_dbe=1),
            ],
        )
    )

    summary = summary_build(view, checked)

    assert summary["gpus"] == [
        [12.3, 25.0, 60.0, 100.0, 0],
        [50.0, 50.0, 60.0, None, 1],
        [None, None, None, None, 2],
    ]
    assert summary["host"] == {"cpu": 12.5, "mem_pct": 25.0}
    assert summary["power_w"] == 100.0
    assert summary["ecc"] == [[0, 0], [3, 1], [None, None]]
    assert summary["fb"][0] == [250.0, 1000.0]
    assert (summary["id"], summary["seq"], summary["ws"], summary["health"]) == (
        3,
        42,
        None,
        "degraded",
    )


# Events ------------------------------------------------------------------------------------


def apply(node: Node, **kwargs: Any) -> tuple[str, dict[int, str]]:
    return findings_apply(node_id=node.pk, **kwargs)


def checked_events(*events: dict) -> tuple[dict, ...]:
    return batch_validate(batch(1, events=list(events))).events


def test_xid_13_records_an_event_and_leaves_the_gpu_in_service() -> None:
    node = node_create(gpus=2)

    health, gpus = apply(node, events=checked_events(xid_event(13, gpu=1)))

    event = HealthEvent.objects.get(node=node)
    assert (event.rule_class, event.severity, event.gpu_index) == ("application", "info", 1)
    assert (health, gpus[1]) == ("healthy", "healthy")


def test_xid_48_takes_the_gpu_out() -> None:
    node = node_create(gpus=2)

    health, gpus = apply(node, events=checked_events(xid_event(48, gpu=1)))

    assert gpus == {0: "healthy", 1: "unhealthy"}
    assert health == "degraded"


def test_xid_79_takes_the_node_out_and_marks_the_gpu_that_fell_off() -> None:
    node = node_create(gpus=2)

    health, gpus = apply(node, events=checked_events(xid_event(79, gpu=1)))

    assert health == "unhealthy"
    assert gpus == {0: "healthy", 1: "unhealthy"}
    assert HealthEvent.objects.get(node=node).gpu_index == 1


def test_the_same_xid_again_bumps_the_open_event() -> None:
    node = node_create(gpus=2)

    apply(node, events=checked_events(xid_event(48, gpu=1), xid_event(48, gpu=1)))
    apply(node, events=checked_events(xid_event(48, gpu=1)))

    event = HealthEvent.objects.get(node=node)
    assert event.count == 3
    assert event.last_at >= event.first_at


def test_a_warn_only_xid_repeating_within_a_day_escalates_its_event(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "XID_REPEAT_DRAIN": 3}
    settings.PODIUM_XID_109_POLICY = "warn"
    node = node_create(gpus=1)

    apply(node, events=checked_events(xid_event(109), xid_event(109)))
    assert HealthEvent.objects.get(node=node).rule_class == "disputed"
    _, gpus = apply(node, events=checked_events(xid_event(109)))

    event = HealthEvent.objects.get(node=node)
    assert (event.rule_class, event.severity, event.count) == ("gpu_reset", "critical", 3)
    assert gpus[0] == "unhealthy"


def test_xid_109_under_the_reset_policy_takes_the_gpu_out(settings: Any) -> None:
    settings.PODIUM_XID_109_POLICY = "reset"
    node = node_create(gpus=1)

    _, gpus = apply(node, events=checked_events(xid_event(109)))

    assert gpus[0] == "unhealthy"


def test_a_reset_class_xid_back_after_the_gpu_was_put_back_flags_it_for_replacement() -> None:
    node = node_create(gpus=1)
    apply(node, events=checked_events(xid_event(48)))
    HealthEvent.objects.filter(node=node).update(resolved_at=timezone.now())

    apply(node, events=checked_events(xid_event(48)))

    assert HealthEvent.objects.get(node=node, resolved_at__isnull=True).rule_class == "replace"


def test_a_watch_condition_resolves_when_it_clears_and_a_fatal_one_does_not() -> None:
    node = node_create(gpus=1)
    thermal, dbe = rules.reading_findings(0, {"throttle": 0x40, "ecc_dbe": 2})
    apply(node, raised=[thermal, dbe])
    assert Node.objects.get(pk=node.pk).health == "degraded"

    _, gpus = apply(node, cleared=[thermal.key, dbe.key])

    assert HealthEvent.objects.get(code="slowdown").resolved_at is not None
    assert HealthEvent.objects.get(code="dbe_volatile").resolved_at is None
    assert gpus[0] == "unhealthy"


def test_a_condition_that_comes_back_soon_reopens_its_event_without_a_new_alert() -> None:
    node = node_create(gpus=1)
    (thermal,) = rules.reading_findings(0, {"throttle": 0x40})
    apply(node, raised=[thermal])
    apply(node, cleared=[thermal.key])

    apply(node, raised=[thermal])

    event = HealthEvent.objects.get(code="slowdown")
    assert event.resolved_at is None
    assert event.count == 2


def test_a_condition_back_after_the_flap_window_opens_a_new_event() -> None:
    node = node_create(gpus=1)
    (thermal,) = rules.reading_findings(0, {"throttle": 0x40})
    apply(node, raised=[thermal])
    HealthEvent.objects.update(resolved_at=timezone.now() - timedelta(minutes=11))

    apply(node, raised=[thermal])

    assert HealthEvent.objects.filter(code="slowdown").count() == 2


def test_events_are_pushed_to_the_nodes_watchers_after_commit(
    django_capture_on_commit_callbacks: Any,
) -> None:
    node = node_create(gpus=1)

    with django_capture_on_commit_callbacks() as callbacks:
        apply(node, events=checked_events(xid_event(79)))

    # The health change for other layers, the node.event push, then the live update.
    assert len(callbacks) == 3


def test_a_health_change_tells_other_layers_after_commit(
    django_capture_on_commit_callbacks: Any,
) -> None:
    node = node_create(gpus=1)
    heard: list[tuple[int, str]] = []

    def receiver(sender: Any, node_id: int, what: str, **kwargs: Any) -> None:
        heard.append((node_id, what))

    node_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            apply(node, events=checked_events(xid_event(79)))
        assert heard == []
        for callback in callbacks:
            callback()
    finally:
        node_changed.disconnect(receiver)

    assert (node.pk, "health") in heard
