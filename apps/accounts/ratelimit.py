"""Fixed-window limits on sign-in attempts, per client address and per user name.

Counters live in the shared cache (Redis), so every web process sees the same
count. If the cache is unreachable the attempt is allowed: a Redis outage must
not lock every operator out of the console.
"""

import hashlib
import logging

from django.conf import settings
from django.core.cache import cache

from apps.system.errors import RateLimitedError

logger = logging.getLogger(__name__)


def _key(kind: str, value: str) -> str:
    return f"login-attempts:{kind}:{hashlib.sha256(value.lower().encode()).hexdigest()[:32]}"


def login_attempt_check(*, ip: str | None, username: str) -> None:
    """Count one attempt; RateLimitedError when either counter is over the limit."""
    limit = settings.PODIUM["LOGIN_RATE_LIMIT"]
    window = settings.PODIUM["LOGIN_RATE_WINDOW"]
    keys = [_key("user", username)]
    if ip:
        keys.append(_key("ip", ip))
    try:
        for key in keys:
            cache.add(key, 0, timeout=window)
            if cache.incr(key) > limit:
                raise RateLimitedError(
                    f"Too many sign-in attempts. Try again in {window // 60 or 1} minutes.",
                    field="username",
                )
    except RateLimitedError:
        raise
    except Exception:
        logger.warning("sign-in rate limit unavailable (cache unreachable)", exc_info=True)


def login_attempts_reset(*, username: str) -> None:
    """Forget a user's failed attempts after a successful sign-in."""
    try:
        cache.delete(_key("user", username))
    except Exception:
        logger.warning("sign-in rate limit unavailable (cache unreachable)", exc_info=True)
