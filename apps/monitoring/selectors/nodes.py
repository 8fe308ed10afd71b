"""Nodes a user may see, their GPUs, roles on them, live state in Redis and join tokens."""

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.db.models import Count, Q, QuerySet

from apps.accounts.models import Role
from apps.accounts.selectors import (
    User,
    Workspace,
    membership_role,
    workspace_ids_administered,
    workspace_ids_member,
)
from apps.monitoring.broadcast import (
    FLEET_ALL_GROUP,
    FLEET_SHARED_GROUP,
    LATEST_KEY,
    REJECTED_KEY,
    SEEN_KEY,
    fleet_workspace_group,
)
from apps.monitoring.models import (
    Gpu,
    Health,
    JoinToken,
    Node,
)
from apps.system.errors import NotFoundError
from apps.system.heartbeats import redis_client

HEALTH_CODES = {0: Health.HEALTHY, 1: Health.DEGRADED, 2: Health.UNHEALTHY}

# Nodes -------------------------------------------------------------------------------------


def _visible_nodes(user: User) -> QuerySet[Node]:
    nodes = Node.objects.select_related("workspace")
    if user.is_platform_admin:
        return nodes
    return nodes.filter(
        Q(workspace__isnull=True) | Q(workspace_id__in=workspace_ids_member(user=user))
    )


@dataclass(frozen=True)
class NodeFilter:
    """What the node list is narrowed to; empty fields do not filter."""

    state: str | None = None
    health: str | None = None
    workspace_id: int | None = None
    shared: bool = False
    search: str | None = None


def node_list(*, user: User, filters: NodeFilter | None = None) -> QuerySet[Node]:
    """The nodes ``user`` may see, with ``gpu_count`` and ``unhealthy_gpu_count``.

    Revoked nodes are left out unless the state filter asks for them.
    """
    filters = filters or NodeFilter()
    nodes = _visible_nodes(user).annotate(
        gpu_count=Count("gpus", distinct=True),
        unhealthy_gpu_count=Count("gpus", filter=Q(gpus__health=Health.UNHEALTHY), distinct=True),
    )
    if filters.state:
        nodes = nodes.filter(state=filters.state)
    else:
        nodes = nodes.exclude(state=Node.State.REVOKED)
    if filters.health:
        nodes = nodes.filter(health=filters.health)
    if filters.shared:
        nodes = nodes.filter(workspace__isnull=True)
    elif filters.workspace_id is not None:
        nodes = nodes.filter(workspace_id=filters.workspace_id)
    if filters.search:
        nodes = nodes.filter(name__icontains=filters.search.strip())
    return nodes.order_by("name", "pk")


def node_get(*, user: User, node_id: int) -> Node:
    """One node ``user`` may see (revoked ones included), else NotFoundError."""
    try:
        return _visible_nodes(user).get(pk=node_id)
    except Node.DoesNotExist:
        raise NotFoundError("Node not found.", field="node_id") from None


def node_gpus(*, node: Node) -> list[Gpu]:
    """The GPUs of a node already authorised by ``node_get``, by index."""
    return list(Gpu.objects.filter(node=node).order_by("index"))


def gpu_get(*, user: User, node_id: int, index: int) -> Gpu:
    """One GPU of a node ``user`` may see, else NotFoundError."""
    node = node_get(user=user, node_id=node_id)
    try:
        gpu = Gpu.objects.get(node=node, index=index)
    except Gpu.DoesNotExist:
        raise NotFoundError("GPU not found.", field="index") from None
    gpu.node = node
    return gpu


def scope_role(*, user: User, workspace: Workspace | None) -> Role | None:
    """The role ``user`` acts with on what belongs to ``workspace`` or, with None, to the
    whole cluster: platform admins act as admins everywhere; in the cluster's shared
    scope nobody else has a role (they only read)."""
    if workspace is None:
        return Role.ADMIN if user.is_platform_admin else None
    return membership_role(user=user, workspace=workspace)


def node_role(*, user: User, node: Node) -> Role | None:
    """The role ``user`` acts with on ``node`` (see ``scope_role``)."""
    return scope_role(user=user, workspace=node.workspace)


def node_can_manage(*, user: User, node: Node) -> bool:
    """Whether ``user`` may revoke, return to service or inject faults on ``node``."""
    return node_role(user=user, node=node) == Role.ADMIN


def node_can_acknowledge(*, user: User, node: Node) -> bool:
    """Whether ``user`` may acknowledge events of ``node`` (admins; members of its workspace)."""
    return node_role(user=user, node=node) in {Role.ADMIN, Role.MEMBER}


def node_ids_visible(*, user: User) -> list[int]:
    """Ids of the live (not revoked) nodes ``user`` may see."""
    nodes = _visible_nodes(user).exclude(state=Node.State.REVOKED).order_by("name")
    return list(nodes.values_list("pk", flat=True))


def workspace_ids_of(*, user: User) -> set[int]:
    """The workspaces ``user`` is a member of (any role)."""
    return set(workspace_ids_member(user=user))


def fleet_groups_for_user(*, user: User) -> list[str]:
    """The fleet channel groups ``user``'s overview joins.

    Platform admins see every node through one group; others see the shared nodes and
    one group per workspace they belong to.
    """
    if user.is_platform_admin:
        return [FLEET_ALL_GROUP]
    workspace_ids = sorted(workspace_ids_of(user=user))
    return [FLEET_SHARED_GROUP, *(fleet_workspace_group(ws) for ws in workspace_ids)]


def summary_visible(*, summary: dict[str, Any], is_admin: bool, workspace_ids: set[int]) -> bool:
    """Whether a live node summary may be shown to a user of these rights."""
    return is_admin or summary.get("ws") is None or summary.get("ws") in workspace_ids


# Live state in Redis -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLive:
    """What Redis holds about a node right now; empty when Redis cannot be reached."""

    summary: dict[str, Any] | None = None
    seen_at: float | None = None
    rejected: int = 0
    available: bool = True

    def heartbeat_age(self, now: float | None = None) -> float | None:
        if self.seen_at is None:
            return None
        return max(0.0, (now or time.time()) - self.seen_at)

    def gpu_reading(self, index: int) -> dict[str, Any] | None:
        """The latest reading of one GPU from the summary, by name."""
        gpus = (self.summary or {}).get("gpus") or []
        if index >= len(gpus) or gpus[index] is None:
            return None
        util, mem_pct, temp, power, health = (list(gpus[index]) + [None] * 5)[:5]
        return {
            "util": util,
            "mem_used_pct": mem_pct,
            "temp_c": temp,
            "power_w": power,
            "health": HEALTH_CODES.get(health) if health is not None else None,
        }


def node_live(*, node_id: int) -> NodeLive:
    """The live summary, last-heard time and refused-message count of a node."""
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.hget(LATEST_KEY, str(node_id))
        pipe.hget(SEEN_KEY, str(node_id))
        pipe.hget(REJECTED_KEY, str(node_id))
        latest, seen, rejected = pipe.execute()
    except (redis.RedisError, OSError):
        return NodeLive(available=False)
    summary = json.loads(latest) if latest else None
    return NodeLive(
        summary=summary,
        seen_at=float(seen) if seen else None,
        rejected=int(rejected) if rejected else 0,
    )


# Join tokens -------------------------------------------------------------------------------


def join_token_can_manage(*, user: User) -> bool:
    """Whether ``user`` may create join tokens at all (platform or some workspace admin)."""
    return user.is_platform_admin or workspace_ids_administered(user=user).exists()


def join_token_list(*, user: User) -> QuerySet[JoinToken]:
    """Join tokens ``user`` manages: all for platform admins, else their workspaces'."""
    tokens = JoinToken.objects.select_related("workspace", "created_by").order_by(
        "-created_at", "-id"
    )
    if user.is_platform_admin:
        return tokens
    return tokens.filter(workspace_id__in=workspace_ids_administered(user=user))


def join_token_get(*, user: User, token_id: int) -> JoinToken:
    """One join token ``user`` manages, else NotFoundError."""
    try:
        return join_token_list(user=user).get(pk=token_id)
    except JoinToken.DoesNotExist:
        raise NotFoundError("Join token not found.", field="token_id") from None


def join_command(*, server: str, token: str) -> str:
    """The command line an operator runs on a new node to join it with ``token``."""
    return f"podium agent --server {server.rstrip('/')} --token {token}"
