"""The generic test base for workspace-scoped API resources (NetBox style).

A subclass names its operations (URL, method, payload, expected audit action), how to
make an object of the resource in a workspace, what a bad request looks like, and how
to read back what the resource holds. It gets these tests for free:

- anonymous callers get 401 on every operation;
- a viewer may read but never mutate (403, nothing written);
- an object of another workspace is a 404, never a 403, for every operation;
- bad input is a 4xx whose JSON ``field`` names the field at fault, nothing written;
- every successful mutation writes exactly one audit entry (actor, action, workspace, ip);
- lists are paginated (``{"items", "count"}`` with ``limit`` and ``offset``): mix in
  ``PaginatedListTests``.

For example::

    class TestJobAPI(WorkspaceScopedAPITests, PaginatedListTests):
        operations = [
            Operation("list", "get", lambda ws, job: f"/api/workspaces/{ws.pk}/jobs"),
            Operation(
                "submit", "post", lambda ws, job: f"/api/workspaces/{ws.pk}/jobs",
                payload=lambda ws, job: {"gpus": 1}, audit_action="job.submit", status=201,
            ),
            Operation(
                "cancel", "post", lambda ws, job: f"/api/jobs/{job.pk}/cancel",
                audit_action="job.cancel",
            ),
        ]
        bad_inputs = [BadInput("submit", lambda ws, job: {"gpus": -1}, "gpus")]
        list_url = staticmethod(lambda ws: f"/api/workspaces/{ws.pk}/jobs")

        def make_object(self, workspace):
            return job_factory(workspace=workspace)

        def snapshot(self, workspace):
            return sorted(workspace.jobs.values_list("id", "state"))
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from django.test import Client

from apps.accounts.models import User, Workspace
from apps.audit.models import AuditEntry

CLIENT_IP = "203.0.113.7"


@dataclass(frozen=True)
class Operation:
    """One call on the resource; ``url`` and ``payload`` take the workspace and the object."""

    name: str
    method: str
    url: Callable[[Workspace, Any], str]
    payload: Callable[[Workspace, Any], dict] | None = None
    audit_action: str | None = None
    status: int = 200

    @property
    def mutates(self) -> bool:
        return self.audit_action is not None


@dataclass(frozen=True)
class BadInput:
    """A request of operation ``operation`` that must be refused, naming ``field``."""

    operation: str
    payload: Callable[[Workspace, Any], dict]
    field: str


def call(client: Client, operation: Operation, workspace: Workspace, obj: Any) -> Any:
    """Perform ``operation`` on ``obj`` of ``workspace``; returns the response."""
    payload = operation.payload(workspace, obj) if operation.payload else None
    return client.generic(
        operation.method.upper(),
        operation.url(workspace, obj),
        data=json.dumps(payload) if payload is not None else "",
        content_type="application/json",
        REMOTE_ADDR=CLIENT_IP,
    )


class WorkspaceScopedAPITests:
    """Subclass as ``TestSomethingAPI`` and fill in the class attributes and methods."""

    operations: ClassVar[list[Operation]] = []
    bad_inputs: ClassVar[list[BadInput]] = []

    def make_object(self, workspace: Workspace) -> Any:
        """An object of the resource in ``workspace``, for the operations to act on."""
        raise NotImplementedError

    def snapshot(self, workspace: Workspace) -> Any:
        """What the resource holds in ``workspace``, to show nothing was written."""
        raise NotImplementedError

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """``operation`` runs a test once per operation, ``mutation`` once per mutating one."""
        if "operation" in metafunc.fixturenames:
            ids = [op.name for op in self.operations]
            metafunc.parametrize("operation", self.operations, ids=ids)
        if "mutation" in metafunc.fixturenames:
            mutations = [op for op in self.operations if op.mutates]
            metafunc.parametrize("mutation", mutations, ids=[op.name for op in mutations])
        if "bad_input" in metafunc.fixturenames:
            ids = [f"{bad.operation}-{bad.field}" for bad in self.bad_inputs]
            metafunc.parametrize("bad_input", self.bad_inputs, ids=ids)

    def _operation(self, name: str) -> Operation:
        return next(op for op in self.operations if op.name == name)

    def _unchanged(self, workspace: Workspace, before: Any, audit_count: int) -> None:
        assert self.snapshot(workspace) == before
        assert AuditEntry.objects.count() == audit_count

    def test_anonymous_is_refused(self, operation: Operation, workspace: Workspace) -> None:
        obj = self.make_object(workspace)
        response = call(Client(), operation, workspace, obj)
        assert response.status_code == 401
        assert response.json()["detail"]

    def test_viewer_cannot_mutate(
        self,
        mutation: Operation,
        workspace: Workspace,
        viewer: User,
        api_client: Callable[[User], Client],
    ) -> None:
        obj = self.make_object(workspace)
        client = api_client(viewer)
        before, audit_count = self.snapshot(workspace), AuditEntry.objects.count()
        response = call(client, mutation, workspace, obj)
        assert response.status_code == 403, response.content
        assert response.json()["detail"]
        self._unchanged(workspace, before, audit_count)

    def test_viewer_can_read(
        self, workspace: Workspace, viewer: User, api_client: Callable[[User], Client]
    ) -> None:
        obj = self.make_object(workspace)
        client = api_client(viewer)
        for operation in self.operations:
            if not operation.mutates:
                response = call(client, operation, workspace, obj)
                assert response.status_code == operation.status, operation.name

    def test_other_workspace_is_not_found(
        self,
        operation: Operation,
        workspace: Workspace,
        other_workspace: Workspace,
        ws_admin: User,
        api_client: Callable[[User], Client],
    ) -> None:
        foreign = self.make_object(other_workspace)
        client = api_client(ws_admin)
        before, audit_count = self.snapshot(other_workspace), AuditEntry.objects.count()
        response = call(client, operation, other_workspace, foreign)
        assert response.status_code == 404, response.content
        self._unchanged(other_workspace, before, audit_count)

    def test_bad_input_names_the_field(
        self,
        bad_input: BadInput,
        workspace: Workspace,
        ws_admin: User,
        api_client: Callable[[User], Client],
    ) -> None:
        obj = self.make_object(workspace)
        operation = self._operation(bad_input.operation)
        bad = Operation(
            name=operation.name,
            method=operation.method,
            url=operation.url,
            payload=bad_input.payload,
        )
        client = api_client(ws_admin)
        before, audit_count = self.snapshot(workspace), AuditEntry.objects.count()
        response = call(client, bad, workspace, obj)
        assert 400 <= response.status_code < 500, response.content
        assert response.json()["field"] == bad_input.field
        assert response.json()["detail"]
        self._unchanged(workspace, before, audit_count)

    def test_mutation_is_audited(
        self,
        mutation: Operation,
        workspace: Workspace,
        ws_admin: User,
        api_client: Callable[[User], Client],
    ) -> None:
        obj = self.make_object(workspace)
        client = api_client(ws_admin)
        before = set(AuditEntry.objects.values_list("pk", flat=True))
        response = call(client, mutation, workspace, obj)
        assert response.status_code == mutation.status, response.content
        written = AuditEntry.objects.exclude(pk__in=before)
        assert written.count() == 1
        entry = written.get()
        assert entry.actor == ws_admin
        assert entry.action == mutation.audit_action
        assert entry.workspace == workspace
        assert entry.ip == CLIENT_IP


class PaginatedListTests:
    """For resources with a list: ``list_url`` and at least two objects after ``make_object``."""

    list_url: ClassVar[Callable[[Workspace], str]]

    def make_object(self, workspace: Workspace) -> Any:
        raise NotImplementedError

    def test_list_is_paginated(
        self, workspace: Workspace, viewer: User, api_client: Callable[[User], Client]
    ) -> None:
        self.make_object(workspace)
        client = api_client(viewer)
        url = type(self).list_url(workspace)
        whole = client.get(url).json()
        assert set(whole) == {"items", "count"}
        assert whole["count"] == len(whole["items"]) >= 2
        first = client.get(url, {"limit": 1, "offset": 0}).json()
        second = client.get(url, {"limit": 1, "offset": 1}).json()
        assert first["count"] == second["count"] == whole["count"]
        assert len(first["items"]) == len(second["items"]) == 1
        too_many = client.get(url, {"limit": 501})
        assert too_many.status_code == 422
        assert too_many.json()["field"] == "limit"
        assert [first["items"][0], second["items"][0]] == whole["items"][:2]
