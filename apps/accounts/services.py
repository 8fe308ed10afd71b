"""Writes: users, workspaces, memberships and tokens. Atomic, permission-checked, audited."""

import secrets
from datetime import timedelta

from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import ApiToken, Membership, Role, User, Workspace
from apps.accounts.ratelimit import login_attempt_check, login_attempts_reset
from apps.accounts.selectors import membership_role, user_get_by_username
from apps.accounts.tokens import token_matches, token_mint, token_prefix
from apps.audit.services import audit_record
from apps.system.errors import (
    ApplicationError,
    ConflictError,
    PermissionDeniedError,
)
from apps.system.validation import text_required

TOKEN_LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_TOKEN_DAYS = 3650


def platform_admin_require(actor: User, what: str) -> None:
    """Refuse (403) anyone but a platform admin; ``what`` completes "Only a platform admin can"."""
    if not actor.is_platform_admin:
        raise PermissionDeniedError(f"Only a platform admin can {what}.")


def _require_workspace_admin(actor: User, workspace: Workspace) -> None:
    if membership_role(user=actor, workspace=workspace) != Role.ADMIN:
        raise PermissionDeniedError("Only a workspace admin can change this workspace.")


def _password_validate(password: str, user: User | None = None, field: str = "password") -> None:
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise ApplicationError(" ".join(exc.messages), field=field) from None


# Users -------------------------------------------------------------------------------------


@transaction.atomic
def first_admin_ensure(*, username: str, password: str | None) -> tuple[User, str | None]:
    """Make the first platform admin unless one exists.

    Returns the admin and, when this call created it with a generated password,
    that password (to be shown once).
    """
    existing = User.objects.filter(is_superuser=True).order_by("pk").first()
    if existing is not None:
        return existing, None
    username = text_required(username, field="username", max_length=150)
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(18)
    admin = User.objects.create_superuser(username=username, password=password, email="")
    audit_record(actor=None, action="user.create", target=admin, changes={"is_admin": True})
    return admin, generated


@transaction.atomic
def user_create(
    *, actor: User, username: str, password: str, email: str = "", is_admin: bool = False
) -> User:
    """A platform admin adds a user who signs in with ``password``."""
    platform_admin_require(actor, "add users")
    username = text_required(username, field="username", max_length=150)
    if User.objects.filter(username__iexact=username).exists():
        raise ConflictError(f"A user named {username!r} already exists.", field="username")
    candidate = User(username=username, email=email.strip())
    _password_validate(password, candidate)
    user = User.objects.create_user(
        username=username,
        password=password,
        email=email.strip(),
        is_superuser=is_admin,
        is_staff=is_admin,
    )
    audit_record(actor=actor, action="user.create", target=user, changes={"is_admin": is_admin})
    return user


@transaction.atomic
def user_update(
    *, actor: User, user: User, is_active: bool | None = None, is_admin: bool | None = None
) -> User:
    """A platform admin enables, disables, promotes or demotes a user."""
    platform_admin_require(actor, "change users")
    changes: dict[str, object] = {}
    if is_active is not None and is_active != user.is_active:
        if user.pk == actor.pk and not is_active:
            raise ApplicationError("You cannot disable your own account.", field="is_active")
        user.is_active = is_active
        changes["is_active"] = is_active
    if is_admin is not None and is_admin != user.is_superuser:
        if user.pk == actor.pk and not is_admin:
            raise ApplicationError("You cannot remove your own admin rights.", field="is_admin")
        user.is_superuser = user.is_staff = is_admin
        changes["is_admin"] = is_admin
    if changes:
        user.save(update_fields=["is_active", "is_superuser", "is_staff"])
        audit_record(actor=actor, action="user.update", target=user, changes=changes)
    return user


@transaction.atomic
def user_password_set(*, actor: User, user: User, password: str) -> User:
    """A platform admin sets another user's password."""
    platform_admin_require(actor, "set passwords")
    _password_validate(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(actor=actor, action="user.password_set", target=user)
    return user


@transaction.atomic
def password_change(*, actor: User, old_password: str, new_password: str) -> User:
    """A user changes their own password, proving they know the old one."""
    if not actor.check_password(old_password):
        raise ApplicationError("The current password is wrong.", field="old_password")
    _password_validate(new_password, actor, field="new_password")
    actor.set_password(new_password)
    actor.save(update_fields=["password"])
    audit_record(actor=actor, action="user.password_change", target=actor)
    return actor


def credentials_check(*, username: str, password: str, ip: str | None) -> User:
    """The active user these credentials belong to, rate limited per address and name."""
    username = (username or "").strip()
    if not username:
        raise ApplicationError("Username is required.", field="username")
    if not password:
        raise ApplicationError("Password is required.", field="password")
    login_attempt_check(ip=ip, username=username)
    user = authenticate(username=username, password=password)
    if user is None or not isinstance(user, User):
        raise ApplicationError("Wrong username or password.", field="password")
    login_attempts_reset(username=username)
    return user


# Workspaces and members --------------------------------------------------------------------


def _workspace_name_free(name: str, exclude_pk: int | None = None) -> None:
    clash = Workspace.objects.filter(name__iexact=name)
    if exclude_pk is not None:
        clash = clash.exclude(pk=exclude_pk)
    if clash.exists():
        raise ConflictError(f"A workspace named {name!r} already exists.", field="name")


@transaction.atomic
def workspace_create(*, actor: User, name: str, description: str = "") -> Workspace:
    """A platform admin creates a workspace and becomes its first workspace admin."""
    platform_admin_require(actor, "create workspaces")
    name = text_required(name, field="name", max_length=64)
    _workspace_name_free(name)
    try:
        with transaction.atomic():
            workspace = Workspace.objects.create(
                name=name, description=description.strip(), created_by=actor
            )
    except IntegrityError:
        raise ConflictError(f"A workspace named {name!r} already exists.", field="name") from None
    Membership.objects.create(workspace=workspace, user=actor, role=Role.ADMIN)
    audit_record(
        actor=actor,
        action="workspace.create",
        target=workspace,
        workspace=workspace,
        changes={"name": name},
    )
    return workspace


@transaction.atomic
def workspace_update(
    *, actor: User, workspace: Workspace, name: str | None = None, description: str | None = None
) -> Workspace:
    """A workspace admin renames or redescribes the workspace."""
    _require_workspace_admin(actor, workspace)
    changes: dict[str, object] = {}
    if name is not None:
        name = text_required(name, field="name", max_length=64)
        if name != workspace.name:
            _workspace_name_free(name, exclude_pk=workspace.pk)
            changes["name"] = [workspace.name, name]
            workspace.name = name
    if description is not None and description.strip() != workspace.description:
        workspace.description = description.strip()
        changes["description"] = workspace.description
    if changes:
        workspace.save(update_fields=["name", "description"])
        audit_record(
            actor=actor,
            action="workspace.update",
            target=workspace,
            workspace=workspace,
            changes=changes,
        )
    return workspace


def _admins_left_without(membership: Membership) -> int:
    return (
        Membership.objects.select_for_update()
        .filter(workspace_id=membership.workspace_id, role=Role.ADMIN)
        .exclude(pk=membership.pk)
        .count()
    )


@transaction.atomic
def member_add(*, actor: User, workspace: Workspace, username: str, role: Role | str) -> Membership:
    """A workspace admin adds the active user named ``username`` with ``role``."""
    _require_workspace_admin(actor, workspace)
    role = _role(role)
    user = user_get_by_username(username=username)
    if Membership.objects.filter(workspace=workspace, user=user).exists():
        raise ConflictError(f"{user.username} is already a member.", field="username")
    membership = Membership.objects.create(workspace=workspace, user=user, role=role)
    audit_record(
        actor=actor,
        action="member.add",
        target=membership,
        workspace=workspace,
        changes={"user": user.username, "role": role.value},
    )
    return membership


@transaction.atomic
def member_role_set(*, actor: User, membership: Membership, role: Role | str) -> Membership:
    """A workspace admin changes a member's role; a workspace always keeps an admin."""
    workspace = membership.workspace
    _require_workspace_admin(actor, workspace)
    role = _role(role)
    if role == membership.role:
        return membership
    if membership.role == Role.ADMIN and _admins_left_without(membership) == 0:
        raise ApplicationError(
            "This is the last workspace admin; make another member admin first.", field="role"
        )
    changes = {"user": membership.user.username, "role": [membership.role, role.value]}
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        actor=actor,
        action="member.role_set",
        target=membership,
        workspace=workspace,
        changes=changes,
    )
    return membership


@transaction.atomic
def member_remove(*, actor: User, membership: Membership) -> None:
    """A workspace admin removes a member; the last admin cannot be removed."""
    workspace = membership.workspace
    _require_workspace_admin(actor, workspace)
    if membership.role == Role.ADMIN and _admins_left_without(membership) == 0:
        raise ApplicationError(
            "This is the last workspace admin; make another member admin first.", field="user_id"
        )
    audit_record(
        actor=actor,
        action="member.remove",
        target=membership,
        workspace=workspace,
        changes={"user": membership.user.username, "role": membership.role},
    )
    membership.delete()


def _role(value: Role | str) -> Role:
    try:
        return Role(value)
    except ValueError:
        choices = ", ".join(Role.values)
        raise ApplicationError(f"Role must be one of: {choices}.", field="role") from None


# API tokens --------------------------------------------------------------------------------


@transaction.atomic
def token_create(
    *, actor: User, name: str, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """A user creates a personal token; returns it and its plaintext, shown once."""
    name = text_required(name, field="name", max_length=100)
    expires_at = None
    if expires_in_days is not None:
        if not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
            raise ApplicationError(
                f"Expiry must be between 1 and {MAX_TOKEN_DAYS} days.", field="expires_in_days"
            )
        expires_at = timezone.now() + timedelta(days=expires_in_days)
    minted = token_mint()
    token = ApiToken.objects.create(
        user=actor, name=name, prefix=minted.prefix, digest=minted.digest, expires_at=expires_at
    )
    audit_record(
        actor=actor,
        action="token.create",
        target=token,
        changes={"name": name, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    return token, minted.plaintext


@transaction.atomic
def token_revoke(*, actor: User, token: ApiToken) -> ApiToken:
    """A user revokes one of their tokens; it is refused from then on."""
    if token.user_id != actor.pk:
        raise PermissionDeniedError("You can only revoke your own tokens.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="token.revoke", target=token)
    return token


def token_authenticate(*, plaintext: str, ip: str | None = None) -> User | None:
    """The active user a presented token belongs to, or None when unknown, expired or revoked.

    The last-used time is refreshed at most once a minute, to spare a write per call.
    """
    prefix = token_prefix(plaintext)
    if prefix is None:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not token_matches(plaintext, token.digest):
        return None
    now = timezone.now()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > TOKEN_LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
    return token.user
