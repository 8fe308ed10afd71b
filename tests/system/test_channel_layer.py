"""The Redis channel layer as configured keeps quiet websockets open."""

import asyncio

import pytest
from channels.layers import get_channel_layer

pytestmark = pytest.mark.integration


async def test_a_receive_outlasts_the_layers_blocking_pop_on_a_quiet_channel() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()

    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(layer.brpop_timeout + 1)

    assert not waiting.done(), waiting.exception()
    await layer.send(channel, {"type": "still.here"})
    assert (await asyncio.wait_for(waiting, 5))["type"] == "still.here"
