"""The job messages between console and agent, checked: ``job_start`` parsed into a
``JobSpec`` (a ValueError names the first bad field) and ``job_exited`` built."""

import math
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

from podium.agent import protocol


@dataclass(frozen=True)
class JobSpec:
    """The fields of a valid ``job_start``."""

    alloc: int
    job: int
    attempt: int
    rank: int
    command: str
    env: dict[str, str]
    workdir: str | None
    gpus: list[int]
    grace: float


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether ``value`` is a finite JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def alloc_of(message: dict[str, Any]) -> int | None:
    """The ``alloc`` of a console message, or None when it is missing or not an integer."""
    alloc = message.get("alloc")
    return alloc if is_integer(alloc) else None


def parse_job_start(message: dict[str, Any]) -> JobSpec:
    """The spec of a ``job_start``; ValueError naming the first bad field.

    ``env``, ``workdir`` and ``gpus`` may be left out (or null): none, the default
    directory, no GPU.
    """
    values: dict[str, Any] = {}
    for key in ("alloc", "job", "attempt", "rank"):
        if not is_integer(message.get(key)):
            raise ValueError(f"bad field {key!r}: must be an integer")
        values[key] = message[key]
    command = message.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ValueError("bad field 'command': must be a non-empty string")
    env = message.get("env")
    env = {} if env is None else env
    if not isinstance(env, dict) or not all(
        isinstance(key, str) and key and "=" not in key and isinstance(value, str)
        for key, value in env.items()
    ):
        raise ValueError("bad field 'env': must map variable names to strings")
    workdir = message.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir):
        raise ValueError("bad field 'workdir': must be a path or null")
    gpus = message.get("gpus")
    gpus = [] if gpus is None else gpus
    if not isinstance(gpus, list) or not all(is_integer(gpu) and gpu >= 0 for gpu in gpus):
        raise ValueError("bad field 'gpus': must be a list of GPU indices")
    grace = message.get("grace")
    if not is_number(grace) or grace < 0:
        raise ValueError("bad field 'grace': must be a number of seconds")
    return JobSpec(
        command=command,
        env=dict(env),
        workdir=workdir,
        gpus=list(gpus),
        grace=float(grace),
        **values,
    )


def exited_message(
    alloc: int,
    *,
    reason: str,
    exit_code: int | None = None,
    signum: int | None = None,
    tail: str = "",
) -> dict[str, Any]:
    return {
        "type": protocol.JOB_EXITED,
        "alloc": alloc,
        "exit_code": exit_code,
        "signal": signum,
        "ts": round(time.time(), 3),
        "reason": reason,
        "tail": tail,
    }
