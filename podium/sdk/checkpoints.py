"""Reading checkpoints: what counts as complete, and what is never offered.

A checkpoint is a directory ``<dir>/<step>`` (the step in plain decimal) holding its files
and ``podium-manifest.json``, which lists each file's relative path, size and sha256. It
is complete only when the manifest parses, has every field, and every file it lists is
there with that size (and that checksum, when verifying). Hidden directories, such as the
``.tmp-*`` ones a write in progress or cut short leaves, are never listed nor offered.
"""

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from podium.sdk import environment

MANIFEST = "podium-manifest.json"
FORMAT = 1
NO_MANIFEST = "no manifest (the write did not finish)"
STEP_NAME = re.compile(r"0|[1-9][0-9]*")
SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ManifestFile:
    """One file of a checkpoint as its manifest lists it."""

    path: str  # relative to the checkpoint directory, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint."""

    step: int
    path: Path
    size_bytes: int
    file_count: int
    written_at: float  # unix seconds, from the manifest
    files: tuple[ManifestFile, ...]


@dataclass(frozen=True)
class Found:
    """One step directory of a scan, complete or not (then ``problem`` says why)."""

    step: int
    path: Path
    complete: bool
    problem: str
    size_bytes: int
    file_count: int
    written_at: float


class CheckpointError(Exception):
    """A checkpoint could not be written, or is not complete; the message says why."""


class Incomplete(Exception):
    """Why a directory is not a complete checkpoint, as a phrase."""


def root_of(directory: str | os.PathLike[str] | None) -> Path:
    """The absolute checkpoint directory: ``directory``, else the job's."""
    root = Path(directory) if directory is not None else environment.checkpoint_dir()
    return root.absolute()


def reason(error: OSError) -> str:
    """What went wrong, as the operating system says it."""
    return error.strerror or str(error)


def name_problem(name: object) -> str:
    """Why ``name`` cannot be a file of a checkpoint, or "" when it can."""
    if not isinstance(name, str) or not name or "\0" in name:
        return "is not a file name"
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or str(pure) != name or name == ".":
        return "is not a relative path inside the checkpoint"
    if name == MANIFEST:
        return "is the name of the manifest"
    return ""


def file_sha256(path: Path, *, sync: bool = False) -> tuple[int, str]:
    """The size and sha256 of a file as read now; with ``sync``, fsync it too."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(handle.fileno())
    return size, digest.hexdigest()


def _manifest_document(directory: Path) -> dict[str, Any]:
    try:
        raw = (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise Incomplete(NO_MANIFEST) from None
    except OSError as error:
        raise Incomplete(f"the manifest could not be read: {reason(error)}") from None
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise Incomplete("the manifest is not valid JSON") from None
    if not isinstance(document, dict):
        raise Incomplete("the manifest is not a JSON object")
    return document


def _count(fields: dict[str, Any], name: str, owner: str) -> int:
    if name not in fields:
        raise Incomplete(f"{owner} has no {name}")
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Incomplete(f"{owner} has a {name} that is not a non-negative integer")
    return value


def _manifest_file(entry: object) -> ManifestFile:
    if not isinstance(entry, dict):
        raise Incomplete("the manifest lists a file that is not a JSON object")
    name = entry.get("path")
    problem = name_problem(name)
    if problem:
        raise Incomplete(f"the manifest lists {name!r}, which {problem}")
    owner = f"the manifest's entry for {name}"
    size = _count(entry, "size", owner)
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        raise Incomplete(f"{owner} has no valid sha256")
    return ManifestFile(path=str(name), size=size, sha256=digest)


def _manifest_files(document: dict[str, Any]) -> tuple[ManifestFile, ...]:
    entries = document.get("files")
    if not isinstance(entries, list):
        raise Incomplete("the manifest has no list of files")
    files = tuple(_manifest_file(entry) for entry in entries)
    if len({file.path for file in files}) != len(files):
        raise Incomplete("the manifest lists a file twice")
    if _count(document, "size_bytes", "the manifest") != sum(file.size for file in files):
        raise Incomplete("the manifest's size_bytes is not the sum of its files' sizes")
    return files


def _file_problem(directory: Path, file: ManifestFile, *, verify: bool) -> str:
    target = directory / file.path
    try:
        info = target.lstat()
        if not stat.S_ISREG(info.st_mode):
            return f"{file.path} is not a regular file"
        if info.st_size != file.size:
            return f"{file.path} is {info.st_size} bytes, the manifest says {file.size}"
        if verify and file_sha256(target)[1] != file.sha256:
            return f"{file.path} does not match its sha256 in the manifest"
    except (FileNotFoundError, NotADirectoryError):
        return f"{file.path} is missing"
    except OSError as error:
        return f"{file.path} could not be read: {reason(error)}"
    return ""


def checkpoint_load(directory: Path, *, verify: bool) -> Checkpoint:
    """The complete checkpoint in ``directory``; raise Incomplete saying why it is not one."""
    if not directory.is_dir():
        raise Incomplete("there is no such directory")
    document = _manifest_document(directory)
    if document.get("format") != FORMAT or isinstance(document.get("format"), bool):
        raise Incomplete(f"the manifest has format {document.get('format')!r}, not {FORMAT}")
    step = _count(document, "step", "the manifest")
    if STEP_NAME.fullmatch(directory.name) and int(directory.name) != step:
        raise Incomplete(f"the manifest is for step {step}")
    written_at = document.get("written_at")
    if (
        isinstance(written_at, bool)
        or not isinstance(written_at, int | float)
        or not math.isfinite(written_at)
    ):
        raise Incomplete("the manifest has no valid written_at")
    files = _manifest_files(document)
    for file in files:
        problem = _file_problem(directory, file, verify=verify)
        if problem:
            raise Incomplete(problem)
    return Checkpoint(
        step=step,
        path=directory,
        size_bytes=sum(file.size for file in files),
        file_count=len(files),
        written_at=float(written_at),
        files=files,
    )


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """Every ``<step>`` directory under ``root``, newest step first."""
    try:
        with os.scandir(root) as entries:
            names = [entry.name for entry in entries if STEP_NAME.fullmatch(entry.name)]
    except FileNotFoundError:
        return []
    except OSError as error:
        raise CheckpointError(
            f"checkpoints in {root} could not be listed: {reason(error)}"
        ) from None
    steps = [(int(name), root / name) for name in names if (root / name).is_dir()]
    return sorted(steps, reverse=True)


def _on_disk(directory: Path) -> tuple[int, int, float]:
    """Bytes, file count and modification time of what an incomplete directory holds."""
    size = count = 0
    for parent, _dirs, names in os.walk(directory):
        for name in names:
            try:
                info = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                size += info.st_size
                count += 1
    try:
        modified = directory.stat().st_mtime
    except OSError:
        modified = 0.0
    return size, count, modified


def _found(step: int, directory: Path, *, verify: bool) -> Found:
    try:
        checkpoint = checkpoint_load(directory, verify=verify)
    except Incomplete as problem:
        size, count, modified = _on_disk(directory)
        return Found(
            step=step,
            path=directory,
            complete=False,
            problem=str(problem),
            size_bytes=size,
            file_count=count,
            written_at=modified,
        )
    return Found(
        step=step,
        path=directory,
        complete=True,
        problem="",
        size_bytes=checkpoint.size_bytes,
        file_count=checkpoint.file_count,
        written_at=checkpoint.written_at,
    )


def scan(directory: str | os.PathLike[str] | None = None, *, verify: bool = False) -> list[Found]:
    """Every ``<step>`` directory of the checkpoint directory, newest step first.

    Incomplete ones are listed too, with the reason; hidden directories (writes in
    progress or cut short) are not. ``verify`` also checks every file's sha256.
    """
    return [_found(step, path, verify=verify) for step, path in _step_dirs(root_of(directory))]


def latest(
    directory: str | os.PathLike[str] | None = None, *, verify: bool = False
) -> Checkpoint | None:
    """The newest complete checkpoint, skipping broken ones; None when there is none."""
    for _step, path in _step_dirs(root_of(directory)):
        try:
            return checkpoint_load(path, verify=verify)
        except Incomplete:
            continue
    return None


def validate(path: str | os.PathLike[str], *, verify: bool = True) -> Checkpoint:
    """The checkpoint at ``path``; CheckpointError when it is not complete (says why)."""
    directory = Path(path).absolute()
    try:
        return checkpoint_load(directory, verify=verify)
    except Incomplete as problem:
        raise CheckpointError(f"checkpoint {directory}: {problem}") from None
