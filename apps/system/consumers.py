"""Browser websocket for the live status page."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from apps.system.broadcast import STATUS_GROUP, status_html
from apps.system.health import system_status

CLOSE_UNAUTHENTICATED = 4401


class StatusConsumer(AsyncWebsocketConsumer):
    """Signed-in users receive the status partial on connect and after every change."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(STATUS_GROUP, self.channel_name)
        await self.accept()
        html = await database_sync_to_async(lambda: status_html(system_status()))()
        await self.send(text_data=html)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(STATUS_GROUP, self.channel_name)

    async def status_update(self, event: dict) -> None:
        await self.send(text_data=event["html"])
