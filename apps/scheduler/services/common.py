"""What the scheduler's services share: who may act, and checks of numbers and pools."""

from typing import Any

from django.db.models import Count

from apps.accounts.models import Role, User, Workspace
from apps.accounts.selectors import ACTING_ROLES, membership_role
from apps.monitoring.models import Gpu, Node
from apps.monitoring.selectors import node_can_manage
from apps.scheduler.models import Pool
from apps.system.errors import ApplicationError, PermissionDeniedError


def act_check(actor: User, workspace: Workspace, what: str) -> Role:
    """Members and admins act on a workspace's jobs; viewers get PermissionDeniedError."""
    role = membership_role(user=actor, workspace=workspace)
    if role not in ACTING_ROLES:
        raise PermissionDeniedError(f"Viewers cannot {what}.")
    return role


def node_check(actor: User, node: Node) -> None:
    """Only admins who manage the node may change its scheduling."""
    if not node_can_manage(user=actor, node=node):
        raise PermissionDeniedError("Only an admin who manages this node can change it.")


def whole_number(value: Any, name: str, *, low: int, high: int) -> int:
    """``value`` as a whole number within [low, high], else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApplicationError(f"{name} must be a whole number.", field=name)
    if not low <= value <= high:
        raise ApplicationError(f"{name} must be between {low} and {high}.", field=name)
    return value


def seconds_value(value: Any, name: str, *, low: float, high: float) -> float | None:
    """Seconds within [low, high] or None, else an error naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApplicationError(f"{name} must be a number of seconds.", field=name)
    if not low <= value <= high:
        raise ApplicationError(f"{name} must be between {low:g} and {high:g} seconds.", field=name)
    return float(value)


def pool_shape(pool: Pool) -> list[int]:
    """GPU counts of the pool's live nodes, largest first."""
    counts = (
        Gpu.objects.filter(node__schedule__pool=pool, node__revoked_at__isnull=True, present=True)
        .values("node_id")
        .annotate(n=Count("pk"))
        .values_list("n", flat=True)
    )
    return sorted(counts, reverse=True)
