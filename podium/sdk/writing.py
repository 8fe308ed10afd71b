"""Writing checkpoints so that a crash never leaves a half-written one to resume from.

``save(step, state)`` makes ``<dir>/<step>/`` in this order:

1. the files go into a hidden ``<dir>/.tmp-<step>-<pid>-<random>/`` and each is fsynced;
2. the manifest goes in last and is fsynced, then the temp directory itself;
3. one rename makes it ``<dir>/<step>`` (a directory already there for that step is first
   renamed aside, then removed), and ``<dir>`` is fsynced.

Killed before the rename, a write leaves only a hidden directory that readers ignore;
after it, the checkpoint is whole. An error (a full disk, no permission) removes the
temp directory, leaves the earlier checkpoints as they were, and raises CheckpointError.
"""

import contextlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TypeAlias

from podium.sdk import environment, markers
from podium.sdk.checkpoints import (
    FORMAT,
    MANIFEST,
    Checkpoint,
    CheckpointError,
    ManifestFile,
    file_sha256,
    name_problem,
    reason,
    root_of,
)

TEMP_PREFIX = ".tmp-"

PathLike: TypeAlias = str | os.PathLike[str]
Writer: TypeAlias = Callable[[Path], None]
State: TypeAlias = Writer | Mapping[str, bytes] | PathLike | Iterable[PathLike]


def _raise(error: OSError) -> None:
    raise error


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _root_make(root: Path) -> None:
    """Make the checkpoint directory durably; a file in its way is left for ``mkdir`` of
    the temp directory in it to report."""
    if root.is_dir():
        return
    with contextlib.suppress(FileExistsError):
        root.mkdir(parents=True)
        _fsync_dir(root.parent)


def _bytes_writer(state: Mapping[str, bytes]) -> Writer:
    for name, data in state.items():
        problem = name_problem(name)
        if problem:
            raise ValueError(f"checkpoint file {name!r} {problem}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"checkpoint file {name!r} must be bytes, not {type(data).__name__}")
    contents = dict(state)

    def write(temp: Path) -> None:
        for name, data in contents.items():
            target = temp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    return write


def _copy_writer(sources: list[Path]) -> Writer:
    names: dict[str, Path] = {}
    for source in sources:
        name = Path(os.path.abspath(source)).name
        if not name or name == MANIFEST:
            raise ValueError(f"{source} cannot be copied into a checkpoint under its name")
        if name in names:
            raise ValueError(f"{names[name]} and {source} would both be {name} in the checkpoint")
        if not source.exists():
            raise ValueError(f"{source} does not exist, so it cannot be saved")
        names[name] = source

    def write(temp: Path) -> None:
        for name, source in names.items():
            if source.is_dir():
                shutil.copytree(source, temp / name)
            else:
                shutil.copy2(source, temp / name)

    return write


def _writer(state: State) -> Writer:
    """A function that puts the files of ``state`` into a temp directory."""
    if callable(state):
        return state
    if isinstance(state, Mapping):
        return _bytes_writer(state)
    if isinstance(state, str | os.PathLike):
        return _copy_writer([Path(state)])
    if isinstance(state, Iterable) and not isinstance(state, bytes | bytearray):
        return _copy_writer([Path(source) for source in state])
    raise TypeError(
        "state must be a function that writes files into a directory, a mapping of names "
        f"to bytes, or paths to copy; not {type(state).__name__}"
    )


def _files_sync(temp: Path) -> tuple[ManifestFile, ...]:
    """Fsync every file and directory under ``temp``; the files as the manifest lists them."""
    files = []
    for parent, dirs, names in os.walk(temp, onerror=_raise):
        for name in [*dirs, *names]:
            path = Path(parent, name)
            relative = path.relative_to(temp).as_posix()
            mode = path.lstat().st_mode
            if relative == MANIFEST:
                raise ValueError(f"a checkpoint cannot have a file of its own named {MANIFEST}")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise ValueError(f"{relative} is not a regular file; a checkpoint holds only those")
            size, digest = file_sha256(path, sync=True)
            files.append(ManifestFile(path=relative, size=size, sha256=digest))
        _fsync_dir(Path(parent))
    return tuple(sorted(files, key=lambda file: file.path))


def _manifest_write(
    temp: Path, step: int, written_at: float, files: tuple[ManifestFile, ...]
) -> None:
    document = {
        "format": FORMAT,
        "step": step,
        "written_at": written_at,
        "job": environment.job_id(),
        "attempt": environment.attempt(),
        "files": [asdict(file) for file in files],
        "size_bytes": sum(file.size for file in files),
    }
    with (temp / MANIFEST).open("x", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(temp)


def _publish(temp: Path, final: Path) -> None:
    """Rename the finished temp directory to ``final``, replacing one already there."""
    aside = None
    if os.path.lexists(final):
        aside = temp.with_name(f"{temp.name}-replaced")
        os.rename(final, aside)
    try:
        os.rename(temp, final)
    except OSError:
        if aside is not None:
            os.rename(aside, final)
        raise
    _fsync_dir(final.parent)
    if aside is not None:
        _remove(aside)


def save(
    step: int,
    state: State,
    *,
    directory: PathLike | None = None,
    all_ranks: bool = False,
) -> Checkpoint | None:
    """Write checkpoint ``step`` atomically into ``directory`` (default: the job's).

    ``state`` is one of: a function ``fn(tmpdir: Path)`` that writes the files into
    ``tmpdir``; a mapping of relative file names to bytes; a path, or several, of files
    or directories to copy in under their own names. Only global rank 0 writes (others
    get None) unless ``all_ranks``, and then each rank needs a directory of its own.
    Prints a ``checkpoint`` marker once the checkpoint is complete.
    """
    markers.step_check(step)
    if not all_ranks and environment.global_rank() != 0:
        return None
    write = _writer(state)
    root = root_of(directory)
    temp = root / f"{TEMP_PREFIX}{step}-{os.getpid()}-{secrets.token_hex(4)}"
    final = root / str(step)
    try:
        _root_make(root)
        os.mkdir(temp)
        try:
            write(temp)
            files = _files_sync(temp)
            written_at = time.time()
            _manifest_write(temp, step, written_at, files)
            _publish(temp, final)
        except BaseException:
            _remove(temp)
            raise
    except OSError as error:
        raise CheckpointError(
            f"checkpoint at step {step} could not be written to {root}: {reason(error)}"
        ) from error
    checkpoint = Checkpoint(
        step=step,
        path=final,
        size_bytes=sum(file.size for file in files),
        file_count=len(files),
        written_at=written_at,
        files=files,
    )
    markers.marker_emit(
        markers.marker_format(
            "checkpoint",
            step=step,
            path=str(final),
            size_bytes=checkpoint.size_bytes,
            file_count=checkpoint.file_count,
            ts=written_at,
        )
    )
    return checkpoint
