"""Job process groups on the node: signalling them, telling whether one left by an
earlier life of the agent still runs, having a job die with the agent, reading log tails."""

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from podium.agent import protocol

PR_SET_PDEATHSIG = 1
CREATE_TIME_TOLERANCE = 0.05  # seconds; psutil's create time of one process never moves


def killpg(pgid: int, signum: int) -> None:
    """Signal a process group; one that is already gone is no error."""
    if pgid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """Whether a live process (not a zombie waiting for its parent) is left in the
    process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except OSError:
            continue
    return False


def create_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def die_with_agent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux SIGKILL the child when the agent dies; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    agent = os.getpid()

    def die_with_agent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != agent:  # the agent died before the line above
            os._exit(1)

    return die_with_agent


def tail_text(tail: bytes, cut: bool) -> str:
    """The tail as text; a tail cut from longer output starts at a whole character."""
    start = 0
    if cut:
        while start < len(tail) and tail[start] & 0xC0 == 0x80:
            start += 1
    return tail[start:].decode("utf-8", "replace")


def file_tail(path: Path) -> str:
    """The last ``TAIL_MAX_BYTES`` of a log file ("" when there is none)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - protocol.TAIL_MAX_BYTES))
            return tail_text(handle.read(), size > protocol.TAIL_MAX_BYTES)
    except OSError:
        return ""


def leftover_alive(pgid: int, started_at: float | None) -> bool:
    """Whether the process group ``pgid`` of a previous life of the agent still exists.

    A leader that still runs must have the recorded create time (else its pid was
    reused). Without a leader, any process left in the group counts: the kernel does
    not reuse a pid that is still a process group's id.
    """
    try:
        leader = psutil.Process(pgid)
        started = leader.create_time()
    except psutil.NoSuchProcess:
        return group_alive(pgid)
    except psutil.Error:
        return False
    return started_at is not None and abs(started - started_at) < CREATE_TIME_TOLERANCE
