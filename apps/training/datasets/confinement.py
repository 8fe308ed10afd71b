"""Which paths a dataset may name or reach: under the dataset roots, never in the upload area
of Podium itself, with every symlink resolved before the check."""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_PATH_CHARS = 1024


class PathRefused(ValueError):
    """A path a dataset may not use; the message says why."""


@dataclass(frozen=True)
class Confinement:
    """Paths under one of ``roots`` and under none of ``excluded`` (all resolved)."""

    roots: tuple[Path, ...]
    excluded: tuple[Path, ...] = ()

    def contains(self, real: Path) -> bool:
        """Whether ``real`` (a resolved path) lies inside the confinement."""
        return any(real.is_relative_to(root) for root in self.roots) and not any(
            real.is_relative_to(place) for place in self.excluded
        )

    def describe(self) -> str:
        return ", ".join(str(root) for root in self.roots) or "(none configured)"


def path_syntax_check(raw: str) -> str:
    """``raw`` stripped, if it is an absolute path without NUL or ``..``; else PathRefused."""
    path = (raw or "").strip()
    if not path:
        raise PathRefused("Path is required.")
    if "\x00" in path:
        raise PathRefused("The path contains a NUL character.")
    if len(path) > MAX_PATH_CHARS:
        raise PathRefused(f"The path is longer than {MAX_PATH_CHARS} characters.")
    if not path.startswith("/"):
        raise PathRefused("The path must be absolute (start with /).")
    if ".." in path.split("/"):
        raise PathRefused("The path may not contain '..'.")
    return path


def path_resolve(raw: str, confinement: Confinement) -> Path:
    """The resolved form of a path a user names, which must be a readable file or directory
    inside ``confinement``; else PathRefused.

    Whether something exists is only said for paths inside the roots, so the check cannot
    be used to probe the rest of the console's disk.
    """
    real = Path(os.path.realpath(path_syntax_check(raw)))
    if not any(real.is_relative_to(root) for root in confinement.roots):
        where = "" if str(real) == raw.strip() else f" (it resolves to {real})"
        raise PathRefused(
            f"The path is outside the dataset roots{where}; allowed: {confinement.describe()}."
        )
    if not confinement.contains(real):
        raise PathRefused(
            "The path is inside the upload area, which Podium manages; upload a file instead."
        )
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise PathRefused(f"Nothing exists at {real}.") from None
    except OSError as error:
        raise PathRefused(f"Cannot read {real}: {error.strerror}.") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise PathRefused(f"{real} is neither a regular file nor a directory.")
    readable = os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
    if not os.access(real, readable):
        raise PathRefused(f"The console may not read {real} (permission denied).")
    return real
