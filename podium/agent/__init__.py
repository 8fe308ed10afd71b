"""The node agent: samples GPUs (NVML or simulated) and the host, streams them to the console.

It never imports Django or the console; ``podium agent`` and ``python -m podium.agent`` run
it (see ``podium.agent.cli``). The wire protocol is in ``podium.agent.protocol``.
"""
