"""The accounts API: sign-in tokens, me, workspace scoping, personal tokens, users, CSRF."""

import json
from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts import services
from apps.accounts.models import ApiToken, Membership, Role, User, Workspace
from apps.audit.models import AuditEntry
from tests.conftest import PASSWORD, Cast, csrf_token

pytestmark = pytest.mark.django_db

STRONG = "a much longer passphrase 9"


def post_json(client: Client, url: str, payload: object, **extra: str) -> object:
    return client.post(url, json.dumps(payload), content_type="application/json", **extra)


def bearer(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


# POST /api/auth/token ----------------------------------------------------------------------


def test_good_credentials_give_a_token_that_works(member: User) -> None:
    response = post_json(Client(), "/api/auth/token", {"username": "bob", "password": PASSWORD})

    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("pdm_")
    assert body["expires_at"] is not None
    me = bearer(body["token"]).get("/api/auth/me")
    assert me.status_code == 200
    assert me.json()["username"] == "bob"


def test_a_wrong_password_names_the_password_field(member: User) -> None:
    response = post_json(Client(), "/api/auth/token", {"username": "bob", "password": "nope"})

    assert response.status_code == 400
    assert response.json()["field"] == "password"
    assert not ApiToken.objects.exists()


def test_an_unknown_user_looks_like_a_wrong_password(db: None) -> None:
    response = post_json(Client(), "/api/auth/token", {"username": "ghost", "password": "x"})

    assert response.status_code == 400
    assert response.json()["field"] == "password"


@pytest.mark.parametrize("missing", ["username", "password"])
def test_a_missing_field_is_named(member: User, missing: str) -> None:
    payload = {"username": "bob", "password": PASSWORD}
    del payload[missing]

    response = post_json(Client(), "/api/auth/token", payload)

    assert response.status_code == 422
    assert response.json()["field"] == missing
    assert missing in response.json()["detail"]


def test_malformed_json_is_a_400(member: User) -> None:
    response = Client().post(
        "/api/auth/token", '{"username": "bob", ', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["field"] is None
    assert response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_an_oversized_body_is_a_413(member: User) -> None:
    payload = {"username": "bob", "password": PASSWORD, "name": "x" * (1024 * 1024 + 1)}

    response = post_json(Client(), "/api/auth/token", payload)

    assert response.status_code == 413
    assert response.json()["field"] is None
    assert not ApiToken.objects.exists()


def test_token_requests_are_rate_limited(member: User, rate_limit: Callable[[int], None]) -> None:
    rate_limit(3)
    for attempt in range(3):
        response = post_json(
            Client(),
            "/api/auth/token",
            {"username": "bob", "password": "wrong"},
            REMOTE_ADDR=f"10.0.0.{attempt}",
        )
        assert response.status_code == 400

    response = post_json(
        Client(),
        "/api/auth/token",
        {"username": "bob", "password": PASSWORD},
        REMOTE_ADDR="10.0.1.1",
    )

    assert response.status_code == 429
    assert response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_token_requests_are_rate_limited_per_address(
    make_user: Callable[..., User], rate_limit: Callable[[int], None]
) -> None:
    rate_limit(3)
    for _ in range(3):
        response = post_json(
            Client(), "/api/auth/token", {"username": make_user().username, "password": "wrong"}
        )
        assert response.status_code == 400

    fresh = make_user()
    response = post_json(
        Client(), "/api/auth/token", {"username": fresh.username, "password": PASSWORD}
    )

    assert response.status_code == 429


def test_a_success_resets_the_users_counter(
    member: User, rate_limit: Callable[[int], None]
) -> None:
    rate_limit(3)
    attempts = iter(range(100))

    def attempt(password: str) -> int:
        address = f"10.0.0.{next(attempts)}"
        payload = {"username": "bob", "password": password}
        return post_json(Client(), "/api/auth/token", payload, REMOTE_ADDR=address).status_code

    assert [attempt("wrong"), attempt("wrong"), attempt(PASSWORD)] == [400, 400, 201]
    assert [attempt("wrong"), attempt("wrong"), attempt("wrong")] == [400, 400, 400]
    assert attempt(PASSWORD) == 429


# /api/auth/me ------------------------------------------------------------------------------


def test_me_lists_my_workspaces_with_my_role(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    body = api_client(cast.viewer).get("/api/auth/me").json()

    assert body["username"] == "carol"
    assert body["is_admin"] is False
    assert [(w["name"], w["my_role"]) for w in body["workspaces"]] == [("Vision", "viewer")]


def test_me_says_who_is_platform_admin(cast: Cast, api_client: Callable[[User], Client]) -> None:
    body = api_client(cast.platform_admin).get("/api/auth/me").json()

    assert body["is_admin"] is True
    assert {w["name"] for w in body["workspaces"]} == {"Vision", "Speech"}


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer nonsense", "Token pdm_x_y", "Basic Ym9iOnB3"],
)
def test_me_refuses_bad_credentials(member: User, header: str) -> None:
    client = Client(headers={"Authorization": header}) if header else Client()

    response = client.get("/api/auth/me")

    assert response.status_code == 401
    assert response.json()["field"] is None


# /api/workspaces ---------------------------------------------------------------------------


def test_a_member_lists_only_their_workspaces(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    body = api_client(cast.member).get("/api/workspaces").json()

    assert body["count"] == 1
    assert body["items"][0]["name"] == "Vision"
    assert body["items"][0]["member_count"] == 3
    assert body["items"][0]["my_role"] == "member"


def test_a_platform_admin_lists_every_workspace(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    body = api_client(cast.platform_admin).get("/api/workspaces", {"limit": 1}).json()

    assert body["count"] == 2
    assert len(body["items"]) == 1
    assert body["items"][0]["my_role"] is None


def test_someone_without_a_workspace_lists_none(
    make_user: Callable[..., User], cast: Cast, api_client: Callable[[User], Client]
) -> None:
    body = api_client(make_user()).get("/api/workspaces").json()

    assert body == {"items": [], "count": 0}


def test_a_platform_admin_creates_a_workspace(
    platform_admin: User, api_client: Callable[[User], Client]
) -> None:
    response = post_json(
        api_client(platform_admin), "/api/workspaces", {"name": "Robotics", "description": "arms"}
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["member_count"], body["my_role"]) == ("Robotics", 1, "admin")


def test_a_workspace_name_clash_is_a_409_naming_the_field(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    response = post_json(api_client(cast.platform_admin), "/api/workspaces", {"name": "vision"})

    assert response.status_code == 409
    assert response.json()["field"] == "name"
    assert Workspace.objects.count() == 2


def test_only_a_platform_admin_creates_workspaces(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    response = post_json(api_client(cast.ws_admin), "/api/workspaces", {"name": "Robotics"})

    assert response.status_code == 403
    assert not Workspace.objects.filter(name="Robotics").exists()


def test_the_last_admin_cannot_be_removed_through_the_api(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    client = api_client(cast.ws_admin)
    url = f"/api/workspaces/{cast.workspace.pk}/members/{cast.ws_admin.pk}"

    removed = client.delete(url)
    demoted = client.patch(url, json.dumps({"role": "viewer"}), content_type="application/json")

    assert removed.status_code == demoted.status_code == 400
    assert demoted.json()["field"] == "role"
    assert Membership.objects.get(user=cast.ws_admin).role == Role.ADMIN


# /api/tokens -------------------------------------------------------------------------------


def test_a_new_tokens_secret_is_shown_once(
    member: User, api_client: Callable[[User], Client]
) -> None:
    client = api_client(member)

    created = post_json(client, "/api/tokens", {"name": "laptop", "expires_in_days": 7})

    assert created.status_code == 201
    secret = created.json()["token"]
    listed = client.get("/api/tokens")
    assert listed.status_code == 200
    assert secret not in listed.content.decode()
    assert all("token" not in item for item in listed.json()["items"])
    assert "laptop" in [item["name"] for item in listed.json()["items"]]


def test_a_revoked_token_gets_401(member: User, api_client: Callable[[User], Client]) -> None:
    client = api_client(member)
    created = post_json(client, "/api/tokens", {"name": "laptop"}).json()
    assert bearer(created["token"]).get("/api/auth/me").status_code == 200

    response = client.delete(f"/api/tokens/{created['id']}")

    assert response.status_code == 204
    assert bearer(created["token"]).get("/api/auth/me").status_code == 401


def test_someone_elses_token_is_not_found(
    member: User, viewer: User, api_client: Callable[[User], Client]
) -> None:
    token, plaintext = services.token_create(actor=viewer, name="mine")

    response = api_client(member).delete(f"/api/tokens/{token.pk}")

    assert response.status_code == 404
    assert bearer(plaintext).get("/api/auth/me").status_code == 200


def test_a_token_only_lists_its_owners_tokens(
    member: User, viewer: User, api_client: Callable[[User], Client]
) -> None:
    services.token_create(actor=viewer, name="carols")

    names = [t["name"] for t in api_client(member).get("/api/tokens").json()["items"]]

    assert "carols" not in names


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"name": "x" * 101}, "name"), ({"name": "  "}, "name"), ({}, "name")]
    + [({"name": "ci", "expires_in_days": days}, "expires_in_days") for days in (0, 3651)],
)
def test_a_bad_token_request_names_the_field(
    member: User, api_client: Callable[[User], Client], payload: dict, field: str
) -> None:
    client = api_client(member)
    before = ApiToken.objects.count()

    response = post_json(client, "/api/tokens", payload)

    assert 400 <= response.status_code < 500
    assert response.json()["field"] == field
    assert ApiToken.objects.count() == before


# /api/users --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ws_admin", "member", "viewer"])
def test_only_platform_admins_use_the_users_api(
    cast: Cast, api_client: Callable[[User], Client], role: str
) -> None:
    client = api_client(getattr(cast, role))

    listed = client.get("/api/users")
    created = post_json(client, "/api/users", {"username": "dave", "password": STRONG})
    promoted = client.patch(
        f"/api/users/{cast.viewer.pk}", json.dumps({"is_admin": True}), "application/json"
    )

    assert listed.status_code == created.status_code == promoted.status_code == 403
    assert not User.objects.filter(username="dave").exists()
    assert not User.objects.get(pk=cast.viewer.pk).is_superuser


def test_a_platform_admin_manages_users(
    platform_admin: User, member: User, api_client: Callable[[User], Client]
) -> None:
    client = api_client(platform_admin)

    created = post_json(client, "/api/users", {"username": "dave", "password": STRONG})
    assert created.status_code == 201
    assert created.json()["is_admin"] is False
    listed = client.get("/api/users").json()
    assert {"root", "bob", "dave"} <= {u["username"] for u in listed["items"]}
    patched = client.patch(
        f"/api/users/{member.pk}",
        json.dumps({"is_active": False, "password": STRONG}),
        content_type="application/json",
    )

    assert patched.status_code == 200
    assert patched.json()["is_active"] is False
    member.refresh_from_db()
    assert member.check_password(STRONG)


def test_a_user_patch_with_a_weak_password_changes_nothing(
    platform_admin: User, member: User, api_client: Callable[[User], Client]
) -> None:
    response = api_client(platform_admin).patch(
        f"/api/users/{member.pk}",
        json.dumps({"is_active": False, "password": "123"}),
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["field"] == "password"
    member.refresh_from_db()
    assert member.is_active
    assert member.check_password(PASSWORD)


def test_an_unknown_user_is_a_404(
    platform_admin: User, api_client: Callable[[User], Client]
) -> None:
    response = api_client(platform_admin).patch(
        "/api/users/99999", json.dumps({"is_admin": True}), content_type="application/json"
    )

    assert response.status_code == 404


def test_the_api_cannot_disable_its_own_caller(
    platform_admin: User, api_client: Callable[[User], Client]
) -> None:
    response = api_client(platform_admin).patch(
        f"/api/users/{platform_admin.pk}",
        json.dumps({"is_active": False}),
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["field"] == "is_active"


# Session authentication --------------------------------------------------------------------


def test_a_session_reads_without_a_csrf_token(
    member: User, session_client: Callable[..., Client]
) -> None:
    response = session_client(member, csrf=True).get("/api/auth/me")

    assert response.status_code == 200
    assert response.json()["username"] == "bob"


def test_a_session_post_needs_the_csrf_header(
    member: User, session_client: Callable[..., Client]
) -> None:
    client = session_client(member, csrf=True)

    refused = post_json(client, "/api/tokens", {"name": "browser"})

    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not ApiToken.objects.exists()

    accepted = post_json(
        client, "/api/tokens", {"name": "browser"}, HTTP_X_CSRFTOKEN=csrf_token(client)
    )

    assert accepted.status_code == 201
    assert ApiToken.objects.filter(user=member, name="browser").exists()


def test_a_session_delete_needs_the_csrf_header(
    member: User, session_client: Callable[..., Client]
) -> None:
    token, _ = services.token_create(actor=member, name="old")
    client = session_client(member, csrf=True)

    assert client.delete(f"/api/tokens/{token.pk}").status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None

    response = client.delete(f"/api/tokens/{token.pk}", HTTP_X_CSRFTOKEN=csrf_token(client))

    assert response.status_code == 204


def test_a_bearer_client_needs_no_csrf_token(
    member: User, api_client: Callable[[User], Client]
) -> None:
    client = api_client(member)
    client.handler.enforce_csrf_checks = True

    response = post_json(client, "/api/tokens", {"name": "script"})

    assert response.status_code == 201


# Audit of API calls ------------------------------------------------------------------------


def test_api_mutations_record_the_callers_address(
    platform_admin: User, api_client: Callable[[User], Client]
) -> None:
    post_json(
        api_client(platform_admin),
        "/api/workspaces",
        {"name": "Robotics"},
        REMOTE_ADDR="198.51.100.4",
    )

    entry = AuditEntry.objects.get(action="workspace.create")
    assert entry.ip == "198.51.100.4"
    assert entry.workspace.name == "Robotics"
