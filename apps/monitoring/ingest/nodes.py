"""Agents' identities and their nodes' lives: tokens, joining, connecting, heartbeats.

Node states: pending (joined, not connected yet) → ready while heard from → suspect after
NODE_SUSPECT_AFTER seconds of silence → lost after NODE_LOST_AFTER, and back to ready as
soon as it is heard again. Each transition is a ``heartbeat`` event of class ``state``.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.tokens import token_matches, token_mint, token_prefix
from apps.audit.services import audit_record
from apps.monitoring import rules
from apps.monitoring.alerts import alerts_enqueue
from apps.monitoring.broadcast import SEEN_KEY
from apps.monitoring.health import health_refresh
from apps.monitoring.ingest.events import event_raise, findings_apply, open_conditions
from apps.monitoring.ingest.live import NodeView, node_events_push, node_live_update
from apps.monitoring.ingest.schema import Hello
from apps.monitoring.models import Gpu, HealthEvent, JoinToken, Node
from apps.monitoring.rules import Finding
from apps.monitoring.signals import node_changed_send
from apps.system.heartbeats import redis_client
from podium.agent.protocol import (
    CLOSE_BAD_TOKEN,
    CLOSE_NAME_TAKEN,
    CLOSE_REVOKED,
    JOIN_TOKEN_SCHEME,
    NODE_TOKEN_SCHEME,
)

logger = logging.getLogger(__name__)

LIVE_STATES = (Node.State.PENDING, Node.State.READY, Node.State.SUSPECT, Node.State.LOST)
STATE_CLASS = "state"
# A clock skew is stored again only when it moved by more than this.
SKEW_STORE_DELTA_MS = 50.0


class AgentRefused(Exception):
    """The console will not talk to this agent; ``close_code`` tells it why."""

    def __init__(self, close_code: int, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True)
class AuthResult:
    """Who a presented token is: a join token to trade, or a node."""

    close_code: int | None = None
    join_token_id: int | None = None
    node_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.close_code is None


def _join_token_refusal(join: JoinToken, now: datetime) -> AgentRefused | None:
    if join.revoked_at is not None:
        return AgentRefused(CLOSE_REVOKED, "this join token was revoked")
    if join.expires_at is not None and join.expires_at <= now:
        return AgentRefused(CLOSE_BAD_TOKEN, "this join token has expired")
    if join.max_uses is not None and join.uses >= join.max_uses:
        return AgentRefused(CLOSE_BAD_TOKEN, "this join token has been used up")
    return None


def agent_authenticate(token: str) -> AuthResult:
    """Check a token an agent presents: a join token (``pdj_``) or a node token (``pdn_``)."""
    if prefix := token_prefix(token, JOIN_TOKEN_SCHEME):
        join = JoinToken.objects.filter(prefix=prefix).first()
        if join is None or not token_matches(token, join.digest):
            return AuthResult(close_code=CLOSE_BAD_TOKEN)
        if refusal := _join_token_refusal(join, timezone.now()):
            return AuthResult(close_code=refusal.close_code)
        return AuthResult(join_token_id=join.pk)
    if prefix := token_prefix(token, NODE_TOKEN_SCHEME):
        node = Node.objects.filter(token_prefix=prefix).first()
        if node is None or not token_matches(token, node.token_digest):
            return AuthResult(close_code=CLOSE_BAD_TOKEN)
        if node.revoked_at is not None:
            return AuthResult(close_code=CLOSE_REVOKED)
        return AuthResult(node_id=node.pk)
    return AuthResult(close_code=CLOSE_BAD_TOKEN)


def _facts_apply(node: Node, hello: Hello, address: str | None) -> tuple[int, int]:
    """Store what the hello says about the node and its GPUs; returns (visible, expected)."""
    node.facts = {**hello.facts, "agent_version": hello.agent_version}
    node.gpu_backend = hello.backend
    node.gpu_status = hello.gpu_status
    node.simulated = hello.backend == "simulated" or any(g.simulated for g in hello.gpus)
    node.agent_version = hello.agent_version
    node.address = address
    if hello.machine_id:
        node.machine_id = hello.machine_id
    existing = {g.index: g for g in Gpu.objects.filter(node=node)}
    seen = set()
    for info in hello.gpus:
        seen.add(info.index)
        values = {
            "uuid": info.uuid,
            "name": info.name,
            "serial": info.serial,
            "memory_total_mib": info.memory_total_mib,
            "pci_bus_id": info.pci_bus_id,
            "nvlink_peers": list(info.nvlink_peers),
            "simulated": info.simulated or hello.backend == "simulated",
            "present": True,
        }
        gpu = existing.get(info.index)
        if gpu is None:
            Gpu.objects.create(node=node, index=info.index, **values)
        elif any(getattr(gpu, k) != v for k, v in values.items()):
            Gpu.objects.filter(pk=gpu.pk).update(**values)
    gone = [g.pk for index, g in existing.items() if index not in seen and g.present]
    if gone:
        Gpu.objects.filter(pk__in=gone).update(present=False)
    node.expected_gpus = max(node.expected_gpus, len(hello.gpus))
    return len(hello.gpus), node.expected_gpus


@transaction.atomic
def node_join(*, join_token_id: int, hello: Hello, address: str | None) -> tuple[Node, str]:
    """Trade a join token for a node and its token (plaintext returned once).

    A live node of the same name is taken over only by the same machine joining into the
    same workspace (a reinstalled agent); its token is rotated. Otherwise the name is taken.
    """
    now = timezone.now()
    join = (
        JoinToken.objects.select_for_update(of=("self",))
        .select_related("workspace")
        .get(pk=join_token_id)
    )
    if refusal := _join_token_refusal(join, now):
        raise refusal
    minted = token_mint(NODE_TOKEN_SCHEME)
    node = Node.objects.select_for_update().filter(name=hello.name, revoked_at__isnull=True).first()
    rejoined = node is not None
    if node is not None:
        if (
            not hello.machine_id
            or node.machine_id != hello.machine_id
            or node.workspace_id != join.workspace_id
        ):
            raise AgentRefused(CLOSE_NAME_TAKEN, f"a node named {hello.name} already exists")
        node.token_prefix = minted.prefix
        node.token_digest = minted.digest
        node.join_token = join
    else:
        node = Node(
            name=hello.name,
            machine_id=hello.machine_id,
            workspace=join.workspace,
            join_token=join,
            token_prefix=minted.prefix,
            token_digest=minted.digest,
            state=Node.State.PENDING,
            state_changed_at=now,
        )
        node.save()
    _facts_apply(node, hello, address)
    node.save()
    JoinToken.objects.filter(pk=join.pk).update(uses=F("uses") + 1, last_used_at=now)
    audit_record(
        actor=None,
        action="node.join",
        target=node,
        workspace=join.workspace,
        changes={"join_token": join.name, "address": address, "rejoined": rejoined},
    )
    return node, minted.plaintext


def _state_finding(state: str, reason: str) -> Finding:
    severity, action = {
        Node.State.SUSPECT: (rules.WARNING, "watch; the node is taken out if it stays silent"),
        Node.State.LOST: (rules.CRITICAL, "take the node out, requeue all its jobs"),
        Node.State.READY: (rules.INFO, "none; the node is back"),
    }[Node.State(state)]
    code = "recovered" if state == Node.State.READY else state
    return Finding(
        source="heartbeat",
        code=code,
        rule_class=STATE_CLASS,
        severity=severity,
        reason=reason,
        action=action,
        gpu_index=None,
    )


def _state_set(node: Node, state: str, *, now: datetime, reason: str) -> list[HealthEvent]:
    """Move a locked node to ``state`` and record the transition as events."""
    previous = node.state
    node.state = state
    node.state_changed_at = now
    node_changed_send(node.pk, "state")
    open_beats = HealthEvent.objects.filter(node=node, source="heartbeat", resolved_at__isnull=True)
    if state == Node.State.READY:  # back: every heartbeat event is over
        closing = list(open_beats)
    elif state == Node.State.LOST:  # suspect turned into lost
        closing = list(open_beats.filter(code=Node.State.SUSPECT))
    else:
        closing = []
    for event in closing:
        event.resolved_at = now
    HealthEvent.objects.bulk_update(closing, ["resolved_at"])
    changed = list(closing)
    if state == Node.State.READY:
        if previous in (Node.State.SUSPECT, Node.State.LOST):
            event, _ = event_raise(node_id=node.pk, finding=_state_finding(state, reason), now=now)
            event.resolved_at = now
            event.save(update_fields=["resolved_at"])
            changed.append(event)
        return changed
    event, new = event_raise(node_id=node.pk, finding=_state_finding(state, reason), now=now)
    changed.append(event)
    if new:
        alerts_enqueue(event)
    return changed


def _after_change(node_id: int, changed: list[HealthEvent]) -> None:
    transaction.on_commit(lambda: node_events_push(node_id, changed))
    transaction.on_commit(lambda: node_live_update(node_id))


@transaction.atomic
def node_connect(*, node_id: int, hello: Hello, address: str | None) -> NodeView:
    """An agent connected: store its facts and GPUs, make the node ready, check its GPUs."""
    now = timezone.now()
    node = Node.objects.select_for_update().get(pk=node_id)
    if node.revoked_at is not None:
        raise AgentRefused(CLOSE_REVOKED, "this node was revoked")
    visible, expected = _facts_apply(node, hello, address)
    node.connected_at = now
    node.last_seen_at = now
    changed: list[HealthEvent] = []
    if node.state != Node.State.READY:
        changed = _state_set(node, Node.State.READY, now=now, reason="the agent connected")
    node.save()
    missing = rules.node_findings(expected_gpus=expected, visible_gpus=visible)
    findings_apply(node_id=node.pk, raised=missing)
    _after_change(node.pk, changed)
    node.refresh_from_db(fields=["health"])
    gpus = list(Gpu.objects.filter(node=node))
    return NodeView(
        id=node.pk,
        name=node.name,
        workspace_id=node.workspace_id,
        state=node.state,
        health=node.health,
        simulated=node.simulated,
        expected_gpus=node.expected_gpus,
        gpu_health={g.index: g.health for g in gpus},
        gpu_memory_mib={g.index: g.memory_total_mib for g in gpus},
        open_conditions=open_conditions(node.pk),
        clock_skew_ms=node.clock_skew_ms,
    )


def node_seen(*, node_id: int, at: float) -> None:
    """Record when the console last heard from the node (its agent disconnected, say)."""
    Node.objects.filter(pk=node_id).update(last_seen_at=datetime.fromtimestamp(at, tz=UTC))


def node_clock_skew_set(*, node_id: int, skew_ms: float) -> None:
    """Store the agent's measured clock skew (agent minus console, in ms)."""
    Node.objects.filter(pk=node_id).update(clock_skew_ms=round(skew_ms, 1))


def _seen_times() -> dict[int, float] | None:
    try:
        raw = redis_client().hgetall(SEEN_KEY)
    except Exception:
        logger.warning("Redis unreachable: node sweep skipped")
        return None
    return {int(k): float(v) for k, v in raw.items()}


def nodes_sweep(*, now: float | None = None) -> int:
    """Move nodes between ready, suspect and lost by how long they have been silent.

    Returns how many changed state. Without Redis (where agents' last words are kept)
    nothing changes: a console that cannot see heartbeats does not declare nodes lost.
    """
    seen = _seen_times()
    if seen is None:
        return 0
    now = time.time() if now is None else now
    suspect_after = settings.PODIUM["NODE_SUSPECT_AFTER"]
    lost_after = settings.PODIUM["NODE_LOST_AFTER"]
    candidates = Node.objects.filter(
        revoked_at__isnull=True,
        state__in=[Node.State.READY, Node.State.SUSPECT, Node.State.LOST],
    ).values_list("pk", "state", "last_seen_at")
    moved = 0
    for node_id, state, last_seen_at in candidates:
        heard = seen.get(node_id) or (last_seen_at.timestamp() if last_seen_at else None)
        if heard is None:
            continue
        silence = now - heard
        if silence >= lost_after:
            target = Node.State.LOST
        elif silence >= suspect_after:
            target = Node.State.LOST if state == Node.State.LOST else Node.State.SUSPECT
        else:
            target = Node.State.READY
        if target != state and _sweep_move(node_id, state, target, heard=heard, silence=silence):
            moved += 1
    return moved


@transaction.atomic
def _sweep_move(node_id: int, expected: str, target: str, *, heard: float, silence: float) -> bool:
    node = Node.objects.select_for_update().filter(pk=node_id, revoked_at__isnull=True).first()
    if node is None or node.state != expected:
        return False
    reason = {
        Node.State.SUSPECT: f"no heartbeat for {silence:.0f} s",
        Node.State.LOST: f"no heartbeat for {silence:.0f} s",
        Node.State.READY: "heartbeats resumed",
    }[Node.State(target)]
    changed = _state_set(node, target, now=timezone.now(), reason=reason)
    node.last_seen_at = datetime.fromtimestamp(heard, tz=UTC)
    node.save(update_fields=["state", "state_changed_at", "last_seen_at"])
    health_refresh(node_id=node.pk)
    _after_change(node.pk, changed)
    return True
