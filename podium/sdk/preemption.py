"""Preemption: stopping cleanly when Podium needs a job's GPUs back.

Podium stops a job (preempted, cancelled, or its node drained) by sending SIGTERM to its
processes, and kills those still running after a grace period. A script keeps its progress
by installing the handler once and checking the flag where saving is safe, then exiting 0::

    from podium import sdk

    sdk.handle_preemption()
    for step in range(start, total_steps):
        train_one_step()
        if sdk.stop_requested():
            sdk.save(step, write_state)
            sys.exit(0)

The next attempt finds that checkpoint in ``sdk.resume_from()``. The handler only records
the request; saving happens in the loop, never inside the signal handler.
"""

import signal
import threading
from collections.abc import Callable
from types import FrameType


class _Preemption:
    requested = False
    callback: Callable[[], None] | None = None


_state = _Preemption()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _state.requested = True
    if _state.callback is not None:
        _state.callback()


def handle_preemption(callback: Callable[[], None] | None = None) -> None:
    """Catch SIGTERM from now on: it sets ``stop_requested()`` instead of ending the process.

    ``callback`` runs when the signal arrives, inside the signal handler: keep it to setting
    flags. Calling this again is harmless; a new callback replaces the old one. It must be
    called from the main thread (Python delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("handle_preemption must be called from the main thread")
    _state.callback = callback
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)


def stop_requested() -> bool:
    """True once SIGTERM has arrived after ``handle_preemption()``."""
    return _state.requested
