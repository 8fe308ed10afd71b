"""Browser websockets: one job's state changes and output, one pool's changes.

Both authorise in ``connect`` with the same rules as the pages, then forward what the
channel layer brings. A job the user may not see is refused without saying whether it
exists. Browsers fetch the changed partials over HTTP; output lines come as they are.
"""

import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from apps.scheduler import selectors
from apps.scheduler.broadcast import job_group, job_watch, pool_group
from apps.system.errors import NotFoundError

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


def _signed_in(scope: dict[str, Any]) -> Any:
    user = scope.get("user")
    return user if user is not None and user.is_authenticated else None


class _GroupConsumer(AsyncWebsocketConsumer):
    """Joins one group once ``authorise`` allowed the signed-in user, and leaves it."""

    group: str | None = None

    async def authorise(self, user: Any) -> str:
        """The group to join; raises NotFoundError when the user may not watch."""
        raise NotImplementedError

    async def connect(self) -> None:
        user = _signed_in(self.scope)
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            group = await self.authorise(user)
        except NotFoundError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)


class JobConsumer(_GroupConsumer):
    """One job's page: ``changed`` when its state, timeline or checkpoints moved, its
    output lines, and the metrics points its processes report.

    While connected it counts as a watcher of the job: only watched jobs are pushed.
    """

    job_id: int | None = None

    async def authorise(self, user: Any) -> str:
        job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        await database_sync_to_async(selectors.job_get)(user=user, job_id=job_id)
        self.job_id = job_id
        await self._watch(+1)
        return job_group(job_id)

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        await self._watch(-1)

    async def _watch(self, delta: int) -> None:
        if self.job_id is None:
            return
        try:
            await sync_to_async(job_watch, thread_sensitive=False)(self.job_id, delta)
        except Exception:
            logger.warning("Redis unreachable: job %s pushed whether watched or not", self.job_id)

    async def job_changed(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"kind": "changed"}))

    async def job_output(self, event: dict[str, Any]) -> None:
        await self.send(
            text_data=json.dumps(
                {
                    "kind": "output",
                    "attempt": event.get("attempt"),
                    "rank": event.get("rank"),
                    "seq": event.get("seq"),
                    "lines": event.get("lines") or [],
                }
            )
        )

    async def job_metrics(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"kind": "metrics", "points": event.get("points")}))


class PoolConsumer(_GroupConsumer):
    """One pool's pages: ``changed`` when its queue, usage or nodes moved."""

    async def authorise(self, user: Any) -> str:
        pool_id = int(self.scope["url_route"]["kwargs"]["pool_id"])
        await database_sync_to_async(selectors.pool_get)(pool_id=pool_id)
        return pool_group(pool_id)

    async def pool_changed(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"kind": "changed"}))
