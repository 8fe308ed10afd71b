"""The Podium console: Django settings, ASGI entry point, URLs and the Celery app."""

from console.celery import app as celery_app

__all__ = ["celery_app"]
