"""Pages: sign-in, workspaces and members (with their htmx partial), tokens, users, password."""

from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts.models import ApiToken, Membership, Role, User, Workspace
from apps.accounts.tokens import token_digest
from tests.conftest import PASSWORD, Cast, csrf_token

pytestmark = pytest.mark.django_db

STRONG = "a much longer passphrase 9"
HTMX = {"HTTP_HX_REQUEST": "true"}


# Sign-in -----------------------------------------------------------------------------------


def sign_in(client: Client, username: str, password: str, next_url: str = "", **extra: str):
    data = {"username": username, "password": password, "next": next_url}
    data["csrfmiddlewaretoken"] = csrf_token(client)
    return client.post("/login/", data, **extra)


def test_signing_in_leads_to_the_console(member: User) -> None:
    client = Client(enforce_csrf_checks=True)

    response = sign_in(client, "bob", PASSWORD)

    assert response.status_code == 302
    assert response.url == "/"
    assert client.get("/workspaces/").status_code == 200


def test_a_wrong_password_shows_the_sign_in_page_again_with_the_error(member: User) -> None:
    client = Client(enforce_csrf_checks=True)

    response = sign_in(client, "bob", "not my password")

    assert response.status_code == 400
    page = response.content.decode()
    assert "Wrong username or password." in page
    assert 'value="bob"' in page
    assert "_auth_user_id" not in client.session


def test_a_sign_in_post_without_csrf_is_refused(member: User) -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post("/login/", {"username": "bob", "password": PASSWORD})

    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/tokens/", "/tokens/"),
        ("http://testserver/tokens/", "http://testserver/tokens/"),
        ("https://evil.example/phish", "/"),
        ("//evil.example/phish", "/"),
        ("http://evil.example/phish", "/"),
    ],
)
def test_next_redirects_only_to_the_same_host(member: User, next_url: str, expected: str) -> None:
    response = sign_in(Client(), "bob", PASSWORD, next_url)

    assert response.status_code == 302
    assert response.url == expected


def test_the_sign_in_page_keeps_a_safe_next(db: None) -> None:
    page = Client().get("/login/", {"next": "/tokens/"}).content.decode()

    assert 'name="next" value="/tokens/"' in page


def test_the_sign_in_page_is_rate_limited(member: User, rate_limit: Callable[[int], None]) -> None:
    rate_limit(2)
    for address in ("10.1.0.1", "10.1.0.2"):
        assert sign_in(Client(), "bob", "wrong", REMOTE_ADDR=address).status_code == 400

    response = sign_in(Client(), "bob", PASSWORD, REMOTE_ADDR="10.1.0.3")

    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.content.decode()


def test_a_page_sign_in_resets_the_users_counter(
    member: User, rate_limit: Callable[[int], None]
) -> None:
    rate_limit(2)
    addresses = iter(f"10.2.0.{n}" for n in range(100))

    def attempt(password: str) -> int:
        return sign_in(Client(), "bob", password, REMOTE_ADDR=next(addresses)).status_code

    assert [attempt("wrong"), attempt(PASSWORD)] == [400, 302]
    assert [attempt("wrong"), attempt("wrong")] == [400, 400]
    assert attempt(PASSWORD) == 429


def test_signing_out_needs_a_post(member: User, session_client: Callable[..., Client]) -> None:
    client = session_client(member)

    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")

    assert response.status_code == 302
    assert client.get("/workspaces/").status_code == 302


@pytest.mark.parametrize(
    "url", ["/", "/workspaces/", "/tokens/", "/users/", "/audit/", "/status/", "/account/password/"]
)
def test_pages_send_anonymous_visitors_to_sign_in(db: None, url: str) -> None:
    response = Client().get(url)

    assert response.status_code == 302
    assert response.url.startswith(f"/login/?next={url}")


# Pages per role ----------------------------------------------------------------------------

PAGES_FOR_EVERYONE = ["/workspaces/", "/tokens/", "/status/", "/account/password/"]


@pytest.mark.parametrize("role", ["platform_admin", "ws_admin", "member", "viewer", "outsider"])
def test_every_signed_in_user_sees_the_common_pages(
    cast: Cast, session_client: Callable[..., Client], role: str
) -> None:
    client = session_client(getattr(cast, role))

    for url in PAGES_FOR_EVERYONE:
        assert client.get(url).status_code == 200, url
    assert client.get("/").url == "/workspaces/"


@pytest.mark.parametrize(
    ("role", "status"),
    [("platform_admin", 200), ("ws_admin", 403), ("member", 403), ("viewer", 403)],
)
def test_the_users_page_is_for_platform_admins(
    cast: Cast, session_client: Callable[..., Client], role: str, status: int
) -> None:
    response = session_client(getattr(cast, role)).get("/users/")

    assert response.status_code == status
    assert ("Users</a>" in response.content.decode()) == (status == 200)


@pytest.mark.parametrize(
    ("role", "status"),
    [("platform_admin", 200), ("ws_admin", 200), ("member", 403), ("viewer", 403)],
)
def test_the_audit_page_is_for_admins(
    cast: Cast, session_client: Callable[..., Client], role: str, status: int
) -> None:
    response = session_client(getattr(cast, role)).get("/audit/")

    assert response.status_code == status
    assert ('href="/audit/"' in response.content.decode()) == (status == 200)


def test_the_workspace_list_shows_only_my_workspaces(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    page = session_client(cast.member).get("/workspaces/").content.decode()

    assert "Vision" in page
    assert "Speech" not in page
    assert 'id="workspace-create"' not in page


def test_a_platform_admin_creates_a_workspace_from_the_page(
    platform_admin: User, session_client: Callable[..., Client]
) -> None:
    response = session_client(platform_admin).post(
        "/workspaces/", {"name": "Robotics", "description": ""}
    )

    workspace = Workspace.objects.get(name="Robotics")
    assert response.status_code == 302
    assert response.url == f"/workspaces/{workspace.pk}/"


def test_a_duplicate_workspace_name_is_shown_on_the_name_field(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.platform_admin).post("/workspaces/", {"name": "VISION"})

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Workspace.objects.count() == 2


def test_a_member_cannot_create_a_workspace_from_the_page(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    session_client(cast.member).post("/workspaces/", {"name": "Robotics"})

    assert not Workspace.objects.filter(name="Robotics").exists()


@pytest.mark.parametrize("role", ["ws_admin", "member", "viewer", "platform_admin"])
def test_the_workspace_page_opens_for_its_members_and_platform_admins(
    cast: Cast, session_client: Callable[..., Client], role: str
) -> None:
    response = session_client(getattr(cast, role)).get(f"/workspaces/{cast.workspace.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="members"' in page
    assert ('id="member-add"' in page) == (role in {"ws_admin", "platform_admin"})


def test_the_workspace_page_is_not_found_for_outsiders(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.outsider)
    workspace_url = f"/workspaces/{cast.workspace.pk}/"

    assert client.get(workspace_url).status_code == 404
    assert client.post(workspace_url, {"name": "Mine"}).status_code == 404
    assert client.get("/workspaces/99999/").status_code == 404
    assert Workspace.objects.get(pk=cast.workspace.pk).name == "Vision"


def test_a_viewer_cannot_rename_the_workspace_from_the_page(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.viewer).post(
        f"/workspaces/{cast.workspace.pk}/", {"name": "Mine"}
    )

    assert response.status_code in {200, 403}
    assert Workspace.objects.get(pk=cast.workspace.pk).name == "Vision"


# Members over htmx -------------------------------------------------------------------------


def _is_members_partial(response) -> bool:
    page = response.content.decode()
    return page.lstrip().startswith('<div id="members">') and "<html" not in page


def test_adding_a_member_over_htmx_returns_the_members_partial(
    cast: Cast, make_user: Callable[..., User], session_client: Callable[..., Client]
) -> None:
    make_user("dave")

    response = session_client(cast.ws_admin).post(
        f"/workspaces/{cast.workspace.pk}/members/", {"username": "dave", "role": "viewer"}, **HTMX
    )

    assert response.status_code == 200
    assert _is_members_partial(response)
    assert "dave" in response.content.decode()
    assert Membership.objects.get(user__username="dave").role == Role.VIEWER


def test_adding_an_unknown_user_shows_the_error_in_the_partial(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin).post(
        f"/workspaces/{cast.workspace.pk}/members/", {"username": "ghost", "role": "member"}, **HTMX
    )

    assert response.status_code == 400
    assert _is_members_partial(response)
    assert "No active user named" in response.content.decode()


def test_changing_a_role_over_htmx_returns_the_members_partial(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin).post(
        f"/workspaces/{cast.workspace.pk}/members/{cast.member.pk}/role/", {"role": "admin"}, **HTMX
    )

    assert response.status_code == 200
    assert _is_members_partial(response)
    assert Membership.objects.get(user=cast.member).role == Role.ADMIN


def test_removing_a_member_over_htmx_returns_the_members_partial(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin).post(
        f"/workspaces/{cast.workspace.pk}/members/{cast.viewer.pk}/remove/", **HTMX
    )

    assert response.status_code == 200
    assert _is_members_partial(response)
    assert "carol" not in response.content.decode()
    assert not Membership.objects.filter(user=cast.viewer).exists()


def test_removing_the_last_admin_shows_the_error_in_the_partial(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin).post(
        f"/workspaces/{cast.workspace.pk}/members/{cast.ws_admin.pk}/remove/", **HTMX
    )

    assert response.status_code == 400
    assert _is_members_partial(response)
    assert "last workspace admin" in response.content.decode()
    assert Membership.objects.filter(user=cast.ws_admin).exists()


def test_member_changes_without_htmx_render_the_whole_page(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin).post(
        f"/workspaces/{cast.workspace.pk}/members/{cast.member.pk}/role/", {"role": "viewer"}
    )

    assert response.status_code == 200
    assert "<html" in response.content.decode()
    assert Membership.objects.get(user=cast.member).role == Role.VIEWER


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_change_members_from_the_page(
    cast: Cast, session_client: Callable[..., Client], role: str
) -> None:
    client = session_client(getattr(cast, role))
    base = f"/workspaces/{cast.workspace.pk}/members/"
    before = sorted(cast.workspace.memberships.values_list("user_id", "role"))

    client.post(base, {"username": "mallory", "role": "admin"}, **HTMX)
    client.post(f"{base}{cast.ws_admin.pk}/role/", {"role": "viewer"}, **HTMX)
    client.post(f"{base}{cast.ws_admin.pk}/remove/", **HTMX)

    assert sorted(cast.workspace.memberships.values_list("user_id", "role")) == before


def test_outsiders_get_404_from_the_member_endpoints(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.outsider)
    base = f"/workspaces/{cast.workspace.pk}/members/"

    assert client.post(base, {"username": "mallory", "role": "admin"}, **HTMX).status_code == 404
    assert client.post(f"{base}{cast.member.pk}/role/", {"role": "admin"}).status_code == 404
    assert client.post(f"{base}{cast.member.pk}/remove/").status_code == 404
    assert not Membership.objects.filter(workspace=cast.workspace, user=cast.outsider).exists()


def test_member_endpoints_need_csrf(cast: Cast, session_client: Callable[..., Client]) -> None:
    client = session_client(cast.ws_admin, csrf=True)

    response = client.post(
        f"/workspaces/{cast.workspace.pk}/members/{cast.viewer.pk}/remove/", **HTMX
    )

    assert response.status_code == 403
    assert Membership.objects.filter(user=cast.viewer).exists()


# Tokens ------------------------------------------------------------------------------------


def test_the_token_page_shows_a_new_secret_once(
    member: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(member)

    created = client.post("/tokens/", {"name": "laptop", "expires_in_days": ""})

    assert created.status_code == 200
    token = ApiToken.objects.get(user=member, name="laptop")
    page = created.content.decode()
    assert 'id="token-created"' in page
    plaintext = page.split('class="secret" value="')[1].split('"')[0]
    assert plaintext.startswith(f"pdm_{token.prefix}_")
    assert token.digest == token_digest(plaintext)
    later = client.get("/tokens/").content.decode()
    assert plaintext not in later
    assert "laptop" in later


def test_the_token_form_posted_by_htmx_gets_the_tokens_partial_never_cached(
    member: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(member)

    created = client.post("/tokens/", {"name": "ci"}, headers={"HX-Request": "true"})

    page = created.content.decode()
    assert created.status_code == 200
    assert page.lstrip().startswith('<div id="tokens">')
    assert "<html" not in page
    assert 'id="token-created"' in page
    assert "no-store" in created["Cache-Control"]


def test_a_bad_token_form_is_a_400_naming_the_field(
    member: User, session_client: Callable[..., Client]
) -> None:
    response = session_client(member).post("/tokens/", {"name": "ci", "expires_in_days": "0"})

    assert response.status_code == 400
    assert 'class="field has-error"' in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_a_token_from_the_page(
    member: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(member)
    client.post("/tokens/", {"name": "laptop"})
    token = ApiToken.objects.get(name="laptop")

    response = client.post(f"/tokens/{token.pk}/revoke/")

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "revoked" in client.get("/tokens/").content.decode()


def test_someone_elses_token_cannot_be_revoked_from_the_page(
    member: User, viewer: User, session_client: Callable[..., Client]
) -> None:
    session_client(viewer).post("/tokens/", {"name": "carols"})
    token = ApiToken.objects.get(name="carols")

    response = session_client(member).post(f"/tokens/{token.pk}/revoke/")

    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


# Users -------------------------------------------------------------------------------------


def test_a_platform_admin_adds_and_disables_a_user_from_the_page(
    platform_admin: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(platform_admin)

    added = client.post("/users/", {"username": "dave", "password": STRONG, "email": ""})
    dave = User.objects.get(username="dave")
    disabled = client.post(f"/users/{dave.pk}/", {"action": "disable"})

    assert added.status_code == disabled.status_code == 302
    dave.refresh_from_db()
    assert not dave.is_active


def test_a_weak_password_is_shown_on_the_users_page(
    platform_admin: User, session_client: Callable[..., Client]
) -> None:
    response = session_client(platform_admin).post(
        "/users/", {"username": "dave", "password": "123"}
    )

    assert response.status_code == 200
    assert 'class="field has-error"' in response.content.decode()
    assert not User.objects.filter(username="dave").exists()


def test_a_non_admin_cannot_change_users_from_the_page(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.ws_admin).post(
        f"/users/{cast.member.pk}/", {"action": "promote"}
    )

    assert response.status_code == 403
    assert not User.objects.get(pk=cast.member.pk).is_superuser


def test_a_platform_admin_cannot_disable_themselves_from_the_page(
    platform_admin: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(platform_admin)

    response = client.post(f"/users/{platform_admin.pk}/", {"action": "disable"}, follow=True)

    assert "You cannot disable your own account." in response.content.decode()
    platform_admin.refresh_from_db()
    assert platform_admin.is_active


# Password ----------------------------------------------------------------------------------


def test_changing_my_password_keeps_me_signed_in(
    member: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(member)

    response = client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password": STRONG, "new_password_again": STRONG},
    )

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.check_password(STRONG)
    assert client.get("/workspaces/").status_code == 200


def test_a_wrong_old_password_is_shown_on_its_field(
    member: User, session_client: Callable[..., Client]
) -> None:
    response = session_client(member).post(
        "/account/password/",
        {"old_password": "wrong", "new_password": STRONG, "new_password_again": STRONG},
    )

    page = response.content.decode()
    assert "The current password is wrong." in page
    assert page.index("has-error") < page.index('name="old_password"') < page.index("is wrong")
    member.refresh_from_db()
    assert member.check_password(PASSWORD)


def test_a_disabled_users_session_ends(
    platform_admin: User, member: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(member)
    assert client.get("/workspaces/").status_code == 200

    session_client(platform_admin).post(f"/users/{member.pk}/", {"action": "disable"})

    assert client.get("/workspaces/").status_code == 302
    assert client.get("/api/auth/me").status_code == 401
