"""A monitor polling /api/health during an outage does not flood the web log."""

import logging

import pytest
from django.test import RequestFactory

from apps.system.logfilters import HealthProbeFilter


def record(path: str, status: int) -> logging.LogRecord:
    entry = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "x", None, None)
    entry.request = RequestFactory().get(path)
    entry.status_code = status
    return entry


@pytest.mark.parametrize(
    ("path", "status", "kept"),
    [("/api/health", 503, False), ("/api/health", 500, True), ("/api/workspaces", 503, True)],
)
def test_only_health_503s_are_dropped(path: str, status: int, kept: bool) -> None:
    assert HealthProbeFilter().filter(record(path, status)) is kept
