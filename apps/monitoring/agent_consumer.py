"""The agent websocket: one connection per node, authenticated with a join or node token.

Per connection: the hello within HELLO_TIMEOUT seconds, then batches, heartbeats and
time answers. Every frame is size-checked, rate-limited (a token bucket of AGENT_RATE
per second, AGENT_BURST deep) and parsed; whatever is refused is counted (locally and in
``REJECTED_KEY``) and never closes the connection.

Other layers handle their own message types (job process events) through
``settings.AGENT_MESSAGE_HANDLERS``: a message type, or ``hello`` for the agent's first
frame, mapped to the dotted path of ``handler(node_id, message) -> [command, ...]``, a
synchronous function whose returned commands are sent back to the agent.

A batch is turned into sample rows held in a buffer that is bulk-inserted every
TELEMETRY_FLUSH_INTERVAL seconds, then acknowledged. Its events and the conditions its
readings show go through the health rules in memory; the database is only touched when
a finding begins or a condition clears. Live batches also update the node's live
summary in Redis and go to the node's watchers. Redis being away never ends the
connection: its writes are skipped until it answers again.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.module_loading import import_string

from apps.monitoring.broadcast import (
    DIRTY_KEY,
    LATEST_KEY,
    REJECTED_KEY,
    SEEN_KEY,
    agent_group,
    node_group,
)
from apps.monitoring.ingest import (
    AgentRefused,
    AuthResult,
    Batch,
    NodeView,
    ProtocolError,
    agent_authenticate,
    batch_rows,
    batch_validate,
    findings_apply,
    hello_validate,
    node_clock_skew_set,
    node_connect,
    node_join,
    node_seen,
    open_conditions,
    samples_store,
    summary_build,
    time_validate,
)
from apps.monitoring.ingest.nodes import SKEW_STORE_DELTA_MS
from apps.monitoring.models import GpuSample, HostSample
from apps.monitoring.rules import Finding, condition_key, reading_findings
from apps.system.heartbeats import async_redis_client
from apps.system.origin import scope_header
from podium.agent.protocol import (
    ACK,
    BATCH,
    CLOSE_BAD_TOKEN,
    CLOSE_PROTOCOL,
    CLOSE_REPLACED,
    CLOSE_REVOKED,
    FAULT_RESULT,
    HEARTBEAT,
    HELLO,
    TIME,
    WELCOME,
)
from podium.tokenbucket import TokenBucket

logger = logging.getLogger(__name__)

CLOSE_TRY_AGAIN = 1011  # the console cannot store what it was sent: reconnect and replay
ConditionKey = tuple[int | None, str, str]


AgentHandler = Callable[[int, dict[str, Any]], list[dict[str, Any]]]


@cache
def _handlers() -> dict[str, AgentHandler]:
    """The message handlers other layers registered in ``AGENT_MESSAGE_HANDLERS``."""
    paths = getattr(settings, "AGENT_MESSAGE_HANDLERS", {})
    return {kind: import_string(path) for kind, path in paths.items()}


def fence_after() -> float:
    """Seconds without a word from the console after which an agent kills its jobs.

    Shorter than the time after which the console declares the node lost (whose last
    batch may be an interval older than the partition), with a second to spare, so a
    job is always stopped on a cut-off node before the console starts it elsewhere.
    """
    lost = settings.PODIUM["NODE_LOST_AFTER"]
    return max(lost - settings.PODIUM["AGENT_INTERVAL"] - 1.0, lost / 2)


def _bearer(scope: dict[str, Any]) -> str | None:
    scheme, _, token = (scope_header(scope, b"authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class AgentConsumer(AsyncWebsocketConsumer):
    """One agent's connection; see the module docstring."""

    HELLO_TIMEOUT = 10.0
    # Seconds between clock-skew measurements and reloads of the open conditions.
    RESYNC_INTERVAL = 60.0
    # Seconds Redis is left alone after it failed.
    REDIS_RETRY_AFTER = 5.0
    # Rows an unreachable database may leave waiting before the agent is asked to replay.
    MAX_BUFFERED_ROWS = 100_000
    # Batches remembered past a gap in ``seq`` (one dropped while flooding).
    MAX_AHEAD = 10_000

    async def connect(self) -> None:
        self.auth: AuthResult | None = None
        self.view: NodeView | None = None
        self.closing = False
        self.tasks: list[asyncio.Task] = []
        self.buffer: list[GpuSample | HostSample] = []
        self.contiguous: int | None = None  # every batch up to this seq was handled
        self.ahead: set[int] = set()
        self.acked: int | None = None
        self.pcie: dict[int, tuple[float, float]] = {}
        self.rejected: Counter[str] = Counter()
        self.rejected_unsaved = 0
        self.last_heard = time.time()
        self.last_sent = time.monotonic()
        self.bucket = TokenBucket(
            settings.PODIUM["AGENT_RATE"], int(settings.PODIUM["AGENT_BURST"])
        )
        self.max_bytes = settings.PODIUM["AGENT_MAX_MESSAGE_BYTES"]
        self.redis: Any = None
        self.redis_paused_until = 0.0
        self.redis_failing = False
        await self.accept()
        token = _bearer(self.scope)
        if token is None:
            await self._close(CLOSE_BAD_TOKEN)
            return
        auth = await database_sync_to_async(agent_authenticate)(token)
        if not auth.ok:
            await self._close(auth.close_code or CLOSE_BAD_TOKEN)
            return
        self.auth = auth
        self.tasks.append(asyncio.create_task(self._hello_deadline()))

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.view is not None:
            node_id = self.view.id
            await self._flush(send_ack=False)
            await self._rejected_save()
            await self.channel_layer.group_discard(agent_group(node_id), self.channel_name)
            try:
                await database_sync_to_async(node_seen)(node_id=node_id, at=self.last_heard)
            except Exception:
                logger.exception("could not record when node %s was last seen", node_id)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def _close(self, code: int) -> None:
        self.closing = True
        await self.close(code=code)

    async def _send_json(self, message: dict[str, Any]) -> None:
        """Send one frame; a frame for an agent that has just gone is dropped quietly."""
        try:
            await self.send(text_data=json.dumps(message, separators=(",", ":")))
            self.last_sent = time.monotonic()
        except OSError:
            # The server raises an OSError (uvicorn: ClientDisconnected) once the socket is
            # gone; the disconnect handler runs next and does the cleanup.
            self.closing = True

    # Frames -----------------------------------------------------------------------------

    def _reject(self, reason: str, detail: object = "") -> None:
        if not self.rejected[reason]:
            name = self.view.name if self.view else "?"
            logger.warning("agent of node %s: refused a message (%s) %s", name, reason, detail)
        self.rejected[reason] += 1
        self.rejected_unsaved += 1

    def _oversized(self, text: str) -> bool:
        if len(text) > self.max_bytes:
            return True
        return len(text) * 4 > self.max_bytes and len(text.encode()) > self.max_bytes

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing or self.auth is None:
            return
        expecting_hello = self.view is None
        message: Any = None
        if text_data is None:
            self._reject("binary")
        elif self._oversized(text_data):
            self._reject("oversized", f"{len(text_data)} characters")
        elif not self.bucket.take():
            self._reject("flood")
        else:
            try:
                message = json.loads(text_data)
            except ValueError as exc:
                self._reject("json", exc)
            else:
                if not isinstance(message, dict):
                    self._reject("schema", "not an object")
                    message = None
        if expecting_hello:
            if message is None or message.get("type") != HELLO:
                await self._close(CLOSE_PROTOCOL)
                return
            await self._on_hello(message)
            return
        if message is None:
            return
        self.last_heard = time.time()
        handler = {
            BATCH: self._on_batch,
            HEARTBEAT: self._on_heartbeat,
            TIME: self._on_time,
            FAULT_RESULT: self._on_fault_result,
        }.get(message.get("type"))
        if handler is None and message.get("type") in _handlers():
            handler = self._on_extension
        if handler is None:
            self._reject("schema", f"unexpected type {message.get('type')!r}")
            return
        try:
            await handler(message)
        except ProtocolError as exc:
            self._reject("schema", exc)
        except Exception:
            name = self.view.name if self.view else "?"
            logger.exception("agent of node %s: a %s failed", name, message.get("type"))

    async def _on_hello(self, message: dict[str, Any]) -> None:
        assert self.auth is not None  # noqa: S101  (connect() set it before any frame)
        try:
            hello = hello_validate(message)
        except ProtocolError as exc:
            logger.warning("agent hello refused: %s", exc)
            await self._close(CLOSE_PROTOCOL)
            return
        client = self.scope.get("client") or [None]
        address = client[0]
        node_token = None
        try:
            if self.auth.join_token_id is not None:
                node, node_token = await database_sync_to_async(node_join)(
                    join_token_id=self.auth.join_token_id, hello=hello, address=address
                )
                node_id = node.pk
            else:
                assert self.auth.node_id is not None  # noqa: S101  (a node token names it)
                node_id = self.auth.node_id
            group = agent_group(node_id)
            await self.channel_layer.group_send(
                group, {"type": "agent.replaced", "channel": self.channel_name}
            )
            await self.channel_layer.group_add(group, self.channel_name)
            view = await database_sync_to_async(node_connect)(
                node_id=node_id, hello=hello, address=address
            )
        except AgentRefused as exc:
            logger.warning("agent %s refused: %s", hello.name, exc)
            await self._close(exc.close_code)
            return
        self.view = view
        self.redis = async_redis_client()
        welcome: dict[str, Any] = {
            "type": WELCOME,
            "node_id": view.id,
            "name": view.name,
            "interval": settings.PODIUM["AGENT_INTERVAL"],
            "heartbeat": settings.PODIUM["AGENT_HEARTBEAT_INTERVAL"],
            "fence_after": fence_after(),
            "ack": None,
        }
        if node_token is not None:
            welcome["node_token"] = node_token
        await self._send_json(welcome)
        await self._send_time()
        if HELLO in _handlers():
            await self._on_extension(message)
        await self._redis({SEEN_KEY: time.time()})
        self.tasks.append(asyncio.create_task(self._ticker()))

    async def _hello_deadline(self) -> None:
        await asyncio.sleep(self.HELLO_TIMEOUT)
        if self.view is None and not self.closing:
            await self._close(CLOSE_PROTOCOL)

    def _handled(self, seq: int) -> None:
        """Note that batch ``seq`` was stored or refused for good."""
        if self.contiguous is None:
            self.contiguous = seq
        elif seq == self.contiguous + 1:
            self.contiguous = seq
            while self.contiguous + 1 in self.ahead:
                self.contiguous += 1
                self.ahead.discard(self.contiguous)
        elif seq > self.contiguous and len(self.ahead) < self.MAX_AHEAD:
            self.ahead.add(seq)

    async def _on_batch(self, message: dict[str, Any]) -> None:
        assert self.view is not None  # noqa: S101  (after the hello)
        try:
            batch = batch_validate(message)
        except ProtocolError:
            seq = message.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0:
                self._handled(seq)
            raise
        self.buffer.extend(batch_rows(self.view.id, batch))
        self._handled(batch.seq)
        raised: list[Finding] = []
        cleared: list[ConditionKey] = []
        if not batch.replay:
            raised, cleared = self._conditions(batch)
        if batch.events or raised or cleared:
            health, gpu_health = await database_sync_to_async(findings_apply)(
                node_id=self.view.id, events=batch.events, raised=raised, cleared=cleared
            )
            self.view.health = str(health)
            self.view.gpu_health = {index: str(h) for index, h in gpu_health.items()}
            for finding in raised:
                self.view.open_conditions[finding.key] = finding.rule_class
            for key in cleared:
                self.view.open_conditions.pop(key, None)
        if batch.replay:
            await self._redis({SEEN_KEY: time.time()})
            return
        summary = summary_build(self.view, batch)
        await self._redis({SEEN_KEY: time.time(), LATEST_KEY: summary})
        live = {**message, "node_state": self.view.state, "node_health": self.view.health}
        await self.channel_layer.group_send(
            node_group(self.view.id), {"type": "node.batch", "batch": live}
        )

    def _pcie_rate(self, index: int, ts: float, replays: float | None) -> float | None:
        previous = self.pcie.get(index)
        if replays is None:
            return None
        self.pcie[index] = (ts, replays)
        if previous is None or ts <= previous[0] or replays < previous[1]:
            return None
        return (replays - previous[1]) / (ts - previous[0])

    def _conditions(self, batch: Batch) -> tuple[list[Finding], list[ConditionKey]]:
        """Conditions that began and that cleared with this batch, against those open."""
        assert self.view is not None  # noqa: S101  (after the hello)
        current: dict[ConditionKey, Finding] = {}
        for index, reading in batch.gpus.items():
            rate = self._pcie_rate(index, batch.ts, reading.get("pcie_replay"))
            for finding in reading_findings(index, reading, pcie_replay_rate=rate):
                current[finding.key] = finding
        open_now = self.view.open_conditions
        raised = [f for key, f in current.items() if key not in open_now]
        reporting = {i for i, r in batch.gpus.items() if not r.get("lost")}
        cleared = [
            key
            for key in open_now
            if key not in current
            and key != condition_key(None, "bus", "gpus_missing")
            and (key[0] is None or key[0] in reporting)
        ]
        return raised, cleared

    async def _on_heartbeat(self, message: dict[str, Any]) -> None:
        await self._redis({SEEN_KEY: time.time()})

    async def _on_time(self, message: dict[str, Any]) -> None:
        assert self.view is not None  # noqa: S101  (after the hello)
        t0, t1 = time_validate(message)
        received = time.time()
        if not received - 2 * self.RESYNC_INTERVAL <= t0 <= received:
            raise ProtocolError("is not a time this console sent", field="t0")
        skew_ms = (t1 - (t0 + received) / 2) * 1000
        previous = self.view.clock_skew_ms
        if previous is None or abs(skew_ms - previous) > SKEW_STORE_DELTA_MS:
            self.view.clock_skew_ms = skew_ms
            await database_sync_to_async(node_clock_skew_set)(node_id=self.view.id, skew_ms=skew_ms)
        await self._redis({SEEN_KEY: received})

    async def _on_fault_result(self, message: dict[str, Any]) -> None:
        assert self.view is not None  # noqa: S101  (after the hello)
        logger.info(
            "node %s: fault %s %s: %s",
            self.view.name,
            str(message.get("id"))[:64],
            "applied" if message.get("ok") else "refused",
            str(message.get("detail"))[:300],
        )

    async def _on_extension(self, message: dict[str, Any]) -> None:
        """Hand a message to the layer that registered its type; send back its commands."""
        assert self.view is not None  # noqa: S101  (after the hello)
        handler = _handlers()[message["type"]]
        commands = await database_sync_to_async(handler)(self.view.id, message)
        for command in commands:
            await self._send_json(command)

    # Timers -----------------------------------------------------------------------------

    async def _send_time(self) -> None:
        await self._send_json({"type": TIME, "t0": time.time()})

    async def _ticker(self) -> None:
        """Flush the buffer, save rejection counts, measure the clock, reload conditions."""
        flush_every = settings.PODIUM["TELEMETRY_FLUSH_INTERVAL"]
        # Often enough that a connected agent never comes near fencing its jobs.
        beat_every = min(settings.PODIUM["AGENT_HEARTBEAT_INTERVAL"], fence_after() / 3)
        tick = min(0.5, flush_every)
        next_flush = time.monotonic() + flush_every
        next_resync = time.monotonic() + self.RESYNC_INTERVAL
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                if now >= next_flush:
                    next_flush = now + flush_every
                    await self._flush()
                if self.rejected_unsaved:
                    await self._rejected_save()
                if time.monotonic() - self.last_sent >= beat_every and not self.closing:
                    # The agent fences its jobs when it hears nothing for a while.
                    await self._send_json({"type": HEARTBEAT, "ts": time.time()})
                if now >= next_resync and self.view is not None:
                    next_resync = now + self.RESYNC_INTERVAL
                    await self._send_time()
                    self.view.open_conditions = await database_sync_to_async(open_conditions)(
                        self.view.id
                    )
            except Exception:
                logger.exception("agent connection housekeeping failed")

    async def _flush(self, *, send_ack: bool = True) -> None:
        """Store the buffered rows in one insert, then acknowledge what is stored."""
        rows, self.buffer = self.buffer, []
        ack = self.contiguous
        if rows:
            try:
                await database_sync_to_async(samples_store)(rows)
            except Exception:
                logger.exception("could not store %d samples; kept for the next flush", len(rows))
                self.buffer = rows + self.buffer
                if len(self.buffer) > self.MAX_BUFFERED_ROWS and not self.closing:
                    await self._close(CLOSE_TRY_AGAIN)
                return
        if send_ack and ack is not None and ack != self.acked and not self.closing:
            self.acked = ack
            await self._send_json({"type": ACK, "seq": ack})

    # Redis ------------------------------------------------------------------------------

    async def _redis(self, writes: dict[str, Any]) -> None:
        """Write the node's last-heard time and live summary; quietly skipped while Redis
        is away."""
        if self.view is None or self.redis is None:
            return
        if time.monotonic() < self.redis_paused_until:
            return
        node_id = self.view.id
        try:
            pipe = self.redis.pipeline(transaction=False)
            if SEEN_KEY in writes:
                pipe.hset(SEEN_KEY, node_id, writes[SEEN_KEY])
            if LATEST_KEY in writes:
                summary = json.dumps(writes[LATEST_KEY], separators=(",", ":"))
                pipe.hset(LATEST_KEY, node_id, summary)
                pipe.sadd(DIRTY_KEY, node_id)
            if REJECTED_KEY in writes:
                pipe.hincrby(REJECTED_KEY, node_id, writes[REJECTED_KEY])
            await pipe.execute()
        except Exception:
            if not self.redis_failing:
                logger.warning("Redis unreachable: live state of node %s paused", node_id)
            self.redis_failing = True
            self.redis_paused_until = time.monotonic() + self.REDIS_RETRY_AFTER
            return
        if self.redis_failing:
            logger.info("Redis reachable again: live state of node %s resumed", node_id)
            self.redis_failing = False

    async def _rejected_save(self) -> None:
        count, self.rejected_unsaved = self.rejected_unsaved, 0
        if count:
            await self._redis({REJECTED_KEY: count})

    # Group messages ---------------------------------------------------------------------

    async def agent_command(self, event: dict[str, Any]) -> None:
        """Forward a console command (an ``inject_fault``) to the agent."""
        await self._send_json(event["command"])

    async def agent_commands(self, event: dict[str, Any]) -> None:
        """Forward several console commands (job starts and signals) in order."""
        for command in event["commands"]:
            await self._send_json(command)

    async def agent_revoke(self, event: dict[str, Any]) -> None:
        """The node was revoked: close at once."""
        await self._close(CLOSE_REVOKED)

    async def agent_replaced(self, event: dict[str, Any]) -> None:
        """A newer connection of this node took over."""
        if event.get("channel") != self.channel_name:
            await self._close(CLOSE_REPLACED)

    async def agent_health(self, event: dict[str, Any]) -> None:
        """The node's state or health changed elsewhere; summaries written from now agree."""
        if self.view is None:
            return
        self.view.state = event["state"]
        self.view.health = event["health"]
        self.view.gpu_health = {int(k): v for k, v in event["gpus"].items()}
