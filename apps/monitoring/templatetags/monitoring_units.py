"""Readable sizes and power for the monitoring pages (``{% load monitoring_units %}``).

``static/podium/monitoring/overview.js`` formats live totals the same way.
"""

from django import template

register = template.Library()

# Shown for a missing reading (an en dash, as the rest of the pages use).
MISSING = "\u2013"


@register.filter
def mib(value: float | None) -> str:
    """MiB as MiB, GiB or TiB: ``1953125`` → ``1.9 TiB``."""
    if value is None:
        return MISSING
    if value >= 1024 * 1024:
        return f"{value / (1024 * 1024):.1f} TiB"
    if value >= 1024:
        return f"{value / 1024:.0f} GiB"
    return f"{value:.0f} MiB"


@register.filter
def watts(value: float | None) -> str:
    """Watts as W, kW or MW: ``107443`` → ``107.4 kW``."""
    if value is None:
        return MISSING
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f} MW"
    if value >= 1000:
        return f"{value / 1000:.1f} kW"
    return f"{value:.0f} W"
