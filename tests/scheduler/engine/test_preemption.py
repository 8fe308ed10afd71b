"""Preemption: guarantees reclaimed from borrowers, higher priorities over lower ones."""

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
    stopped,
    why,
)

WHOLE = range(8)


def test_a_guarantee_reclaims_gpus_from_the_borrower_losing_the_least_work() -> None:
    busy = [
        running(100, 2, {1: WHOLE}, age=3600),
        running(101, 2, {2: WHOLE}, age=7200, checkpoint_age=600),
    ]

    decisions = decide([node(1), node(2)], busy, [pending(1, gpus=8)], [quota(1, 8)])

    assert stopped(decisions) == {101: 1}
    assert decisions.preemptions[0].reason == (
        "preempted: workspace 1 reclaims its guaranteed GPUs for job 1"
    )
    assert placed(decisions) == {}
    assert why(decisions, 1).reason == "waiting for preempted job(s) 101 to stop"


def test_only_the_jobs_above_a_workspace_guarantee_are_reclaimed() -> None:
    busy = [
        running(100, 2, {1: WHOLE}, age=7200, checkpoint_age=60),
        running(101, 2, {2: WHOLE}, age=3600),
    ]

    decisions = decide([node(1), node(2)], busy, [pending(1, gpus=8)], [quota(1, 8), quota(2, 8)])

    assert stopped(decisions) == {101: 1}


def test_a_guarantee_never_preempts_another_guarantee() -> None:
    busy = [running(100, 2, {1: WHOLE})]

    decisions = decide([node(1)], busy, [pending(1, gpus=8)], [quota(1, 8), quota(2, 8)])

    assert decisions.preemptions == ()
    assert why(decisions, 1).reserved


def test_a_job_beyond_its_guarantee_does_not_preempt_borrowers_of_its_priority() -> None:
    busy = [running(100, 2, {1: WHOLE})]

    decisions = decide([node(1)], busy, [pending(1, gpus=8)], [quota(1, 4)])

    assert decisions.preemptions == ()


def test_a_higher_priority_preempts_a_lower_priority_borrower() -> None:
    busy = [running(100, 2, {1: WHOLE}, priority=LOW)]

    decisions = decide([node(1)], busy, [pending(1, gpus=8, priority=HIGH)])

    assert stopped(decisions) == {100: 1}
    assert decisions.preemptions[0].reason == "preempted for job 1 (high priority)"


def test_priority_never_preempts_another_workspace_within_its_guarantee() -> None:
    busy = [running(100, 2, {1: WHOLE}, priority=LOW)]

    decisions = decide([node(1)], busy, [pending(1, gpus=8, priority=URGENT)], [quota(2, 8)])

    assert decisions.preemptions == ()


def test_priority_preempts_a_lower_priority_job_of_the_same_workspace_within_its_guarantee() -> (
    None
):
    busy = [running(100, 1, {1: WHOLE}, priority=LOW)]

    decisions = decide([node(1)], busy, [pending(1, gpus=8, priority=HIGH)], [quota(1, 8)])

    assert stopped(decisions) == {100: 1}


def test_a_job_that_only_fits_the_maximum_without_its_own_lower_jobs_preempts_them() -> None:
    busy = [running(100, 1, {1: WHOLE}, priority=LOW)]

    decisions = decide([node(1), node(2)], busy, [pending(1, gpus=8, nodes=2, priority=HIGH)])

    assert stopped(decisions) == {100: 1}
    assert why(decisions, 1).reason == "waiting for preempted job(s) 100 to stop"


def test_a_job_over_its_maximum_never_preempts_other_workspaces_to_get_there() -> None:
    busy = [
        running(100, 1, {1: range(4)}, priority=LOW),
        running(101, 2, {1: range(4, 8)}, priority=LOW),
    ]

    decisions = decide([node(1)], busy, [pending(1, gpus=8, priority=HIGH)], [quota(1, 0, 8)])

    assert stopped(decisions) == {}
    assert why(decisions, 1).reason.startswith("over quota")


def test_equal_priority_is_never_preempted_for_priority() -> None:
    busy = [running(100, 2, {1: WHOLE}, priority=HIGH)]

    decisions = decide([node(1)], busy, [pending(1, gpus=8, priority=HIGH)])

    assert decisions.preemptions == ()


def test_nothing_is_preempted_when_it_would_not_make_room() -> None:
    busy = [
        running(100, 2, {1: WHOLE}, priority=LOW),
        running(101, 3, {2: WHOLE}, priority=URGENT),
    ]

    decisions = decide([node(1), node(2)], busy, [pending(1, nodes=2, gpus=8, priority=HIGH)])

    assert decisions.preemptions == ()
    assert placed(decisions) == {}


def test_the_fewest_gpu_hours_are_lost_then_the_fewest_jobs() -> None:
    busy = [
        running(100, 2, {1: (0, 1)}, priority=LOW, age=100),
        running(101, 2, {1: (2, 3)}, priority=LOW, age=400),
        running(102, 2, {1: (4, 5)}, priority=LOW, age=50),
        running(103, 2, {1: (6, 7)}, priority=LOW, age=300),
    ]

    decisions = decide([node(1)], busy, [pending(1, gpus=4, priority=HIGH)])

    assert stopped(decisions) == {100: 1, 102: 1}
    assert why(decisions, 1).reason == "waiting for preempted job(s) 100, 102 to stop"


def test_at_equal_lost_work_fewer_victims_win() -> None:
    busy = [
        running(100, 2, {1: (0, 1)}, priority=LOW, age=100),
        running(101, 2, {1: (2, 3)}, priority=LOW, age=100),
        running(102, 2, {1: (4, 5, 6, 7)}, priority=LOW, age=100),
    ]

    decisions = decide([node(1)], busy, [pending(1, gpus=4, priority=HIGH)])

    assert stopped(decisions) == {102: 1}


def test_free_gpus_count_towards_the_room_a_preemption_makes() -> None:
    busy = [
        running(100, 2, {1: range(4)}, age=1000),
        running(101, 2, {2: WHOLE}, age=400),
        running(102, 2, {3: WHOLE}, age=600),
    ]
    nodes = [node(1), node(2), node(3)]

    cheap_full_node = decide(nodes[:2], busy[:2], [pending(1, gpus=8)], [quota(1, 8)])
    cheap_half_node = decide(nodes[::2], busy[::2], [pending(1, gpus=8)], [quota(1, 8)])

    assert stopped(cheap_full_node) == {101: 1}
    assert stopped(cheap_half_node) == {100: 1}


def test_a_gang_preempts_the_cheapest_nodes() -> None:
    busy = [
        running(100, 2, {1: WHOLE, 2: WHOLE}, age=7200),
        running(101, 2, {3: WHOLE}, age=600),
        running(102, 2, {4: WHOLE}, age=600),
    ]
    nodes = [node(1), node(2), node(3), node(4)]

    decisions = decide(nodes, busy, [pending(1, nodes=2, gpus=8)], [quota(1, 16)])

    assert stopped(decisions) == {101: 1, 102: 1}


def test_a_job_already_stopping_is_never_chosen_but_waited_for() -> None:
    busy = [
        running(100, 2, {1: WHOLE}, priority=LOW, preemptible=False),
        running(101, 2, {2: WHOLE}, priority=LOW),
    ]

    decisions = decide([node(1), node(2)], busy, [pending(1, gpus=8, priority=HIGH)])

    assert decisions.preemptions == ()
    assert why(decisions, 1).reason == "waiting for preempted job(s) 100 to stop"


def test_preempted_gpus_are_not_given_to_anyone_in_the_same_pass() -> None:
    busy = [running(100, 2, {1: WHOLE})]
    jobs = [pending(1, workspace=1, gpus=4), pending(2, workspace=3, gpus=4)]

    decisions = decide([node(1)], busy, jobs, [quota(1, 8)])

    assert stopped(decisions) == {100: 1}
    assert placed(decisions) == {}
    assert why(decisions, 2).reason == "waiting for preempted job(s) 100 to stop"


def test_two_waiting_guarantees_get_their_own_victims() -> None:
    busy = [running(100, 2, {1: WHOLE}), running(101, 2, {2: WHOLE})]
    jobs = [pending(1, gpus=8), pending(2, gpus=8)]

    decisions = decide([node(1), node(2)], busy, jobs, [quota(1, 16)])

    assert sorted(stopped(decisions).items()) == [(100, 1), (101, 2)]


def test_a_guarantee_is_not_reclaimed_twice_in_one_pass() -> None:
    busy = [running(100, 2, {1: WHOLE}), running(101, 2, {2: WHOLE})]
    jobs = [pending(1, gpus=8), pending(2, gpus=8)]

    decisions = decide([node(1), node(2)], busy, jobs, [quota(1, 8)])

    assert stopped(decisions) == {100: 1}


def test_a_job_over_its_maximum_preempts_nobody() -> None:
    busy = [running(100, 2, {1: WHOLE}, priority=LOW)]

    decisions = decide([node(1)], busy, [pending(1, gpus=8, priority=HIGH)], [quota(1, 0, 4)])

    assert decisions.preemptions == ()
