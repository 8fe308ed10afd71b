"""Packing and gang placement: where a job lands, and when it cannot land at all."""

from tests.scheduler.engine.factories import decide, node, pending, placed, running, why


def test_a_job_goes_to_the_node_it_leaves_the_fewest_gpus_free_on() -> None:
    nodes = [node(1), node(2), node(3)]
    busy = [running(100, 9, {2: range(5)}), running(101, 9, {3: range(6)})]

    decisions = decide(nodes, busy, [pending(1, gpus=2), pending(2, gpus=3)])

    assert placed(decisions) == {1: {3: (6, 7)}, 2: {2: (5, 6, 7)}}


def test_ties_go_to_the_first_node_in_natural_name_order() -> None:
    nodes = [node(1, name="node-10"), node(2, name="node-2"), node(3, name="node-1")]

    decisions = decide(nodes, pending=[pending(1, gpus=8), pending(2, gpus=8)])

    assert placed(decisions) == {1: {3: tuple(range(8))}, 2: {2: tuple(range(8))}}


def test_gpus_are_taken_inside_the_nvlink_group_that_fits_most_tightly() -> None:
    nodes = [node(1, groups=[range(4), range(4, 8)])]
    busy = [running(100, 9, {1: (0, 1, 4)})]

    decisions = decide(nodes, busy, [pending(1, gpus=2), pending(2, gpus=3)])

    assert placed(decisions) == {1: {1: (2, 3)}, 2: {1: (5, 6, 7)}}


def test_a_node_where_the_job_fits_one_nvlink_group_wins_over_name_order() -> None:
    groups = [range(4), range(4, 8)]
    nodes = [node(1, groups=groups), node(2, groups=groups)]
    busy = [running(100, 9, {1: (2, 3, 6, 7)}), running(101, 9, {2: (4, 5, 6, 7)})]

    decisions = decide(nodes, busy, [pending(1, gpus=4)])

    assert placed(decisions) == {1: {2: (0, 1, 2, 3)}}


def test_without_topology_the_lowest_free_indices_are_used() -> None:
    busy = [running(100, 9, {1: (0, 2, 4, 7)})]

    decisions = decide([node(1)], busy, [pending(1, gpus=2)])

    assert placed(decisions) == {1: {1: (1, 3)}}


def test_a_gang_gets_every_node_or_none() -> None:
    nodes = [node(1), node(2), node(3)]
    busy = [running(100, 9, {3: range(4)})]

    decisions = decide(nodes, busy, [pending(1, nodes=3, gpus=8), pending(2, nodes=3, gpus=8)])

    assert placed(decisions) == {}
    assert why(decisions, 1).reserved
    assert why(decisions, 2).reason == "waiting for 3 nodes with 8 free GPUs each (2 available)"


def test_a_gang_takes_nodes_it_fills_exactly_before_larger_ones() -> None:
    nodes = [node(1), node(2), node(3), node(4)]
    busy = [running(100, 9, {2: range(4), 3: range(4)}), running(101, 9, {4: range(2)})]

    decisions = decide(nodes, busy, [pending(1, nodes=2, gpus=4), pending(2, nodes=2, gpus=5)])

    assert placed(decisions) == {
        1: {2: (4, 5, 6, 7), 3: (4, 5, 6, 7)},
        2: {1: (0, 1, 2, 3, 4), 4: (2, 3, 4, 5, 6)},
    }


def test_ranks_follow_node_name_order() -> None:
    nodes = [node(1, name="b"), node(2, name="a")]

    decisions = decide(nodes, pending=[pending(1, nodes=2, gpus=8)])

    assert [node_id for node_id, _ in decisions.placements[0].slots] == [2, 1]


def test_a_job_never_lands_on_a_node_it_avoids() -> None:
    decisions = decide([node(1), node(2)], pending=[pending(1, gpus=8, avoid=[1])])

    assert placed(decisions) == {1: {2: tuple(range(8))}}


def test_a_job_that_fits_only_on_avoided_nodes_says_so() -> None:
    decisions = decide([node(1), node(2, gpus=4)], pending=[pending(1, gpus=8, avoid=[1])])

    assert why(decisions, 1).reason == (
        "no node in this pool has 8 GPUs outside the nodes this job avoids"
    )


def test_cordoned_nodes_take_nothing_new_and_keep_their_jobs() -> None:
    nodes = [node(1, accepting=False), node(2)]
    busy = [running(100, 9, {1: range(4)}), running(101, 9, {2: range(4)})]

    decisions = decide(nodes, busy, [pending(1, gpus=4), pending(2, gpus=2)])

    assert placed(decisions) == {1: {2: (4, 5, 6, 7)}}
    assert why(decisions, 2).reason == "reserved: starts when 2 GPUs are free on node-2"
    assert decisions.preemptions == ()


def test_a_job_that_fits_only_cordoned_nodes_waits_for_them() -> None:
    nodes = [node(1, accepting=False), node(2, gpus=4)]

    decisions = decide(nodes, pending=[pending(1, gpus=8)])

    assert placed(decisions) == {}
    assert "cordoned or draining" in why(decisions, 1).reason


def test_gpus_out_of_service_are_never_used_nor_counted_when_a_job_holds_them() -> None:
    nodes = [node(1, out=[7])]
    busy = [running(100, 9, {1: (6, 7)})]

    decisions = decide(nodes, busy, [pending(1, gpus=6), pending(2, gpus=1)])

    assert placed(decisions) == {1: {1: (0, 1, 2, 3, 4, 5)}}
    assert why(decisions, 2).reserved_slots == ((1, (6,)),)


def test_a_job_larger_than_any_node_is_told_it_can_never_fit() -> None:
    decisions = decide(
        [node(1), node(2)],
        pending=[pending(1, gpus=16), pending(2, nodes=3, gpus=8), pending(3, gpus=1, pool=7)],
    )

    assert why(decisions, 1).reason == "no node in this pool has 16 GPUs"
    assert why(decisions, 2).reason == "this pool has only 2 node(s) with 8 GPUs; the job needs 3"
    assert why(decisions, 3).reason == "no node in this pool has 1 GPUs"
    assert not any(r.reserved for r in decisions.pending)


def test_pools_are_scheduled_independently() -> None:
    nodes = [node(1, pool=1), node(2, pool=2)]
    busy = [running(100, 9, {1: range(8)}, pool=1)]

    decisions = decide(nodes, busy, [pending(1, gpus=8, pool=1), pending(2, gpus=8, pool=2)])

    assert placed(decisions) == {2: {2: tuple(range(8))}}
    assert why(decisions, 1).position == 1
