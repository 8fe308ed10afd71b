"""API latency in process, on a populated SQLite database.

Seeds 200 workspaces, 400 users and 100,000 audit entries, then times the calls
an operator's scripts make most: listing workspaces, paging and filtering the
audit log, listing members, adding and removing a member. Reports p50/p95/max in
milliseconds and the number of queries per call.
"""

import os
import statistics
import tempfile
import time
from typing import Any

SEED_WORKSPACES = 200
SEED_USERS = 400
SEED_AUDIT = 100_000
REPEAT = 60


def _setup() -> None:
    os.environ["PODIUM_DATA_DIR"] = tempfile.mkdtemp(prefix="podium-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _seed() -> dict[str, Any]:
    from apps.accounts.models import Membership, Role, User, Workspace
    from apps.accounts.services import first_admin_ensure, token_create
    from apps.audit.models import AuditEntry

    admin, _ = first_admin_ensure(username="admin", password="bench-Password-1")
    users = User.objects.bulk_create(
        [User(username=f"user{i:04d}", password="!") for i in range(SEED_USERS)]
    )
    workspaces = Workspace.objects.bulk_create(
        [Workspace(name=f"team-{i:03d}", created_by=admin) for i in range(SEED_WORKSPACES)]
    )
    Membership.objects.bulk_create(
        [Membership(workspace=w, user=admin, role=Role.ADMIN) for w in workspaces]
        + [
            Membership(workspace=workspaces[i % SEED_WORKSPACES], user=u, role=Role.MEMBER)
            for i, u in enumerate(users)
        ]
    )
    AuditEntry.objects.bulk_create(
        [
            AuditEntry(
                actor=admin,
                actor_name="admin",
                action=("member.add", "workspace.update", "token.create")[i % 3],
                workspace=workspaces[i % SEED_WORKSPACES],
                workspace_name=workspaces[i % SEED_WORKSPACES].name,
                target_repr="x",
            )
            for i in range(SEED_AUDIT)
        ],
        batch_size=5000,
    )
    _, token = token_create(actor=admin, name="bench")
    return {"token": token, "workspace": workspaces[7], "spare_user": users[-1]}


def _time(call: Any) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call()
    samples = []
    with CaptureQueriesContext(connection) as queries:
        call()
    for _ in range(REPEAT):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
        "max_ms": round(samples[-1], 2),
        "queries": len(queries),
    }


def run() -> dict[str, Any]:
    _setup()
    from django.test import Client

    seeded = _seed()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {seeded['token']}")
    ws = seeded["workspace"]
    spare = seeded["spare_user"]

    def ok(response: Any, status: int = 200) -> None:
        if response.status_code != status:
            raise RuntimeError(f"{response.status_code}: {response.content[:200]!r}")

    def member_cycle() -> None:
        ok(
            client.post(
                f"/api/workspaces/{ws.pk}/members",
                {"username": spare.username, "role": "viewer"},
                content_type="application/json",
            ),
            201,
        )
        ok(client.delete(f"/api/workspaces/{ws.pk}/members/{spare.pk}"), 204)

    calls = {
        "GET /api/workspaces?limit=50": lambda: ok(client.get("/api/workspaces?limit=50")),
        "GET /api/audit?limit=50": lambda: ok(client.get("/api/audit?limit=50")),
        "GET /api/audit?limit=50&offset=50000": lambda: ok(
            client.get("/api/audit?limit=50&offset=50000")
        ),
        "GET /api/audit?action=member.add&workspace_id=…": lambda: ok(
            client.get(f"/api/audit?action=member.add&workspace_id={ws.pk}&limit=50")
        ),
        "GET /api/workspaces/{id}/members": lambda: ok(
            client.get(f"/api/workspaces/{ws.pk}/members")
        ),
        "POST+DELETE member (two audited writes)": member_cycle,
    }
    results = {name: _time(call) for name, call in calls.items()}
    return {
        "description": __doc__.strip().splitlines()[0],
        "seed": {"workspaces": SEED_WORKSPACES, "users": SEED_USERS, "audit": SEED_AUDIT},
        "repeat": REPEAT,
        "results": results,
        "summary": {name: r["p50_ms"] for name, r in results.items()},
    }
