"""Talking to a console's REST API with a personal token, and remembering which console.

The console answers errors as ``{"detail": "<message>", "field": "<field or null>"}``;
every failure here, refused requests and unreachable consoles alike, becomes an
``ApiError`` carrying that message and field.
"""

import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

TIMEOUT = 30.0
PAGE_SIZE = 100
USER_AGENT = "podium-cli"


class ApiError(Exception):
    """A request the console refused or that never reached it."""

    def __init__(self, detail: str, *, status: int | None = None, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.field = field


class NotConfiguredError(Exception):
    """Neither the saved login nor the environment says which console to talk to."""


# Where the console is ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """A console's base URL and the personal token to present to it."""

    url: str
    token: str


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/podium/client.json``, by default ``~/.config/podium/client.json``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "podium" / "client.json"


def config_load(environ: Mapping[str, str] | None = None) -> ClientConfig:
    """The saved login, with ``PODIUM_URL`` and ``PODIUM_TOKEN`` taking precedence."""
    environ = os.environ if environ is None else environ
    saved: dict[str, Any] = {}
    path = config_path(environ)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise NotConfiguredError(f"cannot read {path}: {exc}") from None
    url = environ.get("PODIUM_URL") or str(saved.get("url") or "")
    token = environ.get("PODIUM_TOKEN") or str(saved.get("token") or "")
    if not url or not token:
        raise NotConfiguredError(
            "not logged in: run `podium login`, or set PODIUM_URL and PODIUM_TOKEN"
        )
    return ClientConfig(url=url_normalize(url), token=token)


def config_save(config: ClientConfig, environ: Mapping[str, str] | None = None) -> Path:
    """Write the login where ``config_load`` finds it, readable by its owner only."""
    path = config_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps({"url": config.url, "token": config.token}, indent=2) + "\n"
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".client-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def url_normalize(url: str) -> str:
    """The console's base URL without a trailing slash, refused unless http(s)."""
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NotConfiguredError(f"{url!r} is not a console URL such as https://podium.example")
    return url


# Requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """What the console answered: status, headers and the raw body."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _error_of(status: int, reason: str, body: bytes) -> ApiError:
    """The console's ``{"detail", "field"}`` answer as an error, or the bare HTTP status."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("detail"), str):
        field = answer.get("field")
        return ApiError(
            answer["detail"], status=status, field=field if isinstance(field, str) else None
        )
    return ApiError(f"HTTP {status} {reason}".strip(), status=status)


class ApiClient:
    """Requests to one console, authenticated with ``Authorization: Bearer <token>``."""

    def __init__(self, config: ClientConfig, *, timeout: float = TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        accept: str = "application/json",
    ) -> Response:
        """Send one request; any answer but a 2xx raises ``ApiError``."""
        url = self.config.url + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        # The URL's scheme was checked to be http(s) by url_normalize.
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as exc:
            raise _error_of(exc.code, exc.reason, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiError(f"cannot reach {self.config.url}: {exc.reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ApiError(f"cannot reach {self.config.url}: {exc}") from None

    def get(self, path: str, **params: Any) -> Any:
        """The decoded JSON of a GET."""
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None) -> Any:
        """The decoded JSON of a POST with a JSON body."""
        return self.request("POST", path, body=body if body is not None else {}).json()

    def items(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list (``{"items": [...], "count": N}``), page by page."""
        offset = 0
        while True:
            page = self.get(path, **params, limit=PAGE_SIZE, offset=offset)
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["count"]:
                return
