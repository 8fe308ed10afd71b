"""Users, workspaces, members and tokens: given / when / then on the services."""

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import ApiToken, Membership, Role, User, Workspace
from apps.audit.models import AuditEntry
from apps.system.errors import (
    ApplicationError,
    ConflictError,
    PermissionDeniedError,
    RateLimitedError,
)
from tests.conftest import PASSWORD, Cast

pytestmark = pytest.mark.django_db

STRONG = "a much longer passphrase 9"


# Workspaces --------------------------------------------------------------------------------


def test_platform_admin_creates_a_workspace_and_becomes_its_admin(platform_admin: User) -> None:
    workspace = services.workspace_create(actor=platform_admin, name="  Vision ", description="cv")

    assert workspace.name == "Vision"
    assert Membership.objects.get(workspace=workspace).user == platform_admin
    assert Membership.objects.get(workspace=workspace).role == Role.ADMIN
    entry = AuditEntry.objects.get(action="workspace.create")
    assert (entry.actor, entry.workspace) == (platform_admin, workspace)


@pytest.mark.parametrize("role", ["ws_admin", "member", "viewer"])
def test_only_a_platform_admin_creates_workspaces(cast: Cast, role: str) -> None:
    before = Workspace.objects.count()

    with pytest.raises(PermissionDeniedError):
        services.workspace_create(actor=getattr(cast, role), name="Robotics")

    assert Workspace.objects.count() == before


def test_duplicate_workspace_name_is_a_conflict_whatever_the_case(platform_admin: User) -> None:
    services.workspace_create(actor=platform_admin, name="Vision")
    counts = Workspace.objects.count(), Membership.objects.count(), AuditEntry.objects.count()

    with pytest.raises(ConflictError) as caught:
        services.workspace_create(actor=platform_admin, name="VISION")

    assert caught.value.status == 409
    assert caught.value.field == "name"
    after = Workspace.objects.count(), Membership.objects.count(), AuditEntry.objects.count()
    assert after == counts


def test_workspace_create_writes_nothing_when_a_later_step_fails(
    platform_admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_audit(**_: object) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(services, "audit_record", broken_audit)

    with pytest.raises(RuntimeError):
        services.workspace_create(actor=platform_admin, name="Half")

    assert not Workspace.objects.filter(name="Half").exists()
    assert not Membership.objects.exists()


@pytest.mark.parametrize("name", ["", "   ", "x" * 65])
def test_workspace_name_must_be_present_and_short(platform_admin: User, name: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.workspace_create(actor=platform_admin, name=name)

    assert caught.value.field == "name"
    assert not Workspace.objects.exists()


def test_renaming_onto_another_workspace_name_is_a_conflict(cast: Cast) -> None:
    with pytest.raises(ConflictError) as caught:
        services.workspace_update(actor=cast.ws_admin, workspace=cast.workspace, name="speech")

    assert caught.value.field == "name"
    cast.workspace.refresh_from_db()
    assert cast.workspace.name == "Vision"


def test_a_workspace_admin_may_change_the_case_of_its_own_name(cast: Cast) -> None:
    services.workspace_update(actor=cast.ws_admin, workspace=cast.workspace, name="VISION")

    cast.workspace.refresh_from_db()
    assert cast.workspace.name == "VISION"


@pytest.mark.parametrize("role", ["member", "viewer", "outsider"])
def test_only_workspace_admins_update_a_workspace(cast: Cast, role: str) -> None:
    with pytest.raises(PermissionDeniedError):
        services.workspace_update(
            actor=getattr(cast, role), workspace=cast.workspace, description="hijacked"
        )

    cast.workspace.refresh_from_db()
    assert cast.workspace.description == ""


# Members -----------------------------------------------------------------------------------


def test_workspace_admin_adds_changes_and_removes_a_member(
    cast: Cast, make_user: Callable[..., User]
) -> None:
    dave = make_user("dave")

    membership = services.member_add(
        actor=cast.ws_admin, workspace=cast.workspace, username=dave.username, role="viewer"
    )
    services.member_role_set(actor=cast.ws_admin, membership=membership, role=Role.MEMBER)
    assert Membership.objects.get(user=dave).role == Role.MEMBER
    services.member_remove(actor=cast.ws_admin, membership=membership)

    assert not Membership.objects.filter(user=dave).exists()
    actions = list(
        AuditEntry.objects.filter(workspace=cast.workspace).values_list("action", flat=True)
    )
    assert sorted(actions) == ["member.add", "member.remove", "member.role_set"]


def test_platform_admin_acts_as_workspace_admin_without_membership(
    cast: Cast, make_user: Callable[..., User]
) -> None:
    membership = services.member_add(
        actor=cast.platform_admin,
        workspace=cast.workspace,
        username=make_user().username,
        role="member",
    )

    assert membership.role == Role.MEMBER


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_manage_members(
    cast: Cast, make_user: Callable[..., User], role: str
) -> None:
    actor = getattr(cast, role)
    target = Membership.objects.get(workspace=cast.workspace, user=cast.member)
    before = sorted(cast.workspace.memberships.values_list("user_id", "role"))

    with pytest.raises(PermissionDeniedError):
        services.member_add(
            actor=actor, workspace=cast.workspace, username=make_user().username, role="admin"
        )
    with pytest.raises(PermissionDeniedError):
        services.member_role_set(actor=actor, membership=target, role="admin")
    with pytest.raises(PermissionDeniedError):
        services.member_remove(actor=actor, membership=target)

    assert sorted(cast.workspace.memberships.values_list("user_id", "role")) == before


def test_the_last_admin_cannot_be_demoted_or_removed(cast: Cast) -> None:
    last_admin = Membership.objects.get(workspace=cast.workspace, user=cast.ws_admin)

    with pytest.raises(ApplicationError) as demoted:
        services.member_role_set(actor=cast.ws_admin, membership=last_admin, role="member")
    with pytest.raises(ApplicationError) as removed:
        services.member_remove(actor=cast.ws_admin, membership=last_admin)

    assert demoted.value.status == removed.value.status == 400
    assert demoted.value.field == "role"
    last_admin.refresh_from_db()
    assert last_admin.role == Role.ADMIN


def test_the_last_admin_may_step_down_once_there_is_another(cast: Cast) -> None:
    bob = Membership.objects.get(workspace=cast.workspace, user=cast.member)
    services.member_role_set(actor=cast.ws_admin, membership=bob, role="admin")
    alice = Membership.objects.get(workspace=cast.workspace, user=cast.ws_admin)

    services.member_remove(actor=cast.ws_admin, membership=alice)

    assert list(cast.workspace.memberships.filter(role=Role.ADMIN)) == [bob]


def test_adding_someone_twice_is_a_conflict(cast: Cast) -> None:
    with pytest.raises(ConflictError) as caught:
        services.member_add(
            actor=cast.ws_admin,
            workspace=cast.workspace,
            username=cast.member.username,
            role="admin",
        )

    assert caught.value.field == "username"
    assert Membership.objects.get(workspace=cast.workspace, user=cast.member).role == Role.MEMBER


def test_an_unknown_role_names_the_role_field(cast: Cast, make_user: Callable[..., User]) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.member_add(
            actor=cast.ws_admin,
            workspace=cast.workspace,
            username=make_user().username,
            role="owner",
        )

    assert caught.value.field == "role"


# Tokens ------------------------------------------------------------------------------------


def test_a_token_is_stored_hashed(member: User) -> None:
    token, plaintext = services.token_create(actor=member, name="ci")

    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert all(plaintext not in str(value) for value in stored.values())
    secret = plaintext.split("_", 2)[2]
    assert secret not in str(stored)
    for entry in AuditEntry.objects.all():
        assert plaintext not in str(entry.changes)
    assert services.token_authenticate(plaintext=plaintext) == member


@pytest.mark.parametrize(
    "presented",
    ["", "garbage", "pdm_", "pdm_000000000000_secret", "Bearer pdm_x_y"],
)
def test_an_unknown_or_malformed_token_is_refused(member: User, presented: str) -> None:
    services.token_create(actor=member, name="ci")

    assert services.token_authenticate(plaintext=presented) is None


def test_a_token_with_a_known_prefix_but_wrong_secret_is_refused(member: User) -> None:
    _, plaintext = services.token_create(actor=member, name="ci")
    forged = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")

    assert services.token_authenticate(plaintext=forged) is None


def test_a_revoked_token_is_refused(member: User) -> None:
    token, plaintext = services.token_create(actor=member, name="ci")

    services.token_revoke(actor=member, token=token)

    assert services.token_authenticate(plaintext=plaintext) is None
    assert AuditEntry.objects.filter(action="token.revoke", actor=member).count() == 1


def test_only_the_owner_revokes_a_token(member: User, viewer: User) -> None:
    token, plaintext = services.token_create(actor=member, name="ci")

    with pytest.raises(PermissionDeniedError):
        services.token_revoke(actor=viewer, token=token)

    assert services.token_authenticate(plaintext=plaintext) == member


def test_an_expired_token_is_refused(member: User) -> None:
    token, plaintext = services.token_create(actor=member, name="ci", expires_in_days=1)
    assert services.token_authenticate(plaintext=plaintext) == member

    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert services.token_authenticate(plaintext=plaintext) is None


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_token_expiry_must_be_in_range(member: User, days: int) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.token_create(actor=member, name="ci", expires_in_days=days)

    assert caught.value.field == "expires_in_days"
    assert not ApiToken.objects.exists()


def test_last_used_is_recorded_at_most_once_a_minute(member: User) -> None:
    token, plaintext = services.token_create(actor=member, name="ci")

    services.token_authenticate(plaintext=plaintext, ip="192.0.2.1")
    token.refresh_from_db()
    first_use = token.last_used_at
    assert first_use is not None
    assert token.last_used_ip == "192.0.2.1"

    with CaptureQueriesContext(connection) as queries:
        services.token_authenticate(plaintext=plaintext, ip="192.0.2.2")
    assert not [q for q in queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    token.refresh_from_db()
    assert (token.last_used_at, token.last_used_ip) == (first_use, "192.0.2.1")

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    services.token_authenticate(plaintext=plaintext, ip="192.0.2.3")
    token.refresh_from_db()
    assert token.last_used_at > first_use
    assert token.last_used_ip == "192.0.2.3"


def test_a_disabled_users_tokens_stop_working(platform_admin: User, member: User) -> None:
    _, plaintext = services.token_create(actor=member, name="ci")

    services.user_update(actor=platform_admin, user=member, is_active=False)

    assert services.token_authenticate(plaintext=plaintext) is None


def test_a_re_enabled_user_gets_their_tokens_back(platform_admin: User, member: User) -> None:
    _, plaintext = services.token_create(actor=member, name="ci")
    services.user_update(actor=platform_admin, user=member, is_active=False)

    services.user_update(actor=platform_admin, user=member, is_active=True)

    assert services.token_authenticate(plaintext=plaintext) == member


def test_an_inactive_users_token_is_refused_even_if_not_revoked(member: User) -> None:
    _, plaintext = services.token_create(actor=member, name="ci")

    User.objects.filter(pk=member.pk).update(is_active=False)

    assert services.token_authenticate(plaintext=plaintext) is None


# Users -------------------------------------------------------------------------------------


def test_platform_admin_adds_a_user_who_can_sign_in(platform_admin: User) -> None:
    user = services.user_create(actor=platform_admin, username="dave", password=STRONG)

    assert services.credentials_check(username="dave", password=STRONG, ip=None) == user
    assert not user.is_platform_admin
    assert AuditEntry.objects.get(action="user.create").actor == platform_admin


@pytest.mark.parametrize("role", ["ws_admin", "member", "viewer"])
def test_only_platform_admins_manage_users(cast: Cast, role: str) -> None:
    actor = getattr(cast, role)

    with pytest.raises(PermissionDeniedError):
        services.user_create(actor=actor, username="dave", password=STRONG)
    with pytest.raises(PermissionDeniedError):
        services.user_update(actor=actor, user=cast.viewer, is_admin=True)
    with pytest.raises(PermissionDeniedError):
        services.user_password_set(actor=actor, user=cast.viewer, password=STRONG)

    assert not User.objects.filter(username="dave").exists()
    cast.viewer.refresh_from_db()
    assert not cast.viewer.is_superuser
    assert cast.viewer.check_password(PASSWORD)


@pytest.mark.parametrize("password", ["short", "password123", "12345678901", "dave-dave"])
def test_a_weak_password_is_refused_naming_the_field(platform_admin: User, password: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.user_create(actor=platform_admin, username="dave-dave", password=password)

    assert caught.value.field == "password"
    assert caught.value.message
    assert not User.objects.filter(username="dave-dave").exists()


def test_a_username_is_taken_whatever_the_case(platform_admin: User, member: User) -> None:
    with pytest.raises(ConflictError) as caught:
        services.user_create(actor=platform_admin, username="BOB", password=STRONG)

    assert caught.value.field == "username"


def test_a_platform_admin_cannot_disable_or_demote_themselves(platform_admin: User) -> None:
    with pytest.raises(ApplicationError) as disabled:
        services.user_update(actor=platform_admin, user=platform_admin, is_active=False)
    with pytest.raises(ApplicationError) as demoted:
        services.user_update(actor=platform_admin, user=platform_admin, is_admin=False)

    assert (disabled.value.field, demoted.value.field) == ("is_active", "is_admin")
    platform_admin.refresh_from_db()
    assert platform_admin.is_platform_admin


def test_promoting_and_demoting_another_user(platform_admin: User, member: User) -> None:
    services.user_update(actor=platform_admin, user=member, is_admin=True)
    member.refresh_from_db()
    assert member.is_platform_admin

    services.user_update(actor=platform_admin, user=member, is_admin=False)
    member.refresh_from_db()
    assert not member.is_platform_admin
    assert AuditEntry.objects.filter(action="user.update", actor=platform_admin).count() == 2


def test_a_platform_admin_sets_another_users_password(platform_admin: User, member: User) -> None:
    services.user_password_set(actor=platform_admin, user=member, password=STRONG)

    member.refresh_from_db()
    assert member.check_password(STRONG)


def test_a_disabled_user_cannot_sign_in(platform_admin: User, member: User) -> None:
    services.user_update(actor=platform_admin, user=member, is_active=False)

    with pytest.raises(ApplicationError) as caught:
        services.credentials_check(username="bob", password=PASSWORD, ip=None)

    assert caught.value.field == "password"


# Passwords ---------------------------------------------------------------------------------


def test_password_change_needs_the_old_password(member: User) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.password_change(actor=member, old_password="wrong", new_password=STRONG)

    assert caught.value.field == "old_password"
    member.refresh_from_db()
    assert member.check_password(PASSWORD)


def test_password_change_refuses_a_weak_new_password(member: User) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.password_change(actor=member, old_password=PASSWORD, new_password="123")

    assert caught.value.field == "new_password"
    member.refresh_from_db()
    assert member.check_password(PASSWORD)


def test_password_change_is_audited(member: User) -> None:
    services.password_change(actor=member, old_password=PASSWORD, new_password=STRONG)

    member.refresh_from_db()
    assert member.check_password(STRONG)
    assert AuditEntry.objects.get(action="user.password_change").actor == member


# First admin -------------------------------------------------------------------------------


def test_first_admin_is_created_once_with_a_generated_password(db: None) -> None:
    admin, generated = services.first_admin_ensure(username="admin", password=None)

    assert admin.is_platform_admin
    assert generated
    assert admin.check_password(generated)
    assert AuditEntry.objects.get(action="user.create").actor_name == "system"

    again, second = services.first_admin_ensure(username="other", password=None)

    assert (again, second) == (admin, None)
    assert User.objects.count() == 1


def test_first_admin_takes_a_given_password(db: None) -> None:
    admin, generated = services.first_admin_ensure(username="admin", password=STRONG)

    assert generated is None
    assert admin.check_password(STRONG)


def test_first_admin_is_not_made_when_a_platform_admin_exists(platform_admin: User) -> None:
    admin, generated = services.first_admin_ensure(username="admin", password=None)

    assert (admin, generated) == (platform_admin, None)
    assert not User.objects.filter(username="admin").exists()


# Sign-in rate limit ------------------------------------------------------------------------


def test_sign_in_attempts_are_limited_per_user(
    member: User, rate_limit: Callable[[int], None]
) -> None:
    rate_limit(3)
    for _ in range(3):
        with pytest.raises(ApplicationError) as caught:
            services.credentials_check(username="bob", password="wrong", ip=None)
        assert caught.value.status == 400

    with pytest.raises(RateLimitedError) as limited:
        services.credentials_check(username="bob", password=PASSWORD, ip=None)

    assert limited.value.status == 429


def test_credentials_need_both_fields(member: User) -> None:
    with pytest.raises(ApplicationError) as no_name:
        services.credentials_check(username="  ", password=PASSWORD, ip=None)
    with pytest.raises(ApplicationError) as no_password:
        services.credentials_check(username="bob", password="", ip=None)

    assert (no_name.value.field, no_password.value.field) == ("username", "password")
