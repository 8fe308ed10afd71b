"""GPU and node health, derived from open events and nothing else.

- A GPU is unhealthy while it has an open event of a fatal class (reset, reboot,
  replace), degraded while it has another open warning or critical event, healthy
  otherwise. A GPU that is no longer visible is unhealthy.
- A node is unhealthy while it has an open event of a node-wide class (node reboot:
  XID 79, a GPU fallen off the bus, NVLink down, fewer GPUs visible), whichever GPU
  raised it, or a fatal event of its own; degraded while any of its GPUs is not
  healthy or it has another open warning; healthy otherwise. The GPU that raised a
  node-wide event is itself unhealthy.

Fatal events stay open until an operator marks the GPU or node back in service;
``health_refresh`` is called after every change to events.
"""

from collections import defaultdict

from django.db import transaction

from apps.monitoring.models import Gpu, Health, HealthEvent, Node
from apps.monitoring.signals import node_changed_send

# Rule classes that take a GPU (or, node-wide, the node) out of service.
FATAL_CLASSES = frozenset({"gpu_reset", "node_reboot", "replace"})
# Rule classes that take the whole node out, whichever GPU raised them.
NODE_WIDE_CLASSES = frozenset({"node_reboot"})
# Severities that make a GPU or node at least degraded while open.
DEGRADING_SEVERITIES = frozenset({HealthEvent.Severity.WARNING, HealthEvent.Severity.CRITICAL})


def _health_of(events: list[HealthEvent]) -> Health:
    if any(e.rule_class in FATAL_CLASSES for e in events):
        return Health.UNHEALTHY
    if any(e.severity in DEGRADING_SEVERITIES for e in events):
        return Health.DEGRADED
    return Health.HEALTHY


def health_derive(
    *, gpu_indexes: list[int], missing: set[int], events: list[HealthEvent]
) -> tuple[Health, dict[int, Health]]:
    """The node's health and each GPU's, from the node's open events."""
    by_gpu: dict[int | None, list[HealthEvent]] = defaultdict(list)
    for event in events:
        by_gpu[event.gpu_index].append(event)
    gpus = {
        index: Health.UNHEALTHY if index in missing else _health_of(by_gpu.get(index, []))
        for index in gpu_indexes
    }
    node = _health_of(by_gpu.get(None, []))
    if any(e.rule_class in NODE_WIDE_CLASSES for e in events):
        node = Health.UNHEALTHY
    if node is Health.HEALTHY and any(h is not Health.HEALTHY for h in gpus.values()):
        node = Health.DEGRADED
    return node, gpus


@transaction.atomic
def health_refresh(*, node_id: int) -> tuple[Health, dict[int, Health]]:
    """Recompute and store the health of a node and its GPUs; return what changed to.

    Callers push the change to browsers (``ingest.node_live_update``) after commit.
    """
    node = Node.objects.select_for_update().get(pk=node_id)
    gpus = list(Gpu.objects.filter(node=node))
    events = list(HealthEvent.objects.filter(node=node, resolved_at__isnull=True))
    node_health, gpu_health = health_derive(
        gpu_indexes=[g.index for g in gpus],
        missing={g.index for g in gpus if not g.present},
        events=events,
    )
    changed = [g for g in gpus if g.health != gpu_health[g.index]]
    for gpu in changed:
        gpu.health = gpu_health[gpu.index]
    if changed:
        Gpu.objects.bulk_update(changed, ["health"])
    if node.health != node_health:
        node.health = node_health
        node.save(update_fields=["health"])
        changed_node = True
    else:
        changed_node = False
    if changed or changed_node:
        node_changed_send(node.pk, "health")
    return node_health, gpu_health
