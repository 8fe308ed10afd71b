"""What a job's failed attempt means: retry or not, on the job's account or not.

A table of exit codes and output patterns, checked in order; the first match wins (a
pattern's groups fill its reason: a checkpoint that could not be written says why). Faults
of the machine (node lost, GPU unhealthy, preemption) never reach this table: they are
requeued without using up the job's restarts.
"""

import re
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """How an attempt ended and what to do about it."""

    kind: str  # checkpoint, oom, network, killed, command_not_found, error
    reason: str
    retry: bool  # run again (if restarts remain, when ``counts``)
    counts: bool  # uses one of the job's ``max_restarts``
    avoid_node: bool = False  # do not place it on the same node again


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str] | None
    exit_codes: frozenset[int]
    reason: str
    retry: bool
    counts: bool
    avoid_node: bool = False


RULES = (
    _Rule(
        "checkpoint",
        re.compile(r"CheckpointError: (.{1,240})"),
        frozenset(),
        "{0}; earlier checkpoints are intact",
        retry=False,
        counts=True,
    ),
    _Rule(
        "oom",
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I),
        frozenset(),
        "CUDA ran out of memory: retrying would fail the same way; lower the batch size",
        retry=False,
        counts=True,
    ),
    _Rule(
        "network",
        re.compile(
            r"NCCL (?:error|WARN.*(?:timeout|Connection))|ncclSystemError|ncclRemoteError|"
            r"Connection (?:reset|refused) by peer|Gloo.*(?:timed out|Connection closed)|"
            r"c10d.*(?:timed out|TCPStore)",
            re.I,
        ),
        frozenset(),
        "NCCL or network error: retrying on other nodes",
        retry=True,
        counts=False,
        avoid_node=True,
    ),
    _Rule(
        "command_not_found",
        None,
        frozenset({126, 127}),
        "the command was not found or is not executable",
        retry=False,
        counts=True,
    ),
)


def failure_classify(*, exit_code: int | None, signal_number: int | None, tail: str) -> Failure:
    """Classify one rank's failed exit from its code, the signal that ended it and its output."""
    for rule in RULES:
        found = rule.pattern.search(tail or "") if rule.pattern is not None else None
        if found or exit_code in rule.exit_codes:
            reason = rule.reason.format(*found.groups()) if found else rule.reason
            return Failure(rule.kind, reason, rule.retry, rule.counts, rule.avoid_node)
    if signal_number:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        return Failure("killed", f"killed by {name}", retry=True, counts=True)
    return Failure("error", f"exited with code {exit_code}", retry=True, counts=True)
