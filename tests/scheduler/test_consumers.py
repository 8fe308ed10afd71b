"""Browser websockets of the scheduler: authorised in connect like the pages, then forwarding
the job's changes and output and the pool's changes."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.accounts.models import User
from apps.scheduler.broadcast import jobs_changed
from apps.scheduler.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from apps.scheduler.models import Job, Pool
from apps.training.agents import on_job_output
from console.asgi import application
from tests.conftest import Cast
from tests.scheduler.factories import job_create, pool_create, scheduled_node_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pool(db: None) -> Pool:
    pool = pool_create("a100", is_default=True)
    scheduled_node_create("gpu-1", pool)
    return pool


@pytest.fixture
def job(cast: Cast, pool: Pool) -> Job:
    return job_create(cast.workspace, pool, state=Job.State.RUNNING, nodes=1, gpus_per_node=2)


async def session_cookie(user: User) -> tuple[bytes, bytes]:
    def sign_in() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    value = await database_sync_to_async(sign_in)()
    return b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode()


async def socket(path: str, user: User | None = None) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    if user is not None:
        headers.append(await session_cookie(user))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.parametrize("path", ["/ws/scheduler/jobs/1/", "/ws/scheduler/pools/1/"])
async def test_an_anonymous_browser_is_refused(path: str) -> None:
    ws = await socket(path)

    assert await ws.connect() == (False, CLOSE_UNAUTHENTICATED)
    await ws.disconnect()


async def test_a_foreign_user_cannot_watch_a_job(cast: Cast, job: Job) -> None:
    ws = await socket(f"/ws/scheduler/jobs/{job.pk}/", cast.outsider)

    assert await ws.connect() == (False, CLOSE_NOT_FOUND)
    await ws.disconnect()


async def test_a_job_that_does_not_exist_is_refused_the_same_way(cast: Cast) -> None:
    ws = await socket("/ws/scheduler/jobs/999999/", cast.member)

    assert await ws.connect() == (False, CLOSE_NOT_FOUND)
    await ws.disconnect()


async def test_a_member_gets_the_jobs_output_and_changes(cast: Cast, job: Job) -> None:
    allocation = await database_sync_to_async(lambda: job.allocations.get())()
    ws = await socket(f"/ws/scheduler/jobs/{job.pk}/", cast.viewer)
    assert (await ws.connect())[0]

    await database_sync_to_async(on_job_output)(
        allocation.node_id, {"alloc": allocation.pk, "seq": 4, "lines": ["loss 0.31", "loss 0.29"]}
    )
    await database_sync_to_async(jobs_changed)([job.pk], [job.pool_id])

    assert await ws.receive_json_from(timeout=3) == {
        "kind": "output",
        "attempt": 1,
        "rank": 0,
        "seq": 4,
        "lines": ["loss 0.31", "loss 0.29"],
    }
    assert await ws.receive_json_from(timeout=3) == {"kind": "changed"}
    await ws.disconnect()


async def test_a_watcher_of_one_job_hears_nothing_of_another(
    cast: Cast, job: Job, pool: Pool
) -> None:
    other = await database_sync_to_async(job_create)(cast.workspace, pool)
    ws = await socket(f"/ws/scheduler/jobs/{job.pk}/", cast.member)
    assert (await ws.connect())[0]

    await database_sync_to_async(jobs_changed)([other.pk], [])

    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_signed_in_user_follows_a_pool(cast: Cast, pool: Pool) -> None:
    ws = await socket(f"/ws/scheduler/pools/{pool.pk}/", cast.outsider)
    assert (await ws.connect())[0]

    await database_sync_to_async(jobs_changed)([], [pool.pk])

    assert await ws.receive_json_from(timeout=3) == {"kind": "changed"}
    await ws.disconnect()


async def test_a_pool_that_does_not_exist_is_refused(cast: Cast) -> None:
    ws = await socket("/ws/scheduler/pools/999999/", cast.member)

    assert await ws.connect() == (False, CLOSE_NOT_FOUND)
    await ws.disconnect()


@pytest.mark.integration
async def test_only_jobs_a_browser_watches_are_pushed(cast: Cast, pool: Pool) -> None:
    from apps.scheduler.broadcast import jobs_watched

    watched = await database_sync_to_async(job_create)(cast.workspace, pool)
    unwatched = await database_sync_to_async(job_create)(cast.workspace, pool)
    ws = await socket(f"/ws/scheduler/jobs/{watched.pk}/", cast.member)
    assert (await ws.connect())[0]

    during = await database_sync_to_async(jobs_watched)([watched.pk, unwatched.pk])
    await ws.disconnect()
    after = await database_sync_to_async(jobs_watched)([watched.pk, unwatched.pk])

    assert during == [watched.pk]
    assert after == []
