"""Signals other layers listen to; sent after the change is committed.

``node_changed`` (kwargs ``node_id`` and ``what``: ``"state"`` or ``"health"``) fires when a
node's state (ready, suspect, lost, revoked) or the health of the node or one of its GPUs
changed, so that the scheduler can take the node or GPU out, or put it back, at once.
"""

from django.db import transaction
from django.dispatch import Signal

node_changed = Signal()


def node_changed_send(node_id: int, what: str) -> None:
    """Send ``node_changed`` once the surrounding transaction commits."""
    transaction.on_commit(lambda: node_changed.send(sender=None, node_id=node_id, what=what))
