"""Marker lines: how a job process tells Podium about its metrics and checkpoints.

A marker is one whole line on stdout: ``@podium `` and a compact JSON object whose
``kind`` says what it is (``"report"`` or ``"checkpoint"``). Podium ships a job's output
to the console line by line; the console reads the markers with ``marker_parse`` and keeps
them as metrics and checkpoint records, every other line as log output. Markers flush
stdout before and after themselves, so a marker never lands inside a line the script is
printing.
"""

import json
import math
import numbers
import sys
import time
from typing import Any

from podium.sdk import environment

MARKER = "@podium "


def marker_format(kind: str, **fields: object) -> str:
    """The marker line (without its newline) of ``kind`` with ``fields``."""
    return MARKER + json.dumps({"kind": kind, **fields}, separators=(",", ":"), allow_nan=False)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def marker_parse(line: str) -> dict[str, Any] | None:
    """The JSON object of a marker line; None for any other line or a malformed marker
    (NaN and infinities, which JSON does not have, make a marker malformed)."""
    if not line.startswith(MARKER):
        return None
    try:
        document = json.loads(line[len(MARKER) :], parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
        return None
    return document


def marker_emit(line: str) -> None:
    """Print a marker line as a line of its own and flush it out."""
    stdout = sys.stdout
    stdout.flush()
    stdout.write(line + "\n")
    stdout.flush()


def step_check(step: object) -> None:
    """Raise ValueError unless ``step`` is a non-negative integer."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, not {step!r}")


def _metric_value(name: str, value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"metric {name!r} is {value!r}, which is not a number")
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric {name!r} is {number}, which is not a finite number")
    return number


def report(step: int, *, all_ranks: bool = False, **metrics: float) -> None:
    """Report ``metrics`` (numbers by name) at training step ``step``.

    Only global rank 0 reports, unless ``all_ranks``; the values are checked on every rank,
    so a bad metric fails the same way everywhere. Non-numbers and NaN or infinite values
    raise ValueError naming the metric.
    """
    step_check(step)
    values = {name: _metric_value(name, value) for name, value in metrics.items()}
    if not all_ranks and environment.global_rank() != 0:
        return
    marker_emit(marker_format("report", step=step, metrics=values, ts=time.time()))
