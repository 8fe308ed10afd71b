"""The scheduler reacts at once to node changes reported by monitoring."""

import logging
from typing import Any

from django.dispatch import receiver
from django.utils import timezone

from apps.monitoring.models import Node
from apps.monitoring.signals import node_changed
from apps.scheduler.passes import node_failure_record, pass_request

logger = logging.getLogger(__name__)


@receiver(node_changed)
def _node_changed(sender: Any, node_id: int, what: str, **kwargs: Any) -> None:
    """A node was lost, came back or changed health: count failures, then schedule."""
    if what == "state":
        state = Node.objects.filter(pk=node_id).values_list("state", flat=True).first()
        if state == Node.State.LOST and node_failure_record(node_id, timezone.now()):
            logger.warning("node %s lost too often: held out of its pool", node_id)
    pass_request()
