"""Nodes, GPUs and events for monitoring tests, written straight to the database."""

from typing import Any

from django.utils import timezone

from apps.accounts.models import Workspace
from apps.monitoring.models import Gpu, HealthEvent, Node


def node_create(
    name: str = "node-1",
    *,
    workspace: Workspace | None = None,
    gpus: int = 8,
    simulated: bool = True,
    state: str = Node.State.READY,
) -> Node:
    """A node with ``gpus`` GPUs, connected now."""
    now = timezone.now()
    node = Node.objects.create(
        name=name,
        workspace=workspace,
        state=state,
        state_changed_at=now,
        simulated=simulated,
        gpu_backend="simulated" if simulated else "nvml",
        expected_gpus=gpus,
        connected_at=now,
        last_seen_at=now,
        facts={"hostname": name, "cpu_count": 8, "os": "Linux"},
    )
    Gpu.objects.bulk_create(
        Gpu(
            node=node,
            index=i,
            uuid=f"GPU-{node.pk:04d}-{i:04d}",
            name="H100 80GB (simulated)" if simulated else "NVIDIA H100 80GB HBM3",
            memory_total_mib=81559,
            pci_bus_id=f"00000000:{i + 1:02X}:00.0",
            simulated=simulated,
        )
        for i in range(gpus)
    )
    return node


def event_create(node: Node, **fields: Any) -> HealthEvent:
    """An open event of ``node``: a reset-class XID 48 unless ``fields`` say otherwise."""
    now = timezone.now()
    values = {
        "source": "xid",
        "code": "48",
        "rule_class": "gpu_reset",
        "severity": HealthEvent.Severity.CRITICAL,
        "reason": "XID 48: double-bit ECC error",
        "first_at": now,
        "last_at": now,
        **fields,
    }
    return HealthEvent.objects.create(node=node, **values)
