"""Goodput from a job's attempts: what counts as training, what was lost and why."""

from datetime import UTC, datetime, timedelta

import pytest

from apps.training.goodput import AttemptSpan, CheckpointMark, goodput_compute

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def span(attempt: int, start: float, end: float | None, **fields: object) -> AttemptSpan:
    values: dict[str, object] = {"progress_from": at(start)} | fields
    return AttemptSpan(
        attempt=attempt,
        started=at(start),
        ended=at(end) if end is not None else None,
        **values,  # type: ignore[arg-type]
    )


def test_an_uninterrupted_job_is_all_goodput() -> None:
    goodput = goodput_compute([span(1, 0, 100)], [], at(500))

    assert goodput.wall == 100
    assert goodput.productive == 100
    assert goodput.ratio == 1


def test_a_resume_loses_the_work_since_the_checkpoint_and_the_restart() -> None:
    spans = [
        span(1, 0, 100),
        span(2, 110, 200, progress_from=at(115), resumed_step=80),
    ]
    checkpoints = [CheckpointMark(step=80, attempt=1, written_at=at(90))]

    goodput = goodput_compute(spans, checkpoints, at(500))

    assert goodput.wall == 200
    assert goodput.productive == 90 + 85
    assert goodput.overhead == 15
    assert goodput.redone == 10
    assert goodput.interruptions == 1
    assert goodput.ratio == pytest.approx(175 / 200)


def test_a_restart_from_the_beginning_loses_every_earlier_attempt() -> None:
    spans = [span(1, 0, 100), span(2, 110, 300, restarted=True)]

    goodput = goodput_compute(spans, [], at(500))

    assert goodput.productive == 190
    assert goodput.redone == 100


def test_resuming_from_an_older_attempts_checkpoint_voids_the_attempts_after_it() -> None:
    spans = [
        span(1, 0, 100),
        span(2, 100, 150, resumed_step=50),
        span(3, 150, 250, resumed_step=50),
    ]
    checkpoints = [CheckpointMark(step=50, attempt=1, written_at=at(50))]

    goodput = goodput_compute(spans, checkpoints, at(500))

    assert goodput.per_attempt == {1: 50, 2: 0, 3: 100}


def test_a_running_attempt_counts_until_now() -> None:
    goodput = goodput_compute([span(1, 0, None)], [], at(60))

    assert goodput.wall == 60
    assert goodput.productive == 60
