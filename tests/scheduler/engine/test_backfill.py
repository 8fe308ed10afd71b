"""The reservation of the first job that cannot start, and backfill around it."""

from tests.scheduler.engine.factories import (
    HIGH,
    NOW,
    URGENT,
    decide,
    node,
    pending,
    placed,
    quota,
    running,
    stopped,
    why,
)


def _two_nodes() -> tuple[list, list]:
    """node-1: 4 GPUs busy for 100 s more; node-2: 6 GPUs busy for 1,000 s more."""
    busy = [
        running(100, 9, {1: range(4)}, ends_in=100),
        running(101, 9, {2: range(6)}, ends_in=1000),
    ]
    return [node(1), node(2)], busy


def test_the_first_job_that_cannot_start_reserves_where_it_starts_soonest() -> None:
    nodes, busy = _two_nodes()

    decisions = decide(nodes, busy, [pending(1, gpus=8)])

    reason = why(decisions, 1)
    assert reason.reserved
    assert reason.reason == "reserved: starts when 8 GPUs are free on node-1"
    assert reason.estimated_start == NOW + 100
    assert reason.reserved_slots == ((1, tuple(range(8))),)


def test_backfill_uses_free_gpus_but_not_reserved_ones() -> None:
    nodes, busy = _two_nodes()
    jobs = [pending(1, gpus=8), pending(2, gpus=4), pending(3, gpus=2)]

    decisions = decide(nodes, busy, jobs)

    assert placed(decisions) == {3: {2: (6, 7)}}
    assert why(decisions, 2).reason == "behind job 1, which holds the reservation"
    assert not why(decisions, 2).reserved


def test_a_job_sure_to_end_before_the_reserved_start_may_use_reserved_gpus() -> None:
    nodes, busy = _two_nodes()
    jobs = [
        pending(1, gpus=8),
        pending(2, gpus=4, max_duration=500),
        pending(3, gpus=4, max_duration=60),
        pending(4, gpus=1, max_duration=60),
    ]

    decisions = decide(nodes, busy, jobs)

    assert placed(decisions) == {3: {1: (4, 5, 6, 7)}, 4: {2: (6,)}}
    assert why(decisions, 2).reason == "behind job 1, which holds the reservation"


def test_without_known_ends_the_gpus_are_still_held_but_no_start_is_estimated() -> None:
    busy = [running(100, 9, {1: range(4)})]
    jobs = [pending(1, gpus=8), pending(2, gpus=4, max_duration=1)]

    decisions = decide([node(1)], busy, jobs)

    assert placed(decisions) == {}
    assert why(decisions, 1).reserved
    assert why(decisions, 1).estimated_start is None
    assert why(decisions, 2).reason == "behind job 1, which holds the reservation"


def test_a_gang_reservation_takes_the_nodes_that_free_up_first() -> None:
    nodes = [node(1), node(2), node(3)]
    busy = [
        running(100, 9, {1: range(8)}, ends_in=300),
        running(101, 9, {2: range(8)}, ends_in=100),
        running(102, 9, {3: range(8)}, ends_in=200),
    ]

    decisions = decide(nodes, busy, [pending(1, nodes=2, gpus=8)])

    reason = why(decisions, 1)
    assert reason.estimated_start == NOW + 200
    assert [node_id for node_id, _ in reason.reserved_slots] == [2, 3]
    assert reason.reason == "reserved: starts when 8 GPUs are free on each of node-2, node-3"


def test_an_overdue_job_counts_as_ending_now() -> None:
    busy = [running(100, 9, {1: range(8)}, ends_in=-50)]

    decisions = decide([node(1)], busy, [pending(1, gpus=8)])

    assert why(decisions, 1).estimated_start == NOW


def test_there_is_one_reservation_per_pool() -> None:
    nodes, busy = _two_nodes()

    decisions = decide(nodes, busy, [pending(1, gpus=8), pending(2, gpus=8)])

    assert [r.reserved for r in decisions.pending] == [True, False]
    assert why(decisions, 2).reason == "waiting for 8 GPUs on one node (largest free block: 4)"


def test_each_pool_has_its_own_reservation() -> None:
    nodes = [node(1, pool=1), node(2, pool=2)]
    busy = [running(100, 9, {1: range(8)}, pool=1), running(101, 9, {2: range(8)}, pool=2)]

    decisions = decide(nodes, busy, [pending(1, gpus=8, pool=1), pending(2, gpus=8, pool=2)])

    assert [r.reserved for r in decisions.pending] == [True, True]


def test_a_job_held_back_by_its_own_quota_does_not_take_the_reservation() -> None:
    nodes, busy = _two_nodes()
    jobs = [pending(1, workspace=1, gpus=8), pending(2, workspace=2, gpus=8)]

    decisions = decide(nodes, busy, jobs, [quota(1, 0, maximum=4)])

    assert not why(decisions, 1).reserved
    assert why(decisions, 2).reserved


def test_a_job_that_can_never_fit_does_not_take_the_reservation() -> None:
    nodes, busy = _two_nodes()

    decisions = decide(nodes, busy, [pending(1, gpus=16), pending(2, gpus=8)])

    assert [r.reserved for r in decisions.pending] == [False, True]


def test_a_job_queued_before_the_reserved_one_is_not_backfill() -> None:
    nodes, busy = _two_nodes()

    decisions = decide(nodes, busy, [pending(1, gpus=4), pending(2, gpus=8)])

    assert placed(decisions) == {1: {1: (4, 5, 6, 7)}}
    assert why(decisions, 2).reserved
    assert why(decisions, 2).estimated_start == NOW + 1000


def test_a_later_preemption_does_not_take_the_reserved_gpus() -> None:
    busy = [
        running(100, 3, {1: range(4)}, priority=URGENT, age=60, ends_in=100),
        running(101, 3, {2: range(8)}, priority=URGENT, age=7200),
    ]
    jobs = [pending(1, workspace=2, gpus=8, priority=HIGH), pending(2, workspace=1, gpus=4)]

    decisions = decide([node(1), node(2)], busy, jobs, [quota(1, 8)])

    assert why(decisions, 1).reserved_slots == ((1, tuple(range(8))),)
    assert stopped(decisions) == {101: 2}
