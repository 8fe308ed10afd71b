"""Where the agent's GPU readings come from: NVML, a simulation, or nothing.

Every backend answers the same four questions: what GPUs are here (``describe``), what do
they read now (``sample``), what happened since the last sample (``drain_events``), and
``close``. Readings are compact dicts keyed as in ``protocol.GPU_READING_KEYS`` plus ``i``
(the index); a key a GPU cannot report is left out, never set to zero.
"""

from dataclasses import dataclass, field
from typing import Any

NO_DRIVER = "no NVIDIA driver found"
NOT_SIMULATED = "not a simulated GPU"


@dataclass(frozen=True)
class Description:
    """What a backend found: its name, a status line, the GPUs and the driver versions."""

    backend: str  # "nvml", "simulated" or "none"
    gpu_status: str  # "" when all is well, else a sentence for the operator
    gpus: list[dict[str, Any]] = field(default_factory=list)
    driver_version: str = ""
    cuda_version: str = ""


class GpuBackend:
    """The interface every backend implements; this base reports no GPUs at all."""

    def __init__(self, status: str = NO_DRIVER) -> None:
        self._status = status

    def describe(self) -> Description:
        """The backend name, status, GPU list and driver/CUDA versions."""
        return Description(backend="none", gpu_status=self._status)

    def sample(self) -> list[dict[str, Any]]:
        """One reading per GPU. Runs in a worker thread, never on the event loop."""
        return []

    def drain_events(self) -> list[dict[str, Any]]:
        """Events (``protocol.EVENT_KINDS``) seen since the last call, oldest first."""
        return []

    def attach(self, index: int, pid: int) -> None:
        """A process now runs on GPU ``index``; only simulated GPUs follow its load."""

    def detach(self, index: int, pid: int) -> None:
        """The process ``pid`` no longer runs on GPU ``index``."""

    def inject_fault(self, *, gpu: int, fault: str, code: int | None) -> tuple[bool, str]:
        """Apply a simulated fault; only the simulated backend accepts any."""
        return False, NOT_SIMULATED

    def close(self) -> None:
        """Release what the backend holds (threads, library handles)."""
