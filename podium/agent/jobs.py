"""The job runner: the processes of a node's allocations, from start to acknowledged exit.

``JobRunner.start`` runs an allocation's command with ``/bin/sh -c`` in a process group
of its own, with the environment ``jobenv.job_environment`` builds. On Linux the shell
also dies with the agent. Its stdout and stderr, merged, are appended to
``<state>/jobs/<alloc>.log`` and sent as ``job_output`` batches (kept while the console
is unreachable, up to a bound, and sent once it is back). When the shell ends, whatever
is left of its process group is killed and the exit is recorded; it is sent as
``job_exited`` and kept until the console acknowledges it.

``<state>/<name>.jobs.json`` (0600, replaced atomically) lists the running processes and
the unacknowledged exits, so an agent that restarts kills the process groups its
previous life left behind and reports those allocations as lost.

``JobRunner.run`` is the runner's clock: it escalates SIGTERM to SIGKILL after the
grace, batches the output, and fences: once the console has not been heard from for
longer than ``fence_after`` seconds, every job process group is killed, so that a job
the console has given up on never runs twice.

Messages for the console go to ``outbox`` while connected; the client sends them.
"""

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from podium.agent import protocol
from podium.agent.backends import GpuBackend
from podium.agent.jobenv import job_environment, sdk_path_prepare
from podium.agent.jobmessages import (
    JobSpec,
    alloc_of,
    exited_message,
    is_integer,
    is_number,
    parse_job_start,
)
from podium.agent.processes import (
    create_time,
    die_with_agent_hook,
    file_tail,
    group_alive,
    killpg,
    leftover_alive,
    tail_text,
)
from podium.agent.state import write_private

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
OUTPUT_INTERVAL = 0.5  # seconds between two job_output messages of one allocation
OUTPUT_PENDING_MAX_LINES = 20 * protocol.OUTPUT_MAX_LINES  # beyond, the oldest are dropped
TICK = 0.1  # seconds between two checks of the clock while jobs exist
LINE_MAX_BYTES = 2**16  # output without a newline for this long counts as one line
DRAIN_TIMEOUT = 2.0  # seconds the output of an ended process may take to close
STOP_GRACE_MAX = 5.0  # SIGTERM to SIGKILL when the agent stops (its supervisor waits 10 s)
ACKED_KEPT = 1024  # acknowledged allocations remembered, so a late job_start starts nothing


@dataclass(eq=False)
class _Job:
    """One allocation's process from start until its exit is announced."""

    spec: JobSpec
    log_path: Path
    transport: asyncio.SubprocessTransport | None = None
    pid: int = 0
    started: float = 0.0
    create_time: float | None = None
    log: BinaryIO | None = None
    watcher: asyncio.Task[None] | None = None
    partial: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    output_bytes: int = 0
    next_seq: int = 0  # line number of the next line read
    pending: list[str] = field(default_factory=list)  # lines not sent yet
    pending_seq: int = 0  # line number of pending[0]
    last_output: float = -math.inf  # monotonic time of the last job_output
    kill_at: float | None = None  # monotonic time of the SIGKILL after a SIGTERM
    killed: bool = False  # the agent sent SIGKILL
    reason: str = ""
    exit: dict[str, Any] | None = None

    @property
    def alloc(self) -> int:
        return self.spec.alloc

    @property
    def running(self) -> bool:
        return self.transport is not None and self.exit is None


class _Pipes(asyncio.SubprocessProtocol):
    """Hands a process's output to a callback; tells when it exited and its output closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, output: Callable[[bytes], None]) -> None:
        self.output = output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.output(data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        self.exited.set_result(None)


class JobRunner:
    """The job processes of one agent (one node), with their state file."""

    def __init__(
        self,
        *,
        state_dir: Path,
        name: str,
        backend: GpuBackend,
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.name = name
        self.backend = backend
        self.jobs_dir = state_dir / "jobs"
        self.sdk_path = sdk_path_prepare(state_dir)
        self.path = state_dir / f"{name}.jobs.json"
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.fence_after: float | None = None
        self._secrets = secrets
        self._jobs: dict[int, _Job] = {}  # running, or ended and not announced yet
        self._exits: dict[int, dict[str, Any]] = {}  # job_exited not acknowledged yet
        self._acked: deque[int] = deque(maxlen=ACKED_KEPT)
        self._connected = False
        self._closing = False
        self._last_heard = time.monotonic()
        self._wake = asyncio.Event()
        # Process group → job id of the running jobs; replaced whole on every change, so
        # the sampling thread can read it while the event loop runs.
        self.process_groups: dict[int, int] = {}

    # What the client tells the runner ---------------------------------------------------

    def heard(self) -> None:
        """The console was just heard from (any frame)."""
        self._last_heard = time.monotonic()

    def connected(self) -> None:
        """A connection was welcomed: send the unacknowledged exits again, then the output
        kept while disconnected, then live news."""
        self._connected = True
        self.heard()
        self._outbox_clear()
        for message in self._exits.values():
            self.outbox.put_nowait(message)
        self._wake.set()

    def disconnected(self) -> None:
        """The connection ended: output waits (up to ``OUTPUT_PENDING_MAX_LINES`` lines per
        allocation) for the next one, and so do exits."""
        self._connected = False
        self._outbox_clear()

    def _outbox_clear(self) -> None:
        while not self.outbox.empty():
            self.outbox.get_nowait()

    def job_of(self, pid: int) -> int | None:
        """The job a process belongs to (by its process group), if it is one of ours."""
        groups = self.process_groups
        if not groups:
            return None
        try:
            return groups.get(os.getpgid(pid))
        except OSError:
            return None

    def running(self) -> list[dict[str, Any]]:
        """The allocations whose processes run now, as the hello lists them."""
        return [
            {"alloc": job.alloc, "pid": job.pid, "started": job.started}
            for job in self._jobs.values()
            if job.running
        ]

    def _send(self, message: dict[str, Any]) -> None:
        if self._connected:
            self.outbox.put_nowait(message)

    # Console messages -----------------------------------------------------------------

    async def start(self, message: dict[str, Any]) -> None:
        """Act on a ``job_start``: start the process, or answer with the current state."""
        alloc = alloc_of(message)
        if alloc is None:
            log.warning("%s: ignoring a job_start without a valid alloc", self.name)
            return
        job = self._jobs.get(alloc)
        if job is not None and job.exit is None:
            if job.transport is not None:
                self._send(self._started(job))
            return
        if alloc in self._exits:
            self._send(self._exits[alloc])
            return
        if alloc in self._acked:
            log.warning("%s: allocation %d has already ended; not starting it", self.name, alloc)
            return
        try:
            spec = parse_job_start(message)
        except ValueError as exc:
            log.warning("%s: allocation %d cannot start: %s", self.name, alloc, exc)
            self._record(exited_message(alloc, reason=f"{protocol.REASON_START_FAILED}: {exc}"))
            return
        if self._closing:
            reason = f"{protocol.REASON_START_FAILED}: the agent is stopping"
            self._record(exited_message(alloc, reason=reason))
            return
        await self._spawn(spec)

    async def _spawn(self, spec: JobSpec) -> None:
        job = _Job(spec=spec, log_path=self.jobs_dir / f"{spec.alloc}.log")
        self._jobs[spec.alloc] = job
        try:
            self.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            workdir = Path(spec.workdir) if spec.workdir else self.jobs_dir / str(spec.alloc)
            if not spec.workdir:
                workdir.mkdir(mode=0o700, exist_ok=True)
            descriptor = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            job.log = open(descriptor, "ab", buffering=0)  # noqa: SIM115  (closed at the exit)
            loop = asyncio.get_running_loop()
            transport, pipes = await loop.subprocess_exec(
                lambda: _Pipes(loop, lambda chunk: self._output(job, chunk)),
                SHELL,
                "-c",
                spec.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=self._environment(spec),
                start_new_session=True,
                preexec_fn=die_with_agent_hook(),
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            del self._jobs[spec.alloc]
            if job.log is not None:
                job.log.close()
            log.warning("%s: allocation %d did not start: %s", self.name, spec.alloc, exc)
            self._record(
                exited_message(spec.alloc, reason=f"{protocol.REASON_START_FAILED}: {exc}")
            )
            return
        job.transport = transport
        job.pid = transport.get_pid()
        job.started = round(time.time(), 3)
        job.create_time = create_time(job.pid)
        for index in spec.gpus:
            try:
                self.backend.attach(index, job.pid)
            except (IndexError, ValueError):
                log.warning("%s: allocation %d names no GPU %d", self.name, spec.alloc, index)
        log.info(
            "%s: allocation %d (job %d attempt %d rank %d) started as pid %d",
            self.name,
            spec.alloc,
            spec.job,
            spec.attempt,
            spec.rank,
            job.pid,
        )
        self._save()
        self._send(self._started(job))
        watcher = self._watch(job, transport, pipes)
        job.watcher = asyncio.create_task(watcher, name=f"job {spec.alloc}")
        self._wake.set()

    def _environment(self, spec: JobSpec) -> dict[str, str]:
        return job_environment(
            base=os.environ,
            secrets=self._secrets(),
            extra=spec.env,
            gpus=spec.gpus,
            alloc=spec.alloc,
            sdk_path=self.sdk_path,
        )

    def signal(self, message: dict[str, Any]) -> None:
        """Act on a ``job_signal``: SIGTERM (SIGKILL after the grace) or SIGKILL."""
        alloc, kind, grace = alloc_of(message), message.get("signal"), message.get("grace")
        if alloc is None or kind not in (protocol.SIGNAL_TERM, protocol.SIGNAL_KILL):
            log.warning("%s: ignoring a job_signal without a valid alloc and signal", self.name)
            return
        job = self._jobs.get(alloc)
        if job is None or not job.running:
            known = self._exits.get(alloc)
            self._send(known or exited_message(alloc, reason=protocol.REASON_UNKNOWN))
            return
        if kind == protocol.SIGNAL_KILL:
            self._kill(job)
            return
        if grace is not None and (not is_number(grace) or grace < 0):
            log.warning("%s: allocation %d: ignoring a bad grace %r", self.name, alloc, grace)
            grace = None
        deadline = time.monotonic() + (job.spec.grace if grace is None else grace)
        if job.kill_at is None or deadline < job.kill_at:
            job.kill_at = deadline
        log.info("%s: allocation %d: SIGTERM", self.name, alloc)
        killpg(job.pid, signal.SIGTERM)

    def ack(self, message: dict[str, Any]) -> None:
        """Act on a ``job_ack``: forget the exit of the allocation."""
        alloc = alloc_of(message)
        if alloc is None:
            log.warning("%s: ignoring a job_ack without a valid alloc", self.name)
            return
        if self._exits.pop(alloc, None) is not None:
            self._acked.append(alloc)
            self._save()

    def _kill(self, job: _Job) -> None:
        job.killed = True
        job.kill_at = None
        killpg(job.pid, signal.SIGKILL)

    # Processes ------------------------------------------------------------------------

    async def _watch(
        self, job: _Job, transport: asyncio.SubprocessTransport, pipes: _Pipes
    ) -> None:
        """Wait for the process to end and its output to close, then record the exit.

        What is left of its process group is killed then, except after a SIGTERM: the
        shell may die of it at once while the training process behind it still writes
        its checkpoint, so the group gets until the end of its grace to finish.
        """
        try:
            await pipes.exited
            while job.kill_at is not None and not job.killed and group_alive(job.pid):
                await asyncio.sleep(TICK)
            killpg(job.pid, signal.SIGKILL)  # what is left of the group
            await asyncio.wait({pipes.closed}, timeout=DRAIN_TIMEOUT)
            returncode = transport.get_returncode()
        finally:
            transport.close()
        if job.partial:
            self._line(job, bytes(job.partial))
            job.partial.clear()
        self._ended(job, -signal.SIGKILL if returncode is None else returncode)

    def _output(self, job: _Job, chunk: bytes) -> None:
        if job.log is not None:
            try:
                job.log.write(chunk)
            except OSError as exc:
                log.error("%s: cannot write %s: %s", self.name, job.log_path, exc)
                job.log.close()
                job.log = None
        job.output_bytes += len(chunk)
        job.tail += chunk
        del job.tail[: -protocol.TAIL_MAX_BYTES]
        job.partial += chunk
        if b"\n" not in chunk and len(job.partial) < LINE_MAX_BYTES:
            return
        *lines, rest = bytes(job.partial).split(b"\n")
        job.partial = bytearray(rest)
        if len(job.partial) >= LINE_MAX_BYTES:
            lines.append(rest)
            job.partial.clear()
        for line in lines:
            self._line(job, line)

    def _line(self, job: _Job, raw: bytes) -> None:
        seq = job.next_seq
        job.next_seq += 1
        if not job.pending:
            job.pending_seq = seq
        text = raw.decode("utf-8", "replace").removesuffix("\r")
        job.pending.append(text[: protocol.OUTPUT_LINE_MAX_CHARS])
        if len(job.pending) > OUTPUT_PENDING_MAX_LINES:
            del job.pending[: protocol.OUTPUT_MAX_LINES]
            job.pending_seq += protocol.OUTPUT_MAX_LINES

    def _ended(self, job: _Job, returncode: int) -> None:
        """Record the exit of a process; it is announced after its last output."""
        for index in job.spec.gpus:
            with contextlib.suppress(IndexError, ValueError):
                self.backend.detach(index, job.pid)
        if job.log is not None:
            job.log.close()
            job.log = None
        exit_code, signum = (None, -returncode) if returncode < 0 else (returncode, None)
        tail = tail_text(bytes(job.tail), job.output_bytes > protocol.TAIL_MAX_BYTES)
        job.exit = exited_message(
            job.alloc, reason=job.reason, exit_code=exit_code, signum=signum, tail=tail
        )
        log.info(
            "%s: allocation %d ended (exit code %s, signal %s)%s",
            self.name,
            job.alloc,
            exit_code,
            signum,
            f": {job.reason}" if job.reason else "",
        )
        self._exits[job.alloc] = job.exit
        self._save()
        self._flush(time.monotonic())

    def _record(self, message: dict[str, Any]) -> None:
        """Keep an exit that had no process (until acknowledged) and send it."""
        self._exits[message["alloc"]] = message
        self._save()
        self._send(message)

    def _started(self, job: _Job) -> dict[str, Any]:
        return {
            "type": protocol.JOB_STARTED,
            "alloc": job.alloc,
            "pid": job.pid,
            "pgid": job.pid,
            "ts": job.started,
        }

    # The clock ------------------------------------------------------------------------

    async def run(self) -> None:
        """Escalate, batch output and fence, every ``TICK`` while jobs exist; runs forever."""
        while True:
            while not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self._escalate(now)
            self._fence(now)
            self._flush(now)

    def _escalate(self, now: float) -> None:
        for job in self._jobs.values():
            if job.running and job.kill_at is not None and now >= job.kill_at:
                job.reason = job.reason or protocol.REASON_KILLED_AFTER_GRACE
                log.info("%s: allocation %d: SIGKILL after the grace", self.name, job.alloc)
                self._kill(job)

    def _fence(self, now: float) -> None:
        silent = now - self._last_heard
        if self.fence_after is None or silent <= self.fence_after:
            return
        for job in self._jobs.values():
            if job.running and not job.killed:
                job.reason = f"{protocol.REASON_FENCED}: console unreachable for {silent:.0f} s"
                log.warning("%s: allocation %d: %s; killing it", self.name, job.alloc, job.reason)
                self._kill(job)

    def _flush(self, now: float) -> None:
        """Send due output and the exits that follow it: one message per allocation and
        interval while its process runs, everything left once it ended."""
        if not self._connected:
            return
        for job in list(self._jobs.values()):
            while job.pending and (
                job.exit is not None or now - job.last_output >= OUTPUT_INTERVAL
            ):
                lines = job.pending[: protocol.OUTPUT_MAX_LINES]
                self._send(
                    {
                        "type": protocol.JOB_OUTPUT,
                        "alloc": job.alloc,
                        "seq": job.pending_seq,
                        "lines": lines,
                        "ts": round(time.time(), 3),
                    }
                )
                del job.pending[: len(lines)]
                job.pending_seq += len(lines)
                job.last_output = now
            if job.exit is not None and not job.pending:
                self._send(job.exit)
                del self._jobs[job.alloc]

    # Start and stop ---------------------------------------------------------------------

    def recover(self) -> None:
        """Load the state file; kill what a previous life left running and report it lost."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("%s: ignoring the unreadable job state %s: %s", self.name, self.path, exc)
            return
        if not isinstance(data, dict):
            log.error("%s: ignoring the malformed job state %s", self.name, self.path)
            return
        for message in data.get("exits") or []:
            if isinstance(message, dict) and alloc_of(message) is not None:
                self._exits[message["alloc"]] = message
        self._acked.extend(alloc for alloc in data.get("acked") or [] if is_integer(alloc))
        for entry in data.get("running") or []:
            alloc = alloc_of(entry) if isinstance(entry, dict) else None
            if alloc is None:
                continue
            pgid, create_time = entry.get("pgid"), entry.get("create_time")
            if is_integer(pgid) and leftover_alive(pgid, create_time):
                log.warning(
                    "%s: killing process group %d left by allocation %d before a restart",
                    self.name,
                    pgid,
                    alloc,
                )
                killpg(pgid, signal.SIGKILL)
            tail = file_tail(self.jobs_dir / f"{alloc}.log")
            self._exits[alloc] = exited_message(alloc, reason=protocol.REASON_LOST, tail=tail)
        self._save()

    async def close(self) -> None:
        """Stop every job: SIGTERM, SIGKILL after a short grace; record the exits."""
        self._closing = True
        jobs = [job for job in self._jobs.values() if job.running]
        if not jobs:
            return
        log.info("%s: stopping %d job process(es)", self.name, len(jobs))
        now = time.monotonic()
        for job in jobs:
            job.reason = protocol.REASON_LOST
            job.kill_at = min(job.kill_at or math.inf, now + min(job.spec.grace, STOP_GRACE_MAX))
            killpg(job.pid, signal.SIGTERM)
        watchers = {job.watcher for job in jobs if job.watcher is not None}
        while any(job.running for job in jobs) and time.monotonic() < now + STOP_GRACE_MAX:
            self._escalate(time.monotonic())
            await asyncio.wait(watchers, timeout=TICK)
        for job in jobs:
            if job.running:
                self._kill(job)
        if watchers:
            await asyncio.wait(watchers, timeout=DRAIN_TIMEOUT + 1)
        self._save()

    def _save(self) -> None:
        """Persist the running allocations and unacknowledged exits; refresh the groups."""
        self.process_groups = {job.pid: job.spec.job for job in self._jobs.values() if job.running}
        running = [
            {
                "alloc": job.alloc,
                "pid": job.pid,
                "pgid": job.pid,
                "started": job.started,
                "create_time": job.create_time,
                "gpus": job.spec.gpus,
            }
            for job in self._jobs.values()
            if job.running
        ]
        data = {"running": running, "exits": list(self._exits.values()), "acked": list(self._acked)}
        try:
            write_private(self.path, json.dumps(data, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.error("%s: cannot save the job state in %s: %s", self.name, self.path, exc)
