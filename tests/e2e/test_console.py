"""The running console without a browser: health, the API, the websocket, starts and stops.

This module's console generates the first admin's password, as on a real first start.
"""

import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import ADMIN_USER, HOST, ROOT, Console, http

pytestmark = pytest.mark.e2e

COMPONENTS = {"web", "worker", "beat", "redis", "database"}
PROBE_WITHIN = 10.0


@pytest.fixture(scope="module")
def console_admin_password() -> str | None:
    """No password given: ``up`` generates the first admin's and prints it once."""
    return None


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_cookie(console: Console) -> str:
    """Sign in through the sign-in form, as a browser does; returns the session id."""
    jar = CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar)
    )
    status, page = http("GET", console.url + "/login/", opener=opener)
    assert status == 200
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, page
    form = urllib.parse.urlencode(
        {
            "username": ADMIN_USER,
            "password": console.admin_password,
            "csrfmiddlewaretoken": match.group(1),
        }
    ).encode()
    url = console.url + "/login/"
    request = urllib.request.Request(url, data=form, method="POST")  # noqa: S310
    with opener.open(request, timeout=10) as response:
        assert response.url.endswith("/workspaces/"), response.url
    return next(cookie.value for cookie in jar if cookie.name == "sessionid")


def status_message(console: Console, *, session: str = "", origin: str | None = None) -> str:
    """The first message of the status websocket; InvalidStatus when the handshake is refused."""
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    url = f"ws://{HOST}:{console.port}/ws/status/"
    with connect(url, open_timeout=5, origin=origin, additional_headers=headers) as ws:
        return str(ws.recv(timeout=5))


def test_health_reports_every_component_and_a_queue_round_trip(console: Console) -> None:
    deadline = time.monotonic() + PROBE_WITHIN
    while True:
        status, body = console.api("GET", "/api/health")
        if body.get("queue_round_trip_ms") is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["components"]) == COMPONENTS
    assert all(component["ok"] for component in body["components"].values()), body
    assert body["queue_round_trip_ms"] is not None, f"no queue probe within {PROBE_WITHIN:g} s"
    assert 0 <= body["queue_round_trip_ms"] < 5000
    vendor = "postgresql" if "DATABASE_URL" in console.env else "sqlite"
    redis_kind = "external" if "REDIS_URL" in console.env else "embedded"
    assert body["components"]["database"]["detail"].startswith(vendor)
    assert body["components"]["redis"]["detail"].startswith(redis_kind)


def test_api_token_flow(console: Console) -> None:
    assert console.api("GET", "/api/auth/me")[0] == 401
    assert console.api("GET", "/api/auth/me", token="pdm_not_a_token")[0] == 401

    token = console.token()
    status, me = console.api("GET", "/api/auth/me", token=token)
    assert status == 200, me
    assert (me["username"], me["is_admin"]) == (ADMIN_USER, True)

    status, created = console.api(
        "POST", "/api/workspaces", token=token, body={"name": "Speech", "description": "ASR"}
    )
    assert status == 201, created
    status, listed = console.api("GET", "/api/workspaces", token=token)
    assert status == 200, listed
    mine = [w for w in listed["items"] if w["id"] == created["id"]]
    assert [(w["name"], w["my_role"], w["member_count"]) for w in mine] == [("Speech", "admin", 1)]


def test_status_websocket_refuses_anonymous_and_cross_site_clients(console: Console) -> None:
    with pytest.raises(InvalidStatus) as refused:
        status_message(console)
    assert refused.value.response.status_code == 403

    session = session_cookie(console)
    with pytest.raises(InvalidStatus) as refused:
        status_message(console, session=session, origin="http://evil.example")
    assert refused.value.response.status_code == 403

    assert 'id="status-components"' in status_message(console, session=session, origin=console.url)


def test_second_up_on_the_same_data_refuses_to_start(console: Console) -> None:
    assert console.process is not None
    second = subprocess.run(
        [sys.executable, "-m", "console", "up"],
        cwd=ROOT,
        env=console.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert second.returncode != 0
    said = second.stdout + second.stderr
    assert f"already running from {console.data_dir}" in said, said
    assert f"(pid {console.process.pid})" in said, said
    assert console.api("GET", "/api/health")[0] == 200


def test_sigint_stops_every_process(console: Console) -> None:
    names = ["web", "worker", "beat"]
    if "REDIS_URL" not in console.env:
        names.append("redis")
    pids = {name: console.pid(name) for name in names}
    console.track()
    tracked = dict(console.tracked)
    supervisor = console.process
    assert supervisor is not None
    assert set(pids.values()) <= set(tracked)

    returncode = console.stop()

    assert returncode == 0
    assert "Podium stopped." in console.output()
    assert not running(supervisor.pid)
    assert [pid for pid in tracked if running(pid)] == []
    assert list((console.data_dir / "run").glob("*.pid")) == []
    console.start()


def test_second_start_on_the_same_data_keeps_it(console: Console) -> None:
    first = console.output(1)
    assert f"Podium is running at {console.url}/" in first
    assert f"Sign in as {ADMIN_USER} with password {console.admin_password} (generated" in first
    token = console.token()
    status, kept = console.api("POST", "/api/workspaces", token=token, body={"name": "Kept"})
    assert status == 201, kept

    assert console.restart() == 0

    again = console.output()
    assert f"Podium is running at {console.url}/" in again
    assert console.admin_password not in again
    assert "generated" not in again
    assert f"Sign in as {ADMIN_USER} (password chosen when the admin was created)" in again
    status, me = console.api("GET", "/api/auth/me", token=console.token())
    assert (status, me["username"]) == (200, ADMIN_USER)
    status, listed = console.api("GET", "/api/workspaces", token=token)
    assert status == 200, listed
    assert "Kept" in [w["name"] for w in listed["items"]]
