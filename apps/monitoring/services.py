"""Writes operators make: join tokens, nodes, events, fault injection, alert channels.

Every function is atomic, checks the actor's rights and writes an audit entry; pushes
to browsers and agents happen after commit.

Rights: a shared node (no workspace) is managed by platform admins; a workspace's node
by platform admins and that workspace's admins. Members may acknowledge events of their
workspace's nodes; viewers never change anything.
"""

import enum
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import Role
from apps.accounts.selectors import User, Workspace
from apps.accounts.services import platform_admin_require
from apps.accounts.tokens import token_mint
from apps.audit.services import audit_record
from apps.monitoring.broadcast import agent_group, group_send
from apps.monitoring.health import FATAL_CLASSES, health_refresh
from apps.monitoring.ingest import node_events_push, node_live_update
from apps.monitoring.models import (
    AlertChannel,
    AlertDelivery,
    Gpu,
    HealthEvent,
    JoinToken,
    Node,
)
from apps.monitoring.selectors import node_can_acknowledge, node_can_manage, scope_role
from apps.monitoring.signals import node_changed_send
from apps.monitoring.tasks import deliver_alert
from apps.system.crypto import secret_encrypt
from apps.system.errors import ApplicationError, ConflictError, PermissionDeniedError
from apps.system.validation import text_required
from podium.agent import protocol

MAX_TOKEN_HOURS = 24 * 365
MAX_XID = 999
# States in which a node's agent is connected and can take a command.
CONNECTED_STATES = frozenset({Node.State.READY, Node.State.SUSPECT})


class Unset(enum.Enum):
    """Marks an argument the caller left out, where None is a meaningful value."""

    UNSET = "unset"


UNSET = Unset.UNSET


# Rights ------------------------------------------------------------------------------------


def _manage_check(actor: User, node: Node) -> None:
    """Platform admins manage every node; workspace admins their workspace's nodes."""
    if node_can_manage(user=actor, node=node):
        return
    if node.workspace_id is None:
        raise PermissionDeniedError("Only a platform admin can manage shared nodes.")
    raise PermissionDeniedError("Only a workspace admin can manage this workspace's nodes.")


def _acknowledge_check(actor: User, node: Node) -> None:
    """Admins as for managing; members too, on their own workspace's nodes."""
    if not node_can_acknowledge(user=actor, node=node):
        raise PermissionDeniedError("Your role does not allow acknowledging events of this node.")


# Pushes after commit -----------------------------------------------------------------------


def _agent_send(node_id: int, message: dict[str, Any]) -> None:
    async_to_sync(group_send)(agent_group(node_id), message)


# Join tokens -------------------------------------------------------------------------------


@transaction.atomic
def join_token_create(
    *,
    actor: User,
    name: str,
    workspace: Workspace | None = None,
    expires_in_hours: int | None = None,
    max_uses: int | None = None,
) -> tuple[JoinToken, str]:
    """An admin mints a join token; returns it and its plaintext, shown this once.

    Nodes joining with it are dedicated to ``workspace`` (shared when None).
    """
    if scope_role(user=actor, workspace=workspace) != Role.ADMIN:
        if workspace is None:
            raise PermissionDeniedError("Only a platform admin can create tokens for shared nodes.")
        raise PermissionDeniedError("Only a workspace admin can create join tokens for it.")
    name = text_required(name, field="name", max_length=100)
    expires_at = None
    if expires_in_hours is not None:
        if not 1 <= expires_in_hours <= MAX_TOKEN_HOURS:
            raise ApplicationError(
                f"Expiry must be between 1 and {MAX_TOKEN_HOURS} hours.", field="expires_in_hours"
            )
        expires_at = timezone.now() + timedelta(hours=expires_in_hours)
    if max_uses is not None and max_uses < 1:
        raise ApplicationError("Maximum uses must be at least 1.", field="max_uses")
    minted = token_mint(protocol.JOIN_TOKEN_SCHEME)
    token = JoinToken.objects.create(
        name=name,
        workspace=workspace,
        prefix=minted.prefix,
        digest=minted.digest,
        created_by=actor,
        expires_at=expires_at,
        max_uses=max_uses,
    )
    audit_record(
        actor=actor,
        action="join_token.create",
        target=token,
        workspace=workspace,
        changes={
            "name": name,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "max_uses": max_uses,
        },
    )
    return token, minted.plaintext


@transaction.atomic
def join_token_revoke(*, actor: User, token: JoinToken) -> JoinToken:
    """An admin revokes a join token; nodes that joined with it keep their own tokens."""
    if scope_role(user=actor, workspace=token.workspace) != Role.ADMIN:
        raise PermissionDeniedError("Only an admin of its scope can revoke this join token.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor, action="join_token.revoke", target=token, workspace=token.workspace
        )
    return token


# Nodes -------------------------------------------------------------------------------------


@transaction.atomic
def node_revoke(*, actor: User, node: Node) -> Node:
    """An admin revokes a node: its token stops working and a connected agent is dropped."""
    _manage_check(actor, node)
    if node.revoked_at is not None:
        return node
    now = timezone.now()
    node.revoked_at = now
    node.state = Node.State.REVOKED
    node.state_changed_at = now
    node.token_prefix = None
    node.token_digest = ""
    node.save(
        update_fields=["revoked_at", "state", "state_changed_at", "token_prefix", "token_digest"]
    )
    audit_record(actor=actor, action="node.revoke", target=node, workspace=node.workspace)
    node_id = node.pk
    transaction.on_commit(lambda: _agent_send(node_id, {"type": "agent.revoke"}))
    transaction.on_commit(lambda: node_live_update(node_id))
    node_changed_send(node_id, "state")
    return node


@transaction.atomic
def node_update(
    *,
    actor: User,
    node: Node,
    name: str | None = None,
    workspace: Workspace | Unset | None = UNSET,
) -> Node:
    """A platform admin renames a node or moves it to a workspace (None: shared)."""
    platform_admin_require(actor, "change nodes")
    changes: dict[str, Any] = {}
    if name is not None:
        name = text_required(name, field="name", max_length=128)
        if name != node.name:
            clash = Node.objects.filter(name=name, revoked_at__isnull=True).exclude(pk=node.pk)
            if clash.exists():
                raise ConflictError(f"A node named {name!r} already exists.", field="name")
            changes["name"] = [node.name, name]
            node.name = name
    if not isinstance(workspace, Unset) and workspace != node.workspace:
        changes["workspace"] = [
            node.workspace.name if node.workspace else None,
            workspace.name if workspace else None,
        ]
        node.workspace = workspace
    if changes:
        node.save(update_fields=["name", "workspace"])
        audit_record(
            actor=actor,
            action="node.update",
            target=node,
            workspace=node.workspace,
            changes=changes,
        )
        node_id = node.pk
        transaction.on_commit(lambda: node_live_update(node_id))
    return node


def _return_to_service(
    actor: User, node: Node, events: QuerySet[HealthEvent], target: Node | Gpu, action: str
) -> None:
    """Resolve ``events`` of ``node`` as ``actor``, recompute health, audit, push after commit."""
    _manage_check(actor, node)
    resolved = events.filter(resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by=actor
    )
    health_refresh(node_id=node.pk)
    target.refresh_from_db(fields=["health"])
    audit_record(
        actor=actor,
        action=action,
        target=target,
        workspace=node.workspace,
        changes={"resolved_events": resolved},
    )
    node_id = node.pk
    transaction.on_commit(lambda: node_live_update(node_id))


@transaction.atomic
def gpu_return_to_service(*, actor: User, gpu: Gpu) -> Gpu:
    """An admin marks a GPU back in service: its open events are resolved."""
    events = HealthEvent.objects.filter(node=gpu.node, gpu_index=gpu.index)
    _return_to_service(actor, gpu.node, events, gpu, "gpu.return_to_service")
    return gpu


@transaction.atomic
def node_return_to_service(*, actor: User, node: Node) -> Node:
    """An admin marks a node back in service: its open events, and its GPUs', are resolved."""
    events = HealthEvent.objects.filter(node=node)
    _return_to_service(actor, node, events, node, "node.return_to_service")
    return node


# Events ------------------------------------------------------------------------------------


def event_resolves_on_acknowledge(event: HealthEvent) -> bool:
    """Watch-class and informational events end when acknowledged; others stay open."""
    if event.rule_class in FATAL_CLASSES:
        return False
    return event.rule_class == "watch" or event.severity == HealthEvent.Severity.INFO


@transaction.atomic
def event_acknowledge(*, actor: User, event: HealthEvent) -> HealthEvent:
    """An operator acknowledges an event; a watch or info event is resolved with it.

    A fatal event stays open (and its GPU or node out of service) until marked back in
    service.
    """
    node = event.node
    _acknowledge_check(actor, node)
    if event.resolved_at is not None:
        raise ConflictError("This event is already resolved.", field="event_id")
    now = timezone.now()
    fields = []
    if event.acknowledged_at is None:
        event.acknowledged_at, event.acknowledged_by = now, actor
        fields += ["acknowledged_at", "acknowledged_by"]
    resolves = event_resolves_on_acknowledge(event)
    if resolves:
        event.resolved_at, event.resolved_by = now, actor
        fields += ["resolved_at", "resolved_by"]
    if not fields:
        return event
    event.save(update_fields=fields)
    audit_record(
        actor=actor,
        action="event.acknowledge",
        target=event,
        workspace=node.workspace,
        changes={"resolved": resolves},
    )
    transaction.on_commit(lambda: node_events_push(event.node_id, [event]))
    if resolves:
        health_refresh(node_id=node.pk)
        node_id = node.pk
        transaction.on_commit(lambda: node_live_update(node_id))
    return event


# Fault injection ---------------------------------------------------------------------------


@transaction.atomic
def fault_inject(*, actor: User, gpu: Gpu, fault: str, code: int | None = None) -> str:
    """An admin injects a fault into a simulated GPU; returns the command's id.

    Refused for real GPUs and for nodes whose agent is not connected.
    """
    node = gpu.node
    _manage_check(actor, node)
    if fault not in protocol.FAULTS:
        choices = ", ".join(protocol.FAULTS)
        raise ApplicationError(f"Fault must be one of: {choices}.", field="fault")
    if fault == protocol.FAULT_XID:
        if code is None or isinstance(code, bool) or not isinstance(code, int):
            raise ApplicationError("An XID fault needs its code, a number.", field="code")
        if not 1 <= code <= MAX_XID:
            raise ApplicationError(f"XID codes run from 1 to {MAX_XID}.", field="code")
    else:
        code = None
    if not gpu.simulated:
        raise ConflictError(
            f"GPU {gpu.index} of {node.name} is a real GPU; faults can only be injected "
            "into simulated GPUs.",
            field="gpu",
        )
    if node.state not in CONNECTED_STATES:
        raise ConflictError(
            f"{node.name} is {node.state}: its agent is not connected to take the fault.",
            field="node",
        )
    command_id = uuid.uuid4().hex
    command = {
        "type": protocol.INJECT_FAULT,
        "id": command_id,
        "gpu": gpu.index,
        "fault": fault,
        "code": code,
    }
    audit_record(
        actor=actor,
        action="gpu.fault_inject",
        target=gpu,
        workspace=node.workspace,
        changes={"fault": fault, "code": code, "command": command_id},
    )
    node_id = node.pk
    transaction.on_commit(
        lambda: _agent_send(node_id, {"type": "agent.command", "command": command})
    )
    return command_id


# Alert channels ----------------------------------------------------------------------------

_url_validator = URLValidator(schemes=["http", "https"])


def _clean_url(url: str | None) -> str:
    url = (url or "").strip()
    if not url:
        raise ApplicationError("URL is required.", field="url")
    if len(url) > AlertChannel._meta.get_field("url").max_length:  # type: ignore[operator]
        raise ApplicationError("URL is too long.", field="url")
    try:
        _url_validator(url)
    except ValidationError:
        raise ApplicationError("URL must be an http:// or https:// address.", field="url") from None
    return url


def _clean_severity(severity: str) -> str:
    if severity not in HealthEvent.Severity.values:
        choices = ", ".join(HealthEvent.Severity.values)
        raise ApplicationError(f"Severity must be one of: {choices}.", field="min_severity")
    return severity


@transaction.atomic
def alert_channel_create(
    *,
    actor: User,
    name: str,
    url: str,
    secret: str = "",
    min_severity: str = HealthEvent.Severity.WARNING,
    enabled: bool = True,
) -> AlertChannel:
    """A platform admin adds a webhook; the signing secret is stored encrypted."""
    platform_admin_require(actor, "manage alert channels")
    channel = AlertChannel.objects.create(
        name=text_required(name, field="name", max_length=100),
        url=_clean_url(url),
        secret_encrypted=secret_encrypt(secret or ""),
        min_severity=_clean_severity(min_severity),
        enabled=enabled,
        created_by=actor,
    )
    audit_record(
        actor=actor,
        action="alert_channel.create",
        target=channel,
        changes={
            "name": channel.name,
            "url": channel.url,
            "min_severity": channel.min_severity,
            "enabled": enabled,
            "signed": bool(secret),
        },
    )
    return channel


@transaction.atomic
def alert_channel_update(
    *,
    actor: User,
    channel: AlertChannel,
    name: str | None = None,
    url: str | None = None,
    secret: str | None = None,
    min_severity: str | None = None,
    enabled: bool | None = None,
) -> AlertChannel:
    """A platform admin changes a webhook; ``secret=""`` removes the signing secret."""
    platform_admin_require(actor, "manage alert channels")
    changes: dict[str, Any] = {}
    if (
        name is not None
        and (name := text_required(name, field="name", max_length=100)) != channel.name
    ):
        changes["name"], channel.name = name, name
    if url is not None and (url := _clean_url(url)) != channel.url:
        changes["url"], channel.url = url, url
    if min_severity is not None and _clean_severity(min_severity) != channel.min_severity:
        changes["min_severity"], channel.min_severity = min_severity, min_severity
    if enabled is not None and enabled != channel.enabled:
        changes["enabled"], channel.enabled = enabled, enabled
    if secret is not None:
        channel.secret_encrypted = secret_encrypt(secret)
        changes["signed"] = bool(secret)
    if changes:
        channel.save()
        audit_record(actor=actor, action="alert_channel.update", target=channel, changes=changes)
    return channel


@transaction.atomic
def alert_channel_delete(*, actor: User, channel: AlertChannel) -> None:
    """A platform admin removes a webhook and its delivery history."""
    platform_admin_require(actor, "manage alert channels")
    audit_record(
        actor=actor,
        action="alert_channel.delete",
        target=channel,
        changes={"name": channel.name, "url": channel.url},
    )
    channel.delete()


@transaction.atomic
def alert_channel_test(*, actor: User, channel: AlertChannel) -> AlertDelivery:
    """A platform admin sends the newest event to a webhook through the real delivery path.

    A delivery of that event to this channel is (re)queued from scratch, so its status
    on the alerts page tells whether the webhook answered.
    """
    platform_admin_require(actor, "test alert channels")
    event = HealthEvent.objects.order_by("-last_at", "-id").first()
    if event is None:
        raise ConflictError(
            "There is no event yet to send; the test uses the newest event.", field="channel_id"
        )
    delivery, _ = AlertDelivery.objects.update_or_create(
        event=event,
        channel=channel,
        defaults={
            "status": AlertDelivery.Status.PENDING,
            "attempts": 0,
            "last_error": "",
            "response_code": None,
            "delivered_at": None,
        },
    )
    audit_record(
        actor=actor,
        action="alert_channel.test",
        target=channel,
        changes={"event": event.pk, "delivery": delivery.pk},
    )
    delivery_id = delivery.pk
    transaction.on_commit(lambda: _delivery_enqueue(delivery_id))
    return delivery


def _delivery_enqueue(delivery_id: int) -> None:
    deliver_alert.delay(delivery_id)
