"""API shapes for accounts, workspaces, members and tokens."""

from datetime import datetime

from ninja import Field, Schema

from apps.accounts.models import Role


class TokenLoginIn(Schema):
    username: str = Field(..., max_length=150)
    password: str = Field(..., max_length=256)
    name: str = Field("API login", max_length=100)
    expires_in_days: int | None = Field(30, ge=1, le=3650)


class TokenIn(Schema):
    name: str = Field(..., max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(..., description="The secret, shown this once only.")


class UserOut(Schema):
    id: int
    username: str
    email: str
    is_admin: bool = Field(..., alias="is_superuser")
    is_active: bool
    date_joined: datetime
    last_login: datetime | None


class UserIn(Schema):
    username: str = Field(..., max_length=150)
    password: str = Field(..., max_length=256)
    email: str = Field("", max_length=254)
    is_admin: bool = False


class UserPatch(Schema):
    is_active: bool | None = None
    is_admin: bool | None = None
    password: str | None = Field(None, max_length=256)


class WorkspaceIn(Schema):
    name: str = Field(..., max_length=64)
    description: str = Field("", max_length=2000)


class WorkspacePatch(Schema):
    name: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=2000)


class WorkspaceOut(Schema):
    id: int
    name: str
    description: str
    created_at: datetime
    member_count: int = 0
    my_role: Role | None = None


class MemberIn(Schema):
    username: str = Field(..., max_length=150)
    role: Role = Role.MEMBER


class MemberPatch(Schema):
    role: Role


class MemberOut(Schema):
    user_id: int
    username: str = Field(..., alias="user.username")
    role: Role
    created_at: datetime


class MeOut(Schema):
    id: int
    username: str
    is_admin: bool
    workspaces: list[WorkspaceOut]
