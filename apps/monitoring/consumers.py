"""Browser websockets: the fleet overview and one node's live telemetry.

Both authorise in ``connect`` with the same rules as the pages, then forward what the
channel layer brings. A node the user may not see is refused without saying whether
it exists.
"""

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from apps.monitoring import selectors
from apps.monitoring.broadcast import node_group
from apps.monitoring.fleet import fleet_snapshot
from apps.system.errors import NotFoundError

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


def _signed_in(scope: dict[str, Any]) -> Any:
    user = scope.get("user")
    return user if user is not None and user.is_authenticated else None


class FleetConsumer(AsyncWebsocketConsumer):
    """The overview: a snapshot of every visible node on connect, then deltas.

    Frames come through the fleet groups of the user's scope; each node summary is
    checked against the user's rights again before it is sent.
    """

    groups_joined: list[str]
    is_admin: bool
    workspace_ids: set[int]

    async def connect(self) -> None:
        user = _signed_in(self.scope)
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.groups_joined, self.workspace_ids, node_ids = await database_sync_to_async(
            self._scope_of
        )(user)
        self.is_admin = user.is_platform_admin
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        nodes = await fleet_snapshot(node_ids)
        await self.send(text_data=json.dumps({"kind": "snapshot", "nodes": self._allowed(nodes)}))

    @staticmethod
    def _scope_of(user: Any) -> tuple[list[str], set[int], list[int]]:
        return (
            selectors.fleet_groups_for_user(user=user),
            selectors.workspace_ids_of(user=user),
            selectors.node_ids_visible(user=user),
        )

    def _allowed(self, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            n
            for n in nodes
            if selectors.summary_visible(
                summary=n, is_admin=self.is_admin, workspace_ids=self.workspace_ids
            )
        ]

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def fleet_frame(self, event: dict[str, Any]) -> None:
        nodes = self._allowed(event.get("nodes") or [])
        if nodes:
            await self.send(text_data=json.dumps({"kind": "delta", "nodes": nodes}))


class NodeConsumer(AsyncWebsocketConsumer):
    """One node's detail page: every batch, state change and event of that node."""

    group: str | None = None

    async def connect(self) -> None:
        user = _signed_in(self.scope)
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        node_id = int(self.scope["url_route"]["kwargs"]["node_id"])
        try:
            await database_sync_to_async(selectors.node_get)(user=user, node_id=node_id)
        except NotFoundError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = node_group(node_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        live = await database_sync_to_async(selectors.node_live)(node_id=node_id)
        await self.send(text_data=json.dumps({"kind": "snapshot", "node": live.summary}))

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def node_batch(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"kind": "batch", "batch": event["batch"]}))

    async def node_state(self, event: dict[str, Any]) -> None:
        await self.send(
            text_data=json.dumps(
                {
                    "kind": "state",
                    "state": event.get("state"),
                    "health": event.get("health"),
                    "gpus": event.get("gpus") or {},
                }
            )
        )

    async def node_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"kind": "event", "event": event["event"]}))
