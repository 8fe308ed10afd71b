"""Query budgets: lists cost the same number of queries however many rows they show."""

from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Membership, Role, User, Workspace

pytestmark = pytest.mark.django_db


def queries_for(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def grow(user: User, make_user: Callable[..., User], count: int) -> None:
    """``count`` more workspaces with ``user`` and two others in each."""
    start = Workspace.objects.count()
    for n in range(count):
        workspace = Workspace.objects.create(name=f"team-{start + n:03}")
        Membership.objects.create(workspace=workspace, user=user, role=Role.MEMBER)
        for _ in range(2):
            Membership.objects.create(workspace=workspace, user=make_user(), role=Role.VIEWER)


@pytest.mark.parametrize("is_admin", [False, True], ids=["member", "platform-admin"])
def test_the_workspace_list_api_does_not_grow_with_workspaces(
    make_user: Callable[..., User],
    api_client: Callable[[User], Client],
    django_assert_max_num_queries: Callable[..., object],
    is_admin: bool,
) -> None:
    user = make_user(is_admin=is_admin)
    client = api_client(user)
    grow(user, make_user, 3)
    client.get("/api/workspaces")
    baseline = queries_for(client, "/api/workspaces")

    grow(user, make_user, 27)

    with django_assert_max_num_queries(baseline):
        body = client.get("/api/workspaces").json()
    assert body["count"] == 30
    assert {w["member_count"] for w in body["items"]} == {3}


def test_the_workspace_page_does_not_grow_with_workspaces(
    make_user: Callable[..., User],
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    user = make_user()
    client = session_client(user)
    grow(user, make_user, 3)
    baseline = queries_for(client, "/workspaces/")

    grow(user, make_user, 27)

    with django_assert_max_num_queries(baseline):
        page = client.get("/workspaces/").content.decode()
    assert page.count('href="/workspaces/') >= 30


def test_the_member_list_api_does_not_grow_with_members(
    make_user: Callable[..., User],
    api_client: Callable[[User], Client],
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    admin = make_user()
    workspace = Workspace.objects.create(name="big")
    Membership.objects.create(workspace=workspace, user=admin, role=Role.ADMIN)
    client = api_client(admin)
    url = f"/api/workspaces/{workspace.pk}/members"
    client.get(url)
    baseline = queries_for(client, url)

    for _ in range(30):
        Membership.objects.create(workspace=workspace, user=make_user(), role=Role.MEMBER)

    with django_assert_max_num_queries(baseline):
        assert client.get(url).json()["count"] == 31


def test_the_users_page_does_not_grow_with_users(
    make_user: Callable[..., User],
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    client = session_client(make_user(is_admin=True))
    baseline = queries_for(client, "/users/")

    for _ in range(30):
        make_user()

    with django_assert_max_num_queries(baseline):
        client.get("/users/")


def test_a_workspace_admin_reads_members_and_the_audit_page_in_few_queries(
    cast: object,
    api_client: Callable[[User], Client],
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    admin = cast.ws_admin  # type: ignore[attr-defined]
    workspace = cast.workspace  # type: ignore[attr-defined]

    api = api_client(admin)
    page = session_client(admin)

    with django_assert_max_num_queries(5):
        api.get(f"/api/workspaces/{workspace.pk}/members")
    with django_assert_max_num_queries(7):
        page.get("/audit/")
