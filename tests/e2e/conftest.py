"""The real console, started with ``python -m console up``, and Chromium to drive it.

Each test module gets its own console: a fresh data directory, a free port on 127.0.0.1
and fresh storage. With ``DATABASE_URL`` naming PostgreSQL, the console gets a database of
its own on that server (created here, dropped afterwards); with ``REDIS_URL``, its own
database number there, cleared of ``podium:*`` keys before and after. Without them it runs
on its embedded SQLite and Redis.

The browser is Debian's Chromium (never a downloaded one). Browser tests skip, saying so,
when ``PODIUM_SKIP_BROWSER=1`` or Chromium is missing, except in CI, where a missing
Chromium fails them.
"""

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright
from psycopg import sql

from tests.redis_keys import podium_keys_delete, redis_url_on_db

if TYPE_CHECKING:
    from tests.e2e.agents import Agents

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "e2e admin passphrase 4417"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REDIS_DB = 13
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "postgis"}
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
LOG_TAIL_LINES = 40

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _isolated_services() -> None:
    """The console under test runs in its own processes: nothing here to isolate."""


# HTTP --------------------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    opener: urllib.request.OpenerDirector = _NO_PROXY,
    timeout: float = 10,
) -> tuple[int, Any]:
    """Status and decoded JSON (or text) of one request, whatever the status."""
    sent = {"Accept": "application/json", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    if token:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)  # noqa: S310
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        status, raw = response.status, response.read()
        kind = response.headers.get_content_type()
    if kind == "application/json" and raw:
        return status, json.loads(raw)
    return status, raw.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# Storage -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _redis_database(url: str) -> Iterator[str]:
    own = redis_url_on_db(url, REDIS_DB)
    try:
        podium_keys_delete(own)
    except (redis.RedisError, OSError) as exc:
        pytest.fail(f"REDIS_URL is set but Redis at {own} does not answer: {exc}", pytrace=False)
    try:
        yield own
    finally:
        podium_keys_delete(own)


@contextlib.contextmanager
def _postgres_database(url: str) -> Iterator[str]:
    parts = urlsplit(url)
    name = f"podium_e2e_{secrets.token_hex(4)}"
    server = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        pytest.fail(
            f"DATABASE_URL names PostgreSQL but a database cannot be created: {exc}", pytrace=False
        )
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def console_storage() -> Iterator[dict[str, str]]:
    """``DATABASE_URL`` / ``REDIS_URL`` for a console of its own, or nothing for embedded."""
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("DATABASE_URL", "")
        if urlsplit(database_url).scheme in POSTGRES_SCHEMES:
            env["DATABASE_URL"] = stack.enter_context(_postgres_database(database_url))
        if redis_url := os.environ.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(_redis_database(redis_url))
        yield env


# The console -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: receive SIGTERM (a clean stop for ``up``) if the test run dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"    (unreadable: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (empty)"


@dataclass
class Console:
    """One ``up`` supervisor and everything it runs, under ``root``."""

    root: Path
    port: int
    env: dict[str, str]
    admin_password: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    tracked: dict[int, tuple[float, str]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output_path(self) -> Path:
        return self.root / f"up-{self.starts}.out"

    def output(self, start: int | None = None) -> str:
        """What ``up`` printed at its ``start``-th start (default: the latest)."""
        path = self.root / f"up-{start}.out" if start else self.output_path
        return path.read_text(errors="replace")

    def pid(self, name: str) -> int:
        return int((self.data_dir / "run" / f"{name}.pid").read_text())

    def api(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return http(method, self.url + path, **kwargs)

    def token(self, username: str = ADMIN_USER, password: str | None = None) -> str:
        status, body = self.api(
            "POST",
            "/api/auth/token",
            body={"username": username, "password": password or self.admin_password},
        )
        assert status == 201, body
        return str(body["token"])

    def start(self) -> None:
        """Run ``up`` and return once /api/health answers 200."""
        self.starts += 1
        with self.output_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "console", "up"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        try:
            self._wait_healthy()
            self.track()
        except BaseException:
            self.kill()
            raise
        if self.env.get("PODIUM_ADMIN_PASSWORD") is None and self.admin_password is None:
            match = re.search(r"with password (\S+) \(generated now", self.output())
            assert match, f"up printed no generated password:\n{self.output()}"
            self.admin_password = match.group(1)

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"`up` exited with code {self.process.returncode} while starting\n"
                    + self.diagnostics(),
                    pytrace=False,
                )
            try:
                status, last = self.api("GET", "/api/health", timeout=2)
            except OSError as exc:
                last = exc
            else:
                if status == 200:
                    return
            time.sleep(0.25)
        pytest.fail(
            f"/api/health was not 200 within {START_TIMEOUT:g} s (last answer: {last})\n"
            + self.diagnostics(),
            pytrace=False,
        )

    def track(self) -> None:
        """Remember every process ``up`` runs now, to check later that none outlives it."""
        if self.process is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.tracked[proc.pid] = (proc.create_time(), " ".join(proc.cmdline()))

    def leftovers(self) -> list[str]:
        """Tracked processes that still run (zombies count as gone)."""
        left = []
        for pid, (created, cmdline) in self.tracked.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid}: {cmdline}")
            except psutil.NoSuchProcess:
                continue
        return left

    def stop(self) -> int:
        """SIGINT ``up``, wait for it, and fail if it hangs or leaves a process behind."""
        if self.process is None:
            return 0
        self.track()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            returncode = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"`up` did not stop within {STOP_TIMEOUT:g} s of SIGINT\n{self.diagnostics()}"
            )
        self.process = None
        if left := self.leftovers():
            self.kill()
            pytest.fail("processes outlived `up`:\n  " + "\n  ".join(left))
        self.tracked.clear()
        return returncode

    def restart(self) -> int:
        returncode = self.stop()
        self.start()
        return returncode

    def kill(self) -> None:
        """SIGKILL ``up`` and every process it ran: the last resort after a failure."""
        self.track()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid, (created, _) in self.tracked.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.kill()
        self.process = None

    def diagnostics(self) -> str:
        """The tail of what ``up`` printed and of every log in the data directory."""
        parts = [f"--- {self.output_path.name}\n{_log_tail(self.output_path)}"]
        parts.extend(
            f"--- {path}\n{_log_tail(path)}"
            for path in sorted((self.data_dir / "logs").glob("*.log"))
        )
        return "\n".join(parts)


def console_environment(data_dir: Path, port: int, storage: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any Podium, Django or storage setting, plus ours."""
    dropped = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in dropped and not key.startswith("PODIUM_")
    }
    return {
        **env,
        **storage,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "PODIUM_DATA_DIR": str(data_dir),
        "PODIUM_HOST": HOST,
        "PODIUM_PORT": str(port),
        "PODIUM_ADMIN_USER": ADMIN_USER,
        "PODIUM_QUEUE_PROBE_INTERVAL": "1",
        "PODIUM_LOGIN_RATE_LIMIT": "100",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def console_admin_password() -> str | None:
    """The first admin's password given to ``up``; None lets ``up`` generate and print one."""
    return ADMIN_PASSWORD


@pytest.fixture(scope="module")
def console_settings() -> dict[str, str]:
    """Extra environment for this module's console (PODIUM_* timings, demo nodes)."""
    return {}


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory,
    console_admin_password: str | None,
    console_settings: dict[str, str],
) -> Iterator[Console]:
    """A running console of this module's own, stopped with SIGINT afterwards."""
    root = tmp_path_factory.mktemp("console")
    port = free_port()
    with console_storage() as storage:
        env = {**console_environment(root / "data", port, storage), **console_settings}
        if console_admin_password is not None:
            env["PODIUM_ADMIN_PASSWORD"] = console_admin_password
        running = Console(root=root, port=port, env=env, admin_password=console_admin_password)
        try:
            running.start()
            yield running
        finally:
            returncode = running.stop()
        assert returncode == 0, f"`up` exited with {returncode}\n{running.diagnostics()}"


# The browser -------------------------------------------------------------------------------


def _browser_skip_reason() -> str | None:
    if not CHROMIUM.exists() and os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing in CI: install chromium, the browser tests must run")
    if os.environ.get("PODIUM_SKIP_BROWSER") == "1":
        return "browser tests skipped: PODIUM_SKIP_BROWSER=1"
    if not CHROMIUM.exists():
        return f"browser tests skipped: {CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright."""
    if reason := _browser_skip_reason():
        warnings.warn(reason, pytest.PytestWarning, stacklevel=1)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# Records every change of one element's ``data-state`` into ``window.stateHistory`` as
# {state, at} (epoch seconds), from the moment it is evaluated; "missing" while absent.
RECORD_STATES = """(id) => {
    window.stateHistory = [];
    const record = () => {
        const element = document.getElementById(id);
        const state = element ? element.dataset.state : "missing";
        const seen = window.stateHistory;
        if (!seen.length || seen[seen.length - 1].state !== state) {
            seen.push({state: state, at: Date.now() / 1000});
        }
    };
    record();
    new MutationObserver(record).observe(
        document.body, {subtree: true, childList: true, attributes: true}
    );
}"""


def state_history_start(page: Page, element_id: str) -> None:
    """Start recording the ``data-state`` changes of ``element_id`` on this page."""
    page.evaluate(RECORD_STATES, element_id)


def state_history(page: Page) -> list[dict[str, Any]]:
    """What ``state_history_start`` recorded so far, oldest first."""
    return page.evaluate("() => window.stateHistory")


@dataclass
class PageGuard:
    """What a page did that a test must not let pass: JS errors and requests off this host."""

    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect_error(self, pattern: str) -> None:
        """Let console errors matching ``pattern`` pass (e.g. a 400 the test provokes)."""
        self.expected.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]

    def assert_clean(self) -> None:
        assert not self.blocked, f"requests left 127.0.0.1: {self.blocked}"
        assert not self.unexpected_errors(), f"JavaScript errors: {self.unexpected_errors()}"


@pytest.fixture
def guard() -> PageGuard:
    return PageGuard()


@pytest.fixture
def page(browser: Browser, console: Console, guard: PageGuard) -> Iterator[Page]:
    """A page in a fresh browser context on the console, watched by ``guard``."""

    def keep_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname == HOST:
            route.continue_()
        else:
            guard.blocked.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            guard.errors.append(f"{message.text} at {message.location.get('url')}")

    context = browser.new_context(base_url=console.url)
    context.set_default_timeout(10_000)
    context.route("**/*", keep_local)
    page = context.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda exc: guard.errors.append(f"page error: {exc}"))
    yield page
    context.close()
    guard.assert_clean()


# Agents ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token(console: Console) -> str:
    """The first admin's API token on this module's console."""
    return console.token(ADMIN_USER, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def workspace_id(console: Console, token: str, request: pytest.FixtureRequest) -> int:
    """A workspace of this module's own, named by the module's ``WORKSPACE``."""
    name = request.module.WORKSPACE
    status, body = console.api("POST", "/api/workspaces", token=token, body={"name": name})
    assert status == 201, body
    return int(body["id"])


@pytest.fixture(scope="module")
def agents(
    console: Console,
    token: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator["Agents"]:
    """One simulated 8-GPU agent per name in the module's ``AGENTS``, every node ready."""
    # Imported here: tests.e2e.agents imports this module.
    from tests.e2e.agents import agents_running

    root = tmp_path_factory.mktemp("agents")
    with agents_running(console, token, request.module.AGENTS, root) as running:
        yield running
