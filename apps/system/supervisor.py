"""A small process supervisor for ``up``: start in order, restart on crash, stop as a group.

Standard library only, no Django, so it can be tested with tiny child processes.

- Children run in their own session (a terminal Ctrl-C reaches only the supervisor) and, on
  Linux, die with it (``PR_SET_PDEATHSIG``). The supervisor is a child subreaper there, so the
  grandchildren of a child killed outright are reaped here rather than left as zombies.
- Output of each child is appended to ``<data dir>/logs/<name>.log``, moved to ``<name>.log.1``
  at a (re)start once it passes 50 MiB; its pid is kept in
  ``<data dir>/run/<name>.pid`` while it runs.
- A child that exits unexpectedly is reported with the tail of its log and restarted after a
  short backoff, at most ``max_restarts`` times in ``restart_window`` seconds.
- SIGINT, SIGTERM or SIGHUP stops the children in reverse start order: SIGTERM to the process
  group, SIGKILL after ``stop_timeout`` seconds. A second signal kills at once.
- ``<data dir>/up.lock`` (``flock``) keeps two supervisors off one data directory.
"""

import contextlib
import ctypes
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_TAIL_LINES = 15
_MAX_BACKOFF = 10.0
LOG_ROTATE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process.

    ``env`` is the child's whole environment (``None``: the supervisor's). ``log_path``
    defaults to ``<data dir>/logs/<name>.log``. ``ready`` is polled after the start until it
    returns true (no check: ready once started); ``order`` sorts the start sequence. A child
    that exits with one of ``final_exit_codes`` said it must not run again (an agent whose
    node was revoked): it is reported and left stopped while the others go on.
    ``on_exit`` is called with the pid and return code of every unexpected exit, before the
    restart, so the process can be reported dead at once instead of once its silence shows.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    log_path: Path | None = None
    ready: Callable[[], bool] | None = None
    order: int = 0
    ready_timeout: float = 30.0
    final_exit_codes: frozenset[int] = frozenset()
    on_exit: Callable[[int, int], None] | None = None


class SupervisorError(Exception):
    """The supervisor could not start or keep its processes running."""


class AlreadyRunningError(SupervisorError):
    """Another supervisor holds the data directory's lock."""

    def __init__(self, data_dir: Path, pid: str) -> None:
        super().__init__(f"Podium is already running from {data_dir} (pid {pid})")
        self.data_dir = data_dir
        self.pid = pid


class StartupError(SupervisorError):
    """A process exited or did not become ready during the start."""


class RestartLimitError(SupervisorError):
    """A process kept crashing past the restart bound."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/up.lock``, which holds the owner's pid.

    The kernel drops the lock when its owner dies, so a file left by a killed supervisor
    does not block the next one.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "up.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (no-op when already held); raise ``AlreadyRunningError`` if taken."""
        if self._fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(self.data_dir, owner) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid and drop the lock; the file stays so no other process races on it."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def _load_prctl() -> Callable[[int, int], int] | None:
    """``prctl(option, value)`` from the C library on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    function.restype = ctypes.c_int

    def prctl(option: int, value: int) -> int:
        return int(function(option, value, 0, 0, 0))

    return prctl


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` for a ``Popen.returncode``."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def log_tail(path: Path, lines: int = _TAIL_LINES, *, start: int = 0) -> str:
    """The last ``lines`` lines of a log file after byte ``start``, indented for a report."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(start, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        text = ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    if not tail:
        return "    (the log is empty)"
    return "\n".join(f"    {line}" for line in tail)


def log_rotate(path: Path, max_bytes: int = LOG_ROTATE_BYTES) -> bool:
    """Move a log past ``max_bytes`` to ``<name>.log.1`` (replacing the previous one)."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    path.replace(path.with_name(path.name + ".1"))
    return True


@dataclass
class _Child:
    spec: ProcessSpec
    log_path: Path
    pid_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_start: int = 0
    exits: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


def _write_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Supervisor:
    """Starts, watches and stops a set of ``ProcessSpec`` under one data directory.

    ``out`` receives one line at a time (progress, crash reports). Call ``acquire_lock``
    early to refuse a second instance before doing any work; ``run`` takes it otherwise.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        out: Callable[[str], None] = _write_stderr,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        restart_backoff: float = 1.0,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.1,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.run_dir = self.data_dir / "run"
        self.out = out
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.restart_backoff = restart_backoff
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.lock = DataDirLock(self.data_dir)
        self._children: list[_Child] = []
        self._old_groups: set[int] = set()
        self._stop_reason: str | None = None
        self._kill_now = False
        self._prctl = _load_prctl()

    def acquire_lock(self) -> None:
        """Take the data directory's lock or raise ``AlreadyRunningError``."""
        self.lock.acquire()

    def run(
        self, specs: Iterable[ProcessSpec], *, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Start ``specs`` in order, call ``on_ready``, supervise until a stop signal.

        Returns after a clean stop. Raises ``SupervisorError`` after stopping everything when a
        process fails to start or keeps crashing.
        """
        ordered = sorted(specs, key=lambda spec: spec.order)
        names = [spec.name for spec in ordered]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique: {names}")
        self.acquire_lock()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._children = [
            _Child(
                spec=spec,
                log_path=spec.log_path or self.log_dir / f"{spec.name}.log",
                pid_path=self.run_dir / f"{spec.name}.pid",
            )
            for spec in ordered
        ]
        for child in self._children:
            child.pid_path.unlink(missing_ok=True)
        self._old_groups = set()
        self._stop_reason = None
        self._kill_now = False
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _STOP_SIGNALS}
        if self._prctl is not None:
            self._prctl(_PR_SET_CHILD_SUBREAPER, 1)
        try:
            self._start_all()
            if self._stop_reason is None and on_ready is not None:
                on_ready()
            self._supervise()
        finally:
            try:
                self._stop_all()
            finally:
                if self._prctl is not None:
                    self._prctl(_PR_SET_CHILD_SUBREAPER, 0)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                self.lock.release()

    def request_stop(self) -> None:
        """Make ``run`` stop its processes and return, as a first SIGTERM does."""
        if self._stop_reason is None:
            self._stop_reason = "Stop requested"

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_reason is None:
            self._stop_reason = f"Received {signal.Signals(signum).name}"
        else:
            self._kill_now = True

    def _spawn(self, child: _Child) -> subprocess.Popen[bytes]:
        spec = child.spec
        env = dict(os.environ if spec.env is None else spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_rotate(child.log_path)
        stamp = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
        with child.log_path.open("ab", buffering=0) as log:
            child.log_start = log.tell()
            log.write(f"--- {stamp} starting {spec.name}: {shlex.join(spec.argv)}\n".encode())
            try:
                # The argv comes from the caller's ProcessSpec, never from a shell string.
                proc = subprocess.Popen(  # noqa: S603
                    list(spec.argv),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=self._child_setup(),
                )
            except OSError as exc:
                raise StartupError(f"cannot start {spec.name}: {exc}") from exc
        child.proc = proc
        child.restart_at = None
        tmp = child.pid_path.with_suffix(".pid.tmp")
        tmp.write_text(f"{proc.pid}\n")
        tmp.replace(child.pid_path)
        return proc

    def _tail(self, child: _Child) -> str:
        """The end of what the current run of ``child`` wrote to its log."""
        return log_tail(child.log_path, start=child.log_start)

    def _child_setup(self) -> Callable[[], None] | None:
        prctl = self._prctl
        if prctl is None:
            return None
        parent = os.getpid()

        def setup() -> None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)

        return setup

    def _reap(self) -> None:
        """Collect every exited process of our groups, setting the leaders' return codes."""
        leaders = {child.proc.pid: child.proc for child in self._children if child.proc}
        for pgid in [*leaders, *self._old_groups]:
            while True:
                try:
                    pid, status = os.waitpid(-pgid, os.WNOHANG)
                except ChildProcessError:
                    if pgid in self._old_groups and not _group_alive(pgid):
                        self._old_groups.discard(pgid)
                    break
                if pid == 0:
                    break
                if pid in leaders:
                    leaders[pid].returncode = os.waitstatus_to_exitcode(status)

    def _start_all(self) -> None:
        for child in self._children:
            if self._stop_reason is not None:
                return
            started = time.monotonic()
            proc = self._spawn(child)
            if not self._wait_ready(child, proc, started):
                return
            state = "started" if child.spec.ready is None else "is up"
            self.out(
                f"  {child.spec.name} {state} (pid {proc.pid}, "
                f"{time.monotonic() - started:.1f} s); log: {child.log_path}"
            )

    def _wait_ready(self, child: _Child, proc: subprocess.Popen[bytes], started: float) -> bool:
        """True once ``child`` is ready, False if a stop signal came first."""
        spec = child.spec
        deadline = started + spec.ready_timeout
        problem: Exception | None = None
        while self._stop_reason is None:
            self._reap()
            if proc.returncode is not None:
                raise StartupError(
                    f"{spec.name} exited while starting ({describe_exit(proc.returncode)});"
                    f" last lines of {child.log_path}:\n{self._tail(child)}"
                )
            if spec.ready is None:
                return True
            try:
                if spec.ready():
                    return True
            except Exception as exc:
                problem = exc
            if time.monotonic() >= deadline:
                reason = f" (last check: {problem})" if problem else ""
                raise StartupError(
                    f"{spec.name} was not ready after {spec.ready_timeout:g} s{reason};"
                    f" last lines of {child.log_path}:\n{self._tail(child)}"
                )
            time.sleep(self.poll_interval)
        return False

    def _supervise(self) -> None:
        while self._stop_reason is None:
            self._reap()
            now = time.monotonic()
            for child in self._children:
                proc = child.proc
                if proc is None:
                    continue
                if child.restart_at is None and proc.returncode is not None:
                    if proc.returncode in child.spec.final_exit_codes:
                        self._on_final_exit(child, proc)
                        continue
                    self._on_crash(child, proc, now)
                elif child.restart_at is not None and now >= child.restart_at:
                    proc = self._spawn(child)
                    self.out(f"Restarted {child.spec.name} (pid {proc.pid}).")
            time.sleep(self.poll_interval)
        self.out(f"{self._stop_reason}; stopping (signal again to kill at once).")

    def _on_final_exit(self, child: _Child, proc: subprocess.Popen[bytes]) -> None:
        """A child that asked not to be restarted: report it, keep everything else running."""
        self._exit_report(child, proc)
        child.pid_path.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._old_groups.add(proc.pid)
        child.proc = None
        self.out(
            f"{child.spec.name} stopped and will not be restarted "
            f"({describe_exit(proc.returncode)}); last lines of {child.log_path}:\n"
            f"{self._tail(child)}"
        )

    def _exit_report(self, child: _Child, proc: subprocess.Popen[bytes]) -> None:
        """Tell the child's ``on_exit`` hook; a failing hook never stops the supervisor."""
        if child.spec.on_exit is None or proc.returncode is None:
            return
        try:
            child.spec.on_exit(proc.pid, proc.returncode)
        except Exception as exc:
            self.out(f"could not record that {child.spec.name} exited: {exc}")

    def _on_crash(self, child: _Child, proc: subprocess.Popen[bytes], now: float) -> None:
        name = child.spec.name
        self._exit_report(child, proc)
        child.pid_path.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._old_groups.add(proc.pid)
        self.out(
            f"{name} exited unexpectedly ({describe_exit(proc.returncode)}); "
            f"last lines of {child.log_path}:\n{self._tail(child)}"
        )
        while child.exits and now - child.exits[0] > self.restart_window:
            child.exits.popleft()
        child.exits.append(now)
        if len(child.exits) > self.max_restarts:
            raise RestartLimitError(
                f"{name} exited {len(child.exits)} times within {self.restart_window:g} s; "
                f"giving up and stopping everything. See {child.log_path}."
            )
        delay = min(self.restart_backoff * 2 ** (len(child.exits) - 1), _MAX_BACKOFF)
        child.restart_at = now + delay
        self.out(
            f"Restarting {name} in {delay:.1f} s "
            f"(restart {len(child.exits)} of at most {self.max_restarts} "
            f"in {self.restart_window:g} s)."
        )

    def _stop_all(self) -> None:
        for child in reversed(self._children):
            if child.proc is not None:
                self._stop_group(child.spec.name, child.proc)
            child.pid_path.unlink(missing_ok=True)
        for pgid in list(self._old_groups):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self._reap()

    def _stop_group(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group of ``proc``, SIGKILL it after the timeout, reap it."""
        pgid = proc.pid
        self._reap()
        if proc.returncode is not None and not _group_alive(pgid):
            return
        self.out(f"  stopping {name} (pid {pgid})")
        sent = signal.SIGKILL if self._kill_now else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sent)
        deadline = time.monotonic() + self.stop_timeout
        while True:
            self._reap()
            if proc.returncode is not None and not _group_alive(pgid):
                return
            expired = time.monotonic() >= deadline
            if sent != signal.SIGKILL and (self._kill_now or expired):
                if not self._kill_now:
                    self.out(f"  {name} did not stop within {self.stop_timeout:g} s; killing it")
                sent = signal.SIGKILL
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sent)
                deadline = time.monotonic() + self.stop_timeout
            elif sent == signal.SIGKILL and expired:
                self.out(f"  {name}: processes of group {pgid} are still present")
                return
            time.sleep(self.poll_interval / 2)


def _group_alive(pgid: int) -> bool:
    """Whether any process (a zombie included) is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
