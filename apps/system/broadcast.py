"""The only place that names the status channel group and pushes to it."""

from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from apps.system.health import SystemStatus

STATUS_GROUP = "system.status"


def status_html(status: SystemStatus) -> str:
    """The status partial, as the page includes it and the websocket swaps it in."""
    return render_to_string("system/_status_components.html", {"status": status})


async def status_broadcast(html: str) -> None:
    """Send the rendered partial to every browser watching the status page."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(STATUS_GROUP, {"type": "status.update", "html": html})
