"""Workspaces and members through the generic workspace-scoped API tests."""

from typing import Any, ClassVar

from apps.accounts.models import Membership, Role, User, Workspace
from tests.api_base import BadInput, Operation, PaginatedListTests, WorkspaceScopedAPITests
from tests.conftest import PASSWORD


def _newcomer() -> User:
    return User.objects.create_user(username=f"newcomer{User.objects.count()}", password=PASSWORD)


class TestWorkspaceAPI(WorkspaceScopedAPITests):
    operations: ClassVar = [
        Operation("detail", "get", lambda ws, obj: f"/api/workspaces/{ws.pk}"),
        Operation(
            "update",
            "patch",
            lambda ws, obj: f"/api/workspaces/{ws.pk}",
            payload=lambda ws, obj: {"name": f"{ws.name} renamed", "description": "new"},
            audit_action="workspace.update",
        ),
    ]
    bad_inputs: ClassVar = [
        BadInput("update", lambda ws, obj: {"name": "x" * 65}, "name"),
        BadInput("update", lambda ws, obj: {"name": "   "}, "name"),
        BadInput("update", lambda ws, obj: {"description": 42}, "description"),
    ]

    def make_object(self, workspace: Workspace) -> Workspace:
        return workspace

    def snapshot(self, workspace: Workspace) -> Any:
        workspace.refresh_from_db()
        return workspace.name, workspace.description


class TestMembersAPI(WorkspaceScopedAPITests, PaginatedListTests):
    operations: ClassVar = [
        Operation("list", "get", lambda ws, obj: f"/api/workspaces/{ws.pk}/members"),
        Operation(
            "add",
            "post",
            lambda ws, obj: f"/api/workspaces/{ws.pk}/members",
            payload=lambda ws, obj: {"username": _newcomer().username, "role": "viewer"},
            audit_action="member.add",
            status=201,
        ),
        Operation(
            "role",
            "patch",
            lambda ws, obj: f"/api/workspaces/{ws.pk}/members/{obj.user_id}",
            payload=lambda ws, obj: {"role": "admin"},
            audit_action="member.role_set",
        ),
        Operation(
            "remove",
            "delete",
            lambda ws, obj: f"/api/workspaces/{ws.pk}/members/{obj.user_id}",
            audit_action="member.remove",
            status=204,
        ),
    ]
    bad_inputs: ClassVar = [
        BadInput("add", lambda ws, obj: {"username": "nobody-by-this-name"}, "username"),
        BadInput("add", lambda ws, obj: {"username": obj.user.username}, "username"),
        BadInput("add", lambda ws, obj: {"role": "member"}, "username"),
        BadInput(
            "add", lambda ws, obj: {"username": _newcomer().username, "role": "owner"}, "role"
        ),
        BadInput("role", lambda ws, obj: {"role": "owner"}, "role"),
        BadInput("role", lambda ws, obj: {}, "role"),
    ]
    list_url = staticmethod(lambda ws: f"/api/workspaces/{ws.pk}/members")

    def make_object(self, workspace: Workspace) -> Membership:
        return Membership.objects.create(workspace=workspace, user=_newcomer(), role=Role.MEMBER)

    def snapshot(self, workspace: Workspace) -> Any:
        return sorted(workspace.memberships.values_list("user_id", "role"))
