"""The environment a job process starts with.

The agent's own environment without its secrets, then the allocation's variables, then
what the agent itself owns: ``CUDA_VISIBLE_DEVICES`` and ``PODIUM_ALLOCATION_ID``. So that
the training script of a job finds the node's Python and the training SDK with nothing
installed by hand, the directory of the agent's interpreter comes first on ``PATH``
(``python`` and ``torchrun`` are the agent's) and ``import podium.sdk`` works from any
Python: ``PYTHONPATH`` starts with a directory that holds only a link to the ``podium``
package (never the agent's whole site-packages, which another interpreter could not
load). Output is unbuffered, so lines reach the console as they are printed.
"""

import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import podium

HIDDEN_ENV = ("PODIUM_AGENT_TOKEN",)  # never passed on to a job


def sdk_path_prepare(state_dir: Path) -> Path:
    """A directory holding a link named ``podium`` to this package (made again when it
    points elsewhere, as after an upgrade to another checkout)."""
    directory = state_dir / "pythonpath"
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "podium"
    target = Path(podium.__file__).resolve().parent
    if link.is_symlink() and link.resolve() == target:
        return directory
    # Agents may share a state directory: the link is made aside and renamed into place,
    # which replaces whatever link was there in one step.
    made = directory / f".podium-{os.getpid()}-{secrets.token_hex(4)}"
    made.symlink_to(target, target_is_directory=True)
    os.replace(made, link)
    return directory


def _prepend(entry: str, current: str | None) -> str:
    parts = [part for part in (current or "").split(os.pathsep) if part and part != entry]
    return os.pathsep.join([entry, *parts])


def job_environment(
    *,
    base: Mapping[str, str],
    secrets: Iterable[str],
    extra: Mapping[str, str],
    gpus: list[int],
    alloc: int,
    sdk_path: Path,
) -> dict[str, str]:
    """The variables of one allocation's process."""
    hidden = {secret for secret in secrets if secret}
    env = {
        key: value for key, value in base.items() if key not in HIDDEN_ENV and value not in hidden
    }
    env.update(extra)
    env["PATH"] = _prepend(str(Path(sys.executable).parent), env.get("PATH") or os.defpath)
    env["PYTHONPATH"] = _prepend(str(sdk_path), env.get("PYTHONPATH"))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
    env["PODIUM_ALLOCATION_ID"] = str(alloc)
    return env
