"""Writes operators make: rights per role, audit rows, pushes after commit."""

from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.accounts.tokens import token_matches
from apps.audit.models import AuditEntry
from apps.monitoring import services
from apps.monitoring.broadcast import agent_group, node_group
from apps.monitoring.models import AlertChannel, AlertDelivery, Gpu, HealthEvent, Node
from apps.system.crypto import secret_decrypt
from apps.system.errors import (
    ApplicationError,
    ConflictError,
    PermissionDeniedError,
)
from tests.conftest import Cast
from tests.monitoring.factories import event_create, node_create

pytestmark = pytest.mark.django_db


class GroupListener:
    """Messages sent to one channel group of the in-memory layer, read synchronously."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def messages(self) -> list[dict]:
        received = []
        while self.layer.channels.get(self.channel):
            received.append(async_to_sync(self.layer.receive)(self.channel))
        return received


@pytest.fixture
def live_updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Node ids whose live summary the services asked to refresh."""
    calls: list[int] = []
    monkeypatch.setattr(services, "node_live_update", calls.append)
    return calls


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run ``fn(**kwargs)`` and then its on-commit callbacks, as a committed request would."""

    def run(fn: Callable[..., Any], **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(**kwargs)

    return run


@pytest.fixture
def mine(cast: Cast) -> Node:
    return node_create("vision-1", workspace=cast.workspace)


@pytest.fixture
def shared(db: None) -> Node:
    return node_create("shared-1")


def audit_of(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action))


# Join tokens -------------------------------------------------------------------------------


def test_a_workspace_admin_mints_a_join_token_for_their_workspace(cast: Cast) -> None:
    token, plaintext = services.join_token_create(
        actor=cast.ws_admin, name="rack 4", workspace=cast.workspace, expires_in_hours=2, max_uses=3
    )

    assert plaintext.startswith(f"pdj_{token.prefix}_")
    assert token_matches(plaintext, token.digest)
    assert plaintext not in token.digest
    assert (token.workspace, token.max_uses, token.created_by) == (cast.workspace, 3, cast.ws_admin)
    assert token.expires_at is not None
    [entry] = audit_of("join_token.create")
    assert (entry.actor, entry.workspace) == (cast.ws_admin, cast.workspace)


@pytest.mark.parametrize(
    ("who", "scope"),
    [
        ("ws_admin", None),
        ("member", "workspace"),
        ("viewer", "workspace"),
        ("outsider", "workspace"),
    ],
)
def test_only_admins_of_the_scope_mint_join_tokens(cast: Cast, who: str, scope: str | None) -> None:
    workspace = getattr(cast, scope) if scope else None

    with pytest.raises(PermissionDeniedError):
        services.join_token_create(actor=getattr(cast, who), name="x", workspace=workspace)

    assert AuditEntry.objects.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "  "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "expires_in_hours": 0}, "expires_in_hours"),
        ({"name": "ok", "max_uses": 0}, "max_uses"),
    ],
)
def test_bad_join_token_input_names_the_field(
    cast: Cast, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.join_token_create(actor=cast.platform_admin, **kwargs)

    assert caught.value.field == field


def test_revoking_a_join_token_is_audited_once(cast: Cast) -> None:
    token, _ = services.join_token_create(actor=cast.platform_admin, name="lab")

    services.join_token_revoke(actor=cast.platform_admin, token=token)
    services.join_token_revoke(actor=cast.platform_admin, token=token)

    assert token.revoked_at is not None
    assert len(audit_of("join_token.revoke")) == 1
    with pytest.raises(PermissionDeniedError):
        services.join_token_revoke(actor=cast.ws_admin, token=token)


# Nodes -------------------------------------------------------------------------------------


def test_revoking_a_node_clears_its_token_and_drops_its_agent(
    cast: Cast, mine: Node, commit: Callable[..., Any], live_updates: list[int]
) -> None:
    Node.objects.filter(pk=mine.pk).update(token_prefix="abcdef012345", token_digest="d")
    mine.refresh_from_db()
    agent = GroupListener(agent_group(mine.pk))

    commit(services.node_revoke, actor=cast.ws_admin, node=mine)

    mine.refresh_from_db()
    assert (mine.state, mine.token_prefix, mine.token_digest) == ("revoked", None, "")
    assert mine.revoked_at is not None
    assert agent.messages() == [{"type": "agent.revoke"}]
    assert live_updates == [mine.pk]
    [entry] = audit_of("node.revoke")
    assert (entry.actor, entry.workspace) == (cast.ws_admin, cast.workspace)


@pytest.mark.parametrize("who", ["member", "viewer", "outsider"])
def test_only_admins_revoke_a_workspace_node(cast: Cast, mine: Node, who: str) -> None:
    with pytest.raises(PermissionDeniedError):
        services.node_revoke(actor=getattr(cast, who), node=mine)

    mine.refresh_from_db()
    assert mine.revoked_at is None


def test_a_shared_node_is_managed_by_platform_admins_only(cast: Cast, shared: Node) -> None:
    with pytest.raises(PermissionDeniedError):
        services.node_revoke(actor=cast.ws_admin, node=shared)

    services.node_revoke(actor=cast.platform_admin, node=shared)
    assert shared.state == "revoked"


def test_a_platform_admin_renames_a_node_and_moves_it(
    cast: Cast, shared: Node, commit: Callable[..., Any], live_updates: list[int]
) -> None:
    commit(
        services.node_update,
        actor=cast.platform_admin,
        node=shared,
        name="vision-9",
        workspace=cast.workspace,
    )

    shared.refresh_from_db()
    assert (shared.name, shared.workspace) == ("vision-9", cast.workspace)
    [entry] = audit_of("node.update")
    assert entry.changes == {"name": ["shared-1", "vision-9"], "workspace": [None, "Vision"]}
    assert live_updates == [shared.pk]

    services.node_update(actor=cast.platform_admin, node=shared, workspace=None)
    shared.refresh_from_db()
    assert shared.workspace is None


def test_a_node_name_must_be_free_and_only_platform_admins_change_nodes(
    cast: Cast, shared: Node, mine: Node
) -> None:
    with pytest.raises(ConflictError) as caught:
        services.node_update(actor=cast.platform_admin, node=shared, name="vision-1")
    assert caught.value.field == "name"
    with pytest.raises(PermissionDeniedError):
        services.node_update(actor=cast.ws_admin, node=mine, name="other")


# Events and return to service --------------------------------------------------------------


def test_acknowledging_a_watch_event_resolves_it_and_refreshes_health(
    cast: Cast, mine: Node, commit: Callable[..., Any], live_updates: list[int]
) -> None:
    event = event_create(
        mine, gpu_index=2, source="thermal", code="", rule_class="watch", severity="warning"
    )
    Gpu.objects.filter(node=mine, index=2).update(health="degraded")
    watchers = GroupListener(node_group(mine.pk))

    commit(services.event_acknowledge, actor=cast.member, event=event)

    event.refresh_from_db()
    assert event.acknowledged_by == cast.member
    assert event.resolved_by == cast.member
    assert Gpu.objects.get(node=mine, index=2).health == "healthy"
    assert live_updates == [mine.pk]
    [pushed] = watchers.messages()
    assert pushed["type"] == "node.event"
    assert pushed["event"]["id"] == event.pk
    assert pushed["event"]["resolved"] is True
    [entry] = audit_of("event.acknowledge")
    assert (entry.actor, entry.workspace, entry.changes) == (
        cast.member,
        cast.workspace,
        {"resolved": True},
    )


def test_acknowledging_a_fatal_event_leaves_it_open(cast: Cast, mine: Node) -> None:
    event = event_create(mine, gpu_index=0)

    services.event_acknowledge(actor=cast.ws_admin, event=event)

    event.refresh_from_db()
    assert event.acknowledged_at is not None
    assert event.resolved_at is None
    services.event_acknowledge(actor=cast.ws_admin, event=event)
    assert len(audit_of("event.acknowledge")) == 1


def test_an_info_event_is_resolved_by_acknowledging(cast: Cast, mine: Node) -> None:
    event = event_create(mine, rule_class="application", severity="info", code="13")

    services.event_acknowledge(actor=cast.ws_admin, event=event)

    assert event.resolved_at is not None


def test_who_may_acknowledge(cast: Cast, mine: Node, shared: Node) -> None:
    with pytest.raises(PermissionDeniedError):
        services.event_acknowledge(actor=cast.viewer, event=event_create(mine))
    with pytest.raises(PermissionDeniedError):
        services.event_acknowledge(actor=cast.member, event=event_create(shared))
    services.event_acknowledge(actor=cast.platform_admin, event=event_create(shared))
    assert AuditEntry.objects.filter(action="event.acknowledge").count() == 1


def test_a_resolved_event_cannot_be_acknowledged(cast: Cast, mine: Node) -> None:
    event = event_create(mine, rule_class="watch", severity="warning")
    services.event_acknowledge(actor=cast.member, event=event)

    with pytest.raises(ConflictError):
        services.event_acknowledge(actor=cast.member, event=event)


def test_returning_a_gpu_to_service_resolves_its_events_only(
    cast: Cast, mine: Node, commit: Callable[..., Any], live_updates: list[int]
) -> None:
    fatal = event_create(mine, gpu_index=2)
    other = event_create(mine, gpu_index=3)
    node_wide = event_create(mine, source="bus", code="79", rule_class="node_reboot")
    Gpu.objects.filter(node=mine, index__in=[2, 3]).update(health="unhealthy")
    gpu = Gpu.objects.select_related("node").get(node=mine, index=2)

    commit(services.gpu_return_to_service, actor=cast.ws_admin, gpu=gpu)

    fatal.refresh_from_db()
    other.refresh_from_db()
    node_wide.refresh_from_db()
    assert fatal.resolved_by == cast.ws_admin
    assert other.resolved_at is None
    assert node_wide.resolved_at is None
    assert gpu.health == "healthy"
    assert Gpu.objects.get(node=mine, index=3).health == "unhealthy"
    assert live_updates == [mine.pk]
    [entry] = audit_of("gpu.return_to_service")
    assert (entry.workspace, entry.changes) == (cast.workspace, {"resolved_events": 1})


def test_returning_a_node_to_service_resolves_its_and_its_gpus_events(
    cast: Cast, mine: Node, commit: Callable[..., Any], live_updates: list[int]
) -> None:
    event_create(mine, gpu_index=2)
    event_create(mine, source="bus", code="79", rule_class="node_reboot")
    Node.objects.filter(pk=mine.pk).update(health="unhealthy")
    mine.refresh_from_db()

    commit(services.node_return_to_service, actor=cast.ws_admin, node=mine)

    assert HealthEvent.objects.filter(node=mine, resolved_at__isnull=True).count() == 0
    assert mine.health == "healthy"
    assert set(Gpu.objects.filter(node=mine).values_list("health", flat=True)) == {"healthy"}
    assert live_updates == [mine.pk]
    assert audit_of("node.return_to_service")[0].changes == {"resolved_events": 2}


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_do_not_return_gpus_to_service(
    cast: Cast, mine: Node, who: str
) -> None:
    event = event_create(mine, gpu_index=1)
    gpu = Gpu.objects.select_related("node").get(node=mine, index=1)

    with pytest.raises(PermissionDeniedError):
        services.gpu_return_to_service(actor=getattr(cast, who), gpu=gpu)
    with pytest.raises(PermissionDeniedError):
        services.node_return_to_service(actor=getattr(cast, who), node=mine)

    event.refresh_from_db()
    assert event.resolved_at is None


# Fault injection ---------------------------------------------------------------------------


def _gpu(node: Node, index: int = 0) -> Gpu:
    return Gpu.objects.select_related("node", "node__workspace").get(node=node, index=index)


def test_an_admin_injects_a_fault_into_a_simulated_gpu(
    cast: Cast, mine: Node, commit: Callable[..., Any]
) -> None:
    agent = GroupListener(agent_group(mine.pk))

    command_id = commit(
        services.fault_inject, actor=cast.ws_admin, gpu=_gpu(mine, 3), fault="xid", code=79
    )

    assert agent.messages() == [
        {
            "type": "agent.command",
            "command": {
                "type": "inject_fault",
                "id": command_id,
                "gpu": 3,
                "fault": "xid",
                "code": 79,
            },
        }
    ]
    assert len(command_id) == 32
    [entry] = audit_of("gpu.fault_inject")
    assert (entry.actor, entry.workspace) == (cast.ws_admin, cast.workspace)
    assert entry.changes == {"fault": "xid", "code": 79, "command": command_id}


def test_a_fault_other_than_xid_carries_no_code(
    cast: Cast, shared: Node, commit: Callable[..., Any]
) -> None:
    agent = GroupListener(agent_group(shared.pk))

    commit(
        services.fault_inject, actor=cast.platform_admin, gpu=_gpu(shared), fault="overheat", code=5
    )

    [message] = agent.messages()
    assert message["command"]["fault"] == "overheat"
    assert message["command"]["code"] is None


def test_a_real_gpu_refuses_faults(cast: Cast) -> None:
    real = node_create("dgx-1", workspace=cast.workspace, simulated=False)
    agent = GroupListener(agent_group(real.pk))

    with pytest.raises(ConflictError) as caught:
        services.fault_inject(actor=cast.platform_admin, gpu=_gpu(real), fault="ecc_dbe")

    assert caught.value.field == "gpu"
    assert agent.messages() == []
    assert audit_of("gpu.fault_inject") == []


@pytest.mark.parametrize("state", ["lost", "pending", "revoked"])
def test_a_node_whose_agent_is_not_connected_refuses_faults(cast: Cast, state: str) -> None:
    node = node_create("gone-1", workspace=cast.workspace, state=state)

    with pytest.raises(ConflictError) as caught:
        services.fault_inject(actor=cast.ws_admin, gpu=_gpu(node), fault="overheat")

    assert caught.value.field == "node"


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_only_admins_inject_faults(cast: Cast, mine: Node, who: str) -> None:
    with pytest.raises(PermissionDeniedError):
        services.fault_inject(actor=getattr(cast, who), gpu=_gpu(mine), fault="overheat")


@pytest.mark.parametrize(
    ("fault", "code", "field"),
    [("melt", None, "fault"), ("xid", None, "code"), ("xid", 0, "code"), ("xid", 1000, "code")],
)
def test_bad_fault_input_names_the_field(
    cast: Cast, mine: Node, fault: str, code: int | None, field: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.fault_inject(actor=cast.ws_admin, gpu=_gpu(mine), fault=fault, code=code)

    assert caught.value.field == field


# Alert channels ----------------------------------------------------------------------------


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Delivery ids handed to the delivery task."""
    ids: list[int] = []

    class Task:
        @staticmethod
        def delay(delivery_id: int) -> None:
            ids.append(delivery_id)

    monkeypatch.setattr(services, "deliver_alert", Task)
    return ids


def test_a_platform_admin_adds_a_webhook_with_an_encrypted_secret(cast: Cast) -> None:
    channel = services.alert_channel_create(
        actor=cast.platform_admin, name="ops", url="https://hooks.example/ops", secret="s3cret"
    )

    assert channel.secret_encrypted != "s3cret"
    assert secret_decrypt(channel.secret_encrypted) == "s3cret"
    [entry] = audit_of("alert_channel.create")
    assert "s3cret" not in str(entry.changes)
    assert entry.changes["signed"] is True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://hooks.example/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://hooks.example", "name": ""}, "name"),
        ({"url": "https://hooks.example", "min_severity": "loud"}, "min_severity"),
    ],
)
def test_bad_webhook_input_names_the_field(cast: Cast, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.alert_channel_create(actor=cast.platform_admin, **{"name": "ops", **kwargs})

    assert caught.value.field == field
    assert AlertChannel.objects.count() == 0


def test_webhooks_are_for_platform_admins(cast: Cast) -> None:
    with pytest.raises(PermissionDeniedError):
        services.alert_channel_create(actor=cast.ws_admin, name="x", url="https://h.example")


def test_updating_and_deleting_a_webhook(cast: Cast) -> None:
    admin = cast.platform_admin
    channel = services.alert_channel_create(actor=admin, name="ops", url="https://h.example/a")

    services.alert_channel_update(
        actor=admin, channel=channel, enabled=False, secret="new", min_severity="critical"
    )
    channel.refresh_from_db()
    assert (channel.enabled, channel.min_severity) == (False, "critical")
    assert secret_decrypt(channel.secret_encrypted) == "new"
    services.alert_channel_update(actor=admin, channel=channel, secret="")
    channel.refresh_from_db()
    assert channel.secret_encrypted == ""

    services.alert_channel_delete(actor=admin, channel=channel)
    assert AlertChannel.objects.count() == 0
    assert [e.action for e in AuditEntry.objects.order_by("pk")] == [
        "alert_channel.create",
        "alert_channel.update",
        "alert_channel.update",
        "alert_channel.delete",
    ]


def test_testing_a_webhook_queues_the_newest_event_through_the_delivery_task(
    cast: Cast, mine: Node, commit: Callable[..., Any], queued: list[int]
) -> None:
    admin = cast.platform_admin
    channel = services.alert_channel_create(actor=admin, name="ops", url="https://h.example/a")
    event = event_create(mine)

    delivery = commit(services.alert_channel_test, actor=admin, channel=channel)

    assert (delivery.event, delivery.channel, delivery.status) == (event, channel, "pending")
    assert queued == [delivery.pk]
    AlertDelivery.objects.filter(pk=delivery.pk).update(status="failed", attempts=5)
    again = commit(services.alert_channel_test, actor=admin, channel=channel)
    assert (again.pk, again.status, again.attempts) == (delivery.pk, "pending", 0)
    assert len(audit_of("alert_channel.test")) == 2


def test_testing_a_webhook_without_any_event_is_refused(cast: Cast) -> None:
    admin = cast.platform_admin
    channel = services.alert_channel_create(actor=admin, name="ops", url="https://h.example/a")

    with pytest.raises(ConflictError):
        services.alert_channel_test(actor=admin, channel=channel)
