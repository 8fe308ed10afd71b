"""CPU cores and memory per rank: where a job may land, what it preempts, and why it waits."""

from tests.scheduler.engine.factories import (
    GB,
    HIGH,
    LOW,
    NOW,
    URGENT,
    decide,
    node,
    pending,
    placed,
    running,
    stopped,
    why,
)


def test_a_job_skips_a_node_with_enough_gpus_but_too_few_cpu_cores() -> None:
    nodes = [node(1, cpus=16), node(2, cpus=64)]
    busy = [running(100, 9, {1: range(4)}, cpus=12)]

    decisions = decide(nodes, busy, [pending(1, gpus=4, cpus=8)])

    assert placed(decisions) == {1: {2: (0, 1, 2, 3)}}


def test_a_job_skips_a_node_with_enough_gpus_but_too_little_memory() -> None:
    nodes = [node(1, memory_mb=64 * GB), node(2, memory_mb=512 * GB)]
    busy = [running(100, 9, {1: range(4)}, memory_mb=48 * GB)]

    decisions = decide(nodes, busy, [pending(1, gpus=4, memory_mb=32 * GB)])

    assert placed(decisions) == {1: {2: (0, 1, 2, 3)}}


def test_every_node_of_a_gang_has_the_cores_and_memory_for_its_rank() -> None:
    nodes = [node(i, cpus=32, memory_mb=128 * GB) for i in (1, 2, 3)]
    busy = [running(100, 9, {2: range(2)}, cpus=24)]

    decisions = decide(nodes, busy, [pending(1, nodes=2, gpus=4, cpus=16, memory_mb=64 * GB)])

    assert placed(decisions) == {1: {1: (0, 1, 2, 3), 3: (0, 1, 2, 3)}}


def test_two_jobs_never_overcommit_a_nodes_memory_in_one_pass() -> None:
    jobs = [pending(1, gpus=4, memory_mb=160 * GB), pending(2, gpus=4, memory_mb=160 * GB)]

    decisions = decide([node(1, memory_mb=256 * GB)], pending=jobs)

    assert placed(decisions) == {1: {1: (0, 1, 2, 3)}}
    assert why(decisions, 2).reason == "waiting for a node with 4 free GPUs and 160 GB of memory"


def test_the_reason_names_every_amount_the_job_asks_for() -> None:
    jobs = [
        pending(1, gpus=4, cpus=32, memory_mb=160 * GB),
        pending(2, gpus=4, cpus=32, memory_mb=160 * GB),
    ]

    decisions = decide([node(1, cpus=64, memory_mb=256 * GB)], pending=jobs)

    assert why(decisions, 2).reason == (
        "waiting for a node with 4 free GPUs, 32 CPU cores and 160 GB of memory"
    )


def test_a_gang_blocked_by_memory_says_so() -> None:
    nodes = [node(1, memory_mb=128 * GB), node(2, memory_mb=128 * GB)]
    busy = [running(100, 9, {1: range(4), 2: range(4)}, memory_mb=64 * GB)]
    jobs = [
        pending(1, nodes=2, gpus=4, memory_mb=100 * GB),
        pending(2, nodes=2, gpus=4, memory_mb=100 * GB),
    ]

    decisions = decide(nodes, busy, jobs)

    assert placed(decisions) == {}
    assert why(decisions, 1).reserved
    assert why(decisions, 2).reason == (
        "waiting for 2 nodes with 4 free GPUs and 100 GB of memory each"
    )


def test_nodes_that_do_not_limit_cpu_or_memory_take_any_request() -> None:
    decisions = decide([node(1)], pending=[pending(1, gpus=8, cpus=512, memory_mb=4096 * GB)])

    assert placed(decisions) == {1: {1: tuple(range(8))}}


def test_without_limits_in_the_pool_the_reasons_speak_of_gpus_only() -> None:
    busy = [running(100, 9, {1: range(4)}, ends_in=100)]
    jobs = [pending(1, gpus=8, cpus=32), pending(2, gpus=8, cpus=32)]

    decisions = decide([node(1)], busy, jobs)

    assert why(decisions, 1).reason == "reserved: starts when 8 GPUs are free on node-1"
    assert why(decisions, 2).reason == "waiting for 8 GPUs on one node (largest free block: 4)"


def test_a_request_larger_than_every_node_is_told_what_is_lacking() -> None:
    nodes = [
        node(1, cpus=32, memory_mb=256 * GB),
        node(2, cpus=32, memory_mb=512 * GB),
        node(3, gpus=4, cpus=64, memory_mb=256 * GB),
    ]
    jobs = [
        pending(1, gpus=1, cpus=96),
        pending(2, gpus=1, memory_mb=1024 * GB),
        pending(3, nodes=2, gpus=1, memory_mb=512 * GB),
        pending(4, gpus=8, cpus=64),
        pending(5, gpus=1, cpus=64, avoid=[3]),
    ]

    decisions = decide(nodes, pending=jobs)

    assert why(decisions, 1).reason == "no node in this pool has 96 CPU cores"
    assert why(decisions, 2).reason == "no node in this pool has 1024 GB of memory"
    assert why(decisions, 3).reason == (
        "this pool has only 1 node(s) with 512 GB of memory; the job needs 2"
    )
    assert why(decisions, 4).reason == "no node in this pool has 8 GPUs and 64 CPU cores"
    assert why(decisions, 5).reason == (
        "no node in this pool has 64 CPU cores outside the nodes this job avoids"
    )
    assert not any(r.reserved for r in decisions.pending)


def test_a_job_asking_for_a_negative_amount_is_refused() -> None:
    decisions = decide([node(1, cpus=16)], pending=[pending(1, gpus=1, cpus=-4)])

    assert why(decisions, 1).reason == "asks for a negative amount of CPU or memory"


def test_cordoned_nodes_that_alone_have_the_cores_are_waited_for() -> None:
    nodes = [node(1, cpus=64, accepting=False), node(2, cpus=32)]

    decisions = decide(nodes, pending=[pending(1, gpus=8, cpus=64)])

    assert why(decisions, 1).reason == (
        "waiting for 1 node(s) with 8 GPUs and 64 CPU cores to accept jobs "
        "(0 do; the others are cordoned or draining)"
    )


def test_cores_held_on_gpus_out_of_service_still_count() -> None:
    busy = [running(100, 9, {1: (7,)}, cpus=12)]

    decisions = decide([node(1, cpus=16, out=[7])], busy, [pending(1, gpus=1, cpus=8)])

    assert placed(decisions) == {}
    assert why(decisions, 1).reason == (
        "reserved: starts when 1 GPUs and 8 CPU cores are free on node-1"
    )


def test_a_node_holding_more_than_it_has_takes_only_jobs_asking_for_none() -> None:
    busy = [running(100, 9, {1: range(2)}, cpus=24)]
    jobs = [pending(1, gpus=2, cpus=1), pending(2, gpus=2)]

    decisions = decide([node(1, cpus=16)], busy, jobs)

    assert placed(decisions) == {2: {1: (4, 5)}}
    assert why(decisions, 1).reserved_slots == ((1, (2, 3)),)


def test_a_higher_priority_preempts_to_free_the_cores_it_needs() -> None:
    busy = [running(100, 2, {1: range(2)}, priority=LOW, cpus=24)]

    decisions = decide([node(1, cpus=32)], busy, [pending(1, gpus=2, cpus=16, priority=HIGH)])

    assert stopped(decisions) == {100: 1}
    assert placed(decisions) == {}
    assert why(decisions, 1).reason == "waiting for preempted job(s) 100 to stop"


def test_the_victim_must_free_enough_memory_not_just_gpus() -> None:
    busy = [
        running(100, 2, {1: range(2)}, priority=LOW, age=100, memory_mb=8 * GB),
        running(101, 2, {1: range(2, 4)}, priority=LOW, age=1000, memory_mb=96 * GB),
    ]
    job = pending(1, gpus=2, memory_mb=64 * GB, priority=HIGH)

    decisions = decide([node(1, memory_mb=128 * GB)], busy, [job])

    assert stopped(decisions) == {101: 1}


def test_the_node_where_freeing_the_memory_loses_the_least_work_wins() -> None:
    nodes = [node(1, memory_mb=128 * GB), node(2, memory_mb=128 * GB)]
    busy = [
        running(100, 2, {1: range(2)}, priority=LOW, age=100, memory_mb=8 * GB),
        running(101, 2, {1: range(2, 4)}, priority=LOW, age=1000, memory_mb=96 * GB),
        running(102, 2, {2: range(2)}, priority=LOW, age=1050, memory_mb=104 * GB),
    ]
    job = pending(1, gpus=2, memory_mb=64 * GB, priority=HIGH)

    decisions = decide(nodes, busy, [job])

    assert stopped(decisions) == {101: 1}


def test_nothing_is_preempted_when_the_cores_stay_taken() -> None:
    busy = [
        running(100, 2, {1: range(4)}, priority=LOW, cpus=4),
        running(101, 3, {1: (4, 5)}, priority=URGENT, cpus=24),
    ]

    decisions = decide([node(1, cpus=32)], busy, [pending(1, gpus=4, cpus=16, priority=HIGH)])

    assert decisions.preemptions == ()
    assert placed(decisions) == {}


def test_cores_freed_by_a_job_already_stopping_are_waited_for() -> None:
    busy = [running(100, 2, {1: (6, 7)}, priority=LOW, cpus=24, preemptible=False)]

    decisions = decide([node(1, cpus=32)], busy, [pending(1, gpus=2, cpus=16)])

    assert decisions.preemptions == ()
    assert why(decisions, 1).reason == "waiting for preempted job(s) 100 to stop"


def test_cores_claimed_after_a_preemption_are_not_given_to_a_later_job() -> None:
    busy = [running(100, 2, {1: range(2)}, priority=LOW, cpus=24)]
    jobs = [
        pending(1, gpus=2, cpus=16, priority=HIGH),
        pending(2, gpus=1, cpus=20),
        pending(3, gpus=1, cpus=8),
    ]

    decisions = decide([node(1, cpus=32)], busy, jobs)

    assert stopped(decisions) == {100: 1}
    assert placed(decisions) == {3: {1: (2,)}}
    assert why(decisions, 2).reason == "waiting for a node with 1 free GPUs and 20 CPU cores"


def test_a_reservation_waits_for_the_cores_to_be_freed() -> None:
    nodes = [node(1, cpus=16), node(2, cpus=16)]
    busy = [
        running(100, 9, {1: range(2)}, cpus=12, ends_in=300),
        running(101, 9, {2: range(2)}, cpus=12, ends_in=100),
    ]

    decisions = decide(nodes, busy, [pending(1, gpus=4, cpus=8, memory_mb=64 * GB)])

    reason = why(decisions, 1)
    assert reason.reserved
    assert reason.estimated_start == NOW + 100
    assert reason.reserved_slots == ((2, (2, 3, 4, 5)),)
    assert reason.reason == "reserved: starts when 4 GPUs and 8 CPU cores are free on node-2"


def test_a_reservation_counts_cores_held_beyond_the_nodes_size() -> None:
    busy = [
        running(100, 9, {1: range(2)}, cpus=12, ends_in=100),
        running(101, 9, {1: range(2, 4)}, cpus=12, ends_in=200),
    ]

    decisions = decide([node(1, cpus=16)], busy, [pending(1, gpus=4, cpus=8)])

    assert why(decisions, 1).estimated_start == NOW + 200


def test_backfill_never_takes_the_cores_the_reserved_job_counts_on() -> None:
    busy = [
        running(100, 9, {1: range(2)}, cpus=6, ends_in=100),
        running(101, 9, {1: range(2, 4)}, cpus=6),
    ]
    jobs = [
        pending(1, gpus=2, cpus=8),
        pending(2, gpus=1, cpus=4),
        pending(3, gpus=1, cpus=4, max_duration=50),
    ]

    decisions = decide([node(1, cpus=16)], busy, jobs)

    assert why(decisions, 1).estimated_start == NOW + 100
    assert why(decisions, 2).reason == "behind job 1, which holds the reservation"
    assert placed(decisions) == {3: {1: (4,)}}
