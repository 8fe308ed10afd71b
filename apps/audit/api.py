"""REST endpoint for the audit log."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Field, FilterSchema, Query, Router, Schema
from ninja.pagination import LimitOffsetPagination, paginate

from apps.audit.models import AuditEntry
from apps.audit.selectors import AuditFilter, audit_list

router = Router(tags=["audit"])


class AuditEntryOut(Schema):
    id: int
    at: datetime
    actor: str = Field(..., alias="actor_name")
    action: str
    target_type: str
    target_id: str
    target: str = Field(..., alias="target_repr")
    workspace_id: int | None
    workspace: str = Field(..., alias="workspace_name")
    ip: str | None
    changes: dict


class AuditQuery(FilterSchema):
    actor: str | None = Field(None, max_length=150, description="user name")
    action: str | None = Field(
        None, max_length=64, description="exact action, or a prefix ending in '.'"
    )
    workspace_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


@router.get("", response=list[AuditEntryOut])
@paginate(LimitOffsetPagination)
def audit_entries(request: HttpRequest, filters: Query[AuditQuery]) -> list[AuditEntry]:
    """Audit entries you may read, newest first: platform admins see all, workspace admins
    their workspaces."""
    return audit_list(  # type: ignore[return-value]
        user=request.auth,  # type: ignore[attr-defined]
        filters=AuditFilter(
            actor=filters.actor,
            action=filters.action,
            workspace_id=filters.workspace_id,
            since=filters.since,
            until=filters.until,
        ),
    )
