"""One node's connection to the console: hello, batches, heartbeats, replies, reconnects.

``Agent.run`` holds a websocket to ``<server>/ws/agent/`` until stopped. Each connection
sends ``hello``, waits for ``welcome`` (which sets the interval and heartbeat and, after a
join, carries the node token that is then saved), then runs four loops side by side:
sending batches in ``seq`` order (unacknowledged ones from before the connection first,
flagged ``replay`` and paced so the console's rate limit is not tripped), heartbeats,
sending the job runner's messages, and answering what the console sends (``ack``,
``time``, ``inject_fault``, ``job_start``, ``job_signal``, ``job_ack``). Sampling runs
for the agent's whole life, in a worker thread, so batches made while disconnected wait
in the replay buffer; so does the job runner (``podium.agent.jobs``), which keeps jobs
running across reconnects, is told of every frame received (for fencing) and stops
every job process when the agent stops. A lost connection is retried with exponential
backoff and jitter; a refusal (revoked, bad token, name taken) ends the agent with
``EXIT_REFUSED``.
"""

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from podium.agent import protocol
from podium.agent.backends import GpuBackend
from podium.agent.backends.host import HostSampler
from podium.agent.facts import agent_version
from podium.agent.jobs import JobRunner
from podium.agent.replay import ReplayBuffer
from podium.agent.state import Credentials, CredentialStore
from podium.tokenbucket import TokenBucket

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 78  # EX_CONFIG: the supervisor does not restart an agent that exits so
DEFAULT_INTERVAL = 1.0
DEFAULT_HEARTBEAT = 2.0
JOB_RECONNECT_DELAY = 1.0  # longest wait between reconnects while job processes run
REFUSALS = (protocol.CLOSE_REVOKED, protocol.CLOSE_BAD_TOKEN, protocol.CLOSE_NAME_TAKEN)


def agent_url(server: str) -> str:
    """The agent websocket URL of a console: http(s)://host[/prefix] -> ws(s)://.../ws/agent/."""
    parts = urlsplit(server.strip())
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"the server must be an http:// or https:// URL, not {server!r}")
    path = parts.path.rstrip("/") + protocol.AGENT_PATH
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, "", ""))


@dataclass
class AgentSettings:
    """How one agent connects and paces itself; the defaults suit production."""

    server: str  # the console's http(s) URL
    name: str
    state_dir: Path
    join_token: str | None = None
    interval: float | None = None  # seconds between batches; None: what the console says
    buffer_size: int = 3600  # unacknowledged batches kept (an hour at 1 Hz)
    # Replayed batches per second and burst: under the console's 20/s and burst of 200,
    # with room left for live batches and heartbeats.
    replay_rate: float = 15.0
    replay_burst: int = 100
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 10.0  # a connection this old resets the backoff
    open_timeout: float = 10.0
    welcome_timeout: float = 10.0
    max_message_bytes: int = 2**20  # largest message accepted from the console
    start_delay: float = 0.0  # spreads the agents of a fleet over one interval
    stop_grace: float = 2.0  # seconds a stopping connection gets to close cleanly


class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum``."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def delay(self) -> float:
        """The next wait, between 75% and 125% of the current step (never over maximum)."""
        step = self._next
        self._next = min(self.maximum, step * 2)
        return min(self.maximum, step * random.uniform(0.75, 1.25))  # noqa: S311

    def reset(self) -> None:
        """Start again from ``initial`` (after a healthy connection)."""
        self._next = self.initial


class Agent:
    """The agent of one node: its backend, its credentials and its connection."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        backend: GpuBackend,
        host: HostSampler,
        facts: dict[str, Any],
        machine_id: str,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.backend = backend
        self.host = host
        self.facts = facts
        self.machine_id = machine_id
        self.url = agent_url(settings.server)
        self.store = CredentialStore(settings.state_dir, settings.name)
        self.credentials = self.store.load(settings.server)
        self.buffer = ReplayBuffer(settings.buffer_size)
        self.node_id: int | None = self.credentials.node_id if self.credentials else None
        self.seq = 0
        self.interval = settings.interval or DEFAULT_INTERVAL
        self.heartbeat = DEFAULT_HEARTBEAT
        self._rejoin = False  # the stored node token was refused: join again
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._sampler: asyncio.Task[None] | None = None
        self._dropped_logged = 0
        self.jobs = JobRunner(
            state_dir=settings.state_dir, name=settings.name, backend=backend, secrets=self._secrets
        )

    # Lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the agent to close its connection (code 1000) and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping.is_set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, waking early when the agent is stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return

    def _secrets(self) -> tuple[str, ...]:
        """The tokens this agent holds; no job process sees them in its environment."""
        node_token = self.credentials.node_token if self.credentials else None
        return tuple(token for token in (self.settings.join_token, node_token) if token)

    def _token(self) -> tuple[str | None, bool]:
        """The token to present and whether it is the node's own (not a join token)."""
        if self.credentials is not None and not self._rejoin:
            return self.credentials.node_token, True
        return self.settings.join_token, False

    async def run(self) -> int:
        """Connect and reconnect until stopped (``EXIT_OK``) or refused (``EXIT_REFUSED``).

        Job processes left by a previous run are killed first; the agent's own are
        stopped before it returns.
        """
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        self.jobs.recover()
        clock = asyncio.create_task(self.jobs.run(), name=f"jobs {self.name}")
        try:
            if self.settings.start_delay:
                await self._pause(self.settings.start_delay)
            while not self.stopping:
                token, own = self._token()
                if not token:
                    log.error(
                        "%s: no token: give a join token with --token (or PODIUM_AGENT_TOKEN)",
                        self.name,
                    )
                    return EXIT_REFUSED
                started = time.monotonic()
                code, welcomed = await self._connect_until_stopped(token)
                if self.stopping:
                    break
                refused = self._refusal(code, own)
                if refused is not None:
                    return refused
                if welcomed and time.monotonic() - started >= self.settings.healthy_after:
                    backoff.reset()
                delay = backoff.delay()
                if self.jobs.running():
                    # Jobs are fenced once the console is unreachable for long: try often.
                    delay = min(delay, JOB_RECONNECT_DELAY)
                log.info("%s: reconnecting in %.1f s", self.name, delay)
                await self._pause(delay)
            return EXIT_OK
        finally:
            await self.jobs.close()
            clock.cancel()
            await asyncio.gather(clock, return_exceptions=True)
            if self._sampler is not None:
                self._sampler.cancel()
                await asyncio.gather(self._sampler, return_exceptions=True)

    async def _connect_until_stopped(self, token: str) -> tuple[int | None, bool]:
        """One connection; a stop gives it ``stop_grace`` seconds to close, then cancels it."""
        connection = asyncio.create_task(self._connect_once(token))
        stopped = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({connection, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not connection.done():
                await asyncio.wait({connection}, timeout=self.settings.stop_grace)
        finally:
            stopped.cancel()
            if not connection.done():
                connection.cancel()
            await asyncio.gather(connection, stopped, return_exceptions=True)
        if connection.cancelled():
            return None, False
        return connection.result()

    async def _connect_once(self, token: str) -> tuple[int | None, bool]:
        """One connection, start to end: the close code received and whether it was welcomed."""
        ws: ClientConnection | None = None
        welcomed = False
        try:
            async with connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=self.settings.max_message_bytes,
                open_timeout=self.settings.open_timeout,
                close_timeout=5,
                compression=None,
                user_agent_header=f"podium-agent/{agent_version()}",
            ) as ws:
                welcomed = await self._session(ws)
        except ConnectionClosed:
            pass
        except InvalidStatus as exc:
            log.warning(
                "%s: the console refused the connection with HTTP %s",
                self.name,
                exc.response.status_code,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            log.warning("%s: cannot reach %s: %s", self.name, self.url, exc or type(exc).__name__)
        code = ws.close_code if ws is not None else None
        if ws is not None and not self.stopping:
            log.info("%s: connection closed (code %s)", self.name, code)
        return code, welcomed

    def _refusal(self, code: int | None, own_token: bool) -> int | None:
        """``EXIT_REFUSED`` when the close code says the console will not take this node."""
        if code not in REFUSALS:
            return None
        if code == protocol.CLOSE_BAD_TOKEN and own_token and self.settings.join_token:
            log.warning(
                "%s: the console does not accept the stored node token; joining again",
                self.name,
            )
            self._rejoin = True
            return None
        if code == protocol.CLOSE_REVOKED:
            log.error(
                "%s: the console revoked this node. It will not reconnect; to join again, "
                "remove %s and start with a new join token.",
                self.name,
                self.store.path,
            )
        elif code == protocol.CLOSE_BAD_TOKEN:
            log.error(
                "%s: the console refused the token (unknown, malformed or expired). "
                "Ask an administrator for a new join token and pass it with --token.",
                self.name,
            )
        else:
            log.error(
                "%s: another live node already has this name; start with another --name.",
                self.name,
            )
        return EXIT_REFUSED

    # One connection ----------------------------------------------------------------------

    async def _session(self, ws: ClientConnection) -> bool:
        """Hello, welcome, then the loops until the connection ends or the agent stops."""
        description = await asyncio.to_thread(self.backend.describe)
        hello = {
            "type": protocol.HELLO,
            "protocol": protocol.PROTOCOL_VERSION,
            "name": self.name,
            "machine_id": self.machine_id,
            "agent_version": agent_version(),
            "backend": description.backend,
            "gpu_status": description.gpu_status,
            "facts": {
                **self.facts,
                "driver_version": description.driver_version,
                "cuda_version": description.cuda_version,
            },
            "gpus": description.gpus,
            "time": time.time(),
            "jobs": self.jobs.running(),
        }
        await ws.send(json.dumps(hello, separators=(",", ":")))
        welcome = await self._await_welcome(ws)
        if welcome is None:
            return False
        self._settings_from(welcome)
        acked = welcome.get("ack")
        if isinstance(acked, int) and not isinstance(acked, bool):
            self.buffer.ack(acked)
        self.buffer.rewind(self.seq + 1)
        self.jobs.connected()
        log.info(
            "%s: connected to %s as node %s (%d batches to replay)",
            self.name,
            self.url,
            self.node_id,
            self.buffer.pending,
        )
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_loop(), name=f"sample {self.name}")
        loops = [
            asyncio.create_task(self._send_loop(ws)),
            asyncio.create_task(self._heartbeat_loop(ws)),
            asyncio.create_task(self._receive_loop(ws)),
            asyncio.create_task(self._jobs_loop(ws)),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.jobs.disconnected()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, ConnectionClosed):
                log.error("%s: connection loop failed", self.name, exc_info=error)
                await ws.close(1011, "agent error")
        if self.stopping:
            await ws.close(1000, "agent stopping")
        return True

    async def _await_welcome(self, ws: ClientConnection) -> dict[str, Any] | None:
        """The console's welcome (answering ``time`` meanwhile); None if it never came."""
        deadline = time.monotonic() + self.settings.welcome_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("%s: no welcome from the console; reconnecting", self.name)
                await ws.close(1000, "no welcome")
                return None
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=remaining)
            except TimeoutError:
                continue
            self.jobs.heard()
            message = self._parse(raw)
            if message is None:
                continue
            if message.get("type") == protocol.WELCOME:
                return message
            await self._handle(ws, message)

    def _settings_from(self, welcome: dict[str, Any]) -> None:
        """Take the node id, interval and heartbeat of a welcome; save a new node token."""
        node_id = welcome.get("node_id")
        if isinstance(node_id, int):
            self.node_id = node_id
        interval = _seconds(welcome.get("interval"))
        if self.settings.interval is None and interval is not None:
            self.interval = interval
        heartbeat = _seconds(welcome.get("heartbeat"))
        if heartbeat is not None:
            self.heartbeat = heartbeat
        self.jobs.fence_after = _seconds(welcome.get("fence_after"))
        token = welcome.get("node_token")
        if isinstance(token, str) and token and isinstance(node_id, int):
            self.credentials = Credentials(
                server=self.settings.server, node_id=node_id, name=self.name, node_token=token
            )
            self._rejoin = False
            try:
                self.store.save(self.credentials)
            except OSError as exc:
                log.error(
                    "%s: cannot save the node token in %s: %s", self.name, self.store.path, exc
                )
            else:
                log.info(
                    "%s: joined as node %s; token saved in %s", self.name, node_id, self.store.path
                )

    # Loops -------------------------------------------------------------------------------

    def _collect(self, seq: int) -> str:
        """Sample the GPUs and the host and encode the batch (runs in a worker thread)."""
        gpus = self.backend.sample()
        for reading in gpus:
            for proc in reading.get("procs") or ():
                job = self.jobs.job_of(proc["pid"])
                if job is not None:
                    proc["job"] = job
        host = self.host.sample()
        events = self.backend.drain_events()
        batch = {
            "type": protocol.BATCH,
            "seq": seq,
            "ts": round(time.time(), 3),
            "replay": False,
            "gpus": gpus,
            "host": host,
            "events": events,
        }
        return json.dumps(batch, separators=(",", ":"))

    async def _sample_loop(self) -> None:
        """One batch every interval for the agent's life, connected or not."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                frame = await asyncio.to_thread(self._collect, self.seq + 1)
            except Exception:
                log.exception("%s: sampling failed", self.name)
            else:
                self.seq += 1
                self.buffer.add(self.seq, frame)
                self._wake.set()
                if self.buffer.dropped > self._dropped_logged:
                    if not self._dropped_logged or self.buffer.dropped % 600 == 0:
                        log.warning(
                            "%s: replay buffer full; %d oldest batches dropped",
                            self.name,
                            self.buffer.dropped,
                        )
                    self._dropped_logged = self.buffer.dropped
            next_at += self.interval
            now = loop.time()
            if next_at < now:  # fell behind: carry on from now rather than burst
                next_at = now
            await asyncio.sleep(next_at - now)

    async def _send_loop(self, ws: ClientConnection) -> None:
        """Send pending batches in order; replays are paced by a token bucket."""
        pacer = TokenBucket(self.settings.replay_rate, self.settings.replay_burst)
        while True:
            item = self.buffer.next()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            seq, frame, replay = item
            if replay and (delay := pacer.delay()) > 0:
                await asyncio.sleep(delay)
            await ws.send(frame)
            self.buffer.mark_sent(seq)

    async def _heartbeat_loop(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await ws.send(json.dumps({"type": protocol.HEARTBEAT, "ts": round(time.time(), 3)}))

    async def _jobs_loop(self, ws: ClientConnection) -> None:
        """Send what the job runner has for the console, in order."""
        while True:
            message = await self.jobs.outbox.get()
            await ws.send(json.dumps(message, separators=(",", ":")))

    async def _receive_loop(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self.jobs.heard()
            message = self._parse(raw)
            if message is not None:
                await self._handle(ws, message)

    def _parse(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.warning("%s: ignoring a malformed message from the console", self.name)
            return None
        return message

    async def _handle(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        """Act on one console message."""
        kind = message.get("type")
        if kind == protocol.ACK:
            seq = message.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                self.buffer.ack(seq)
        elif kind == protocol.TIME:
            reply = {"type": protocol.TIME, "t0": message.get("t0"), "t1": time.time()}
            await ws.send(json.dumps(reply))
        elif kind == protocol.INJECT_FAULT:
            ok, detail = await self._inject(message)
            result = {"type": protocol.FAULT_RESULT, "id": message.get("id"), "ok": ok}
            await ws.send(json.dumps({**result, "detail": detail}))
        elif kind == protocol.WELCOME:
            self._settings_from(message)
        elif kind in (protocol.JOB_START, protocol.JOB_SIGNAL, protocol.JOB_ACK):
            await self._job_message(kind, message)
        elif kind != protocol.HEARTBEAT:  # a heartbeat only says the console is there
            log.debug("%s: ignoring a %r message", self.name, kind)

    async def _job_message(self, kind: str, message: dict[str, Any]) -> None:
        """Hand a job message to the runner; a failure is logged, the connection goes on."""
        try:
            if kind == protocol.JOB_START:
                await self.jobs.start(message)
            elif kind == protocol.JOB_SIGNAL:
                self.jobs.signal(message)
            else:
                self.jobs.ack(message)
        except Exception:
            log.exception("%s: handling %s failed", self.name, kind)

    async def _inject(self, message: dict[str, Any]) -> tuple[bool, str]:
        gpu, fault, code = message.get("gpu"), message.get("fault"), message.get("code")
        if not isinstance(fault, str):
            return False, "the fault is missing"
        if not isinstance(gpu, int) or isinstance(gpu, bool):
            return False, f"the GPU index must be a number, not {gpu!r}"
        try:
            ok, detail = await asyncio.to_thread(
                self.backend.inject_fault, gpu=gpu, fault=fault, code=code
            )
        except Exception as exc:
            log.exception("%s: fault injection failed", self.name)
            return False, f"fault injection failed: {exc}"
        log.info("%s: fault %s on GPU %s: %s", self.name, fault, gpu, detail)
        return ok, detail


def _seconds(value: Any) -> float | None:
    """A positive number of seconds from a console message, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None
