"""The scheduler API through the generic workspace-scoped tests, and what they do not cover."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from django.test import Client

from apps.accounts.models import User, Workspace
from apps.audit.models import AuditEntry
from apps.monitoring.models import Node
from apps.scheduler import selectors
from apps.scheduler.models import Job, NodeSchedule, Pool, Quota
from tests.api_base import BadInput, Operation, PaginatedListTests, WorkspaceScopedAPITests
from tests.conftest import Cast
from tests.scheduler.factories import (
    job_create,
    pool_create,
    quota_create,
    scheduled_node_create,
)

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture(autouse=True)
def pool(db: None) -> Pool:
    """The default pool with two shared nodes of 8 GPUs."""
    pool = pool_create("a100", is_default=True)
    scheduled_node_create("gpu-1", pool)
    scheduled_node_create("gpu-2", pool)
    return pool


def _pool() -> Pool:
    return Pool.objects.get(name="a100")


@dataclass
class Jobs:
    """One job of a workspace in each state the operations act on."""

    pending: Job
    held: Job
    running: Job
    finished: Job


def _jobs(workspace: Workspace) -> Jobs:
    pool = _pool()
    return Jobs(
        pending=job_create(workspace, pool, name="pending"),
        held=job_create(workspace, pool, name="held", state=Job.State.HELD),
        running=job_create(workspace, pool, name="running", state=Job.State.RUNNING),
        finished=job_create(workspace, pool, name="done", state=Job.State.SUCCEEDED),
    )


def _submit(**fields: Any) -> Callable[[Workspace, Jobs], dict]:
    def payload(workspace: Workspace, jobs: Jobs) -> dict:
        return {"workspace_id": workspace.pk, "name": "eval", "command": "python e.py", **fields}

    return payload


class TestJobAPI(WorkspaceScopedAPITests, PaginatedListTests):
    operations: ClassVar = [
        Operation("list", "get", lambda ws, jobs: f"/api/jobs?workspace_id={ws.pk}"),
        Operation("detail", "get", lambda ws, jobs: f"/api/jobs/{jobs.running.pk}"),
        Operation("events", "get", lambda ws, jobs: f"/api/jobs/{jobs.running.pk}/events"),
        Operation(
            "submit",
            "post",
            lambda ws, jobs: "/api/jobs",
            payload=_submit(gpus_per_node=2),
            audit_action="job.submit",
            status=201,
        ),
        Operation(
            "cancel",
            "post",
            lambda ws, jobs: f"/api/jobs/{jobs.pending.pk}/cancel",
            audit_action="job.cancel",
        ),
        Operation(
            "requeue",
            "post",
            lambda ws, jobs: f"/api/jobs/{jobs.finished.pk}/requeue",
            audit_action="job.requeue",
        ),
        Operation(
            "hold",
            "post",
            lambda ws, jobs: f"/api/jobs/{jobs.pending.pk}/hold",
            audit_action="job.hold",
        ),
        Operation(
            "release",
            "post",
            lambda ws, jobs: f"/api/jobs/{jobs.held.pk}/release",
            audit_action="job.release",
        ),
        Operation(
            "priority",
            "post",
            lambda ws, jobs: f"/api/jobs/{jobs.pending.pk}/priority",
            payload=lambda ws, jobs: {"priority": "high"},
            audit_action="job.priority",
        ),
    ]
    bad_inputs: ClassVar = [
        BadInput("submit", _submit(gpus_per_node=0), "gpus_per_node"),
        BadInput("submit", _submit(gpus_per_node=-1), "gpus_per_node"),
        BadInput("submit", _submit(gpus_per_node=16), "gpus_per_node"),
        BadInput("submit", _submit(gpus_per_node="many"), "gpus_per_node"),
        BadInput("submit", _submit(nodes=3, gpus_per_node=8), "nodes"),
        BadInput("submit", _submit(nodes=0), "nodes"),
        BadInput("submit", _submit(pool="h100"), "pool"),
        BadInput("submit", _submit(env={"PODIUM_JOB_ID": "7"}), "env"),
        BadInput("submit", _submit(env={"CUDA_VISIBLE_DEVICES": "0"}), "env"),
        BadInput("submit", _submit(env={"1BAD": "x"}), "env"),
        BadInput("submit", _submit(name=" "), "name"),
        BadInput("submit", _submit(priority="asap"), "priority"),
        BadInput("submit", _submit(workdir="relative/dir"), "workdir"),
        BadInput("submit", _submit(max_restarts=-1), "max_restarts"),
        BadInput("submit", _submit(hang_timeout=1), "hang_timeout"),
        BadInput("submit", _submit(cpus=0), "cpus"),
        BadInput("submit", _submit(cpus=4096), "cpus"),
        BadInput("submit", _submit(memory_mb=0), "memory_mb"),
        BadInput("submit", lambda ws, jobs: {"workspace_id": ws.pk, "name": "x"}, "command"),
        BadInput("priority", lambda ws, jobs: {"priority": "asap"}, "priority"),
    ]
    list_url = staticmethod(lambda ws: "/api/jobs")

    def make_object(self, workspace: Workspace) -> Jobs:
        return _jobs(workspace)

    def snapshot(self, workspace: Workspace) -> Any:
        jobs = Job.objects.filter(workspace=workspace)
        return sorted(jobs.values_list("pk", "state", "priority", "queue_order"))


def _node_payload(ws: Workspace, node: Node) -> dict:
    return {"reason": "fan replaced"}


class TestNodeSchedulingAPI(WorkspaceScopedAPITests):
    operations: ClassVar = [
        Operation("schedule", "get", lambda ws, node: f"/api/nodes/{node.pk}/schedule"),
        Operation("allocations", "get", lambda ws, node: f"/api/nodes/{node.pk}/allocations"),
        Operation(
            "cordon",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/cordon",
            payload=_node_payload,
            audit_action="node.cordon",
        ),
        Operation(
            "drain",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/drain",
            payload=_node_payload,
            audit_action="node.drain",
        ),
        Operation(
            "uncordon",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/uncordon",
            audit_action="node.uncordon",
        ),
        Operation(
            "take out",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/gpus/2/take-out",
            payload=_node_payload,
            audit_action="gpu.take_out",
        ),
        Operation(
            "put back",
            "post",
            lambda ws, node: f"/api/nodes/{node.pk}/gpus/5/put-back",
            audit_action="gpu.put_back",
        ),
    ]
    bad_inputs: ClassVar = [
        BadInput("cordon", lambda ws, node: {"reason": "x" * 201}, "reason"),
        BadInput("take out", lambda ws, node: {"reason": 5}, "reason"),
    ]

    def make_object(self, workspace: Workspace) -> Node:
        pool = _pool()
        node = scheduled_node_create(
            f"{workspace.name.lower()}-1", pool, workspace=workspace, gpus_out=[5]
        )
        job_create(workspace, pool, state=Job.State.RUNNING, on=[(node, [0, 1])])
        return node

    def snapshot(self, workspace: Workspace) -> Any:
        schedules = NodeSchedule.objects.filter(node__workspace=workspace)
        jobs = Job.objects.filter(workspace=workspace)
        return (
            sorted(schedules.values_list("node_id", "state", "state_reason", "gpus_out")),
            sorted(jobs.values_list("pk", "state")),
        )


# Jobs beyond the generic tests ---------------------------------------------------------


def test_a_submitted_job_is_pending_with_its_spec(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    response = api_client(cast.member).post(
        "/api/jobs",
        {
            "workspace_id": cast.workspace.pk,
            "name": "pretrain",
            "command": "torchrun train.py",
            "nodes": 2,
            "gpus_per_node": 8,
            "pool": "a100",
            "priority": "high",
            "max_restarts": 5,
            "env": {"BATCH": 64, "MODEL": "7b"},
            "workdir": "/data/run",
            "hang_timeout": 600,
        },
        content_type=JSON,
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["state"], body["pool"], body["workspace"]) == ("pending", "a100", "Vision")
    assert (body["nodes"], body["gpus_per_node"], body["priority"]) == (2, 8, "high")
    assert body["env"] == {"BATCH": "64", "MODEL": "7b"}
    assert (body["max_restarts"], body["restarts"], body["attempt"]) == (5, 0, 0)
    assert body["submitted_by"] == "bob"
    assert body["allocation"] == []
    assert body["queue"] is None
    job = Job.objects.get(pk=body["id"])
    assert (job.workdir, job.hang_timeout, job.grace_seconds) == ("/data/run", 600.0, 60.0)


def test_submitting_to_a_viewed_workspace_is_forbidden_and_a_foreign_one_not_found(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    payload = {"name": "x", "command": "true"}

    viewed = api_client(cast.viewer).post(
        "/api/jobs", {**payload, "workspace_id": cast.workspace.pk}, content_type=JSON
    )
    foreign = api_client(cast.member).post(
        "/api/jobs", {**payload, "workspace_id": cast.other_workspace.pk}, content_type=JSON
    )

    assert viewed.status_code == 403
    assert "Viewers" in viewed.json()["detail"]
    assert foreign.status_code == 404
    assert foreign.json()["field"] == "workspace_id"
    assert not Job.objects.exists()


def test_more_gpus_than_the_quota_allows_names_the_field(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    quota_create(cast.workspace, pool, maximum=4)

    response = api_client(cast.member).post(
        "/api/jobs",
        {"workspace_id": cast.workspace.pk, "name": "x", "command": "true", "gpus_per_node": 8},
        content_type=JSON,
    )

    assert response.status_code == 400
    assert response.json()["field"] == "gpus_per_node"
    assert "at most 4" in response.json()["detail"]


def test_only_workspace_admins_submit_urgent_jobs(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    payload = {"workspace_id": cast.workspace.pk, "name": "x", "command": "true"}

    member = api_client(cast.member).post(
        "/api/jobs", {**payload, "priority": "urgent"}, content_type=JSON
    )
    admin = api_client(cast.ws_admin).post(
        "/api/jobs", {**payload, "priority": "urgent"}, content_type=JSON
    )

    assert member.status_code == 403
    assert admin.status_code == 201
    assert admin.json()["priority"] == "urgent"


def test_a_running_job_shows_the_nodes_and_gpus_of_its_allocation(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    first, second = Node.objects.order_by("name")
    job = job_create(
        cast.workspace,
        pool,
        state=Job.State.RUNNING,
        nodes=2,
        gpus_per_node=4,
        on=[(first, [0, 1, 2, 3]), (second, [4, 5, 6, 7])],
    )

    body = api_client(cast.viewer).get(f"/api/jobs/{job.pk}").json()

    assert body["state"] == "running"
    assert [(a["rank"], a["node"], a["gpus"], a["state"]) for a in body["allocation"]] == [
        (0, "gpu-1", [0, 1, 2, 3], "running"),
        (1, "gpu-2", [4, 5, 6, 7], "running"),
    ]
    assert body["allocation"][0]["node_id"] == first.pk
    assert body["allocation"][1]["pid"] == 4001


def test_a_pending_job_says_where_it_waits_and_why(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_create(cast.workspace, pool, nodes=1, gpus_per_node=8)
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(
        selectors,
        "queue_info",
        lambda ids: {
            i: {
                "position": 3,
                "reason": "waiting for 8 GPUs on one node",
                "estimated_start": start,
                "reserved": True,
            }
            for i in ids
        },
    )

    body = api_client(cast.member).get(f"/api/jobs/{job.pk}").json()

    assert body["queue"] == {
        "position": 3,
        "reason": "waiting for 8 GPUs on one node",
        "estimated_start": "2030-01-01T12:00:00Z",
        "reserved": True,
    }


def test_the_job_list_filters_by_state_pool_and_text(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    jobs = _jobs(cast.workspace)
    other_pool = pool_create("h100")
    scheduled_node_create("h-1", other_pool)
    elsewhere = job_create(cast.workspace, other_pool, name="bert-finetune")
    job_create(cast.other_workspace, pool, name="theirs")
    client = api_client(cast.member)

    def ids(**params: Any) -> list[int]:
        response = client.get("/api/jobs", params)
        assert response.status_code == 200, response.content
        return sorted(j["id"] for j in response.json()["items"])

    assert len(ids()) == 5
    assert ids(state="pending,held") == sorted([jobs.pending.pk, jobs.held.pk, elsewhere.pk])
    assert client.get("/api/jobs?state=running&state=succeeded").json()["count"] == 2
    assert ids(pool="h100") == [elsewhere.pk]
    assert ids(q="BERT") == [elsewhere.pk]
    bad_state = client.get("/api/jobs", {"state": "pending,sleeping"})
    assert (bad_state.status_code, bad_state.json()["field"]) == (400, "state")
    bad_pool = client.get("/api/jobs", {"pool": "tpu"})
    assert (bad_pool.status_code, bad_pool.json()["field"]) == (400, "pool")


def test_the_job_list_costs_the_same_queries_for_many_jobs(
    cast: Cast,
    api_client: Callable[[User], Client],
    pool: Pool,
    django_assert_max_num_queries: Any,
) -> None:
    client = api_client(cast.member)
    job_create(cast.workspace, pool, state=Job.State.RUNNING)
    job_create(cast.workspace, pool)
    with django_assert_max_num_queries(12) as few:
        client.get("/api/jobs")
    for i in range(15):
        job_create(cast.workspace, pool, name=f"j{i}", state=Job.State.RUNNING)
        job_create(cast.workspace, pool, name=f"p{i}")

    with django_assert_max_num_queries(len(few.captured_queries)):
        body = client.get("/api/jobs").json()

    assert body["count"] == 32
    assert sum(len(j["allocation"]) for j in body["items"]) == 16


def test_the_timeline_lists_every_event_with_its_actor(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    job = job_create(cast.workspace, pool, submitted_by=cast.member)
    client = api_client(cast.member)
    client.post(f"/api/jobs/{job.pk}/hold")
    client.post(f"/api/jobs/{job.pk}/release")

    body = client.get(f"/api/jobs/{job.pk}/events").json()

    assert body["count"] == 3
    assert [(e["kind"], e["from_state"], e["to_state"], e["actor"]) for e in body["items"]] == [
        ("submitted", "", "", "bob"),
        ("held", "pending", "held", "bob"),
        ("released", "held", "pending", "bob"),
    ]
    assert body["items"][1]["reason"] == "held by bob"


def test_cancelling_a_running_job_stops_it_and_a_finished_one_is_refused(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    running = job_create(cast.workspace, pool, state=Job.State.RUNNING)
    done = job_create(cast.workspace, pool, state=Job.State.FAILED)
    client = api_client(cast.member)

    stopping = client.post(f"/api/jobs/{running.pk}/cancel")
    refused = client.post(f"/api/jobs/{done.pk}/cancel")

    assert stopping.status_code == 200
    assert (stopping.json()["state"], stopping.json()["intent"]) == ("stopping", "cancel")
    assert refused.status_code == 409
    assert "already failed" in refused.json()["detail"]


def test_requeueing_a_running_job_preempts_it(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    job = job_create(cast.workspace, pool, state=Job.State.RUNNING)

    body = api_client(cast.member).post(f"/api/jobs/{job.pk}/requeue").json()

    assert (body["state"], body["intent"]) == ("preempting", "requeue")
    assert body["state_reason"] == "requeued by bob"


def test_platform_admins_move_jobs_in_the_queue(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    first = job_create(cast.workspace, pool, name="first")
    second = job_create(cast.workspace, pool, name="second")
    third = job_create(cast.workspace, pool, name="third")
    admin = api_client(cast.platform_admin)

    refused = api_client(cast.ws_admin).post(
        f"/api/jobs/{third.pk}/move", {"position": "top"}, content_type=JSON
    )
    top = admin.post(f"/api/jobs/{third.pk}/move", {"position": "top"}, content_type=JSON)
    before = admin.post(f"/api/jobs/{first.pk}/move", {"before": second.pk}, content_type=JSON)
    nowhere = admin.post(f"/api/jobs/{first.pk}/move", {"position": "middle"}, content_type=JSON)
    missing = admin.post(f"/api/jobs/{first.pk}/move", {"before": 999_999}, content_type=JSON)

    assert refused.status_code == 403
    assert (top.status_code, before.status_code) == (200, 200)
    order = list(Job.objects.order_by("queue_order").values_list("name", flat=True))
    assert order == ["third", "first", "second"]
    assert (nowhere.status_code, nowhere.json()["field"]) == (400, "position")
    assert (missing.status_code, missing.json()["field"]) == (404, "before")
    assert AuditEntry.objects.filter(action="job.move").count() == 2


# Pools ---------------------------------------------------------------------------------


def test_pools_show_capacity_and_name_only_the_users_workspaces(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    quota_create(cast.workspace, pool, guaranteed=4, maximum=12)
    quota_create(cast.other_workspace, pool, guaranteed=8, maximum=16)
    job_create(cast.workspace, pool, state=Job.State.RUNNING, gpus_per_node=6)
    job_create(cast.other_workspace, pool, state=Job.State.RUNNING, gpus_per_node=2)
    job_create(cast.workspace, pool)

    body = api_client(cast.member).get("/api/pools").json()

    assert body["count"] == 1
    shown = body["items"][0]
    assert (shown["name"], shown["is_default"], shown["node_count"]) == ("a100", True, 2)
    assert (shown["gpus"], shown["used"], shown["free"], shown["out"]) == (16, 8, 8, 0)
    assert shown["pending_jobs"] == 1
    assert shown["workspaces"] == [
        {
            "workspace_id": cast.workspace.pk,
            "name": "Vision",
            "guaranteed": 4,
            "maximum": 12,
            "weight": 1.0,
            "used": 6,
            "borrowed": 2,
            "pending": 1,
        },
        {
            "workspace_id": None,
            "name": "Other workspaces",
            "guaranteed": 8,
            "maximum": None,
            "weight": 1.0,
            "used": 2,
            "borrowed": 0,
            "pending": 0,
        },
    ]
    admin_view = api_client(cast.platform_admin).get(f"/api/pools/{pool.pk}").json()
    assert [w["name"] for w in admin_view["workspaces"]] == ["Speech", "Vision"]


def test_only_platform_admins_manage_pools(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    admin = api_client(cast.platform_admin)
    refused = api_client(cast.ws_admin).post("/api/pools", {"name": "h100"}, content_type=JSON)

    created = admin.post("/api/pools", {"name": "h100", "description": "H100"}, content_type=JSON)
    duplicate = admin.post("/api/pools", {"name": "h100"}, content_type=JSON)
    bad_name = admin.post("/api/pools", {"name": "no spaces"}, content_type=JSON)
    new_id = created.json()["id"]
    renamed = admin.patch(f"/api/pools/{new_id}", {"name": "h100-sxm"}, content_type=JSON)
    member_patch = api_client(cast.member).patch(
        f"/api/pools/{new_id}", {"name": "mine"}, content_type=JSON
    )
    busy = admin.delete(f"/api/pools/{pool.pk}")
    default_too = admin.patch(f"/api/pools/{new_id}", {"is_default": True}, content_type=JSON)
    old_default = admin.delete(f"/api/pools/{pool.pk}")

    assert refused.status_code == 403
    assert created.status_code == 201
    assert (created.json()["gpus"], created.json()["workspaces"]) == (0, [])
    assert (duplicate.status_code, duplicate.json()["field"]) == (409, "name")
    assert (bad_name.status_code, bad_name.json()["field"]) == (400, "name")
    assert renamed.json()["name"] == "h100-sxm"
    assert member_patch.status_code == 403
    assert busy.status_code == 409
    assert default_too.json()["is_default"] is True
    assert old_default.status_code == 409
    assert "nodes" in old_default.json()["detail"]
    assert admin.delete(f"/api/pools/{new_id}").status_code == 409
    spare = admin.post("/api/pools", {"name": "spare"}, content_type=JSON).json()
    assert admin.delete(f"/api/pools/{spare['id']}").status_code == 204
    assert not Pool.objects.filter(name="spare").exists()
    assert admin.get("/api/pools/999999").status_code == 404


def test_the_pool_queue_lists_waiting_jobs_in_order(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    first = job_create(cast.workspace, pool, name="first")
    held = job_create(cast.workspace, pool, name="held", state=Job.State.HELD)
    second = job_create(cast.workspace, pool, name="second")
    job_create(cast.workspace, pool, name="running", state=Job.State.RUNNING)
    job_create(cast.other_workspace, pool, name="theirs")

    body = api_client(cast.member).get(f"/api/pools/{pool.pk}/queue").json()

    assert [j["id"] for j in body["items"]] == [first.pk, second.pk, held.pk]


# Quotas --------------------------------------------------------------------------------


def test_platform_admins_set_quotas_and_others_are_refused(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    payload = {"workspace_id": cast.workspace.pk, "pool": "a100", "guaranteed": 4, "maximum": 8}
    admin = api_client(cast.platform_admin)

    refused = api_client(cast.ws_admin).put("/api/quotas", payload, content_type=JSON)
    created = admin.put("/api/quotas", payload, content_type=JSON)
    changed = admin.put("/api/quotas", {**payload, "maximum": 12, "weight": 2}, content_type=JSON)

    assert refused.status_code == 403
    assert created.status_code == 200, created.content
    assert changed.json()["id"] == created.json()["id"]
    assert (changed.json()["workspace"], changed.json()["pool"]) == ("Vision", "a100")
    assert (changed.json()["guaranteed"], changed.json()["maximum"], changed.json()["weight"]) == (
        4,
        12,
        2.0,
    )
    assert Quota.objects.count() == 1
    assert AuditEntry.objects.filter(action="quota.set").count() == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"maximum": 4}, "maximum"),
        ({"guaranteed": 8, "maximum": 6}, "maximum"),
        ({"guaranteed": 20, "maximum": 20}, "guaranteed"),
        ({"pool": "h100"}, "pool"),
        ({"maximum": -1}, "maximum"),
        ({"maximum": "lots"}, "maximum"),
        ({"weight": 0}, "weight"),
    ],
)
def test_a_bad_quota_names_the_field(
    cast: Cast,
    api_client: Callable[[User], Client],
    pool: Pool,
    change: dict[str, Any],
    field: str,
) -> None:
    job_create(cast.workspace, pool, state=Job.State.RUNNING, gpus_per_node=6)
    payload = {"workspace_id": cast.workspace.pk, "pool": "a100", "maximum": 8, **change}

    response = api_client(cast.platform_admin).put("/api/quotas", payload, content_type=JSON)

    assert 400 <= response.status_code < 500, response.content
    assert response.json()["field"] == field
    assert not Quota.objects.exists()


def test_quotas_are_visible_to_admins_and_to_their_workspaces_members(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    mine = quota_create(cast.workspace, pool, maximum=8)
    theirs = quota_create(cast.other_workspace, pool, maximum=8)
    other_pool = pool_create("h100")
    quota_create(cast.workspace, other_pool, maximum=2)

    def ids(user: User, **params: Any) -> list[int]:
        return sorted(q["id"] for q in api_client(user).get("/api/quotas", params).json()["items"])

    assert len(ids(cast.platform_admin)) == 3
    assert ids(cast.platform_admin, pool="a100") == sorted([mine.pk, theirs.pk])
    assert ids(cast.viewer, pool="a100") == [mine.pk]
    assert ids(cast.platform_admin, workspace_id=cast.other_workspace.pk) == [theirs.pk]
    assert ids(cast.member, workspace_id=cast.other_workspace.pk) == []

    assert api_client(cast.outsider).delete(f"/api/quotas/{mine.pk}").status_code == 404
    assert api_client(cast.ws_admin).delete(f"/api/quotas/{mine.pk}").status_code == 403
    assert api_client(cast.platform_admin).delete(f"/api/quotas/{mine.pk}").status_code == 204
    assert not Quota.objects.filter(pk=mine.pk).exists()


# Nodes ---------------------------------------------------------------------------------


def test_draining_a_node_requeues_its_jobs_and_uncordon_takes_jobs_again(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    node = Node.objects.get(name="gpu-1")
    job = job_create(cast.workspace, pool, state=Job.State.RUNNING, on=[(node, [0])])
    admin = api_client(cast.platform_admin)

    drained = admin.post(f"/api/nodes/{node.pk}/drain", {"reason": "ECC"}, content_type=JSON)
    job.refresh_from_db()
    uncordoned = admin.post(f"/api/nodes/{node.pk}/uncordon")

    assert drained.status_code == 200
    assert (drained.json()["state"], drained.json()["state_reason"]) == ("draining", "ECC")
    assert (job.state, job.intent) == ("preempting", "requeue")
    assert "drained by root" in job.state_reason
    assert (uncordoned.json()["state"], uncordoned.json()["state_reason"]) == ("active", "")


def test_only_node_managers_cordon_shared_nodes(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    node = Node.objects.get(name="gpu-1")

    url = f"/api/nodes/{node.pk}/cordon"

    refused = api_client(cast.ws_admin).post(url, content_type=JSON)
    cordoned = api_client(cast.platform_admin).post(url, content_type=JSON)

    assert refused.status_code == 403
    assert (cordoned.json()["state"], cordoned.json()["state_reason"]) == (
        "cordoned",
        "cordoned by root",
    )
    assert cordoned.json()["pool"] == "a100"


def test_gpus_are_taken_out_and_put_back(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    node = Node.objects.get(name="gpu-2")
    on_three = job_create(cast.workspace, pool, state=Job.State.RUNNING, on=[(node, [3])])
    elsewhere = job_create(cast.workspace, pool, state=Job.State.RUNNING, on=[(node, [4])])
    admin = api_client(cast.platform_admin)
    url = f"/api/nodes/{node.pk}/gpus"

    out = admin.post(f"{url}/3/take-out", {"reason": "XID 79"}, content_type=JSON)
    again = admin.post(f"{url}/3/take-out", {}, content_type=JSON)
    missing = admin.post(f"{url}/99/take-out", {}, content_type=JSON)
    not_out = admin.post(f"{url}/4/put-back")
    on_three.refresh_from_db()
    elsewhere.refresh_from_db()

    assert out.json()["gpus_out"] == [3]
    assert on_three.state == "preempting"
    assert elsewhere.state == "running"
    assert again.status_code == 409
    assert (missing.status_code, missing.json()["field"]) == (400, "index")
    assert not_out.status_code == 409
    assert admin.post(f"{url}/3/put-back").json()["gpus_out"] == []


def test_moving_a_node_to_another_pool(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    busy, idle = Node.objects.order_by("name")
    job_create(cast.workspace, pool, state=Job.State.RUNNING, on=[(busy, [0])])
    pool_create("h100")
    admin = api_client(cast.platform_admin)

    moved = admin.put(f"/api/nodes/{idle.pk}/pool", {"pool": "h100"}, content_type=JSON)
    refused = admin.put(f"/api/nodes/{busy.pk}/pool", {"pool": "h100"}, content_type=JSON)
    unknown = admin.put(f"/api/nodes/{idle.pk}/pool", {"pool": "tpu"}, content_type=JSON)
    member = api_client(cast.ws_admin).put(
        f"/api/nodes/{idle.pk}/pool", {"pool": "a100"}, content_type=JSON
    )

    assert moved.json()["pool"] == "h100"
    assert (refused.status_code, refused.json()["field"]) == (409, "pool")
    assert (unknown.status_code, unknown.json()["field"]) == (400, "pool")
    assert member.status_code == 403


def test_a_nodes_allocations_show_only_visible_jobs(
    cast: Cast, api_client: Callable[[User], Client], pool: Pool
) -> None:
    node = Node.objects.get(name="gpu-1")
    mine = job_create(cast.workspace, pool, state=Job.State.RUNNING, on=[(node, [0, 1])])
    job_create(cast.other_workspace, pool, state=Job.State.RUNNING, on=[(node, [2])])

    body = api_client(cast.member).get(f"/api/nodes/{node.pk}/allocations").json()

    assert body["count"] == 1
    assert body["items"][0] | {"started_at": None} == {
        "job_id": mine.pk,
        "job": "train",
        "workspace_id": cast.workspace.pk,
        "workspace": "Vision",
        "attempt": 1,
        "rank": 0,
        "gpus": [0, 1],
        "state": "running",
        "pid": 4000,
        "started_at": None,
    }
