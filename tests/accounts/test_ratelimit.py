"""The sign-in limit is shared through Redis, and a Redis outage never locks anyone out."""

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.test import Client

from apps.accounts.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def ask_token(password: str, address: str = "10.9.0.1") -> int:
    payload = json.dumps({"username": "bob", "password": password})
    response = Client().post(
        "/api/auth/token", payload, content_type="application/json", REMOTE_ADDR=address
    )
    return response.status_code


@pytest.mark.integration
def test_the_limit_is_counted_in_redis(
    member: User, rate_limit: Callable[[int], None], settings: Any
) -> None:
    rate_limit(2)

    assert [ask_token("wrong"), ask_token("wrong"), ask_token(PASSWORD)] == [400, 400, 429]

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert client.keys("podium:cache:*login-attempts:user:*")
    finally:
        client.close()


def test_an_unreachable_cache_lets_sign_in_through(
    member: User, rate_limit: Callable[[int], None], settings: Any, tmp_path: Any
) -> None:
    rate_limit(1)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"unix://{tmp_path}/nobody-listens.sock",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }

    assert [ask_token("wrong"), ask_token("wrong"), ask_token(PASSWORD)] == [400, 400, 201]
