"""The fleet overview: every visible GPU with its latest readings, and the totals."""

import re
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch

from apps.accounts.selectors import User
from apps.monitoring.fleet import fleet_snapshot_sync
from apps.monitoring.models import (
    Gpu,
    Health,
    Node,
)
from apps.monitoring.selectors.nodes import HEALTH_CODES, _visible_nodes


@dataclass
class FleetCell:
    """One GPU of the overview heatmap."""

    index: int
    simulated: bool
    mem_total_mib: int | None
    util: float | None = None
    mem_pct: float | None = None
    temp: float | None = None
    power: float | None = None
    health: str = Health.HEALTHY


@dataclass
class FleetRow:
    """One node of the overview heatmap."""

    node: Node
    cells: list[FleetCell]
    state: str
    health: str
    cpu: float | None = None
    host_mem_pct: float | None = None


@dataclass
class FleetTotals:
    """The fleet's headline figures, as the overview shows them."""

    nodes: int = 0
    ready: int = 0
    suspect: int = 0
    lost: int = 0
    gpus: int = 0
    unhealthy: int = 0
    degraded: int = 0
    util_avg: float | None = None
    mem_used_mib: float = 0.0
    mem_total_mib: float = 0.0
    power_w: float = 0.0


@dataclass
class FleetOverview:
    rows: list[FleetRow] = field(default_factory=list)
    totals: FleetTotals = field(default_factory=FleetTotals)
    max_gpus: int = 0


def _fleet_cells(gpus: list[Gpu], summary: dict[str, Any] | None) -> list[FleetCell]:
    readings = (summary or {}).get("gpus") or []
    cells = []
    for gpu in gpus:
        cell = FleetCell(
            index=gpu.index,
            simulated=gpu.simulated,
            mem_total_mib=gpu.memory_total_mib,
            health=gpu.health,
        )
        if gpu.index < len(readings) and readings[gpu.index] is not None:
            util, mem_pct, temp, power, code = (list(readings[gpu.index]) + [None] * 5)[:5]
            cell.util, cell.mem_pct, cell.temp, cell.power = util, mem_pct, temp, power
            if code is not None:
                cell.health = HEALTH_CODES.get(code, cell.health)
        cells.append(cell)
    return cells


# Nodes whose readings count in the fleet totals; a lost node's last readings are stale.
REPORTING_STATES = frozenset({Node.State.READY, Node.State.SUSPECT})


def _fleet_totals(rows: list[FleetRow]) -> FleetTotals:
    """Node and GPU counts over every row; utilization, memory and power of reporting nodes."""
    totals = FleetTotals(nodes=len(rows))
    utils = []
    for row in rows:
        totals.ready += row.state == Node.State.READY
        totals.suspect += row.state == Node.State.SUSPECT
        totals.lost += row.state == Node.State.LOST
        for cell in row.cells:
            totals.gpus += 1
            totals.unhealthy += cell.health == Health.UNHEALTHY
            totals.degraded += cell.health == Health.DEGRADED
            if row.state not in REPORTING_STATES:
                continue
            if cell.util is not None:
                utils.append(cell.util)
            if cell.mem_total_mib:
                totals.mem_total_mib += cell.mem_total_mib
                if cell.mem_pct is not None:
                    totals.mem_used_mib += cell.mem_total_mib * cell.mem_pct / 100
            if cell.power is not None:
                totals.power_w += cell.power
    totals.util_avg = sum(utils) / len(utils) if utils else None
    return totals


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``gpu-2`` before ``gpu-10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


def fleet_overview(*, user: User) -> FleetOverview:
    """Every live node ``user`` may see with its GPUs' latest readings, and the totals.

    The database gives the nodes and GPUs; the live summaries (Redis) give readings,
    state and health where a node has reported since.
    """
    nodes = list(
        _visible_nodes(user)
        .exclude(state=Node.State.REVOKED)
        .prefetch_related(Prefetch("gpus", queryset=Gpu.objects.order_by("index")))
        .order_by("name", "pk")
    )
    nodes.sort(key=lambda n: natural_key(n.name))
    summaries = {s["id"]: s for s in fleet_snapshot_sync([n.pk for n in nodes])}
    rows = []
    for node in nodes:
        summary = summaries.get(node.pk)
        host = (summary or {}).get("host") or {}
        rows.append(
            FleetRow(
                node=node,
                cells=_fleet_cells(list(node.gpus.all()), summary),
                state=(summary or {}).get("state") or node.state,
                health=(summary or {}).get("health") or node.health,
                cpu=host.get("cpu"),
                host_mem_pct=host.get("mem_pct"),
            )
        )
    return FleetOverview(
        rows=rows,
        totals=_fleet_totals(rows),
        max_gpus=max((len(r.cells) for r in rows), default=0),
    )
