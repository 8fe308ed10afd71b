"""Settings read from the environment, loaded fresh as a new process would load them."""

import importlib.util
import stat
from pathlib import Path
from types import ModuleType

import kombu
import pytest
from django.conf import settings

SETTINGS_FILE = Path(settings.BASE_DIR) / "console" / "settings.py"


def load_settings(monkeypatch: pytest.MonkeyPatch, data_dir: Path, **env: str) -> ModuleType:
    """``console/settings.py`` executed with ``env`` and no REDIS_URL unless given."""
    for name in ("REDIS_URL", "DATABASE_URL", "PODIUM_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PODIUM_DATA_DIR", str(data_dir))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("podium_settings_under_test", SETTINGS_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_test_run_keeps_its_data_out_of_the_repository() -> None:
    assert Path(settings.DATA_DIR) != Path(settings.BASE_DIR) / "var"


def test_the_secret_key_is_made_once_and_kept_private(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = load_settings(monkeypatch, tmp_path)
    second = load_settings(monkeypatch, tmp_path)

    assert first.SECRET_KEY == second.SECRET_KEY
    assert len(first.SECRET_KEY) >= 50
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_a_secret_key_from_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded = load_settings(monkeypatch, tmp_path, PODIUM_SECRET_KEY="from-the-environment")

    assert loaded.SECRET_KEY == "from-the-environment"
    assert not (tmp_path / "secret_key").exists()


def test_by_default_everything_lives_in_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded = load_settings(monkeypatch, tmp_path)

    assert loaded.DATABASES["default"]["NAME"] == str(tmp_path / "podium.sqlite3")
    assert f"unix://{tmp_path / 'redis.sock'}" == loaded.REDIS_URL
    assert loaded.REDIS_IS_EMBEDDED


def test_the_embedded_redis_is_a_broker_celery_can_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded = load_settings(monkeypatch, tmp_path)

    connection = kombu.Connection(loaded.CELERY_BROKER_URL)

    assert connection.transport_cls == "redis"
    assert str(tmp_path / "redis.sock") in connection.as_uri()


def test_an_external_redis_is_used_everywhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "redis://redis.example.internal:6379/2"

    loaded = load_settings(monkeypatch, tmp_path, REDIS_URL=url)

    assert not loaded.REDIS_IS_EMBEDDED
    assert url == loaded.CELERY_BROKER_URL
    assert [h["address"] for h in loaded.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]] == [url]
    assert loaded.CACHES["default"]["LOCATION"] == url
