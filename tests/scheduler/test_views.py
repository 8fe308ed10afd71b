"""Pages: they render for the roles that may see them, within a query budget, and act."""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.monitoring.models import Node
from apps.scheduler import selectors
from apps.scheduler.models import Job, NodeSchedule, Pool, Quota
from tests.conftest import Cast
from tests.pages import field_label, html, job_form, row_of
from tests.scheduler.factories import job_create, pool_create, quota_create, scheduled_node_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def pool(db: None) -> Pool:
    """The default pool with two shared nodes of 8 GPUs."""
    pool = pool_create("a100", is_default=True)
    scheduled_node_create("gpu-1", pool)
    scheduled_node_create("gpu-2", pool)
    return pool


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pending job waits in third place for 8 GPUs on one node, until 12:00."""
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(
        selectors,
        "queue_info",
        lambda ids: {
            i: {
                "position": 3,
                "reason": "waiting for 8 GPUs on one node",
                "estimated_start": start,
                "reserved": False,
            }
            for i in ids
        },
    )


def csrf_of(client: Client, url: str) -> str:
    """The CSRF token a page hands the browser (the page sets the cookie)."""
    assert client.get(url).status_code == 200
    return client.cookies["csrftoken"].value


# Queue ---------------------------------------------------------------------------------


def test_the_queue_shows_why_each_job_waits_and_what_runs(
    cast: Cast, pool: Pool, queued: None, session_client: Callable[..., Client]
) -> None:
    waiting = job_create(cast.workspace, pool, name="pretrain", nodes=2, gpus_per_node=8)
    held = job_create(cast.workspace, pool, name="paused", state=Job.State.HELD)
    running = job_create(cast.workspace, pool, name="finetune", state=Job.State.RUNNING)
    job_create(cast.other_workspace, pool, name="secret-run")

    response = session_client(cast.member).get("/scheduler/")

    page = html(response)
    assert response.status_code == 200
    assert f'id="queue-pool-{pool.pk}"' in page
    assert f'data-pool-live="{pool.pk}"' in page
    row = row_of(page, f"queue-job-{waiting.pk}")
    assert "pretrain" in row
    assert "2 x 8" in row
    assert ">3<" in row
    assert "waiting for 8 GPUs on one node" in row
    assert "2030-01-01 12:00" in row
    assert f'id="queue-job-{held.pk}"' in page
    assert f'id="running-job-{running.pk}"' in page
    assert "gpu-1 <span" in page
    assert "secret-run" not in page
    assert 'href="/scheduler/jobs/new/"' in page
    assert "podium/scheduler/pool.js" in page


def test_the_queue_follows_the_passs_positions_and_counts_every_waiting_job(
    cast: Cast,
    pool: Pool,
    session_client: Callable[..., Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = [job_create(cast.workspace, pool, name=f"job-{n}") for n in range(4)]
    positions = {jobs[3].pk: 1, jobs[0].pk: 2, jobs[2].pk: 3, jobs[1].pk: 4}
    monkeypatch.setattr(
        selectors,
        "queue_info",
        lambda ids: {i: {"position": positions[i], "reason": "waiting"} for i in ids},
    )

    shown, _, waiting = selectors.pool_queue(user=cast.member, pool=pool, limit=2)
    page = html(session_client(cast.member).get("/scheduler/"))

    assert [job.pk for job in shown] == [jobs[3].pk, jobs[0].pk]
    assert waiting == 4
    assert page.index(f'id="queue-job-{jobs[3].pk}"') < page.index(f'id="queue-job-{jobs[0].pk}"')


def test_the_pool_picker_narrows_the_queue_to_one_pool(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    other = pool_create("h100")
    client = session_client(cast.member)

    everything = html(client.get("/scheduler/"))
    one = html(client.get("/scheduler/", {"pool": other.pk}))
    section = html(client.get(f"/scheduler/pools/{pool.pk}/queue/"))

    assert f'id="queue-pool-{pool.pk}"' in everything
    assert f'id="queue-pool-{other.pk}"' in everything
    assert f'id="queue-pool-{other.pk}"' in one
    assert f'id="queue-pool-{pool.pk}"' not in one
    assert f'<option value="{other.pk}" selected>' in one
    assert section.lstrip().startswith(f'<section id="queue-pool-{pool.pk}"')


# Jobs ----------------------------------------------------------------------------------


def test_the_job_list_filters_and_stays_within_budget(
    cast: Cast,
    pool: Pool,
    queued: None,
    session_client: Callable[..., Client],
    django_assert_max_num_queries: Any,
) -> None:
    client = session_client(cast.member)
    job_create(cast.workspace, pool, name="first", state=Job.State.RUNNING)
    job_create(cast.workspace, pool, name="second")
    with django_assert_max_num_queries(14) as few:
        client.get("/scheduler/jobs/")
    for i in range(20):
        job_create(cast.workspace, pool, name=f"run-{i}", state=Job.State.RUNNING)
        job_create(cast.workspace, pool, name=f"wait-{i}")
    job_create(cast.other_workspace, pool, name="secret-run")

    with django_assert_max_num_queries(len(few.captured_queries)):
        page = html(client.get("/scheduler/jobs/"))

    assert page.count('<tr id="job-') == 42
    assert "secret-run" not in page
    assert "#3: waiting for 8 GPUs on one node" in page
    partial = html(client.get("/scheduler/jobs/?state=running&q=run-1", HTTP_HX_REQUEST="true"))
    assert partial.lstrip().startswith('<div id="jobs">')
    assert partial.count('<tr id="job-') == 11
    assert "wait-" not in partial


def test_the_job_page_shows_state_ranks_timeline_and_actions(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    first, second = Node.objects.order_by("name")
    job = job_create(
        cast.workspace,
        pool,
        name="pretrain",
        state=Job.State.RUNNING,
        nodes=2,
        gpus_per_node=4,
        on=[(first, [0, 1, 2, 3]), (second, [4, 5, 6, 7])],
        submitted_by=cast.member,
    )

    response = session_client(cast.member).get(f"/scheduler/jobs/{job.pk}/")

    page = html(response)
    assert response.status_code == 200
    assert 'id="job-state-badge" class="badge job-running" data-state="running"' in page
    assert f'href="/monitoring/nodes/{first.pk}/"' in page
    assert "4, 5, 6, 7" in page
    assert 'id="rank-1"' in page
    assert "<code>submitted</code>" in page
    assert "<code>scheduled</code>" in page
    assert 'value="cancel"' in page
    assert 'value="hold"' in page
    assert 'value="requeue"' in page
    assert 'value="release"' not in page
    assert 'value="top"' not in page
    assert 'value="urgent"' not in page
    assert 'id="job-logs"' in page
    assert 'id="job-live-config"' in page
    assert "podium/scheduler/job.js" in page
    assert f'hx-get="/scheduler/jobs/{job.pk}/state/"' in page
    partial = html(session_client(cast.member).get(f"/scheduler/jobs/{job.pk}/state/"))
    assert partial.lstrip().startswith('<div id="job-state"')


def test_viewers_see_no_actions_and_admins_move_jobs(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = job_create(cast.workspace, pool)

    viewer = html(session_client(cast.viewer).get(f"/scheduler/jobs/{job.pk}/"))
    admin = html(session_client(cast.platform_admin).get(f"/scheduler/jobs/{job.pk}/"))

    assert 'name="action"' not in viewer
    assert 'value="top"' in admin
    assert 'value="bottom"' in admin
    assert 'value="urgent"' in admin


def test_another_workspaces_job_is_not_found(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = job_create(cast.other_workspace, pool, state=Job.State.RUNNING)
    client = session_client(cast.member)

    assert client.get(f"/scheduler/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/scheduler/jobs/{job.pk}/state/").status_code == 404
    assert client.post(f"/scheduler/jobs/{job.pk}/action/", {"action": "cancel"}).status_code == 404
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING


def test_the_submit_form_queues_a_job(
    cast: Cast, pool: Pool, session_client: Callable[..., Client], make_workspace: Any
) -> None:
    make_workspace("Audio", {cast.member: "viewer"})
    client = session_client(cast.member)
    form = html(client.get("/scheduler/jobs/new/"))
    assert f'<option value="{cast.workspace.pk}">Vision</option>' in form
    assert "Audio" not in form

    response = client.post(
        "/scheduler/jobs/new/",
        {
            "workspace": cast.workspace.pk,
            "name": "pretrain",
            "command": "torchrun train.py",
            "pool": "a100",
            "nodes": 2,
            "gpus_per_node": 8,
            "priority": "high",
            "max_restarts": 1,
            "env": "BATCH=64\n# comment\n\nMODEL=7b=large\n",
            "workdir": "/data",
            "max_duration": "",
            "hang_timeout": 900,
            "grace_seconds": 30,
        },
    )

    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/scheduler/jobs/{job.pk}/"
    assert (job.workspace, job.pool, job.submitted_by) == (cast.workspace, pool, cast.member)
    assert (job.nodes, job.gpus_per_node, job.priority, job.max_restarts) == (2, 8, "high", 1)
    assert job.env == {"BATCH": "64", "MODEL": "7b=large"}
    assert (job.hang_timeout, job.grace_seconds, job.max_duration) == (900.0, 30.0, None)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"gpus_per_node": 0}, "gpus_per_node", "between 1 and 64"),
        ({"gpus_per_node": 16}, "gpus_per_node", "No node in pool a100 has 16 GPUs"),
        ({"nodes": 3, "gpus_per_node": 8}, "nodes", "the job asks for 3"),
        ({"env": "PODIUM_RANK=1"}, "env", "set by Podium itself"),
        ({"env": "just words"}, "env", "Line 1 is not KEY=VALUE"),
        ({"workdir": "relative"}, "workdir", "absolute path"),
        ({"name": ""}, "name", "required"),
    ],
)
def test_the_submit_form_shows_errors_by_field(
    cast: Cast,
    session_client: Callable[..., Client],
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    response = session_client(cast.member).post(
        "/scheduler/jobs/new/", job_form(cast.workspace, **change)
    )

    page = html(response)
    assert response.status_code == 400
    error = field_label(page, field)
    assert 'class="error"' in error
    assert message in error
    assert not Job.objects.exists()


def test_a_viewer_only_user_is_told_they_cannot_submit(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    page = html(session_client(cast.viewer).get("/scheduler/jobs/new/"))

    assert "You may not submit jobs" in page
    assert 'id="job-submit"' not in page


def test_job_actions_need_the_csrf_token_and_answer_htmx_with_the_state(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = job_create(cast.workspace, pool)
    client = session_client(cast.member, csrf=True)
    url = f"/scheduler/jobs/{job.pk}/action/"

    forged = client.post(url, {"action": "hold"})
    job.refresh_from_db()
    assert forged.status_code == 403
    assert job.state == Job.State.PENDING

    token = csrf_of(client, f"/scheduler/jobs/{job.pk}/")
    held = client.post(url, {"action": "hold"}, HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    job.refresh_from_db()
    assert held.status_code == 200
    assert html(held).lstrip().startswith('<div id="job-state"')
    assert 'data-state="held"' in html(held)
    assert job.state == Job.State.HELD

    again = client.post(url, {"action": "hold"}, HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    assert again.status_code == 409
    assert "cannot be held" in html(again)

    priority = client.post(
        url, {"action": "priority", "priority": "high", "csrfmiddlewaretoken": token}
    )
    assert priority.status_code == 302
    job.refresh_from_db()
    assert job.priority == "high"
    assert AuditEntry.objects.filter(action__in=["job.hold", "job.priority"]).count() == 2


def test_a_viewer_cannot_cancel_from_the_page(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = job_create(cast.workspace, pool)

    response = session_client(cast.viewer).post(
        f"/scheduler/jobs/{job.pk}/action/", {"action": "cancel"}
    )

    assert response.status_code == 403
    job.refresh_from_db()
    assert job.state == Job.State.PENDING


def test_a_platform_admin_moves_a_job_to_the_top(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    first = job_create(cast.workspace, pool, name="first")
    last = job_create(cast.workspace, pool, name="last")

    response = session_client(cast.platform_admin).post(
        f"/scheduler/jobs/{last.pk}/action/", {"action": "top"}
    )

    assert response.status_code == 302
    last.refresh_from_db()
    first.refresh_from_db()
    assert last.queue_order < first.queue_order


# Pools ---------------------------------------------------------------------------------


def test_the_pool_page_draws_usage_bars_the_queue_and_nodes(
    cast: Cast, pool: Pool, queued: None, session_client: Callable[..., Client]
) -> None:
    quota_create(cast.workspace, pool, guaranteed=4, maximum=12)
    job_create(cast.workspace, pool, state=Job.State.RUNNING, gpus_per_node=6)
    waiting = job_create(cast.workspace, pool, name="waiting")
    NodeSchedule.objects.filter(node__name="gpu-2").update(
        state=NodeSchedule.State.CORDONED, state_reason="fan", gpus_out=[3]
    )

    response = session_client(cast.member).get(f"/scheduler/pools/{pool.pk}/")

    page = html(response)
    assert response.status_code == 200
    assert f'hx-get="/scheduler/pools/{pool.pk}/usage/"' in page
    assert 'hx-trigger="every 5s, pool-changed delay:250ms"' in page
    assert f'id="usage-{cast.workspace.pk}"' in page
    bar = row_of(page, f"usage-{cast.workspace.pk}")
    assert 'class="guarantee" style="width: 26.67%"' in bar
    assert 'class="seg within" style="width: 26.67%"' in bar
    assert 'class="seg borrowed" style="width: 13.33%"' in bar
    assert 'class="maximum" style="left: 80.00%"' in bar
    assert f'id="queue-job-{waiting.pk}"' in page
    assert ">cordoned<" in page
    assert "fan" in page
    assert 'id="quota-set"' not in page
    usage = html(session_client(cast.member).get(f"/scheduler/pools/{pool.pk}/usage/"))
    assert usage.lstrip().startswith('<div id="pool-usage"')


def test_platform_admins_create_pools_set_quotas_and_move_nodes(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.platform_admin)

    created = client.post("/scheduler/pools/", {"name": "h100", "description": "H100 SXM"})
    h100 = Pool.objects.get(name="h100")
    assert created.status_code == 302
    assert created["Location"] == f"/scheduler/pools/{h100.pk}/"
    duplicate = client.post("/scheduler/pools/", {"name": "h100"})
    assert duplicate.status_code == 400
    assert "already exists" in html(duplicate)

    node = Node.objects.get(name="gpu-2")
    moved = client.post(f"/scheduler/pools/{h100.pk}/", {"form": "node", "node": node.pk})
    assert moved.status_code == 302
    assert NodeSchedule.objects.get(node=node).pool == h100

    quota = client.post(
        f"/scheduler/pools/{h100.pk}/",
        {
            "form": "quota",
            "workspace": cast.workspace.pk,
            "guaranteed": 2,
            "maximum": 8,
            "weight": 1,
        },
    )
    assert quota.status_code == 302
    too_much = client.post(
        f"/scheduler/pools/{h100.pk}/",
        {
            "form": "quota",
            "workspace": cast.workspace.pk,
            "guaranteed": 9,
            "maximum": 9,
            "weight": 1,
        },
    )
    assert too_much.status_code == 400
    assert "more than its 8" in html(too_much)
    saved = Quota.objects.get()
    assert (saved.pool, saved.guaranteed, saved.maximum) == (h100, 2, 8)

    removed = client.post(f"/scheduler/quotas/{saved.pk}/delete/")
    assert removed.status_code == 302
    assert not Quota.objects.exists()


def test_pool_admin_forms_are_refused_to_others(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.ws_admin)

    assert client.post("/scheduler/pools/", {"name": "h100"}).status_code == 403
    refused = client.post(
        f"/scheduler/pools/{pool.pk}/",
        {"form": "quota", "workspace": cast.workspace.pk, "guaranteed": 0, "maximum": 8},
    )
    assert refused.status_code == 403
    assert not Pool.objects.filter(name="h100").exists()
    assert not Quota.objects.exists()


# Nodes ---------------------------------------------------------------------------------


def test_the_node_page_loads_the_scheduling_block(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    node = Node.objects.get(name="gpu-1")

    page = html(session_client(cast.member).get(f"/monitoring/nodes/{node.pk}/"))

    assert f'hx-get="/scheduler/nodes/{node.pk}/"' in page


def test_the_scheduling_block_lists_jobs_and_offers_actions_to_managers(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    node = Node.objects.get(name="gpu-1")
    NodeSchedule.objects.filter(node=node).update(gpus_out=[7])
    mine = job_create(cast.workspace, pool, name="mine", state=Job.State.RUNNING, on=[(node, [0])])
    job_create(cast.other_workspace, pool, name="theirs", state=Job.State.RUNNING, on=[(node, [1])])

    member = html(session_client(cast.member).get(f"/scheduler/nodes/{node.pk}/"))
    admin = html(session_client(cast.platform_admin).get(f"/scheduler/nodes/{node.pk}/"))

    assert member.lstrip().startswith('<div id="node-scheduling"')
    assert f'href="/scheduler/jobs/{mine.pk}/"' in member
    assert "theirs" not in member
    assert 'data-state="active"' in member
    assert 'data-out="1"' in member
    assert 'name="action"' not in member
    assert 'id="node-cordon"' in admin
    assert 'id="node-drain"' in admin
    assert 'id="gpu-7-put-back"' in admin
    assert 'id="gpu-0-take-out"' in admin
    assert "theirs" in admin


def test_node_actions_answer_htmx_with_the_block(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    node = Node.objects.get(name="gpu-1")
    job = job_create(cast.workspace, pool, state=Job.State.RUNNING, on=[(node, [2])])
    client = session_client(cast.platform_admin, csrf=True)
    token = csrf_of(client, f"/scheduler/nodes/{node.pk}/")
    htmx = {"HTTP_X_CSRFTOKEN": token, "HTTP_HX_REQUEST": "true"}

    assert (
        client.post(f"/scheduler/nodes/{node.pk}/action/", {"action": "cordon"}).status_code == 403
    )
    cordoned = client.post(
        f"/scheduler/nodes/{node.pk}/action/", {"action": "cordon", "reason": "fan"}, **htmx
    )
    taken = client.post(
        f"/scheduler/nodes/{node.pk}/gpus/2/action/", {"action": "take_out"}, **htmx
    )
    again = client.post(
        f"/scheduler/nodes/{node.pk}/gpus/2/action/", {"action": "take_out"}, **htmx
    )
    plain = client.post(
        f"/scheduler/nodes/{node.pk}/action/",
        {"action": "uncordon", "csrfmiddlewaretoken": token},
    )

    assert cordoned.status_code == 200
    assert 'data-state="cordoned"' in html(cordoned)
    assert "fan" in html(cordoned)
    assert 'id="node-uncordon"' in html(cordoned)
    assert taken.status_code == 200
    assert 'id="gpu-2-put-back"' in html(taken)
    job.refresh_from_db()
    assert job.state == Job.State.PREEMPTING
    assert again.status_code == 409
    assert "already out" in html(again)
    assert plain.status_code == 302
    assert plain["Location"] == f"/monitoring/nodes/{node.pk}/"
    assert NodeSchedule.objects.get(node=node).state == NodeSchedule.State.ACTIVE


def test_members_cannot_cordon_shared_nodes_nor_see_others(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    shared = Node.objects.get(name="gpu-1")
    theirs = scheduled_node_create("speech-1", pool, workspace=cast.other_workspace)
    client = session_client(cast.ws_admin)

    assert (
        client.post(f"/scheduler/nodes/{shared.pk}/action/", {"action": "cordon"}).status_code
        == 403
    )
    assert client.get(f"/scheduler/nodes/{theirs.pk}/").status_code == 404
    assert NodeSchedule.objects.get(node=shared).state == NodeSchedule.State.ACTIVE


def test_the_scheduler_pages_name_no_external_url(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = job_create(cast.workspace, pool, state=Job.State.RUNNING)
    node = Node.objects.get(name="gpu-1")
    client = session_client(cast.platform_admin)
    urls = [
        "/scheduler/",
        "/scheduler/jobs/",
        "/scheduler/jobs/new/",
        f"/scheduler/jobs/{job.pk}/",
        "/scheduler/pools/",
        f"/scheduler/pools/{pool.pk}/",
        f"/scheduler/nodes/{node.pk}/",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert re.findall(r"https?://[^\s\"'<>)\\]+", html(response)) == [], url
