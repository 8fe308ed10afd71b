"""The audit log: entries from every mutating action, retention, and the scoped API."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import Role, User
from apps.audit.models import AuditEntry
from apps.audit.services import audit_prune, audit_record
from apps.audit.tasks import prune
from tests.conftest import PASSWORD, Cast, csrf_token

pytestmark = pytest.mark.django_db


def _entry_at(when: datetime, **fields: object) -> AuditEntry:
    entry = audit_record(actor=None, action=str(fields.pop("action", "test.event")), **fields)
    AuditEntry.objects.filter(pk=entry.pk).update(at=when)
    return entry


# Entries written by requests ---------------------------------------------------------------


def test_page_actions_record_actor_and_address(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.ws_admin)

    client.post(
        f"/workspaces/{cast.workspace.pk}/",
        {"name": "Vision", "description": "computer vision"},
        REMOTE_ADDR="192.0.2.10",
        HTTP_USER_AGENT="pytest-browser",
    )

    entry = AuditEntry.objects.get(action="workspace.update")
    assert entry.actor == cast.ws_admin
    assert entry.actor_name == "alice"
    assert entry.workspace == cast.workspace
    assert entry.ip == "192.0.2.10"
    assert entry.user_agent == "pytest-browser"
    assert entry.changes == {"description": "computer vision"}


def test_sign_in_and_out_are_recorded(member: User, session_client: Callable[..., Client]) -> None:
    client = session_client(csrf=True)
    token = csrf_token(client)

    client.post(
        "/login/",
        {"username": "bob", "password": PASSWORD, "csrfmiddlewaretoken": token},
        REMOTE_ADDR="192.0.2.11",
    )
    client.post("/logout/", {"csrfmiddlewaretoken": csrf_token(client)}, REMOTE_ADDR="192.0.2.11")

    actions = list(AuditEntry.objects.order_by("at", "id").values_list("action", "ip"))
    assert actions == [("session.login", "192.0.2.11"), ("session.logout", "192.0.2.11")]


def test_every_mutating_service_writes_an_entry(cast: Cast, make_user: Callable[..., User]) -> None:
    strong = "another long passphrase 7"
    admin = cast.platform_admin
    calls = {
        "workspace.create": lambda: services.workspace_create(actor=admin, name="Robotics"),
        "workspace.update": lambda: services.workspace_update(
            actor=admin, workspace=cast.workspace, description="d"
        ),
        "member.add": lambda: services.member_add(
            actor=admin,
            workspace=cast.workspace,
            username=make_user("erin").username,
            role=Role.VIEWER,
        ),
        "member.role_set": lambda: services.member_role_set(
            actor=admin, membership=cast.workspace.memberships.get(user=cast.viewer), role="member"
        ),
        "member.remove": lambda: services.member_remove(
            actor=admin, membership=cast.workspace.memberships.get(user=cast.viewer)
        ),
        "user.create": lambda: services.user_create(actor=admin, username="dave", password=strong),
        "user.update": lambda: services.user_update(actor=admin, user=cast.member, is_admin=True),
        "user.password_set": lambda: services.user_password_set(
            actor=admin, user=cast.member, password=strong
        ),
        "user.password_change": lambda: services.password_change(
            actor=cast.viewer, old_password=PASSWORD, new_password=strong
        ),
        "token.create": lambda: services.token_create(actor=admin, name="t"),
        "token.revoke": lambda: services.token_revoke(
            actor=admin, token=admin.api_tokens.get(name="t")
        ),
    }
    for action, call in calls.items():
        before = AuditEntry.objects.count()
        call()
        assert AuditEntry.objects.count() == before + 1, action
        assert AuditEntry.objects.order_by("-id").first().action == action


def test_an_entry_outlives_its_actor_and_target(cast: Cast) -> None:
    services.workspace_update(actor=cast.ws_admin, workspace=cast.workspace, description="d")

    cast.ws_admin.delete()
    cast.workspace.delete()

    entry = AuditEntry.objects.get(action="workspace.update")
    assert (entry.actor, entry.workspace) == (None, None)
    assert (entry.actor_name, entry.workspace_name, entry.target_repr) == (
        "alice",
        "Vision",
        "Vision",
    )


# Retention ---------------------------------------------------------------------------------


def test_prune_deletes_only_entries_older_than_retention(settings: object) -> None:
    settings.PODIUM = {**settings.PODIUM, "AUDIT_RETENTION_DAYS": 30}
    now = timezone.now()
    old = _entry_at(now - timedelta(days=31))
    kept = [_entry_at(now - timedelta(days=29)), _entry_at(now)]

    deleted = audit_prune(now=now)

    assert deleted == 1
    assert not AuditEntry.objects.filter(pk=old.pk).exists()
    assert set(AuditEntry.objects.values_list("pk", flat=True)) == {e.pk for e in kept}


def test_zero_retention_keeps_everything(settings: object) -> None:
    settings.PODIUM = {**settings.PODIUM, "AUDIT_RETENTION_DAYS": 0}
    _entry_at(timezone.now() - timedelta(days=5000))

    assert audit_prune() == 0
    assert AuditEntry.objects.count() == 1


def test_the_prune_task_runs_the_retention(settings: object) -> None:
    settings.PODIUM = {**settings.PODIUM, "AUDIT_RETENTION_DAYS": 1}
    _entry_at(timezone.now() - timedelta(days=2))

    prune.delay()

    assert not AuditEntry.objects.exists()


# GET /api/audit ----------------------------------------------------------------------------


@pytest.fixture
def history(cast: Cast) -> dict[str, AuditEntry]:
    """Entries in both workspaces and outside any, at known times."""
    base = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    return {
        "vision-early": _entry_at(
            base, action="workspace.update", workspace=cast.workspace, target=cast.workspace
        ),
        "vision-late": _entry_at(
            base + timedelta(days=2), action="member.add", workspace=cast.workspace
        ),
        "speech": _entry_at(
            base + timedelta(days=1), action="member.add", workspace=cast.other_workspace
        ),
        "global": _entry_at(base + timedelta(days=3), action="token.create"),
    }


def _ids(client: Client, **query: object) -> set[int]:
    response = client.get("/api/audit", query)
    assert response.status_code == 200, response.content
    return {item["id"] for item in response.json()["items"]}


def test_a_platform_admin_reads_every_entry(
    cast: Cast, history: dict[str, AuditEntry], api_client: Callable[[User], Client]
) -> None:
    client = api_client(cast.platform_admin)

    visible = _ids(client)

    assert visible == set(AuditEntry.objects.values_list("pk", flat=True))
    assert {e.pk for e in history.values()} < visible


def test_a_workspace_admin_reads_only_their_workspaces_entries(
    cast: Cast, history: dict[str, AuditEntry], api_client: Callable[[User], Client]
) -> None:
    client = api_client(cast.ws_admin)

    assert _ids(client) == {history["vision-early"].pk, history["vision-late"].pk}
    assert _ids(client, workspace_id=cast.other_workspace.pk) == set()


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_read_no_entry(
    cast: Cast, history: dict[str, AuditEntry], api_client: Callable[[User], Client], role: str
) -> None:
    response = api_client(getattr(cast, role)).get("/api/audit")

    assert response.json() == {"items": [], "count": 0}


def test_the_audit_api_needs_authentication(history: dict[str, AuditEntry]) -> None:
    assert Client().get("/api/audit").status_code == 401


def test_audit_filters(
    cast: Cast, history: dict[str, AuditEntry], api_client: Callable[[User], Client]
) -> None:
    services.token_create(actor=cast.member, name="bobs")
    client = api_client(cast.platform_admin)
    base = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    assert _ids(client, action="member.add") == {history["vision-late"].pk, history["speech"].pk}
    assert _ids(client, action="member.") == {history["vision-late"].pk, history["speech"].pk}
    assert _ids(client, action="member") == set()
    assert _ids(client, workspace_id=cast.other_workspace.pk) == {history["speech"].pk}
    assert _ids(
        client,
        since=(base + timedelta(days=1)).isoformat(),
        until=(base + timedelta(days=3)).isoformat(),
    ) == {
        history["speech"].pk,
        history["vision-late"].pk,
    }
    bobs = _ids(client, actor="BOB")
    assert len(bobs) == 1
    assert AuditEntry.objects.get(pk=bobs.pop()).action == "token.create"


def test_audit_entries_are_newest_first_and_paginated(
    cast: Cast, history: dict[str, AuditEntry], api_client: Callable[[User], Client]
) -> None:
    client = api_client(cast.platform_admin)
    token_entry = AuditEntry.objects.get(action="token.create", actor=cast.platform_admin)

    body = client.get("/api/audit", {"limit": 2}).json()

    assert body["count"] == 5
    assert [item["id"] for item in body["items"]] == [token_entry.pk, history["global"].pk]
    item = client.get("/api/audit", {"limit": 1, "offset": 4}).json()["items"][0]
    assert item["id"] == history["vision-early"].pk
    assert (item["actor"], item["workspace"], item["target"]) == ("system", "Vision", "Vision")


def test_a_bad_audit_filter_names_the_field(
    platform_admin: User, api_client: Callable[[User], Client]
) -> None:
    response = api_client(platform_admin).get("/api/audit", {"since": "last tuesday"})

    assert response.status_code == 422
    assert response.json()["field"] == "since"


# The audit page ----------------------------------------------------------------------------


def test_the_audit_page_shows_a_workspace_admin_only_their_workspace(
    cast: Cast, history: dict[str, AuditEntry], session_client: Callable[..., Client]
) -> None:
    services.workspace_update(actor=cast.outsider, workspace=cast.other_workspace, description="x")

    page = session_client(cast.ws_admin).get("/audit/").content.decode()

    assert page.count("<code>") == 2
    assert "Speech" not in page.split('id="audit-entries"')[1]
    assert "mallory" not in page


def test_the_audit_page_filters_and_answers_htmx_with_the_table(
    cast: Cast, history: dict[str, AuditEntry], session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.platform_admin).get(
        "/audit/", {"action": "member."}, HTTP_HX_REQUEST="true"
    )

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="audit-entries">')
    assert html.count("<code>member.add</code>") == 2
    assert "workspace.update" not in html


@pytest.mark.django_db(transaction=True)
async def test_async_requests_record_the_address_too(platform_admin: User) -> None:
    _, plaintext = await database_sync_to_async(services.token_create)(
        actor=platform_admin, name="a"
    )

    response = await AsyncClient().post(
        "/api/workspaces",
        {"name": "Robotics"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {plaintext}"},
    )

    assert response.status_code == 201
    entry = await AuditEntry.objects.aget(action="workspace.create")
    assert entry.ip == "127.0.0.1"
