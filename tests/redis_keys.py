"""Redis helpers for test fixtures: a database of the tests' own, and cleaning only our keys."""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

KEY_PATTERN = "podium:*"


def redis_url_on_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` of the same server."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


def podium_keys_delete(url: str) -> None:
    """Delete the console's keys (``podium:*``) there; never anything else on a shared server."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=KEY_PATTERN, count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
