"""What the agent keeps on disk: one credentials file per node name, and a machine id.

The state directory (default ``~/.local/state/podium-agent``) holds ``<name>.json`` with
the console's address, the node's id and name and its node token, readable by its owner
only (0600), written atomically so a crash never leaves half a file.
"""

import json
import logging
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("~/.local/state/podium-agent")
MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


@dataclass(frozen=True)
class Credentials:
    """A node's identity at one console."""

    server: str
    node_id: int
    name: str
    node_token: str


def state_dir_default() -> Path:
    """``PODIUM_AGENT_STATE_DIR``, else ``~/.local/state/podium-agent``."""
    configured = os.environ.get("PODIUM_AGENT_STATE_DIR")
    return Path(configured).expanduser() if configured else DEFAULT_STATE_DIR.expanduser()


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; the file is readable by its owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class CredentialStore:
    """The credentials file of one node name in a state directory."""

    def __init__(self, state_dir: Path, name: str) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"a node name cannot be used as a file name: {name!r}")
        self.path = state_dir / f"{name}.json"

    def load(self, server: str) -> Credentials | None:
        """The stored credentials if they are for ``server``; None otherwise."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            credentials = Credentials(
                server=str(data["server"]),
                node_id=int(data["node_id"]),
                name=str(data["name"]),
                node_token=str(data["node_token"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable credentials %s: %s", self.path, exc)
            return None
        if credentials.server.rstrip("/") != server.rstrip("/"):
            return None
        return credentials

    def save(self, credentials: Credentials) -> None:
        """Store ``credentials`` (mode 0600, atomic replace)."""
        write_private(self.path, json.dumps(asdict(credentials), indent=2) + "\n")


def machine_id(state_dir: Path) -> str:
    """The system's machine id, else one generated once and kept in the state directory."""
    for path in MACHINE_ID_PATHS:
        try:
            found = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if found:
            return found
    stored = state_dir / "machine-id"
    try:
        found = stored.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        found = ""
    if not found:
        found = uuid.uuid4().hex
        write_private(stored, found + "\n")
    return found
