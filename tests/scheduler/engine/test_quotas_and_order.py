"""Queue order and quotas: priority, guarantees first, weighted fair share, maximums."""

from tests.scheduler.engine.factories import (
    HIGH,
    LOW,
    URGENT,
    decide,
    node,
    pending,
    placed,
    quota,
    running,
    why,
)


def test_a_workspace_under_its_guarantee_goes_before_a_borrower_queued_earlier() -> None:
    decisions = decide(
        [node(1)],
        pending=[
            pending(1, workspace=2, gpus=8, order=1),
            pending(2, workspace=1, gpus=8, order=9),
        ],
        quotas=[quota(1, guaranteed=8)],
    )

    assert list(placed(decisions)) == [2]
    assert decisions.placements[0].borrowed is False
    assert why(decisions, 1).position == 1


def test_a_workspace_borrows_idle_gpus_up_to_its_maximum_and_no_further() -> None:
    jobs = [pending(job_id, workspace=1, gpus=4) for job_id in (1, 2, 3)]

    decisions = decide([node(1), node(2)], pending=jobs, quotas=[quota(1, 4, maximum=8)])

    assert [(p.job_id, p.borrowed) for p in decisions.placements] == [(1, False), (2, True)]
    assert why(decisions, 3).reason == (
        "over quota: workspace at 8 of its maximum 8 GPUs in this pool (job needs 4)"
    )
    assert not why(decisions, 3).reserved


def test_running_jobs_count_towards_the_maximum() -> None:
    busy = [running(100, 1, {1: range(6)})]

    decisions = decide(
        [node(1), node(2)], busy, [pending(1, gpus=4), pending(2, gpus=2)], [quota(1, 2, 8)]
    )

    assert list(placed(decisions)) == [2]
    assert why(decisions, 1).reason.startswith("over quota: workspace at 6 of its maximum 8")


def test_a_workspace_without_a_quota_only_borrows() -> None:
    decisions = decide([node(1)], pending=[pending(1, workspace=5, gpus=8)])

    assert [(p.job_id, p.borrowed) for p in decisions.placements] == [(1, True)]


def test_a_quota_for_another_pool_does_not_apply() -> None:
    decisions = decide(
        [node(1, pool=1)],
        pending=[pending(1, gpus=8, pool=1)],
        quotas=[quota(1, guaranteed=0, maximum=0, pool=2)],
    )

    assert list(placed(decisions)) == [1]


def test_weighted_fair_share_splits_the_pool_by_weight() -> None:
    jobs = [pending(i, workspace=1) for i in range(1, 7)]
    jobs += [pending(10 + i, workspace=2) for i in range(1, 7)]
    quotas = [quota(1, 0, weight=2.0), quota(2, 0, weight=1.0)]

    decisions = decide([node(1, gpus=6)], pending=jobs, quotas=quotas)

    assert sorted(placed(decisions)) == [1, 2, 3, 4, 11, 12]


def test_fair_share_counts_gpus_already_running() -> None:
    busy = [running(100, 1, {1: range(4)})]
    jobs = [pending(1, workspace=1, gpus=2), pending(2, workspace=2, gpus=2, order=5)]

    decisions = decide([node(1, gpus=6)], busy, jobs)

    assert list(placed(decisions)) == [2]


def test_higher_priority_goes_first_whatever_the_queue_order() -> None:
    jobs = [
        pending(1, gpus=8, priority=LOW, order=1),
        pending(2, gpus=8, order=2),
        pending(3, gpus=8, priority=URGENT, order=3),
        pending(4, gpus=8, priority=HIGH, order=4),
    ]

    decisions = decide([node(1), node(2)], pending=jobs)

    assert sorted(placed(decisions)) == [3, 4]
    assert [(r.job_id, r.position) for r in decisions.pending] == [(2, 1), (1, 2)]


def test_priority_beats_guarantee() -> None:
    jobs = [pending(1, workspace=1, gpus=8), pending(2, workspace=2, gpus=8, priority=HIGH)]

    decisions = decide([node(1)], pending=jobs, quotas=[quota(1, 8)])

    assert list(placed(decisions)) == [2]


def test_within_a_workspace_jobs_go_by_queue_order_then_id() -> None:
    jobs = [pending(3, gpus=4, order=1), pending(1, gpus=4, order=2), pending(2, gpus=4, order=2)]

    decisions = decide([node(1, gpus=8)], pending=jobs)

    assert sorted(placed(decisions)) == [1, 3]
    assert why(decisions, 2).position == 1


def test_a_placement_within_the_guarantee_is_not_borrowed_and_the_rest_is() -> None:
    jobs = [pending(1, gpus=4), pending(2, gpus=4)]

    decisions = decide([node(1)], pending=jobs, quotas=[quota(1, 6)])

    assert [(p.job_id, p.borrowed) for p in decisions.placements] == [(1, False), (2, True)]
