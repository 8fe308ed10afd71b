"""REST endpoints: sign-in tokens, workspaces and members, personal tokens, users."""

from django.db import transaction
from django.http import HttpRequest
from ninja import Router
from ninja.pagination import LimitOffsetPagination, paginate

from apps.accounts import selectors, services
from apps.accounts.models import ApiToken, Membership, User, Workspace
from apps.accounts.schemas import (
    MemberIn,
    MemberOut,
    MemberPatch,
    MeOut,
    TokenCreatedOut,
    TokenIn,
    TokenLoginIn,
    TokenOut,
    UserIn,
    UserOut,
    UserPatch,
    WorkspaceIn,
    WorkspaceOut,
    WorkspacePatch,
)
from apps.system.pages import api_user

auth_router = Router(tags=["auth"])
workspaces_router = Router(tags=["workspaces"])
tokens_router = Router(tags=["tokens"])
users_router = Router(tags=["users"])


def _token_out(token: ApiToken, plaintext: str | None = None) -> dict:
    out = TokenOut.from_orm(token).dict()
    if plaintext is not None:
        out["token"] = plaintext
    return out


@auth_router.post("/token", auth=None, response={201: TokenCreatedOut})
def token_login(request: HttpRequest, payload: TokenLoginIn) -> dict:
    """Exchange a username and password for an API token (rate limited)."""
    user = services.credentials_check(
        username=payload.username,
        password=payload.password,
        ip=request.META.get("REMOTE_ADDR"),
    )
    token, plaintext = services.token_create(
        actor=user, name=payload.name, expires_in_days=payload.expires_in_days
    )
    return _token_out(token, plaintext)


@auth_router.get("/me", response=MeOut)
def me(request: HttpRequest) -> dict:
    """Who the credentials belong to, and their workspaces with their roles."""
    user = api_user(request)
    return {
        "id": user.pk,
        "username": user.username,
        "is_admin": user.is_platform_admin,
        "workspaces": list(selectors.workspace_list(user=user)),
    }


# Workspaces --------------------------------------------------------------------------------


@workspaces_router.get("", response=list[WorkspaceOut])
@paginate(LimitOffsetPagination)
def workspace_list(request: HttpRequest) -> list[Workspace]:
    """The workspaces you can see."""
    return selectors.workspace_list(user=api_user(request))  # type: ignore[return-value]


@workspaces_router.post("", response={201: WorkspaceOut})
def workspace_create(request: HttpRequest, payload: WorkspaceIn) -> Workspace:
    """Create a workspace (platform admins); you become its workspace admin."""
    user = api_user(request)
    workspace = services.workspace_create(
        actor=user, name=payload.name, description=payload.description
    )
    return selectors.workspace_get(user=user, workspace_id=workspace.pk)


@workspaces_router.get("/{int:workspace_id}", response=WorkspaceOut)
def workspace_detail(request: HttpRequest, workspace_id: int) -> Workspace:
    """One workspace."""
    return selectors.workspace_get(user=api_user(request), workspace_id=workspace_id)


@workspaces_router.patch("/{int:workspace_id}", response=WorkspaceOut)
def workspace_update(request: HttpRequest, workspace_id: int, payload: WorkspacePatch) -> Workspace:
    """Rename or redescribe a workspace (workspace admins)."""
    user = api_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    services.workspace_update(
        actor=user, workspace=workspace, name=payload.name, description=payload.description
    )
    return selectors.workspace_get(user=user, workspace_id=workspace_id)


@workspaces_router.get("/{int:workspace_id}/members", response=list[MemberOut])
@paginate(LimitOffsetPagination)
def member_list(request: HttpRequest, workspace_id: int) -> list[Membership]:
    """The members of a workspace and their roles."""
    user = api_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    return selectors.member_list(user=user, workspace=workspace)  # type: ignore[return-value]


@workspaces_router.post("/{int:workspace_id}/members", response={201: MemberOut})
def member_add(request: HttpRequest, workspace_id: int, payload: MemberIn) -> Membership:
    """Add a user to a workspace with a role (workspace admins)."""
    user = api_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    return services.member_add(
        actor=user, workspace=workspace, username=payload.username, role=payload.role
    )


@workspaces_router.patch("/{int:workspace_id}/members/{int:user_id}", response=MemberOut)
def member_update(
    request: HttpRequest, workspace_id: int, user_id: int, payload: MemberPatch
) -> Membership:
    """Change a member's role (workspace admins)."""
    user = api_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    membership = selectors.member_get(user=user, workspace=workspace, user_id=user_id)
    return services.member_role_set(actor=user, membership=membership, role=payload.role)


@workspaces_router.delete("/{int:workspace_id}/members/{int:user_id}", response={204: None})
def member_remove(request: HttpRequest, workspace_id: int, user_id: int) -> None:
    """Remove a member (workspace admins); the last workspace admin stays."""
    user = api_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    membership = selectors.member_get(user=user, workspace=workspace, user_id=user_id)
    services.member_remove(actor=user, membership=membership)


# Personal API tokens -----------------------------------------------------------------------


@tokens_router.get("", response=list[TokenOut])
@paginate(LimitOffsetPagination)
def token_list(request: HttpRequest) -> list[ApiToken]:
    """Your API tokens, newest first (revoked ones included)."""
    return selectors.token_list(user=api_user(request))  # type: ignore[return-value]


@tokens_router.post("", response={201: TokenCreatedOut})
def token_create(request: HttpRequest, payload: TokenIn) -> dict:
    """Create a token; its secret is in this response only."""
    token, plaintext = services.token_create(
        actor=api_user(request), name=payload.name, expires_in_days=payload.expires_in_days
    )
    return _token_out(token, plaintext)


@tokens_router.delete("/{int:token_id}", response={204: None})
def token_revoke(request: HttpRequest, token_id: int) -> None:
    """Revoke one of your tokens; it is refused from then on."""
    user = api_user(request)
    services.token_revoke(actor=user, token=selectors.token_get(user=user, token_id=token_id))


# Users (platform admins) -------------------------------------------------------------------


@users_router.get("", response=list[UserOut])
@paginate(LimitOffsetPagination)
def user_list(request: HttpRequest) -> list[User]:
    """Every user (platform admins)."""
    return selectors.user_list(actor=api_user(request))  # type: ignore[return-value]


@users_router.post("", response={201: UserOut})
def user_create(request: HttpRequest, payload: UserIn) -> User:
    """Add a user (platform admins)."""
    return services.user_create(
        actor=api_user(request),
        username=payload.username,
        password=payload.password,
        email=payload.email,
        is_admin=payload.is_admin,
    )


@users_router.patch("/{int:user_id}", response=UserOut)
def user_update(request: HttpRequest, user_id: int, payload: UserPatch) -> User:
    """Enable, disable, promote, demote a user or set their password (platform admins)."""
    actor = api_user(request)
    user = selectors.user_get(actor=actor, user_id=user_id)
    with transaction.atomic():
        if payload.password is not None:
            services.user_password_set(actor=actor, user=user, password=payload.password)
        return services.user_update(
            actor=actor, user=user, is_active=payload.is_active, is_admin=payload.is_admin
        )
