"""The training panels of a job's page and the figures they show (``{% load training %}``).

``{% job_training job %}`` draws them on the scheduler's job page, so the scheduler's
Python never imports training.
"""

from typing import Any

from django import template

from apps.system.pages import request_user
from apps.training.panels import job_training_context

register = template.Library()

# Shown for a missing value (an en dash, as the rest of the pages use).
MISSING = "\u2013"


@register.inclusion_tag("training/_job_training.html", takes_context=True)
def job_training(context: template.Context, job: Any) -> dict[str, Any]:
    """Goodput, checkpoints, launch, metrics, GPU utilisation and logs of ``job``."""
    request = context["request"]
    panels = job_training_context(user=request_user(request), job=job)
    return {**panels, "request": request, "csrf_token": context.get("csrf_token")}


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as ``42 s``, ``5 min 03 s`` or ``2 h 05 min``."""
    if seconds is None:
        return MISSING
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def percent(ratio: float | None) -> str:
    """A share as ``93.1 %``."""
    return MISSING if ratio is None else f"{100 * ratio:.1f} %"


@register.filter
def share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``, for a bar's width (``0.00`` when empty)."""
    if not whole:
        return "0.00"
    return f"{max(0.0, min(100.0, 100 * part / whole)):.2f}"
