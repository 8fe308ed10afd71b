"""Reads, always starting from what the requesting user may see.

An object in a workspace the user does not belong to is reported as not found,
never as forbidden, so its existence is not revealed.
"""

from collections.abc import Iterable

from django.db.models import Count, OuterRef, QuerySet, Subquery

from apps.accounts.models import ApiToken, Membership, Role, User, Workspace
from apps.system.errors import ApplicationError, NotFoundError, PermissionDeniedError

__all__ = [
    "User",
    "Workspace",
    "member_get",
    "member_list",
    "membership_role",
    "token_get",
    "token_list",
    "user_get",
    "user_get_by_username",
    "user_list",
    "workspace_get",
    "workspace_ids_administered",
    "workspace_ids_member",
    "workspace_list",
]


def workspace_list(*, user: User) -> QuerySet[Workspace]:
    """The workspaces ``user`` may see (all of them for a platform admin), with their
    member count and ``user``'s own role (``my_role``, None where not a member)."""
    own_role = Membership.objects.filter(workspace=OuterRef("pk"), user=user).values("role")[:1]
    workspaces = Workspace.objects.annotate(
        member_count=Count("memberships", distinct=True), my_role=Subquery(own_role)
    ).order_by("name")
    if user.is_platform_admin:
        return workspaces
    return workspaces.filter(my_role__isnull=False)


# Roles that work in a workspace (submit jobs, make datasets); viewers only read.
ACTING_ROLES = (Role.ADMIN, Role.MEMBER)


def workspaces_acting(*, user: User, workspaces: Iterable[Workspace]) -> list[Workspace]:
    """Those of ``workspaces`` (read with ``workspace_list``, so with ``my_role``) where
    ``user`` works: as an admin or member, or anywhere as a platform admin."""
    return [
        w
        for w in workspaces
        if user.is_platform_admin or w.my_role in ACTING_ROLES  # type: ignore[attr-defined]
    ]


def workspace_get(*, user: User, workspace_id: int) -> Workspace:
    """One workspace ``user`` may see, else NotFoundError."""
    try:
        return workspace_list(user=user).get(pk=workspace_id)
    except Workspace.DoesNotExist:
        raise NotFoundError("Workspace not found.", field="workspace_id") from None


def workspace_ids_administered(*, user: User) -> QuerySet[Membership, int]:
    """Ids of the workspaces where ``user`` is a workspace admin.

    Lazy: used inside another filter it becomes a subquery, not a round trip.
    """
    return Membership.objects.filter(user=user, role=Role.ADMIN).values_list(
        "workspace_id", flat=True
    )


def workspace_ids_member(*, user: User) -> QuerySet[Membership, int]:
    """Ids of the workspaces ``user`` belongs to, in any role.

    Lazy: used inside another filter it becomes a subquery, not a round trip.
    """
    return Membership.objects.filter(user=user).values_list("workspace_id", flat=True)


def _visible(memberships: QuerySet[Membership], user: User) -> QuerySet[Membership]:
    """``memberships`` restricted, in the same query, to workspaces ``user`` may see."""
    if user.is_platform_admin:
        return memberships
    return memberships.filter(workspace_id__in=workspace_ids_member(user=user))


def membership_role(*, user: User, workspace: Workspace) -> Role | None:
    """The role ``user`` acts with in ``workspace``; platform admins act as workspace admins."""
    if user.is_platform_admin:
        return Role.ADMIN
    role = (
        Membership.objects.filter(user=user, workspace=workspace)
        .values_list("role", flat=True)
        .first()
    )
    return Role(role) if role else None


def member_list(*, user: User, workspace: Workspace) -> QuerySet[Membership]:
    """The members of ``workspace``; none when ``user`` may not see it."""
    members = Membership.objects.filter(workspace=workspace).select_related("user")
    return _visible(members, user)


def member_get(*, user: User, workspace: Workspace, user_id: int) -> Membership:
    """One membership of a visible workspace, else NotFoundError."""
    try:
        return member_list(user=user, workspace=workspace).get(user_id=user_id)
    except Membership.DoesNotExist:
        raise NotFoundError("Member not found.", field="user_id") from None


def token_list(*, user: User) -> QuerySet[ApiToken]:
    """``user``'s own API tokens, revoked ones included."""
    return ApiToken.objects.filter(user=user)


def token_get(*, user: User, token_id: int) -> ApiToken:
    """One of ``user``'s tokens, else NotFoundError."""
    try:
        return token_list(user=user).get(pk=token_id)
    except ApiToken.DoesNotExist:
        raise NotFoundError("Token not found.", field="token_id") from None


def _require_platform_admin(user: User) -> None:
    if not user.is_platform_admin:
        raise PermissionDeniedError("Only a platform admin can manage users.")


def user_list(*, actor: User) -> QuerySet[User]:
    """Every user, for platform admins."""
    _require_platform_admin(actor)
    return User.objects.annotate(workspace_count=Count("memberships")).order_by("username")


def user_get(*, actor: User, user_id: int) -> User:
    """One user, for platform admins."""
    _require_platform_admin(actor)
    try:
        return User.objects.get(pk=user_id)
    except User.DoesNotExist:
        raise NotFoundError("User not found.", field="user_id") from None


def user_get_by_username(*, username: str) -> User:
    """An active user by name, to add as a member; a 400 naming ``username`` if there is none."""
    try:
        return User.objects.get(username__iexact=username.strip(), is_active=True)
    except User.DoesNotExist:
        raise ApplicationError(f"No active user named {username!r}.", field="username") from None
