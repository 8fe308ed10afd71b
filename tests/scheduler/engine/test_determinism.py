"""The same snapshot always gives the same decisions, and the engine stays pure Python."""

import subprocess
import sys
from dataclasses import replace

from apps.scheduler.engine import schedule
from tests.scheduler.engine.factories import (
    HIGH,
    LOW,
    node,
    pending,
    quota,
    running,
    snapshot,
)


def _busy_cluster():
    nodes = [node(i, groups=[range(4), range(4, 8)] if i % 2 else ()) for i in range(1, 7)]
    busy = [
        running(100, 2, {1: range(8)}, priority=LOW, ends_in=600),
        running(101, 3, {2: range(4)}, ends_in=100),
        running(102, 3, {3: range(8), 4: range(8)}, age=50),
        running(103, 2, {5: (0, 1)}, priority=LOW, preemptible=False),
    ]
    jobs = [
        pending(1, workspace=1, gpus=8, priority=HIGH),
        pending(2, workspace=1, nodes=2, gpus=8),
        pending(3, workspace=2, gpus=4, max_duration=60),
        pending(4, workspace=3, gpus=2, order=0.5),
        pending(5, workspace=2, gpus=1),
        pending(6, workspace=3, gpus=16),
        pending(7, workspace=1, gpus=4, avoid=[6]),
        pending(8, workspace=3, gpus=8),
    ]
    return snapshot(nodes, busy, jobs, [quota(1, 16, 24), quota(2, 4, 8, weight=2.0)])


def test_the_same_snapshot_twice_gives_equal_decisions() -> None:
    cluster = _busy_cluster()

    assert schedule(cluster) == schedule(cluster)


def test_the_order_of_the_snapshot_tuples_does_not_matter() -> None:
    cluster = _busy_cluster()
    reversed_cluster = replace(
        cluster,
        nodes=cluster.nodes[::-1],
        running=cluster.running[::-1],
        pending=cluster.pending[::-1],
        quotas=cluster.quotas[::-1],
    )

    first, second = schedule(cluster), schedule(reversed_cluster)

    assert first == second
    assert first.placements
    assert first.preemptions
    assert any(r.reserved for r in first.pending)


def test_the_engine_imports_no_django() -> None:
    code = (
        "import sys, apps.scheduler.engine\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery', 'channels')"
        " or (m.startswith('apps.') and not m.startswith('apps.scheduler.engine')"
        " and m != 'apps.scheduler'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == ""
