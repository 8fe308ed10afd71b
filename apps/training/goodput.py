"""Goodput: how much of a job's wall time moved its training forward.

Pure functions over a job's timeline. Each attempt trains from the moment it makes
progress (its first report, else its start) until it ends. When the next attempt resumes
from a checkpoint, the work after that checkpoint is lost: the attempt that wrote it keeps
its time up to the checkpoint, later attempts keep none. A restart from the beginning
loses every earlier attempt. Lost time is split into work redone (after the last kept
checkpoint) and restart overhead (from the interruption until training again: detection,
queueing, start-up and loading the checkpoint).
"""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AttemptSpan:
    """One attempt as the timeline tells it."""

    attempt: int
    started: datetime  # its processes all ran
    ended: datetime | None  # interrupted or finished; None while it runs
    progress_from: datetime  # first report, else ``started``
    resumed_step: int | None = None  # the checkpoint it resumed from
    restarted: bool = False  # it started from the beginning after an interruption


@dataclass(frozen=True)
class CheckpointMark:
    step: int
    attempt: int | None
    written_at: datetime


@dataclass
class Goodput:
    """Seconds of a job's wall time, from its first start to its end (or now)."""

    wall: float = 0.0
    productive: float = 0.0
    redone: float = 0.0
    overhead: float = 0.0
    interruptions: int = 0
    per_attempt: dict[int, float] = field(default_factory=dict)  # productive seconds

    @property
    def ratio(self) -> float | None:
        """Productive share of the wall time, or None before the job ran."""
        return self.productive / self.wall if self.wall > 0 else None

    def add(self, other: "Goodput") -> None:
        """Fold another job's figures into these (a workspace's total)."""
        self.wall += other.wall
        self.productive += other.productive
        self.redone += other.redone
        self.overhead += other.overhead
        self.interruptions += other.interruptions


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def goodput_compute(
    spans: list[AttemptSpan], checkpoints: list[CheckpointMark], now: datetime
) -> Goodput:
    """The goodput of one job from its attempts (oldest first) and checkpoints."""
    result = Goodput()
    if not spans:
        return result
    by_step = {c.step: c for c in checkpoints}
    kept: dict[int, float] = {}
    result.overhead = _seconds(spans[0].started, spans[0].progress_from)
    for index, span in enumerate(spans):
        end = span.ended or now
        if index > 0:
            previous = spans[index - 1]
            result.interruptions += 1
            result.overhead += _seconds(previous.ended or span.started, span.progress_from)
            mark = by_step.get(span.resumed_step) if span.resumed_step is not None else None
            if span.restarted or mark is None:
                kept = {}
            else:
                for attempt, seconds in list(kept.items()):
                    if mark.attempt is not None and attempt > mark.attempt:
                        kept[attempt] = 0.0
                    elif attempt == mark.attempt:
                        origin = next(s for s in spans if s.attempt == attempt).progress_from
                        kept[attempt] = min(seconds, _seconds(origin, mark.written_at))
        kept[span.attempt] = _seconds(span.progress_from, end)
    result.wall = _seconds(spans[0].started, spans[-1].ended or now)
    result.per_attempt = kept
    result.productive = sum(kept.values())
    result.redone = max(0.0, result.wall - result.productive - result.overhead)
    return result
