"""Logging filters."""

import logging

HEALTH_PATH = "/api/health"


class HealthProbeFilter(logging.Filter):
    """Drops Django's error line for each 503 of /api/health.

    A monitor polls health every few seconds; during an outage every poll would
    log an ERROR that says nothing the status page does not.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return not (
            getattr(record, "status_code", None) == 503
            and getattr(request, "path", None) == HEALTH_PATH
        )
